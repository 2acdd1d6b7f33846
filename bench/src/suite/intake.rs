//! Scenarios 1 and 2: the agent's durable intake. 1: `tongbu-agent submit` of one big file
//! (parse, check, sign, chain, commit in one transaction), timed as a county's script sees it,
//! process start to exit, beside ring's single-core signing rate. 2: single records posted to
//! `tongbu-agent run`'s loopback intake (`POST /records`, one record per request) by
//! concurrent clients, each answer only after the record is durable, beside SQLite's
//! single-row commit rate: more than that needs submitters to share commits (group commit).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tongbu_shared::CountyCode;
use tongbu_shared::sample::CountySim;

use super::{Ctx, Scenario, ScenarioReport, latency_rows, progress, write_records};
use crate::fixture::{AgentProc, HubProc};
use crate::report::{Figure, number};
use crate::stats::Latencies;
use crate::system::{self, CpuMeter};

const COUNTY: &str = "430112";

/// A hub with [`COUNTY`] and an agent enrolled with it; the hub left serving.
fn enrolled_agent(ctx: &Ctx, dir: &std::path::Path) -> anyhow::Result<(HubProc, AgentProc)> {
    let mut hub = HubProc::new(&ctx.bins, &dir.join("hub"))?;
    hub.add_county(COUNTY, "望城区")?;
    hub.serve()?;
    let agent = AgentProc::enrolled(&ctx.bins, &dir.join("agent"), &hub, COUNTY)?;
    Ok((hub, agent))
}

/// Scenario 1.
pub fn file(ctx: &mut Ctx) -> anyhow::Result<ScenarioReport> {
    let n = ctx.sizes.file_records;
    let mut report = ScenarioReport::new(
        Scenario::IntakeFile,
        format!(
            "1. agent durable intake of a {}-record file",
            number(n as f64, "")
        ),
    );
    let dir = ctx.tempdir("intake-file")?;
    let (mut hub, agent) = enrolled_agent(ctx, dir.path())?;
    // The file goes in alone: no sync competes for the cores.
    hub.stop()?;
    let file = dir.path().join("records.jsonl");
    write_records(&file, COUNTY, 11, n)?;
    let bytes = std::fs::metadata(&file)?.len();
    progress(&format!(
        "submit of {n} records ({:.1} MB)",
        bytes as f64 / 1e6
    ));
    let start = Instant::now();
    agent.submit(&file)?;
    let took = start.elapsed();
    let head = agent.status()?["head_seq"].as_u64().unwrap_or(0);
    anyhow::ensure!(head == n as u64, "the agent holds {head} records, not {n}");
    report.figures.push(
        Figure::rate("submit: parse, check, sign, chain, commit", n, took)
            .against(&ctx.limits.sign_one_core)
            .ratio_at_least(0.8),
    );
    report
        .figures
        .push(Figure::value("  wall time", "s", took.as_secs_f64()));
    report.notes.push(format!(
        "`tongbu-agent submit FILE` on a fresh enrolled agent (hub stopped), timed from process \
         start to exit; the file is {:.1} MB of JSON Lines from CountySim with anomalies; \
         head_seq checked afterwards",
        bytes as f64 / 1e6
    ));
    Ok(report)
}

/// Scenario 2.
pub fn http(ctx: &mut Ctx) -> anyhow::Result<ScenarioReport> {
    let clients = ctx.sizes.http_clients.max(1);
    let seconds = ctx.sizes.http_seconds;
    let mut report = ScenarioReport::new(
        Scenario::IntakeHttp,
        format!("2. agent single-record intake over loopback HTTP, {clients} clients"),
    );
    // fsync's cost on a shared machine drifts by orders of magnitude within minutes, so the
    // limit this scenario is held to is measured again right before it, on the same disk.
    let dir = ctx.tempdir("intake-http")?;
    let single_row =
        crate::limits::sqlite_single_row_commits_in(dir.path(), ctx.sizes.single_row_seconds)?;
    let single_row = Figure {
        name: format!("{}, just before", single_row.name),
        ..single_row
    };
    let (_hub, mut agent) = enrolled_agent(ctx, dir.path())?;
    agent.run(&[])?;
    let intake = agent
        .intake_url()
        .ok_or_else(|| anyhow::anyhow!("the agent is not running"))?;
    let pid = agent.pid().unwrap_or(0);
    progress(&format!(
        "{clients} clients post single records for {seconds} s"
    ));
    let cpu = CpuMeter::start(pid);
    let run = ctx.rt.block_on(post_records(&intake, clients, seconds))?;
    let cpu = cpu.percent().unwrap_or(0.0);
    let memory = system::memory(pid).unwrap_or_default();
    let head = agent.status()?["head_seq"].as_u64().unwrap_or(0);
    anyhow::ensure!(
        head == run.stored as u64,
        "the agent holds {head} records, the clients were told {} were stored",
        run.stored
    );
    agent.stop()?;
    let lat = Latencies::new(run.latencies);
    let stored = Figure::rate(
        "records stored (each answered after its commit)",
        run.stored,
        run.took,
    );
    report
        .figures
        .push(stored.clone().against(&single_row).ratio_at_least(3.0));
    report.figures.push(
        Figure {
            name: "  the same, against the suite's first measurement".into(),
            ..stored
        }
        .against(&ctx.limits.sqlite_single_row),
    );
    report.figures.push(Figure {
        name: format!("  limit: {}", single_row.name),
        ..single_row
    });
    report
        .figures
        .extend(latency_rows("latency", &lat, Some(10.0)));
    report
        .figures
        .push(Figure::value("  errors", "", run.errors as f64));
    report
        .figures
        .push(Figure::value("  agent CPU (100 % = one core)", "%", cpu));
    report
        .figures
        .push(Figure::megabytes("  agent peak RSS", memory.peak));
    report.notes.push(format!(
        "`POST /records` with one JSON record per request to `tongbu-agent run` (enrolled, \
         syncing to a live hub meanwhile), {clients} keep-alive clients for {seconds} s; \
         head_seq checked against the answers"
    ));
    if let Some(e) = run.first_error {
        report.notes.push(format!("first error: {e}"));
    }
    Ok(report)
}

struct PostRun {
    stored: usize,
    errors: usize,
    first_error: Option<String>,
    latencies: Vec<Duration>,
    took: Duration,
}

/// `clients` clients, each with its own connection and its own county source, post one
/// record at a time for `seconds`.
async fn post_records(intake: &str, clients: usize, seconds: f64) -> anyhow::Result<PostRun> {
    let url = format!("{intake}/records");
    let county = CountyCode::parse(COUNTY)?;
    let budget = Duration::from_secs_f64(seconds.max(0.1));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (url, errors) = (url.clone(), errors.clone());
        // Record ids carry the seed, so the clients' records never collide.
        let mut sim = CountySim::new(county.clone(), 200 + c as u64, 2025).with_anomalies();
        tasks.spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?;
            let (mut latencies, mut first_error) = (Vec::new(), None);
            while start.elapsed() < budget {
                let body = sim.next_json();
                let t = Instant::now();
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let outcome = match sent {
                    Ok(resp) => {
                        let status = resp.status();
                        let text = resp.text().await.unwrap_or_default();
                        if status.is_success() {
                            Ok(())
                        } else {
                            Err(format!("{status}: {text}"))
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(e);
                    }
                }
            }
            anyhow::Ok((latencies, first_error))
        });
    }
    let mut run = PostRun {
        stored: 0,
        errors: 0,
        first_error: None,
        latencies: Vec::new(),
        took: Duration::ZERO,
    };
    while let Some(done) = tasks.join_next().await {
        let (latencies, first_error) = done??;
        run.latencies.extend(latencies);
        if run.first_error.is_none() {
            run.first_error = first_error;
        }
    }
    run.took = start.elapsed();
    run.stored = run.latencies.len();
    run.errors = errors.load(Ordering::Relaxed);
    Ok(run)
}
