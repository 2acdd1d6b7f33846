//! `tongbu-bench suite`: in one run, this machine's own limits, then Tongbu's figures from the
//! performance issue measured against the real binaries (`tongbu-hub`, `tongbu-agent`, by
//! default beside this executable), each beside its limit as a ratio and beside its bar with
//! PASS or MISS. It reports and never asserts: a missed bar is a figure, not an error; only a
//! scenario that cannot run is an error (the report still lists every other scenario, and the
//! process then exits non-zero).
//!
//! Scenarios (one module each): [`intake`] (1: a 100,000-record file through `submit`; 2:
//! single records over the agent's loopback HTTP from 16 clients), [`ingest`] (3: four agents
//! × 250,000 records into one hub over HTTPS), [`catchup`] (4: one agent's 1,000,000-record
//! backlog after the hub was down), [`fleet`] (5: 3,000 simulated agents, a small batch every
//! 10 s for 2 minutes), [`pages`] (6: every console page over a 1,000,000-record hub) and
//! [`idle`] (an idle agent's memory and CPU, the binary's size). `--smoke` runs them all at
//! tiny sizes (CI, so the suite cannot rot); sizes can be overridden one by one.

mod catchup;
mod fleet;
mod idle;
mod ingest;
mod intake;
mod pages;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::fixture::Bins;
use crate::report::{Figure, print_figures};
use crate::scratch::Scratch;
use crate::stats::Latencies;
use crate::system::{self, Machine};
use crate::{console, limits};

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// 1: agent durable intake of a file (`tongbu-agent submit`).
    #[value(alias = "1")]
    IntakeFile,
    /// 2: agent single-record intake over loopback HTTP, concurrent clients.
    #[value(alias = "2")]
    IntakeHttp,
    /// 3: hub ingest from several agents over HTTPS.
    #[value(alias = "3")]
    HubIngest,
    /// 4: one agent's backlog after the hub was down.
    #[value(alias = "4")]
    CatchUp,
    /// 5: thousands of simulated agents, a small batch each every few seconds.
    #[value(alias = "5")]
    Fleet,
    /// 6: every console page over a big hub.
    #[value(alias = "6")]
    Console,
    /// An idle agent's memory and CPU; the binaries' sizes.
    Idle,
}

impl Scenario {
    /// A short title, for progress lines and a scenario that could not run.
    pub fn label(self) -> &'static str {
        match self {
            Scenario::IntakeFile => "1. agent durable intake of a file",
            Scenario::IntakeHttp => "2. agent single-record intake over loopback HTTP",
            Scenario::HubIngest => "3. hub ingest from several agents",
            Scenario::CatchUp => "4. catch-up after the hub was down",
            Scenario::Fleet => "5. thousands of agents on one hub",
            Scenario::Console => "6. console pages over a big hub",
            Scenario::Idle => "idle agent; binary sizes",
        }
    }

    pub const ALL: [Scenario; 7] = [
        Scenario::IntakeFile,
        Scenario::IntakeHttp,
        Scenario::HubIngest,
        Scenario::CatchUp,
        Scenario::Fleet,
        Scenario::Console,
        Scenario::Idle,
    ];
}

/// How big each part of the suite is.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    pub sign_ops: usize,
    pub verify_ops: usize,
    pub sqlite_rows: usize,
    pub single_row_seconds: f64,
    pub loopback_seconds: f64,
    pub file_records: usize,
    pub http_clients: usize,
    pub http_seconds: f64,
    pub ingest_agents: usize,
    pub ingest_records: usize,
    /// Records per batch an agent sends (the agent's default `--batch`).
    pub batch: usize,
    pub backlog: usize,
    pub down_seconds: f64,
    pub fleet_agents: usize,
    pub fleet_seconds: f64,
    pub fleet_interval: f64,
    pub fleet_batch: usize,
    pub console_records: usize,
    pub console_counties: usize,
    pub console_requests: usize,
    pub console_max_seconds: f64,
    pub idle_seconds: f64,
}

impl Sizes {
    /// The sizes.
    pub fn full() -> Sizes {
        Sizes {
            sign_ops: 50_000,
            verify_ops: 30_000,
            sqlite_rows: 100_000,
            single_row_seconds: 3.0,
            loopback_seconds: 3.0,
            file_records: 100_000,
            http_clients: 16,
            http_seconds: 10.0,
            ingest_agents: 4,
            ingest_records: 250_000,
            batch: 500,
            backlog: 1_000_000,
            down_seconds: 5.0,
            fleet_agents: 3_000,
            fleet_seconds: 120.0,
            fleet_interval: 10.0,
            fleet_batch: 5,
            console_records: 1_000_000,
            console_counties: 122,
            console_requests: 50,
            console_max_seconds: 30.0,
            idle_seconds: 30.0,
        }
    }

    /// Tiny sizes: every scenario runs through in a few seconds (CI).
    pub fn smoke() -> Sizes {
        Sizes {
            sign_ops: 2_000,
            verify_ops: 2_000,
            sqlite_rows: 5_000,
            single_row_seconds: 0.3,
            loopback_seconds: 0.5,
            file_records: 2_000,
            http_clients: 16,
            http_seconds: 1.0,
            ingest_agents: 2,
            ingest_records: 2_000,
            batch: 500,
            backlog: 5_000,
            down_seconds: 1.0,
            fleet_agents: 30,
            fleet_seconds: 6.0,
            fleet_interval: 2.0,
            fleet_batch: 2,
            console_records: 3_000,
            console_counties: 6,
            console_requests: 2,
            console_max_seconds: 5.0,
            idle_seconds: 2.0,
        }
    }
}

/// Size overrides from the command line (each replaces one of the mode's sizes).
#[derive(Debug, Clone, Default, Args)]
pub struct SizeArgs {
    /// Records in scenario 1's file.
    #[arg(long)]
    pub file_records: Option<usize>,
    /// Concurrent clients in scenario 2.
    #[arg(long)]
    pub http_clients: Option<usize>,
    /// Seconds scenario 2 runs.
    #[arg(long)]
    pub http_seconds: Option<f64>,
    /// Agents in scenario 3.
    #[arg(long)]
    pub ingest_agents: Option<usize>,
    /// Records per agent in scenario 3.
    #[arg(long)]
    pub ingest_records: Option<usize>,
    /// Records per batch agents send (scenarios 3 and 4; 1 to 1000).
    #[arg(long)]
    pub batch: Option<usize>,
    /// The backlog in scenario 4.
    #[arg(long)]
    pub backlog: Option<usize>,
    /// Simulated agents in scenario 5.
    #[arg(long)]
    pub fleet_agents: Option<usize>,
    /// Seconds scenario 5 runs.
    #[arg(long)]
    pub fleet_seconds: Option<f64>,
    /// Seconds between two batches of one simulated agent in scenario 5.
    #[arg(long)]
    pub fleet_interval: Option<f64>,
    /// Records per batch in scenario 5.
    #[arg(long)]
    pub fleet_batch: Option<usize>,
    /// Records in scenario 6's hub.
    #[arg(long)]
    pub console_records: Option<usize>,
    /// Counted requests per page in scenario 6.
    #[arg(long)]
    pub console_requests: Option<usize>,
    /// Seconds the idle agent is watched.
    #[arg(long)]
    pub idle_seconds: Option<f64>,
}

impl SizeArgs {
    fn apply(&self, s: &mut Sizes) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { s.$f = v; } )* };
        }
        set!(
            file_records,
            http_clients,
            http_seconds,
            ingest_agents,
            ingest_records,
            batch,
            backlog,
            fleet_agents,
            fleet_seconds,
            fleet_interval,
            fleet_batch,
            console_records,
            console_requests,
            idle_seconds
        );
        s.batch = s.batch.clamp(1, 1000);
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub smoke: bool,
    /// Scenarios to run (all when empty); the limits are always measured.
    pub only: Vec<Scenario>,
    /// Where `tongbu-hub` and `tongbu-agent` are (default: beside this executable).
    pub bin_dir: Option<PathBuf>,
    /// Where the scenarios' data directories go (default: the system's temporary folder).
    pub work_dir: Option<PathBuf>,
    pub sizes: SizeArgs,
}

/// This machine's limits, measured first.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub sign_one_core: Figure,
    pub sign_cores: Figure,
    pub sign_all_cores: Figure,
    pub verify_one_core: Figure,
    pub verify_cores: Figure,
    pub verify_all_cores: Figure,
    pub sqlite_batched: Figure,
    pub sqlite_single_row: Figure,
    pub loopback: Figure,
}

impl Limits {
    fn figures(&self) -> Vec<Figure> {
        vec![
            self.sign_one_core.clone(),
            self.sign_cores.clone(),
            self.sign_all_cores.clone(),
            self.verify_one_core.clone(),
            self.verify_cores.clone(),
            self.verify_all_cores.clone(),
            self.sqlite_batched.clone(),
            self.sqlite_single_row.clone(),
            self.loopback.clone(),
        ]
    }
}

/// One scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: Scenario,
    pub title: String,
    pub seconds: f64,
    pub figures: Vec<Figure>,
    /// What a reader needs to weigh the figures (sizes, what was checked, caveats).
    pub notes: Vec<String>,
    /// Why the scenario could not run to its end, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Scenario 6's whole page table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console: Option<console::Report>,
}

impl ScenarioReport {
    fn new(scenario: Scenario, title: String) -> ScenarioReport {
        ScenarioReport {
            scenario,
            title,
            seconds: 0.0,
            figures: Vec::new(),
            notes: Vec::new(),
            error: None,
            console: None,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    /// When the run started (UTC, RFC 3339).
    pub date: String,
    pub command: String,
    pub mode: &'static str,
    pub machine: Machine,
    /// Load averages (1, 5, 15 min) before and after: figures taken on a busy machine are low.
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
    pub bin_dir: String,
    /// The binaries came from a debug build (their folder is named `debug`).
    pub debug_build: bool,
    pub sizes: Sizes,
    pub limits: Limits,
    pub scenarios: Vec<ScenarioReport>,
    pub seconds: f64,
}

impl SuiteReport {
    /// Whether every scenario ran to its end (bars met or not).
    pub fn all_ran(&self) -> bool {
        self.scenarios.iter().all(|s| s.error.is_none())
    }
}

/// What every scenario gets.
pub(crate) struct Ctx {
    pub bins: Bins,
    pub rt: tokio::runtime::Runtime,
    pub work: PathBuf,
    pub sizes: Sizes,
    pub limits: Limits,
}

impl Ctx {
    /// A new temporary folder for a scenario (removed when dropped).
    pub fn tempdir(&self, what: &str) -> anyhow::Result<Scratch> {
        Ok(Scratch::new_in(
            &self.work,
            &format!("tongbu-bench-{what}"),
        )?)
    }
}

/// Progress on stderr.
pub(crate) fn progress(line: &str) {
    eprintln!("suite: {line}");
}

/// Prints `done` of `total` every 10 seconds (a task on the current runtime) until dropped.
pub(crate) struct Ticker(tokio::task::JoinHandle<()>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts a [`Ticker`]; call it inside the runtime.
pub(crate) fn ticker(
    what: &'static str,
    unit: &'static str,
    done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    total: usize,
) -> Ticker {
    Ticker(tokio::spawn(async move {
        let start = Instant::now();
        let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
        every.tick().await;
        loop {
            every.tick().await;
            let n = done.load(std::sync::atomic::Ordering::Relaxed);
            progress(&format!(
                "{what}: {n} of {total} {unit} after {:.0} s",
                start.elapsed().as_secs_f64()
            ));
        }
    }))
}

/// `what` latency p50, p99 (held to `p99_bar` ms, if given) and max, as sub-rows.
pub(crate) fn latency_rows(what: &str, lat: &Latencies, p99_bar: Option<f64>) -> [Figure; 3] {
    let p99 = Figure::ms(&format!("  {what} p99"), lat.ms(99.0));
    [
        Figure::ms(&format!("  {what} p50"), lat.ms(50.0)),
        match p99_bar {
            Some(bar) => p99.at_most(bar),
            None => p99,
        },
        Figure::ms(&format!("  {what} max"), lat.max_ms()),
    ]
}

/// The hub's peak RSS (held to `bar` MB, if given) and CPU use, as sub-rows.
pub(crate) fn hub_rows(memory: system::Memory, cpu: f64, bar: Option<f64>) -> [Figure; 2] {
    let peak = Figure::megabytes("  hub peak RSS (VmHWM)", memory.peak);
    [
        match bar {
            Some(bar) => peak.at_most(bar),
            None => peak,
        },
        Figure::value("  hub CPU (100 % = one core)", "%", cpu),
    ]
}

/// `n` realistic records of `county` (with anomalies) as JSON Lines in `path`.
pub(crate) fn write_records(path: &Path, county: &str, seed: u64, n: usize) -> anyhow::Result<()> {
    let county = tongbu_shared::CountyCode::parse(county)?;
    let mut sim = tongbu_shared::sample::CountySim::new(county, seed, 2025).with_anomalies();
    std::fs::write(path, sim.batch(n))?;
    Ok(())
}

/// Runs the suite; see the module docs.
pub fn run(opts: &Options) -> anyhow::Result<SuiteReport> {
    let started = Instant::now();
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let load_before = system::load_average();
    let machine = Machine::read();
    let mut sizes = if opts.smoke {
        Sizes::smoke()
    } else {
        Sizes::full()
    };
    opts.sizes.apply(&mut sizes);
    let bins = Bins::locate(opts.bin_dir.clone())?;
    let work = opts.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    progress(&format!(
        "{} mode, binaries in {}{}, load average {:.2} {:.2} {:.2}",
        if opts.smoke { "smoke" } else { "full" },
        bins.dir.display(),
        if bins.is_debug() {
            " (a DEBUG build: figures are not comparable)"
        } else {
            ""
        },
        load_before[0],
        load_before[1],
        load_before[2]
    ));
    if load_before[0] > 0.5 {
        progress("the machine is busy (1-minute load average above 0.5): expect low figures");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let limits = measure_limits(&rt, &sizes)?;
    let mut ctx = Ctx {
        bins,
        rt,
        work,
        sizes,
        limits,
    };
    let mut scenarios = Vec::new();
    for (i, scenario) in Scenario::ALL.into_iter().enumerate() {
        if !opts.only.is_empty() && !opts.only.contains(&scenario) {
            continue;
        }
        let begin = Instant::now();
        progress(&format!(
            "[{}/{}] {}",
            i + 1,
            Scenario::ALL.len(),
            scenario.label()
        ));
        let mut report = match scenario {
            Scenario::IntakeFile => intake::file(&mut ctx),
            Scenario::IntakeHttp => intake::http(&mut ctx),
            Scenario::HubIngest => ingest::run(&mut ctx),
            Scenario::CatchUp => catchup::run(&mut ctx),
            Scenario::Fleet => fleet::run(&mut ctx),
            Scenario::Console => pages::run(&mut ctx),
            Scenario::Idle => idle::run(&mut ctx),
        }
        .unwrap_or_else(|e| {
            progress(&format!("{} FAILED: {e:#}", scenario.label()));
            let mut r = ScenarioReport::new(scenario, scenario.label().to_owned());
            r.error = Some(format!("{e:#}"));
            r
        });
        report.seconds = begin.elapsed().as_secs_f64();
        progress(&format!(
            "{} took {:.1} s",
            scenario.label(),
            report.seconds
        ));
        scenarios.push(report);
    }
    Ok(SuiteReport {
        date,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        mode: if opts.smoke { "smoke" } else { "full" },
        machine,
        load_before,
        load_after: system::load_average(),
        bin_dir: ctx.bins.dir.display().to_string(),
        debug_build: ctx.bins.is_debug(),
        sizes: ctx.sizes,
        limits: ctx.limits,
        scenarios,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn measure_limits(rt: &tokio::runtime::Runtime, s: &Sizes) -> anyhow::Result<Limits> {
    let cores = system::cores();
    progress("limits: ring sign and verify, one core and every core");
    let sign_one_core = limits::ring_sign_one_core(s.sign_ops)?;
    let sign_all_cores = limits::ring_sign_all_cores(s.sign_ops, cores)?;
    let verify_one_core = limits::ring_verify_one_core(s.verify_ops)?;
    let verify_all_cores = limits::ring_verify_all_cores(s.verify_ops, cores)?;
    progress("limits: SQLite inserts (FULL), batched and one row per commit");
    let sqlite_batched = limits::sqlite_batched_inserts(s.sqlite_rows, 1000)?;
    let sqlite_single_row = limits::sqlite_single_row_commits(s.single_row_seconds)?;
    progress("limits: loopback HTTP, parse only");
    let loopback = rt.block_on(limits::loopback_parse_only(
        s.loopback_seconds,
        cores,
        s.batch,
    ))?;
    Ok(Limits {
        sign_cores: limits::times_cores(&sign_one_core, cores, "sign"),
        verify_cores: limits::times_cores(&verify_one_core, cores, "verify"),
        sign_one_core,
        sign_all_cores,
        verify_one_core,
        verify_all_cores,
        sqlite_batched,
        sqlite_single_row,
        loopback,
    })
}

/// The report as people read it.
pub fn print(r: &SuiteReport) {
    let m = &r.machine;
    println!("tongbu-bench suite ({} mode), {}", r.mode, r.date);
    println!(
        "machine: {} cores, {}, Linux {}, {} MB memory ({})",
        m.cores, m.cpu_model, m.kernel, m.memory_mb, m.hostname
    );
    println!(
        "load average before {:.2} {:.2} {:.2}, after {:.2} {:.2} {:.2}",
        r.load_before[0],
        r.load_before[1],
        r.load_before[2],
        r.load_after[0],
        r.load_after[1],
        r.load_after[2]
    );
    println!(
        "binaries: {}{}",
        r.bin_dir,
        if r.debug_build {
            " (a DEBUG build: figures are not comparable)"
        } else {
            ""
        }
    );
    println!("command: {}", r.command);
    println!();
    println!("== limits (this machine, this run)");
    print_figures(&r.limits.figures());
    for s in &r.scenarios {
        println!();
        println!("== {} ({:.1} s)", s.title, s.seconds);
        print_figures(&s.figures);
        for n in &s.notes {
            println!("  note: {n}");
        }
        if let Some(e) = &s.error {
            println!("  ERROR: {e}");
        }
    }
    let missed: Vec<String> = r
        .scenarios
        .iter()
        .flat_map(|s| &s.figures)
        .filter(|f| f.target.as_ref().is_some_and(|t| !t.pass))
        .map(|f| f.name.trim().to_owned())
        .collect();
    let bars = r
        .scenarios
        .iter()
        .flat_map(|s| &s.figures)
        .filter(|f| f.target.is_some())
        .count();
    println!();
    println!(
        "bars: {} of {bars} met{}; scenarios that could not run: {}; total {:.1} s",
        bars - missed.len(),
        if missed.is_empty() {
            String::new()
        } else {
            format!(" (missed: {})", missed.join("; "))
        },
        r.scenarios.iter().filter(|s| s.error.is_some()).count(),
        r.seconds
    );
}
