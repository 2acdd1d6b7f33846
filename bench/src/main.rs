//! `tongbu-bench`: measures this machine's own limits and Tongbu's figures in the same run,
//! and prints each figure beside the limit it is bounded by, as a ratio. Nothing here is a
//! test: it reports what it measured (`--json` for machines). See docs/PERFORMANCE.md.

mod console;
mod feed;
mod generate;
mod ledger;
mod limits;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;

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

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub unit: &'static str,
    pub value: f64,
    /// The limit this figure is compared with, by name, and the ratio to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

impl Figure {
    pub fn rate(name: &str, count: usize, took: Duration) -> Figure {
        Figure {
            name: name.to_owned(),
            unit: "per s",
            value: count as f64 / took.as_secs_f64(),
            limit: None,
            ratio: None,
        }
    }

    pub fn against(mut self, limit: &Figure) -> Figure {
        self.ratio = Some(self.value / limit.value);
        self.limit = Some(limit.name.clone());
        self
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let figures = match cli.command {
        Command::Ledger { records, batch } => ledger::run(records, batch)?,
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
            return Ok(());
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
            return Ok(());
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        println!(
            "{:<58} {:>14} {:<8} {:>8}  limit",
            "figure", "value", "unit", "ratio"
        );
        for f in &figures {
            let ratio = f.ratio.map_or_else(String::new, |r| format!("{r:.3}"));
            println!(
                "{:<58} {:>14.0} {:<8} {:>8}  {}",
                f.name,
                f.value,
                f.unit,
                ratio,
                f.limit.as_deref().unwrap_or("(machine limit)")
            );
        }
    }
    Ok(())
}
