//! What the hub needs from storage, and nothing more: [`Reads`] inside a consistent snapshot,
//! [`Writes`] inside one atomic transaction, and [`Store`] to open either. Domain modules are
//! written against these traits; only the backend modules (today [`sqlite`]) hold SQL, so a
//! PostgreSQL backend can slot in later.
//!
//! Invariants every backend keeps: a write transaction is all or nothing and is durable when
//! [`Store::write`] returns `Ok`; envelopes are never changed or deleted once stored; for each
//! agent, envelopes `1..=acked_seq` are all present and `head_hash` is the hash of the last.

pub mod sqlite;

use tongbu_shared::crypto::{Digest, PublicKey, Signature};
use tongbu_shared::ids::{AgentId, CountyCode};
use tongbu_shared::protocol::{AgentState, Outcome};

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

/// Queries, answered from one consistent snapshot.
pub trait Reads {
    /// A trivial query, for health checks.
    fn ping(&self) -> Result<(), StoreError>;
    fn county(&self, code: &CountyCode) -> Result<Option<County>, StoreError>;
    fn enroll_token(&self, token_hash: &Digest) -> Result<Option<EnrollToken>, StoreError>;
    fn api_key(&self, key_hash: &Digest) -> Result<Option<ApiKey>, StoreError>;
    fn agent(&self, id: &AgentId) -> Result<Option<AgentRecord>, StoreError>;
    fn agent_by_key(&self, key: &PublicKey) -> Result<Option<AgentId>, StoreError>;
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
}

/// One envelope to append, with its hash and the hub's verdict.
#[derive(Debug, Clone, Copy)]
pub struct NewEnvelope<'a> {
    pub envelope: &'a tongbu_shared::Envelope,
    pub hash: Digest,
    pub outcome: Outcome,
    pub codes: &'a [String],
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
