//! The sync step against a tiny fake hub (axum on 127.0.0.1:0) that speaks the v1 batches and
//! watermark calls with the shared types and a fixed hub key: everything is sent, sync resumes
//! when the hub loses records, a resend is idempotent, and unsigned or forged receipts and
//! diverged chains are refused without touching the local acknowledgement.

// A test crate: helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{Harness, ReceiptMode, agent_id, agent_key, append_payments, harness, payment};
use tongbu_agent::client::ClientError;
use tongbu_agent::clock::SystemClock;
use tongbu_agent::outbox::{Outbox, SharedOutbox};
use tongbu_agent::sync::{Divergence, NextStep, SyncError, Syncer};
use tongbu_shared::crypto::Digest;
use tongbu_shared::envelope::Envelope;
use tongbu_shared::protocol::AgentState;

impl Harness {
    fn hub_chain(&self) -> Vec<Envelope> {
        self.hub.chain()
    }

    fn local_chain(&self) -> Vec<Envelope> {
        self.outbox
            .envelopes_after(&agent_id(), 0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(e, _)| e)
            .collect()
    }

    fn acked(&self) -> u64 {
        self.outbox.sync_state().unwrap().acked_seq
    }

    fn last_error(&self) -> Option<String> {
        self.outbox.sync_state().unwrap().last_error
    }
}

#[tokio::test]
async fn sync_once_sends_everything_in_batches() {
    let mut h = harness(1200, 500).await;
    let summary = h.syncer.sync_once().await.unwrap();
    assert_eq!(
        (summary.sent, summary.acked_seq, summary.head_seq),
        (1200, 1200, 1200)
    );
    assert_eq!(h.hub_chain(), h.local_chain());
    assert_eq!(h.acked(), 1200);

    let batches = h.hub.lock().batches.clone();
    let sizes: Vec<usize> = batches.iter().map(|(n, _)| *n).collect();
    assert_eq!(sizes, [500, 500, 200]);
    let depths: Vec<u64> = batches.iter().map(|(_, hb)| hb.queue_depth).collect();
    assert_eq!(depths, [700, 200, 0]);
    assert!(batches.iter().all(|(_, hb)| hb.head_seq == 1200));

    // Outcomes and codes from the receipts are stored beside the records.
    let db = rusqlite::Connection::open(h._dir.path().join("outbox.db")).unwrap();
    let (outcome, codes): (String, Option<String>) = db
        .query_row(
            "SELECT outcome, codes FROM envelopes WHERE seq = 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(outcome, "accepted");
    assert_eq!(codes.as_deref(), Some("PAID_WITHOUT_EVALUATION"));
    let state = h.outbox.sync_state().unwrap();
    assert!(state.last_sync_ms.is_some() && state.last_error.is_none());

    // Nothing left: the next step still sends one empty batch, a heartbeat.
    let summary = h.syncer.sync_once().await.unwrap();
    assert_eq!(summary.sent, 0);
    let batches = h.hub.lock().batches.clone();
    assert_eq!(batches.len(), 4);
    assert_eq!(batches[3].0, 0);
}

#[tokio::test]
async fn sync_resumes_after_the_hub_loses_records() {
    let mut h = harness(10, 500).await;
    h.syncer.sync_once().await.unwrap();
    // The hub is restored from an older backup: it holds only 4 records now.
    h.hub.lock().chain.truncate(4);
    append_payments(&mut h.outbox, &agent_key(), 11, 12);

    // The agent sends 11.., the hub answers chain_gap, the agent reads the watermark (4),
    // moves its acknowledgement down and sends 5..=12 again.
    let summary = h.syncer.sync_once().await.unwrap();
    assert_eq!(summary.acked_seq, 12);
    // The refused batch does not count as sent.
    assert_eq!(summary.sent, 8);
    assert_eq!(h.hub_chain(), h.local_chain());
    assert_eq!(h.acked(), 12);
}

#[tokio::test]
async fn a_fresh_start_moves_the_acknowledgement_up_to_the_watermark() {
    let mut h = harness(10, 500).await;
    h.syncer.sync_once().await.unwrap();
    // Our acknowledgement was lost (say, a crash before it was applied).
    h.outbox.set_acked(3, h.local_chain()[2].hash()).unwrap();
    let hub = h.hub.clone();
    let before = hub.lock().batches.len();
    // Any error makes the next step read the watermark first; simulate a restart instead.
    let mut h2 = h;
    h2.syncer = fresh_syncer(&h2).await;
    let summary = h2.syncer.sync_once().await.unwrap();
    assert_eq!((summary.sent, summary.acked_seq), (0, 10));
    let after = hub.lock().batches.clone();
    assert_eq!(after.len(), before + 1, "only a heartbeat was sent");
}

async fn fresh_syncer(h: &Harness) -> Syncer {
    let enrollment = h.outbox.enrollment().unwrap().unwrap();
    let path = h._dir.path().join("outbox.db");
    Syncer::new(
        SharedOutbox::new(Outbox::open(&path).unwrap()),
        &enrollment,
        Arc::new(agent_key()),
        Arc::new(SystemClock),
        500,
    )
    .unwrap()
}

#[tokio::test]
async fn a_resend_is_acknowledged_again_idempotently() {
    let mut h = harness(10, 4).await;
    h.syncer.sync_once().await.unwrap();
    let chain = h.hub_chain();
    // The step believes nothing is acknowledged (no watermark read in between): it resends.
    h.outbox.set_acked(0, Digest::GENESIS).unwrap();
    // The first batch (1..=4) is a resend; the hub acknowledges everything it holds (10).
    let summary = h.syncer.sync_once().await.unwrap();
    assert_eq!((summary.sent, summary.acked_seq), (4, 10));
    assert_eq!(h.hub_chain(), chain);
    assert_eq!(h.hub.lock().state, AgentState::Active);
    assert_eq!(h.acked(), 10);
}

#[tokio::test]
async fn forged_or_unsigned_receipts_are_refused() {
    for mode in [ReceiptMode::Forged, ReceiptMode::Unsigned] {
        let mut h = harness(5, 500).await;
        h.hub.lock().mode = mode;
        let err = h.syncer.sync_once().await.unwrap_err();
        match (&err, mode) {
            (SyncError::Hub(ClientError::BadHubSignature { .. }), ReceiptMode::Forged) => {}
            (SyncError::Hub(ClientError::BadReply { .. }), ReceiptMode::Unsigned) => {}
            _ => panic!("{mode:?}: unexpected error {err}"),
        }
        assert_eq!(err.next_step(), NextStep::Pause);
        // Nothing was taken on trust.
        assert_eq!(h.acked(), 0);
        let last_error = h.last_error().unwrap();
        assert!(
            last_error.starts_with("bad_hub_signature") || last_error.starts_with("bad_reply"),
            "{last_error}"
        );

        // Once the hub signs properly again, the step recovers and clears the error.
        h.hub.lock().mode = ReceiptMode::Honest;
        h.syncer.sync_once().await.unwrap();
        assert_eq!(h.acked(), 5);
        assert_eq!(h.last_error(), None);
    }
}

#[tokio::test]
async fn a_fork_stops_syncing_and_keeps_local_records() {
    let mut h = harness(5, 500).await;
    // The hub holds a different, validly signed history for this agent.
    let mut other = Vec::new();
    let mut prev = Digest::GENESIS;
    for seq in 1..=3 {
        let e = Envelope::sign(&agent_key(), agent_id(), seq, prev, payment(100 + seq));
        prev = e.hash();
        other.push(e);
    }
    h.hub.lock().chain = other;
    let err = h.syncer.sync_once().await.unwrap_err();
    assert!(
        matches!(err, SyncError::Diverged(Divergence::Fork { seq: 3, .. })),
        "{err}"
    );
    assert_eq!(err.next_step(), NextStep::Pause);
    assert!(h.last_error().unwrap().starts_with("fork: at seq 3"));
    assert_eq!(h.local_chain().len(), 5);
    assert!(h.hub.lock().batches.is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_hub_beyond_the_local_head_stops_syncing() {
    let mut h = harness(8, 500).await;
    h.syncer.sync_once().await.unwrap();
    // The agent's disk is "restored from an older backup": a fresh outbox with 5 records.
    let mut h2 = harness(5, 500).await;
    h2.hub.lock().chain = h.hub_chain();
    let err = h2.syncer.sync_once().await.unwrap_err();
    assert!(
        matches!(
            err,
            SyncError::Diverged(Divergence::HubAhead {
                hub_seq: 8,
                local_head: 5
            })
        ),
        "{err}"
    );
    assert!(h2.last_error().unwrap().starts_with("hub_ahead:"));
    assert_eq!(h2.acked(), 0);
}

#[tokio::test]
async fn a_quarantined_agent_does_not_send() {
    let mut h = harness(3, 500).await;
    h.hub.lock().state = AgentState::Quarantined;
    let err = h.syncer.sync_once().await.unwrap_err();
    assert!(
        matches!(err, SyncError::Halted(AgentState::Quarantined)),
        "{err}"
    );
    assert!(h.last_error().unwrap().starts_with("agent_quarantined:"));
    assert!(h.hub.lock().batches.is_empty());
}

#[tokio::test]
async fn an_unreachable_hub_is_a_transient_error() {
    let mut h = harness(3, 500).await;
    // Point the step at a port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap();
    drop(listener);
    let mut enrollment = h.outbox.enrollment().unwrap().unwrap();
    enrollment.hub_url = tongbu_agent::tls::HubUrl::plain(&format!("http://{dead}")).unwrap();
    h.syncer = Syncer::new(
        SharedOutbox::new(Outbox::open(&h._dir.path().join("outbox.db")).unwrap()),
        &enrollment,
        Arc::new(agent_key()),
        Arc::new(SystemClock),
        500,
    )
    .unwrap();
    let err = h.syncer.sync_once().await.unwrap_err();
    assert!(
        matches!(err, SyncError::Hub(ClientError::Network { .. })),
        "{err}"
    );
    assert_eq!(err.next_step(), NextStep::Retry);
    let state = h.outbox.sync_state().unwrap();
    let last_error = state.last_error.unwrap();
    println!("{last_error}");
    assert!(last_error.starts_with("network:"), "{last_error}");
    assert!(state.last_attempt_ms.is_some());
}

#[tokio::test]
async fn an_altered_record_stops_sync_after_the_intact_prefix() {
    let mut h = harness(20, 500).await;
    let db = rusqlite::Connection::open(h._dir.path().join("outbox.db")).unwrap();
    db.execute(
        "UPDATE envelopes SET body = replace(body, '\"amount_fen\":100', '\"amount_fen\":900') WHERE seq = 7",
        [],
    )
    .unwrap();
    let err = h.syncer.sync_once().await.unwrap_err();
    assert!(
        matches!(
            err,
            SyncError::LocalChain {
                code: "bad_signature",
                seq: 7,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.next_step(), NextStep::Pause);
    // The six intact records before it reached the hub; nothing altered did.
    assert_eq!(h.hub_chain(), h.local_chain()[..6].to_vec());
    assert_eq!(h.acked(), 6);
    assert!(h.last_error().unwrap().starts_with("bad_signature: seq 7:"));
}

#[tokio::test]
async fn clock_skew_is_reported_with_its_direction_and_never_re_enrolls() {
    let mut h = harness(3, 10).await;
    h.hub.lock().skew_seconds = Some(-400);
    let err = h.syncer.sync_once().await.unwrap_err();
    assert_eq!(err.next_step(), NextStep::Retry, "{err}");
    let last = h.last_error().unwrap();
    assert!(
        last.starts_with("clock_skew: this machine's clock is 400 s ahead of the hub's"),
        "{last}"
    );
    h.hub.lock().skew_seconds = Some(301);
    h.syncer.sync_once().await.unwrap_err();
    let last = h.last_error().unwrap();
    assert!(
        last.starts_with("clock_skew: this machine's clock is 301 s behind the hub's"),
        "{last}"
    );
    // Nothing was sent, the enrollment stands and the agent never tried to enroll again.
    assert_eq!(h.acked(), 0);
    assert_eq!(h.hub.lock().enrollments, 0);
    assert_eq!(h.outbox.enrollment().unwrap().unwrap().agent_id, agent_id());

    // Once the clock is right, the same agent syncs everything.
    h.hub.lock().skew_seconds = None;
    h.syncer.sync_once().await.unwrap();
    assert_eq!(h.acked(), 3);
    assert_eq!(h.last_error(), None);
}
