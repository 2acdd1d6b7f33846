//! The `tongbu-agent` binary: parses flags and hands over to [`cli`], which reads the settings
//! and sets up logging.

mod cli;
mod config;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
