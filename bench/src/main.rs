//! `tongbu-bench`: measures this machine's own limits and Tongbu's figures in the same run,
//! and prints each figure beside the limit it is bounded by, as a ratio. Nothing here is a
//! test: it reports what it measured (`--json` for machines). See docs/PERFORMANCE.md.

mod console;
mod feed;
mod fixture;
mod forward;
mod generate;
mod ledger;
mod limits;
mod report;
mod scratch;
mod stats;
mod suite;
mod system;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use report::Figure;

#[derive(Debug, Parser)]
#[command(
    name = "tongbu-bench",
    version,
    about = "Tongbu benchmarks against this machine's own limits"
)]
struct Cli {
    /// Print one JSON object instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one run: this machine's limits, then the performance issue's scenarios
    /// against the real binaries (beside this executable unless --bin-dir), each figure beside
    /// its limit and its bar. Progress on stderr; the report on stdout.
    Suite {
        /// Tiny sizes, a few seconds per scenario (CI: proves the suite still runs).
        #[arg(long)]
        smoke: bool,
        /// Run only these scenarios (comma-separated names or numbers 1-6); the limits are
        /// always measured.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<suite::Scenario>,
        /// The folder holding tongbu-hub and tongbu-agent (default: this executable's).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Where the scenarios' data directories go (default: the temporary folder).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        #[command(flatten)]
        sizes: Box<suite::SizeArgs>,
    },
    /// Tongbu's side of the peer comparison (bench/peer/rsyslog.sh): one real agent stores N
    /// records (`submit`) and forwards them to a real hub (`sync --once`), every one signed,
    /// verified and acknowledged exactly once.
    Forward {
        /// Records to forward.
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        /// Records per batch (the agent's default: 500).
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// The folder holding tongbu-hub and tongbu-agent (default: this executable's).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Writes N realistic records (one county, with anomalies) as JSON Lines to stdout.
    Records {
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        #[arg(long, default_value = "430112")]
        county: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Applying records to the provincial ledger, beside raw SQLite inserts.
    Ledger {
        /// Records in the stream.
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        /// Records per transaction at the hub (as in one batch from an agent).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Builds a hub data directory the size of a province through the hub's real ingest path
    /// (Hunan's counties, fiscal 2024 and 2025, with anomalies); prints an operator API key
    /// alone on the last line.
    Generate {
        /// The new hub's data directory (must be empty or not exist).
        #[arg(long)]
        data_dir: PathBuf,
        /// Records in all.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Counties (1 to 122), taken round robin over Hunan's prefectures.
        #[arg(long, default_value_t = 122)]
        counties: usize,
        /// Seed of the simulated records and the agents' keys.
        #[arg(long, default_value_t = 2260)]
        seed: u64,
        /// Records per batch an agent sends.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Batches in flight at once over all agents.
        #[arg(long, default_value_t = 8)]
        in_flight: usize,
    },
    /// Serves a hub data directory in process and measures the pages operators open (the read
    /// API today; the console's pages once the hub serves them), beside an empty loopback 200.
    Console {
        /// A hub data directory (e.g. one from `generate`).
        #[arg(long)]
        data_dir: PathBuf,
        /// Counted requests per page.
        #[arg(long, default_value_t = 50)]
        requests: usize,
        /// At most this many seconds per page.
        #[arg(long, default_value_t = 30.0)]
        max_seconds: f64,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let figures = match cli.command {
        Command::Suite {
            smoke,
            only,
            bin_dir,
            work_dir,
            sizes,
        } => {
            let report = suite::run(&suite::Options {
                smoke,
                only,
                bin_dir,
                work_dir,
                sizes: *sizes,
            })?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                suite::print(&report);
            }
            // Missed bars are figures; only a scenario that could not run fails the process.
            return Ok(if report.all_ran() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Ledger { records, batch } => ledger::run(records, batch)?,
        Command::Forward {
            records,
            batch,
            bin_dir,
        } => forward::run(&forward::Options {
            records,
            batch,
            bin_dir,
        })?,
        Command::Records {
            count,
            county,
            seed,
        } => {
            let county = tongbu_shared::CountyCode::parse(&county)?;
            let mut sim =
                tongbu_shared::sample::CountySim::new(county, seed, 2025).with_anomalies();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for _ in 0..count {
                writeln!(out, "{}", sim.next_json())?;
            }
            out.flush()?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Generate {
            data_dir,
            records,
            counties,
            seed,
            batch,
            in_flight,
        } => {
            let opts = generate::Options {
                data_dir,
                records,
                counties,
                seed,
                batch,
                in_flight,
                progress: true,
            };
            let s = generate::run(&opts)?;
            let t = s.totals;
            println!(
                "generated {} records ({} accepted, {} held, {} rejected) for {} counties, \
                 {} agents in {}: {:.1} s, {:.0} records/s",
                s.records,
                t.accepted,
                t.held,
                t.rejected,
                s.counties,
                s.agents,
                opts.data_dir.display(),
                s.seconds,
                s.records as f64 / s.seconds
            );
            println!("{}", s.api_key);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Console {
            data_dir,
            requests,
            max_seconds,
        } => {
            let report = console::run(&console::Options {
                data_dir,
                requests,
                max_seconds,
            })?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                console::print(&report);
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        report::print_figures(&figures);
    }
    Ok(ExitCode::SUCCESS)
}
