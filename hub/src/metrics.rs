//! The hub's Prometheus metrics (`GET /metrics`, text format 0.0.4, encoded by
//! `prometheus-client`). Counters and the batch latency histogram live in memory and count since
//! the process started, and only what committed; gauges (agents by state, lag, queue depth and
//! silence per county, held records, policy version) are read from the store at each scrape, so
//! they are true after a restart. Every metric name is listed in `docs/METRICS.md`; the Grafana
//! dashboard (`deploy/grafana/tongbu.json`) is tested against [`NAMES`].

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tongbu_shared::CountyCode;
use tongbu_shared::protocol::{AgentState, Outcome};
use tongbu_shared::rules::{Rule, Severity};

use crate::admin::agent_row;
use crate::ingest::MALFORMED_RECORD;
use crate::ledger::Judged;
use crate::store::AgentRecord;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every series name the hub exposes (histograms by their `_bucket`, `_sum` and `_count`).
pub const NAMES: &[&str] = &[
    "tongbu_envelopes_received_total",
    "tongbu_envelopes_stored_total",
    "tongbu_batches_total",
    "tongbu_batches_refused_total",
    "tongbu_equivocations_total",
    "tongbu_log_rollbacks_seen_total",
    "tongbu_records_total",
    "tongbu_violations_total",
    "tongbu_ingest_batch_duration_seconds_bucket",
    "tongbu_ingest_batch_duration_seconds_sum",
    "tongbu_ingest_batch_duration_seconds_count",
    "tongbu_agents",
    "tongbu_county_lag_records",
    "tongbu_county_queue_depth_records",
    "tongbu_county_last_seen_age_seconds",
    "tongbu_records_held",
    "tongbu_policy_version",
];

const OUTCOMES: [Outcome; 3] = [Outcome::Accepted, Outcome::Held, Outcome::Rejected];
const STATES: [AgentState; 3] = [
    AgentState::Active,
    AgentState::Quarantined,
    AgentState::Revoked,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CountyLabel {
    county: String,
}

type U64Gauge = Gauge<u64, AtomicU64>;

/// The hub's counters and histogram. Cheap handles: every field shares its value with the
/// registry each scrape builds.
#[derive(Debug)]
pub struct Metrics {
    envelopes_received: Counter,
    envelopes_stored: Counter,
    batches: Counter,
    batches_refused: Counter,
    equivocations: Counter,
    log_rollbacks_seen: Counter,
    /// Decisions by outcome: a held record counts again when it is decided.
    decisions: Family<OutcomeLabel, Counter>,
    /// Violations and warnings by rule code, malformed bodies included.
    violations: Family<RuleLabel, Counter>,
    /// Seconds from an authenticated batch's arrival to its receipt (or refusal).
    batch_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let m = Metrics {
            envelopes_received: Counter::default(),
            envelopes_stored: Counter::default(),
            batches: Counter::default(),
            batches_refused: Counter::default(),
            equivocations: Counter::default(),
            log_rollbacks_seen: Counter::default(),
            decisions: Family::default(),
            violations: Family::default(),
            // 1 ms to 8 s: a small batch on a quiet hub to a full one behind a busy writer.
            batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        };
        // Every outcome and code is shown from the start, at zero, so a rate never starts
        // from a missing series.
        for outcome in OUTCOMES {
            let _ = m.decisions.get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            });
        }
        for rule in violation_codes() {
            let _ = m.violations.get_or_create(&RuleLabel { rule });
        }
        m
    }
}

/// The codes counted as violations: every rejecting or warning rule, and malformed bodies.
fn violation_codes() -> impl Iterator<Item = &'static str> {
    Rule::ALL
        .iter()
        .filter(|r| r.severity() != Severity::Hold)
        .map(|r| r.code())
        .chain([MALFORMED_RECORD])
}

/// Observes a batch's time in the latency histogram when dropped, however the batch ended.
#[must_use = "the batch is timed until this is dropped"]
#[derive(Debug)]
pub struct BatchTimer<'a> {
    histogram: &'a Histogram,
    started: Instant,
}

impl Drop for BatchTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Decisions that committed: each counts under its outcome (a held record counts again
    /// when decided), each violation code under its rule.
    pub fn judged(&self, judged: &[Judged]) {
        for j in judged {
            if let Some(outcome) = OUTCOMES.iter().find(|o| **o == j.verdict.outcome) {
                self.decisions
                    .get_or_create(&OutcomeLabel {
                        outcome: outcome.as_str(),
                    })
                    .inc();
            }
            for code in j.violation_codes() {
                // Only known codes get a series: the label set stays bounded.
                if let Some(rule) = violation_codes().find(|c| *c == code) {
                    self.violations.get_or_create(&RuleLabel { rule }).inc();
                }
            }
        }
    }

    /// An authenticated batch request carrying `envelopes` envelopes; timed until the
    /// returned guard is dropped.
    pub fn batch_received(&self, envelopes: usize) -> BatchTimer<'_> {
        self.batches.inc();
        self.envelopes_received.inc_by(envelopes as u64);
        BatchTimer {
            histogram: &self.batch_seconds,
            started: Instant::now(),
        }
    }

    pub fn batch_refused(&self) {
        self.batches_refused.inc();
    }

    pub fn envelopes_stored(&self, n: usize) {
        self.envelopes_stored.inc_by(n as u64);
    }

    pub fn equivocation(&self) {
        self.equivocations.inc();
    }

    /// An agent showed a checkpoint larger than the hub's whole log.
    pub fn log_rollback_seen(&self) {
        self.log_rollbacks_seen.inc();
    }

    /// The exposition text, with the gauges read from the store.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut r = Registry::default();
        // Counter names are registered without `_total`: the encoder appends it.
        r.register(
            "tongbu_envelopes_received",
            "Envelopes (records) received in authenticated batches, resends included",
            self.envelopes_received.clone(),
        );
        r.register(
            "tongbu_envelopes_stored",
            "New envelopes (records) durably stored",
            self.envelopes_stored.clone(),
        );
        r.register(
            "tongbu_batches",
            "Authenticated batch requests",
            self.batches.clone(),
        );
        r.register(
            "tongbu_batches_refused",
            "Authenticated batch requests refused",
            self.batches_refused.clone(),
        );
        r.register(
            "tongbu_equivocations",
            "Equivocations detected (agents quarantined)",
            self.equivocations.clone(),
        );
        r.register(
            "tongbu_log_rollbacks_seen",
            "Batches from agents holding a checkpoint larger than the hub's log (restored from an older copy)",
            self.log_rollbacks_seen.clone(),
        );
        r.register(
            "tongbu_records",
            "Record decisions by outcome (a held record counts again when it is decided)",
            self.decisions.clone(),
        );
        r.register(
            "tongbu_violations",
            "Rule violations and warnings by rule code",
            self.violations.clone(),
        );
        r.register(
            "tongbu_ingest_batch_duration_seconds",
            "Seconds from an authenticated batch's arrival to its signed receipt or refusal",
            self.batch_seconds.clone(),
        );
        gauges.register(&mut r);
        let mut out = String::new();
        // Writing to a String cannot fail; an encoding error would be a bug in a label.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &r) {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        out
    }
}

/// What the store says when metrics are scraped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Agents by state (states with none may be left out).
    pub agents: Vec<(AgentState, u64)>,
    /// Per county with enrolled agents, ordered by county code.
    pub counties: Vec<CountyGauges>,
    pub policy_version: u64,
    /// Records held now.
    pub held: u64,
}

/// A county's agents summed up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountyGauges {
    pub county: CountyCode,
    /// Records the county's agents hold that the hub has not acknowledged: the sum of the
    /// agents API's `lag` over every agent of the county, as the console's counties page sums it.
    pub lag: u64,
    /// The queue depths the county's agents last reported (summed like the console's).
    pub queue_depth: u64,
    /// Seconds since the least recently heard-from agent of the county that is not revoked
    /// was last seen (or enrolled, if it never was): one silent agent shows. 0 when every
    /// agent of the county is revoked (a revoked agent is silent by design).
    pub last_seen_age_secs: u64,
}

impl Gauges {
    /// The gauges from every agent's record at `now_ms`; lag as the agents API computes it.
    pub fn from_agents(
        agents: &[AgentRecord],
        now_ms: i64,
        policy_version: u64,
        held: u64,
    ) -> Gauges {
        let mut states: BTreeMap<&'static str, (AgentState, u64)> = BTreeMap::new();
        let mut counties: BTreeMap<&CountyCode, CountyGauges> = BTreeMap::new();
        for a in agents {
            states.entry(a.state.as_str()).or_insert((a.state, 0)).1 += 1;
            // The lag of the agents API and the console, from the one function both use.
            let row = agent_row(a);
            let c = counties.entry(&a.county).or_insert_with(|| CountyGauges {
                county: a.county.clone(),
                lag: 0,
                queue_depth: 0,
                last_seen_age_secs: 0,
            });
            c.lag = c.lag.saturating_add(row.lag);
            c.queue_depth = c.queue_depth.saturating_add(row.queue_depth);
            if a.state != AgentState::Revoked {
                let seen_ms = a.last_seen_ms.unwrap_or(a.enrolled_at_ms);
                let age = u64::try_from(now_ms.saturating_sub(seen_ms) / 1000).unwrap_or(0);
                c.last_seen_age_secs = c.last_seen_age_secs.max(age);
            }
        }
        Gauges {
            agents: states.into_values().collect(),
            counties: counties.into_values().collect(),
            policy_version,
            held,
        }
    }

    fn register(&self, r: &mut Registry) {
        let agents = Family::<StateLabel, U64Gauge>::default();
        for state in STATES {
            let n = self
                .agents
                .iter()
                .filter(|(s, _)| *s == state)
                .map(|(_, n)| n)
                .sum();
            agents
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(n);
        }
        r.register("tongbu_agents", "Enrolled agents by state", agents);

        let lag = Family::<CountyLabel, U64Gauge>::default();
        let depth = Family::<CountyLabel, U64Gauge>::default();
        let age = Family::<CountyLabel, U64Gauge>::default();
        for c in &self.counties {
            let label = CountyLabel {
                county: c.county.to_string(),
            };
            lag.get_or_create(&label).set(c.lag);
            depth.get_or_create(&label).set(c.queue_depth);
            age.get_or_create(&label).set(c.last_seen_age_secs);
        }
        r.register(
            "tongbu_county_lag_records",
            "Records a county's agents hold that the hub has not acknowledged (the agents API's lag, summed)",
            lag,
        );
        r.register(
            "tongbu_county_queue_depth_records",
            "Unacknowledged records a county's agents last reported in their heartbeats",
            depth,
        );
        r.register(
            "tongbu_county_last_seen_age_seconds",
            "Seconds since the least recently seen agent of a county (revoked ones left out) last reached the hub",
            age,
        );

        let held = U64Gauge::default();
        held.set(self.held);
        r.register("tongbu_records_held", "Records held now", held);
        let version = U64Gauge::default();
        version.set(self.policy_version);
        r.register(
            "tongbu_policy_version",
            "The current policy version",
            version,
        );
    }
}

#[cfg(test)]
mod tests {
    use tongbu_shared::{AgentId, Digest, KeyPair};

    use super::*;

    fn agent(id: &str, state: AgentState, acked: u64, head: u64, seen: Option<i64>) -> AgentRecord {
        let id = AgentId::parse(id).unwrap();
        AgentRecord {
            county: id.county(),
            id,
            public_key: KeyPair::from_seed(&[1; 32]).unwrap().public_key(),
            state,
            enrolled_at_ms: 1_000,
            acked_seq: acked,
            head_hash: Digest::GENESIS,
            reported_head_seq: head,
            queue_depth: head - acked,
            agent_version: None,
            last_error: None,
            last_seen_ms: seen,
            hostname: None,
        }
    }

    /// The value of the series `name` (with its labels, if any) in `text`.
    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_owned)
    }

    #[test]
    fn renders_counters_histogram_and_every_state() {
        let m = Metrics::default();
        drop(m.batch_received(3));
        m.envelopes_stored(2);
        m.judged(&[Judged {
            agent: AgentId::parse("430112-0000000a").unwrap(),
            seq: 1,
            verdict: crate::store::Verdict {
                outcome: Outcome::Rejected,
                codes: vec!["BUDGET_EXCEEDED".into(), "DATE_ORDER".into()],
                detail: None,
                policy_version: Some(1),
            },
            changed: false,
        }]);
        let text = m.render(&Gauges {
            agents: vec![(AgentState::Active, 4)],
            counties: Vec::new(),
            policy_version: 3,
            held: 2,
        });
        let v = |series| value(&text, series);
        assert_eq!(v("tongbu_envelopes_received_total").as_deref(), Some("3"));
        assert_eq!(v("tongbu_envelopes_stored_total").as_deref(), Some("2"));
        assert_eq!(v("tongbu_batches_total").as_deref(), Some("1"));
        assert_eq!(v("tongbu_batches_refused_total").as_deref(), Some("0"));
        assert_eq!(
            v("tongbu_records_total{outcome=\"rejected\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            v("tongbu_records_total{outcome=\"accepted\"}").as_deref(),
            Some("0")
        );
        assert_eq!(
            v("tongbu_violations_total{rule=\"BUDGET_EXCEEDED\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            v("tongbu_violations_total{rule=\"MALFORMED_RECORD\"}").as_deref(),
            Some("0")
        );
        assert!(!text.contains("AWAITING_CONTRACT"), "{text}");
        assert_eq!(v("tongbu_policy_version").as_deref(), Some("3"));
        assert_eq!(v("tongbu_records_held").as_deref(), Some("2"));
        assert_eq!(v("tongbu_agents{state=\"active\"}").as_deref(), Some("4"));
        assert_eq!(v("tongbu_agents{state=\"revoked\"}").as_deref(), Some("0"));
        assert_eq!(
            v("tongbu_ingest_batch_duration_seconds_count").as_deref(),
            Some("1")
        );
        assert_eq!(
            v("tongbu_ingest_batch_duration_seconds_bucket{le=\"+Inf\"}").as_deref(),
            Some("1")
        );
        assert!(text.contains("# TYPE tongbu_ingest_batch_duration_seconds histogram\n"));
        assert!(text.contains("# TYPE tongbu_records_total counter\n"));
        assert!(text.contains("# TYPE tongbu_agents gauge\n"));
    }

    #[test]
    fn every_series_exposed_is_named_and_every_name_is_exposed() {
        let m = Metrics::default();
        let agents = [agent(
            "430112-0000000a",
            AgentState::Active,
            1,
            2,
            Some(5_000),
        )];
        let text = m.render(&Gauges::from_agents(&agents, 9_000, 1, 0));
        let mut exposed: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        exposed.dedup();
        for name in &exposed {
            assert!(NAMES.contains(name), "{name} is not in NAMES");
        }
        for name in NAMES {
            assert!(exposed.contains(name), "{name} is not exposed:\n{text}");
        }
    }

    #[test]
    fn county_gauges_sum_the_agents_api_lag_and_age_leaves_revoked_agents_out() {
        let agents = [
            agent("430112-0000000a", AgentState::Active, 10, 25, Some(50_000)),
            agent(
                "430112-0000000b",
                AgentState::Quarantined,
                4,
                6,
                Some(20_000),
            ),
            // Never seen: its age counts from enrollment.
            agent("430112-0000000c", AgentState::Active, 0, 0, None),
            agent("431281-0000000d", AgentState::Revoked, 0, 99, Some(1_000)),
            // A head reported below the watermark (a restored agent) is no negative lag.
            agent("431281-0000000e", AgentState::Active, 7, 7, Some(60_000)),
        ];
        let g = Gauges::from_agents(&agents, 61_000, 2, 5);
        assert_eq!(
            g.agents,
            vec![
                (AgentState::Active, 3),
                (AgentState::Quarantined, 1),
                (AgentState::Revoked, 1)
            ]
        );
        let rows: Vec<(String, u64, u64, u64)> = g
            .counties
            .iter()
            .map(|c| {
                (
                    c.county.to_string(),
                    c.lag,
                    c.queue_depth,
                    c.last_seen_age_secs,
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("430112".to_owned(), 17, 17, 60),
                ("431281".to_owned(), 99, 99, 1)
            ]
        );
        let text = Metrics::default().render(&g);
        assert_eq!(
            value(&text, "tongbu_county_lag_records{county=\"430112\"}").as_deref(),
            Some("17")
        );
        assert_eq!(
            value(
                &text,
                "tongbu_county_last_seen_age_seconds{county=\"430112\"}"
            )
            .as_deref(),
            Some("60")
        );
        assert_eq!(
            value(&text, "tongbu_agents{state=\"quarantined\"}").as_deref(),
            Some("1")
        );
    }
}
