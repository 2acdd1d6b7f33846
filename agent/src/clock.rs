//! Where the agent reads the time. Logic that depends on the time takes a [`Clock`] (shared
//! with the hub) so tests can pin it; only [`SystemClock`] reads the wall clock.

use std::time::{SystemTime, UNIX_EPOCH};

pub use tongbu_shared::clock::{Clock, ManualClock, rfc3339};

/// The machine's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        // A clock set before 1970 reads as the epoch; the hub refuses it as skewed.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}
