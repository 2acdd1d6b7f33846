//! The v1 record model (DESIGN.md, "Interfaces"): `budget_line`, `contract`, `payment` and
//! `evaluation`, each with `id`, `rev`, `county` and an optional `cancelled`. Parsing is strict
//! and names the field at fault: unknown, duplicate or missing fields, wrong JSON types, bad
//! dates, amounts outside 1..=10^15 fen and invalid supplier codes are all errors. A `Record`
//! value is therefore always well formed; whether it obeys the rules is a separate question.
//!
//! A cancellation (`"cancelled": true`, rev ≥ 2) may restate every field of its kind or carry
//! only `kind`, `id`, `rev`, `county` and `cancelled`; a partial restatement is an error.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::date::Date;
use crate::ids::{Code, CountyCode};
use crate::money::Fen;
use crate::uscc::Uscc;

/// Longest free-text field (titles, names, notes, voucher numbers), in characters.
pub const MAX_TEXT_CHARS: usize = 200;
/// Highest revision number a record may carry.
pub const MAX_REV: u32 = 1_000_000;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// The four kinds of record.
    Kind { BudgetLine = "budget_line", Contract = "contract", Payment = "payment", Evaluation = "evaluation" }
);
wire_enum!(
    /// A budget line's stage: compiled → reported → approved.
    Stage { Compiled = "compiled", Reported = "reported", Approved = "approved" }
);
wire_enum!(
    /// Government procurement methods.
    Method {
        PublicTender = "public_tender",
        InvitationalTender = "invitational_tender",
        CompetitiveNegotiation = "competitive_negotiation",
        CompetitiveConsultation = "competitive_consultation",
        SingleSource = "single_source",
        Inquiry = "inquiry",
        FrameworkAgreement = "framework_agreement",
    }
);
wire_enum!(
    /// Performance evaluation grades.
    Grade { Excellent = "excellent", Good = "good", Fair = "fair", Poor = "poor" }
);

/// Free text: 1–200 characters, not blank, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Text(String);

impl Text {
    pub fn parse(s: &str) -> Result<Text, String> {
        if s.trim().is_empty() {
            return Err("must not be empty".into());
        }
        if s.chars().count() > MAX_TEXT_CHARS {
            return Err(format!("must be at most {MAX_TEXT_CHARS} characters"));
        }
        if s.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Text(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A contract's supplier code as the record gives it. Agents refuse an invalid code at intake
/// (strict parsing); the hub parses leniently so that a record which reached it anyway is kept
/// and flagged `INVALID_SUPPLIER_CODE` instead of being unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupplierCode {
    Valid(Uscc),
    Invalid { code: String, problem: String },
}

impl SupplierCode {
    pub fn as_str(&self) -> &str {
        match self {
            SupplierCode::Valid(u) => u.as_str(),
            SupplierCode::Invalid { code, .. } => code,
        }
    }
}

/// How strictly to read fields whose invalidity is also a rule (supplier codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Strict,
    Lenient,
}

/// Fields every record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub id: Code,
    pub rev: u32,
    pub county: CountyCode,
    pub cancelled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetLine {
    pub department: Code,
    pub fiscal_year: i32,
    pub catalogue_code: Code,
    pub amount: Fen,
    pub stage: Stage,
    pub approved_on: Option<Date>,
    pub title: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    pub budget_line_id: Code,
    pub supplier_uscc: SupplierCode,
    pub supplier_name: Text,
    pub method: Method,
    pub catalogue_code: Code,
    pub amount: Fen,
    pub signed_on: Date,
    pub title: Option<Text>,
    pub service_from: Option<Date>,
    pub service_to: Option<Date>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub contract_id: Code,
    pub amount: Fen,
    pub paid_on: Date,
    pub voucher_no: Text,
    pub note: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub contract_id: Code,
    pub evaluator: Text,
    pub score: u8,
    pub grade: Grade,
    pub evaluated_on: Date,
}

/// The kind-specific part of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    BudgetLine(BudgetLine),
    Contract(Contract),
    Payment(Payment),
    Evaluation(Evaluation),
}

/// One well-formed record. `body` is `None` only for a bare cancellation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub header: Header,
    pub body: Option<Body>,
}

/// Why bytes are not a well-formed record. `field` names the JSON field at fault, if one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub field: Option<String>,
    pub problem: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field `{field}`: {}", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

impl std::error::Error for RecordError {}

fn field_err(field: &str, problem: impl Into<String>) -> RecordError {
    RecordError {
        field: Some(field.to_owned()),
        problem: problem.into(),
    }
}

fn record_err(problem: impl Into<String>) -> RecordError {
    RecordError {
        field: None,
        problem: problem.into(),
    }
}

/// The fields every record has, whatever its kind.
pub const COMMON_FIELDS: &[&str] = &["kind", "id", "rev", "county", "cancelled"];
// Each kind's own fields: the required ones first, then the optional ones.
const BUDGET_LINE_FIELDS: &[&str] = &[
    "department",
    "fiscal_year",
    "catalogue_code",
    "amount_fen",
    "stage",
    "approved_on",
    "title",
];
const CONTRACT_FIELDS: &[&str] = &[
    "budget_line_id",
    "supplier_uscc",
    "supplier_name",
    "method",
    "catalogue_code",
    "amount_fen",
    "signed_on",
    "title",
    "service_from",
    "service_to",
];
const PAYMENT_FIELDS: &[&str] = &["contract_id", "amount_fen", "paid_on", "voucher_no", "note"];
const EVALUATION_FIELDS: &[&str] = &["contract_id", "evaluator", "score", "grade", "evaluated_on"];

impl Kind {
    /// This kind's own fields, besides [`COMMON_FIELDS`]: the required ones, then the optional
    /// ones, in the order of the v1 record model.
    pub fn field_names(self) -> &'static [&'static str] {
        match self {
            Kind::BudgetLine => BUDGET_LINE_FIELDS,
            Kind::Contract => CONTRACT_FIELDS,
            Kind::Payment => PAYMENT_FIELDS,
            Kind::Evaluation => EVALUATION_FIELDS,
        }
    }

    /// This kind's own fields split into (required, optional).
    fn fields(self) -> (&'static [&'static str], &'static [&'static str]) {
        let required = match self {
            Kind::BudgetLine => 5,
            Kind::Contract => 7,
            Kind::Payment => 4,
            Kind::Evaluation => 5,
        };
        self.field_names().split_at(required)
    }
}

/// A JSON object's members in document order, refusing duplicate names (two parsers could
/// otherwise read different values from the same signed bytes).
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members: Vec<(String, Value)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if members.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom(format!("duplicate field `{name}`")));
                    }
                    let value = map.next_value::<Value>()?;
                    members.push((name, value));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// The members of one record object, taken out field by field.
struct Fields {
    map: BTreeMap<String, Value>,
}

impl Fields {
    fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    fn value(&self, name: &str) -> Result<&Value, RecordError> {
        self.map
            .get(name)
            .ok_or_else(|| field_err(name, "is missing"))
    }

    fn str(&self, name: &str) -> Result<&str, RecordError> {
        self.value(name)?
            .as_str()
            .ok_or_else(|| field_err(name, "must be a JSON string"))
    }

    fn int(&self, name: &str) -> Result<i64, RecordError> {
        self.value(name)?
            .as_i64()
            .ok_or_else(|| field_err(name, "must be a whole number"))
    }

    fn code(&self, name: &str) -> Result<Code, RecordError> {
        Code::parse(self.str(name)?).map_err(|e| field_err(name, e.0))
    }

    fn text(&self, name: &str) -> Result<Text, RecordError> {
        Text::parse(self.str(name)?).map_err(|e| field_err(name, e))
    }

    fn date(&self, name: &str) -> Result<Date, RecordError> {
        Date::parse(self.str(name)?).map_err(|e| field_err(name, e.to_string()))
    }

    fn amount(&self, name: &str) -> Result<Fen, RecordError> {
        let v = self.value(name)?;
        let n = v.as_i64().ok_or_else(|| {
            field_err(
                name,
                format!("must be a whole number of fen from 1 to 10^15, got {v}"),
            )
        })?;
        Fen::parse_amount(n).map_err(|e| field_err(name, e.to_string()))
    }

    fn opt<T>(
        &self,
        name: &str,
        parse: impl Fn(&Self, &str) -> Result<T, RecordError>,
    ) -> Result<Option<T>, RecordError> {
        if self.has(name) {
            parse(self, name).map(Some)
        } else {
            Ok(None)
        }
    }

    fn choice<T>(
        &self,
        name: &str,
        parse: fn(&str) -> Option<T>,
        all: &[&str],
    ) -> Result<T, RecordError> {
        let s = self.str(name)?;
        parse(s).ok_or_else(|| {
            field_err(
                name,
                format!("must be one of {}, got {s:?}", all.join(", ")),
            )
        })
    }
}

fn names<T: Copy>(all: &[T], f: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|v| f(*v)).collect()
}

impl Record {
    /// Parses one record from its exact JSON bytes, as a county's agent must: an invalid
    /// supplier code is an error.
    pub fn parse(bytes: &[u8]) -> Result<Record, RecordError> {
        Record::parse_with(bytes, Mode::Strict)
    }

    /// Parses one record as the hub does: like [`Record::parse`], except that an invalid
    /// supplier code is kept as [`SupplierCode::Invalid`] for the rules to flag.
    pub fn parse_lenient(bytes: &[u8]) -> Result<Record, RecordError> {
        Record::parse_with(bytes, Mode::Lenient)
    }

    fn parse_with(bytes: &[u8], mode: Mode) -> Result<Record, RecordError> {
        let members: Members = serde_json::from_slice(bytes).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("invalid type") {
                record_err("a record must be a JSON object")
            } else {
                record_err(format!("not valid JSON: {msg}"))
            }
        })?;
        let order: Vec<String> = members.0.iter().map(|(n, _)| n.clone()).collect();
        let fields = Fields {
            map: members.0.into_iter().collect(),
        };

        let kind_names = names(Kind::ALL, Kind::as_str);
        let kind = fields.choice("kind", Kind::parse, &kind_names)?;
        let (required, optional) = kind.fields();
        if let Some(unknown) = order.iter().find(|n| {
            !COMMON_FIELDS.contains(&n.as_str())
                && !required.contains(&n.as_str())
                && !optional.contains(&n.as_str())
        }) {
            return Err(field_err(
                unknown,
                format!("is not a field of a {kind} record"),
            ));
        }

        let id = fields.code("id")?;
        let rev = fields.int("rev")?;
        let rev = u32::try_from(rev)
            .ok()
            .filter(|r| (1..=MAX_REV).contains(r))
            .ok_or_else(|| {
                field_err(
                    "rev",
                    format!("must be a whole number from 1 to {MAX_REV}, got {rev}"),
                )
            })?;
        let county =
            CountyCode::parse(fields.str("county")?).map_err(|e| field_err("county", e.0))?;
        let cancelled = match fields.map.get("cancelled") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(field_err("cancelled", "must be true or false")),
        };
        if cancelled && rev < 2 {
            return Err(field_err(
                "cancelled",
                "a cancellation amends an earlier revision, so rev must be at least 2",
            ));
        }
        let header = Header {
            kind,
            id,
            rev,
            county,
            cancelled,
        };

        let present = required.iter().filter(|n| fields.has(n)).count()
            + optional.iter().filter(|n| fields.has(n)).count();
        if cancelled && present == 0 {
            return Ok(Record { header, body: None });
        }
        if cancelled && let Some(missing) = required.iter().find(|n| !fields.has(n)) {
            return Err(field_err(
                missing,
                "is missing: a cancellation carries either every field of the record or only kind, id, rev, county and cancelled",
            ));
        }

        let body = match kind {
            Kind::BudgetLine => Body::BudgetLine(parse_budget_line(&fields)?),
            Kind::Contract => Body::Contract(parse_contract(&fields, mode)?),
            Kind::Payment => Body::Payment(Payment {
                contract_id: fields.code("contract_id")?,
                amount: fields.amount("amount_fen")?,
                paid_on: fields.date("paid_on")?,
                voucher_no: fields.text("voucher_no")?,
                note: fields.opt("note", Fields::text)?,
            }),
            Kind::Evaluation => Body::Evaluation(parse_evaluation(&fields)?),
        };
        Ok(Record {
            header,
            body: Some(body),
        })
    }

    /// The catalogue code this record names, if its kind carries one.
    pub fn catalogue_code(&self) -> Option<&Code> {
        match &self.body {
            Some(Body::BudgetLine(b)) => Some(&b.catalogue_code),
            Some(Body::Contract(c)) => Some(&c.catalogue_code),
            _ => None,
        }
    }

    /// The amount this record carries, if its kind carries one.
    pub fn amount(&self) -> Option<Fen> {
        match &self.body {
            Some(Body::BudgetLine(b)) => Some(b.amount),
            Some(Body::Contract(c)) => Some(c.amount),
            Some(Body::Payment(p)) => Some(p.amount),
            _ => None,
        }
    }

    /// The record as a JSON object with the v1 field names (used to write records, e.g. by the
    /// demo's simulated counties; stored bodies are never re-serialized).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        let h = &self.header;
        m.insert("kind".into(), h.kind.as_str().into());
        m.insert("id".into(), h.id.as_str().into());
        m.insert("rev".into(), h.rev.into());
        m.insert("county".into(), h.county.as_str().into());
        if h.cancelled {
            m.insert("cancelled".into(), true.into());
        }
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        match &self.body {
            None => {}
            Some(Body::BudgetLine(b)) => {
                put("department", b.department.as_str().into());
                put("fiscal_year", b.fiscal_year.into());
                put("catalogue_code", b.catalogue_code.as_str().into());
                put("amount_fen", b.amount.get().into());
                put("stage", b.stage.as_str().into());
                if let Some(d) = b.approved_on {
                    put("approved_on", d.to_string().into());
                }
                if let Some(t) = &b.title {
                    put("title", t.as_str().into());
                }
            }
            Some(Body::Contract(c)) => {
                put("budget_line_id", c.budget_line_id.as_str().into());
                put("supplier_uscc", c.supplier_uscc.as_str().into());
                put("supplier_name", c.supplier_name.as_str().into());
                put("method", c.method.as_str().into());
                put("catalogue_code", c.catalogue_code.as_str().into());
                put("amount_fen", c.amount.get().into());
                put("signed_on", c.signed_on.to_string().into());
                if let Some(t) = &c.title {
                    put("title", t.as_str().into());
                }
                if let Some(d) = c.service_from {
                    put("service_from", d.to_string().into());
                }
                if let Some(d) = c.service_to {
                    put("service_to", d.to_string().into());
                }
            }
            Some(Body::Payment(p)) => {
                put("contract_id", p.contract_id.as_str().into());
                put("amount_fen", p.amount.get().into());
                put("paid_on", p.paid_on.to_string().into());
                put("voucher_no", p.voucher_no.as_str().into());
                if let Some(n) = &p.note {
                    put("note", n.as_str().into());
                }
            }
            Some(Body::Evaluation(e)) => {
                put("contract_id", e.contract_id.as_str().into());
                put("evaluator", e.evaluator.as_str().into());
                put("score", e.score.into());
                put("grade", e.grade.as_str().into());
                put("evaluated_on", e.evaluated_on.to_string().into());
            }
        }
        Value::Object(m)
    }
}

fn parse_budget_line(f: &Fields) -> Result<BudgetLine, RecordError> {
    let fiscal_year = f.int("fiscal_year")?;
    let fiscal_year = i32::try_from(fiscal_year)
        .ok()
        .filter(|y| (1990..=2199).contains(y))
        .ok_or_else(|| {
            field_err(
                "fiscal_year",
                format!("must be a year from 1990 to 2199, got {fiscal_year}"),
            )
        })?;
    let stage_names = names(Stage::ALL, Stage::as_str);
    let stage = f.choice("stage", Stage::parse, &stage_names)?;
    let approved_on = f.opt("approved_on", Fields::date)?;
    if stage == Stage::Approved && approved_on.is_none() {
        return Err(field_err(
            "approved_on",
            "is missing: an approved budget line needs its approval date",
        ));
    }
    Ok(BudgetLine {
        department: f.code("department")?,
        fiscal_year,
        catalogue_code: f.code("catalogue_code")?,
        amount: f.amount("amount_fen")?,
        stage,
        approved_on,
        title: f.opt("title", Fields::text)?,
    })
}

fn parse_contract(f: &Fields, mode: Mode) -> Result<Contract, RecordError> {
    let code = f.str("supplier_uscc")?;
    let supplier_uscc = match (Uscc::parse(code), mode) {
        (Ok(u), _) => SupplierCode::Valid(u),
        (Err(e), Mode::Lenient) => SupplierCode::Invalid {
            code: code.to_owned(),
            problem: e.to_string(),
        },
        (Err(e), Mode::Strict) => {
            return Err(field_err(
                "supplier_uscc",
                format!("is not a valid unified social credit code: {e}"),
            ));
        }
    };
    let method_names = names(Method::ALL, Method::as_str);
    let service_from = f.opt("service_from", Fields::date)?;
    let service_to = f.opt("service_to", Fields::date)?;
    if let (Some(from), Some(to)) = (service_from, service_to)
        && to < from
    {
        return Err(field_err(
            "service_to",
            format!("{to} is before service_from {from}"),
        ));
    }
    Ok(Contract {
        budget_line_id: f.code("budget_line_id")?,
        supplier_uscc,
        supplier_name: f.text("supplier_name")?,
        method: f.choice("method", Method::parse, &method_names)?,
        catalogue_code: f.code("catalogue_code")?,
        amount: f.amount("amount_fen")?,
        signed_on: f.date("signed_on")?,
        title: f.opt("title", Fields::text)?,
        service_from,
        service_to,
    })
}

fn parse_evaluation(f: &Fields) -> Result<Evaluation, RecordError> {
    let score = f.int("score")?;
    let score = u8::try_from(score)
        .ok()
        .filter(|s| *s <= 100)
        .ok_or_else(|| {
            field_err(
                "score",
                format!("must be a whole number from 0 to 100, got {score}"),
            )
        })?;
    let grade_names = names(Grade::ALL, Grade::as_str);
    Ok(Evaluation {
        contract_id: f.code("contract_id")?,
        evaluator: f.text("evaluator")?,
        score,
        grade: f.choice("grade", Grade::parse, &grade_names)?,
        evaluated_on: f.date("evaluated_on")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BUDGET: &str = r#"{"kind":"budget_line","id":"BL-001","rev":1,"county":"430112","department":"101001","fiscal_year":2024,"catalogue_code":"A0501","amount_fen":120000000,"stage":"approved","approved_on":"2024-01-15"}"#;
    const CONTRACT: &str = r#"{"kind":"contract","id":"C-001","rev":1,"county":"430112","budget_line_id":"BL-001","supplier_uscc":"91350100M000100Y43","supplier_name":"望城区红色管家养老服务中心","method":"public_tender","catalogue_code":"A0501","amount_fen":100000000,"signed_on":"2024-03-01","title":"居家养老服务","service_from":"2024-03-01","service_to":"2024-12-31"}"#;
    const PAYMENT: &str = r#"{"kind":"payment","id":"P-001","rev":1,"county":"430112","contract_id":"C-001","amount_fen":50000000,"paid_on":"2024-04-01","voucher_no":"GK2024-0001"}"#;
    const EVALUATION: &str = r#"{"kind":"evaluation","id":"E-001","rev":1,"county":"430112","contract_id":"C-001","evaluator":"湖南省第三方绩效评价中心","score":92,"grade":"excellent","evaluated_on":"2024-12-01"}"#;

    fn with(base: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut v: Map<String, Value> = serde_json::from_str(base).unwrap();
        edit(&mut v);
        serde_json::to_string(&v).unwrap()
    }

    fn err(json: &str) -> RecordError {
        Record::parse(json.as_bytes()).expect_err("should be refused")
    }

    #[test]
    fn the_design_examples_parse() {
        let b = Record::parse(BUDGET.as_bytes()).unwrap();
        assert_eq!(b.header.kind, Kind::BudgetLine);
        assert_eq!(b.amount(), Some(Fen::parse_amount(120_000_000).unwrap()));
        let c = Record::parse(CONTRACT.as_bytes()).unwrap();
        assert_eq!(c.catalogue_code().map(Code::as_str), Some("A0501"));
        assert!(matches!(
            c.body,
            Some(Body::Contract(Contract {
                method: Method::PublicTender,
                ..
            }))
        ));
        assert!(Record::parse(PAYMENT.as_bytes()).is_ok());
        let e = Record::parse(EVALUATION.as_bytes()).unwrap();
        assert!(matches!(
            e.body,
            Some(Body::Evaluation(Evaluation {
                score: 92,
                grade: Grade::Excellent,
                ..
            }))
        ));
    }

    #[test]
    fn to_json_round_trips() {
        for src in [BUDGET, CONTRACT, PAYMENT, EVALUATION] {
            let r = Record::parse(src.as_bytes()).unwrap();
            let again = Record::parse(r.to_json().to_string().as_bytes()).unwrap();
            assert_eq!(again, r);
        }
    }

    #[test]
    fn unknown_missing_and_duplicate_fields_are_named() {
        let e = err(&with(BUDGET, |m| {
            m.insert("amount".into(), 5.into());
        }));
        assert_eq!(e.field.as_deref(), Some("amount"));
        assert!(e.problem.contains("not a field"), "{e}");

        let e = err(&with(PAYMENT, |m| {
            m.remove("voucher_no");
        }));
        assert_eq!(e.to_string(), "field `voucher_no`: is missing");

        let dup = PAYMENT.replacen("\"rev\":1", "\"rev\":1,\"rev\":2", 1);
        assert!(err(&dup).problem.contains("duplicate field `rev`"));

        // A field of another kind is unknown here.
        let e = err(&with(PAYMENT, |m| {
            m.insert("signed_on".into(), "2024-01-01".into());
        }));
        assert_eq!(e.field.as_deref(), Some("signed_on"));
    }

    #[test]
    fn values_are_checked_and_named() {
        let cases: Vec<(&str, &str, Value)> = vec![
            (BUDGET, "amount_fen", 0.into()),
            (BUDGET, "amount_fen", (-1).into()),
            (BUDGET, "amount_fen", 1_000_000_000_000_001i64.into()),
            (BUDGET, "amount_fen", serde_json::json!(100.5)),
            (BUDGET, "amount_fen", "100".into()),
            (BUDGET, "fiscal_year", 1900.into()),
            (BUDGET, "stage", "draft".into()),
            (BUDGET, "approved_on", "2024-02-30".into()),
            (BUDGET, "county", "43011".into()),
            (BUDGET, "id", "BL 001".into()),
            (BUDGET, "rev", 0.into()),
            (BUDGET, "kind", "invoice".into()),
            (CONTRACT, "supplier_uscc", "91350100M000100Y44".into()),
            (CONTRACT, "method", "bribery".into()),
            (CONTRACT, "supplier_name", "  ".into()),
            (CONTRACT, "service_to", "2024-01-01".into()),
            (PAYMENT, "paid_on", "2024/04/01".into()),
            (EVALUATION, "score", 101.into()),
            (EVALUATION, "grade", "A".into()),
            (PAYMENT, "cancelled", "yes".into()),
        ];
        for (base, field, value) in cases {
            let json = with(base, |m| {
                m.insert(field.into(), value.clone());
            });
            let e = err(&json);
            assert_eq!(e.field.as_deref(), Some(field), "{field}={value}: {e}");
        }
    }

    #[test]
    fn approved_budget_needs_its_date_but_others_do_not() {
        let e = err(&with(BUDGET, |m| {
            m.remove("approved_on");
        }));
        assert_eq!(e.field.as_deref(), Some("approved_on"));
        let compiled = with(BUDGET, |m| {
            m.remove("approved_on");
            m.insert("stage".into(), "compiled".into());
        });
        assert!(Record::parse(compiled.as_bytes()).is_ok());
    }

    #[test]
    fn cancellations() {
        let bare = r#"{"kind":"contract","id":"C-001","rev":2,"county":"430112","cancelled":true}"#;
        let r = Record::parse(bare.as_bytes()).unwrap();
        assert!(r.header.cancelled && r.body.is_none());

        let full = with(CONTRACT, |m| {
            m.insert("rev".into(), 2.into());
            m.insert("cancelled".into(), true.into());
        });
        assert!(Record::parse(full.as_bytes()).unwrap().body.is_some());

        let partial = r#"{"kind":"contract","id":"C-001","rev":2,"county":"430112","cancelled":true,"amount_fen":5}"#;
        assert!(err(partial).problem.contains("cancellation carries"));

        let first =
            r#"{"kind":"contract","id":"C-001","rev":1,"county":"430112","cancelled":true}"#;
        assert_eq!(err(first).field.as_deref(), Some("cancelled"));
    }

    #[test]
    fn the_hub_reads_an_invalid_supplier_code_to_flag_it() {
        let json = with(CONTRACT, |m| {
            m.insert("supplier_uscc".into(), "91350100M000100Y44".into());
        });
        assert_eq!(err(&json).field.as_deref(), Some("supplier_uscc"));
        let r = Record::parse_lenient(json.as_bytes()).unwrap();
        let Some(Body::Contract(c)) = r.body else {
            panic!("not a contract")
        };
        assert!(
            matches!(c.supplier_uscc, SupplierCode::Invalid { ref code, .. } if code == "91350100M000100Y44")
        );
        // Everything else is as strict as ever.
        let json = with(&json, |m| {
            m.insert("amount_fen".into(), 0.into());
        });
        assert_eq!(
            Record::parse_lenient(json.as_bytes())
                .unwrap_err()
                .field
                .as_deref(),
            Some("amount_fen")
        );
    }

    #[test]
    fn not_objects_and_bad_json() {
        assert_eq!(err("[1,2]").problem, "a record must be a JSON object");
        assert!(err("{\"kind\":").problem.starts_with("not valid JSON"));
        assert!(err("").problem.starts_with("not valid JSON"));
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Record::parse(&bytes);
        }

        #[test]
        fn any_valid_amount_parses_and_any_invalid_is_named(amount in any::<i64>()) {
            let json = with(PAYMENT, |m| { m.insert("amount_fen".into(), amount.into()); });
            match Record::parse(json.as_bytes()) {
                Ok(r) => prop_assert_eq!(r.amount().map(Fen::get), Some(amount)),
                Err(e) => {
                    prop_assert!(!(1..=crate::money::MAX_AMOUNT).contains(&amount));
                    prop_assert_eq!(e.field.as_deref(), Some("amount_fen"));
                }
            }
        }

        #[test]
        fn dropping_any_required_field_names_it(idx in 0usize..7) {
            let required = Kind::Contract.fields().0;
            let name = required[idx % required.len()];
            let json = with(CONTRACT, |m| { m.remove(name); });
            let e = err(&json);
            prop_assert_eq!(e.field.as_deref(), Some(name));
        }
    }
}
