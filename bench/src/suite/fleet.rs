//! Scenario 5: a nation's worth of agents on one hub. Thousands of simulated agents (about
//! 2,850 county-level divisions in China), each with its own Ed25519 key, enrollment and
//! HTTPS connection (`tongbu-agent`'s own client, pinned to the hub's certificate), send a
//! small batch every interval for a few minutes to a real `tongbu-hub serve`; the batch is
//! also their heartbeat, as with the real agent. The agents' first batches are spread evenly
//! over one interval. Counties and one-time tokens are made in one transaction through the hub
//! library before `serve` starts (issuing thousands through the CLI would take minutes); the
//! agents then enroll over HTTPS like real ones.
//!
//! A batch that fails is sent again with the next one (its envelopes stay pending), as the
//! real agent resends what was not acknowledged. Latency is the send-to-verified-receipt time
//! of each batch as the agent sees it; every failure counts as an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;
use tokio::sync::Semaphore;
use tongbu_agent::client::HubClient;
use tongbu_hub::admin::{self, AdminError};
use tongbu_hub::store::{self as hub_store, SqliteStore};
use tongbu_shared::sample::CountySim;
use tongbu_shared::{CountyCode, Envelope};

use super::ingest::client_for;
use super::{Ctx, Scenario, ScenarioReport, hub_rows, latency_rows, progress, ticker};
use crate::feed::BenchAgent;
use crate::fixture::HubProc;
use crate::report::{Figure, number};
use crate::stats::Latencies;
use crate::system::{self, CpuMeter};

/// The provinces' two-digit GB/T 2260 prefixes (31 provincial-level divisions).
const PROVINCES: [&str; 31] = [
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41",
    "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65",
];

/// Agents enrolling at once.
const ENROLLING: usize = 32;
/// After this many failed enrollments the remaining agents are not tried (each failure can
/// take the agent's 10 s connect timeout) and count as not enrolled.
const GIVE_UP_AFTER: usize = 100;

/// County `i` of `n`: spread round robin over the provinces.
fn county(i: usize) -> String {
    let p = PROVINCES[i % PROVINCES.len()];
    let j = i / PROVINCES.len();
    format!("{p}{:02}{:02}", j / 30 + 1, j % 30 + 1)
}

/// One simulated agent.
struct Sim {
    client: HubClient,
    agent: BenchAgent,
    records: CountySim,
    /// Signed, not yet acknowledged (sent again with the next batch).
    pending: Vec<Envelope>,
}

pub fn run(ctx: &mut Ctx) -> anyhow::Result<ScenarioReport> {
    let n = ctx.sizes.fleet_agents.max(1);
    let seconds = ctx.sizes.fleet_seconds;
    let interval = Duration::from_secs_f64(ctx.sizes.fleet_interval.max(0.1));
    let per_batch = ctx.sizes.fleet_batch;
    let mut report = ScenarioReport::new(
        Scenario::Fleet,
        format!(
            "5. {} agents, a {per_batch}-record batch each every {} s for {} s",
            number(n as f64, ""),
            interval.as_secs_f64(),
            seconds
        ),
    );
    if let Some(limit) = open_files_limit()
        && limit < (n as u64) + 256
    {
        report.notes.push(format!(
            "the open-files limit is {limit}, below one connection per agent: raise it \
             (ulimit -n) or expect errors"
        ));
    }
    let dir = ctx.tempdir("fleet")?;
    let mut hub = HubProc::new(&ctx.bins, &dir.path().join("hub"))?;
    progress(&format!("{n} counties and tokens through the hub library"));
    let tokens = issue_tokens(&hub, n)?;
    hub.serve()?;
    let pin = hub.fingerprint()?;

    progress(&format!(
        "{n} agents enroll over HTTPS, {ENROLLING} at a time"
    ));
    let enrolling = Instant::now();
    let mut sims = Vec::with_capacity(n);
    for (i, token) in tokens.iter().enumerate() {
        sims.push((client_for(&hub, &pin)?, token.clone(), i));
    }
    let enrolled = ctx.rt.block_on(enroll_all(sims))?;
    report.notes.push(format!(
        "{} of {n} agents enrolled in {:.1} s ({ENROLLING} at a time); those that could not \
         were left out of the run",
        enrolled.sims.len(),
        enrolling.elapsed().as_secs_f64()
    ));
    for e in &enrolled.first_errors {
        report.notes.push(format!("enrollment error: {e}"));
    }
    anyhow::ensure!(!enrolled.sims.is_empty(), "no agent could enroll");
    let sims = enrolled.sims;

    progress(&format!("running for {seconds} s"));
    let pid = hub.pid().unwrap_or(0);
    let cpu = CpuMeter::start(pid);
    let run = ctx.rt.block_on(drive(
        sims,
        interval,
        Duration::from_secs_f64(seconds),
        per_batch,
    ))?;
    let cpu = cpu.percent().unwrap_or(0.0);
    let memory = system::memory(pid).unwrap_or_default();
    let acked = ctx.rt.block_on(hub.acked_total())?;
    hub.stop()?;

    let lat = Latencies::new(run.latencies);
    report.figures.push(
        Figure::value("agents that could not enroll", "", enrolled.failed as f64).at_most(0.0),
    );
    report.figures.push(Figure::value(
        "batches acknowledged",
        "",
        lat.count() as f64,
    ));
    report
        .figures
        .extend(latency_rows("batch latency", &lat, Some(250.0)));
    report
        .figures
        .push(Figure::value("  batches that failed", "", run.errors as f64).at_most(0.0));
    report.figures.extend(hub_rows(memory, cpu, Some(256.0)));
    report
        .figures
        .push(Figure::megabytes("  hub RSS at the end", memory.rss));
    report.notes.push(format!(
        "{} records acknowledged in all (the hub's API); batches sent: {}",
        acked,
        lat.count() + run.errors
    ));
    for e in run.first_errors {
        report.notes.push(format!("error: {e}"));
    }
    Ok(report)
}

/// `n` counties and a one-hour token for each, in one transaction in the stopped hub's
/// database (the hub library, as the CLI does it one at a time).
fn issue_tokens(hub: &HubProc, n: usize) -> anyhow::Result<Vec<String>> {
    let mut store = SqliteStore::open(&hub.dir)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let rng = SystemRandom::new();
    let counties = (0..n)
        .map(|i| CountyCode::parse(&county(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let tokens = hub_store::write(&mut store, |w| {
        let mut tokens = Vec::with_capacity(n);
        for county in &counties {
            admin::add_county(w, now, "bench", county, &format!("模拟县 {county}"))?;
            let issued = admin::issue_token(w, now, "bench", &rng, county, 1)?;
            tokens.push(issued.token.expose().to_owned());
        }
        Ok::<_, AdminError>(tokens)
    })?;
    Ok(tokens)
}

/// Enrolls every agent, [`ENROLLING`] at a time; an agent that cannot enroll is left out and
/// counted (with the first few errors), as a county whose `enroll` failed would be.
async fn enroll_all(pending: Vec<(HubClient, String, usize)>) -> anyhow::Result<Enrolled> {
    let total = pending.len();
    let gate = Arc::new(Semaphore::new(ENROLLING));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let ticker = ticker("enrollment", "agents enrolled", done.clone(), total);
    let mut tasks = tokio::task::JoinSet::new();
    for (client, token, i) in pending {
        let (gate, done, failed) = (gate.clone(), done.clone(), failed.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire().await?;
            if failed.load(Ordering::Relaxed) >= GIVE_UP_AFTER {
                return anyhow::Ok(Err(format!(
                    "not tried after {GIVE_UP_AFTER} failed enrollments"
                )));
            }
            let mut seed = [5u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let t = Instant::now();
            let agent = match BenchAgent::enroll_over(&client, &token, seed).await {
                Ok(agent) => agent,
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return anyhow::Ok(Err(format!("enroll after {:?}: {e:#}", t.elapsed())));
                }
            };
            done.fetch_add(1, Ordering::Relaxed);
            let records = CountySim::new(agent.id.county(), 500 + i as u64, 2025).with_anomalies();
            anyhow::Ok(Ok((
                i,
                Sim {
                    client,
                    agent,
                    records,
                    pending: Vec::new(),
                },
            )))
        });
    }
    let mut enrolled = Enrolled {
        sims: Vec::with_capacity(total),
        failed: 0,
        first_errors: Vec::new(),
    };
    let mut sims = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        match done?? {
            Ok(sim) => sims.push(sim),
            Err(e) => {
                enrolled.failed += 1;
                if enrolled.first_errors.len() < 3 {
                    enrolled.first_errors.push(e);
                }
            }
        }
    }
    drop(ticker);
    sims.sort_by_key(|(i, _)| *i);
    enrolled.sims = sims.into_iter().map(|(_, s)| s).collect();
    Ok(enrolled)
}

struct Enrolled {
    sims: Vec<Sim>,
    failed: usize,
    first_errors: Vec<String>,
}

struct FleetRun {
    latencies: Vec<Duration>,
    errors: usize,
    first_errors: Vec<String>,
}

/// Every agent sends a batch of `per_batch` new records each `interval`, the first ones
/// spread evenly over one interval, until `length` has passed.
async fn drive(
    sims: Vec<Sim>,
    interval: Duration,
    length: Duration,
    per_batch: usize,
) -> anyhow::Result<FleetRun> {
    let n = sims.len();
    let sent = Arc::new(AtomicUsize::new(0));
    let expected = (length.as_secs_f64() / interval.as_secs_f64()).ceil() as usize * n;
    let ticker = ticker("fleet", "batches sent", sent.clone(), expected);
    let start = tokio::time::Instant::now();
    let end = start + length;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut sim) in sims.into_iter().enumerate() {
        let sent = sent.clone();
        let offset = interval.mul_f64(i as f64 / n as f64);
        tasks.spawn(async move {
            let (mut latencies, mut errors, mut first) = (Vec::new(), 0usize, Vec::new());
            let mut at = start + offset;
            while at < end {
                tokio::time::sleep_until(at).await;
                let bodies: Vec<Vec<u8>> = (0..per_batch)
                    .map(|_| sim.records.next_json().into_bytes())
                    .collect();
                sim.pending.extend(sim.agent.sign(bodies));
                let t = Instant::now();
                match sim.agent.send_over(&sim.client, sim.pending.clone()).await {
                    Ok(_) => {
                        latencies.push(t.elapsed());
                        sim.pending.clear();
                    }
                    Err(e) => {
                        errors += 1;
                        if first.len() < 3 {
                            first.push(format!("{} after {:?}: {e:#}", sim.agent.id, t.elapsed()));
                        }
                    }
                }
                sent.fetch_add(1, Ordering::Relaxed);
                at += interval;
            }
            (latencies, errors, first)
        });
    }
    let mut run = FleetRun {
        latencies: Vec::new(),
        errors: 0,
        first_errors: Vec::new(),
    };
    while let Some(done) = tasks.join_next().await {
        let (latencies, errors, first) = done?;
        run.latencies.extend(latencies);
        run.errors += errors;
        for e in first {
            if run.first_errors.len() < 5 {
                run.first_errors.push(e);
            }
        }
    }
    drop(ticker);
    Ok(run)
}

/// This process's soft limit on open files (children inherit it).
fn open_files_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn county_codes_are_distinct_and_valid() {
        let codes: std::collections::BTreeSet<String> = (0..3000).map(county).collect();
        assert_eq!(codes.len(), 3000);
        assert!(codes.iter().all(|c| CountyCode::parse(c).is_ok()));
    }
}
