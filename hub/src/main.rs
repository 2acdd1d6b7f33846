//! The `tongbu-hub` binary: parses the command line and hands it to [`cli::run`].

mod cli;
mod config;
mod demo;
mod notify;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tongbu-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}
