//! Every string the console shows, in Simplified Chinese (the default) and English, in one
//! table; templates read them as `t.<key>`. `?lang=en` / `?lang=zh` switches and remembers the
//! choice in the `tongbu_lang` cookie.

use std::collections::{BTreeMap, HashMap};

use axum::http::HeaderMap;

use super::session::{LANG_COOKIE, cookie};

/// The language of one response, and whether the request asked to switch to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lang {
    pub english: bool,
    /// The request carried `?lang=`: remember it in a cookie.
    pub switched: bool,
}

impl Lang {
    pub fn of(headers: &HeaderMap, query: &HashMap<String, String>) -> Lang {
        match query.get("lang").map(String::as_str) {
            Some("en") => Lang {
                english: true,
                switched: true,
            },
            Some("zh") => Lang {
                english: false,
                switched: true,
            },
            _ => Lang {
                english: cookie(headers, LANG_COOKIE) == Some("en"),
                switched: false,
            },
        }
    }

    pub fn code(self) -> &'static str {
        if self.english { "en" } else { "zh" }
    }

    /// One string of this language (the key itself when it is missing, so a gap shows).
    pub fn text(self, key: &'static str) -> &'static str {
        STRINGS
            .iter()
            .find(|(k, _, _)| *k == key)
            .map_or(key, |(_, zh, en)| if self.english { en } else { zh })
    }

    /// The strings of this language by key.
    pub fn table(self) -> BTreeMap<&'static str, &'static str> {
        STRINGS
            .iter()
            .map(|(k, zh, en)| (*k, if self.english { *en } else { *zh }))
            .collect()
    }
}

/// (key, 中文, English).
const STRINGS: &[(&str, &str, &str)] = &[
    ("app", "同步 · 省级控制台", "Tongbu · Provincial console"),
    ("nav_overview", "概览", "Overview"),
    ("nav_counties", "县区", "Counties"),
    ("nav_trace", "全程追溯", "Trace"),
    ("nav_violations", "违规", "Violations"),
    ("nav_agents", "代理", "Agents"),
    ("nav_policy", "政策", "Policy"),
    ("nav_audit", "审计", "Audit"),
    ("logout", "退出", "Log out"),
    ("role_admin", "管理员", "admin"),
    ("role_operator", "运维员", "operator"),
    ("switch_lang", "English", "中文"),
    ("login_title", "登录", "Sign in"),
    ("username", "用户名", "User name"),
    ("password", "密码", "Password"),
    ("login_button", "登录", "Sign in"),
    (
        "login_failed",
        "用户名或密码错误。",
        "Wrong user name or password.",
    ),
    (
        "login_locked",
        "登录失败次数过多,请15分钟后再试。",
        "Too many failed logins; try again in 15 minutes.",
    ),
    ("overview_title", "全省概览", "Province overview"),
    ("year", "年度", "Year"),
    ("show", "显示", "Show"),
    ("filter", "筛选", "Filter"),
    ("all", "全部", "All"),
    ("budget_approved", "批复预算", "Budget approved"),
    ("contracted", "合同金额", "Contracted"),
    ("paid", "已支付", "Paid"),
    ("accepted", "通过", "Accepted"),
    ("held", "暂挂", "Held"),
    ("rejected", "拒绝", "Rejected"),
    ("by_county", "按县区", "By county"),
    ("by_domain", "按目录领域", "By catalogue domain"),
    ("wan_yuan", "万元", "10k yuan"),
    ("violations_by_rule", "按规则统计违规", "Violations by rule"),
    ("rule", "规则", "Rule"),
    ("count", "数量", "Count"),
    ("sync_health", "同步状态", "Sync health"),
    ("in_sync", "同步", "In sync"),
    ("behind", "滞后", "Behind"),
    ("silent", "失联", "Silent"),
    ("quarantined", "隔离", "Quarantined"),
    ("revoked", "吊销", "Revoked"),
    ("no_data", "暂无数据。", "No data yet."),
    ("counties_title", "县区", "Counties"),
    ("county", "县区", "County"),
    ("code", "代码", "Code"),
    ("name", "名称", "Name"),
    ("agents", "代理", "Agents"),
    ("last_seen", "最近联络", "Last seen"),
    ("lag", "滞后(条)", "Lag (records)"),
    ("since_seen", "距今", "Since seen"),
    ("queue_depth", "队列深度", "Queue depth"),
    ("health", "状态", "Health"),
    ("health_ok", "正常", "OK"),
    ("health_warn", "注意", "Warning"),
    ("health_bad", "异常", "Problem"),
    ("add_county", "添加县区", "Add a county"),
    ("add", "添加", "Add"),
    ("county_title", "县区详情", "County"),
    ("catalogue_code", "目录代码", "Catalogue code"),
    ("ledger", "台账", "Ledger"),
    ("trace_title", "全程追溯", "Trace a project"),
    (
        "trace_hint",
        "输入预算指标、合同或支付编号",
        "Budget line, contract or payment id",
    ),
    ("search", "查询", "Search"),
    (
        "not_found",
        "未找到该编号的记录。",
        "No record with this id.",
    ),
    (
        "several_counties",
        "多个县区有此编号,请选择:",
        "Several counties have this id; choose one:",
    ),
    ("kind_budget_line", "预算指标", "Budget line"),
    ("kind_contract", "采购合同", "Contract"),
    ("kind_payment", "国库支付", "Payment"),
    ("kind_evaluation", "绩效评价", "Evaluation"),
    ("rev", "修订", "Rev"),
    ("outcome", "结果", "Outcome"),
    ("domain_a", "基本公共服务", "Basic public services"),
    ("domain_b", "社会管理性服务", "Social governance"),
    ("domain_c", "行业管理与协调性服务", "Sector management"),
    ("domain_d", "技术性服务", "Technical services"),
    ("domain_e", "政府履职辅助性服务", "Auxiliary services"),
    ("domain_n", "负面清单事项", "Negative list"),
    ("domain_other", "其他/未知", "Other or unknown"),
    ("catalogue_unknown", "(目录未知)", "(catalogue unknown)"),
    ("state_active", "正常", "active"),
    ("state_quarantined", "隔离", "quarantined"),
    ("state_revoked", "已吊销", "revoked"),
    ("unit_wan", "万元", "10,000 yuan"),
    ("outcome_accepted", "接受", "accepted"),
    ("outcome_held", "暂挂", "held"),
    ("outcome_rejected", "拒绝", "rejected"),
    ("kind_budget_line", "预算指标", "budget line"),
    ("kind_contract", "采购合同", "contract"),
    ("kind_payment", "国库支付", "payment"),
    ("kind_evaluation", "绩效评价", "evaluation"),
    (
        "rule_BUDGET_NOT_APPROVED",
        "预算指标未批复",
        "budget line not approved",
    ),
    (
        "rule_BUDGET_EXCEEDED",
        "超出预算指标",
        "over the budget line",
    ),
    (
        "rule_CONTRACT_EXCEEDED",
        "超合同支付",
        "paid over the contract",
    ),
    ("rule_DATE_ORDER", "日期顺序错误", "dates out of order"),
    ("rule_YEAR_MISMATCH", "年度不符", "outside the fiscal year"),
    (
        "rule_NOT_IN_CATALOGUE",
        "不在指导性目录",
        "not in the catalogue",
    ),
    ("rule_NEGATIVE_LIST", "属于负面清单", "on the negative list"),
    (
        "rule_INVALID_SUPPLIER_CODE",
        "统一社会信用代码无效",
        "invalid supplier code",
    ),
    ("rule_COUNTY_MISMATCH", "县区不符", "county mismatch"),
    ("rule_STALE_REVISION", "过期修订", "stale revision"),
    (
        "rule_CANCELLED_PREDECESSOR",
        "前序记录已撤销",
        "predecessor cancelled",
    ),
    (
        "rule_PREDECESSOR_REJECTED",
        "前序记录被拒绝",
        "predecessor rejected",
    ),
    (
        "rule_AWAITING_BUDGET_LINE",
        "等待预算指标",
        "awaiting budget line",
    ),
    ("rule_AWAITING_CONTRACT", "等待合同", "awaiting contract"),
    (
        "rule_UNKNOWN_BUDGET_LINE",
        "预算指标未到达",
        "budget line never arrived",
    ),
    (
        "rule_UNKNOWN_CONTRACT",
        "合同未到达",
        "contract never arrived",
    ),
    (
        "rule_PAID_WITHOUT_EVALUATION",
        "未绩效评价即付清",
        "paid in full without evaluation",
    ),
    ("rule_MALFORMED_RECORD", "记录格式错误", "malformed record"),
    ("rule_codes", "规则代码", "Rule codes"),
    ("agent", "代理", "Agent"),
    ("seq", "序号", "Seq"),
    ("chain_hash", "链哈希", "Chain hash"),
    ("signature", "签名", "Signature"),
    ("received", "接收时间", "Received"),
    ("amount", "金额", "Amount"),
    ("date", "日期", "Date"),
    ("violations_title", "违规记录", "Violations"),
    ("kind", "类型", "Kind"),
    ("record_id", "编号", "Id"),
    ("detail", "说明", "Detail"),
    ("found_at", "发现时间", "Found"),
    ("review", "复核", "Review"),
    ("review_status", "复核状态", "Review status"),
    ("status_open", "待复核", "Open"),
    ("status_reviewed", "已复核", "Reviewed"),
    ("status_resolved", "已处理", "Resolved"),
    ("note", "备注", "Note"),
    ("save", "保存", "Save"),
    ("export_csv", "导出 CSV", "Export CSV"),
    ("agents_title", "代理", "Agents"),
    ("version", "版本", "Version"),
    ("state", "状态", "State"),
    ("acked", "已确认", "Acked"),
    ("head", "最新", "Head"),
    ("last_error", "最近错误", "Last error"),
    ("issue_token", "签发注册令牌", "Issue an enrollment token"),
    ("issue", "签发", "Issue"),
    ("reason", "原因", "Reason"),
    ("revoke", "吊销", "Revoke"),
    ("lift", "解除隔离", "Lift quarantine"),
    ("token_title", "注册令牌", "Enrollment token"),
    (
        "token_once",
        "令牌只显示这一次,请立即复制并安全交给县区。",
        "This token is shown once only: copy it now and hand it to the county safely.",
    ),
    ("expires", "过期时间", "Expires"),
    ("back", "返回", "Back"),
    ("policy_title", "政策", "Policy"),
    ("catalogue", "指导性目录", "Guidance catalogue"),
    ("negative_list", "负面清单", "Negative list"),
    ("versions", "版本历史", "Versions"),
    ("when", "时间", "When"),
    ("who", "操作人", "Who"),
    ("entries", "条目", "Entries"),
    ("edit_policy", "修改政策(JSON)", "Edit the policy (JSON)"),
    ("publish", "发布新版本", "Publish a new version"),
    ("current_version", "当前版本", "Current version"),
    ("audit_title", "审计日志", "Audit log"),
    ("action", "操作", "Action"),
    ("older", "更早", "Older"),
    ("role", "角色", "Role"),
];
