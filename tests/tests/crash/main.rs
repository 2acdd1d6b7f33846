//! Crash tests: the real binaries killed with SIGKILL at random points of their work, many
//! times, and afterwards every record whose submission succeeded is at the hub exactly once, the
//! chains verify and the ledger equals an independent sum of the records.
//!
//! - `agent`: agents killed mid-intake (HTTP and CLI), mid-signing and commit, mid-upload, and
//!   between the hub's commit and the agent recording the acknowledgement.
//! - `hub`: the hub killed mid-ingest while several agents upload concurrently, and restarted on
//!   the same port.
//!
//! CI runs 200 agent kills and 100 hub kills mid-ingest (plus about a tenth more right after a
//! restart): under a minute on 2 cores. The long mode is the same tests with a larger budget
//! (the hub gets half the agent's kills, at least 100; about 4 minutes for these figures):
//!
//! ```text
//! TONGBU_CRASH_KILLS=1000 cargo test -p tongbu-tests --test crash -- --nocapture
//! ```
//!
//! Every run prints its seed; `TONGBU_CRASH_SEED=<seed>` replays the same random choices (where
//! each kill lands still depends on the processes' real timing, which is the point).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod hub;

/// The tests take turns: the hub test restarts its hub on the same port many times, and an agent
/// started by the other test in that moment could be given the port.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
