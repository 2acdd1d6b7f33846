//! Applying records to the ledger: a realistic stream (four counties, about a third of the
//! projects bent to break a rule, arrive out of order or be amended) through the shared rules
//! engine, beside the raw SQLite insert rate measured in the same run.

use std::time::Instant;

use tongbu_shared::policy::{PolicyBundle, default_policy};
use tongbu_shared::record::Record;
use tongbu_shared::rules::mem::MemLedger;
use tongbu_shared::rules::{Pending, ingest};
use tongbu_shared::sample::CountySim;
use tongbu_shared::{AgentId, CountyCode, Digest};

use crate::{Figure, limits};

const COUNTIES: [&str; 4] = ["430112", "431281", "431002", "430702"];

/// `n` records as (agent, JSON bytes), the counties' streams interleaved.
pub fn stream(n: usize) -> anyhow::Result<Vec<(AgentId, Vec<u8>)>> {
    let mut sims = Vec::new();
    for (i, c) in COUNTIES.iter().enumerate() {
        let county = CountyCode::parse(c)?;
        let agent = AgentId::new(&county, [0, 0, 0, i as u8 + 1]);
        sims.push((
            agent,
            CountySim::new(county, 42 + i as u64, 2025).with_anomalies(),
        ));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (agent, sim) = &mut sims[i % COUNTIES.len()];
        out.push((agent.clone(), sim.next_json().into_bytes()));
    }
    Ok(out)
}

pub fn run(records: usize, batch: usize) -> anyhow::Result<Vec<crate::Figure>> {
    let raw = limits::sqlite_batched_inserts(records, batch)?;
    let records_stream = stream(records)?;

    let start = Instant::now();
    let mut ledger = MemLedger::new(PolicyBundle::new(1, 0, default_policy()).policy());
    let mut seqs = std::collections::HashMap::new();
    for (order, (agent, bytes)) in records_stream.iter().enumerate() {
        let record = Record::parse_lenient(bytes)?;
        let seq = seqs.entry(agent.clone()).or_insert(0u64);
        *seq += 1;
        let p = Pending {
            agent: agent.clone(),
            seq: *seq,
            record,
            digest: Digest::of(&[bytes]),
            order: order as u64,
            received_ms: 0,
            policy_version: 1,
            held_at: None,
        };
        ingest(&mut ledger, p).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let mem = Figure::rate(
        "rules engine, in-memory ledger (parse + judge + apply)",
        records,
        start.elapsed(),
    )
    .against(&raw);
    Ok(vec![raw, mem])
}
