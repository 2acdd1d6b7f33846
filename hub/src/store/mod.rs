//! What the hub needs from storage, and nothing more: [`Reads`] inside a consistent snapshot,
//! [`Writes`] inside one atomic transaction, and [`Store`] to open either. Domain modules are
//! written against these traits; only the backend modules (today [`sqlite`]) hold SQL, so a
//! PostgreSQL backend can slot in later.
//!
//! Invariants every backend keeps: a write transaction is all or nothing and is durable when
//! [`Store::write`] returns `Ok`; envelopes are never changed or deleted once stored (only
//! their verdict may be revised); for each agent, envelopes `1..=acked_seq` are all present and
//! `head_hash` is the hash of the last; policy versions are never changed or deleted; ledger
//! totals never go below zero.

pub mod sqlite;

use tongbu_shared::crypto::{Digest, PublicKey, Signature};
use tongbu_shared::ids::{AgentId, CountyCode};
use tongbu_shared::protocol::{AgentState, Outcome};
use tongbu_shared::rules::{Entity, EntityKey, Slot, Totals, TotalsDelta};

pub use sqlite::SqliteStore;

/// Why a storage operation failed, grouped by what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot take writes now (disk full, read-only, locked too long): retry later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A stored value does not have the shape the hub wrote: stop and investigate.
    #[error("the store holds an invalid value: {0}")]
    Corrupt(String),
    /// The database file fails SQLite's integrity check (or is not a database at all): the
    /// hub refuses to start on it.
    #[error(
        "the database {path} is damaged ({problem}); the hub will not serve from it: restore it from a backup, or move it aside to start empty"
    )]
    Damaged {
        path: std::path::PathBuf,
        problem: String,
    },
    /// The database schema is from a newer hub, or a migration failed.
    #[error("database schema: {0}")]
    Schema(String),
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The background writer stopped (the hub is shutting down or it crashed).
    #[error("the database writer has stopped")]
    WriterStopped,
    #[error("database error: {0}")]
    Backend(String),
}

impl StoreError {
    /// Whether the same operation may succeed later without anyone intervening.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::WriterStopped)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct County {
    pub code: CountyCode,
    pub name: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollToken {
    pub county: CountyCode,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub used_at_ms: Option<i64>,
    pub used_by: Option<AgentId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub role: Role,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// An enrolled agent: its identity, its chain as the hub holds it, and what it last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub id: AgentId,
    pub county: CountyCode,
    pub public_key: PublicKey,
    pub state: AgentState,
    pub enrolled_at_ms: i64,
    pub acked_seq: u64,
    pub head_hash: Digest,
    pub reported_head_seq: u64,
    pub queue_depth: u64,
    pub agent_version: Option<String>,
    pub last_error: Option<String>,
    pub last_seen_ms: Option<i64>,
    pub hostname: Option<String>,
}

/// A key an agent used before it rotated to a newer one: it signed the envelopes
/// `valid_from_seq..=valid_until_seq` (none when `valid_until_seq < valid_from_seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredKey {
    pub public_key: PublicKey,
    pub valid_from_seq: u64,
    pub valid_until_seq: u64,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
}

/// A new agent as enrollment creates it: active, with an empty chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgent {
    pub id: AgentId,
    pub county: CountyCode,
    pub public_key: PublicKey,
    pub enrolled_at_ms: i64,
    pub agent_version: String,
    pub hostname: Option<String>,
}

/// The hub's verdict on one record: its outcome, the rule codes that apply, the findings'
/// sentences and the policy version it was judged by (none for a malformed body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub codes: Vec<String>,
    pub detail: Option<String>,
    pub policy_version: Option<u64>,
}

/// An envelope as stored: the exact signed parts plus the hub's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    pub agent: AgentId,
    pub seq: u64,
    pub prev: Digest,
    pub body: Vec<u8>,
    pub sig: Signature,
    pub hash: Digest,
    pub received_at_ms: i64,
    pub outcome: Outcome,
    pub codes: Vec<String>,
    pub detail: Option<String>,
    pub policy_version: Option<u64>,
    /// Its place in the order the hub stored envelopes of all agents (none only for an
    /// envelope stored before the ledger existed and not judged yet).
    pub arrival: Option<u64>,
}

impl StoredEnvelope {
    /// The envelope as the agent signed it.
    pub fn into_envelope(self) -> tongbu_shared::Envelope {
        tongbu_shared::Envelope {
            agent: self.agent,
            seq: self.seq,
            prev: self.prev,
            body: self.body,
            sig: self.sig,
        }
    }
}

/// The part of a stored envelope needed to recognise a resend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVerdict {
    pub seq: u64,
    pub hash: Digest,
    pub outcome: Outcome,
    pub codes: Vec<String>,
    pub detail: Option<String>,
    pub policy_version: Option<u64>,
}

/// A signed policy version: the exact payload bytes the hub signed and the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    pub version: u64,
    pub payload: Vec<u8>,
    pub sig: Signature,
    pub created_at_ms: i64,
    pub actor: String,
}

/// A record to keep waiting for its predecessor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldEntry {
    /// The record's arrival (orders the held set).
    pub arrival: u64,
    pub agent: AgentId,
    pub seq: u64,
    pub waits_on: EntityKey,
    pub received_at_ms: i64,
    pub policy_version: u64,
    /// The ledger row it counts in as held.
    pub held_at: Slot,
}

/// A held record taken out of the held set, with its envelope's exact body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldRecord {
    pub entry: HeldEntry,
    pub body: Vec<u8>,
}

/// An envelope stored before the ledger existed, waiting to be judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unjudged {
    pub agent: AgentId,
    pub seq: u64,
    pub body: Vec<u8>,
    pub received_at_ms: i64,
    pub outcome: Outcome,
    pub codes: Vec<String>,
}

/// One rule code of a decided record, to record as a violation (or warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewViolation {
    pub agent: AgentId,
    pub seq: u64,
    pub county: CountyCode,
    /// Unknown for a body that is not a well-formed record.
    pub fiscal_year: Option<i32>,
    /// The record's kind and entity id ('' when unknown).
    pub kind: String,
    pub entity_id: String,
    pub rule: String,
    pub detail: String,
    pub at_ms: i64,
}

/// A violation as `GET /api/v1/violations` lists it, with its record's current outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViolationRow {
    pub violation: NewViolation,
    pub arrival: u64,
    pub outcome: Outcome,
}

/// Which violations to list: one county's, optionally of one fiscal year or one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViolationFilter {
    pub county: CountyCode,
    pub year: Option<i32>,
    pub rule: Option<String>,
    pub limit: u32,
}

/// A change in an earlier record's outcome, with the record's verdict now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeUpdate {
    /// The change's position in the feed (an agent's cursor).
    pub id: u64,
    pub seq: u64,
    pub verdict: Verdict,
}

/// What an agent said about itself in its last request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatUpdate {
    pub reported_head_seq: u64,
    pub queue_depth: u64,
    pub agent_version: String,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    Equivocation,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Equivocation => "equivocation",
        }
    }

    pub fn parse(s: &str) -> Option<AlertKind> {
        match s {
            "equivocation" => Some(AlertKind::Equivocation),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub agent: AgentId,
    pub kind: AlertKind,
    pub seq: Option<u64>,
    pub detail: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equivocation {
    pub agent: AgentId,
    pub seq: u64,
    /// JSON evidence: the conflicting envelopes in their wire form.
    pub evidence: String,
    pub at_ms: i64,
}

/// An admin action for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at_ms: i64,
    /// Who acted: `cli`, `agent:<id>`, `api:<role>`.
    pub actor: String,
    pub action: String,
    pub detail: String,
}

// ---- the console ----------------------------------------------------------------------

/// A person who may log in to the console.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsoleUser {
    pub username: String,
    pub role: Role,
    /// An Argon2id PHC string.
    pub password_hash: String,
    pub created_at_ms: i64,
    pub disabled: bool,
}

impl std::fmt::Debug for ConsoleUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleUser")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A console session as stored: only the SHA-256 of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub token_hash: Digest,
    pub username: String,
    pub csrf: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub last_seen_ms: i64,
}

/// Where an admin's review left a violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewStatus {
    Reviewed,
    Resolved,
}

impl ReviewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Reviewed => "reviewed",
            ReviewStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<ReviewStatus> {
        match s {
            "reviewed" => Some(ReviewStatus::Reviewed),
            "resolved" => Some(ReviewStatus::Resolved),
            _ => None,
        }
    }
}

/// An admin's review of a violation (the violation itself never changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViolationReview {
    pub violation_id: i64,
    pub status: ReviewStatus,
    pub note: String,
    pub by: String,
    pub at_ms: i64,
}

/// A violation as the console lists it: its id, the row and its latest review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleViolation {
    pub id: i64,
    pub row: ViolationRow,
    pub review: Option<ViolationReview>,
}

/// Which violations the console lists: any county, year or rule, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsoleViolationFilter {
    pub county: Option<CountyCode>,
    pub year: Option<i32>,
    pub rule: Option<String>,
    pub limit: u32,
}

/// A stored envelope whose body names a record: which entity, its parent's id ('' for a
/// budget line), and where the envelope is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedRecord {
    pub county: String,
    pub kind: String,
    pub entity_id: String,
    pub parent_id: String,
    pub agent: AgentId,
    pub seq: u64,
}

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub entry: AuditEntry,
}

/// A checkpoint of the transparency log the hub signed, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub checkpoint: tongbu_shared::checkpoint::Checkpoint,
    pub signed: tongbu_shared::signed::Signed<tongbu_shared::checkpoint::Checkpoint>,
}

/// Queries, answered from one consistent snapshot.
pub trait Reads {
    // ---- the transparency log -----------------------------------------------------------

    /// The number of leaves in the log.
    fn log_size(&self) -> Result<u64, StoreError>;
    /// The stored perfect subtree `(level, idx)` of the log, if there is one (see
    /// [`crate::log`] for the levels kept).
    fn log_node(&self, level: u8, idx: u64) -> Result<Option<Digest>, StoreError>;
    /// What the log's leaves `first..first + count` are made of: the agent, seq and chain hash
    /// of the envelopes with arrivals `first + 1 ..= first + count`, in order (fewer if the
    /// envelopes end earlier).
    fn log_leaves(&self, first: u64, count: u64)
    -> Result<Vec<(AgentId, u64, Digest)>, StoreError>;
    /// The checkpoint of `tree_size` leaves, or the latest one.
    fn log_checkpoint(
        &self,
        tree_size: Option<u64>,
    ) -> Result<Option<StoredCheckpoint>, StoreError>;
    /// Up to `limit` checkpoints with a tree size above `after`, smallest first.
    fn log_checkpoints_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredCheckpoint>, StoreError>;
    /// Up to `limit` envelopes with an arrival above `after`, in arrival order.
    fn envelopes_by_arrival(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEnvelope>, StoreError>;

    /// A trivial query, for health checks.
    fn ping(&self) -> Result<(), StoreError>;
    fn county(&self, code: &CountyCode) -> Result<Option<County>, StoreError>;
    fn enroll_token(&self, token_hash: &Digest) -> Result<Option<EnrollToken>, StoreError>;
    fn api_key(&self, key_hash: &Digest) -> Result<Option<ApiKey>, StoreError>;
    fn agent(&self, id: &AgentId) -> Result<Option<AgentRecord>, StoreError>;
    /// The agent that uses or used `key` (current or retired).
    fn agent_by_key(&self, key: &PublicKey) -> Result<Option<AgentId>, StoreError>;
    /// The keys the agent retired, oldest first (see `agent_keys`).
    fn retired_keys(&self, agent: &AgentId) -> Result<Vec<RetiredKey>, StoreError>;
    /// Every agent, ordered by county, then agent id.
    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    /// How many agents are in each state (states with none are left out).
    fn agent_state_counts(&self) -> Result<Vec<(AgentState, u64)>, StoreError>;
    fn envelope(&self, agent: &AgentId, seq: u64) -> Result<Option<StoredEnvelope>, StoreError>;
    /// Hash and verdict of the stored envelopes `from..=to`, in seq order.
    fn verdicts(
        &self,
        agent: &AgentId,
        from: u64,
        to: u64,
    ) -> Result<Vec<StoredVerdict>, StoreError>;
    fn alerts(&self, agent: &AgentId) -> Result<Vec<Alert>, StoreError>;
    fn equivocations(&self, agent: &AgentId) -> Result<Vec<Equivocation>, StoreError>;

    // ---- policy and ledger ------------------------------------------------------------

    /// The highest policy version (0 when there is none yet).
    fn current_policy_version(&self) -> Result<u64, StoreError>;
    fn policy(&self, version: u64) -> Result<Option<StoredPolicy>, StoreError>;
    /// The highest arrival given to an envelope (0 when none).
    fn last_arrival(&self) -> Result<u64, StoreError>;
    fn entity(&self, key: &EntityKey) -> Result<Option<Entity>, StoreError>;
    /// The ledger row of (county, slot), if there is one.
    fn totals(&self, county: &CountyCode, slot: &Slot) -> Result<Option<Totals>, StoreError>;
    /// The ledger rows of a county (of one fiscal year, if given), ordered by year and
    /// catalogue code. An index range read.
    fn ledger_rows(
        &self,
        county: &CountyCode,
        year: Option<i32>,
    ) -> Result<Vec<(Slot, Totals)>, StoreError>;
    /// Violations matching `filter`, in the order their records arrived.
    fn violations(&self, filter: &ViolationFilter) -> Result<Vec<ViolationRow>, StoreError>;
    /// The agent's outcome changes after `after`, oldest first, at most `limit`.
    fn outcome_updates(
        &self,
        agent: &AgentId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<OutcomeUpdate>, StoreError>;
    /// The id of the last outcome change of any agent (0 when none).
    fn last_outcome_change(&self) -> Result<u64, StoreError>;
    /// How many records are held now.
    fn held_count(&self) -> Result<u64, StoreError>;
    /// Envelopes stored before the ledger existed and not judged yet, oldest first.
    fn unjudged(&self, limit: usize) -> Result<Vec<Unjudged>, StoreError>;

    // ---- the console ------------------------------------------------------------------

    /// Every county, by code.
    fn counties(&self) -> Result<Vec<County>, StoreError>;
    /// The ledger rows of every county (of one fiscal year, if given).
    fn province_ledger(
        &self,
        year: Option<i32>,
    ) -> Result<Vec<(CountyCode, Slot, Totals)>, StoreError>;
    /// The fiscal years the ledger has rows for, newest first.
    fn ledger_years(&self) -> Result<Vec<i32>, StoreError>;
    /// How many violations each rule code has (of one fiscal year, if given).
    fn violation_rule_counts(&self, year: Option<i32>) -> Result<Vec<(String, u64)>, StoreError>;
    /// Violations matching `filter` with their latest review, newest first.
    fn console_violations(
        &self,
        filter: &ConsoleViolationFilter,
    ) -> Result<Vec<ConsoleViolation>, StoreError>;
    /// The same violations as [`Reads::console_violations`], handed to `f` one at a time
    /// (nothing collected) until `f` returns false: for exports of any size.
    fn each_console_violation(
        &self,
        filter: &ConsoleViolationFilter,
        f: &mut dyn FnMut(ConsoleViolation) -> bool,
    ) -> Result<(), StoreError>;
    fn console_violation(&self, id: i64) -> Result<Option<ConsoleViolation>, StoreError>;
    /// Every policy version, newest first.
    fn policy_versions(&self) -> Result<Vec<StoredPolicy>, StoreError>;
    /// Audit entries with an id below `before` (all when none), newest first.
    fn audit_page(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditRow>, StoreError>;
    fn console_user(&self, username: &str) -> Result<Option<ConsoleUser>, StoreError>;
    fn console_session(&self, token_hash: &Digest) -> Result<Option<ConsoleSession>, StoreError>;
    /// The stored records of entity `id` (of one county, if given), in arrival order.
    fn records_of_entity(
        &self,
        id: &str,
        county: Option<&str>,
    ) -> Result<Vec<IndexedRecord>, StoreError>;
    /// The stored records of a county whose parent is `parent_id`, in arrival order.
    fn records_with_parent(
        &self,
        county: &str,
        parent_id: &str,
    ) -> Result<Vec<IndexedRecord>, StoreError>;
}

/// Changes, made only inside a write transaction.
pub trait Writes: Reads {
    fn insert_county(&mut self, county: &County) -> Result<(), StoreError>;
    fn insert_enroll_token(
        &mut self,
        token_hash: &Digest,
        token: &EnrollToken,
    ) -> Result<(), StoreError>;
    fn mark_token_used(
        &mut self,
        token_hash: &Digest,
        at_ms: i64,
        by: &AgentId,
    ) -> Result<(), StoreError>;
    fn insert_api_key(&mut self, key_hash: &Digest, key: &ApiKey) -> Result<(), StoreError>;
    fn insert_agent(&mut self, agent: &NewAgent) -> Result<(), StoreError>;
    fn set_agent_state(&mut self, agent: &AgentId, state: AgentState) -> Result<(), StoreError>;
    /// Moves the agent's current key (`retired.public_key`) to the key history and makes
    /// `new_key` current.
    fn rotate_agent_key(
        &mut self,
        agent: &AgentId,
        retired: &RetiredKey,
        new_key: &PublicKey,
    ) -> Result<(), StoreError>;
    /// Appends envelopes to the log (they must not exist yet).
    fn insert_envelopes(
        &mut self,
        received_at_ms: i64,
        envelopes: &[NewEnvelope<'_>],
    ) -> Result<(), StoreError>;
    /// Moves the agent's watermark.
    fn set_chain_head(
        &mut self,
        agent: &AgentId,
        acked_seq: u64,
        head_hash: &Digest,
    ) -> Result<(), StoreError>;
    /// Notes an authenticated request from the agent, with its heartbeat if it sent one.
    fn record_contact(
        &mut self,
        agent: &AgentId,
        at_ms: i64,
        heartbeat: Option<&HeartbeatUpdate>,
    ) -> Result<(), StoreError>;
    fn insert_alert(&mut self, alert: &Alert) -> Result<(), StoreError>;
    fn insert_equivocation(&mut self, evidence: &Equivocation) -> Result<(), StoreError>;
    fn insert_audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError>;

    // ---- policy and ledger ------------------------------------------------------------

    /// Adds a policy version (it must not exist yet).
    fn insert_policy(&mut self, policy: &StoredPolicy) -> Result<(), StoreError>;
    /// Gives an envelope stored before the ledger existed its arrival.
    fn set_arrival(&mut self, agent: &AgentId, seq: u64, arrival: u64) -> Result<(), StoreError>;
    /// Replaces the verdict of a stored envelope.
    fn set_verdict(
        &mut self,
        agent: &AgentId,
        seq: u64,
        verdict: &Verdict,
    ) -> Result<(), StoreError>;
    fn put_entity(&mut self, key: &EntityKey, entity: &Entity) -> Result<(), StoreError>;
    /// Sets the ledger row of (county, slot), creating it; the store refuses a figure below
    /// zero.
    fn put_totals(
        &mut self,
        county: &CountyCode,
        slot: &Slot,
        totals: &Totals,
    ) -> Result<(), StoreError>;
    /// Adds `delta` to the ledger row of (county, slot), creating it at zero; refuses (as
    /// `Corrupt`) a figure that would go below zero or overflow.
    fn add_totals(
        &mut self,
        county: &CountyCode,
        slot: &Slot,
        delta: &TotalsDelta,
    ) -> Result<(), StoreError> {
        let now = self.totals(county, slot)?.unwrap_or_default();
        let next = apply_delta(county, slot, now, delta)?;
        self.put_totals(county, slot, &next)
    }
    fn insert_held(&mut self, entry: &HeldEntry) -> Result<(), StoreError>;
    /// Removes and returns the records waiting for `key`, in arrival order.
    fn take_held_waiting_on(&mut self, key: &EntityKey) -> Result<Vec<HeldRecord>, StoreError>;
    /// Removes and returns the records held since before `cutoff_ms`, in arrival order.
    fn take_held_before(&mut self, cutoff_ms: i64) -> Result<Vec<HeldRecord>, StoreError>;
    fn insert_violation(&mut self, violation: &NewViolation) -> Result<(), StoreError>;
    /// Appends to the feed of changed outcomes; returns the change's id.
    fn insert_outcome_change(
        &mut self,
        agent: &AgentId,
        seq: u64,
        at_ms: i64,
    ) -> Result<u64, StoreError>;

    // ---- the console ------------------------------------------------------------------

    /// Adds a console user; with `replace`, replaces an existing one (and ends its sessions).
    /// Returns false, changing nothing, when the user exists and `replace` is false.
    fn put_console_user(&mut self, user: &ConsoleUser, replace: bool) -> Result<bool, StoreError>;
    fn insert_session(&mut self, session: &ConsoleSession) -> Result<(), StoreError>;
    fn touch_session(&mut self, token_hash: &Digest, now_ms: i64) -> Result<(), StoreError>;
    fn delete_session(&mut self, token_hash: &Digest) -> Result<(), StoreError>;
    fn insert_violation_review(&mut self, review: &ViolationReview) -> Result<(), StoreError>;

    // ---- the transparency log -----------------------------------------------------------

    /// Stores completed perfect subtrees `(level, idx, hash)` of the log.
    fn insert_log_nodes(&mut self, nodes: &[(u8, u64, Digest)]) -> Result<(), StoreError>;
    /// Records that the log now holds `size` leaves (never fewer than before).
    fn set_log_size(&mut self, size: u64) -> Result<(), StoreError>;
    fn insert_log_checkpoint(&mut self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError>;
}

/// `now + delta` for the ledger row of (county, slot); a figure that would go below zero or
/// overflow is damage (`Corrupt`): the rules never take back more than they counted.
pub fn apply_delta(
    county: &CountyCode,
    slot: &Slot,
    now: Totals,
    delta: &TotalsDelta,
) -> Result<Totals, StoreError> {
    now.apply(delta).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "the ledger totals of {county} {} {:?} would go below zero or overflow \
             ({now:?} + {delta:?})",
            slot.year, slot.catalogue
        ))
    })
}

/// One envelope to append, with its hash, its arrival and the hub's verdict.
#[derive(Debug, Clone, Copy)]
pub struct NewEnvelope<'a> {
    pub envelope: &'a tongbu_shared::Envelope,
    pub hash: Digest,
    pub arrival: u64,
    pub verdict: &'a Verdict,
    /// The body parsed as a record, when it is one (the console's record index is filled
    /// from it; other bodies are read as JSON by the store).
    pub record: Option<&'a tongbu_shared::record::Record>,
}

/// A storage backend connection. The closures are called exactly once; they take `&mut dyn
/// FnMut` only so that this trait stays object-safe (see [`read`] and [`write`] for the
/// convenient generic forms).
pub trait Store: Send {
    /// Runs `f` against one consistent snapshot.
    fn read_tx(
        &mut self,
        f: &mut dyn FnMut(&dyn Reads) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Runs `f` in one write transaction: committed (durably) if it returns `Ok`, rolled back
    /// otherwise.
    fn write_tx(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Writes) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
}

/// Marks a rollback that the caller asked for; never escapes [`write`].
const ROLLBACK: &str = "rolled back by the caller";

/// Runs `f` in one write transaction and returns its result. If `f` fails, nothing it wrote
/// is kept and its error is returned as is.
pub fn write<R, E>(
    store: &mut dyn Store,
    f: impl FnOnce(&mut dyn Writes) -> Result<R, E>,
) -> Result<R, E>
where
    E: From<StoreError>,
{
    let mut f = Some(f);
    let mut out: Option<Result<R, E>> = None;
    let tx = store.write_tx(&mut |w| {
        let f = f
            .take()
            .ok_or_else(|| StoreError::Backend("transaction body called twice".into()))?;
        match f(w) {
            Ok(r) => {
                out = Some(Ok(r));
                Ok(())
            }
            Err(e) => {
                out = Some(Err(e));
                Err(StoreError::Backend(ROLLBACK.into()))
            }
        }
    });
    match (tx, out) {
        (_, Some(Err(e))) => Err(e),
        (Ok(()), Some(Ok(r))) => Ok(r),
        (Err(e), _) => Err(e.into()),
        (Ok(()), None) => Err(StoreError::Backend("transaction body never ran".into()).into()),
    }
}

/// Runs `f` against one consistent snapshot and returns its result.
pub fn read<R, E>(store: &mut dyn Store, f: impl FnOnce(&dyn Reads) -> Result<R, E>) -> Result<R, E>
where
    E: From<StoreError>,
{
    let mut f = Some(f);
    let mut out: Option<Result<R, E>> = None;
    let tx = store.read_tx(&mut |r| {
        let f = f
            .take()
            .ok_or_else(|| StoreError::Backend("snapshot body called twice".into()))?;
        out = Some(f(r));
        Ok(())
    });
    match (tx, out) {
        (_, Some(Err(e))) => Err(e),
        (Ok(()), Some(Ok(r))) => Ok(r),
        (Err(e), _) => Err(e.into()),
        (Ok(()), None) => Err(StoreError::Backend("snapshot body never ran".into()).into()),
    }
}
