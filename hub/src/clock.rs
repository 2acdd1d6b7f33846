//! Time as the hub sees it. Domain code asks a [`Clock`] (shared with the agent) for the time
//! and never reads the wall clock itself, so tests can pin it; times are Unix milliseconds
//! (`i64`) throughout. Only [`SystemClock`] reads the operating system's clock.

pub use tongbu_shared::clock::{Clock, ManualClock, rfc3339};

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let now = time::OffsetDateTime::now_utc();
        // i128 milliseconds since 1970 fit in i64 for the next 290 million years.
        i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }
}
