//! Scenario tests of the engine on the in-memory ledger, and property tests over random streams
//! split across a county's three agents (budget office, procurement centre, treasury).

use proptest::prelude::*;

use super::mem::MemLedger;
use super::*;
use crate::policy::{PolicyBundle, default_policy};
use crate::protocol::Outcome;

const COUNTY: &str = "430112";

struct World {
    ledger: MemLedger,
    order: u64,
    seqs: std::collections::HashMap<String, u64>,
    now: i64,
}

impl World {
    fn new() -> World {
        World {
            ledger: MemLedger::new(PolicyBundle::new(1, 0, default_policy()).policy()),
            order: 0,
            seqs: Default::default(),
            now: 1_000,
        }
    }

    fn pending(&mut self, agent: &str, json: &str) -> Pending {
        let record = crate::record::Record::parse_lenient(json.as_bytes())
            .unwrap_or_else(|e| panic!("{json}: {e}"));
        self.order += 1;
        let seq = self.seqs.entry(agent.to_owned()).or_default();
        *seq += 1;
        Pending {
            agent: AgentId::parse(agent).unwrap(),
            seq: *seq,
            record,
            digest: crate::Digest::of(&[json.as_bytes()]),
            order: self.order,
            received_ms: self.now,
            policy_version: 1,
            held_at: None,
        }
    }

    /// Sends one record from `agent`; returns the decisions it caused (its own first).
    fn send(&mut self, agent: &str, json: &str) -> Vec<Decision> {
        let p = self.pending(agent, json);
        ingest(&mut self.ledger, p).unwrap()
    }

    fn outcome(&mut self, agent: &str, json: &str) -> (Outcome, Vec<String>) {
        let d = self.send(agent, json).remove(0);
        (d.outcome, d.codes())
    }

    fn totals(&self) -> Totals {
        self.ledger
            .year_totals(&CountyCode::parse(COUNTY).unwrap(), 2024)
    }
}

const BUDGET_OFFICE: &str = "430112-0000000b";
const PROCUREMENT: &str = "430112-0000000c";
const TREASURY: &str = "430112-0000000d";

fn bl(id: &str, rev: u32, amount: i64, stage: &str, extra: &str) -> String {
    let approved = if stage == "approved" {
        r#","approved_on":"2024-01-15""#
    } else {
        ""
    };
    format!(
        r#"{{"kind":"budget_line","id":"{id}","rev":{rev},"county":"430112","department":"101001","fiscal_year":2024,"catalogue_code":"A0501","amount_fen":{amount},"stage":"{stage}"{approved}{extra}}}"#
    )
}

fn contract(id: &str, rev: u32, line: &str, amount: i64, signed_on: &str, extra: &str) -> String {
    format!(
        r#"{{"kind":"contract","id":"{id}","rev":{rev},"county":"430112","budget_line_id":"{line}","supplier_uscc":"91350100M000100Y43","supplier_name":"颐养居家养老服务中心","method":"public_tender","catalogue_code":"A0501","amount_fen":{amount},"signed_on":"{signed_on}"{extra}}}"#
    )
}

fn payment(id: &str, rev: u32, contract: &str, amount: i64, paid_on: &str) -> String {
    format!(
        r#"{{"kind":"payment","id":"{id}","rev":{rev},"county":"430112","contract_id":"{contract}","amount_fen":{amount},"paid_on":"{paid_on}","voucher_no":"GK-{id}"}}"#
    )
}

fn evaluation(id: &str, contract: &str, on: &str) -> String {
    format!(
        r#"{{"kind":"evaluation","id":"{id}","rev":1,"county":"430112","contract_id":"{contract}","evaluator":"第三方","score":90,"grade":"excellent","evaluated_on":"{on}"}}"#
    )
}

fn accepted() -> (Outcome, Vec<String>) {
    (Outcome::Accepted, vec![])
}

fn rejected(codes: &[&str]) -> (Outcome, Vec<String>) {
    (
        Outcome::Rejected,
        codes.iter().map(|c| (*c).to_owned()).collect(),
    )
}

#[test]
fn a_project_in_step_is_accepted_and_counted() {
    let mut w = World::new();
    assert_eq!(
        w.outcome(BUDGET_OFFICE, &bl("BL-1", 1, 1000, "approved", "")),
        accepted()
    );
    assert_eq!(
        w.outcome(
            PROCUREMENT,
            &contract("C-1", 1, "BL-1", 800, "2024-03-01", "")
        ),
        accepted()
    );
    assert_eq!(
        w.outcome(TREASURY, &payment("P-1", 1, "C-1", 400, "2024-04-01")),
        accepted()
    );
    assert_eq!(
        w.outcome(PROCUREMENT, &evaluation("E-1", "C-1", "2024-06-01")),
        accepted()
    );
    assert_eq!(
        w.outcome(TREASURY, &payment("P-2", 1, "C-1", 400, "2024-07-01")),
        accepted()
    );
    let t = w.totals();
    assert_eq!((t.budget_approved, t.contracted, t.paid), (1000, 800, 800));
    assert_eq!((t.accepted, t.held, t.rejected), (5, 0, 0));
}

#[test]
fn the_final_payment_without_an_evaluation_is_accepted_and_flagged() {
    let mut w = World::new();
    w.send(BUDGET_OFFICE, &bl("BL-1", 1, 1000, "approved", ""));
    w.send(
        PROCUREMENT,
        &contract("C-1", 1, "BL-1", 800, "2024-03-01", ""),
    );
    assert_eq!(
        w.outcome(TREASURY, &payment("P-1", 1, "C-1", 300, "2024-04-01")),
        accepted()
    );
    let (o, codes) = w.outcome(TREASURY, &payment("P-2", 1, "C-1", 500, "2024-05-01"));
    assert_eq!(
        (o, codes),
        (
            Outcome::Accepted,
            vec!["PAID_WITHOUT_EVALUATION".to_owned()]
        )
    );
    assert_eq!(w.totals().paid, 800);
}

#[test]
fn budget_rules() {
    let mut w = World::new();
    w.send(BUDGET_OFFICE, &bl("BL-C", 1, 1000, "compiled", ""));
    assert_eq!(
        w.outcome(
            PROCUREMENT,
            &contract("C-0", 1, "BL-C", 10, "2024-03-01", "")
        ),
        rejected(&["BUDGET_NOT_APPROVED"])
    );
    w.send(BUDGET_OFFICE, &bl("BL-1", 1, 1000, "approved", ""));
    assert_eq!(
        w.outcome(
            PROCUREMENT,
            &contract("C-1", 1, "BL-1", 600, "2024-03-01", "")
        ),
        accepted()
    );
    assert_eq!(
        w.outcome(
            PROCUREMENT,
            &contract("C-2", 1, "BL-1", 401, "2024-03-01", "")
        ),
        rejected(&["BUDGET_EXCEEDED"])
    );
    assert_eq!(
        w.outcome(
            PROCUREMENT,
            &contract("C-3", 1, "BL-1", 400, "2024-03-01", "")
        ),
        accepted()
    );
    assert_eq!(w.totals().contracted, 1000);
    // Amending the budget line below what is contracted is refused; the line stands as it was.
    assert_eq!(
        w.outcome(BUDGET_OFFICE, &bl("BL-1", 2, 999, "approved", "")),
        rejected(&["BUDGET_EXCEEDED"])
    );
    assert_eq!(
        w.outcome(BUDGET_OFFICE, &bl("BL-1", 3, 1000, "reported", "")),
        rejected(&["BUDGET_NOT_APPROVED"])
    );
    assert_eq!(
        w.outcome(BUDGET_OFFICE, &bl("BL-1", 4, 1500, "approved", "")),
        accepted()
    );
    assert_eq!(w.totals().budget_approved, 1500);
}

#[test]
fn payment_rules() {
    let mut w = World::new();
    w.send(BUDGET_OFFICE, &bl("BL-1", 1, 1000, "approved", ""));
    w.send(
        PROCUREMENT,
        &contract("C-1", 1, "BL-1", 500, "2024-03-01", ""),
    );
    assert_eq!(
        w.outcome(TREASURY, &payment("P-1", 1, "C-1", 501, "2024-04-01")),
        rejected(&["CONTRACT_EXCEEDED"])
    );
    assert_eq!(
        w.outcome(TREASURY, &payment("P-2", 1, "C-1", 100, "2024-02-01")),
        rejected(&["DATE_ORDER"])
    );
    assert_eq!(
        w.outcome(TREASURY, &payment("P-3", 1, "C-1", 200, "2024-04-01")),
        accepted()
    );
    // A contract amended below what is paid on it is refused.
    assert_eq!(
        w.outcome(
            PROCUREMENT,
            &contract("C-1", 2, "BL-1", 199, "2024-03-01", "")
        ),
        rejected(&["CONTRACT_EXCEEDED"])
    );
    let cancel = r#"{"kind":"contract","id":"C-1","rev":3,"county":"430112","cancelled":true}"#;
    assert_eq!(
        w.outcome(PROCUREMENT, cancel),
        rejected(&["CONTRACT_EXCEEDED"])
    );
    let t = w.totals();
    assert_eq!((t.contracted, t.paid, t.rejected), (500, 200, 4));
}

#[test]
fn a_record_gets_every_code_that_applies() {
    let mut w = World::new();
    w.send(BUDGET_OFFICE, &bl("BL-1", 1, 1000, "approved", ""));
    let bad = contract("C-1", 1, "BL-1", 2000, "2023-12-01", "")
        .replace("\"A0501\"", "\"N0201\"")
        .replace("91350100M000100Y43", "91350100M000100Y44");
    let (o, codes) = w.outcome(PROCUREMENT, &bad);
    assert_eq!(o, Outcome::Rejected);
    for code in [
        "INVALID_SUPPLIER_CODE",
        "NOT_IN_CATALOGUE",
        "NEGATIVE_LIST",
        "YEAR_MISMATCH",
        "DATE_ORDER",
        "BUDGET_EXCEEDED",
    ] {
        assert!(
            codes.contains(&code.to_owned()),
            "{code} missing from {codes:?}"
        );
    }
    // The rejected contract counts nowhere in amounts, and what depends on it is rejected too.
    assert_eq!(w.totals().contracted, 0);
    assert_eq!(
        w.outcome(TREASURY, &payment("P-1", 1, "C-1", 1, "2024-04-01")),
        rejected(&["PREDECESSOR_REJECTED"])
    );
}

#[test]
fn county_and_catalogue_rules() {
    let mut w = World::new();
    let other_agent = "431281-0000000a";
    assert_eq!(
        w.outcome(other_agent, &bl("BL-X", 1, 10, "approved", "")),
        rejected(&["COUNTY_MISMATCH"])
    );
    let off_catalogue = bl("BL-Z", 1, 10, "approved", "").replace("A0501", "Z9999");
    assert_eq!(
        w.outcome(BUDGET_OFFICE, &off_catalogue),
        rejected(&["NOT_IN_CATALOGUE"])
    );
    assert_eq!(
        w.outcome(
            PROCUREMENT,
            &contract("C-Z", 1, "BL-Z", 5, "2024-03-01", "")
        ),
        rejected(&["PREDECESSOR_REJECTED"])
    );
}

#[test]
fn another_countys_agent_can_neither_block_nor_count_in_this_county() {
    let mut w = World::new();
    let rogue = "431281-0000000e";
    // A high revision of this county's budget line, sent by another county's agent.
    assert_eq!(
        w.outcome(rogue, &bl("BL-1", 9, 1000, "approved", "")),
        rejected(&["COUNTY_MISMATCH"])
    );
    // The county's own revisions are not stale because of it, and nothing counts here.
    assert_eq!(
        w.outcome(BUDGET_OFFICE, &bl("BL-1", 1, 1000, "approved", "")),
        accepted()
    );
    // An exact copy of the county's record from the other county is not a resend of it.
    let d = w
        .send(rogue, &bl("BL-1", 1, 1000, "approved", ""))
        .remove(0);
    assert!(!d.duplicate);
    assert_eq!(d.codes(), vec!["COUNTY_MISMATCH".to_owned()]);
    assert_eq!(
        d.county.as_str(),
        "431281",
        "counted under the sender's county"
    );
    let t = w.totals();
    assert_eq!((t.budget_approved, t.accepted, t.rejected), (1000, 1, 0));
    let sender = w
        .ledger
        .year_totals(&CountyCode::parse("431281").unwrap(), 2024);
    assert_eq!(sender.rejected, 2);
}

#[test]
fn revisions_resends_and_cancellations() {
    let mut w = World::new();
    let line = bl("BL-1", 1, 1000, "approved", "");
    assert_eq!(w.outcome(BUDGET_OFFICE, &line), accepted());
    // An identical resend (even from another agent of the county) is not a new record.
    let d = w.send(PROCUREMENT, &line).remove(0);
    assert!(d.duplicate && d.outcome == Outcome::Accepted);
    assert_eq!(w.totals().accepted, 1);
    // A different rev 1 is stale.
    assert_eq!(
        w.outcome(BUDGET_OFFICE, &bl("BL-1", 1, 900, "approved", "")),
        rejected(&["STALE_REVISION"])
    );
    assert_eq!(
        w.outcome(BUDGET_OFFICE, &bl("BL-1", 2, 900, "approved", "")),
        accepted()
    );
    assert_eq!(w.totals().budget_approved, 900);
    let cancel = r#"{"kind":"budget_line","id":"BL-1","rev":3,"county":"430112","cancelled":true}"#;
    assert_eq!(w.outcome(BUDGET_OFFICE, cancel), accepted());
    assert_eq!(w.totals().budget_approved, 0);
    assert_eq!(
        w.outcome(
            PROCUREMENT,
            &contract("C-1", 1, "BL-1", 5, "2024-03-01", "")
        ),
        rejected(&["CANCELLED_PREDECESSOR"])
    );
    // Contracts can be amended within the budget and cancelled when nothing is paid.
    w.send(BUDGET_OFFICE, &bl("BL-2", 1, 1000, "approved", ""));
    assert_eq!(
        w.outcome(
            PROCUREMENT,
            &contract("C-2", 1, "BL-2", 600, "2024-03-01", "")
        ),
        accepted()
    );
    assert_eq!(
        w.outcome(
            PROCUREMENT,
            &contract("C-2", 2, "BL-2", 1000, "2024-03-01", "")
        ),
        accepted()
    );
    assert_eq!(w.totals().contracted, 1000);
    let cancel = r#"{"kind":"contract","id":"C-2","rev":3,"county":"430112","cancelled":true}"#;
    assert_eq!(w.outcome(PROCUREMENT, cancel), accepted());
    assert_eq!(w.totals().contracted, 0);
    assert_eq!(
        w.outcome(
            PROCUREMENT,
            &contract("C-3", 1, "BL-2", 1000, "2024-03-01", "")
        ),
        accepted()
    );
}

#[test]
fn held_records_resolve_in_arrival_order_when_their_predecessor_arrives() {
    let mut w = World::new();
    // The treasury is first, then procurement, then the budget office: the worst order.
    assert_eq!(
        w.outcome(TREASURY, &payment("P-1", 1, "C-1", 300, "2024-04-01")),
        (Outcome::Held, vec!["AWAITING_CONTRACT".into()])
    );
    assert_eq!(
        w.outcome(TREASURY, &payment("P-2", 1, "C-1", 300, "2024-05-01")),
        (Outcome::Held, vec!["AWAITING_CONTRACT".into()])
    );
    assert_eq!(
        w.outcome(
            PROCUREMENT,
            &contract("C-1", 1, "BL-1", 500, "2024-03-01", "")
        ),
        (Outcome::Held, vec!["AWAITING_BUDGET_LINE".into()])
    );
    assert_eq!(w.totals().held, 3);
    assert_eq!(w.ledger.held_count(), 3);
    let decisions = w.send(BUDGET_OFFICE, &bl("BL-1", 1, 1000, "approved", ""));
    let got: Vec<(String, Outcome, Vec<String>)> = decisions
        .iter()
        .map(|d| (d.entity.id.to_string(), d.outcome, d.codes()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("BL-1".into(), Outcome::Accepted, vec![]),
            ("C-1".into(), Outcome::Accepted, vec![]),
            ("P-1".into(), Outcome::Accepted, vec![]),
            // Arrival order decides which payment fits: the second one would overpay.
            (
                "P-2".into(),
                Outcome::Rejected,
                vec!["CONTRACT_EXCEEDED".into()]
            ),
        ]
    );
    let t = w.totals();
    assert_eq!((t.held, t.accepted, t.rejected, t.paid), (0, 3, 1, 300));
    assert_eq!(w.ledger.held_count(), 0);
}

#[test]
fn held_records_expire_after_the_grace_period_and_take_their_dependants_along() {
    let mut w = World::new();
    w.send(TREASURY, &payment("P-1", 1, "C-1", 300, "2024-04-01"));
    w.now = 5_000;
    w.send(
        PROCUREMENT,
        &contract("C-1", 1, "BL-1", 500, "2024-03-01", ""),
    );
    // Before the grace period ends nothing changes.
    assert!(
        expire(&mut w.ledger, 1_000 + 72 * 3_600_000, 72 * 3_600_000)
            .unwrap()
            .is_empty()
    );
    let decided = expire(&mut w.ledger, 5_001 + 72 * 3_600_000, 72 * 3_600_000).unwrap();
    let got: Vec<(String, Vec<String>)> = decided
        .iter()
        .map(|d| (d.entity.id.to_string(), d.codes()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("P-1".into(), vec!["UNKNOWN_CONTRACT".into()]),
            ("C-1".into(), vec!["UNKNOWN_BUDGET_LINE".into()])
        ]
    );
    let t = w.totals();
    assert_eq!((t.held, t.rejected), (0, 2));
    // The budget line arriving now changes nothing for them.
    assert_eq!(
        w.send(BUDGET_OFFICE, &bl("BL-1", 1, 1000, "approved", ""))
            .len(),
        1
    );
}

#[test]
fn a_waiting_payment_is_rejected_when_its_contract_expires() {
    let mut w = World::new();
    w.send(
        PROCUREMENT,
        &contract("C-1", 1, "BL-1", 500, "2024-03-01", ""),
    );
    w.now = 10_000_000;
    w.send(TREASURY, &payment("P-1", 1, "C-1", 300, "2024-04-01"));
    let decided = expire(&mut w.ledger, 1_001 + 3_600_000, 3_600_000).unwrap();
    let got: Vec<(String, Vec<String>)> = decided
        .iter()
        .map(|d| (d.entity.id.to_string(), d.codes()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("C-1".into(), vec!["UNKNOWN_BUDGET_LINE".into()]),
            ("P-1".into(), vec!["PREDECESSOR_REJECTED".into()])
        ]
    );
}

// ---- properties ------------------------------------------------------------------------

/// A random county: budget lines, contracts on them, payments on the contracts and
/// evaluations, with amounts and dates that sometimes break the rules.
#[derive(Debug, Clone)]
struct Stream {
    budget: Vec<String>,
    procurement: Vec<String>,
    treasury: Vec<String>,
}

fn stream(valid_only: bool) -> impl Strategy<Value = Stream> {
    let line_s = (1i64..5_000, any::<bool>());
    let contract_s = (0usize..4, 1i64..3_000, 1u32..6);
    let payment_s = (0usize..6, 1i64..1_500, 3u32..12, any::<bool>());
    (
        proptest::collection::vec(line_s, 1..4),
        proptest::collection::vec(contract_s, 0..6),
        proptest::collection::vec(payment_s, 0..10),
    )
        .prop_map(move |(lines, contracts, payments)| {
            let mut s = Stream {
                budget: vec![],
                procurement: vec![],
                treasury: vec![],
            };
            let mut room: Vec<i64> = Vec::new();
            for (i, (amount, approved)) in lines.iter().enumerate() {
                let stage = if *approved || valid_only {
                    "approved"
                } else {
                    "compiled"
                };
                s.budget.push(bl(&format!("BL-{i}"), 1, *amount, stage, ""));
                room.push(*amount);
            }
            let mut contract_room: Vec<i64> = Vec::new();
            for (k, (line, amount, month)) in contracts.iter().enumerate() {
                let line = line % lines.len();
                let amount = if valid_only {
                    (*amount).min(room[line])
                } else {
                    *amount
                };
                if amount <= 0 {
                    continue;
                }
                room[line] -= amount;
                let month = if valid_only { (*month).max(2) } else { *month };
                let id = format!("C-{}", contract_room.len());
                s.procurement.push(contract(
                    &id,
                    1,
                    &format!("BL-{line}"),
                    amount,
                    &format!("2024-{month:02}-01"),
                    "",
                ));
                contract_room.push(amount);
                if k % 2 == 0 {
                    s.procurement
                        .push(evaluation(&format!("E-{id}"), &id, "2024-12-01"));
                }
            }
            for (n, (c, amount, month, resend)) in payments.iter().enumerate() {
                if contract_room.is_empty() {
                    break;
                }
                let c = c % contract_room.len();
                let amount = if valid_only {
                    (*amount).min(contract_room[c])
                } else {
                    *amount
                };
                if amount <= 0 {
                    continue;
                }
                contract_room[c] -= amount;
                let month = if valid_only { (*month).max(6) } else { *month };
                let p = payment(
                    &format!("P-{n}"),
                    1,
                    &format!("C-{c}"),
                    amount,
                    &format!("2024-{month:02}-15"),
                );
                s.treasury.push(p.clone());
                if *resend {
                    s.treasury.push(p);
                }
            }
            s
        })
}

/// Interleaves the three agents' streams by `picks`, keeping each agent's own order.
fn interleave(s: &Stream, picks: &[u8]) -> Vec<(&'static str, String)> {
    let mut queues = [
        (BUDGET_OFFICE, s.budget.iter()),
        (PROCUREMENT, s.procurement.iter()),
        (TREASURY, s.treasury.iter()),
    ];
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let live: Vec<usize> = (0..3).filter(|q| queues[*q].1.len() > 0).collect();
        if live.is_empty() {
            return out;
        }
        let q = live[usize::from(picks.get(i).copied().unwrap_or(0)) % live.len()];
        i += 1;
        if let Some(r) = queues[q].1.next() {
            out.push((queues[q].0, r.clone()));
        }
    }
}

fn run(order: &[(&'static str, String)]) -> World {
    let mut w = World::new();
    for (agent, json) in order {
        w.send(agent, json);
    }
    w
}

/// The ledger's invariants, checked against an independent sum over the entities.
fn check_invariants(w: &World) -> Result<(), TestCaseError> {
    let mut sum = Totals::default();
    for (key, e) in &w.ledger.entities {
        let Some(f) = &e.current else { continue };
        match key.kind {
            crate::record::Kind::BudgetLine => {
                prop_assert!(
                    e.committed <= f.live_amount(),
                    "{key}: {:?} contracted over {:?}",
                    e.committed,
                    f.live_amount()
                );
                if f.approved {
                    sum.budget_approved += f.live_amount().get();
                }
            }
            crate::record::Kind::Contract => {
                prop_assert!(
                    e.committed <= f.live_amount(),
                    "{key}: paid {:?} over {:?}",
                    e.committed,
                    f.live_amount()
                );
                sum.contracted += f.live_amount().get();
            }
            crate::record::Kind::Payment => sum.paid += f.live_amount().get(),
            crate::record::Kind::Evaluation => {}
        }
    }
    let t = w.totals();
    prop_assert_eq!(
        (t.budget_approved, t.contracted, t.paid),
        (sum.budget_approved, sum.contracted, sum.paid)
    );
    let decided = w.ledger.decisions.values().filter(|d| !d.duplicate).count() as i64;
    prop_assert_eq!(t.accepted + t.held + t.rejected, decided);
    prop_assert_eq!(t.held, w.ledger.held_count() as i64);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn any_delivery_order_keeps_the_ledger_in_step(s in stream(false), picks in proptest::collection::vec(any::<u8>(), 0..64)) {
        let w = run(&interleave(&s, &picks));
        check_invariants(&w)?;
    }

    #[test]
    fn replaying_everything_changes_nothing(s in stream(false), picks in proptest::collection::vec(any::<u8>(), 0..64)) {
        let order = interleave(&s, &picks);
        let mut w = run(&order);
        let before = w.ledger.totals.clone();
        let entities = w.ledger.entities.clone();
        for (agent, json) in &order {
            for d in w.send(agent, json) {
                prop_assert!(d.duplicate || d.outcome == Outcome::Held || d.codes().contains(&"STALE_REVISION".to_owned()),
                    "replay of {} changed: {:?}", json, d);
            }
        }
        prop_assert_eq!(&w.ledger.entities, &entities);
        // Only held re-sends may add to the held count; amounts never move.
        for ((k, t), (k2, t2)) in before.iter().zip(w.ledger.totals.iter()) {
            prop_assert_eq!(k, k2);
            prop_assert_eq!((t.budget_approved, t.contracted, t.paid, t.accepted), (t2.budget_approved, t2.contracted, t2.paid, t2.accepted));
        }
    }

    #[test]
    fn valid_streams_end_the_same_whatever_the_order(s in stream(true), picks in proptest::collection::vec(any::<u8>(), 0..64)) {
        let in_order: Vec<(&'static str, String)> = s.budget.iter().map(|r| (BUDGET_OFFICE, r.clone()))
            .chain(s.procurement.iter().map(|r| (PROCUREMENT, r.clone())))
            .chain(s.treasury.iter().map(|r| (TREASURY, r.clone())))
            .collect();
        let a = run(&in_order);
        let b = run(&interleave(&s, &picks));
        prop_assert_eq!(a.totals(), b.totals());
        prop_assert_eq!(b.totals().held, 0);
        prop_assert_eq!(b.totals().rejected, 0);
        check_invariants(&b)?;
    }
}
