//! The ledger over SQLite. First, faithfulness: the SQL store must make exactly the decisions
//! and totals of the shared in-memory model for the same random streams. Then ingest: batches
//! across a county's three agents, resends, outcome updates, malformed bodies, policy versions
//! and the grace period, through `ingest::apply` as the hub runs it.

use proptest::prelude::*;
use tongbu_shared::policy::{Entry, PolicyBundle, PolicyDoc, default_policy};
use tongbu_shared::protocol::{Heartbeat, Outcome, RecordOutcome};
use tongbu_shared::rules::mem::MemLedger;
use tongbu_shared::{Code, CountyCode, Envelope, KeyPair};

use super::*;
use crate::ingest::{self, Applied, Contact, Stored};
use crate::store::{County, NewAgent, NewEnvelope, SqliteStore, ViolationFilter, read, write};

const COUNTY: &str = "430112";
const BUDGET_OFFICE: usize = 0;
const PROCUREMENT: usize = 1;
const TREASURY: usize = 2;
const AGENTS: [&str; 3] = ["430112-0000000b", "430112-0000000c", "430112-0000000d"];
const HOUR_MS: i64 = 3_600_000;
const T0: i64 = 1_795_762_113_000;

fn county() -> CountyCode {
    CountyCode::parse(COUNTY).unwrap()
}

// ---- records (as in the shared crate's rule tests) ---------------------------------------

fn bl(id: &str, amount: i64, stage: &str) -> String {
    let approved = if stage == "approved" {
        r#","approved_on":"2024-01-15""#
    } else {
        ""
    };
    format!(
        r#"{{"kind":"budget_line","id":"{id}","rev":1,"county":"430112","department":"101001","fiscal_year":2024,"catalogue_code":"A0501","amount_fen":{amount},"stage":"{stage}"{approved}}}"#
    )
}

fn contract(id: &str, line: &str, amount: i64, signed_on: &str) -> String {
    format!(
        r#"{{"kind":"contract","id":"{id}","rev":1,"county":"430112","budget_line_id":"{line}","supplier_uscc":"91350100M000100Y43","supplier_name":"颐养居家养老服务中心","method":"public_tender","catalogue_code":"A0501","amount_fen":{amount},"signed_on":"{signed_on}"}}"#
    )
}

fn payment(id: &str, contract: &str, amount: i64, paid_on: &str) -> String {
    format!(
        r#"{{"kind":"payment","id":"{id}","rev":1,"county":"430112","contract_id":"{contract}","amount_fen":{amount},"paid_on":"{paid_on}","voucher_no":"GK-{id}"}}"#
    )
}

fn evaluation(id: &str, contract: &str) -> String {
    format!(
        r#"{{"kind":"evaluation","id":"{id}","rev":1,"county":"430112","contract_id":"{contract}","evaluator":"第三方","score":90,"grade":"excellent","evaluated_on":"2024-12-01"}}"#
    )
}

/// A random county's records, split by the agent that sends them (budget office,
/// procurement centre, treasury), with amounts and dates that sometimes break the rules,
/// amendments, cancellations and identical resends.
#[derive(Debug, Clone)]
struct Stream([Vec<String>; 3]);

fn stream() -> impl Strategy<Value = Stream> {
    let line_s = (1i64..5_000, any::<bool>(), any::<bool>());
    let contract_s = (0usize..4, 1i64..3_000, 1u32..6, 0u8..8);
    let payment_s = (0usize..6, 1i64..1_500, 3u32..12, any::<bool>());
    (
        proptest::collection::vec(line_s, 1..4),
        proptest::collection::vec(contract_s, 0..6),
        proptest::collection::vec(payment_s, 0..10),
    )
        .prop_map(|(lines, contracts, payments)| {
            let mut s = Stream([vec![], vec![], vec![]]);
            for (i, (amount, approved, amend)) in lines.iter().enumerate() {
                let stage = if *approved { "approved" } else { "compiled" };
                s.0[BUDGET_OFFICE].push(bl(&format!("BL-{i}"), *amount, stage));
                if *amend {
                    // An amended rev 2 (may be refused if it would go below what is contracted).
                    s.0[BUDGET_OFFICE].push(
                        bl(&format!("BL-{i}"), amount / 2 + 1, "approved")
                            .replace(r#""rev":1"#, r#""rev":2"#),
                    );
                }
            }
            for (k, (line, amount, month, extra)) in contracts.iter().enumerate() {
                let id = format!("C-{k}");
                let line = format!("BL-{}", line % lines.len());
                s.0[PROCUREMENT].push(contract(&id, &line, *amount, &format!("2024-{month:02}-01")));
                match extra {
                    0 | 1 => s.0[PROCUREMENT].push(evaluation(&format!("E-{k}"), &id)),
                    2 => s.0[PROCUREMENT].push(format!(
                        r#"{{"kind":"contract","id":"{id}","rev":2,"county":"430112","cancelled":true}}"#
                    )),
                    3 => s.0[PROCUREMENT].push(
                        contract(&id, &line, *amount, "2024-03-01")
                            .replace("91350100M000100Y43", "91350100M000100Y44")
                            .replace(r#""rev":1"#, r#""rev":3"#),
                    ),
                    _ => {}
                }
            }
            for (n, (c, amount, month, resend)) in payments.iter().enumerate() {
                let p = payment(
                    &format!("P-{n}"),
                    &format!("C-{}", c % contracts.len().max(1)),
                    *amount,
                    &format!("2024-{month:02}-15"),
                );
                s.0[TREASURY].push(p.clone());
                if *resend {
                    s.0[TREASURY].push(p);
                }
            }
            s
        })
}

/// Interleaves the agents' streams by `picks`, keeping each agent's own order.
fn interleave(s: &Stream, picks: &[u8]) -> Vec<(usize, String)> {
    let mut next = [0usize; 3];
    let mut out = Vec::new();
    for i in 0.. {
        let live: Vec<usize> = (0..3).filter(|a| next[*a] < s.0[*a].len()).collect();
        if live.is_empty() {
            break;
        }
        let a = live[usize::from(picks.get(i).copied().unwrap_or(0)) % live.len()];
        out.push((a, s.0[a][next[a]].clone()));
        next[a] += 1;
    }
    out
}

// ---- a county on a hub database ---------------------------------------------------------

/// A hub database with one county and its three agents, each with its own signed chain.
struct Bench {
    _dir: tempfile::TempDir,
    store: SqliteStore,
    policies: PolicyCache,
    hub_key: KeyPair,
    keys: Vec<KeyPair>,
    /// Every envelope each agent has signed so far.
    chains: Vec<Vec<Envelope>>,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let hub_key = KeyPair::from_seed(&[1; 32]).unwrap();
        let keys: Vec<KeyPair> = (0..3u8)
            .map(|i| KeyPair::from_seed(&[20 + i; 32]).unwrap())
            .collect();
        write(&mut store, |w| {
            w.insert_county(&County {
                code: county(),
                name: "望城区".into(),
                created_at_ms: 0,
            })?;
            for (id, key) in AGENTS.iter().zip(&keys) {
                w.insert_agent(&NewAgent {
                    id: AgentId::parse(id).unwrap(),
                    county: county(),
                    public_key: key.public_key(),
                    enrolled_at_ms: 0,
                    agent_version: "t".into(),
                    hostname: None,
                })?;
            }
            crate::policy::ensure_initial(w, &hub_key, 0, "test")
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
        Bench {
            _dir: dir,
            store,
            policies: PolicyCache::default(),
            hub_key,
            keys,
            chains: vec![vec![], vec![], vec![]],
        }
    }

    fn agent(a: usize) -> AgentId {
        AgentId::parse(AGENTS[a]).unwrap()
    }

    /// Signs `body` as agent `a`'s next envelope.
    fn sign(&mut self, a: usize, body: &str) -> Envelope {
        let chain = &mut self.chains[a];
        let prev = chain.last().map_or(Digest::GENESIS, Envelope::hash);
        let e = Envelope::sign(
            &self.keys[a],
            Bench::agent(a),
            chain.len() as u64 + 1,
            prev,
            body.as_bytes().to_vec(),
        );
        chain.push(e.clone());
        e
    }

    /// Sends a batch through verification and `ingest::apply`, as the hub does.
    fn send(&mut self, a: usize, envelopes: Vec<Envelope>, cursor: u64, now: i64) -> Stored {
        let verified = ingest::verify(
            &self.keys[a].public_key().into(),
            &Bench::agent(a),
            envelopes,
            &ingest::KeyTables::default(),
        )
        .unwrap();
        let hb = Heartbeat {
            head_seq: self.chains[a].len() as u64,
            queue_depth: 0,
            agent_version: "t".into(),
            last_error: None,
            outcome_cursor: cursor,
            log_size: 0,
        };
        let contact = Contact::with_heartbeat(now, &hb);
        let policies = &self.policies;
        match write(&mut self.store, |w| {
            ingest::apply(w, policies, &verified, &contact, cursor)
        })
        .unwrap()
        {
            Applied::Stored(s) => s,
            Applied::Refused(e) => panic!("refused: {e}"),
        }
    }

    /// Signs and sends one record alone.
    fn submit(&mut self, a: usize, body: &str, now: i64) -> RecordOutcome {
        let e = self.sign(a, body);
        let mut s = self.send(a, vec![e], 0, now);
        s.outcomes.remove(0)
    }

    fn verdict(&mut self, a: usize, seq: u64) -> (Outcome, Vec<String>) {
        let e = read(&mut self.store, |r| r.envelope(&Bench::agent(a), seq))
            .unwrap()
            .unwrap();
        (e.outcome, e.codes)
    }

    fn verdicts(&mut self) -> Vec<Vec<(Outcome, Vec<String>)>> {
        (0..3)
            .map(|a| {
                (1..=self.chains[a].len() as u64)
                    .map(|seq| self.verdict(a, seq))
                    .collect()
            })
            .collect()
    }

    fn rows(&mut self) -> Vec<(Slot, Totals)> {
        read(&mut self.store, |r| r.ledger_rows(&county(), None)).unwrap()
    }

    fn year(&mut self, year: i32) -> Totals {
        read(&mut self.store, |r| year_totals(r, &county(), year)).unwrap()
    }

    fn expire(&mut self, now: i64) -> Vec<Judged> {
        let policies = &self.policies;
        write(&mut self.store, |w| expire_once(w, policies, now)).unwrap()
    }

    fn set_policy(&mut self, doc: PolicyDoc, now: i64) -> u64 {
        crate::policy::set_in(&mut self.store, &self.hub_key, now, doc)
            .unwrap()
            .version
    }
}

fn codes(o: &RecordOutcome) -> Vec<&str> {
    o.codes.iter().map(String::as_str).collect()
}

// ---- the SQL store is faithful to the in-memory model -----------------------------------

/// Feeds `order` to the in-memory model and to the SQL store (each record's envelope stored
/// first, as ingest does; `chunks` records per transaction), then expires at `expire_at`.
/// Both must decide alike at every step and end with the same totals, entities and held set.
fn compare_with_model(
    order: &[(usize, String)],
    chunks: &[usize],
    expire_at: i64,
) -> Result<(), TestCaseError> {
    let mut mem = MemLedger::new(PolicyBundle::new(1, 0, default_policy()).policy());
    let mut b = Bench::new();
    let pendings: Vec<(Pending, Envelope)> = order
        .iter()
        .enumerate()
        .map(|(i, (a, body))| {
            let e = b.sign(*a, body);
            let p = Pending {
                agent: Bench::agent(*a),
                seq: e.seq,
                record: Record::parse_lenient(body.as_bytes()).unwrap(),
                digest: Digest::of(&[body.as_bytes()]),
                order: i as u64 + 1,
                received_ms: i as i64 * HOUR_MS,
                policy_version: 1,
                held_at: None,
            };
            (p, e)
        })
        .collect();

    let mut rest = &pendings[..];
    let mut chunk = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*chunk.next().unwrap_or(&1)).clamp(1, rest.len());
        let (now, later) = rest.split_at(n);
        rest = later;
        let policies = b.policies.clone();
        let sql: Vec<Vec<Decision>> = write(&mut b.store, |w| {
            let mut out = Vec::new();
            for (p, e) in now {
                let placeholder = Verdict {
                    outcome: Outcome::Held,
                    codes: vec![],
                    detail: None,
                    policy_version: Some(1),
                };
                w.insert_envelopes(
                    p.received_ms,
                    &[NewEnvelope {
                        envelope: e,
                        hash: e.hash(),
                        arrival: p.order,
                        verdict: &placeholder,
                        record: None,
                    }],
                )?;
                let mut ledger = TxLedger::new(w, &policies, p.received_ms);
                out.push(ledger.ingest(p.clone())?);
                ledger.finish()?;
            }
            Ok::<_, StoreError>(out)
        })
        .unwrap();
        for ((p, _), sql) in now.iter().zip(sql) {
            let model = rules::ingest(&mut mem, p.clone()).unwrap();
            prop_assert_eq!(&sql, &model, "{} seq {}", p.agent, p.seq);
        }
    }

    let policies = b.policies.clone();
    let sql = write(&mut b.store, |w| {
        let mut ledger = TxLedger::new(w, &policies, expire_at);
        let decisions = ledger.expire()?;
        ledger.finish()?;
        Ok::<_, StoreError>(decisions)
    })
    .unwrap();
    let model = rules::expire(&mut mem, expire_at, 72 * HOUR_MS).unwrap();
    prop_assert_eq!(sql, model);

    let model_rows: Vec<(Slot, Totals)> = mem
        .totals
        .iter()
        .map(|((_, slot), t)| (slot.clone(), *t))
        .collect();
    prop_assert_eq!(b.rows(), model_rows);
    for (key, entity) in &mem.entities {
        let stored = read(&mut b.store, |r| r.entity(key)).unwrap();
        prop_assert_eq!(stored.as_ref(), Some(entity), "{}", key);
    }
    let held = read(&mut b.store, |r| r.held_count()).unwrap();
    prop_assert_eq!(held, mem.held_count() as u64);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_sql_ledger_decides_like_the_model(
        s in stream(),
        picks in proptest::collection::vec(any::<u8>(), 0..64),
        chunks in proptest::collection::vec(1usize..8, 1..6),
        expire_after_hours in 0i64..120,
    ) {
        let order = interleave(&s, &picks);
        compare_with_model(&order, &chunks, (72 + expire_after_hours) * HOUR_MS)?;
    }
}

// ---- ingest ------------------------------------------------------------------------------

/// How a delivery plan sends one agent's run of records: in batches of these sizes, each
/// batch possibly led by this many already-acknowledged envelopes (a resend).
#[derive(Debug, Clone)]
struct Plan {
    batch_sizes: Vec<usize>,
    resend: Vec<usize>,
}

/// Delivers `order` record by record, or in batches per `plan`. Batches keep the global
/// order (a batch holds one agent's consecutive records), so arrivals are the same.
fn deliver(order: &[(usize, String)], plan: Option<&Plan>) -> Bench {
    let mut b = Bench::new();
    let mut now = T0;
    let mut i = 0;
    let mut step = 0;
    while i < order.len() {
        let a = order[i].0;
        let run = order[i..].iter().take_while(|(x, _)| *x == a).count();
        let size = plan.map_or(1, |p| {
            p.batch_sizes[step % p.batch_sizes.len()].clamp(1, run)
        });
        let resend = plan.map_or(0, |p| p.resend[step % p.resend.len()]);
        step += 1;
        let acked = b.chains[a].len();
        let mut batch: Vec<Envelope> = b.chains[a][acked.saturating_sub(resend)..].to_vec();
        let resent = batch.len();
        for (_, body) in &order[i..i + size] {
            batch.push(b.sign(a, body));
        }
        now += 1000;
        let stored = b.send(a, batch, 0, now);
        assert_eq!(stored.outcomes.len(), resent + size);
        assert!(stored.outcomes[..resent].iter().all(|o| o.duplicate));
        assert!(stored.outcomes[resent..].iter().all(|o| !o.duplicate));
        assert_eq!(stored.acked_seq, b.chains[a].len() as u64);
        i += size;
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn batches_and_resends_end_like_one_record_at_a_time(
        s in stream(),
        picks in proptest::collection::vec(any::<u8>(), 0..64),
        batch_sizes in proptest::collection::vec(1usize..6, 1..5),
        resend in proptest::collection::vec(0usize..4, 1..5),
    ) {
        let order = interleave(&s, &picks);
        let mut one_by_one = deliver(&order, None);
        let mut batched = deliver(&order, Some(&Plan { batch_sizes, resend }));
        prop_assert_eq!(batched.verdicts(), one_by_one.verdicts());
        prop_assert_eq!(batched.rows(), one_by_one.rows());
    }
}

#[test]
fn a_held_record_accepted_later_flows_back_to_its_own_agent() {
    let mut b = Bench::new();
    // The worst order: treasury, then procurement, then the budget office.
    let p = b.submit(TREASURY, &payment("P-1", "C-1", 300, "2024-04-01"), T0);
    assert_eq!(
        (p.outcome, codes(&p)),
        (Outcome::Held, vec!["AWAITING_CONTRACT"])
    );
    assert_eq!(p.policy_version, Some(1));
    let c = b.submit(PROCUREMENT, &contract("C-1", "BL-1", 500, "2024-03-01"), T0);
    assert_eq!(c.outcome, Outcome::Held);
    assert_eq!(b.year(2024).held, 2);

    let line = b.sign(BUDGET_OFFICE, &bl("BL-1", 1000, "approved"));
    let stored = b.send(BUDGET_OFFICE, vec![line], 0, T0 + 1);
    assert_eq!(stored.outcomes[0].outcome, Outcome::Accepted);
    assert_eq!(stored.policy_version, 1);
    // The budget office's own record is not a change; the others are, for their agents.
    assert!(stored.updates.is_empty());
    assert_eq!(stored.outcome_cursor, 0);
    let released: Vec<(String, u64, bool)> = stored
        .judged
        .iter()
        .map(|j| (j.agent.to_string(), j.seq, j.changed))
        .collect();
    assert_eq!(
        released,
        [
            (AGENTS[BUDGET_OFFICE].to_owned(), 1, false),
            (AGENTS[PROCUREMENT].to_owned(), 1, true),
            (AGENTS[TREASURY].to_owned(), 1, true),
        ]
    );
    let t = b.year(2024);
    assert_eq!((t.accepted, t.held, t.paid, t.contracted), (3, 0, 300, 500));

    // A heartbeat from the treasury carries its update, and the cursor moves on.
    let hb = b.send(TREASURY, vec![], 0, T0 + 2);
    assert_eq!(hb.updates.len(), 1);
    assert_eq!(
        (
            hb.updates[0].seq,
            hb.updates[0].outcome,
            hb.updates[0].duplicate
        ),
        (1, Outcome::Accepted, false)
    );
    assert_eq!(hb.updates[0].policy_version, Some(1));
    let cursor = hb.outcome_cursor;
    assert!(cursor > 0);
    let again = b.send(TREASURY, vec![], cursor, T0 + 3);
    assert!(again.updates.is_empty());
    assert_eq!(again.outcome_cursor, cursor);
    // An agent that lost its place (an old cursor) hears it again.
    let replay = b.send(TREASURY, vec![], 0, T0 + 4);
    assert_eq!(replay.updates, hb.updates);
    // Procurement gets its own update, not the treasury's.
    let proc_hb = b.send(PROCUREMENT, vec![], 0, T0 + 5);
    assert_eq!(proc_hb.updates.len(), 1);
    assert_eq!(proc_hb.updates[0].seq, 1);
    assert_ne!(proc_hb.outcome_cursor, cursor);
    // A cursor from the future (the hub restored from an older backup) starts over.
    let lost = b.send(TREASURY, vec![], 1_000_000, T0 + 6);
    assert_eq!(lost.updates, hb.updates);
    assert_eq!(lost.outcome_cursor, cursor);
}

#[test]
fn a_record_released_in_its_own_batch_reports_its_final_outcome() {
    let mut b = Bench::new();
    let pay = b.sign(BUDGET_OFFICE, &payment("P-1", "C-1", 100, "2024-05-01"));
    let con = b.sign(BUDGET_OFFICE, &contract("C-1", "BL-1", 500, "2024-03-01"));
    let line = b.sign(BUDGET_OFFICE, &bl("BL-1", 1000, "approved"));
    let stored = b.send(BUDGET_OFFICE, vec![pay, con, line], 0, T0);
    let got: Vec<(u64, Outcome)> = stored.outcomes.iter().map(|o| (o.seq, o.outcome)).collect();
    assert_eq!(
        got,
        [
            (1, Outcome::Accepted),
            (2, Outcome::Accepted),
            (3, Outcome::Accepted)
        ]
    );
    // The changes are in the feed as well (harmless: the same outcome again).
    assert_eq!(stored.updates.len(), 2);
    assert!(
        stored
            .updates
            .iter()
            .all(|u| u.outcome == Outcome::Accepted)
    );
}

#[test]
fn rejections_and_warnings_are_violations_with_their_detail() {
    let mut b = Bench::new();
    b.submit(BUDGET_OFFICE, &bl("BL-1", 1000, "approved"), T0);
    let over = b.submit(
        PROCUREMENT,
        &contract("C-1", "BL-1", 2000, "2024-03-01"),
        T0,
    );
    assert_eq!(
        (over.outcome, codes(&over)),
        (Outcome::Rejected, vec!["BUDGET_EXCEEDED"])
    );
    assert!(
        over.detail
            .as_deref()
            .unwrap()
            .starts_with("BUDGET_EXCEEDED: "),
        "{over:?}"
    );
    b.submit(PROCUREMENT, &contract("C-2", "BL-1", 500, "2024-03-01"), T0);
    let last = b.submit(TREASURY, &payment("P-1", "C-2", 500, "2024-04-01"), T0);
    assert_eq!(
        (last.outcome, codes(&last)),
        (Outcome::Accepted, vec!["PAID_WITHOUT_EVALUATION"])
    );
    let bad_supplier = contract("C-3", "BL-1", 1, "2024-03-01")
        .replace("91350100M000100Y43", "91350100M000100Y44");
    let o = b.submit(PROCUREMENT, &bad_supplier, T0);
    assert_eq!(codes(&o), ["INVALID_SUPPLIER_CODE"]);

    let filter = |rule: Option<&str>| ViolationFilter {
        county: county(),
        year: None,
        rule: rule.map(str::to_owned),
        limit: 100,
    };
    let all = read(&mut b.store, |r| r.violations(&filter(None))).unwrap();
    let got: Vec<(&str, &str, &str, Outcome)> = all
        .iter()
        .map(|v| {
            (
                v.violation.rule.as_str(),
                v.violation.kind.as_str(),
                v.violation.entity_id.as_str(),
                v.outcome,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("BUDGET_EXCEEDED", "contract", "C-1", Outcome::Rejected),
            (
                "PAID_WITHOUT_EVALUATION",
                "payment",
                "P-1",
                Outcome::Accepted
            ),
            (
                "INVALID_SUPPLIER_CODE",
                "contract",
                "C-3",
                Outcome::Rejected
            ),
        ]
    );
    assert_eq!(all[0].violation.fiscal_year, Some(2024));
    assert!(all[0].violation.detail.contains("over its 1000 fen"));
    let one = read(&mut b.store, |r| {
        r.violations(&filter(Some("INVALID_SUPPLIER_CODE")))
    })
    .unwrap();
    assert_eq!(one.len(), 1);
    let none = read(&mut b.store, |r| {
        r.violations(&ViolationFilter {
            year: Some(2023),
            ..filter(None)
        })
    })
    .unwrap();
    assert!(none.is_empty());
}

#[test]
fn a_malformed_body_is_rejected_outside_the_ledger() {
    let mut b = Bench::new();
    let o = b.submit(TREASURY, r#"{"kind":"payment","id":"P-9","rev":1}"#, T0);
    assert_eq!(
        (o.outcome, codes(&o)),
        (Outcome::Rejected, vec![MALFORMED_RECORD])
    );
    assert!(o.detail.as_deref().unwrap().contains("county"), "{o:?}");
    assert_eq!(o.policy_version, None);
    assert!(b.rows().is_empty());
    let v = read(&mut b.store, |r| {
        r.violations(&ViolationFilter {
            county: county(),
            year: None,
            rule: Some(MALFORMED_RECORD.into()),
            limit: 10,
        })
    })
    .unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(
        (
            v[0].violation.kind.as_str(),
            v[0].violation.entity_id.as_str()
        ),
        ("payment", "P-9")
    );
    // Resent, it answers with the stored verdict.
    let e = b.chains[TREASURY][0].clone();
    let again = b.send(TREASURY, vec![e], 0, T0 + 1);
    assert!(again.outcomes[0].duplicate);
    assert_eq!(again.outcomes[0].codes, [MALFORMED_RECORD]);
    assert_eq!(again.outcomes[0].detail, o.detail);
}

fn policy_without_elderly_care() -> PolicyDoc {
    let mut doc = default_policy();
    doc.catalogue.retain(|e| e.code.as_str() != "A0501");
    doc.negative_list.push(Entry {
        code: Code::parse("A0501").unwrap(),
        name: "居家养老服务(暂停)".into(),
    });
    doc
}

#[test]
fn a_new_policy_judges_what_arrives_after_it() {
    let mut b = Bench::new();
    let before = b.submit(BUDGET_OFFICE, &bl("BL-1", 1000, "approved"), T0);
    assert_eq!(
        (before.outcome, before.policy_version),
        (Outcome::Accepted, Some(1))
    );
    // A contract held under version 1 stays judged by version 1 when released.
    let held = b.submit(PROCUREMENT, &contract("C-1", "BL-2", 10, "2024-03-01"), T0);
    assert_eq!(
        (held.outcome, held.policy_version),
        (Outcome::Held, Some(1))
    );

    assert_eq!(b.set_policy(policy_without_elderly_care(), T0 + 1), 2);
    let after = b.submit(BUDGET_OFFICE, &bl("BL-2", 1000, "approved"), T0 + 2);
    assert_eq!(after.outcome, Outcome::Rejected);
    assert_eq!(codes(&after), ["NOT_IN_CATALOGUE", "NEGATIVE_LIST"]);
    assert_eq!(after.policy_version, Some(2));
    assert!(
        after
            .detail
            .as_deref()
            .unwrap()
            .contains("policy version 2")
    );
    let hb = b.send(PROCUREMENT, vec![], 0, T0 + 3);
    assert_eq!(hb.policy_version, 2);
    assert_eq!(hb.updates.len(), 1);
    assert_eq!(codes(&hb.updates[0]), ["PREDECESSOR_REJECTED"]);
    assert_eq!(hb.updates[0].policy_version, Some(1));
}

#[test]
fn held_records_are_rejected_after_the_grace_period_not_before() {
    let mut b = Bench::new();
    let p = b.submit(TREASURY, &payment("P-1", "C-1", 300, "2024-04-01"), T0);
    assert_eq!(p.outcome, Outcome::Held);
    assert!(b.expire(T0 + 72 * HOUR_MS).is_empty());
    assert_eq!(b.verdict(TREASURY, 1).0, Outcome::Held);
    let judged = b.expire(T0 + 72 * HOUR_MS + 1);
    assert_eq!(judged.len(), 1);
    assert!(judged[0].changed);
    assert_eq!(
        b.verdict(TREASURY, 1),
        (Outcome::Rejected, vec!["UNKNOWN_CONTRACT".to_owned()])
    );
    let t = b.year(2024);
    assert_eq!((t.held, t.rejected), (0, 1));
    let hb = b.send(TREASURY, vec![], 0, T0 + 73 * HOUR_MS);
    assert_eq!(codes(&hb.updates[0]), ["UNKNOWN_CONTRACT"]);
    // The grace period is the current policy's.
    let mut doc = default_policy();
    doc.settings.grace_period_hours = 1;
    b.set_policy(doc, T0);
    let later = T0 + 100 * HOUR_MS;
    b.submit(TREASURY, &payment("P-2", "C-9", 300, "2024-04-01"), later);
    assert!(b.expire(later + HOUR_MS).is_empty());
    assert_eq!(b.expire(later + HOUR_MS + 1).len(), 1);
}

#[test]
fn a_database_from_before_the_ledger_is_migrated_and_judged_on_open() {
    // A hub database at schema version 1, as the hub before the ledger left it: every
    // well-formed record `accepted`, no arrival, no policy.
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::from_seed(&[30; 32]).unwrap();
    let agent = Bench::agent(TREASURY);
    let bodies = [
        payment("P-1", "C-1", 300, "2024-04-01"),
        contract("C-1", "BL-1", 500, "2024-03-01"),
        bl("BL-1", 1000, "approved"),
        r#"{"kind":"gift"}"#.to_owned(),
    ];
    let mut prev = Digest::GENESIS;
    let chain: Vec<Envelope> = bodies
        .iter()
        .zip(1..)
        .map(|(body, seq)| {
            let e = Envelope::sign(&key, agent.clone(), seq, prev, body.as_bytes().to_vec());
            prev = e.hash();
            e
        })
        .collect();
    {
        let conn = rusqlite::Connection::open(dir.path().join("hub.db")).unwrap();
        conn.execute_batch(include_str!("../../migrations/0001_init.sql"))
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO counties (code, name, created_at_ms) VALUES ('430112', '望城区', 0)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO agents (agent_id, county, public_key, enrolled_at_ms, acked_seq, \
             head_hash) VALUES (?1, '430112', ?2, 0, 4, ?3)",
            rusqlite::params![agent.as_str(), &key.public_key().0[..], &prev.0[..]],
        )
        .unwrap();
        for e in &chain {
            let malformed = e.seq == 4;
            conn.execute(
                "INSERT INTO envelopes (agent_id, seq, prev, body, sig, hash, received_at_ms, \
                 outcome, codes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                rusqlite::params![
                    agent.as_str(),
                    e.seq as i64,
                    &e.prev.0[..],
                    &e.body[..],
                    &e.sig.0[..],
                    &e.hash().0[..],
                    T0 + e.seq as i64,
                    if malformed { "rejected" } else { "accepted" },
                    if malformed {
                        r#"["MALFORMED_RECORD"]"#
                    } else {
                        "[]"
                    },
                ],
            )
            .unwrap();
        }
    }

    let clock = std::sync::Arc::new(crate::clock::ManualClock::new(T0 + 10));
    let hub = crate::Hub::open(dir.path(), clock).unwrap();
    let mut store = SqliteStore::open(dir.path()).unwrap();
    let verdicts: Vec<(Outcome, Vec<String>, Option<u64>)> = (1..=4)
        .map(|seq| {
            let e = read(&mut store, |r| r.envelope(&agent, seq))
                .unwrap()
                .unwrap();
            (e.outcome, e.codes, e.arrival)
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            (Outcome::Accepted, vec![], Some(1)),
            (Outcome::Accepted, vec![], Some(2)),
            (Outcome::Accepted, vec![], Some(3)),
            (
                Outcome::Rejected,
                vec![MALFORMED_RECORD.to_owned()],
                Some(4)
            ),
        ]
    );
    let t = read(&mut store, |r| year_totals(r, &county(), 2024)).unwrap();
    assert_eq!((t.accepted, t.held, t.paid), (3, 0, 300));
    // P-1 and C-1 were held on the way, then accepted: the agent hears of each once (the
    // malformed body's verdict did not change).
    let (updates, _) = read(&mut store, |r| updates(r, &agent, 0)).unwrap();
    let mut changed: Vec<u64> = updates.iter().map(|u| u.seq).collect();
    changed.sort_unstable();
    assert_eq!(changed, [1, 2]);
    // Opening again judges nothing twice.
    drop(hub);
    let policies = PolicyCache::default();
    let n = write(&mut store, |w| judge_unjudged(w, &policies, T0, 10)).unwrap();
    assert_eq!(n, 0);
    assert_eq!(read(&mut store, |r| r.current_policy_version()).unwrap(), 1);
}
