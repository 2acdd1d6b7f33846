//! Scenario 4: catch-up. One real agent holds a big backlog (stored through `tongbu-agent
//! submit`, 100,000 records a file) while its hub is down; `tongbu-agent run` starts with the
//! hub still down (its sync fails and backs off, default retry settings), then the hub comes
//! back on the same port. Measured from the hub's READY line to the moment the agent reports
//! every record acknowledged (`GET /status` on its intake), with the agent's peak RSS.

use std::time::{Duration, Instant};

use super::{Ctx, Scenario, ScenarioReport, hub_rows, progress, write_records};
use crate::fixture::{AgentProc, HubProc};
use crate::report::{Figure, number};
use crate::system::{self, CpuMeter};

const COUNTY: &str = "431281";
/// Records per submitted file.
const FILE: usize = 100_000;

pub fn run(ctx: &mut Ctx) -> anyhow::Result<ScenarioReport> {
    let backlog = ctx.sizes.backlog;
    let mut report = ScenarioReport::new(
        Scenario::CatchUp,
        format!(
            "4. catch-up: one agent's {}-record backlog after the hub was down",
            number(backlog as f64, "")
        ),
    );
    let dir = ctx.tempdir("catch-up")?;
    let mut hub = HubProc::new(&ctx.bins, &dir.path().join("hub"))?;
    hub.add_county(COUNTY, "洪江市")?;
    hub.serve()?;
    let mut agent = AgentProc::enrolled(&ctx.bins, &dir.path().join("agent"), &hub, COUNTY)?;
    hub.stop()?;

    // The backlog, submitted while the hub is down.
    let file = dir.path().join("backlog.jsonl");
    let start = Instant::now();
    let mut stored = 0;
    while stored < backlog {
        let n = FILE.min(backlog - stored);
        write_records(&file, COUNTY, 400 + (stored / FILE) as u64, n)?;
        agent.submit(&file)?;
        stored += n;
        progress(&format!(
            "backlog: {stored} of {backlog} records stored ({:.0} s)",
            start.elapsed().as_secs_f64()
        ));
    }
    let _ = std::fs::remove_file(&file);
    let intake_took = start.elapsed();

    // The agent starts with the hub down and retries with its default backoff.
    agent.run(&["--batch-size", &ctx.sizes.batch.to_string()])?;
    let pid = agent.pid().unwrap_or(0);
    std::thread::sleep(Duration::from_secs_f64(ctx.sizes.down_seconds));
    hub.serve()?;
    let back = Instant::now();
    let agent_cpu = CpuMeter::start(pid);
    let hub_cpu = CpuMeter::start(hub.pid().unwrap_or(0));
    progress("the hub is back; waiting for every record to be acknowledged");
    let deadline = Duration::from_secs(900);
    let (first_ack, all_acked) = ctx.rt.block_on(async {
        let client = reqwest::Client::new();
        let mut first_ack = None;
        let mut last_note = Instant::now();
        loop {
            let status = agent.intake_status(&client).await?;
            let acked = status["acked_seq"].as_u64().unwrap_or(0);
            if acked > 0 && first_ack.is_none() {
                first_ack = Some(back.elapsed());
            }
            if acked >= backlog as u64 {
                return anyhow::Ok((first_ack.unwrap_or_default(), back.elapsed()));
            }
            anyhow::ensure!(
                back.elapsed() < deadline,
                "after {deadline:?} the hub acknowledged {acked} of {backlog}; last error: {}",
                status["last_error"]
            );
            if last_note.elapsed() > Duration::from_secs(10) {
                progress(&format!(
                    "catch-up: {acked} of {backlog} acknowledged after {:.0} s",
                    back.elapsed().as_secs_f64()
                ));
                last_note = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })?;
    let agent_cpu = agent_cpu.percent().unwrap_or(0.0);
    let hub_cpu = hub_cpu.percent().unwrap_or(0.0);
    let agent_memory = system::memory(pid).unwrap_or_default();
    let hub_memory = hub.pid().and_then(system::memory).unwrap_or_default();
    let acked = ctx.rt.block_on(hub.acked_total())?;
    anyhow::ensure!(
        acked == backlog as u64,
        "the hub's API shows {acked} acknowledged, not {backlog}"
    );
    agent.stop()?;
    hub.stop()?;

    report.figures.push(
        Figure::value(
            "time until every record is acknowledged",
            "s",
            all_acked.as_secs_f64(),
        )
        .at_most(60.0),
    );
    report.figures.push(
        Figure::rate("  records acknowledged per second", backlog, all_acked)
            .against(&ctx.limits.verify_cores),
    );
    report.figures.push(Figure::value(
        "  first acknowledgement after the hub's READY",
        "s",
        first_ack.as_secs_f64(),
    ));
    report.figures.push(
        Figure::megabytes(
            "  agent peak RSS (VmHWM, start included)",
            agent_memory.peak,
        )
        .at_most(48.0),
    );
    report.figures.push(Figure::value(
        "  agent CPU (100 % = one core)",
        "%",
        agent_cpu,
    ));
    report.figures.extend(hub_rows(hub_memory, hub_cpu, None));
    report.figures.push(
        Figure::rate(
            "  backlog intake (submit, 100,000 a file)",
            backlog,
            intake_took,
        )
        .against(&ctx.limits.sign_one_core),
    );
    report.notes.push(format!(
        "`tongbu-agent run` with default settings (retry 0.5 s doubling to 60 s) and batch size {} was \
         started with the hub down for {} s; the time runs from the restarted hub's READY line \
         to the agent's `GET /status` showing acked_seq = head_seq (polled every 100 ms), so it \
         includes the agent's remaining backoff; the hub's API confirmed the count",
        ctx.sizes.batch, ctx.sizes.down_seconds
    ));
    Ok(report)
}
