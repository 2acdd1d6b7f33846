//! What one sync round reports, kept out of the sync logic itself: the one INFO line a round
//! that moved records logs (sent, acknowledged, the hub's outcomes, time taken), and, when a
//! round starts with a large backlog (more than [`CATCH_UP_AT`] records unacknowledged),
//! progress of the acknowledgements through `tongbu_shared::progress` — a bar on a terminal,
//! otherwise a log line every few seconds. Reporting never fails or slows a round.

use std::io::Write;
use std::time::Duration;

use tongbu_shared::progress::Progress;
use tongbu_shared::protocol::{Outcome, Receipt};
use tracing::{debug, info};

/// A round that starts with more records unacknowledged than this reports its progress.
pub const CATCH_UP_AT: u64 = 10_000;

/// The report of one round in progress.
#[derive(Debug, Default)]
pub struct RoundReport {
    planned: bool,
    accepted: u64,
    held: u64,
    rejected: u64,
    /// The catch-up's progress and the acked seq it started from.
    catch_up: Option<(Progress, u64)>,
}

impl RoundReport {
    /// The round knows what it will send: `acked` acknowledged of `head`. Only the first call
    /// counts (later plans of the same round continue the same report).
    pub fn planned(&mut self, acked: u64, head: u64) {
        if std::mem::replace(&mut self.planned, true) {
            return;
        }
        let backlog = head.saturating_sub(acked);
        if backlog > CATCH_UP_AT {
            info!(
                backlog,
                acked_seq = acked,
                head_seq = head,
                "catching up a backlog"
            );
            let progress = Progress::new_with_lines_to(
                "catching up",
                Some(backlog),
                Box::new(LogLines::default()),
            )
            .unit("records acknowledged");
            self.catch_up = Some((progress, acked));
        }
    }

    /// A verified receipt about to be applied: its outcomes count for the round.
    pub fn receipt(&mut self, receipt: &Receipt) {
        for o in &receipt.outcomes {
            match o.outcome {
                Outcome::Accepted => self.accepted += 1,
                Outcome::Held => self.held += 1,
                Outcome::Rejected => self.rejected += 1,
            }
        }
    }

    /// The receipt was applied: the hub acknowledged through `acked`.
    pub fn applied(&self, acked: u64) {
        if let Some((progress, from)) = &self.catch_up {
            progress.set(acked.saturating_sub(*from));
        }
    }

    /// The round ended well: one INFO line when it moved records, DEBUG for a heartbeat.
    pub fn done(&self, sent: u64, acked_seq: u64, head_seq: u64, took: Duration) {
        if let Some((progress, _)) = &self.catch_up {
            progress.finish();
        }
        let duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        if sent > 0 {
            info!(
                sent,
                acked_seq,
                head_seq,
                accepted = self.accepted,
                held = self.held,
                rejected = self.rejected,
                duration_ms,
                "synced"
            );
        } else {
            debug!(acked_seq, head_seq, duration_ms, "heartbeat");
        }
    }
}

/// Progress lines into the log (at INFO), one event per line.
#[derive(Debug, Default)]
struct LogLines {
    pending: Vec<u8>,
}

impl Write for LogLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]);
            info!("{line}");
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tongbu_shared::AgentId;
    use tongbu_shared::crypto::Digest;
    use tongbu_shared::protocol::RecordOutcome;

    use super::*;

    fn receipt(outcomes: &[Outcome]) -> Receipt {
        Receipt {
            agent_id: AgentId::parse("430112-0000000a").unwrap(),
            acked_seq: outcomes.len() as u64,
            head_hash: Digest::GENESIS,
            outcomes: outcomes
                .iter()
                .enumerate()
                .map(|(i, o)| RecordOutcome {
                    seq: i as u64 + 1,
                    outcome: *o,
                    codes: Vec::new(),
                    duplicate: false,
                    detail: None,
                    policy_version: None,
                })
                .collect(),
            hub_time_ms: 0,
            updates: Vec::new(),
            outcome_cursor: 0,
            policy_version: 1,
            log: None,
        }
    }

    #[test]
    fn outcomes_are_tallied_and_only_a_large_backlog_reports_progress() {
        let mut report = RoundReport::default();
        report.planned(0, CATCH_UP_AT);
        assert!(report.catch_up.is_none());
        report.receipt(&receipt(&[
            Outcome::Accepted,
            Outcome::Held,
            Outcome::Accepted,
            Outcome::Rejected,
        ]));
        assert_eq!((report.accepted, report.held, report.rejected), (2, 1, 1));

        let mut big = RoundReport::default();
        big.planned(5, 5 + CATCH_UP_AT + 1);
        assert!(big.catch_up.is_some());
        // A later plan in the same round does not start over.
        big.planned(500, 5 + CATCH_UP_AT + 1);
        assert_eq!(big.catch_up.as_ref().map(|(_, from)| *from), Some(5));
        big.applied(505);
        big.done(500, 505, 5 + CATCH_UP_AT + 1, Duration::from_millis(3));
    }

    #[test]
    fn log_lines_are_split_at_newlines() {
        let mut w = LogLines::default();
        w.write_all(b"catching up: 1/2 records").unwrap();
        assert!(!w.pending.is_empty());
        w.write_all(b" (50%)\nnext").unwrap();
        assert_eq!(w.pending, b"next");
    }
}
