//! The policy cache and the hub's outcomes, against the fake hub: the agent pulls and caches
//! the signed policy, asks conditionally afterwards (304), pulls again when a receipt names a
//! new version, refuses rolled-back, conflicting and forged bundles while records keep
//! flowing, applies outcome updates and sends the cursor back, and reports it all in `status`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Harness, PolicyMode, agent_key, append_payments, bundle, harness, hub_key};
use tongbu_agent::policy::{self, PolicyPull};
use tongbu_agent::status;
use tongbu_shared::protocol::Outcome;

impl Harness {
    fn cached_version(&self) -> Option<u64> {
        policy::cached_version(&self.outbox, &hub_key().public_key()).unwrap()
    }

    fn cached_payload(&self) -> Vec<u8> {
        self.outbox.latest_policy().unwrap().unwrap().payload
    }

    fn last_error(&self) -> Option<String> {
        self.outbox.sync_state().unwrap().last_error
    }

    fn policy_statuses(&self) -> Vec<(Option<String>, u16)> {
        self.hub
            .lock()
            .policy_requests
            .iter()
            .map(|r| (r.if_none_match.clone(), r.status))
            .collect()
    }
}

#[tokio::test]
async fn the_policy_is_cached_then_asked_for_conditionally() {
    let mut h = harness(2, 500).await;
    assert_eq!(h.cached_version(), None);

    // None cached: the first step pulls, verifies and caches it.
    let summary = h.syncer.sync_once().await.unwrap();
    assert_eq!(
        summary.policy,
        Some(PolicyPull::Updated { from: None, to: 1 })
    );
    assert_eq!(summary.problem, None);
    assert_eq!(h.cached_version(), Some(1));
    let cached = policy::load(&h.outbox, &hub_key().public_key())
        .unwrap()
        .unwrap();
    assert_eq!(cached.bundle, bundle(1));

    // The receipt named the cached version: no pull. When asked, the pull is conditional.
    let summary = h.syncer.sync_once().await.unwrap();
    assert_eq!(summary.policy, None);
    h.syncer.want_policy();
    let summary = h.syncer.sync_once().await.unwrap();
    assert_eq!(summary.policy, Some(PolicyPull::Unchanged { version: 1 }));
    assert_eq!(
        h.policy_statuses(),
        [(None, 200), (Some("\"1\"".to_owned()), 304)]
    );

    // The hub publishes version 2: the next receipt says so, and the step after it pulls.
    h.hub.lock().policy = Some(bundle(2));
    let summary = h.syncer.sync_once().await.unwrap();
    assert_eq!(summary.policy, None);
    let summary = h.syncer.sync_once().await.unwrap();
    assert_eq!(
        summary.policy,
        Some(PolicyPull::Updated {
            from: Some(1),
            to: 2
        })
    );
    assert_eq!(h.cached_version(), Some(2));
    assert_eq!(
        h.policy_statuses().last().unwrap(),
        &(Some("\"1\"".to_owned()), 200)
    );
    let status = status::read(&h.outbox).unwrap();
    assert_eq!(status.policy_version, Some(2));
    assert_eq!(status.last_error, None);
}

#[tokio::test]
async fn rolled_back_conflicting_and_forged_bundles_are_refused() {
    let cases = [
        (
            PolicyMode::Rollback,
            "policy_rollback: the hub offers policy version 1, older than the cached version 2",
        ),
        (
            PolicyMode::Conflict,
            "policy_conflict: the hub offers policy version 2 with content that differs",
        ),
        (
            PolicyMode::Forged,
            "bad_hub_signature: the hub's policy bundle is not signed by the pinned hub key",
        ),
    ];
    for (mode, expected) in cases {
        let mut h = harness(3, 500).await;
        h.hub.lock().policy = Some(bundle(2));
        h.syncer.sync_once().await.unwrap();
        let good = h.cached_payload();
        assert_eq!(h.cached_version(), Some(2));

        h.hub.lock().policy_mode = mode;
        append_payments(&mut h.outbox, &agent_key(), 4, 5);
        h.syncer.want_policy();
        // Records still flow; the refusal is the step's problem and the last error.
        let summary = h.syncer.sync_once().await.unwrap();
        assert_eq!(summary.acked_seq, 5, "{mode:?}");
        let problem = summary.problem.unwrap();
        assert!(problem.starts_with(expected), "{mode:?}: {problem}");
        assert_eq!(h.last_error().as_deref(), Some(problem.as_str()));
        assert_eq!(h.cached_version(), Some(2), "{mode:?}");
        assert_eq!(h.cached_payload(), good, "{mode:?}");
        let status = status::read(&h.outbox).unwrap();
        assert_eq!(status.policy_version, Some(2));
        assert!(status.last_error.unwrap().starts_with(expected));

        // The receipt names a version other than the cached one: every step asks again and
        // keeps reporting, until the hub serves the cached bundle again.
        let summary = h.syncer.sync_once().await.unwrap();
        assert!(summary.problem.unwrap().starts_with(expected), "{mode:?}");
        h.hub.lock().policy_mode = PolicyMode::Honest;
        h.syncer.want_policy();
        let summary = h.syncer.sync_once().await.unwrap();
        assert_eq!(summary.problem, None, "{mode:?}");
        assert_eq!(h.last_error(), None, "{mode:?}");
        assert_eq!(h.cached_payload(), good, "{mode:?}");
    }
}

#[tokio::test]
async fn a_hub_without_a_policy_is_no_error() {
    let mut h = harness(1, 500).await;
    h.hub.lock().policy = None;
    let summary = h.syncer.sync_once().await.unwrap();
    assert_eq!(summary.policy, Some(PolicyPull::NoneOffered));
    assert_eq!(summary.problem, None);
    // The receipt said the hub has none (version 0): no more asking.
    let summary = h.syncer.sync_once().await.unwrap();
    assert_eq!(summary.policy, None);
    assert_eq!(h.policy_statuses().len(), 1);
    assert_eq!(status::read(&h.outbox).unwrap().policy_version, None);
}

#[tokio::test]
async fn outcome_updates_are_applied_and_the_cursor_sent_back() {
    let mut h = harness(4, 500).await;
    {
        let mut hub = h.hub.lock();
        hub.verdicts
            .insert(1, (Outcome::Held, vec!["AWAITING_CONTRACT".into()]));
        hub.verdicts
            .insert(2, (Outcome::Held, vec!["AWAITING_CONTRACT".into()]));
        hub.verdicts
            .insert(3, (Outcome::Rejected, vec!["CONTRACT_EXCEEDED".into()]));
    }
    h.syncer.sync_once().await.unwrap();
    let status = status::read(&h.outbox).unwrap();
    assert_eq!(
        (status.held, status.rejected, status.policy_version),
        (2, 1, Some(1))
    );
    assert_eq!(h.outbox.sync_state().unwrap().outcome_cursor, 0);

    // The contract arrives at the hub from another agent: seq 1 is accepted; seq 2 is
    // rejected after the grace period.
    {
        let mut hub = h.hub.lock();
        hub.change_outcome(1, Outcome::Accepted, &[]);
        hub.change_outcome(2, Outcome::Rejected, &["UNKNOWN_CONTRACT"]);
    }
    h.syncer.sync_once().await.unwrap();
    let status = status::read(&h.outbox).unwrap();
    assert_eq!((status.held, status.rejected), (0, 2));
    assert_eq!(h.outbox.sync_state().unwrap().outcome_cursor, 2);
    let db = rusqlite::Connection::open(h._dir.path().join("outbox.db")).unwrap();
    let (outcome, codes, detail): (String, String, String) = db
        .query_row(
            "SELECT outcome, codes, detail FROM envelopes WHERE seq = 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (outcome.as_str(), codes.as_str(), detail.as_str()),
        (
            "rejected",
            "UNKNOWN_CONTRACT",
            "UNKNOWN_CONTRACT: changed by the fake hub"
        )
    );

    // Every heartbeat carries the cursor the agent has recorded.
    h.syncer.sync_once().await.unwrap();
    let cursors: Vec<u64> = h
        .hub
        .lock()
        .batches
        .iter()
        .map(|(_, hb)| hb.outcome_cursor)
        .collect();
    assert_eq!(cursors, [0, 0, 2]);
}

#[tokio::test]
async fn a_long_run_of_updates_is_collected_in_one_step() {
    let mut h = harness(1, 500).await;
    h.syncer.sync_once().await.unwrap();
    {
        let mut hub = h.hub.lock();
        for i in 0..2500 {
            let outcome = if i % 2 == 0 {
                Outcome::Held
            } else {
                Outcome::Rejected
            };
            hub.change_outcome(1, outcome, &[]);
        }
    }
    let before = h.hub.lock().batches.len();
    h.syncer.sync_once().await.unwrap();
    // Pages of MAX_OUTCOME_UPDATES: three heartbeats, each sending the cursor so far.
    let cursors: Vec<u64> = h.hub.lock().batches[before..]
        .iter()
        .map(|(_, hb)| hb.outcome_cursor)
        .collect();
    assert_eq!(cursors, [0, 1000, 2000]);
    assert_eq!(h.outbox.sync_state().unwrap().outcome_cursor, 2500);
    assert_eq!(status::read(&h.outbox).unwrap().rejected, 1);
}
