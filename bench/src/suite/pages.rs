//! Scenario 6: every console page and API read over a big hub. The hub's data directory is
//! made by [`crate::generate`] (Hunan's counties, through the hub's real ingest path in
//! process), prepared through the hub library ([`console::prepare`]: an API key, a console
//! admin, the values pages are asked with), and then served by the real `tongbu-hub serve`;
//! [`console::measure_pages`] asks for each page over loopback HTTP and reads every answer to
//! its end. Each page's p95 beside the bar, and beside an empty axum 200's p95.

use std::sync::Arc;
use std::time::Duration;

use tongbu_hub::{Hub, SystemClock};

use super::{Ctx, Scenario, ScenarioReport, progress};
use crate::fixture::HubProc;
use crate::report::{Figure, number};
use crate::{console, generate};

pub fn run(ctx: &mut Ctx) -> anyhow::Result<ScenarioReport> {
    let records = ctx.sizes.console_records;
    let counties = ctx.sizes.console_counties;
    let mut report = ScenarioReport::new(
        Scenario::Console,
        format!(
            "6. console pages over a {}-record hub ({counties} counties)",
            number(records as f64, "")
        ),
    );
    let dir = ctx.tempdir("console")?;
    let data_dir = dir.path().join("hub");
    progress(&format!("generating a {records}-record hub"));
    let summary = generate::run(&generate::Options {
        data_dir: data_dir.clone(),
        records,
        counties,
        seed: 2260,
        batch: 1000,
        in_flight: 8,
        progress: true,
    })?;
    report.figures.push(Figure::rate(
        "generator: sign + ingest in process (not a bar)",
        records,
        Duration::from_secs_f64(summary.seconds),
    ));
    let prepared = ctx.rt.block_on(async {
        let hub = Hub::open(&data_dir, Arc::new(SystemClock))?;
        let prepared = console::prepare(&hub).await?;
        hub.db().flush().await?;
        anyhow::Ok(prepared)
    })?;

    let mut hub = HubProc::new(&ctx.bins, &data_dir)?;
    hub.serve()?;
    progress(&format!(
        "{} pages, {} requests each",
        console::PAGES.len(),
        ctx.sizes.console_requests
    ));
    let pages = ctx.rt.block_on(console::measure_pages(
        &hub.url(),
        &prepared,
        ctx.sizes.console_requests,
        Duration::from_secs_f64(ctx.sizes.console_max_seconds),
    ))?;
    hub.stop()?;

    let limit = Figure::ms(&format!("{} p95", pages.limit.page), pages.limit.p95_ms);
    for p in &pages.pages {
        report.figures.push(
            Figure::ms(&format!("{} p95", p.page), p.p95_ms)
                .against(&limit)
                .at_most(300.0),
        );
    }
    let t = summary.totals;
    report.notes.push(format!(
        "{} requests per page after 3 warm-ups (at most {} s a page), one keep-alive client, \
         answers read to their end; the hub holds {} accepted, {} held, {} rejected records \
         from {} agents; the loopback limit (empty 200) p95 is {:.3} ms",
        ctx.sizes.console_requests,
        ctx.sizes.console_max_seconds,
        t.accepted,
        t.held,
        t.rejected,
        summary.agents,
        pages.limit.p95_ms
    ));
    report.console = Some(pages);
    Ok(report)
}
