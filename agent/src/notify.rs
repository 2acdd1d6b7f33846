//! systemd service notifications (`sd_notify`): `READY=1` once the service accepts work, a
//! `STATUS=` line, `WATCHDOG=1` pings and `STOPPING=1` at shutdown. The generic part (the
//! keep-alive loop) serves `tongbu-agent run` here and `tongbu-hub serve` (the hub binary links
//! this library already, for its demo); the agent's own health check is [`AgentHealth`].
//!
//! Invariants: nothing is sent and no task is started unless systemd gave the process a
//! `NOTIFY_SOCKET`. `WATCHDOG=1` is sent only right after a health check passed within its time
//! limit, so a process whose store or loop hangs stops pinging and systemd restarts it
//! (`WatchdogSec=` in the unit). A failed send is logged once and never stops the service.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::{info, warn};

use crate::client::REQUEST_TIMEOUT;
use crate::outbox::{Outbox, OutboxError, SharedOutbox};
use crate::sync::{LoopOptions, SyncError, SyncStep, SyncSummary};

/// Without a watchdog, the status line is still refreshed this often.
const STATUS_EVERY: Duration = Duration::from_secs(30);

/// One notification; [`send`] turns a list of them into one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Ready,
    Status(String),
    Watchdog,
    Stopping,
}

/// Whether systemd asked for notifications (`NOTIFY_SOCKET` is set).
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Sends `notes` as one datagram; a no-op without `NOTIFY_SOCKET`.
pub fn send(notes: &[Note]) {
    static FAILED: AtomicBool = AtomicBool::new(false);
    let states: Vec<NotifyState<'_>> = notes
        .iter()
        .map(|n| match n {
            Note::Ready => NotifyState::Ready,
            Note::Status(s) => NotifyState::Status(s),
            Note::Watchdog => NotifyState::Watchdog,
            Note::Stopping => NotifyState::Stopping,
        })
        .collect();
    match sd_notify::notify(&states) {
        Ok(()) => FAILED.store(false, Ordering::Relaxed),
        // Logged when it starts failing, not at every ping.
        Err(e) if !FAILED.swap(true, Ordering::Relaxed) => {
            warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
        }
        Err(_) => {}
    }
}

/// How often the keep-alive loop checks health, and whether it pings a watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    pub every: Duration,
    pub ping: bool,
}

impl Pacing {
    /// Half the watchdog interval systemd set (`WATCHDOG_USEC`, for this process), as
    /// sd_watchdog_enabled(3) advises; without a watchdog, a status refresh every 30 s.
    pub fn from_env() -> Pacing {
        Pacing::for_watchdog(sd_notify::watchdog_enabled())
    }

    pub fn for_watchdog(interval: Option<Duration>) -> Pacing {
        match interval {
            Some(interval) if !interval.is_zero() => Pacing {
                every: (interval / 2).max(Duration::from_millis(1)),
                ping: true,
            },
            _ => Pacing {
                every: STATUS_EVERY,
                ping: false,
            },
        }
    }
}

/// A health check: the status line when healthy, what is wrong when not.
pub type Health = Result<String, String>;

/// One keep-alive round: runs `check` for at most `pacing.every` and says what to send. Only a
/// check that passed in time yields [`Note::Watchdog`]; `failing` remembers the last problem so
/// that it is logged when it starts, not at every round.
pub async fn keep_alive_once(
    check: impl Future<Output = Health>,
    pacing: Pacing,
    failing: &mut Option<String>,
) -> Vec<Note> {
    let health = match tokio::time::timeout(pacing.every, check).await {
        Ok(health) => health,
        Err(_) => Err(format!(
            "the health check did not answer within {:?}",
            pacing.every
        )),
    };
    match health {
        Ok(status) => {
            if let Some(problem) = failing.take() {
                info!(was = %problem, "healthy again");
            }
            let mut notes = vec![Note::Status(status)];
            if pacing.ping {
                notes.push(Note::Watchdog);
            }
            notes
        }
        Err(problem) => {
            if failing.as_deref() != Some(problem.as_str()) {
                warn!(%problem, watchdog = pacing.ping, "health check failed: not pinging systemd's watchdog");
            }
            let status = format!("unhealthy: {problem}");
            *failing = Some(problem);
            vec![Note::Status(status)]
        }
    }
}

/// Checks health every `pacing.every` and sends the status (and a watchdog ping when healthy)
/// until `shutdown` completes. Returns at once when systemd did not ask for notifications.
pub async fn keep_alive<C, F>(mut check: C, pacing: Pacing, shutdown: impl Future<Output = ()>)
where
    C: FnMut() -> F,
    F: Future<Output = Health>,
{
    if !enabled() {
        return;
    }
    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(pacing.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = None;
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        let notes = tokio::select! {
            biased;
            () = &mut shutdown => return,
            notes = keep_alive_once(check(), pacing, &mut failing) => notes,
        };
        send(&notes);
    }
}

/// When the sync loop last showed signs of life: a round starting or ending
/// ([`Watched`]), or the acknowledged seq moving during a long round.
#[derive(Debug, Clone)]
pub struct Progress(Arc<Mutex<Mark>>);

#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    acked_seq: Option<u64>,
}

impl Progress {
    pub fn new(now: Instant) -> Progress {
        Progress(Arc::new(Mutex::new(Mark {
            at: now,
            acked_seq: None,
        })))
    }

    /// Notes a sign of life at `now`.
    pub fn mark(&self, now: Instant) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).at = now;
    }

    /// Whether the loop has shown life within `stuck_after` of `now`, counting a change of
    /// `acked_seq` since the last call as life. Err names how long it has been silent.
    pub fn check(&self, acked_seq: u64, now: Instant, stuck_after: Duration) -> Result<(), String> {
        let mut mark = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if mark.acked_seq != Some(acked_seq) {
            mark.acked_seq = Some(acked_seq);
            mark.at = now;
        }
        let silent = now.saturating_duration_since(mark.at);
        if silent > stuck_after {
            return Err(format!(
                "the sync loop has made no progress for {}s (limit {}s)",
                silent.as_secs(),
                stuck_after.as_secs()
            ));
        }
        Ok(())
    }
}

/// How long the sync loop may go without a sign of life before it counts as stuck: it either
/// sleeps (at most the heartbeat or the longest backoff) or waits on the hub, each call bounded
/// by the request timeout, and a round makes a few calls (watermark, policy, rotation, a batch)
/// before its first acknowledgement.
pub fn stuck_after(opts: &LoopOptions) -> Duration {
    opts.heartbeat.max(opts.retry_max) + 4 * REQUEST_TIMEOUT
}

/// A sync step that marks [`Progress`] when each round starts and ends.
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    progress: Progress,
}

impl<S> Watched<S> {
    pub fn new(inner: S, progress: Progress) -> Watched<S> {
        Watched { inner, progress }
    }
}

impl<S: SyncStep> SyncStep for Watched<S> {
    fn sync_once(&mut self) -> impl Future<Output = Result<SyncSummary, SyncError>> + Send {
        self.progress.mark(Instant::now());
        let progress = self.progress.clone();
        let round = self.inner.sync_once();
        async move {
            let out = round.await;
            progress.mark(Instant::now());
            out
        }
    }
}

/// The agent's health: its outbox answers a read on a connection of its own, and the sync loop
/// is not stuck. The status line is `queue N, acked seq M`.
#[derive(Debug, Clone)]
pub struct AgentHealth {
    outbox: SharedOutbox,
    progress: Progress,
    stuck_after: Duration,
}

impl AgentHealth {
    /// Opens a read-only connection to the outbox at `path`.
    pub fn open(
        path: &Path,
        progress: Progress,
        stuck_after: Duration,
    ) -> Result<AgentHealth, OutboxError> {
        let outbox = Outbox::open(path)?;
        outbox.set_query_only(true)?;
        Ok(AgentHealth {
            outbox: SharedOutbox::new(outbox),
            progress,
            stuck_after,
        })
    }

    pub async fn check(&self) -> Health {
        let (head, acked) = self
            .outbox
            .call(|o| Ok((o.head()?.seq, o.sync_state()?.acked_seq)))
            .await
            .map_err(|e| format!("the outbox cannot be read: {e}"))?;
        self.progress
            .check(acked, Instant::now(), self.stuck_after)?;
        Ok(format!(
            "queue {}, acked seq {acked}",
            head.saturating_sub(acked)
        ))
    }
}

/// Tells systemd the agent is ready (its intake listens and its outbox is open) and keeps it
/// informed until `shutdown` completes. Does nothing without `NOTIFY_SOCKET`.
pub async fn supervise_agent(
    health: AgentHealth,
    intake: std::net::SocketAddr,
    shutdown: impl Future<Output = ()>,
) {
    if !enabled() {
        return;
    }
    let status = match health.check().await {
        Ok(status) => format!("intake on {intake}; {status}"),
        Err(problem) => format!("intake on {intake}; {problem}"),
    };
    send(&[Note::Ready, Note::Status(status)]);
    keep_alive(|| health.check(), Pacing::from_env(), shutdown).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const EVERY: Pacing = Pacing {
        every: Duration::from_secs(15),
        ping: true,
    };

    #[test]
    fn pacing_is_half_the_watchdog_interval() {
        assert_eq!(Pacing::for_watchdog(Some(Duration::from_secs(30))), EVERY);
        let off = Pacing::for_watchdog(None);
        assert!(!off.ping);
        assert_eq!(Pacing::for_watchdog(Some(Duration::ZERO)), off);
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_healthy_answer_in_time_pings() {
        let mut failing = None;
        let ok = keep_alive_once(async { Ok("queue 0".to_owned()) }, EVERY, &mut failing).await;
        assert_eq!(ok, vec![Note::Status("queue 0".into()), Note::Watchdog]);

        let bad = keep_alive_once(async { Err("disk".to_owned()) }, EVERY, &mut failing).await;
        assert_eq!(bad, vec![Note::Status("unhealthy: disk".into())]);
        assert_eq!(failing.as_deref(), Some("disk"));

        // A check that hangs (a stuck writer, a lock never released) times out: no ping.
        let hung = keep_alive_once(std::future::pending(), EVERY, &mut failing).await;
        assert_eq!(hung.len(), 1);
        assert!(matches!(&hung[0], Note::Status(s) if s.contains("did not answer")));

        let again = keep_alive_once(async { Ok("ok".to_owned()) }, EVERY, &mut failing).await;
        assert!(again.contains(&Note::Watchdog));
        assert_eq!(failing, None);

        let no_watchdog = Pacing {
            ping: false,
            ..EVERY
        };
        let quiet = keep_alive_once(async { Ok("ok".to_owned()) }, no_watchdog, &mut None).await;
        assert_eq!(quiet, vec![Note::Status("ok".into())]);
    }

    #[test]
    fn a_silent_loop_counts_as_stuck_unless_acks_move() {
        let start = Instant::now();
        let limit = Duration::from_secs(300);
        let p = Progress::new(start);
        assert!(p.check(5, start + Duration::from_secs(299), limit).is_ok());
        // The ack moved: a long round that is still delivering is alive.
        assert!(p.check(6, start + Duration::from_secs(400), limit).is_ok());
        assert!(p.check(6, start + Duration::from_secs(650), limit).is_ok());
        let stuck = p
            .check(6, start + Duration::from_secs(701), limit)
            .unwrap_err();
        assert!(stuck.contains("no progress for 301s"), "{stuck}");
        p.mark(start + Duration::from_secs(702));
        assert!(p.check(6, start + Duration::from_secs(703), limit).is_ok());
    }

    #[test]
    fn the_stuck_limit_covers_the_longest_sleep_and_a_few_requests() {
        let opts = LoopOptions {
            heartbeat: Duration::from_secs(10),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            jitter_seed: 0,
        };
        assert_eq!(
            stuck_after(&opts),
            Duration::from_secs(60) + 4 * REQUEST_TIMEOUT
        );
    }

    struct Step(u32);
    impl SyncStep for Step {
        fn sync_once(&mut self) -> impl Future<Output = Result<SyncSummary, SyncError>> + Send {
            self.0 += 1;
            async {
                Ok(SyncSummary {
                    sent: 0,
                    acked_seq: 0,
                    head_seq: 0,
                    duration: Duration::ZERO,
                    policy: None,
                    problem: None,
                })
            }
        }
    }

    #[tokio::test]
    async fn a_watched_step_marks_each_round() {
        let limit = Duration::from_secs(300);
        // A loop last seen 1,000 s ago (skipped on a machine up for less than that).
        let Some(start) = Instant::now().checked_sub(Duration::from_secs(1_000)) else {
            return;
        };
        let p = Progress::new(start);
        assert!(p.check(0, start, limit).is_ok());
        assert!(p.check(0, Instant::now(), limit).is_err());
        let mut w = Watched::new(Step(0), p.clone());
        w.sync_once().await.unwrap();
        assert_eq!(w.inner.0, 1);
        assert!(p.check(0, Instant::now(), limit).is_ok());
    }
}
