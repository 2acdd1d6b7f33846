//! `tongbu-bench`: measures this machine's own limits and Tongbu's figures in the same run,
//! and prints each figure beside the limit it is bounded by, as a ratio. Nothing here is a
//! test: it reports what it measured (`--json` for machines). See docs/PERFORMANCE.md.

mod ledger;
mod limits;

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
