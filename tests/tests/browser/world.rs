//! The province the console tests look at: a real hub with two counties, a real agent in each
//! that has submitted and synced a year of realistic records (a third of the projects bent to
//! break a rule, arrive out of order or be amended), one hand-written clean project to trace and
//! one over its budget, and two console users made with `tongbu-hub admin add`. Each test
//! builds its own, so what one test changes no other test sees.

use serde_json::Value;
use tongbu_tests::browser::Browser;
use tongbu_tests::{Agent, Hub, records_with_anomalies};

/// The two counties, with their names as the console shows them.
pub const WANGCHENG: (&str, &str) = ("430112", "望城区");
pub const HONGJIANG: (&str, &str) = ("431281", "洪江市");
/// The fiscal year of every record.
pub const YEAR: i64 = 2024;

/// Console users: (name, password).
pub const ADMIN: (&str, &str) = ("zhang.wei", "省厅管理员-2024-口令");
pub const OPERATOR: (&str, &str) = ("li.na", "operator-readonly-2024");

/// The clean hand-written project (budget line → contract → payment → evaluation).
pub const TRACE_BUDGET: &str = "BL-430112-2024-T001";
pub const TRACE_CONTRACT: &str = "C-430112-2024-T001-1";
pub const TRACE_PAYMENT: &str = "P-430112-2024-T001-1-1";
pub const TRACE_EVALUATION: &str = "E-430112-2024-T001-1";
/// A contract bigger than its whole budget line (BUDGET_EXCEEDED).
pub const OVER_BUDGET_CONTRACT: &str = "C-430112-2024-X001-1";

/// Records per county from the simulator.
const SIM_RECORDS: usize = 150;

pub struct World {
    pub hub: Hub,
    pub agents: Vec<Agent>,
}

impl World {
    pub fn start() -> World {
        let hub = Hub::start().unwrap();
        hub.add_county(WANGCHENG.0, WANGCHENG.1);
        hub.add_county(HONGJIANG.0, HONGJIANG.1);
        hub.add_console_user(ADMIN.0, "admin", ADMIN.1);
        hub.add_console_user(OPERATOR.0, "operator", OPERATOR.1);
        let mut agents = Vec::new();
        for (seed, (county, _)) in [(1, WANGCHENG), (2, HONGJIANG)] {
            let agent = Agent::enrolled(&hub, county).unwrap();
            let mut records = records_with_anomalies(county, seed, SIM_RECORDS);
            if county == WANGCHENG.0 {
                records.push_str(&hand_written_records());
            }
            agent.submit(&records).expect_ok("submit");
            agent.cli(&["sync", "--once"]).expect_ok("sync --once");
            agent.wait_synced().unwrap();
            agents.push(agent);
        }
        World { hub, agents }
    }

    /// The console URL of `path` (which starts with `/console`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.hub.url())
    }

    /// Signs in through the login form: the console sends the browser from `/console/` to the
    /// form and, once signed in, back to the overview.
    pub fn login(&self, browser: &Browser, (user, password): (&str, &str)) {
        browser.goto(&self.url("/console/")).unwrap();
        browser.find("#login-form").unwrap();
        assert!(
            browser
                .current_url()
                .unwrap()
                .contains("/console/login?next="),
            "{}",
            browser.current_url().unwrap()
        );
        browser
            .fill("#login-form input[name=username]", user)
            .unwrap();
        browser
            .fill("#login-form input[name=password]", password)
            .unwrap();
        browser.click("#login-form button[type=submit]").unwrap();
        browser.find("#page-overview").unwrap();
        assert_eq!(browser.text("#current-user").unwrap(), user);
    }

    /// The province's accepted totals for the year from the hub's API, in fen:
    /// (budget approved, contracted, paid).
    pub fn province_totals(&self) -> (i64, i64, i64) {
        let mut sum = (0, 0, 0);
        for (county, _) in [WANGCHENG, HONGJIANG] {
            let (status, v) = self
                .hub
                .get(&format!("/api/v1/ledger?county={county}&year={YEAR}"))
                .unwrap();
            assert_eq!(status, 200, "{v}");
            let fen = |k: &str| v[k].as_i64().unwrap_or_else(|| panic!("{k} in {v}"));
            sum.0 += fen("budget_approved_fen");
            sum.1 += fen("contracted_fen");
            sum.2 += fen("paid_fen");
        }
        sum
    }

    /// The hub's violations of `county` from its API.
    pub fn violations(&self, county: &str) -> Vec<Value> {
        let (status, v) = self
            .hub
            .get(&format!("/api/v1/violations?county={county}"))
            .unwrap();
        assert_eq!(status, 200, "{v}");
        v["violations"].as_array().cloned().unwrap_or_default()
    }

    /// The current policy version as `tongbu-hub policy show` prints it.
    pub fn policy_show(&self) -> Value {
        let out = self
            .hub
            .cli(&["policy", "show", "--compact"])
            .expect_ok("policy show");
        serde_json::from_str(&out.stdout).unwrap()
    }

    /// Rows the console's write routes would add or change, to show a refused request
    /// changed nothing: counts of tokens, policy versions, reviews and counties, and every
    /// agent's state.
    pub fn writable_state(&self) -> (i64, i64, i64, i64, Vec<(String, String)>) {
        let db = self.hub.db().unwrap();
        let count = |table: &str| -> i64 {
            db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        let mut stmt = db
            .prepare("SELECT agent_id, state FROM agents ORDER BY agent_id")
            .unwrap();
        let agents = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        (
            count("enroll_tokens"),
            count("policies"),
            count("violation_reviews"),
            count("counties"),
            agents,
        )
    }
}

/// `fen` as the console shows an amount: `¥1,234,567.89`.
pub fn yuan(fen: i64) -> String {
    let digits = (fen / 100).to_string();
    let mut grouped = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    format!("¥{grouped}.{:02}", fen % 100)
}

/// One clean project to trace end to end, and one contract over its budget line.
fn hand_written_records() -> String {
    let supplier = r#""supplier_uscc":"91350100M000100Y43","supplier_name":"颐养居家养老服务中心""#;
    [
        format!(
            r#"{{"kind":"budget_line","id":"{TRACE_BUDGET}","rev":1,"county":"430112","department":"101001","fiscal_year":2024,"catalogue_code":"A0501","amount_fen":80000000,"stage":"approved","approved_on":"2024-02-15","title":"居家养老上门服务"}}"#
        ),
        format!(
            r#"{{"kind":"contract","id":"{TRACE_CONTRACT}","rev":1,"county":"430112","budget_line_id":"{TRACE_BUDGET}",{supplier},"method":"public_tender","catalogue_code":"A0501","amount_fen":60000000,"signed_on":"2024-04-01","title":"居家养老上门服务"}}"#
        ),
        format!(
            r#"{{"kind":"payment","id":"{TRACE_PAYMENT}","rev":1,"county":"430112","contract_id":"{TRACE_CONTRACT}","amount_fen":15000000,"paid_on":"2024-06-20","voucher_no":"GK2024T00101"}}"#
        ),
        format!(
            r#"{{"kind":"evaluation","id":"{TRACE_EVALUATION}","rev":1,"county":"430112","contract_id":"{TRACE_CONTRACT}","evaluator":"第三方绩效评价机构","score":91,"grade":"excellent","evaluated_on":"2024-12-28"}}"#
        ),
        r#"{"kind":"budget_line","id":"BL-430112-2024-X001","rev":1,"county":"430112","department":"102003","fiscal_year":2024,"catalogue_code":"A0401","amount_fen":1000000,"stage":"approved","approved_on":"2024-01-15"}"#.to_owned(),
        format!(
            r#"{{"kind":"contract","id":"{OVER_BUDGET_CONTRACT}","rev":1,"county":"430112","budget_line_id":"BL-430112-2024-X001",{supplier},"method":"public_tender","catalogue_code":"A0401","amount_fen":1500000,"signed_on":"2024-03-01"}}"#
        ),
    ]
    .iter()
    .map(|line| format!("{line}\n"))
    .collect()
}
