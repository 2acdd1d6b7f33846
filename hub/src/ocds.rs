//! The hub's ledger as open data: an OCDS 1.1 release package of one county's accepted records
//! for one fiscal year (`tongbu-hub export ocds`, `GET /api/v1/ocds`).
//!
//! One release per budget line (OCDS's contracting process): the accepted, current, not
//! cancelled revision of every budget line of the county whose fiscal year is the one asked,
//! with the accepted current contracts on it, their accepted payments and evaluations.
//! Rejected and held records, superseded revisions and cancelled entities are left out: the
//! package says what stands, the log keeps the history. A year with no accepted budget line is
//! an error ([`ExportError::Nothing`]): an OCDS package holds at least one release.
//!
//! | v1 | OCDS |
//! |---|---|
//! | budget line | `planning.budget`: `id`, `amount`, `project` and `description` (title); `buyer` and a `parties` entry (roles buyer, payer) for its department |
//! | contract | `awards[]` (id = the contract's id, the supplier, the value, `date` = signing) and `contracts[]`: `id`, `awardID`, `title`, `status` `active`, `value`, `dateSigned`, `period` (service period), `items[0].classification` (scheme `CN-GPS-CATALOGUE`, the catalogue code) |
//! | supplier | a `parties` entry (roles supplier, payee): `id` `CN-USCC-<code>`, `name`, `identifier` {scheme `CN-USCC`, id, legalName} |
//! | payment | `contracts[].implementation.transactions[]`: `id`, `date`, `value`, `payer`, `payee` |
//! | evaluation | `contracts[].tongbu.evaluations[]` (OCDS 1.1 has no place for it) |
//!
//! The v1 fields OCDS has no place for ride in a `tongbu` object on the budget, each contract
//! and each transaction (see `tongbu_agent::import::ocds`, which reads this package back into
//! the same records). `ocid` is the prefix (default [`DEFAULT_OCID_PREFIX`]) plus
//! `<county>-<budget line id>`; dates are `T00:00:00+08:00` of the record's day.
//!
//! Amounts: OCDS writes numbers of yuan; the number's text is built from the integer fen
//! (`tongbu_shared::yuan::yuan_text`: `1200000` for whole yuan, else exactly two decimals,
//! `1234.50`) and emitted as that exact JSON text, never through a float, so a reader that
//! keeps the text (Tongbu's importer does) gets the fen back exactly, and any reader gets the
//! nearest double of an amount of at most 15 significant digits, which every record amount
//! (≤ 10^15 fen) is.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;
use tongbu_shared::Date;
use tongbu_shared::ids::{Code, CountyCode};
use tongbu_shared::protocol::Outcome;
use tongbu_shared::record::{Body, Kind, Record};
use tongbu_shared::rules::{EntityKey, Facts};
use tongbu_shared::yuan::yuan_text;

use crate::store::{IndexedRecord, Reads, StoreError};

/// The ocid prefix used unless another is configured (a publisher registers its own with the
/// Open Contracting Partnership).
pub const DEFAULT_OCID_PREFIX: &str = "ocds-tongbu-";
/// The identifier scheme of a supplier's unified social credit code.
pub const USCC_SCHEME: &str = "CN-USCC";
/// The classification scheme of the provincial guidance catalogue's codes.
pub const CATALOGUE_SCHEME: &str = "CN-GPS-CATALOGUE";

/// How to write the package.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub ocid_prefix: String,
    /// The package's `publisher.name`.
    pub publisher: String,
}

impl Default for ExportOptions {
    fn default() -> ExportOptions {
        ExportOptions {
            ocid_prefix: DEFAULT_OCID_PREFIX.to_owned(),
            publisher: "Tongbu provincial hub".to_owned(),
        }
    }
}

/// Checks an ocid prefix: 1–32 letters, digits and `-`, as registered prefixes are written.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the ocid prefix must be 1-32 letters, digits or '-', got {prefix:?}"
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("no county {0} is registered")]
    UnknownCounty(CountyCode),
    /// OCDS packages hold at least one release: a year without an accepted budget line has
    /// nothing to publish.
    #[error(
        "county {county} has no accepted budget line of fiscal year {year}: nothing to publish"
    )]
    Nothing { county: CountyCode, year: i32 },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug: the package could not be written.
    #[error("cannot write the OCDS package: {0}")]
    Internal(String),
}

// ---- the package, as written -------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct Package {
    uri: String,
    version: &'static str,
    #[serde(rename = "publishedDate")]
    published_date: String,
    publisher: Publisher,
    pub releases: Vec<Release>,
}

#[derive(Debug, Serialize)]
struct Publisher {
    name: String,
}

#[derive(Debug, Serialize)]
pub struct Release {
    pub ocid: String,
    id: String,
    date: String,
    tag: Vec<&'static str>,
    #[serde(rename = "initiationType")]
    initiation_type: &'static str,
    language: &'static str,
    parties: Vec<Party>,
    buyer: OrgRef,
    planning: Planning,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    awards: Vec<Award>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    contracts: Vec<Contract>,
}

#[derive(Debug, Clone, Serialize)]
struct Party {
    id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    identifier: Option<Identifier>,
    roles: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
struct Identifier {
    scheme: &'static str,
    id: String,
    #[serde(rename = "legalName")]
    legal_name: String,
}

#[derive(Debug, Clone, Serialize)]
struct OrgRef {
    id: String,
    name: String,
}

/// An OCDS `Value`: the amount as exact JSON number text (see the module doc).
#[derive(Debug, Serialize)]
struct Value {
    amount: Box<RawValue>,
    currency: &'static str,
}

#[derive(Debug, Serialize)]
struct Planning {
    budget: Budget,
}

#[derive(Debug, Serialize)]
struct Budget {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<String>,
    amount: Value,
    tongbu: BudgetExt,
}

#[derive(Debug, Serialize)]
struct BudgetExt {
    rev: u32,
    department: String,
    fiscal_year: i32,
    catalogue_code: String,
    stage: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    approved_on: Option<String>,
}

#[derive(Debug, Serialize)]
struct Award {
    id: String,
    status: &'static str,
    date: String,
    value: Value,
    suppliers: Vec<OrgRef>,
}

#[derive(Debug, Serialize)]
struct Contract {
    id: String,
    #[serde(rename = "awardID")]
    award_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    status: &'static str,
    value: Value,
    #[serde(rename = "dateSigned")]
    date_signed: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    period: Option<Period>,
    items: Vec<Item>,
    #[serde(skip_serializing_if = "Option::is_none")]
    implementation: Option<Implementation>,
    tongbu: ContractExt,
}

#[derive(Debug, Serialize)]
struct Period {
    #[serde(rename = "startDate", skip_serializing_if = "Option::is_none")]
    start_date: Option<String>,
    #[serde(rename = "endDate", skip_serializing_if = "Option::is_none")]
    end_date: Option<String>,
}

#[derive(Debug, Serialize)]
struct Item {
    id: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    classification: Classification,
}

#[derive(Debug, Serialize)]
struct Classification {
    scheme: &'static str,
    id: String,
}

#[derive(Debug, Serialize)]
struct ContractExt {
    rev: u32,
    budget_line_id: String,
    method: &'static str,
    catalogue_code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    evaluations: Vec<EvaluationExt>,
}

#[derive(Debug, Serialize)]
struct EvaluationExt {
    id: String,
    rev: u32,
    evaluator: String,
    score: u8,
    grade: &'static str,
    evaluated_on: String,
}

#[derive(Debug, Serialize)]
struct Implementation {
    transactions: Vec<Transaction>,
}

#[derive(Debug, Serialize)]
struct Transaction {
    id: String,
    date: String,
    value: Value,
    payer: OrgRef,
    payee: OrgRef,
    tongbu: TransactionExt,
}

#[derive(Debug, Serialize)]
struct TransactionExt {
    rev: u32,
    voucher_no: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

fn value(fen: i64) -> Result<Value, ExportError> {
    // yuan_text always writes a valid JSON number (digits, an optional sign and two decimals).
    let amount = RawValue::from_string(yuan_text(fen))
        .map_err(|e| ExportError::Internal(format!("amount {fen} fen: {e}")))?;
    Ok(Value {
        amount,
        currency: "CNY",
    })
}

fn date_time(d: Date) -> String {
    format!("{d}T00:00:00+08:00")
}

/// The package of `county`'s accepted records of `year` as JSON bytes, read from one snapshot
/// of the hub's store (what `GET /api/v1/ocds` serves).
pub async fn export_json(
    hub: &crate::Hub,
    county: CountyCode,
    year: i32,
    opts: ExportOptions,
) -> Result<Vec<u8>, ExportError> {
    let now_ms = hub.now_ms();
    hub.db()
        .read(move |r| {
            let package = build(r, &county, year, &opts, now_ms)?;
            serde_json::to_vec(&package).map_err(|e| ExportError::Internal(e.to_string()))
        })
        .await
}

// ---- reading what stands ---------------------------------------------------------------

/// One entity's standing revision: its accepted current facts and the record of that revision.
struct Standing {
    facts: Facts,
    record: Record,
}

/// The standing (accepted, current, not cancelled) revision of each entity among `indexed`
/// of `kind`, in the order the entities first arrived.
fn standing(
    r: &dyn Reads,
    county: &CountyCode,
    kind: Kind,
    indexed: &[IndexedRecord],
) -> Result<Vec<Standing>, StoreError> {
    // The entity ids in the order they first arrived, each with its stored records.
    let mut order: Vec<&str> = Vec::new();
    let mut by_entity: BTreeMap<&str, Vec<&IndexedRecord>> = BTreeMap::new();
    for ix in indexed.iter().filter(|ix| ix.kind == kind.as_str()) {
        let records = by_entity.entry(ix.entity_id.as_str()).or_default();
        if records.is_empty() {
            order.push(ix.entity_id.as_str());
        }
        records.push(ix);
    }
    let mut out = Vec::new();
    for entity_id in order {
        let Ok(id) = Code::parse(entity_id) else {
            continue;
        };
        let Some(entity) = r.entity(&EntityKey::new(county, kind, &id))? else {
            continue;
        };
        let Some(facts) = entity.current.filter(|f| !f.cancelled) else {
            continue;
        };
        // The record of the standing revision: the accepted envelope of this entity with its
        // rev (an identical resend by another agent of the county is the same record).
        let mut found = None;
        for other in by_entity.get(entity_id).into_iter().flatten() {
            let Some(env) = r.envelope(&other.agent, other.seq)? else {
                continue;
            };
            if env.outcome != Outcome::Accepted {
                continue;
            }
            if let Ok(record) = Record::parse_lenient(&env.body)
                && record.header.kind == kind
                && record.header.rev == facts.rev
                && record.body.is_some()
            {
                found = Some(record);
                break;
            }
        }
        if let Some(record) = found {
            out.push(Standing { facts, record });
        }
    }
    Ok(out)
}

/// Builds the package of `county`'s accepted records of fiscal year `year`.
pub fn build(
    r: &dyn Reads,
    county: &CountyCode,
    year: i32,
    opts: &ExportOptions,
    now_ms: i64,
) -> Result<Package, ExportError> {
    let county_row = r
        .county(county)?
        .ok_or_else(|| ExportError::UnknownCounty(county.clone()))?;
    let budget_index = r.records_with_parent(county.as_str(), "")?;
    let mut releases = Vec::new();
    for budget in standing(r, county, Kind::BudgetLine, &budget_index)? {
        if budget.facts.fiscal_year != year {
            continue;
        }
        if let Some(release) = release(r, county, &county_row.name, &budget, opts)? {
            releases.push(release);
        }
    }
    if releases.is_empty() {
        return Err(ExportError::Nothing {
            county: county.clone(),
            year,
        });
    }
    Ok(Package {
        uri: format!("urn:tongbu:ocds:{county}:{year}"),
        version: "1.1",
        published_date: crate::clock::rfc3339(now_ms),
        publisher: Publisher {
            name: opts.publisher.clone(),
        },
        releases,
    })
}

fn release(
    r: &dyn Reads,
    county: &CountyCode,
    county_name: &str,
    budget: &Standing,
    opts: &ExportOptions,
) -> Result<Option<Release>, ExportError> {
    let Some(Body::BudgetLine(b)) = &budget.record.body else {
        return Ok(None);
    };
    let bl_id = budget.record.header.id.as_str();
    let ocid = format!("{}{county}-{bl_id}", opts.ocid_prefix);
    let buyer = OrgRef {
        id: format!("CN-{county}-{}", b.department),
        name: format!("{county_name} {}", b.department),
    };
    let mut parties: BTreeMap<String, Party> = BTreeMap::new();
    parties.insert(
        buyer.id.clone(),
        Party {
            id: buyer.id.clone(),
            name: buyer.name.clone(),
            identifier: None,
            roles: vec!["buyer", "payer"],
        },
    );
    let mut latest = b.approved_on;
    let mut awards = Vec::new();
    let mut contracts = Vec::new();
    let mut paid_any = false;

    let on_budget = r.records_with_parent(county.as_str(), bl_id)?;
    for contract in standing(r, county, Kind::Contract, &on_budget)? {
        if contract.facts.parent.as_ref().map(Code::as_str) != Some(bl_id) {
            continue; // a later revision moved it to another budget line
        }
        let Some(Body::Contract(c)) = &contract.record.body else {
            continue;
        };
        let c_id = contract.record.header.id.as_str();
        let supplier = OrgRef {
            id: format!("{USCC_SCHEME}-{}", c.supplier_uscc.as_str()),
            name: c.supplier_name.as_str().to_owned(),
        };
        parties.entry(supplier.id.clone()).or_insert_with(|| Party {
            id: supplier.id.clone(),
            name: supplier.name.clone(),
            identifier: Some(Identifier {
                scheme: USCC_SCHEME,
                id: c.supplier_uscc.as_str().to_owned(),
                legal_name: supplier.name.clone(),
            }),
            roles: vec!["supplier", "payee"],
        });
        latest = latest.max(Some(c.signed_on));

        let on_contract = r.records_with_parent(county.as_str(), c_id)?;
        let mut transactions = Vec::new();
        for payment in standing(r, county, Kind::Payment, &on_contract)? {
            let Some(Body::Payment(p)) = &payment.record.body else {
                continue;
            };
            if payment.facts.parent.as_ref().map(Code::as_str) != Some(c_id) {
                continue;
            }
            latest = latest.max(Some(p.paid_on));
            transactions.push(Transaction {
                id: payment.record.header.id.as_str().to_owned(),
                date: date_time(p.paid_on),
                value: value(p.amount.get())?,
                payer: buyer.clone(),
                payee: supplier.clone(),
                tongbu: TransactionExt {
                    rev: payment.record.header.rev,
                    voucher_no: p.voucher_no.as_str().to_owned(),
                    note: p.note.as_ref().map(|n| n.as_str().to_owned()),
                },
            });
        }
        let mut evaluations = Vec::new();
        for evaluation in standing(r, county, Kind::Evaluation, &on_contract)? {
            let Some(Body::Evaluation(e)) = &evaluation.record.body else {
                continue;
            };
            if evaluation.facts.parent.as_ref().map(Code::as_str) != Some(c_id) {
                continue;
            }
            latest = latest.max(Some(e.evaluated_on));
            evaluations.push(EvaluationExt {
                id: evaluation.record.header.id.as_str().to_owned(),
                rev: evaluation.record.header.rev,
                evaluator: e.evaluator.as_str().to_owned(),
                score: e.score,
                grade: e.grade.as_str(),
                evaluated_on: e.evaluated_on.to_string(),
            });
        }
        paid_any |= !transactions.is_empty();
        let title = c.title.as_ref().map(|t| t.as_str().to_owned());
        awards.push(Award {
            id: c_id.to_owned(),
            status: "active",
            date: date_time(c.signed_on),
            value: value(c.amount.get())?,
            suppliers: vec![supplier.clone()],
        });
        contracts.push(Contract {
            id: c_id.to_owned(),
            award_id: c_id.to_owned(),
            title: title.clone(),
            status: "active",
            value: value(c.amount.get())?,
            date_signed: date_time(c.signed_on),
            period: (c.service_from.is_some() || c.service_to.is_some()).then(|| Period {
                start_date: c.service_from.map(date_time),
                end_date: c.service_to.map(date_time),
            }),
            items: vec![Item {
                id: "1",
                description: title,
                classification: Classification {
                    scheme: CATALOGUE_SCHEME,
                    id: c.catalogue_code.as_str().to_owned(),
                },
            }],
            implementation: (!transactions.is_empty()).then_some(Implementation { transactions }),
            tongbu: ContractExt {
                rev: contract.record.header.rev,
                budget_line_id: bl_id.to_owned(),
                method: c.method.as_str(),
                catalogue_code: c.catalogue_code.as_str().to_owned(),
                evaluations,
            },
        });
    }

    let mut tag = vec!["planning"];
    if !contracts.is_empty() {
        tag.extend(["award", "contract"]);
    }
    if paid_any {
        tag.push("implementation");
    }
    let date = latest.map_or_else(
        || format!("{}-01-01T00:00:00+08:00", b.fiscal_year),
        date_time,
    );
    let title = b.title.as_ref().map(|t| t.as_str().to_owned());
    Ok(Some(Release {
        id: format!("{ocid}-{}", &date[..10]),
        ocid,
        date,
        tag,
        initiation_type: "tender",
        language: "zh",
        parties: parties.into_values().collect(),
        buyer,
        planning: Planning {
            budget: Budget {
                id: bl_id.to_owned(),
                description: title.clone(),
                project: title,
                amount: value(b.amount.get())?,
                tongbu: BudgetExt {
                    rev: budget.record.header.rev,
                    department: b.department.as_str().to_owned(),
                    fiscal_year: b.fiscal_year,
                    catalogue_code: b.catalogue_code.as_str().to_owned(),
                    stage: b.stage.as_str(),
                    approved_on: b.approved_on.map(|d| d.to_string()),
                },
            },
        },
        awards,
        contracts,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_json_numbers() {
        let v = serde_json::to_string(&value(123_450).unwrap()).unwrap();
        assert_eq!(v, r#"{"amount":1234.50,"currency":"CNY"}"#);
        let v = serde_json::to_string(&value(120_000_000).unwrap()).unwrap();
        assert_eq!(v, r#"{"amount":1200000,"currency":"CNY"}"#);
        let v = serde_json::to_string(&value(5).unwrap()).unwrap();
        assert_eq!(v, r#"{"amount":0.05,"currency":"CNY"}"#);
    }

    #[test]
    fn prefixes() {
        assert!(check_prefix(DEFAULT_OCID_PREFIX).is_ok());
        assert!(check_prefix("ocds-a1b2c3-").is_ok());
        for bad in ["", "ocds/x", "前缀", &"x".repeat(33)] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
