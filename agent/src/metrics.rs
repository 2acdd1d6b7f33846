//! The agent's Prometheus metrics, served as `GET /metrics` on the loopback intake listener
//! (text format 0.0.4, encoded by `prometheus-client`). Every figure `tongbu-agent status`
//! shows is rendered from the same [`Status`] it prints (read from the outbox at each scrape),
//! so a scrape and `status --json` taken together agree; only what the running process alone
//! knows is counted here in memory: sync rounds, failed rounds (each one is retried) and the
//! records the intake took in since start. Every name is listed in `docs/METRICS.md`; the
//! Grafana dashboard is tested against [`NAMES`].

use std::future::Future;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::status::Status;
use crate::sync::{SyncError, SyncStep, SyncSummary};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every series name the agent exposes (histograms by their `_bucket`, `_sum` and `_count`).
/// `tongbu_agent_last_sync_age_seconds` is left out until the first sync, and
/// `tongbu_agent_last_error` and `tongbu_agent_policy_version` while there is none.
pub const NAMES: &[&str] = &[
    "tongbu_agent_info",
    "tongbu_agent_head_seq",
    "tongbu_agent_acked_seq",
    "tongbu_agent_queue_depth_records",
    "tongbu_agent_last_sync_age_seconds",
    "tongbu_agent_last_error",
    "tongbu_agent_policy_version",
    "tongbu_agent_records_held",
    "tongbu_agent_records_rejected",
    "tongbu_agent_hub_log_size",
    "tongbu_agent_hub_log_findings_total",
    "tongbu_agent_records_taken_in_total",
    "tongbu_agent_sync_rounds_total",
    "tongbu_agent_sync_retries_total",
    "tongbu_agent_sync_round_duration_seconds_bucket",
    "tongbu_agent_sync_round_duration_seconds_sum",
    "tongbu_agent_sync_round_duration_seconds_count",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    agent_id: String,
    county: String,
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: String,
}

/// What only the running process knows. Cheap handles: shared with each scrape's registry.
#[derive(Debug)]
pub struct AgentMetrics {
    taken_in: Counter,
    rounds: Counter,
    retries: Counter,
    round_seconds: Histogram,
}

impl Default for AgentMetrics {
    fn default() -> AgentMetrics {
        AgentMetrics {
            taken_in: Counter::default(),
            rounds: Counter::default(),
            retries: Counter::default(),
            // 10 ms to 160 s: a heartbeat to a long catch-up.
            round_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 15)),
        }
    }
}

impl AgentMetrics {
    /// Records the intake stored (counted once their commit answered).
    pub fn taken_in(&self, records: usize) {
        self.taken_in.inc_by(records as u64);
    }

    /// Counts a sync round that ended (`ok` or failed, to be retried) after `seconds`.
    pub fn round(&self, ok: bool, seconds: f64) {
        self.rounds.inc();
        if !ok {
            self.retries.inc();
        }
        self.round_seconds.observe(seconds);
    }

    /// The exposition of `status` (as `tongbu-agent status` reads it) at `now_ms`, and of the
    /// process's own counters.
    pub fn render(&self, status: &Status, now_ms: i64) -> String {
        let mut r = Registry::default();
        let info = Family::<InfoLabels, Gauge>::default();
        info.get_or_create(&InfoLabels {
            agent_id: status.agent_id.clone().unwrap_or_default(),
            county: status.county.clone().unwrap_or_default(),
            version: crate::AGENT_VERSION,
        })
        .set(1);
        r.register(
            "tongbu_agent_info",
            "This agent: its id, county and software version (always 1)",
            info,
        );
        gauge(
            &mut r,
            "tongbu_agent_head_seq",
            "The last seq in the local chain",
            status.head_seq,
        );
        gauge(
            &mut r,
            "tongbu_agent_acked_seq",
            "The last seq the hub acknowledged with a signed receipt",
            status.acked_seq,
        );
        gauge(
            &mut r,
            "tongbu_agent_queue_depth_records",
            "Records stored but not yet acknowledged by the hub (head_seq - acked_seq)",
            status.queue_depth,
        );
        if let Some(at) = status.last_sync_ms {
            let age = u64::try_from(now_ms.saturating_sub(at) / 1000).unwrap_or(0);
            gauge(
                &mut r,
                "tongbu_agent_last_sync_age_seconds",
                "Seconds since the last successful sync (absent until the first one)",
                age,
            );
        }
        if let Some(class) = status.last_error_class() {
            let errors = Family::<ClassLabel, Gauge>::default();
            errors
                .get_or_create(&ClassLabel {
                    class: class.to_owned(),
                })
                .set(1);
            r.register(
                "tongbu_agent_last_error",
                "1, labelled with the code of the last error `status` shows (absent without one)",
                errors,
            );
        }
        if let Some(version) = status.policy_version {
            gauge(
                &mut r,
                "tongbu_agent_policy_version",
                "The cached policy version in use (absent until one is pulled)",
                version,
            );
        }
        gauge(
            &mut r,
            "tongbu_agent_records_held",
            "This agent's records whose latest outcome from the hub is held",
            status.held,
        );
        gauge(
            &mut r,
            "tongbu_agent_records_rejected",
            "This agent's records whose latest outcome from the hub is rejected",
            status.rejected,
        );
        gauge(
            &mut r,
            "tongbu_agent_hub_log_size",
            "The size of the last checkpoint of the hub's log this agent verified",
            status.hub_log_size,
        );
        r.register(
            "tongbu_agent_hub_log_findings",
            "Times the hub's log was caught shrinking, forking or missing this agent's head (kept in the outbox)",
            ConstCounter::new(status.hub_log_findings),
        );
        r.register(
            "tongbu_agent_records_taken_in",
            "Records the intake API stored since this process started",
            self.taken_in.clone(),
        );
        r.register(
            "tongbu_agent_sync_rounds",
            "Sync rounds this process ran (heartbeats included)",
            self.rounds.clone(),
        );
        r.register(
            "tongbu_agent_sync_retries",
            "Sync rounds that failed and were retried after a backoff",
            self.retries.clone(),
        );
        r.register(
            "tongbu_agent_sync_round_duration_seconds",
            "Seconds a sync round took, failed ones included",
            self.round_seconds.clone(),
        );
        let mut out = String::new();
        // Writing to a String cannot fail; an encoding error would be a bug in a label.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &r) {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        out
    }
}

fn gauge(r: &mut Registry, name: &str, help: &str, value: u64) {
    r.register(name, help, ConstGauge::new(value));
}

/// A sync step counted in [`AgentMetrics`]: each round, whether it failed, and its time.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    metrics: Arc<AgentMetrics>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, metrics: Arc<AgentMetrics>) -> Counted<S> {
        Counted { inner, metrics }
    }
}

impl<S: SyncStep> SyncStep for Counted<S> {
    fn sync_once(&mut self) -> impl Future<Output = Result<SyncSummary, SyncError>> + Send {
        let metrics = Arc::clone(&self.metrics);
        let round = self.inner.sync_once();
        async move {
            let started = std::time::Instant::now();
            let out = round.await;
            metrics.round(out.is_ok(), started.elapsed().as_secs_f64());
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            agent_id: Some("430112-0000000a".into()),
            county: Some("430112".into()),
            hub_url: None,
            hub_tls: None,
            head_seq: 12,
            acked_seq: 9,
            queue_depth: 3,
            last_sync: Some("1970-01-01T00:00:10Z".into()),
            last_sync_ms: Some(10_000),
            last_error: Some("network: could not reach the hub at https://h: refused".into()),
            policy_version: Some(2),
            held: 1,
            rejected: 4,
            hub_log_size: 40,
            hub_log_findings: 0,
            last_hub_log_finding: None,
        }
    }

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_owned)
    }

    #[test]
    fn renders_the_status_figures_and_the_process_counters() {
        let m = AgentMetrics::default();
        m.taken_in(5);
        m.round(true, 0.02);
        m.round(false, 0.5);
        let text = m.render(&status(), 75_500);
        let v = |s| value(&text, s);
        assert_eq!(v("tongbu_agent_head_seq").as_deref(), Some("12"));
        assert_eq!(v("tongbu_agent_acked_seq").as_deref(), Some("9"));
        assert_eq!(v("tongbu_agent_queue_depth_records").as_deref(), Some("3"));
        assert_eq!(
            v("tongbu_agent_last_sync_age_seconds").as_deref(),
            Some("65")
        );
        assert_eq!(
            v("tongbu_agent_last_error{class=\"network\"}").as_deref(),
            Some("1")
        );
        assert_eq!(v("tongbu_agent_policy_version").as_deref(), Some("2"));
        assert_eq!(v("tongbu_agent_records_held").as_deref(), Some("1"));
        assert_eq!(v("tongbu_agent_records_rejected").as_deref(), Some("4"));
        assert_eq!(v("tongbu_agent_hub_log_size").as_deref(), Some("40"));
        assert_eq!(
            v("tongbu_agent_hub_log_findings_total").as_deref(),
            Some("0")
        );
        assert_eq!(
            v("tongbu_agent_records_taken_in_total").as_deref(),
            Some("5")
        );
        assert_eq!(v("tongbu_agent_sync_rounds_total").as_deref(), Some("2"));
        assert_eq!(v("tongbu_agent_sync_retries_total").as_deref(), Some("1"));
        assert_eq!(
            v("tongbu_agent_sync_round_duration_seconds_count").as_deref(),
            Some("2")
        );
        let info = format!(
            "tongbu_agent_info{{agent_id=\"430112-0000000a\",county=\"430112\",version=\"{}\"}}",
            crate::AGENT_VERSION
        );
        assert_eq!(v(&info).as_deref(), Some("1"), "{text}");
        assert!(text.contains("# TYPE tongbu_agent_sync_retries_total counter\n"));
        assert!(text.contains("# TYPE tongbu_agent_queue_depth_records gauge\n"));
    }

    #[test]
    fn every_series_is_named_and_optional_ones_are_left_out_without_a_value() {
        let full = AgentMetrics::default().render(&status(), 10_000);
        let mut exposed: Vec<&str> = full
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        exposed.dedup();
        for name in &exposed {
            assert!(NAMES.contains(name), "{name} is not in NAMES");
        }
        for name in NAMES {
            assert!(exposed.contains(name), "{name} is not exposed:\n{full}");
        }

        let fresh = Status {
            last_sync: None,
            last_sync_ms: None,
            last_error: None,
            policy_version: None,
            ..status()
        };
        let text = AgentMetrics::default().render(&fresh, 10_000);
        assert!(
            !text.contains("tongbu_agent_last_sync_age_seconds"),
            "{text}"
        );
        assert!(!text.contains("tongbu_agent_last_error"), "{text}");
        assert!(!text.contains("tongbu_agent_policy_version"), "{text}");
        assert_eq!(value(&text, "tongbu_agent_head_seq").as_deref(), Some("12"));
    }
}
