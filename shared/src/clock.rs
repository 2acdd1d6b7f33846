//! Time as both binaries see it: a [`Clock`] trait that domain logic asks for the time (so tests
//! can pin it), a [`ManualClock`] for tests and reproducible runs, and the one RFC 3339 format
//! used in every report. This module reads no clock: each binary supplies its own wall clock.

use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// A source of the current time, in milliseconds since the Unix epoch (UTC).
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;

    /// The current time in whole seconds since the Unix epoch.
    fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    pub fn new(now_ms: i64) -> ManualClock {
        ManualClock {
            now_ms: AtomicI64::new(now_ms),
        }
    }

    pub fn set_ms(&self, now_ms: i64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    pub fn advance_ms(&self, by_ms: i64) {
        self.now_ms.fetch_add(by_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

const RFC3339_SECONDS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// Formats Unix milliseconds as RFC 3339 UTC to the second, e.g. `2026-11-27T06:48:33Z`.
/// Times outside the years 0–9999 are clamped rather than refused: they can only come from a
/// clock gone wrong, and a report should still print.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000).clamp(-62_167_219_200, 253_402_300_799);
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(RFC3339_SECONDS).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_762_113_999), "2026-11-27T06:48:33Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(5_500);
        assert_eq!((c.now_ms(), c.now_secs()), (5_500, 5));
        c.advance_ms(10);
        assert_eq!(c.now_ms(), 5_510);
        c.set_ms(1);
        assert_eq!(c.now_ms(), 1);
    }
}
