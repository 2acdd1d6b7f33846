//! Which column of a county's table gives which v1 record field.
//!
//! Two sources, in this order of precedence:
//! 1. a mapping file (TOML) written for one county system's export:
//!
//!    ```toml
//!    kind = "payment"                 # every row is a payment (like --kind)
//!    [columns]                        # the file's column name = the v1 field it gives
//!    "支付流水号" = "id"
//!    "合同号" = "contract_id"
//!    "实付金额" = "amount_yuan"        # amounts: amount_yuan, amount_wan_yuan or amount_fen
//!    "经办人" = "ignore"               # read nothing from this column
//!    [constants]                      # a value for every row, where no column gives one
//!    voucher_no = "GK-2024"
//!    [values.method]                  # the file's own words for enumerated values
//!    "公开" = "public_tender"
//!    ```
//!
//! 2. built-in header names: every v1 field name (`amount_fen`, `signed_on`, …) and the Chinese
//!    names finance systems use (金额, 合同编号, 签订日期, 供应商, 统一社会信用代码, …; see
//!    [`builtin_targets`]). A column named 金额 without a unit, or with (元), is in yuan; (万元)
//!    is in ten thousand yuan; (分) is fen.
//!
//! Headers are compared after trimming, removing spaces, turning full-width brackets into
//! ASCII ones and lower-casing ASCII letters, so `金额（元）` and `Amount_Yuan` match.
//!
//! Invariant: a mapping file that names an unknown field, unit or key is refused whole, with the
//! key named, before any row is read.

use std::collections::BTreeMap;

use serde::Deserialize;
use tongbu_shared::record::Kind;
use tongbu_shared::yuan::Unit;

/// Fields every kind has.
pub use tongbu_shared::record::COMMON_FIELDS;

/// How a field's cells are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// Identifiers and free text: the cell's text.
    Text,
    /// `rev`, `fiscal_year`, `score`.
    Int,
    /// `cancelled`.
    Bool,
    Date,
    /// `amount_fen`, in the column's unit.
    Amount,
    /// `stage`, `method`, `grade`: Chinese words translated.
    Choice,
}

pub fn field_type(field: &str) -> FieldType {
    match field {
        "rev" | "fiscal_year" | "score" => FieldType::Int,
        "cancelled" => FieldType::Bool,
        "approved_on" | "signed_on" | "service_from" | "service_to" | "paid_on"
        | "evaluated_on" => FieldType::Date,
        "amount_fen" => FieldType::Amount,
        "stage" | "method" | "grade" => FieldType::Choice,
        _ => FieldType::Text,
    }
}

/// What one column gives: a field, and for an amount the unit it is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub field: &'static str,
    pub unit: Option<Unit>,
}

impl Target {
    fn field(field: &'static str) -> Target {
        Target { field, unit: None }
    }

    fn amount(unit: Unit) -> Target {
        Target {
            field: "amount_fen",
            unit: Some(unit),
        }
    }
}

/// What a mapping file may say a column is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnRule {
    Target(Target),
    Ignore,
}

/// A mapping file, checked.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// The kind of every row without a kind column.
    pub kind: Option<Kind>,
    /// Normalized column name → what it gives.
    pub columns: BTreeMap<String, ColumnRule>,
    /// Field → value for rows where no column gives one.
    pub constants: BTreeMap<&'static str, toml::Value>,
    /// Field → (the file's word → the v1 word).
    pub values: BTreeMap<&'static str, BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    kind: Option<String>,
    #[serde(default)]
    columns: BTreeMap<String, String>,
    #[serde(default)]
    constants: BTreeMap<String, toml::Value>,
    #[serde(default)]
    values: BTreeMap<String, BTreeMap<String, String>>,
}

/// The static name of a v1 field, if `name` is one.
fn field_name(name: &str) -> Option<&'static str> {
    COMMON_FIELDS
        .iter()
        .chain(Kind::ALL.iter().flat_map(|k| k.field_names().iter()))
        .find(|f| **f == name)
        .copied()
}

impl Mapping {
    /// Parses and checks a mapping file's text; errors name the key at fault.
    pub fn parse(text: &str) -> Result<Mapping, String> {
        let file: MappingFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let kind = file
            .kind
            .map(|k| {
                super::values::kind(&k).ok_or_else(|| {
                    format!(
                        "kind = {k:?}: must be budget_line, contract, payment or evaluation (or 预算指标, 合同, 支付, 绩效评价)"
                    )
                })
            })
            .transpose()?;
        let mut columns = BTreeMap::new();
        for (column, target) in file.columns {
            let rule = match target.as_str() {
                "ignore" => ColumnRule::Ignore,
                "amount_yuan" => ColumnRule::Target(Target::amount(Unit::Yuan)),
                "amount_wan_yuan" => ColumnRule::Target(Target::amount(Unit::WanYuan)),
                "amount_fen" => ColumnRule::Target(Target::amount(Unit::Fen)),
                other => match field_name(other) {
                    Some(field) => ColumnRule::Target(Target::field(field)),
                    None => {
                        return Err(format!(
                            "[columns] {column:?} = {other:?}: not a v1 record field (nor amount_yuan, amount_wan_yuan, amount_fen or ignore)"
                        ));
                    }
                },
            };
            columns.insert(normalize(&column), rule);
        }
        let mut constants = BTreeMap::new();
        for (field, value) in file.constants {
            let name = field_name(&field)
                .ok_or_else(|| format!("[constants] {field}: not a v1 record field"))?;
            if name == "kind" {
                return Err("[constants] kind: write `kind = ...` at the top of the file".into());
            }
            if !matches!(
                value,
                toml::Value::String(_) | toml::Value::Integer(_) | toml::Value::Boolean(_)
            ) {
                return Err(format!(
                    "[constants] {field}: must be a string, a whole number or true/false"
                ));
            }
            constants.insert(name, value);
        }
        let mut values = BTreeMap::new();
        for (field, words) in file.values {
            let name = field_name(&field)
                .filter(|f| matches!(*f, "kind" | "stage" | "method" | "grade" | "cancelled"))
                .ok_or_else(|| {
                    format!(
                        "[values.{field}]: only kind, stage, method, grade and cancelled have words to translate"
                    )
                })?;
            values.insert(name, words);
        }
        Ok(Mapping {
            kind,
            columns,
            constants,
            values,
        })
    }

    /// The file's own word for a value of `field`, translated, if the mapping has it.
    pub fn word<'a>(&'a self, field: &str, value: &'a str) -> &'a str {
        self.values
            .get(field)
            .and_then(|words| words.get(value.trim()))
            .map_or(value, String::as_str)
    }
}

/// A header as compared: trimmed, without spaces, full-width brackets as ASCII, ASCII lower case.
pub fn normalize(header: &str) -> String {
    header
        .trim()
        .trim_start_matches('\u{feff}')
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            '（' => '(',
            '）' => ')',
            other => other.to_ascii_lowercase(),
        })
        .collect()
}

/// How sure a header match is: an explicit mapping beats the exact v1 name, which beats a
/// Chinese name for this kind, which beats a generic one. Two columns that match a field equally
/// well are an ambiguity the person must resolve (in the mapping file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Certainty {
    Generic = 0,
    KindName = 1,
    FieldName = 2,
    Mapped = 3,
}

/// The amount columns' names (without a unit suffix).
const AMOUNT_NAMES: &[&str] = &[
    "金额",
    "预算金额",
    "指标金额",
    "批复金额",
    "合同金额",
    "支付金额",
    "付款金额",
    "实付金额",
];

/// What a (normalized) header gives for rows of `kind` by the built-in names, and how sure the
/// match is.
pub fn builtin_targets(header: &str, kind: Kind) -> Option<(Target, Certainty)> {
    match header {
        "amount_fen" => return Some((Target::amount(Unit::Fen), Certainty::FieldName)),
        "amount_yuan" => return Some((Target::amount(Unit::Yuan), Certainty::FieldName)),
        "amount_wan_yuan" => return Some((Target::amount(Unit::WanYuan), Certainty::FieldName)),
        _ => {}
    }
    let (base, unit) = [
        ("(元)", Unit::Yuan),
        ("(万元)", Unit::WanYuan),
        ("(分)", Unit::Fen),
    ]
    .iter()
    .find_map(|(suffix, unit)| header.strip_suffix(suffix).map(|b| (b, *unit)))
    .unwrap_or((header, Unit::Yuan));
    if AMOUNT_NAMES.contains(&base) {
        return Some((Target::amount(unit), Certainty::Generic));
    }
    let fields = kind.field_names();
    if let Some(field) = COMMON_FIELDS
        .iter()
        .chain(fields.iter())
        .find(|f| **f == header && **f != "amount_fen")
    {
        return Some((Target::field(field), Certainty::FieldName));
    }
    let kind_id: &[&str] = match kind {
        Kind::BudgetLine => &["预算指标编号", "指标编号", "预算编号"],
        Kind::Contract => &["合同编号", "合同号"],
        Kind::Payment => &["支付编号", "支付单号", "付款编号", "支付申请编号"],
        Kind::Evaluation => &["评价编号"],
    };
    if kind_id.contains(&header) {
        return Some((Target::field("id"), Certainty::KindName));
    }
    let names: &[(&'static str, &[&str])] = &[
        ("kind", &["类型", "记录类型", "种类", "业务类型"]),
        ("id", &["编号", "记录编号", "单号"]),
        ("rev", &["版本", "版本号", "修订号"]),
        (
            "county",
            &["区县", "区县代码", "区划代码", "行政区划代码", "县区代码"],
        ),
        ("cancelled", &["作废", "已作废", "是否作废", "撤销"]),
        (
            "department",
            &[
                "部门",
                "部门编码",
                "部门代码",
                "预算单位",
                "预算单位编码",
                "单位编码",
            ],
        ),
        ("fiscal_year", &["年度", "预算年度", "财政年度"]),
        (
            "catalogue_code",
            &[
                "目录编码",
                "目录代码",
                "指导性目录编码",
                "品目编码",
                "品目代码",
            ],
        ),
        ("stage", &["阶段", "预算阶段", "指标状态"]),
        ("approved_on", &["批复日期", "批准日期", "下达日期"]),
        ("title", &["项目名称", "名称", "标题"]),
        ("budget_line_id", &["预算指标编号", "指标编号", "预算编号"]),
        (
            "supplier_uscc",
            &[
                "统一社会信用代码",
                "供应商统一社会信用代码",
                "供应商代码",
                "信用代码",
            ],
        ),
        (
            "supplier_name",
            &["供应商", "供应商名称", "承接主体", "承接主体名称"],
        ),
        ("method", &["采购方式"]),
        ("signed_on", &["签订日期", "合同签订日期", "签约日期"]),
        (
            "service_from",
            &["服务开始日期", "服务起始日期", "服务期起"],
        ),
        ("service_to", &["服务结束日期", "服务截止日期", "服务期止"]),
        ("contract_id", &["合同编号", "合同号"]),
        ("paid_on", &["支付日期", "付款日期"]),
        (
            "voucher_no",
            &["凭证号", "支付凭证号", "国库支付凭证号", "凭证编号"],
        ),
        ("note", &["备注", "摘要", "用途"]),
        ("evaluator", &["评价机构", "评价单位", "评价人"]),
        ("score", &["得分", "评分", "分数"]),
        ("grade", &["等级", "评价等级", "评价结果"]),
        ("evaluated_on", &["评价日期"]),
    ];
    names
        .iter()
        .filter(|(field, _)| COMMON_FIELDS.contains(field) || fields.contains(field))
        .find(|(_, aliases)| aliases.contains(&header))
        .map(|(field, _)| (Target::field(field), Certainty::Generic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_match_by_kind() {
        let t = |h: &str, k| builtin_targets(&normalize(h), k).map(|(t, _)| (t.field, t.unit));
        assert_eq!(
            t("金额（元）", Kind::Payment),
            Some(("amount_fen", Some(Unit::Yuan)))
        );
        assert_eq!(
            t("预算金额(万元)", Kind::BudgetLine),
            Some(("amount_fen", Some(Unit::WanYuan)))
        );
        assert_eq!(
            t("金额", Kind::Contract),
            Some(("amount_fen", Some(Unit::Yuan)))
        );
        assert_eq!(
            t("Amount_Fen", Kind::Contract),
            Some(("amount_fen", Some(Unit::Fen)))
        );
        assert_eq!(t("指标编号", Kind::BudgetLine), Some(("id", None)));
        assert_eq!(
            t("指标编号", Kind::Contract),
            Some(("budget_line_id", None))
        );
        assert_eq!(t("合同编号", Kind::Contract), Some(("id", None)));
        assert_eq!(t("合同编号", Kind::Payment), Some(("contract_id", None)));
        assert_eq!(t("签订日期", Kind::Payment), None);
        assert_eq!(t(" signed_on ", Kind::Contract), Some(("signed_on", None)));
        assert_eq!(t("经办人", Kind::Contract), None);
    }

    #[test]
    fn mapping_files_are_checked() {
        let m = Mapping::parse(
            r#"
            kind = "支付"
            [columns]
            "支付流水号" = "id"
            "实付金额（元）" = "amount_yuan"
            "经办人" = "ignore"
            [constants]
            county = "430112"
            rev = 1
            [values.method]
            "公开" = "public_tender"
            "#,
        )
        .unwrap();
        assert_eq!(m.kind, Some(Kind::Payment));
        assert_eq!(
            m.columns.get("实付金额(元)"),
            Some(&ColumnRule::Target(Target::amount(Unit::Yuan)))
        );
        assert_eq!(m.columns.get("经办人"), Some(&ColumnRule::Ignore));
        assert_eq!(m.word("method", "公开"), "public_tender");
        assert_eq!(m.word("method", "其他"), "其他");

        for (bad, says) in [
            (
                "[columns]\n\"x\" = \"amount\"",
                "[columns] \"x\" = \"amount\"",
            ),
            ("[constants]\nprice = 5", "[constants] price"),
            ("[constants]\ntitle = [1]", "[constants] title"),
            ("kind = \"invoice\"", "kind = \"invoice\""),
            ("[values.title]\na = \"b\"", "[values.title]"),
            ("colums = 1", "colums"),
        ] {
            let e = Mapping::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
