//! Scenario 3: hub ingest from several agents at once over HTTPS on loopback. Simulated agents
//! ([`crate::feed::BenchAgent`] through `tongbu-agent`'s own client, each with its own
//! connection) enroll with pinned tokens from `tongbu-hub token issue`, sign their whole chains
//! before the clock starts (that is the agents' work, not the hub's), then each sends its
//! batches in order, one in flight per agent as the real agent does, to a real
//! `tongbu-hub serve`. Records per second beside ring verification on every core (the hub must
//! verify every signature), each batch's latency as the agent sees it, and the hub's peak RSS.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tongbu_agent::client::HubClient;
use tongbu_agent::clock::SystemClock;
use tongbu_agent::tls::{HubTrust, HubUrl};
use tongbu_shared::sample::CountySim;
use tongbu_shared::{CountyCode, Envelope};

use super::{Ctx, Scenario, ScenarioReport, hub_rows, latency_rows, progress, ticker};
use crate::feed::BenchAgent;
use crate::fixture::HubProc;
use crate::generate::pick_counties;
use crate::report::{Figure, number};
use crate::stats::Latencies;
use crate::system::{self, CpuMeter};

/// One agent's HTTPS client pinned to `hub`'s certificate, as `tongbu-agent` builds it.
pub(super) fn client_for(
    hub: &HubProc,
    pin: &tongbu_shared::certpin::CertFingerprint,
) -> anyhow::Result<HubClient> {
    let url = HubUrl::new(&hub.https_url(), HubTrust::Pinned(*pin))?;
    Ok(HubClient::new(&url, Arc::new(SystemClock))?)
}

pub fn run(ctx: &mut Ctx) -> anyhow::Result<ScenarioReport> {
    let agents = ctx.sizes.ingest_agents.clamp(1, 122);
    let per_agent = ctx.sizes.ingest_records;
    let batch = ctx.sizes.batch;
    let total = agents * per_agent;
    let mut report = ScenarioReport::new(
        Scenario::HubIngest,
        format!(
            "3. hub ingest over HTTPS: {agents} agents × {} records, {batch}-record batches",
            number(per_agent as f64, "")
        ),
    );
    let dir = ctx.tempdir("hub-ingest")?;
    let mut hub = HubProc::new(&ctx.bins, &dir.path().join("hub"))?;
    let counties = pick_counties(agents);
    let mut tokens = Vec::new();
    for (code, name) in &counties {
        hub.add_county(code, name)?;
        tokens.push(hub.issue_token(code)?);
    }
    hub.serve()?;
    let pin = hub.fingerprint()?;

    // Enroll, then sign every chain up front, one thread per agent.
    let mut feeds = Vec::new();
    for (i, ((code, _), token)) in counties.iter().zip(&tokens).enumerate() {
        let client = client_for(&hub, &pin)?;
        let agent = ctx
            .rt
            .block_on(BenchAgent::enroll_over(&client, token, [i as u8 + 40; 32]))?;
        feeds.push((CountyCode::parse(code)?, client, agent));
    }
    progress(&format!("signing {total} envelopes for {agents} agents"));
    let signing = Instant::now();
    let signed: Vec<(HubClient, BenchAgent, Vec<Vec<Envelope>>)> = std::thread::scope(|s| {
        let handles: Vec<_> = feeds
            .into_iter()
            .enumerate()
            .map(|(i, (county, client, mut agent))| {
                s.spawn(move || {
                    let mut sim = CountySim::new(county, 300 + i as u64, 2025).with_anomalies();
                    let bodies: Vec<Vec<u8>> = (0..per_agent)
                        .map(|_| sim.next_json().into_bytes())
                        .collect();
                    let chain = agent.sign(bodies);
                    let batches = chain.chunks(batch).map(<[Envelope]>::to_vec).collect();
                    (client, agent, batches)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a signing thread panicked"))
            })
            .collect::<anyhow::Result<_>>()
    })?;
    progress(&format!(
        "signed in {:.1} s; sending",
        signing.elapsed().as_secs_f64()
    ));

    let pid = hub.pid().unwrap_or(0);
    let cpu = CpuMeter::start(pid);
    let (latencies, took) = ctx.rt.block_on(send_all(signed, total))?;
    let cpu = cpu.percent().unwrap_or(0.0);
    let memory = system::memory(pid).unwrap_or_default();
    let acked = ctx.rt.block_on(hub.acked_total())?;
    anyhow::ensure!(
        acked == total as u64,
        "the hub acknowledged {acked} records, not {total}"
    );
    hub.stop()?;

    let lat = Latencies::new(latencies);
    let rate = Figure::rate("records stored by the hub", total, took);
    report.figures.push(
        rate.clone()
            .against(&ctx.limits.verify_cores)
            .ratio_at_least(0.85)
            .stretch_ratio_above(1.0),
    );
    report.figures.push(
        Figure {
            name: "  the same, against the loopback parse-only limit".into(),
            ..rate
        }
        .against(&ctx.limits.loopback),
    );
    report
        .figures
        .extend(latency_rows("batch latency", &lat, None));
    report.figures.extend(hub_rows(memory, cpu, None));
    report.notes.push(format!(
        "{total} records (CountySim with anomalies) signed before the clock started; then every \
         agent sent its {batch}-record batches in order, one in flight per agent, over HTTPS \
         with its own connection; every receipt and checkpoint verified; the hub's API showed \
         all {total} acknowledged"
    ));
    Ok(report)
}

/// Sends every agent's batches, the agents at once; returns each batch's latency and the
/// time from the first send to the last receipt.
async fn send_all(
    signed: Vec<(HubClient, BenchAgent, Vec<Vec<Envelope>>)>,
    total: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let sent = Arc::new(AtomicUsize::new(0));
    let ticker = ticker("hub ingest", "records acknowledged", sent.clone(), total);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (client, mut agent, batches) in signed {
        let sent = sent.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(batches.len());
            for envelopes in batches {
                let n = envelopes.len();
                let t = Instant::now();
                agent.send_over(&client, envelopes).await?;
                latencies.push(t.elapsed());
                sent.fetch_add(n, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    drop(ticker);
    Ok((all, start.elapsed()))
}
