//! The idle agent: `tongbu-agent run`, enrolled and synced, with nothing to send, watched for a
//! while (its default 10 s heartbeat keeps syncing): its resident memory, its CPU use, and the
//! size of the binaries (the release profile strips them).

use std::time::{Duration, Instant};

use super::{Ctx, Scenario, ScenarioReport, progress};
use crate::fixture::{AgentProc, HubProc};
use crate::report::Figure;
use crate::system::{self, CpuMeter};

const COUNTY: &str = "431002";

pub fn run(ctx: &mut Ctx) -> anyhow::Result<ScenarioReport> {
    let seconds = ctx.sizes.idle_seconds;
    let mut report = ScenarioReport::new(
        Scenario::Idle,
        format!("idle agent over {seconds} s; binary sizes"),
    );
    let dir = ctx.tempdir("idle")?;
    let mut hub = HubProc::new(&ctx.bins, &dir.path().join("hub"))?;
    hub.add_county(COUNTY, "北湖区")?;
    hub.serve()?;
    let mut agent = AgentProc::enrolled(&ctx.bins, &dir.path().join("agent"), &hub, COUNTY)?;
    agent.run(&[])?;
    let pid = agent.pid().unwrap_or(0);
    // Idle means after its first sync (policy pulled, heartbeat sent).
    ctx.rt.block_on(async {
        let client = reqwest::Client::new();
        let start = Instant::now();
        loop {
            let status = agent.intake_status(&client).await?;
            if !status["last_sync"].is_null() {
                return anyhow::Ok(());
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(60),
                "the agent did not sync within 60 s: {}",
                status["last_error"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })?;
    progress(&format!("watching the idle agent for {seconds} s"));
    let cpu = CpuMeter::start(pid);
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let cpu = cpu.percent().unwrap_or(0.0);
    let memory = system::memory(pid).unwrap_or_default();
    agent.stop()?;
    hub.stop()?;

    report
        .figures
        .push(Figure::megabytes("idle agent RSS (VmRSS)", memory.rss).at_most(12.0));
    report.figures.push(Figure::megabytes(
        "  idle agent peak RSS (VmHWM)",
        memory.peak,
    ));
    report
        .figures
        .push(Figure::value("  idle agent CPU (100 % = one core)", "%", cpu).at_most(1.0));
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    report
        .figures
        .push(Figure::megabytes("tongbu-agent binary", size(&ctx.bins.agent)).at_most(15.0));
    report
        .figures
        .push(Figure::megabytes("tongbu-hub binary", size(&ctx.bins.hub)));
    report.notes.push(
        "`tongbu-agent run` with default settings (heartbeat every 10 s), measured after its \
         first sync; \"~0 % CPU\" is taken as at most 1 % of one core; MB are 10^6 bytes"
            .to_owned(),
    );
    if ctx.bins.is_debug() {
        report
            .notes
            .push("debug binaries: not stripped, sizes not comparable".to_owned());
    }
    Ok(report)
}
