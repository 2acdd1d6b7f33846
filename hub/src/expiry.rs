//! The grace period as a background task: every so often, reject the records held longer
//! than the current policy allows ([`Hub::expire_once`], one write transaction), until the hub
//! shuts down. Time comes from the hub's injected clock; the interval only paces the steps,
//! so a step that runs late (or after downtime) still decides by the clock's time.

use std::future::Future;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::hub::Hub;

/// How often the hub looks for held records past their grace period, by default.
pub const DEFAULT_EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// Runs [`Hub::expire_once`] at once and then every `every`, until `shutdown` completes. A
/// failed step is logged and retried at the next tick; a step in progress is finished.
pub async fn run_until_stopped(hub: Hub, every: Duration, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        if let Err(e) = hub.expire_once().await {
            tracing::warn!(error = %e, "cannot decide held records past their grace period");
        }
    }
}
