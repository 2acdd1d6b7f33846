//! Faults and attacks: the real `tongbu-hub` and `tongbu-agent` binaries behind a
//! fault-injecting proxy (`tongbu_tests::proxy`), and a real hub under hostile requests.
//!
//! - `network`: an agent syncing through every fault the proxy injects (delays, dropped
//!   connections, resets mid-body, stalls, responses lost after the hub committed, and a
//!   random mix) still ends with the hub holding exactly its chain, once.
//! - `attacks`: replayed, stale, revoked, cross-county, deeply nested, invalid UTF-8 and
//!   SQL-looking requests are each refused with their own code (or stored verbatim and judged
//!   as any record), and change nothing they should not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attacks;
mod network;

use std::collections::BTreeMap;

use serde_json::Value;
pub use tongbu_tests::assert_same_chain;
use tongbu_tests::{Agent, Hub, wait_for};

/// Waits until the agent holds `head` records, all acknowledged, with no error in its status.
pub fn wait_clean(agent: &Agent, head: u64) -> Value {
    wait_for(
        &format!("agent {} synced to {head} without error", agent.agent_id),
        || {
            let s = agent.status().ok()?;
            (s["head_seq"] == head
                && s["acked_seq"] == head
                && s["queue_depth"] == 0
                && s["last_error"].is_null())
            .then_some(s)
        },
    )
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", agent.log()))
}

/// The tables whose rows a refused request must leave alone (`agents` is not among them: every
/// authenticated request, refused or not, notes when the agent was last seen).
const GUARDED_TABLES: &[&str] = &[
    "counties",
    "envelopes",
    "entities",
    "ledger",
    "held",
    "violations",
    "outcome_changes",
    "record_index",
    "equivocations",
    "alerts",
    "policies",
];

/// Every row of the guarded tables, as text, sorted: equal snapshots mean nothing changed.
pub fn hub_state(hub: &Hub) -> BTreeMap<&'static str, Vec<String>> {
    let db = hub.db().unwrap();
    GUARDED_TABLES
        .iter()
        .map(|&table| {
            let mut stmt = db.prepare(&format!("SELECT * FROM {table}")).unwrap();
            let columns = stmt.column_count();
            let mut rows: Vec<String> = stmt
                .query_map([], |r| {
                    (0..columns)
                        .map(|i| r.get::<_, rusqlite::types::Value>(i))
                        .collect::<rusqlite::Result<Vec<_>>>()
                        .map(|v| format!("{v:?}"))
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            rows.sort();
            (table, rows)
        })
        .collect()
}

/// The names of every table, index and trigger in the hub's database, sorted.
pub fn schema_objects(hub: &Hub) -> Vec<String> {
    let db = hub.db().unwrap();
    let mut stmt = db
        .prepare("SELECT type || ' ' || name FROM sqlite_master ORDER BY 1")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// Whether the hub answers `/healthz` with 200.
pub fn hub_healthy(hub: &Hub) -> bool {
    tongbu_tests::http()
        .get(format!("{}/healthz", hub.url()))
        .send()
        .is_ok_and(|r| r.status().as_u16() == 200)
}
