//! OCDS 1.1 release packages into v1 records: the format `tongbu-hub export ocds` writes, and
//! what other open-contracting publishers write, as far as it carries what a v1 record needs.
//!
//! Each release becomes, in this order:
//!
//! | OCDS | v1 | fields |
//! |---|---|---|
//! | `planning.budget` | one `budget_line` | `id` ← `budget.id`; `amount_fen` ← `budget.amount`; `title` ← `budget.project`, else `budget.description` |
//! | `contracts[]` | one `contract` each | `id` ← `id`; `amount_fen` ← `value`; `signed_on` ← `dateSigned`; `title` ← `title`; `service_from`/`service_to` ← `period.startDate`/`endDate`; `supplier_uscc`/`supplier_name` ← the award's (`awardID`) first supplier, its party's `identifier.id` (scheme `CN-USCC`) and `name`; `budget_line_id` ← this release's `planning.budget.id`; `catalogue_code` ← `items[0].classification.id` |
//! | `contracts[].implementation.transactions[]` | one `payment` each | `id` ← `id`; `contract_id` ← the contract's `id`; `amount_fen` ← `value` (or the 1.0 `amount`); `paid_on` ← `date`; `voucher_no` ← the transaction `id` |
//!
//! Fields OCDS 1.1 has no place for travel in an object named `tongbu` beside the standard
//! fields (OCDS allows additional fields; the package declares no extension): on
//! `planning.budget` `rev`, `department`, `fiscal_year`, `catalogue_code`, `stage`,
//! `approved_on`; on a contract `rev`, `budget_line_id`, `method`, `catalogue_code` and
//! `evaluations` (a list of v1 evaluation fields: `id`, `rev`, `evaluator`, `score`, `grade`,
//! `evaluated_on`); on a transaction `rev`, `voucher_no`, `note`. A `tongbu` value wins over the
//! standard field it overlaps; a mapping file's `[constants]` fill what neither gives (e.g.
//! `department`, `stage` or `method` for another publisher's data), and `rev` defaults to 1.
//!
//! Amounts: `currency` must be `CNY` (or absent); the amount is read from the JSON number's own
//! text (never through a float), in yuan with at most two decimals; exponent notation is
//! refused. Dates: a `date-time` is taken in China Standard Time (UTC+8) and its calendar day
//! kept; a plain `YYYY-MM-DD` is accepted too.
//!
//! Refused, naming the release and path: a package without `releases`, a release without
//! `ocid`, a contract whose status is `cancelled` (a cancellation amends a record the agent
//! already holds: submit it as a v1 record with `"cancelled": true`), another
//! currency, a contract without a budget line to belong to, a supplier without a name or code,
//! and every field the v1 record requires that neither OCDS, `tongbu` nor a constant gives.
//! Everything else in the package (tender, documents, milestones, …) is ignored.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use tongbu_shared::Date;
use tongbu_shared::record::Record;
use tongbu_shared::yuan::{self, Unit};

use super::{Converted, ImportError, Options, Problems, RowProblem};

// ---- the subset of OCDS read ------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct Package {
    releases: Option<Vec<Release>>,
}

/// An OCDS id: a string or an integer.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Id {
    Text(String),
    Number(i64),
}

impl Id {
    fn text(&self) -> String {
        match self {
            Id::Text(s) => s.clone(),
            Id::Number(n) => n.to_string(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Release {
    ocid: Option<String>,
    parties: Vec<Party>,
    planning: Option<Planning>,
    awards: Vec<Award>,
    contracts: Vec<Contract>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Party {
    id: Option<Id>,
    name: Option<String>,
    identifier: Option<Identifier>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Identifier {
    scheme: Option<String>,
    id: Option<Id>,
    #[serde(rename = "legalName")]
    legal_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OrgRef {
    id: Option<Id>,
    name: Option<String>,
    identifier: Option<Identifier>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Planning {
    budget: Option<Budget>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Budget {
    id: Option<Id>,
    description: Option<String>,
    project: Option<String>,
    amount: Option<Amount>,
    tongbu: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Amount {
    amount: Option<Box<RawValue>>,
    currency: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Award {
    id: Option<Id>,
    suppliers: Vec<OrgRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Contract {
    id: Option<Id>,
    #[serde(rename = "awardID")]
    award_id: Option<Id>,
    title: Option<String>,
    status: Option<String>,
    value: Option<Amount>,
    #[serde(rename = "dateSigned")]
    date_signed: Option<String>,
    period: Option<Period>,
    items: Vec<Item>,
    implementation: Option<Implementation>,
    tongbu: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Period {
    #[serde(rename = "startDate")]
    start_date: Option<String>,
    #[serde(rename = "endDate")]
    end_date: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Item {
    classification: Option<Classification>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Classification {
    id: Option<Id>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Implementation {
    transactions: Vec<Transaction>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Transaction {
    id: Option<Id>,
    date: Option<String>,
    value: Option<Amount>,
    /// OCDS 1.0's name for `value`, deprecated in 1.1 but still published.
    amount: Option<Amount>,
    tongbu: Map<String, Value>,
}

// ---- conversion -----------------------------------------------------------------------

/// Converts a release package; see the module doc.
pub fn convert(input: &[u8], opts: &Options) -> Result<Vec<Converted>, ImportError> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let package: Package = serde_json::from_slice(input)
        .map_err(|e| ImportError::File(format!("not an OCDS release package (JSON): {e}")))?;
    let releases = package.releases.ok_or_else(|| {
        ImportError::File(
            "not an OCDS release package: no `releases` (record packages and single releases are not read)".into(),
        )
    })?;
    let mut problems = Problems::default();
    let mut out = Vec::new();
    for (i, release) in releases.iter().enumerate() {
        let ocid = release.ocid.as_deref().unwrap_or("");
        let place = if ocid.is_empty() {
            format!("release {}", i + 1)
        } else {
            format!("release {} (ocid {ocid})", i + 1)
        };
        if ocid.is_empty() {
            problems.push(RowProblem {
                source: place,
                column: None,
                message: "has no ocid".into(),
            });
            continue;
        }
        let mut r = ReleaseReader {
            release,
            opts,
            place: &place,
            problems: &mut problems,
            out: &mut out,
        };
        r.read();
    }
    problems.into_result()?;
    if out.is_empty() {
        return Err(ImportError::File(
            "the package holds no budget, contract or transaction to import".into(),
        ));
    }
    Ok(out)
}

/// One release being read: records go to `out`, problems to `problems`.
struct ReleaseReader<'a> {
    release: &'a Release,
    opts: &'a Options,
    place: &'a str,
    problems: &'a mut Problems,
    out: &'a mut Vec<Converted>,
}

/// The fields of one record being built, and the problems found building it.
struct Fields<'a> {
    json: Map<String, Value>,
    path: String,
    problems: Vec<(String, String)>,
    opts: &'a Options,
}

impl<'a> Fields<'a> {
    fn new(kind: &str, path: &str, opts: &'a Options) -> Fields<'a> {
        let mut json = Map::new();
        json.insert("kind".into(), kind.into());
        Fields {
            json,
            path: path.to_owned(),
            problems: Vec::new(),
            opts,
        }
    }

    fn problem(&mut self, at: &str, message: impl Into<String>) {
        self.problems.push((at.to_owned(), message.into()));
    }

    fn put(&mut self, field: &str, value: Value) {
        self.json.insert(field.to_owned(), value);
    }

    /// `field` from the `tongbu` object if it has it, else `standard`, else a mapping constant.
    fn pick(&mut self, field: &str, ext: &Map<String, Value>, standard: Option<Value>) {
        if let Some(v) = ext.get(field).filter(|v| !v.is_null()) {
            self.put(field, v.clone());
        } else if let Some(v) = standard {
            self.put(field, v);
        } else if let Some(c) = self.opts.mapping.constants.get(field) {
            let v = match c {
                toml::Value::String(s) => Value::from(s.clone()),
                toml::Value::Integer(i) => Value::from(*i),
                toml::Value::Boolean(b) => Value::from(*b),
                _ => Value::Null,
            };
            self.put(field, v);
        }
    }

    fn amount(&mut self, at: &str, amount: Option<&Amount>) {
        let Some(a) = amount else { return };
        if let Some(c) = a.currency.as_deref().filter(|c| *c != "CNY") {
            self.problem(
                &format!("{at}.currency"),
                format!("{c}: only amounts in CNY can be imported"),
            );
            return;
        }
        let Some(raw) = a.amount.as_deref() else {
            return;
        };
        let text = raw.get().trim();
        if text == "null" {
            return;
        }
        match yuan::parse(text, Unit::Yuan) {
            Ok(fen) if fen > 0 => self.put("amount_fen", fen.into()),
            Ok(_) => self.problem(
                &format!("{at}.amount"),
                format!("{text} is not an amount above zero"),
            ),
            Err(e) => self.problem(&format!("{at}.amount"), format!("{text} {e}")),
        }
    }

    fn date(&mut self, field: &str, at: &str, text: Option<&str>) {
        let Some(text) = text else { return };
        match ocds_date(text) {
            Some(d) => self.put(field, d.to_string().into()),
            None => self.problem(
                at,
                format!("{text:?} is not a date-time (RFC 3339) or a YYYY-MM-DD date"),
            ),
        }
    }

    fn text(&mut self, field: &str, text: Option<&str>) {
        if let Some(t) = text.map(str::trim).filter(|t| !t.is_empty()) {
            self.put(field, t.into());
        }
    }

    /// Parses the record as `submit` would; its problems, or the record, go out.
    fn finish(mut self, reader: &mut ReleaseReader<'_>) {
        if !self.json.contains_key("rev") {
            self.put("rev", 1.into());
        }
        if let Some(county) = &self.opts.county {
            match self.json.get("county") {
                None => self.put("county", county.as_str().into()),
                Some(Value::String(c)) if c != county.as_str() => {
                    let message = format!("county {c} is not this agent's county {county}");
                    self.problem("", message);
                }
                Some(_) => {}
            }
        }
        let source = format!("{}, {}", reader.place, self.path);
        if self.problems.is_empty() {
            let bytes = Value::Object(self.json).to_string().into_bytes();
            match Record::parse(&bytes) {
                Ok(_) => {
                    reader.out.push(Converted { source, bytes });
                    return;
                }
                Err(e) => {
                    let message = match &e.field {
                        Some(field) => format!("`{field}` {}", e.problem),
                        None => e.problem,
                    };
                    self.problems.push((String::new(), message));
                }
            }
        }
        // Problems are said about the release, at the OCDS path they were found at (or, for a
        // v1 field, the object the record came from).
        for (at, message) in self.problems {
            let at = if at.is_empty() { &self.path } else { &at };
            reader.problems.push(RowProblem {
                source: reader.place.to_owned(),
                column: None,
                message: format!("{at}: {message}"),
            });
        }
    }
}

impl ReleaseReader<'_> {
    fn read(&mut self) {
        let budget = self
            .release
            .planning
            .as_ref()
            .and_then(|p| p.budget.as_ref());
        let budget_id = budget.and_then(|b| b.id.as_ref()).map(Id::text);
        if let Some(b) = budget {
            self.budget(b);
        }
        for (i, c) in self.release.contracts.iter().enumerate() {
            self.contract(i, c, budget_id.as_deref());
        }
    }

    fn budget(&mut self, b: &Budget) {
        let opts = self.opts;
        let mut f = Fields::new("budget_line", "planning.budget", opts);
        let ext = &b.tongbu;
        match &b.id {
            Some(id) => f.put("id", id.text().into()),
            None => f.problem("planning.budget.id", "is missing"),
        }
        f.amount("planning.budget.amount", b.amount.as_ref());
        let title = b.project.as_deref().or(b.description.as_deref());
        f.text("title", title);
        for field in [
            "rev",
            "county",
            "department",
            "fiscal_year",
            "catalogue_code",
            "stage",
        ] {
            f.pick(field, ext, None);
        }
        match ext.get("approved_on").and_then(Value::as_str) {
            Some(d) => f.date("approved_on", "planning.budget.tongbu.approved_on", Some(d)),
            None => f.pick("approved_on", ext, None),
        }
        f.finish(self);
    }

    fn contract(&mut self, i: usize, c: &Contract, budget_id: Option<&str>) {
        let path = format!("contracts[{i}]");
        let opts = self.opts;
        let mut f = Fields::new("contract", &path, opts);
        let ext = &c.tongbu;
        // `terminated` is a contract that ran its course (or ended early): it stands as signed.
        if let Some(status @ "cancelled") = c.status.as_deref() {
            f.problem(
                &format!("{path}.status"),
                format!(
                    "is {status}: a cancellation amends a contract the agent already holds; submit it as a v1 record with \"cancelled\": true"
                ),
            );
        }
        let contract_id = c.id.as_ref().map(Id::text);
        match &contract_id {
            Some(id) => f.put("id", id.clone().into()),
            None => f.problem(&format!("{path}.id"), "is missing"),
        }
        f.amount(&format!("{path}.value"), c.value.as_ref());
        f.date(
            "signed_on",
            &format!("{path}.dateSigned"),
            c.date_signed.as_deref(),
        );
        f.text("title", c.title.as_deref());
        if let Some(p) = &c.period {
            f.date(
                "service_from",
                &format!("{path}.period.startDate"),
                p.start_date.as_deref(),
            );
            f.date(
                "service_to",
                &format!("{path}.period.endDate"),
                p.end_date.as_deref(),
            );
        }
        f.pick("budget_line_id", ext, budget_id.map(Value::from));
        if !f.json.contains_key("budget_line_id") {
            f.problem(
                "",
                "no budget line: the release has no planning.budget.id and the contract no tongbu.budget_line_id",
            );
        }
        let classification = c
            .items
            .iter()
            .find_map(|item| item.classification.as_ref()?.id.as_ref())
            .map(|id| Value::from(id.text()));
        f.pick("catalogue_code", ext, classification);
        f.pick("method", ext, None);
        for field in ["rev", "county"] {
            f.pick(field, ext, None);
        }
        match self.supplier(c) {
            Ok((code, name)) => {
                f.put("supplier_uscc", code.into());
                f.put("supplier_name", name.into());
            }
            Err(e) => f.problem(&format!("{path}.awardID"), e),
        }
        f.finish(self);

        let Some(contract_id) = contract_id else {
            return;
        };
        let transactions = c
            .implementation
            .as_ref()
            .map_or(&[][..], |imp| imp.transactions.as_slice());
        for (j, t) in transactions.iter().enumerate() {
            self.payment(
                &format!("{path}.implementation.transactions[{j}]"),
                t,
                &contract_id,
            );
        }
        if let Some(evaluations) = ext.get("evaluations") {
            self.evaluations(&path, evaluations, &contract_id);
        }
    }

    /// The supplier of a contract: its award's first supplier, completed from `parties`.
    fn supplier(&self, c: &Contract) -> Result<(String, String), String> {
        let award_id = c
            .award_id
            .as_ref()
            .map(Id::text)
            .ok_or("is missing: the contract names no award, so no supplier")?;
        let award = self
            .release
            .awards
            .iter()
            .find(|a| a.id.as_ref().map(Id::text).as_deref() == Some(award_id.as_str()))
            .ok_or_else(|| format!("{award_id:?}: no award with this id in the release"))?;
        let supplier = award
            .suppliers
            .first()
            .ok_or_else(|| format!("award {award_id:?} names no supplier"))?;
        let party = supplier.id.as_ref().and_then(|sid| {
            self.release
                .parties
                .iter()
                .find(|p| p.id.as_ref().map(Id::text) == Some(sid.text()))
        });
        let identifier = supplier
            .identifier
            .as_ref()
            .or(party.and_then(|p| p.identifier.as_ref()));
        let code = identifier
            .filter(|i| i.scheme.as_deref().is_none_or(|s| s == USCC_SCHEME))
            .and_then(|i| i.id.as_ref())
            .map(Id::text)
            .ok_or_else(|| {
                format!(
                    "award {award_id:?}: the supplier has no identifier with scheme {USCC_SCHEME} (its unified social credit code)"
                )
            })?;
        let name = supplier
            .name
            .clone()
            .or_else(|| party.and_then(|p| p.name.clone()))
            .or_else(|| identifier.and_then(|i| i.legal_name.clone()))
            .ok_or_else(|| format!("award {award_id:?}: the supplier has no name"))?;
        Ok((code, name))
    }

    fn payment(&mut self, path: &str, t: &Transaction, contract_id: &str) {
        let opts = self.opts;
        let mut f = Fields::new("payment", path, opts);
        let ext = &t.tongbu;
        let id = t.id.as_ref().map(Id::text);
        match &id {
            Some(id) => f.put("id", id.clone().into()),
            None => f.problem(&format!("{path}.id"), "is missing"),
        }
        f.put("contract_id", contract_id.into());
        f.amount(
            &format!("{path}.value"),
            t.value.as_ref().or(t.amount.as_ref()),
        );
        f.date("paid_on", &format!("{path}.date"), t.date.as_deref());
        f.pick("voucher_no", ext, id.map(Value::from));
        for field in ["rev", "county", "note"] {
            f.pick(field, ext, None);
        }
        f.finish(self);
    }

    fn evaluations(&mut self, path: &str, evaluations: &Value, contract_id: &str) {
        let at = format!("{path}.tongbu.evaluations");
        let Some(list) = evaluations.as_array() else {
            self.problems.push(RowProblem {
                source: self.place.to_owned(),
                column: None,
                message: format!("{at}: must be a list"),
            });
            return;
        };
        for (k, e) in list.iter().enumerate() {
            let opts = self.opts;
            let mut f = Fields::new("evaluation", &format!("{at}[{k}]"), opts);
            match e.as_object() {
                Some(fields) => {
                    for (name, value) in fields {
                        f.put(name, value.clone());
                    }
                    f.put("kind", "evaluation".into());
                    f.put("contract_id", contract_id.into());
                }
                None => f.problem("", "must be an object"),
            }
            f.finish(self);
        }
    }
}

/// The identifier scheme of a supplier's unified social credit code, as Tongbu writes it.
pub const USCC_SCHEME: &str = "CN-USCC";

/// The calendar day, in China Standard Time, of an OCDS date-time (or a plain date).
fn ocds_date(text: &str) -> Option<Date> {
    if text.len() == 10 {
        return Date::parse(text).ok();
    }
    let at = time::OffsetDateTime::parse(text, &Rfc3339).ok()?;
    let east8 = time::UtcOffset::from_hms(8, 0, 0).ok()?;
    let day = at.to_offset(east8).date();
    Date::from_ymd(day.year(), u8::from(day.month()), day.day()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tongbu_shared::ids::CountyCode;

    fn opts() -> Options {
        Options {
            county: Some(CountyCode::parse("430112").unwrap()),
            ..Options::default()
        }
    }

    fn package() -> Value {
        json!({
            "version": "1.1",
            "releases": [{
                "ocid": "ocds-tongbu-430112-BL-001",
                "id": "r1", "date": "2024-04-01T00:00:00+08:00", "tag": ["planning"],
                "initiationType": "tender",
                "parties": [{"id": "CN-USCC-91350100M000100Y43", "name": "红色管家",
                             "identifier": {"scheme": "CN-USCC", "id": "91350100M000100Y43"},
                             "roles": ["supplier"]}],
                "planning": {"budget": {"id": "BL-001", "project": "居家养老服务",
                    "amount": {"amount": 1200000, "currency": "CNY"},
                    "tongbu": {"department": "101001", "fiscal_year": 2024,
                               "catalogue_code": "A0501", "stage": "approved",
                               "approved_on": "2024-01-15"}}},
                "awards": [{"id": "C-001", "suppliers": [{"id": "CN-USCC-91350100M000100Y43", "name": "红色管家"}]}],
                "contracts": [{
                    "id": "C-001", "awardID": "C-001", "title": "居家养老服务",
                    "value": {"amount": 1000000.5, "currency": "CNY"},
                    "dateSigned": "2024-02-29T16:30:00Z",
                    "items": [{"id": "1", "classification": {"scheme": "x", "id": "A0501"}}],
                    "tongbu": {"method": "public_tender",
                               "evaluations": [{"id": "E-001", "evaluator": "评价中心", "score": 92,
                                                "grade": "excellent", "evaluated_on": "2024-12-01"}]},
                    "implementation": {"transactions": [
                        {"id": "P-001", "date": "2024-04-01T00:00:00+08:00",
                         "value": {"amount": 500000.25, "currency": "CNY"},
                         "tongbu": {"voucher_no": "GK-1"}}]}
                }]
            }]
        })
    }

    fn records(v: &Value) -> Result<Vec<Value>, ImportError> {
        convert(v.to_string().as_bytes(), &opts()).map(|out| {
            out.iter()
                .map(|c| serde_json::from_slice(&c.bytes).unwrap())
                .collect()
        })
    }

    #[test]
    fn a_release_becomes_budget_contract_payment_and_evaluation() {
        let got = records(&package()).unwrap();
        assert_eq!(
            got,
            vec![
                json!({"kind": "budget_line", "id": "BL-001", "rev": 1, "county": "430112",
                       "department": "101001", "fiscal_year": 2024, "catalogue_code": "A0501",
                       "amount_fen": 120000000, "stage": "approved", "approved_on": "2024-01-15",
                       "title": "居家养老服务"}),
                json!({"kind": "contract", "id": "C-001", "rev": 1, "county": "430112",
                       "budget_line_id": "BL-001", "supplier_uscc": "91350100M000100Y43",
                       "supplier_name": "红色管家", "method": "public_tender",
                       "catalogue_code": "A0501", "amount_fen": 100000050,
                       "signed_on": "2024-03-01", "title": "居家养老服务"}),
                json!({"kind": "payment", "id": "P-001", "rev": 1, "county": "430112",
                       "contract_id": "C-001", "amount_fen": 50000025, "paid_on": "2024-04-01",
                       "voucher_no": "GK-1"}),
                json!({"kind": "evaluation", "id": "E-001", "rev": 1, "county": "430112",
                       "contract_id": "C-001", "evaluator": "评价中心", "score": 92,
                       "grade": "excellent", "evaluated_on": "2024-12-01"}),
            ]
        );
    }

    #[test]
    fn problems_name_the_release_and_path() {
        let mut p = package();
        let release = &mut p["releases"][0];
        release["planning"]["budget"]["amount"] = json!({"amount": 12.345, "currency": "CNY"});
        release["contracts"][0]["value"]["currency"] = json!("USD");
        release["contracts"][0]["tongbu"]
            .as_object_mut()
            .unwrap()
            .remove("method");
        release["contracts"][0]["implementation"]["transactions"][0]["date"] = json!("yesterday");
        let e = records(&p).unwrap_err().to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(
            lines,
            vec![
                "release 1 (ocid ocds-tongbu-430112-BL-001): planning.budget.amount.amount: 12.345 has more than 2 decimal(s): amounts in yuan are whole fen",
                "release 1 (ocid ocds-tongbu-430112-BL-001): contracts[0].value.currency: USD: only amounts in CNY can be imported",
                "release 1 (ocid ocds-tongbu-430112-BL-001): contracts[0].implementation.transactions[0].date: \"yesterday\" is not a date-time (RFC 3339) or a YYYY-MM-DD date",
            ]
        );
        // Once those are fixed, the missing method is named.
        let mut p = package();
        p["releases"][0]["contracts"][0]["tongbu"]
            .as_object_mut()
            .unwrap()
            .remove("method");
        let e = records(&p).unwrap_err().to_string();
        assert_eq!(
            e,
            "release 1 (ocid ocds-tongbu-430112-BL-001): contracts[0]: `method` is missing"
        );
    }

    #[test]
    fn constants_fill_what_another_publisher_leaves_out() {
        let mut p = package();
        p["releases"][0]["contracts"][0]["tongbu"]
            .as_object_mut()
            .unwrap()
            .remove("method");
        let mut o = opts();
        o.mapping = super::super::Mapping::parse("[constants]\nmethod = \"inquiry\"").unwrap();
        let got = convert(p.to_string().as_bytes(), &o).unwrap();
        let contract: Value = serde_json::from_slice(&got[1].bytes).unwrap();
        assert_eq!(contract["method"], "inquiry");
    }

    #[test]
    fn cancelled_contracts_and_bad_packages_are_refused() {
        let mut p = package();
        p["releases"][0]["contracts"][0]["status"] = json!("cancelled");
        let e = records(&p).unwrap_err().to_string();
        assert!(e.contains("contracts[0].status: is cancelled"), "{e}");
        assert!(records(&json!({"version": "1.1"})).is_err());
        assert!(
            records(&json!({"releases": [{"id": "x"}]}))
                .unwrap_err()
                .to_string()
                .contains("has no ocid")
        );
        assert!(convert(b"not json", &opts()).is_err());
    }

    #[test]
    fn dates_in_china_standard_time() {
        let d = |s: &str| ocds_date(s).map(|d| d.to_string());
        assert_eq!(d("2024-02-29T16:30:00Z").as_deref(), Some("2024-03-01"));
        assert_eq!(
            d("2024-03-01T00:00:00+08:00").as_deref(),
            Some("2024-03-01")
        );
        assert_eq!(d("2024-03-01").as_deref(), Some("2024-03-01"));
        assert_eq!(d("2024-03-01T00:00:00"), None);
    }
}
