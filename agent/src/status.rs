//! The figures `status` reports (and `GET /status` returns): who this agent is, how far the
//! hub has acknowledged its chain, when it last synced and why it is stuck, if it is. The JSON
//! keys are part of the v1 interface contract. The agent's `GET /metrics` renders the same
//! [`Status`] (see [`crate::metrics`]), so the two never disagree.

use serde::Serialize;

use crate::clock::rfc3339;
use crate::outbox::{Outbox, OutboxError};
use crate::policy;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub agent_id: Option<String>,
    pub county: Option<String>,
    pub hub_url: Option<String>,
    /// How the hub's TLS certificate is trusted: `pinned sha256:<hex>`, `ca (N certificates)`,
    /// `plain` (http) or `unpinned` (an https enrollment from before pinning: calls refused).
    pub hub_tls: Option<String>,
    pub head_seq: u64,
    pub acked_seq: u64,
    pub queue_depth: u64,
    /// RFC 3339 UTC time of the last successful sync.
    pub last_sync: Option<String>,
    /// The same time in Unix milliseconds, for the metrics' age (not in the JSON).
    #[serde(skip)]
    pub last_sync_ms: Option<i64>,
    pub last_error: Option<String>,
    /// The cached policy bundle version in use (none until one is pulled, or when the cached
    /// bundle no longer verifies against the pinned hub key).
    pub policy_version: Option<u64>,
    /// This agent's records whose latest outcome from the hub is `held`.
    pub held: u64,
    /// This agent's records whose latest outcome from the hub is `rejected`.
    pub rejected: u64,
    /// The size of the last checkpoint of the hub's log this agent verified (0: none yet).
    pub hub_log_size: u64,
    /// How often the hub's log was caught shrinking, forking or missing this agent's head.
    pub hub_log_findings: u64,
    /// The latest such finding: when, what kind, and what was seen.
    pub last_hub_log_finding: Option<String>,
}

pub fn read(outbox: &Outbox) -> Result<Status, OutboxError> {
    let enrollment = outbox.enrollment()?;
    let head = outbox.head()?;
    let state = outbox.sync_state()?;
    let counts = outbox.outcome_counts()?;
    let hub_log = outbox.hub_log()?;
    let (hub_log_findings, last_finding) = outbox.hub_log_findings()?;
    let policy_version = match &enrollment {
        Some(e) => policy::cached_version(outbox, &e.hub_public_key)?,
        None => None,
    };
    Ok(Status {
        agent_id: enrollment.as_ref().map(|e| e.agent_id.to_string()),
        county: enrollment.as_ref().map(|e| e.county.to_string()),
        hub_tls: enrollment.as_ref().map(|e| e.hub_url.trust().describe()),
        hub_url: enrollment.map(|e| e.hub_url.to_string()),
        head_seq: head.seq,
        acked_seq: state.acked_seq,
        queue_depth: head.seq.saturating_sub(state.acked_seq),
        last_sync: state.last_sync_ms.map(rfc3339),
        last_sync_ms: state.last_sync_ms,
        last_error: state.last_error,
        policy_version,
        held: counts.held,
        rejected: counts.rejected,
        hub_log_size: hub_log.map_or(0, |t| t.tree_size),
        hub_log_findings,
        last_hub_log_finding: last_finding
            .map(|f| format!("{} {}: {}", rfc3339(f.at_ms), f.kind, f.detail)),
    })
}

impl Status {
    /// The code that opens `last_error` (`network`, `certificate_mismatch`, `agent_quarantined`,
    /// `policy_rollback`, `outbox`, ...: every sync error's text starts with its code), `other`
    /// when it does not start with one, none without an error. A bounded label for metrics.
    pub fn last_error_class(&self) -> Option<&str> {
        self.last_error.as_deref().map(error_class)
    }
}

/// The leading `code:` of a one-line error, or `other`.
pub fn error_class(line: &str) -> &str {
    let code = line.split_once(':').map_or("", |(code, _)| code);
    let well_formed = (1..=40).contains(&code.len())
        && code.starts_with(|c: char| c.is_ascii_lowercase())
        && code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if well_formed { code } else { "other" }
}

impl std::fmt::Display for Status {
    /// A two-column table for people.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        let rows = [
            ("agent_id", or_dash(&self.agent_id)),
            ("county", or_dash(&self.county)),
            ("hub_url", or_dash(&self.hub_url)),
            ("hub_tls", or_dash(&self.hub_tls)),
            ("head_seq", self.head_seq.to_string()),
            ("acked_seq", self.acked_seq.to_string()),
            ("queue_depth", self.queue_depth.to_string()),
            ("last_sync", or_dash(&self.last_sync)),
            ("last_error", or_dash(&self.last_error)),
            (
                "policy_version",
                or_dash(&self.policy_version.map(|v| v.to_string())),
            ),
            ("held", self.held.to_string()),
            ("rejected", self.rejected.to_string()),
            ("hub_log_size", self.hub_log_size.to_string()),
            ("hub_log_findings", self.hub_log_findings.to_string()),
            ("last_hub_log_finding", or_dash(&self.last_hub_log_finding)),
        ];
        for (name, value) in rows {
            writeln!(f, "{name:<20} {value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_contract_keys_and_the_log_figures() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        let status = read(&outbox).unwrap();
        let json = serde_json::to_value(&status).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "acked_seq",
                "agent_id",
                "county",
                "head_seq",
                "held",
                "hub_log_findings",
                "hub_log_size",
                "hub_tls",
                "hub_url",
                "last_error",
                "last_hub_log_finding",
                "last_sync",
                "policy_version",
                "queue_depth",
                "rejected"
            ]
        );
        assert!(status.to_string().contains("queue_depth          0"));
    }

    #[test]
    fn error_classes_are_the_leading_code_or_other() {
        assert_eq!(
            error_class("network: could not reach the hub at https://h: refused"),
            "network"
        );
        assert_eq!(
            error_class("certificate_mismatch: the hub at https://h presented ..."),
            "certificate_mismatch"
        );
        assert_eq!(
            error_class("http_502: the hub answered HTTP 502"),
            "http_502"
        );
        assert_eq!(error_class("invalid hub URL \"x\": no host"), "other");
        assert_eq!(error_class("Network: capitalised"), "other");
        assert_eq!(error_class("no colon at all"), "other");
        assert_eq!(error_class(": empty"), "other");
    }
}
