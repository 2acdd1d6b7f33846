//! Applying records to the ledger: a realistic stream (four counties, about a third of the
//! projects bent to break a rule, arrive out of order or be amended) through the shared rules
//! engine, beside the raw SQLite insert rate measured in the same run.

use std::time::Instant;

use tongbu_shared::policy::{PolicyBundle, default_policy};
use tongbu_shared::record::Record;
use tongbu_shared::rules::mem::MemLedger;
use tongbu_shared::rules::{Pending, ingest};
use tongbu_shared::sample::CountySim;
use tongbu_shared::{AgentId, CountyCode, Digest, Envelope};

use crate::feed::BenchAgent;
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

    let verify = limits::ring_verify_one_core(20_000)?;
    let verify_all = limits::times_cores(&verify, crate::system::cores(), "verify");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let hub = runtime.block_on(hub_ingest(&records_stream, batch))?;
    let hub_vs_verify = Figure {
        name: "  the same, against signature verification".into(),
        ..hub.clone()
    }
    .against(&verify_all);
    let hub = hub.against(&raw);
    Ok(vec![raw, verify, verify_all, mem, hub, hub_vs_verify])
}

/// The hub's whole ingest path in process: each agent's records arrive as signed batches of
/// `batch`; the hub verifies every signature and the chain, stores the envelopes, judges each
/// record and applies it to the SQLite ledger in one transaction per batch, and signs the
/// receipt. Agents sign their envelopes before the clock starts (that is their work, not the
/// hub's).
async fn hub_ingest(stream: &[(AgentId, Vec<u8>)], batch: usize) -> anyhow::Result<Figure> {
    use std::sync::Arc;
    use tongbu_hub::{Hub, SystemClock};

    let dir = crate::scratch::Scratch::new("tongbu-bench-ledger")?;
    let hub = Hub::open(dir.path(), Arc::new(SystemClock))?;
    // Enroll one agent per county; the stream's agent ids are replaced by the hub's.
    let mut agents = std::collections::BTreeMap::new();
    for (i, c) in COUNTIES.iter().enumerate() {
        let county = CountyCode::parse(c)?;
        hub.add_county(county.clone(), format!("county {c}"))
            .await?;
        let agent = BenchAgent::enroll(&hub, &county, [i as u8 + 1; 32]).await?;
        agents.insert(county, (agent, Vec::new()));
    }
    // Sign every agent's chain up front, then cut it into batches.
    for (agent, bytes) in stream {
        let (_, bodies) = agents
            .get_mut(&agent.county())
            .ok_or_else(|| anyhow::anyhow!("no agent for {agent}"))?;
        bodies.push(bytes.clone());
    }
    let mut signed = Vec::new();
    for (_, (mut agent, bodies)) in agents {
        let chain = agent.sign(bodies);
        let batches: Vec<Vec<Envelope>> = chain
            .chunks(batch.max(1))
            .map(<[Envelope]>::to_vec)
            .collect();
        signed.push((agent, batches));
    }
    // Each agent sends its own batches in order, all agents at once (as they would).
    let begin = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut agent, batches) in signed {
        let hub = hub.clone();
        tasks.spawn(async move {
            for envelopes in batches {
                agent.send(&hub, envelopes).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let took = begin.elapsed();
    Ok(Figure::rate(
        &format!("hub ingest: verify + store + judge + ledger, {batch}-record batches"),
        stream.len(),
        took,
    ))
}
