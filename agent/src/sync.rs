//! Syncing the chain to the hub: [`Syncer::sync_once`] is one step (pull the policy when the
//! hub has a version other than the cached one, reconcile with the hub's watermark when
//! needed, then send batches in seq order until nothing is left, applying each verified
//! receipt); [`run_until_stopped`] repeats it with backoff, a heartbeat and wake-ups.
//!
//! Invariants: the local chain is never rewritten to please the hub; `acked_seq` moves only to
//! a point where the hub's signed hash equals the local one (down when the hub lost records,
//! up when an acknowledgement was lost), in a transaction with the receipt's outcomes, outcome
//! updates and outcome cursor; a fork or a hub that holds more than this agent stops sending
//! and is reported in `last_error`. A refused policy bundle does not stop records from
//! flowing: it is reported in `last_error` after a round that sent everything.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::Notify;
use tokio::time::Instant;
use tongbu_shared::KeyPair;
use tongbu_shared::checkpoint::{self, Finding, Trusted};
use tongbu_shared::crypto::{Digest, PublicKey};
use tongbu_shared::envelope::Envelope;
use tongbu_shared::protocol::{
    AgentState, BatchRequest, ErrorCode, Heartbeat, MAX_BATCH_ENVELOPES, MAX_OUTCOME_UPDATES,
    Receipt,
};
use tracing::{debug, error, info, warn};

use crate::client::{ClientError, Credentials, HubClient};
use crate::clock::Clock;
use crate::outbox::{Enrollment, Head, HubLogUpdate, OutboxError, SharedOutbox};
use crate::policy::{self, PolicyPull, PullError};
use crate::round::RoundReport;

/// Records per batch unless configured otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 500;
/// How often one `sync_once` may re-read the watermark after the hub asked it to resync.
const MAX_RESYNCS_PER_STEP: u32 = 3;
/// How many extra heartbeats one `sync_once` may send to collect a long run of outcome updates.
const MAX_UPDATE_ROUNDS_PER_STEP: u32 = 100;

/// How the local chain and the hub's copy of it disagree. Neither is repaired automatically:
/// records are facts, so a person must look.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Divergence {
    #[error(
        "fork: at seq {seq} the hub holds a different record (hub hash {hub}, local hash {local}); local records are kept and nothing is sent until an admin investigates"
    )]
    Fork {
        seq: u64,
        local: Digest,
        hub: Digest,
    },
    #[error(
        "hub_ahead: the hub holds {hub_seq} records of this agent but the local chain ends at seq {local_head}; this outbox looks restored from an older backup, so nothing is sent until an admin investigates"
    )]
    HubAhead { hub_seq: u64, local_head: u64 },
}

/// Where to resume after reading the hub's watermark: the hub's acked seq when the hub's hash
/// there equals the local one. `local_hash_at_hub_seq` is the local hash at `hub_acked`
/// (genesis for 0), `None` when the local chain does not reach it.
pub fn reconcile(
    hub_acked: u64,
    hub_hash: Digest,
    local_head: u64,
    local_hash_at_hub_seq: Option<Digest>,
) -> Result<u64, Divergence> {
    let ahead = Divergence::HubAhead {
        hub_seq: hub_acked,
        local_head,
    };
    if hub_acked > local_head {
        return Err(ahead);
    }
    match local_hash_at_hub_seq {
        Some(local) if local == hub_hash => Ok(hub_acked),
        Some(local) => Err(Divergence::Fork {
            seq: hub_acked,
            local,
            hub: hub_hash,
        }),
        None => Err(ahead),
    }
}

/// Why a verified receipt still cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptProblem {
    /// The hub acknowledges less than was sent or already acknowledged: it lost records.
    #[error("the hub acknowledges seq {hub} but seq {sent} was sent")]
    Behind { hub: u64, sent: u64 },
    #[error("the hub acknowledges seq {seq} with a hash that differs from the local chain")]
    Mismatch { seq: u64 },
    #[error("the hub acknowledges seq {seq}, past the local head")]
    PastHead { seq: u64 },
}

/// Checks a receipt against what was sent: it must acknowledge at least `sent_through` (the
/// last seq sent, or the acked seq for an empty batch) with the local chain's hash there.
pub fn check_receipt(
    sent_through: u64,
    receipt_acked: u64,
    receipt_hash: Digest,
    local_hash_at_receipt: Option<Digest>,
) -> Result<(), ReceiptProblem> {
    if receipt_acked < sent_through {
        return Err(ReceiptProblem::Behind {
            hub: receipt_acked,
            sent: sent_through,
        });
    }
    match local_hash_at_receipt {
        None => Err(ReceiptProblem::PastHead { seq: receipt_acked }),
        Some(h) if h != receipt_hash => Err(ReceiptProblem::Mismatch { seq: receipt_acked }),
        Some(_) => Ok(()),
    }
}

/// Why a sync step failed. `Display` is the one-line `last_error`, its code first.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("outbox: {0}")]
    Outbox(#[from] OutboxError),
    #[error("{0}")]
    Hub(#[from] ClientError),
    #[error("{0}")]
    Diverged(#[from] Divergence),
    #[error(
        "agent_{0}: the hub lists this agent as {0}; nothing is sent until an admin reinstates it"
    )]
    Halted(AgentState),
    #[error("bad_receipt: {0}; not applied")]
    BadReceipt(String),
    /// A stored record that cannot be sent as it is: `code` is `bad_signature` when its
    /// signature no longer verifies, `local_chain` for a gap or a broken link.
    #[error(
        "{code}: seq {seq}: {problem}; the outbox was altered on disk, run `tongbu-agent verify`"
    )]
    LocalChain {
        code: &'static str,
        seq: u64,
        problem: String,
    },
}

/// What the sync loop does after a failed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// A passing problem (network, hub busy, clock): retry with growing delays.
    Retry,
    /// A person must act (fork, quarantine, altered disk): retry only at the slowest pace.
    Pause,
}

impl SyncError {
    pub fn next_step(&self) -> NextStep {
        match self {
            SyncError::Outbox(_) | SyncError::BadReceipt(_) => NextStep::Retry,
            SyncError::Hub(e) if e.is_transient() => NextStep::Retry,
            SyncError::Hub(e) if e.code().is_some_and(ErrorCode::needs_resync) => NextStep::Retry,
            SyncError::Hub(_)
            | SyncError::Diverged(_)
            | SyncError::Halted(_)
            | SyncError::LocalChain { .. } => NextStep::Pause,
        }
    }
}

/// What one successful step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSummary {
    /// Envelopes sent (resends included).
    pub sent: u64,
    pub acked_seq: u64,
    pub head_seq: u64,
    pub duration: Duration,
    /// What the policy pull did, when one ran and worked.
    pub policy: Option<PolicyPull>,
    /// A problem beside the records (a policy bundle refused or not reachable), also kept as
    /// the last error.
    pub problem: Option<String>,
}

/// The least time between the end of a sync round and the start of one that new intake woke.
pub const STREAM_LINGER: Duration = Duration::from_millis(50);

/// Batches in flight at once while catching up: the hub checks the signatures of one while
/// it writes the other.
const PIPELINE_DEPTH: usize = 2;
/// Receipts in a row after which a step that follows a failed one sends two batches at once.
const PIPELINE_AFTER: u32 = 4;

/// A batch sent and not yet answered.
struct Flight {
    /// The last seq sent, and its hash.
    sent_through: u64,
    sent_hash: Digest,
    count: u64,
    /// The outcome cursor the request named.
    outcome_cursor: u64,
    answer: tokio::task::JoinHandle<Result<Receipt, ClientError>>,
}

/// What [`Syncer::launch`] did.
enum Launch {
    Sent(Flight),
    /// The first record of the batch cannot be sent as stored.
    Damaged(SyncError),
}

/// The batches in flight, oldest first; those left when it is dropped are abandoned (the
/// hub stores or refuses them whole, and a resend is acknowledged again).
#[derive(Default)]
struct Flights(std::collections::VecDeque<Flight>);

impl Flights {
    fn push(&mut self, flight: Flight) {
        self.0.push_back(flight);
    }

    fn pop(&mut self) -> Option<Flight> {
        self.0.pop_front()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// The last seq sent so far, and its hash.
    fn tail(&self) -> Option<(u64, Digest)> {
        self.0.back().map(|f| (f.sent_through, f.sent_hash))
    }

    fn abort(&mut self) {
        for flight in self.0.drain(..) {
            flight.answer.abort();
        }
    }
}

impl Drop for Flights {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Syncs one agent's outbox to its hub. Owns its own outbox connection.
#[derive(Debug)]
pub struct Syncer {
    outbox: SharedOutbox,
    client: HubClient,
    creds: Credentials,
    clock: Arc<dyn Clock>,
    batch_size: usize,
    /// Set at start and after any error: read the hub's watermark before sending.
    need_watermark: bool,
    /// The policy version the hub's last receipt named (unknown until one arrives).
    hub_policy_version: Option<u64>,
    /// Pull the policy at the next step whatever the versions say.
    policy_due: bool,
    /// The last step failed: the next one sends one batch at a time until it has had
    /// [`PIPELINE_AFTER`] receipts in a row (two requests in flight need two connections, and
    /// a link that drops connections should not cost more than one batch a step).
    failed_last: bool,
}

/// What is to be sent next.
struct Plan {
    acked: u64,
    after_hash: Option<Digest>,
    head: Head,
    batch: Vec<(Envelope, Digest)>,
    last_error: Option<String>,
    outcome_cursor: u64,
    /// The last hub checkpoint this agent verified.
    log: Option<Trusted>,
}

impl Syncer {
    pub fn new(
        outbox: SharedOutbox,
        enrollment: &Enrollment,
        key: Arc<KeyPair>,
        clock: Arc<dyn Clock>,
        batch_size: usize,
    ) -> Result<Syncer, ClientError> {
        let client = HubClient::new(&enrollment.hub_url, Arc::clone(&clock))?;
        Ok(Syncer {
            outbox,
            client,
            creds: Credentials {
                agent: enrollment.agent_id.clone(),
                key,
                hub_key: enrollment.hub_public_key,
            },
            clock,
            batch_size: batch_size.clamp(1, MAX_BATCH_ENVELOPES),
            need_watermark: true,
            hub_policy_version: None,
            policy_due: false,
            failed_last: false,
        })
    }

    /// Makes the next step pull the policy (conditionally) whatever the versions say.
    pub fn want_policy(&mut self) {
        self.policy_due = true;
    }

    /// Pulls the hub's policy once (conditional signed `GET`); see [`policy::pull`].
    pub async fn pull_policy(&mut self) -> Result<PolicyPull, PullError> {
        let now = self.clock.now_ms();
        // Until a pull succeeds, every step asks again (and so keeps reporting a refusal).
        self.policy_due = true;
        let pulled = policy::pull(&self.client, &self.creds, &self.outbox, now).await?;
        self.policy_due = false;
        if let PolicyPull::Updated { from, to } = pulled {
            info!(from = ?from, to, "policy updated");
        }
        Ok(pulled)
    }

    /// Pulls the policy when one is due: asked for, none cached (unless the hub said it has
    /// none), or the hub's last receipt named another version than the cached one.
    async fn policy_round(&mut self) -> Result<Option<PolicyPull>, PullError> {
        let hub_key = self.creds.hub_key;
        let cached = self
            .outbox
            .call(move |o| policy::cached_version(o, &hub_key))
            .await?;
        let due = self.policy_due
            || match (cached, self.hub_policy_version) {
                (None, Some(0)) => false,
                (None, _) => true,
                (Some(c), Some(hub)) => hub != 0 && hub != c,
                (Some(_), None) => false,
            };
        if !due {
            return Ok(None);
        }
        self.pull_policy().await.map(Some)
    }

    /// Pulls the policy when due, sends everything not yet acknowledged (or one empty batch as
    /// a heartbeat), then records the result in `sync_state`: `last_sync_ms` and no error (or
    /// the policy problem), or the error's one-line text.
    pub async fn sync_once(&mut self) -> Result<SyncSummary, SyncError> {
        let started = Instant::now();
        let (pulled, problem) = match self.policy_round().await {
            Ok(pulled) => (pulled, None),
            Err(e) => (None, Some(e.to_string().replace(['\n', '\r'], " "))),
        };
        let result = self
            .send_all(started, problem.as_deref())
            .await
            .map(|summary| SyncSummary {
                policy: pulled,
                problem: problem.clone(),
                ..summary
            });
        let now = self.clock.now_ms();
        self.failed_last = result.is_err();
        let noted = match &result {
            Ok(_) => {
                self.outbox
                    .call(move |o| o.record_sync(now, problem.as_deref()))
                    .await
            }
            Err(e) => {
                self.need_watermark = true;
                let line = e.to_string().replace(['\n', '\r'], " ");
                self.outbox
                    .call(move |o| o.record_failure(&line, now))
                    .await
            }
        };
        // A sync error matters more than failing to note it.
        let summary = result?;
        noted?;
        Ok(summary)
    }

    /// Sends everything not yet acknowledged; the receipt that completes the round records it
    /// (`problem`: the policy problem to report with it). While there is more to send, the
    /// next batch is read and sent before the last one's receipt is back (at most
    /// [`PIPELINE_DEPTH`] in flight; the hub keeps them in order), and receipts are checked
    /// and applied strictly in seq order.
    async fn send_all(
        &mut self,
        started: Instant,
        problem: Option<&str>,
    ) -> Result<SyncSummary, SyncError> {
        let mut sent = 0u64;
        let mut report = RoundReport::default();
        let mut resyncs = 0u32;
        let mut update_rounds = 0u32;
        // Whether the round already ended once with a checkpoint it could not prove.
        let mut confirmed = false;
        // Receipts in a row in this step, and how many batches may be in flight.
        let mut streak = 0u32;
        let mut depth = if self.failed_last { 1 } else { PIPELINE_DEPTH };
        let mut flights = Flights::default();
        'round: loop {
            flights.abort();
            if self.need_watermark {
                self.reconcile().await?;
                self.need_watermark = false;
            }
            let mut plan = self.plan().await?;
            report.planned(plan.acked, plan.head.seq);
            let after_hash = plan.after_hash.ok_or_else(|| SyncError::LocalChain {
                code: "local_chain",
                seq: plan.acked,
                problem: "the last acknowledged record is missing".into(),
            })?;
            let batch = std::mem::take(&mut plan.batch);
            match self.launch(&plan, plan.acked, after_hash, batch) {
                Launch::Sent(flight) => flights.push(flight),
                Launch::Damaged(damage) => return Err(damage),
            }
            // Cleared when the next batch cannot be read or sent as it is.
            let mut can_fill = true;
            while let Some((tail_seq, tail_hash)) = flights.tail() {
                // Keep the next batch in flight while this one is answered.
                if can_fill && flights.len() < depth && tail_seq < plan.head.seq {
                    let agent = self.creds.agent.clone();
                    let limit = self.batch_size;
                    let next = self
                        .outbox
                        .call(move |o| o.envelopes_after(&agent, tail_seq, limit))
                        .await;
                    // A failed read, or a damaged record, waits for the next round: the
                    // batches in flight are answered first.
                    match next.map(|batch| self.launch(&plan, tail_seq, tail_hash, batch)) {
                        Ok(Launch::Sent(next)) if next.count > 0 => flights.push(next),
                        _ => can_fill = false,
                    }
                    continue;
                }
                let Some(flight) = flights.pop() else {
                    break;
                };
                let (sent_through, sent_hash) = (flight.sent_through, flight.sent_hash);
                let (count, sent_cursor) = (flight.count, flight.outcome_cursor);
                let answer = match flight.answer.await {
                    Ok(answer) => answer,
                    Err(e) => Err(ClientError::Network {
                        url: self.client.hub().to_owned(),
                        cause: format!("the request was lost: {e}"),
                    }),
                };
                let receipt = match answer {
                    Ok(receipt) => receipt,
                    Err(e)
                        if e.code().is_some_and(ErrorCode::needs_resync)
                            && resyncs < MAX_RESYNCS_PER_STEP =>
                    {
                        debug!(error = %e, "the hub asks for a resync");
                        resyncs += 1;
                        self.need_watermark = true;
                        continue 'round;
                    }
                    Err(e) => return Err(e.into()),
                };
                if receipt.agent_id != self.creds.agent {
                    return Err(SyncError::BadReceipt(format!(
                        "the receipt names agent {}",
                        receipt.agent_id
                    )));
                }
                let local_at_receipt = if receipt.acked_seq == sent_through {
                    Some(sent_hash)
                } else {
                    let seq = receipt.acked_seq;
                    self.outbox.call(move |o| o.hash_at(seq)).await?
                };
                match check_receipt(
                    sent_through,
                    receipt.acked_seq,
                    receipt.head_hash,
                    local_at_receipt,
                ) {
                    Ok(()) => {}
                    Err(ReceiptProblem::Behind { .. }) if resyncs < MAX_RESYNCS_PER_STEP => {
                        resyncs += 1;
                        self.need_watermark = true;
                        continue 'round;
                    }
                    Err(p) => return Err(SyncError::BadReceipt(p.to_string())),
                }
                // Checked against the checkpoint trusted now: a receipt for a batch sent
                // before the last receipt came back proves consistency from an older size,
                // and is then only checked for inclusion (see `checkpoint::check`).
                let unproven = match (&receipt.log, plan.log) {
                    (Some(proof), Some(held)) => {
                        held.tree_size > 0 && proof.consistency_from != held.tree_size
                    }
                    _ => false,
                };
                let log = self.check_log(&receipt, plan.log)?;
                if let Some(update) = &log {
                    plan.log = update.trusted;
                }
                let acked = receipt.acked_seq;
                self.hub_policy_version = Some(receipt.policy_version);
                // A full page of updates that moved the cursor: more may wait at the hub.
                let more_updates = receipt.updates.len() >= MAX_OUTCOME_UPDATES
                    && receipt.outcome_cursor > sent_cursor;
                let done = acked >= plan.head.seq
                    && !(more_updates && update_rounds < MAX_UPDATE_ROUNDS_PER_STEP);
                let synced = done.then(|| (self.clock.now_ms(), problem.map(str::to_owned)));
                plan.outcome_cursor = plan.outcome_cursor.max(receipt.outcome_cursor);
                report.receipt(&receipt);
                self.outbox
                    .call(move |o| {
                        let synced = synced.as_ref().map(|(at, p)| (*at, p.as_deref()));
                        o.apply_receipt_with_log(&receipt, log.as_ref(), synced)
                    })
                    .await?;
                report.applied(acked);
                sent += count;
                // Resyncs are counted between two receipts that moved the chain on.
                resyncs = 0;
                streak += 1;
                if streak >= PIPELINE_AFTER {
                    depth = PIPELINE_DEPTH;
                }
                if self.need_watermark {
                    // The log check found the hub lost history: read its watermark again.
                    continue 'round;
                }
                if acked >= plan.head.seq {
                    if more_updates && update_rounds < MAX_UPDATE_ROUNDS_PER_STEP {
                        update_rounds += 1;
                        continue 'round;
                    }
                    if unproven && !std::mem::replace(&mut confirmed, true) {
                        // The last receipt came back to a batch sent before the one ahead of
                        // it was answered: one more (empty) batch asks for the proof from the
                        // checkpoint trusted now, so the round ends trusting the hub's latest.
                        continue 'round;
                    }
                    let duration = started.elapsed();
                    report.done(sent, acked, plan.head.seq, duration);
                    return Ok(SyncSummary {
                        sent,
                        acked_seq: acked,
                        head_seq: plan.head.seq,
                        duration,
                        policy: None,
                        problem: None,
                    });
                }
                if acked < sent_through {
                    // The hub took less than was sent: start over from its word.
                    continue 'round;
                }
            }
            // Nothing in flight and not everything acknowledged (a damaged record was held
            // back): the next round names it.
        }
    }

    /// Starts sending `batch` (the envelopes after `after_seq`, whose hash is `after_hash`):
    /// its intact prefix, with a heartbeat from `plan`. `Damaged` when not even its first
    /// record can be sent.
    fn launch(
        &self,
        plan: &Plan,
        after_seq: u64,
        after_hash: Digest,
        mut batch: Vec<(Envelope, Digest)>,
    ) -> Launch {
        // Send the intact records before a damaged one; stop at the damaged one.
        let pk = self.creds.key.public_key();
        let (intact, damage) = intact_prefix(&pk, after_seq, after_hash, &batch);
        if let (0, Some(damage)) = (intact, damage) {
            return Launch::Damaged(damage);
        }
        batch.truncate(intact);
        let (sent_through, sent_hash) = batch
            .last()
            .map_or((after_seq, after_hash), |(e, h)| (e.seq, *h));
        let req = BatchRequest {
            heartbeat: Heartbeat {
                head_seq: plan.head.seq,
                queue_depth: plan.head.seq.saturating_sub(sent_through),
                agent_version: crate::AGENT_VERSION.to_owned(),
                last_error: plan.last_error.clone(),
                outcome_cursor: plan.outcome_cursor,
                log_size: plan.log.map_or(0, |t| t.tree_size),
            },
            envelopes: batch.into_iter().map(|(e, _)| e).collect(),
        };
        let count = req.envelopes.len() as u64;
        let client = self.client.clone();
        let creds = self.creds.clone();
        Launch::Sent(Flight {
            sent_through,
            sent_hash,
            count,
            outcome_cursor: plan.outcome_cursor,
            answer: tokio::spawn(async move { client.send_batch(&creds, &req).await }),
        })
    }

    /// What to send next: the envelopes after the acknowledged seq (`prefetched`, when they
    /// were read ahead from that seq) and what the heartbeat reports.
    async fn plan(&self) -> Result<Plan, SyncError> {
        let agent = self.creds.agent.clone();
        let limit = self.batch_size;
        Ok(self
            .outbox
            .call(move |o| {
                let state = o.sync_state()?;
                let head = o.head()?;
                let batch = o.envelopes_after(&agent, state.acked_seq, limit)?;
                Ok(Plan {
                    acked: state.acked_seq,
                    after_hash: o.hash_at(state.acked_seq)?,
                    head,
                    batch,
                    last_error: state.last_error,
                    outcome_cursor: state.outcome_cursor,
                    log: o.hub_log()?,
                })
            })
            .await?)
    }

    /// Checks the receipt's log proof against the checkpoint this agent trusts (`held`);
    /// returns what to record with the receipt: the new checkpoint and any finding (logged
    /// here as an error, kept as evidence). A log that shrank or forked means the hub lost or
    /// rewrote history: the next round re-reads its watermark, and what it lost is sent again.
    fn check_log(
        &mut self,
        receipt: &Receipt,
        held: Option<Trusted>,
    ) -> Result<Option<HubLogUpdate>, SyncError> {
        let (checked, shown) = match &receipt.log {
            Some(proof) => {
                let checked = checkpoint::check(
                    &self.creds.hub_key,
                    &self.creds.agent,
                    receipt.acked_seq,
                    &receipt.head_hash,
                    proof,
                    held.as_ref(),
                )
                .map_err(|e| SyncError::BadReceipt(format!("the log checkpoint: {e}")))?;
                let shown = serde_json::to_string(&proof.checkpoint)
                    .map_err(|e| SyncError::BadReceipt(e.to_string()))?;
                (Some(checked), shown)
            }
            None => (None, String::from("null")),
        };
        let (trusted, findings) = match (&checked, held) {
            (Some(c), _) => {
                // Trust the new checkpoint once it is proven to extend the old one, or after
                // reporting that it does not (so one incident is reported once).
                let keep_old = !c.consistency_checked && c.findings.is_empty();
                let trusted = if keep_old {
                    held
                } else {
                    Some(Trusted::from(c.checkpoint))
                };
                (trusted, c.findings.clone())
            }
            // A hub with an empty log after showing a checkpoint lost everything.
            (None, Some(h)) if h.tree_size > 0 => (
                None,
                vec![Finding::Rollback {
                    held: h.tree_size,
                    shown: 0,
                }],
            ),
            (None, _) => return Ok(None),
        };
        if trusted == held && findings.is_empty() {
            return Ok(None);
        }
        for f in &findings {
            error!(kind = f.kind(), "{f}");
        }
        if findings
            .iter()
            .any(|f| !matches!(f, Finding::NotIncluded { .. }))
        {
            self.need_watermark = true;
        }
        Ok(Some(HubLogUpdate {
            trusted,
            held,
            findings,
            shown,
            now_ms: self.clock.now_ms(),
        }))
    }

    /// Reads the hub's watermark and moves the local `acked_seq` to it when both chains agree.
    async fn reconcile(&mut self) -> Result<(), SyncError> {
        let wm = self.client.watermark(&self.creds).await?;
        if wm.agent_id != self.creds.agent {
            return Err(SyncError::BadReceipt(format!(
                "the watermark names agent {}",
                wm.agent_id
            )));
        }
        if wm.state != AgentState::Active {
            return Err(SyncError::Halted(wm.state));
        }
        let hub_seq = wm.acked_seq;
        let (head, local) = self
            .outbox
            .call(move |o| Ok((o.head()?, o.hash_at(hub_seq)?)))
            .await?;
        let acked = reconcile(wm.acked_seq, wm.head_hash, head.seq, local)?;
        let before = self.outbox.call(|o| o.sync_state()).await?.acked_seq;
        if acked != before {
            info!(
                from = before,
                to = acked,
                "acknowledged seq reset to the hub's watermark"
            );
        }
        let hash = wm.head_hash;
        self.outbox.call(move |o| o.set_acked(acked, hash)).await?;
        Ok(())
    }
}

/// How many leading envelopes of `batch` still form a chain after `after_seq`/`after_hash`
/// (consecutive seqs, `prev` links, stored hashes that match the contents), and what is wrong
/// with the first one that does not. Only a damaged envelope's signature is checked here (to
/// say whether it was altered); the hub verifies every signature anyway.
fn intact_prefix(
    key: &PublicKey,
    after_seq: u64,
    after_hash: Digest,
    batch: &[(Envelope, Digest)],
) -> (usize, Option<SyncError>) {
    let mut prev = after_hash;
    for (i, (expected, (e, stored))) in (after_seq + 1..).zip(batch).enumerate() {
        let damage = |code, problem: String| SyncError::LocalChain {
            code,
            seq: expected,
            problem,
        };
        let problem = if e.seq != expected {
            damage(
                "local_chain",
                format!("missing (the next stored record is seq {})", e.seq),
            )
        } else if e.prev == prev && e.hash() == *stored {
            prev = *stored;
            continue;
        } else if e.verify(key).is_err() {
            damage(
                "bad_signature",
                "the stored record no longer verifies (its body, prev or signature was altered)"
                    .to_owned(),
            )
        } else if e.prev != prev {
            damage(
                "local_chain",
                format!("prev does not match the hash of seq {}", expected - 1),
            )
        } else {
            damage(
                "local_chain",
                "the stored hash does not match the record's contents".to_owned(),
            )
        };
        return (i, Some(problem));
    }
    (batch.len(), None)
}

/// One step of the sync loop; [`Syncer`] is the real one, tests drive the loop with fakes.
pub trait SyncStep: Send {
    fn sync_once(&mut self) -> impl Future<Output = Result<SyncSummary, SyncError>> + Send;
}

impl SyncStep for Syncer {
    fn sync_once(&mut self) -> impl Future<Output = Result<SyncSummary, SyncError>> + Send {
        Syncer::sync_once(self)
    }
}

/// Timing of the sync loop.
#[derive(Debug, Clone, Copy)]
pub struct LoopOptions {
    /// Pause after a successful step (unless woken earlier by new records).
    pub heartbeat: Duration,
    pub retry_min: Duration,
    /// No pause after a failure is longer.
    pub retry_max: Duration,
    /// Seed of the backoff jitter (random in production, fixed in tests).
    pub jitter_seed: u64,
}

/// Exponential backoff with jitter and a cap. backon adds up to 100% jitter to each delay, so
/// it grows delays to half the cap: every delay lies in `[retry_min, retry_max]`.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: Option<ExponentialBackoff>,
    max: Duration,
}

impl Backoff {
    pub fn new(opts: &LoopOptions) -> Backoff {
        let max = opts.retry_max.max(opts.retry_min);
        let builder = ExponentialBuilder::default()
            .with_min_delay(opts.retry_min)
            .with_max_delay((max / 2).max(opts.retry_min))
            .with_jitter()
            .with_jitter_seed(opts.jitter_seed)
            .without_max_times();
        Backoff {
            builder,
            delays: None,
            max,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let builder = self.builder;
        let delays = self.delays.get_or_insert_with(|| builder.build());
        delays.next().unwrap_or(self.max).min(self.max)
    }

    pub fn cap(&self) -> Duration {
        self.max
    }

    pub fn reset(&mut self) {
        self.delays = None;
    }
}

/// Runs `step` until `shutdown` completes: after a success it waits for the heartbeat interval
/// or a wake-up (new records), after a failure for the next backoff delay. Shutdown interrupts
/// any wait or step at once; a step's committed work stays, an unfinished one is dropped (its
/// acknowledgement was not applied, so the records are simply sent again).
pub async fn run_until_stopped<S: SyncStep>(
    step: &mut S,
    opts: &LoopOptions,
    wake: &Notify,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = Backoff::new(opts);
    let mut failing: Option<String> = None;
    loop {
        let result = tokio::select! {
            biased;
            () = &mut shutdown => return,
            r = step.sync_once() => r,
        };
        let round_ended = Instant::now();
        let (delay, wakeable) = match result {
            Ok(summary) => {
                backoff.reset();
                match (&summary.problem, failing.take()) {
                    // Records flow, but something beside them is wrong (a policy refused):
                    // logged once when it starts, like an error.
                    (Some(p), before) => {
                        if before.as_deref() != Some(p.as_str()) {
                            warn!(problem = %p, "synced, but not everything is right");
                        }
                        failing = Some(p.clone());
                    }
                    (None, Some(_)) => info!(acked_seq = summary.acked_seq, "sync recovered"),
                    (None, None) => {}
                }
                // The round logged its own line (`round::RoundReport::done`).
                (opts.heartbeat, true)
            }
            Err(e) => {
                let line = e.to_string();
                let next = e.next_step();
                let delay = match next {
                    NextStep::Retry => backoff.next_delay(),
                    NextStep::Pause => backoff.cap(),
                };
                // Log an error once when it starts, not at every retry.
                if failing.as_deref() == Some(line.as_str()) {
                    debug!(error = %line, retry_in_ms = delay.as_millis() as u64, "sync still failing");
                } else {
                    warn!(error = %line, retry_in_ms = delay.as_millis() as u64, "sync failed");
                }
                failing = Some(line);
                // New intake does not cut a backoff short: a busy county system must not turn
                // the retries into a flood against a hub that is down.
                (delay, false)
            }
        };
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            () = tokio::time::sleep(delay) => {}
            () = wake.notified(), if wakeable => {
                // Records that keep arriving go in batches, not one round (and one receipt,
                // with its signature checks and fsync) each: a round right after the last
                // one waits until `STREAM_LINGER` has passed since it ended.
                tokio::select! {
                    biased;
                    () = &mut shutdown => return,
                    () = tokio::time::sleep_until(round_ended + STREAM_LINGER) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use tokio::sync::mpsc;

    fn d(n: u8) -> Digest {
        Digest([n; 32])
    }

    #[test]
    fn reconcile_follows_a_consistent_hub_down_or_up() {
        // The hub was restored from an older backup: it holds less; resend from there.
        assert_eq!(reconcile(3, d(3), 10, Some(d(3))), Ok(3));
        // Our acknowledgement was lost: the hub holds more than we believed.
        assert_eq!(reconcile(9, d(9), 10, Some(d(9))), Ok(9));
        assert_eq!(reconcile(10, d(10), 10, Some(d(10))), Ok(10));
        assert_eq!(
            reconcile(0, Digest::GENESIS, 0, Some(Digest::GENESIS)),
            Ok(0)
        );
    }

    #[test]
    fn reconcile_refuses_a_fork() {
        assert_eq!(
            reconcile(4, d(4), 10, Some(d(44))),
            Err(Divergence::Fork {
                seq: 4,
                local: d(44),
                hub: d(4)
            })
        );
    }

    #[test]
    fn reconcile_refuses_a_hub_beyond_the_local_head() {
        let err = reconcile(12, d(12), 10, None).unwrap_err();
        assert_eq!(
            err,
            Divergence::HubAhead {
                hub_seq: 12,
                local_head: 10
            }
        );
        assert!(err.to_string().starts_with("hub_ahead:"), "{err}");
    }

    #[test]
    fn receipts_must_cover_what_was_sent_with_the_local_hash() {
        assert_eq!(check_receipt(5, 5, d(5), Some(d(5))), Ok(()));
        assert_eq!(check_receipt(5, 7, d(7), Some(d(7))), Ok(()));
        assert_eq!(
            check_receipt(5, 4, d(4), Some(d(4))),
            Err(ReceiptProblem::Behind { hub: 4, sent: 5 })
        );
        assert_eq!(
            check_receipt(5, 5, d(6), Some(d(5))),
            Err(ReceiptProblem::Mismatch { seq: 5 })
        );
        assert_eq!(
            check_receipt(5, 8, d(8), None),
            Err(ReceiptProblem::PastHead { seq: 8 })
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_within_bounds() {
        let opts = LoopOptions {
            heartbeat: Duration::from_secs(10),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            jitter_seed: 42,
        };
        let mut b = Backoff::new(&opts);
        let delays: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= opts.retry_min && delays[0] < 2 * opts.retry_min);
        assert!(delays[3] > delays[0]);
        assert!(
            delays
                .iter()
                .all(|d| *d >= opts.retry_min && *d <= opts.retry_max)
        );
        assert!(delays[19] >= opts.retry_max / 2);
        b.reset();
        assert!(b.next_delay() < 2 * opts.retry_min);
    }

    /// A step that replays scripted results and reports when it is called.
    struct Scripted {
        results: VecDeque<Result<u64, SyncError>>,
        calls: mpsc::UnboundedSender<Instant>,
    }

    impl SyncStep for Scripted {
        fn sync_once(&mut self) -> impl Future<Output = Result<SyncSummary, SyncError>> + Send {
            let _ = self.calls.send(Instant::now());
            let next = self.results.pop_front().unwrap_or(Ok(0));
            async move {
                next.map(|sent| SyncSummary {
                    sent,
                    acked_seq: sent,
                    head_seq: sent,
                    duration: Duration::ZERO,
                    policy: None,
                    problem: None,
                })
            }
        }
    }

    fn network_error() -> SyncError {
        SyncError::Hub(ClientError::Network {
            url: "http://127.0.0.1:1".into(),
            cause: "connection refused".into(),
        })
    }

    const OPTS: LoopOptions = LoopOptions {
        heartbeat: Duration::from_secs(10),
        retry_min: Duration::from_millis(500),
        retry_max: Duration::from_secs(8),
        jitter_seed: 7,
    };

    #[tokio::test(start_paused = true)]
    async fn the_loop_backs_off_then_beats_and_wakes_and_stops() {
        let (tx, mut calls) = mpsc::unbounded_channel();
        let mut step = Scripted {
            results: (0..6)
                .map(|_| Err(network_error()))
                .chain([Ok(3)])
                .collect(),
            calls: tx,
        };
        let wake = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let loop_wake = Arc::clone(&wake);
        let task = tokio::spawn(async move {
            run_until_stopped(&mut step, &OPTS, &loop_wake, async {
                let _ = stop_rx.await;
            })
            .await;
        });

        let mut times = Vec::new();
        for _ in 0..8 {
            times.push(calls.recv().await.unwrap());
        }
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        // Six failures: growing delays, jittered, within [min, max].
        assert!(
            gaps[0] >= OPTS.retry_min && gaps[0] < 2 * OPTS.retry_min,
            "{gaps:?}"
        );
        assert!(gaps[5] > gaps[0], "{gaps:?}");
        assert!(gaps[..6].iter().all(|g| *g <= OPTS.retry_max), "{gaps:?}");
        // After the success, the heartbeat interval.
        assert_eq!(gaps[6], OPTS.heartbeat);

        // A wake-up right after a round waits until the linger has passed since it ended
        // (records that keep arriving go in batches) ...
        wake.notify_one();
        let woken = calls.recv().await.unwrap();
        assert_eq!(woken, times[7] + STREAM_LINGER);
        // ... and one that comes later runs the next round at once.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let later = Instant::now();
        wake.notify_one();
        assert_eq!(calls.recv().await.unwrap(), later);

        // Shutdown ends the loop without another step, even mid-wait.
        stop_tx.send(()).unwrap();
        task.await.unwrap();
        assert!(calls.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_halt_retries_only_at_the_cap_and_ignores_wake_ups() {
        let (tx, mut calls) = mpsc::unbounded_channel();
        let mut step = Scripted {
            results: (0..3)
                .map(|_| Err(SyncError::Halted(AgentState::Quarantined)))
                .collect(),
            calls: tx,
        };
        let wake = Arc::new(Notify::new());
        let loop_wake = Arc::clone(&wake);
        let task = tokio::spawn(async move {
            run_until_stopped(&mut step, &OPTS, &loop_wake, std::future::pending()).await;
        });
        let first = calls.recv().await.unwrap();
        wake.notify_one();
        let second = calls.recv().await.unwrap();
        assert_eq!(second - first, OPTS.retry_max);
        task.abort();
    }
}
