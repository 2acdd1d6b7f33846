//! End-to-end tests: the real `tongbu-hub` and `tongbu-agent` binaries, started on port 0 in
//! temporary directories and driven through their CLIs and HTTP APIs (see `tongbu_tests`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod demo;
mod enrollment;
mod formats;
mod input;
mod ledger;
mod log;
mod metrics;
mod sync;
mod tamper;
