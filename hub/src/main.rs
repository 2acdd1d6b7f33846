//! The `tongbu-hub` binary: parses the command line and hands it to [`cli::run`].

mod cli;
mod demo;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tongbu-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}
