//! Realistic sample records for the demo's simulated counties and for tests: budget lines,
//! contracts within them, payments within contracts and evaluations, with valid supplier codes
//! and dates in order. Deterministic for a given seed (SplitMix64); no clock, no I/O. Every
//! record it makes parses with [`Record::parse`] and stays within its predecessor's amount.

use serde_json::{Value, json};

use crate::ids::CountyCode;
use crate::record::Record;
use crate::uscc::check_character;

/// A service the samples buy: catalogue code, project title, supplier name stem.
const SERVICES: &[(&str, &str, &str)] = &[
    ("A0501", "居家养老上门服务", "颐养居家养老服务中心"),
    ("A0502", "社区日间照料服务", "福寿社区照料服务有限公司"),
    ("A0601", "残疾儿童康复训练服务", "启明残疾儿童康复中心"),
    ("A0401", "社会工作服务(禾计划)", "同心社会工作服务中心"),
    (
        "A0301",
        "基本医疗公共保险经办服务",
        "人寿保险股份有限公司分公司",
    ),
    ("A0201", "就业创业培训服务", "职业技能培训学校"),
    ("B0101", "社区治理与网格化服务", "和美社区发展服务中心"),
];

const METHODS: &[&str] = &[
    "public_tender",
    "competitive_consultation",
    "competitive_negotiation",
    "inquiry",
    "framework_agreement",
];
const DEPARTMENTS: &[&str] = &["101001", "102003", "105002", "108001"];
const USCC_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";

/// A deterministic stream of one county's records, in an order a county would send them.
#[derive(Debug, Clone)]
pub struct CountySim {
    county: CountyCode,
    rng: u64,
    project: u64,
    series: u64,
    year: i32,
    anomalies: bool,
    pending: std::collections::VecDeque<Value>,
}

impl CountySim {
    pub fn new(county: CountyCode, seed: u64, year: i32) -> CountySim {
        CountySim {
            county,
            rng: seed ^ 0x9E37_79B9_7F4A_7C15,
            project: 0,
            series: seed % 1000,
            year,
            anomalies: false,
            pending: std::collections::VecDeque::new(),
        }
    }

    /// A stream where about a third of the projects break a rule, arrive out of order or are
    /// amended (for the demo, so the ledger and violations have something true to show).
    pub fn with_anomalies(mut self) -> CountySim {
        self.anomalies = true;
        self
    }

    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn uscc(&mut self) -> String {
        let mut first = [0u8; 17];
        first[..2].copy_from_slice(b"52");
        first[2..8].copy_from_slice(self.county.as_str().as_bytes());
        for b in &mut first[8..] {
            *b = USCC_ALPHABET[self.below(31) as usize];
        }
        let check = check_character(&first).unwrap_or('0');
        let mut s = String::from_utf8_lossy(&first).into_owned();
        s.push(check);
        s
    }

    /// The next record as JSON text (one line).
    pub fn next_json(&mut self) -> String {
        if self.pending.is_empty() {
            self.plan_project();
        }
        self.pending
            .pop_front()
            .map(|v| v.to_string())
            .unwrap_or_default()
    }

    /// The next `n` records as a JSON Lines document.
    pub fn batch(&mut self, n: usize) -> String {
        let mut out = String::new();
        for _ in 0..n {
            out.push_str(&self.next_json());
            out.push('\n');
        }
        out
    }

    /// One project: an approved budget line, one or two contracts within it, payments within
    /// each contract (dates after signing) and an evaluation; with anomalies on, sometimes
    /// bent to break a rule, arrive out of order or be amended.
    fn plan_project(&mut self) {
        self.project += 1;
        // Ids carry the series (seed) so two simulated sources in one county never collide.
        let p = format!("{:03}{:05}", self.series, self.project);
        let c = self.county.as_str().to_owned();
        let year = self.year;
        let (code, title, supplier) = SERVICES[self.below(SERVICES.len() as u64) as usize];
        let department = DEPARTMENTS[self.below(DEPARTMENTS.len() as u64) as usize];
        // Budget between 100,000 and 5,000,000 yuan, whole yuan.
        let budget = (100_000 + self.below(4_900_000)) as i64 * 100;
        let approved_month = 1 + self.below(3);
        let bl = format!("BL-{c}-{year}-{p}");
        let mut out = vec![json!({
            "kind": "budget_line", "id": bl, "rev": 1, "county": c, "department": department,
            "fiscal_year": year, "catalogue_code": code, "amount_fen": budget, "stage": "approved",
            "approved_on": format!("{year}-{approved_month:02}-15"), "title": title,
        })];
        let contracts = 1 + self.below(2);
        let mut remaining = budget;
        for k in 1..=contracts {
            let amount = remaining / 100 * (40 + self.below(50) as i64);
            if amount <= 0 {
                break;
            }
            remaining -= amount;
            let signed_month = approved_month + 1 + self.below(3);
            let cid = format!("C-{c}-{year}-{p}-{k}");
            let method = METHODS[self.below(METHODS.len() as u64) as usize];
            let uscc = self.uscc();
            out.push(json!({
                "kind": "contract", "id": cid, "rev": 1, "county": c, "budget_line_id": bl,
                "supplier_uscc": uscc, "supplier_name": supplier, "method": method,
                "catalogue_code": code, "amount_fen": amount,
                "signed_on": format!("{year}-{signed_month:02}-01"), "title": title,
                "service_from": format!("{year}-{signed_month:02}-01"), "service_to": format!("{year}-12-31"),
            }));
            let payments = 1 + self.below(3) as i64;
            for n in 1..=payments {
                let month = (signed_month as i64 + n * 2).min(12);
                out.push(json!({
                    "kind": "payment", "id": format!("P-{c}-{year}-{p}-{k}-{n}"), "rev": 1,
                    "county": c, "contract_id": cid, "amount_fen": amount / 4,
                    "paid_on": format!("{year}-{month:02}-20"),
                    "voucher_no": format!("GK{year}{p}{k}{n:02}"),
                }));
            }
            let score = 70 + self.below(30);
            let grade = if score >= 90 {
                "excellent"
            } else if score >= 80 {
                "good"
            } else {
                "fair"
            };
            out.push(json!({
                "kind": "evaluation", "id": format!("E-{c}-{year}-{p}-{k}"), "rev": 1,
                "county": c, "contract_id": cid, "evaluator": "第三方绩效评价机构",
                "score": score, "grade": grade, "evaluated_on": format!("{year}-12-28"),
            }));
        }
        if self.anomalies && self.below(100) < 35 {
            let which = self.below(ANOMALIES as u64) as usize;
            self.bend(&mut out, which, budget);
        }
        self.pending.extend(out);
    }

    /// Bends a clean project so that it shows one of the things the hub must catch or cope
    /// with. `which` picks the anomaly; `budget` is the budget line's amount.
    fn bend(&mut self, out: &mut Vec<Value>, which: usize, budget: i64) {
        let year = self.year;
        let first = |kind: &str, out: &[Value]| out.iter().position(|v| v["kind"] == kind);
        let Some(ci) = first("contract", out) else {
            return;
        };
        let contract_amount = out[ci]["amount_fen"].as_i64().unwrap_or(1);
        match which {
            // BUDGET_EXCEEDED: the contract is bigger than the whole budget line.
            0 => out[ci]["amount_fen"] = json!(budget + 100_000),
            // CONTRACT_EXCEEDED: one more payment than the contract allows.
            1 => {
                if let Some(pi) = first("payment", out) {
                    let mut extra = out[pi].clone();
                    extra["id"] = json!(format!("{}-X", extra["id"].as_str().unwrap_or("P")));
                    extra["amount_fen"] = json!(contract_amount);
                    out.insert(pi + 1, extra);
                }
            }
            // DATE_ORDER: a payment dated before the contract was signed.
            2 => {
                if let Some(pi) = first("payment", out) {
                    out[pi]["paid_on"] = json!(format!("{year}-01-02"));
                }
            }
            // YEAR_MISMATCH: signed in the following year.
            3 => {
                out[ci]["signed_on"] = json!(format!("{}-01-10", year + 1));
                out[ci]["service_from"] = json!(format!("{}-01-10", year + 1));
                out[ci]["service_to"] = json!(format!("{}-12-31", year + 1));
            }
            // NOT_IN_CATALOGUE: a service the catalogue does not list.
            4 => {
                for v in out.iter_mut().filter(|v| v.get("catalogue_code").is_some()) {
                    v["catalogue_code"] = json!("Z9901");
                }
            }
            // NEGATIVE_LIST: engineering bundled with services.
            5 => {
                for v in out.iter_mut().filter(|v| v.get("catalogue_code").is_some()) {
                    v["catalogue_code"] = json!("N0201");
                    v["title"] = json!("社区服务中心改造及运营(工程与服务捆绑)");
                }
            }
            // BUDGET_NOT_APPROVED: the budget line is only reported.
            6 => {
                out[0]["stage"] = json!("reported");
                if let Some(m) = out[0].as_object_mut() {
                    m.remove("approved_on");
                }
            }
            // Held, then resolved: the treasury's first payment arrives before anything else.
            7 => {
                if let Some(pi) = first("payment", out) {
                    let payment = out.remove(pi);
                    out.insert(0, payment);
                }
            }
            // An amendment: the contract grows by a tenth (the budget has room).
            8 => {
                let mut rev2 = out[ci].clone();
                rev2["rev"] = json!(2);
                rev2["amount_fen"] = json!(contract_amount + contract_amount / 10);
                out.insert(ci + 1, rev2);
            }
            // BUDGET_EXCEEDED by amendment: the budget line is cut below what is contracted.
            9 => {
                let mut rev2 = out[0].clone();
                rev2["rev"] = json!(2);
                rev2["amount_fen"] = json!((contract_amount / 2).max(1));
                out.insert(ci + 1, rev2);
            }
            // CANCELLED_PREDECESSOR: the contract is cancelled, yet the treasury pays on it.
            10 => {
                let cancel = json!({
                    "kind": "contract", "id": out[ci]["id"], "rev": 2, "county": out[ci]["county"], "cancelled": true,
                });
                out.insert(ci + 1, cancel);
            }
            // PAID_WITHOUT_EVALUATION: paid in full before any evaluation.
            11 => {
                let payments: Vec<usize> = out
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v["kind"] == "payment" && v["contract_id"] == out[ci]["id"])
                    .map(|(i, _)| i)
                    .collect();
                if let Some(&last) = payments.last() {
                    let others = (payments.len() as i64 - 1) * (contract_amount / 4);
                    out[last]["amount_fen"] = json!(contract_amount - others);
                }
            }
            // STALE_REVISION: an amendment, then the original resent with another amount.
            _ => {
                let mut rev2 = out[ci].clone();
                rev2["rev"] = json!(2);
                let mut stale = out[ci].clone();
                stale["amount_fen"] = json!((contract_amount / 2).max(1));
                out.insert(ci + 1, rev2);
                out.insert(ci + 2, stale);
            }
        }
    }
}

/// How many kinds of anomaly [`CountySim::bend`] knows.
const ANOMALIES: usize = 13;

/// Parses a sample back (used by tests to check the generator keeps its promise).
pub fn parse(json: &str) -> Option<Record> {
    Record::parse(json.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Body;

    #[test]
    fn anomalies_show_every_rule_a_county_can_break_and_held_records_resolve() {
        use crate::policy::{PolicyBundle, default_policy};
        use crate::rules::{Pending, ingest, mem::MemLedger};
        let county = CountyCode::parse("430112").unwrap();
        let agent = crate::AgentId::parse("430112-00000001").unwrap();
        let mut sim = CountySim::new(county, 11, 2025).with_anomalies();
        let mut ledger = MemLedger::new(PolicyBundle::new(1, 0, default_policy()).policy());
        let mut codes = std::collections::BTreeSet::new();
        let mut held = 0;
        for seq in 1..=4000u64 {
            let json = sim.next_json();
            let record = Record::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"));
            let p = Pending {
                agent: agent.clone(),
                seq,
                record,
                digest: crate::Digest::of(&[json.as_bytes()]),
                order: seq,
                received_ms: 0,
                policy_version: 1,
                held_at: None,
            };
            for d in ingest(&mut ledger, p).unwrap() {
                if d.outcome == crate::protocol::Outcome::Held {
                    held += 1;
                }
                codes.extend(d.codes());
            }
        }
        for code in [
            "BUDGET_EXCEEDED",
            "CONTRACT_EXCEEDED",
            "DATE_ORDER",
            "YEAR_MISMATCH",
            "NOT_IN_CATALOGUE",
            "NEGATIVE_LIST",
            "BUDGET_NOT_APPROVED",
            "CANCELLED_PREDECESSOR",
            "PREDECESSOR_REJECTED",
            "PAID_WITHOUT_EVALUATION",
            "STALE_REVISION",
        ] {
            assert!(codes.contains(code), "{code} never appeared: {codes:?}");
        }
        assert!(held > 0, "no record was ever held");
        assert_eq!(ledger.held_count(), 0, "every held record resolved");
    }

    #[test]
    fn samples_are_well_formed_and_deterministic() {
        let county = CountyCode::parse("431281").unwrap();
        let mut a = CountySim::new(county.clone(), 7, 2024);
        let mut b = CountySim::new(county, 7, 2024);
        let mut payments_by_contract = std::collections::HashMap::<String, i64>::new();
        let mut contracts = std::collections::HashMap::<String, i64>::new();
        for _ in 0..2000 {
            let x = a.next_json();
            assert_eq!(x, b.next_json());
            let r = parse(&x).unwrap_or_else(|| panic!("sample does not parse: {x}"));
            match r.body {
                Some(Body::Contract(c)) => {
                    contracts.insert(r.header.id.to_string(), c.amount.get());
                }
                Some(Body::Payment(p)) => {
                    *payments_by_contract
                        .entry(p.contract_id.to_string())
                        .or_default() += p.amount.get();
                }
                _ => {}
            }
        }
        for (cid, paid) in payments_by_contract {
            assert!(paid <= contracts[&cid], "{cid} overpaid");
        }
    }
}
