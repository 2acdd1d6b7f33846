//! `tongbu-bench forward`: Tongbu's side of the peer comparison (`bench/peer/rsyslog.sh`).
//! One real agent forwards N records to a real hub with every guarantee on: `tongbu-agent
//! submit` makes them durable (parsed, checked, signed, chained, committed with fsync), then
//! `tongbu-agent sync --once` sends them over HTTPS on loopback, the hub verifies every
//! signature and the chain and commits before it answers, and the agent verifies every signed
//! receipt before it records the acknowledgement; the hub's API must then show all N
//! acknowledged, exactly once.

use std::time::Instant;

use crate::Figure;
use crate::fixture::{AgentProc, Bins, HubProc};

const COUNTY: &str = "430112";

/// What to forward.
#[derive(Debug, Clone)]
pub struct Options {
    pub records: usize,
    pub batch: usize,
    pub bin_dir: Option<std::path::PathBuf>,
}

pub fn run(opts: &Options) -> anyhow::Result<Vec<Figure>> {
    let bins = Bins::locate(opts.bin_dir.clone())?;
    let dir = crate::scratch::Scratch::new("tongbu-bench-forward")?;
    let mut hub = HubProc::new(&bins, &dir.path().join("hub"))?;
    hub.add_county(COUNTY, "望城区")?;
    hub.serve()?;
    let agent = AgentProc::enrolled(&bins, &dir.path().join("agent"), &hub, COUNTY)?;
    let file = dir.path().join("records.jsonl");
    crate::suite::write_records(&file, COUNTY, 21, opts.records)?;

    let start = Instant::now();
    agent.submit(&file)?;
    let stored = start.elapsed();
    let sent = Instant::now();
    agent.cli(&[
        "sync",
        "--once",
        "--batch-size",
        &opts.batch.clamp(1, 1000).to_string(),
    ])?;
    let forwarded = sent.elapsed();
    let total = start.elapsed();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let acked = rt.block_on(hub.acked_total())?;
    anyhow::ensure!(
        acked == opts.records as u64,
        "the hub acknowledged {acked} records, not {}",
        opts.records
    );
    hub.stop()?;
    let n = opts.records;
    Ok(vec![
        Figure::rate("agent intake: submit (durable, signed, chained)", n, stored),
        Figure::rate(
            "forwarding: sync --once to the hub (verified, acked)",
            n,
            forwarded,
        ),
        Figure::rate("end to end: intake + forwarding", n, total),
    ])
}
