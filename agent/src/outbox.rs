//! The durable outbox: `<data-dir>/outbox.db`, SQLite in WAL mode with `synchronous=FULL`, so a
//! committed transaction survives a crash or power cut. This is the only module with SQL; the
//! schema lives in `migrations/` (applied in order, tracked by `PRAGMA user_version`).
//!
//! Invariants:
//! - `envelopes` is this agent's chain: seqs 1..=head without gaps, each row's `prev` the
//!   previous row's `hash`; the head is the last row. Rows are never deleted or rewritten,
//!   except `outcome`/`codes`/`detail`, the hub's latest verdict.
//! - An append signs and inserts a whole submission in one `BEGIN IMMEDIATE` transaction: all
//!   records or none, and two processes appending to the same file take turns.
//! - `sync_state.acked_seq` changes only inside a transaction, together with the outcomes,
//!   outcome updates and outcome cursor a verified receipt carried.
//! - `policy` holds the hub's policy bundles exactly as received (payload bytes and signature);
//!   this module stores and returns them unverified, [`crate::policy`] verifies them.
//! - `key_history` holds the keys this agent rotated away from, each with the last seq it
//!   signed ([`KeyRing`]); a rotation the hub has not confirmed yet is one `pending` row.
//! - `hub_log` is the last hub checkpoint this agent verified; `hub_log_findings` the evidence
//!   of every time the hub's log was caught misbehaving (append-only).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde_json::value::RawValue;
use tongbu_shared::checkpoint::{Finding, Trusted};
use tongbu_shared::crypto::{Digest, KeyPair, PublicKey, Signature};
use tongbu_shared::envelope::{Envelope, MAX_BODY_BYTES};
use tongbu_shared::ids::{AgentId, Code, CountyCode};
use tongbu_shared::protocol::{Receipt, RecordOutcome};
use tongbu_shared::record::Kind;

use crate::tls::HubUrl;

/// The schema migrations, in order. `PRAGMA user_version` counts how many were applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_policy_and_outcomes.sql"),
    include_str!("../migrations/0003_key_history.sql"),
    include_str!("../migrations/0004_hub_log.sql"),
];

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite's busy handler for every outbox connection: waits for another connection's write
/// lock in short steps, up to [`BUSY_TIMEOUT`] in all. The intake's and the sync loop's
/// connections take turns writing many times a second; SQLite's own timeout handler sleeps 1,
/// 2, 5, 10 … ms, which stalls a group commit (and the 16 submitters waiting on it) far longer
/// than the transaction it waits for takes.
fn wait_for_the_write_lock(attempts: i32) -> bool {
    match busy_step(attempts) {
        Some(step) => {
            std::thread::sleep(step);
            true
        }
        None => false,
    }
}

/// How long to wait before asking for the write lock again after `attempts` tries: 50 µs
/// steps for the first millisecond, then 1 ms steps; `None` once [`BUSY_TIMEOUT`] has passed.
fn busy_step(attempts: i32) -> Option<Duration> {
    const SHORT_STEPS: u32 = 20;
    const SHORT: Duration = Duration::from_micros(50);
    const LONG: Duration = Duration::from_millis(1);
    let n = u32::try_from(attempts).unwrap_or(0);
    let waited = if n < SHORT_STEPS {
        SHORT * n
    } else {
        SHORT * SHORT_STEPS + LONG * (n - SHORT_STEPS)
    };
    if waited >= BUSY_TIMEOUT {
        return None;
    }
    Some(if n < SHORT_STEPS { SHORT } else { LONG })
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot open the outbox {}: {cause}", path.display())]
    Open {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error(
        "the outbox {} has schema version {found}, newer than this tongbu-agent knows ({known}); upgrade tongbu-agent",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("the outbox is busy: another process has held its write lock for over 5 s; try again")]
    Busy,
    #[error("the outbox database failed: {0}")]
    Sqlite(rusqlite::Error),
    /// The disk is full, or the data directory is read-only, or the disk fails: nothing was
    /// stored; the same request may succeed once space (or write access) returns.
    #[error(
        "unavailable: the outbox cannot be written (the disk is full or the data directory is read-only: {0}); nothing was stored, try again once there is space"
    )]
    Unavailable(String),
    /// The outbox file fails SQLite's integrity check, or is not a database at all.
    #[error(
        "the outbox {} is damaged ({problem}); the agent will not use it: restore it from a backup, or move it aside and enroll afresh",
        path.display()
    )]
    Damaged { path: PathBuf, problem: String },
    #[error("the outbox is damaged: {0}")]
    Corrupt(String),
    #[error("record {index} is {len} bytes, more than the limit of {MAX_BODY_BYTES}")]
    BodyTooLarge { index: usize, len: usize },
    #[error("record {index} is not valid JSON text")]
    NotJson { index: usize },
    #[error(
        "this data directory is not enrolled yet: run `tongbu-agent enroll --hub URL --token T` first"
    )]
    NotEnrolled,
    #[error("this data directory is already enrolled as agent {0}")]
    AlreadyEnrolled(AgentId),
    #[error("the outbox task stopped unexpectedly: {0}")]
    Task(String),
    /// A failure shared by every submission of a group commit (see `Intake::submit_group`).
    #[error("the outbox failed: {0}")]
    Shared(String),
    /// Another writer appended first: the chain's head is no longer the one expected.
    #[error("the outbox head moved from seq {expected} to seq {found} meanwhile; nothing stored")]
    HeadMoved { expected: u64, found: u64 },
}

impl OutboxError {
    /// Whether the failure is the disk's (full, read-only, failing): nothing was stored and
    /// the same request may succeed later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, OutboxError::Unavailable(_) | OutboxError::Busy)
    }

    /// The same failure, for another caller that shared the transaction: busy and
    /// unavailable stay what they are, anything else becomes [`OutboxError::Shared`].
    pub fn echo(&self) -> OutboxError {
        match self {
            OutboxError::Busy => OutboxError::Busy,
            OutboxError::Unavailable(why) => OutboxError::Unavailable(why.clone()),
            other => OutboxError::Shared(other.to_string()),
        }
    }

    /// A corrupt-database error, as the damage of the file at `path`.
    fn at(self, path: &Path) -> OutboxError {
        match self {
            OutboxError::Corrupt(problem) => OutboxError::Damaged {
                path: path.to_owned(),
                problem,
            },
            OutboxError::Open { cause, .. }
                if matches!(
                    cause.sqlite_error_code(),
                    Some(
                        rusqlite::ErrorCode::DiskFull
                            | rusqlite::ErrorCode::ReadOnly
                            | rusqlite::ErrorCode::SystemIoFailure
                            | rusqlite::ErrorCode::CannotOpen
                    )
                ) =>
            {
                OutboxError::Unavailable(format!("{}: {cause}", path.display()))
            }
            OutboxError::Open { cause, .. }
                if matches!(
                    cause.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
                ) =>
            {
                OutboxError::Damaged {
                    path: path.to_owned(),
                    problem: cause.to_string(),
                }
            }
            other => other,
        }
    }
}

impl From<rusqlite::Error> for OutboxError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{
            DatabaseBusy, DatabaseCorrupt, DatabaseLocked, DiskFull, NotADatabase, ReadOnly,
            SystemIoFailure,
        };
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.code, DatabaseBusy | DatabaseLocked) =>
            {
                OutboxError::Busy
            }
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.code, DiskFull | ReadOnly | SystemIoFailure) =>
            {
                OutboxError::Unavailable(e.to_string())
            }
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.code, DatabaseCorrupt | NotADatabase) =>
            {
                OutboxError::Corrupt(e.to_string())
            }
            _ => OutboxError::Sqlite(e),
        }
    }
}

/// What enrollment established: who this agent is and which hub key it trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub agent_id: AgentId,
    pub county: CountyCode,
    pub county_name: String,
    /// The hub's URL and how its TLS certificate is trusted (meta `hub_url` and `hub_tls`).
    pub hub_url: HubUrl,
    /// The hub's signing key, pinned at enrollment: no other key is ever trusted.
    pub hub_public_key: PublicKey,
    /// RFC 3339 UTC time of enrollment.
    pub enrolled_at: String,
}

/// The last envelope of the chain (seq 0 and the genesis hash when there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: Digest,
}

impl Head {
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: Digest::GENESIS,
    };
}

/// One record to append: its exact bytes and the fields kept beside them for people.
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    pub body: &'a [u8],
    pub kind: Kind,
    pub id: &'a Code,
    pub rev: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    pub acked_seq: u64,
    pub acked_hash: Option<Digest>,
    pub last_sync_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_attempt_ms: Option<i64>,
    /// The hub's position in this agent's outcome changes (see `Receipt::outcome_cursor`).
    pub outcome_cursor: u64,
}

/// What a receipt's log proof changed: the checkpoint now trusted (none: forget the old one),
/// the one trusted before, the findings against the hub's log, and the signed checkpoint the
/// hub showed (exact JSON), kept with each finding as evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubLogUpdate {
    pub trusted: Option<Trusted>,
    pub held: Option<Trusted>,
    pub findings: Vec<Finding>,
    pub shown: String,
    pub now_ms: i64,
}

fn record_hub_log_in(tx: &Transaction<'_>, u: &HubLogUpdate) -> Result<(), OutboxError> {
    match &u.trusted {
        Some(t) => tx.execute(
            "INSERT INTO hub_log (id, tree_size, root, hub_time_ms, checked_ms)
             VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET tree_size = excluded.tree_size,
                 root = excluded.root, hub_time_ms = excluded.hub_time_ms,
                 checked_ms = excluded.checked_ms",
            params![to_i64(t.tree_size), &t.root.0[..], t.hub_time_ms, u.now_ms],
        )?,
        None => tx.execute("DELETE FROM hub_log", [])?,
    };
    for f in &u.findings {
        tx.execute(
            "INSERT INTO hub_log_findings (at_ms, kind, detail, held_size, held_root, shown)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                u.now_ms,
                f.kind(),
                f.to_string(),
                u.held.map(|h| to_i64(h.tree_size)),
                u.held.map(|h| h.root.0.to_vec()),
                u.shown
            ],
        )?;
    }
    Ok(())
}

/// A finding against the hub's log, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFindingRow {
    pub kind: String,
    pub detail: String,
    pub at_ms: i64,
}

/// A policy bundle as cached: the hub's exact payload bytes and signature, unverified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    pub version: u64,
    pub payload: Vec<u8>,
    pub sig: Vec<u8>,
    pub fetched_at_ms: i64,
}

/// An envelope row exactly as stored, before any check (for `verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    pub seq: u64,
    pub prev: Vec<u8>,
    pub hash: Vec<u8>,
    pub body: Vec<u8>,
    pub sig: Vec<u8>,
}

impl RawRow {
    /// The envelope this row holds, with the hash stored beside it; or what is wrong with it.
    pub fn to_envelope(&self, agent: &AgentId) -> Result<(Envelope, Digest), String> {
        let prev = Digest::from_slice(&self.prev).ok_or("the stored prev is not 32 bytes")?;
        let hash = Digest::from_slice(&self.hash).ok_or("the stored hash is not 32 bytes")?;
        let sig = Signature::from_slice(&self.sig).ok_or("the stored signature is not 64 bytes")?;
        let envelope = Envelope {
            agent: agent.clone(),
            seq: self.seq,
            prev,
            body: self.body.clone(),
            sig,
        };
        Ok((envelope, hash))
    }
}

/// Counts of records by the hub's latest outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    pub held: u64,
    pub rejected: u64,
}

/// One connection to the outbox.
#[derive(Debug)]
pub struct Outbox {
    conn: Connection,
}

fn to_i64(n: u64) -> i64 {
    // Seqs count records; they cannot reach 2^63.
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64, what: &str) -> Result<u64, OutboxError> {
    u64::try_from(n).map_err(|_| OutboxError::Corrupt(format!("{what} is negative ({n})")))
}

/// A BLOB column's bytes; TEXT is accepted too, since hand edits with SQL functions such as
/// `replace()` turn blobs into text, and `verify` must then report the edit, not fail to read.
fn bytes_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Vec<u8>> {
    Ok(match row.get_ref(idx)? {
        ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
        ValueRef::Null => Vec::new(),
        ValueRef::Integer(i) => i.to_string().into_bytes(),
        ValueRef::Real(r) => r.to_string().into_bytes(),
    })
}

fn head_of(conn: &Connection) -> Result<Head, OutboxError> {
    let row = conn
        .query_row(
            "SELECT seq, hash FROM envelopes ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, bytes_at(r, 1)?)),
        )
        .optional()?;
    match row {
        None => Ok(Head::EMPTY),
        Some((seq, hash)) => {
            let seq = to_u64(seq, "the head seq")?;
            let hash = Digest::from_slice(&hash).ok_or_else(|| {
                OutboxError::Corrupt(format!("seq {seq}: the stored hash is not 32 bytes"))
            })?;
            Ok(Head { seq, hash })
        }
    }
}

fn hash_at(conn: &Connection, seq: u64) -> Result<Option<Digest>, OutboxError> {
    if seq == 0 {
        return Ok(Some(Digest::GENESIS));
    }
    let hash = conn
        .query_row(
            "SELECT hash FROM envelopes WHERE seq = ?1",
            [to_i64(seq)],
            |r| bytes_at(r, 0),
        )
        .optional()?;
    hash.map(|h| {
        Digest::from_slice(&h).ok_or_else(|| {
            OutboxError::Corrupt(format!("seq {seq}: the stored hash is not 32 bytes"))
        })
    })
    .transpose()
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), OutboxError> {
    let version = |c: &Connection| -> Result<i64, OutboxError> {
        Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    };
    if usize::try_from(version(conn)?).is_ok_and(|v| v >= MIGRATIONS.len()) {
        return check_version(version(conn)?, path);
    }
    // Another process may be migrating the same file: take the write lock, then look again.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = version(&tx)?;
    check_version(found, path)?;
    let applied = usize::try_from(found).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn check_version(found: i64, path: &Path) -> Result<(), OutboxError> {
    if usize::try_from(found).is_ok_and(|v| v > MIGRATIONS.len()) {
        return Err(OutboxError::NewerSchema {
            path: path.to_owned(),
            found,
            known: MIGRATIONS.len(),
        });
    }
    Ok(())
}

const META_KEYS: [&str; 7] = [
    "agent_id",
    "county",
    "county_name",
    "hub_url",
    "hub_public_key",
    "enrolled_at",
    // How the hub's certificate is trusted (see `HubTrust::to_stored`); absent in an
    // enrollment made before certificate pinning.
    "hub_tls",
];

impl Outbox {
    /// Opens (creating and migrating when needed) the outbox at `path`. A file that is not a
    /// database, or is damaged where opening reads, is [`OutboxError::Damaged`].
    pub fn open(path: &Path) -> Result<Outbox, OutboxError> {
        Outbox::open_file(path).map_err(|e| e.at(path))
    }

    /// Runs `PRAGMA quick_check` (or the thorough `integrity_check`): a damaged file is
    /// [`OutboxError::Damaged`] naming it.
    pub fn check_integrity(&self, thorough: bool) -> Result<(), OutboxError> {
        let path = self.conn.path().map(PathBuf::from).unwrap_or_default();
        let pragma = if thorough {
            "PRAGMA integrity_check(20)"
        } else {
            "PRAGMA quick_check(20)"
        };
        let rows: Result<Vec<String>, rusqlite::Error> = self
            .conn
            .prepare(pragma)
            .and_then(|mut st| st.query_map([], |r| r.get::<_, String>(0))?.collect());
        match rows {
            Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Ok(()),
            Ok(rows) => Err(OutboxError::Damaged {
                path,
                problem: rows.join("; "),
            }),
            Err(e) => Err(OutboxError::from(e).at(&path)),
        }
    }

    /// Caps the database at `pages` pages on this connection: growing past it fails as a full
    /// disk would (`SQLITE_FULL`). Tests use it to simulate a full disk.
    #[doc(hidden)]
    pub fn set_max_page_count(&self, pages: u64) -> Result<u64, OutboxError> {
        let pages = i64::try_from(pages).unwrap_or(i64::MAX);
        Ok(self
            .conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| u64::try_from(n).unwrap_or(0))?)
    }

    /// How many pages the database file has now.
    #[doc(hidden)]
    pub fn page_count(&self) -> Result<u64, OutboxError> {
        Ok(self
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))?)
    }

    /// Makes this connection refuse writes (`SQLITE_READONLY`), as a read-only disk would; or
    /// lets it write again.
    #[doc(hidden)]
    pub fn set_query_only(&self, on: bool) -> Result<(), OutboxError> {
        self.conn.pragma_update(None, "query_only", on)?;
        Ok(())
    }

    fn open_file(path: &Path) -> Result<Outbox, OutboxError> {
        let open_err = |cause| OutboxError::Open {
            path: path.to_owned(),
            cause,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_handler(Some(wait_for_the_write_lock))
            .map_err(open_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OutboxError::Corrupt(format!(
                "cannot switch {} to WAL mode (it stays in {mode} mode)",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        migrate(&mut conn, path)?;
        Ok(Outbox { conn })
    }

    /// The enrollment, or `None` when this agent is not enrolled yet.
    pub fn enrollment(&self) -> Result<Option<Enrollment>, OutboxError> {
        let mut stmt = self.conn.prepare_cached("SELECT key, value FROM meta")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut values: [Option<String>; 7] = Default::default();
        for row in rows {
            let (key, value) = row?;
            if let Some(i) = META_KEYS.iter().position(|k| *k == key) {
                values[i] = Some(value);
            }
        }
        let [
            agent_id,
            county,
            county_name,
            hub_url,
            hub_key,
            enrolled_at,
            hub_tls,
        ] = values;
        let Some(agent_id) = agent_id else {
            return Ok(None);
        };
        let bad =
            |what: &str, problem: String| OutboxError::Corrupt(format!("meta `{what}`: {problem}"));
        let need = |what: &str, v: Option<String>| v.ok_or_else(|| bad(what, "is missing".into()));
        let agent_id = AgentId::parse(&agent_id).map_err(|e| bad("agent_id", e.0))?;
        let county = CountyCode::parse(&need("county", county)?).map_err(|e| bad("county", e.0))?;
        let hub_public_key = PublicKey::from_base64(&need("hub_public_key", hub_key)?)
            .map_err(|e| bad("hub_public_key", e.to_string()))?;
        let hub_url = HubUrl::from_stored(&need("hub_url", hub_url)?, hub_tls.as_deref())
            .map_err(|e| bad("hub_tls", e.to_string()))?;
        Ok(Some(Enrollment {
            agent_id,
            county,
            county_name: county_name.unwrap_or_default(),
            hub_url,
            hub_public_key,
            enrolled_at: enrolled_at.unwrap_or_default(),
        }))
    }

    /// Stores the enrollment; refuses when one is already stored.
    pub fn save_enrollment(&mut self, e: &Enrollment) -> Result<(), OutboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'agent_id'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(existing) = existing {
            let id = AgentId::parse(&existing).unwrap_or_else(|_| e.agent_id.clone());
            return Err(OutboxError::AlreadyEnrolled(id));
        }
        let values = [
            e.agent_id.to_string(),
            e.county.to_string(),
            e.county_name.clone(),
            e.hub_url.as_str().to_owned(),
            e.hub_public_key.to_base64(),
            e.enrolled_at.clone(),
            e.hub_url.trust().to_stored(),
        ];
        for (key, value) in META_KEYS.iter().zip(values) {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Points an enrolled agent at the hub's new address and TLS trust, in one transaction.
    /// The hub's signing key stays pinned, so a different server at the new address is still
    /// refused.
    pub fn set_hub_url(&mut self, hub: &HubUrl) -> Result<(), OutboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'hub_url'",
            params![hub.as_str()],
        )?;
        if changed == 0 {
            return Err(OutboxError::NotEnrolled);
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('hub_tls', ?1)",
            params![hub.trust().to_stored()],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn head(&self) -> Result<Head, OutboxError> {
        head_of(&self.conn)
    }

    /// The stored hash of the envelope at `seq` (genesis for 0), `None` past the head.
    pub fn hash_at(&self, seq: u64) -> Result<Option<Digest>, OutboxError> {
        hash_at(&self.conn, seq)
    }

    /// Signs `records` in order as the next envelopes of `agent`'s chain and stores them, all
    /// or none, in one transaction. Returns their seqs once the transaction has committed.
    pub fn append(
        &mut self,
        key: &KeyPair,
        agent: &AgentId,
        records: &[NewRecord<'_>],
        now_ms: i64,
    ) -> Result<Vec<u64>, OutboxError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let seqs = append_in(&tx, key, agent, records, now_ms)?;
        tx.commit()?;
        Ok(seqs)
    }

    /// Like [`Outbox::append`], but only while the chain's head is still `expected_head`: a
    /// caller that judged the records against the chain as it was gets
    /// [`OutboxError::HeadMoved`] (and nothing stored) when another writer appended meanwhile.
    pub fn append_at(
        &mut self,
        key: &KeyPair,
        agent: &AgentId,
        expected_head: u64,
        records: &[NewRecord<'_>],
        now_ms: i64,
    ) -> Result<Vec<u64>, OutboxError> {
        let mut seqs = self.append_groups(key, agent, expected_head, &[records], now_ms)?;
        Ok(seqs.pop().unwrap_or_default())
    }

    /// Group commit: appends several submissions, one after the other, in one transaction
    /// (one fsync), while the chain's head is still `expected_head`; all are stored or none.
    /// Returns each group's seqs.
    pub fn append_groups(
        &mut self,
        key: &KeyPair,
        agent: &AgentId,
        expected_head: u64,
        groups: &[&[NewRecord<'_>]],
        now_ms: i64,
    ) -> Result<Vec<Vec<u64>>, OutboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = head_of(&tx)?.seq;
        if found != expected_head {
            return Err(OutboxError::HeadMoved {
                expected: expected_head,
                found,
            });
        }
        let seqs = groups
            .iter()
            .map(|records| append_in(&tx, key, agent, records, now_ms))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        Ok(seqs)
    }

    /// Up to `limit` stored record bodies after `after_seq`, in seq order, with their seqs.
    pub fn bodies_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, OutboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, body FROM envelopes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![to_i64(after_seq), limit], |r| {
            Ok((r.get::<_, i64>(0)?, bytes_at(r, 1)?))
        })?;
        rows.map(|row| {
            let (seq, body) = row?;
            Ok((to_u64(seq, "a seq")?, body))
        })
        .collect()
    }

    pub fn sync_state(&self) -> Result<SyncState, OutboxError> {
        let row = self.conn.query_row(
            "SELECT acked_seq, acked_hash, last_sync_ms, last_error, last_attempt_ms,
                    outcome_cursor
             FROM sync_state WHERE id = 1",
            [],
            |r| {
                let hash = match r.get_ref(1)? {
                    ValueRef::Null => None,
                    _ => Some(bytes_at(r, 1)?),
                };
                Ok((
                    r.get::<_, i64>(0)?,
                    hash,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            },
        )?;
        let (acked_seq, acked_hash, last_sync_ms, last_error, last_attempt_ms, cursor) = row;
        Ok(SyncState {
            acked_seq: to_u64(acked_seq, "acked_seq")?,
            acked_hash: acked_hash.and_then(|h| Digest::from_slice(&h)),
            last_sync_ms,
            last_error,
            last_attempt_ms,
            outcome_cursor: to_u64(cursor, "outcome_cursor")?,
        })
    }

    /// Up to `limit` rows after `after_seq`, in seq order, as stored.
    pub fn rows_after(&self, after_seq: u64, limit: usize) -> Result<Vec<RawRow>, OutboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, prev, hash, body, sig FROM envelopes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![to_i64(after_seq), limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                bytes_at(r, 1)?,
                bytes_at(r, 2)?,
                bytes_at(r, 3)?,
                bytes_at(r, 4)?,
            ))
        })?;
        rows.map(|row| {
            let (seq, prev, hash, body, sig) = row?;
            Ok(RawRow {
                seq: to_u64(seq, "a seq")?,
                prev,
                hash,
                body,
                sig,
            })
        })
        .collect()
    }

    /// Up to `limit` envelopes after `after_seq`, each with its stored hash.
    pub fn envelopes_after(
        &self,
        agent: &AgentId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(Envelope, Digest)>, OutboxError> {
        self.rows_after(after_seq, limit)?
            .iter()
            .map(|row| {
                row.to_envelope(agent)
                    .map_err(|problem| OutboxError::Corrupt(format!("seq {}: {problem}", row.seq)))
            })
            .collect()
    }

    /// Sets how far the hub holds the chain, after reconciling with its watermark.
    pub fn set_acked(&mut self, seq: u64, hash: Digest) -> Result<(), OutboxError> {
        self.conn.execute(
            "UPDATE sync_state SET acked_seq = ?1, acked_hash = ?2 WHERE id = 1",
            params![to_i64(seq), &hash.0[..]],
        )?;
        Ok(())
    }

    /// Applies a verified, checked receipt in one transaction: the new acknowledged head, each
    /// record's outcome, the outcome updates (oldest first, so the latest wins) and the new
    /// outcome cursor. Outcomes for seqs this outbox does not hold are ignored. A resend's
    /// outcome only fills in an outcome that is missing: a later change may already be stored.
    pub fn apply_receipt(&mut self, receipt: &Receipt) -> Result<(), OutboxError> {
        self.apply_receipt_with_log(receipt, None, None)
    }

    /// [`Outbox::apply_receipt`], and in the same transaction what the receipt's log proof
    /// changed (the checkpoint now trusted and the findings; see
    /// [`HubLogUpdate`]).
    /// With `synced` (time, problem), the receipt completes a sync round, recorded in the same
    /// transaction as by [`Outbox::record_sync`]: whoever sees everything acknowledged sees the
    /// round's time too.
    pub fn apply_receipt_with_log(
        &mut self,
        receipt: &Receipt,
        log: Option<&HubLogUpdate>,
        synced: Option<(i64, Option<&str>)>,
    ) -> Result<(), OutboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(update) = log {
            record_hub_log_in(&tx, update)?;
        }
        if let Some((now_ms, problem)) = synced {
            tx.execute(
                "UPDATE sync_state SET last_sync_ms = ?1, last_attempt_ms = ?1, last_error = ?2
                 WHERE id = 1",
                params![now_ms, problem],
            )?;
        }
        tx.execute(
            "UPDATE sync_state SET acked_seq = ?1, acked_hash = ?2, outcome_cursor = ?3
             WHERE id = 1",
            params![
                to_i64(receipt.acked_seq),
                &receipt.head_hash.0[..],
                to_i64(receipt.outcome_cursor)
            ],
        )?;
        {
            let mut fresh = tx.prepare_cached(
                "UPDATE envelopes SET outcome = ?2, codes = ?3, detail = ?4 WHERE seq = ?1",
            )?;
            let mut resent = tx.prepare_cached(
                "UPDATE envelopes SET outcome = ?2, codes = ?3, detail = ?4
                 WHERE seq = ?1 AND outcome IS NULL",
            )?;
            for o in &receipt.outcomes {
                let stmt = if o.duplicate { &mut resent } else { &mut fresh };
                stmt.execute(outcome_params(o))?;
            }
            for o in &receipt.updates {
                fresh.execute(outcome_params(o))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The last hub checkpoint this agent verified.
    pub fn hub_log(&self) -> Result<Option<Trusted>, OutboxError> {
        let row = self
            .conn
            .query_row(
                "SELECT tree_size, root, hub_time_ms FROM hub_log WHERE id = 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, bytes_at(r, 1)?, r.get::<_, i64>(2)?)),
            )
            .optional()?;
        row.map(|(size, root, hub_time_ms)| {
            Ok(Trusted {
                tree_size: to_u64(size, "hub_log.tree_size")?,
                root: Digest::from_slice(&root)
                    .ok_or_else(|| OutboxError::Corrupt("hub_log.root is not 32 bytes".into()))?,
                hub_time_ms,
            })
        })
        .transpose()
    }

    /// How many findings against the hub's log were recorded, and the latest one.
    pub fn hub_log_findings(&self) -> Result<(u64, Option<LogFindingRow>), OutboxError> {
        let count: i64 = self
            .conn
            .query_row("SELECT count(*) FROM hub_log_findings", [], |r| r.get(0))?;
        let last = self
            .conn
            .query_row(
                "SELECT kind, detail, at_ms FROM hub_log_findings ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok((
            to_u64(count, "finding count")?,
            last.map(|(kind, detail, at_ms)| LogFindingRow {
                kind,
                detail,
                at_ms,
            }),
        ))
    }

    /// The newest cached policy bundle, as stored (unverified).
    pub fn latest_policy(&self) -> Result<Option<StoredPolicy>, OutboxError> {
        let row = self
            .conn
            .query_row(
                "SELECT version, payload, sig, fetched_at_ms FROM policy
                 ORDER BY version DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        bytes_at(r, 1)?,
                        bytes_at(r, 2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(version, payload, sig, fetched_at_ms)| {
            Ok(StoredPolicy {
                version: to_u64(version, "a policy version")?,
                payload,
                sig,
                fetched_at_ms,
            })
        })
        .transpose()
    }

    /// The newest cached policy version (a cheap look, to notice a new bundle).
    pub fn latest_policy_version(&self) -> Result<Option<u64>, OutboxError> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT max(version) FROM policy", [], |r| r.get(0))?;
        v.map(|v| to_u64(v, "a policy version")).transpose()
    }

    /// Caches a policy bundle exactly as received. The caller has verified it and decided it
    /// may be stored; a row of the same version is replaced (only a damaged one ever is).
    pub fn save_policy(&mut self, policy: &StoredPolicy) -> Result<(), OutboxError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO policy (version, payload, sig, fetched_at_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                to_i64(policy.version),
                &policy.payload,
                &policy.sig,
                policy.fetched_at_ms
            ],
        )?;
        Ok(())
    }

    /// Records a successful sync round at `now_ms`, clearing the last error.
    pub fn record_success(&mut self, now_ms: i64) -> Result<(), OutboxError> {
        self.record_sync(now_ms, None)
    }

    /// Records a sync round at `now_ms` that sent everything; `problem` is what still went
    /// wrong beside it (e.g. a policy bundle refused), kept as the last error, or `None`.
    pub fn record_sync(&mut self, now_ms: i64, problem: Option<&str>) -> Result<(), OutboxError> {
        self.conn.execute(
            "UPDATE sync_state SET last_sync_ms = ?1, last_attempt_ms = ?1, last_error = ?2
             WHERE id = 1",
            params![now_ms, problem],
        )?;
        Ok(())
    }

    /// Records a failed sync round at `now_ms` with a one-line message.
    pub fn record_failure(&mut self, message: &str, now_ms: i64) -> Result<(), OutboxError> {
        self.conn.execute(
            "UPDATE sync_state SET last_error = ?1, last_attempt_ms = ?2 WHERE id = 1",
            params![message, now_ms],
        )?;
        Ok(())
    }

    pub fn outcome_counts(&self) -> Result<OutcomeCounts, OutboxError> {
        let count = |outcome: &str| -> Result<u64, OutboxError> {
            let n: i64 = self.conn.query_row(
                "SELECT count(*) FROM envelopes WHERE outcome = ?1",
                [outcome],
                |r| r.get(0),
            )?;
            to_u64(n, "a count")
        };
        Ok(OutcomeCounts {
            held: count("held")?,
            rejected: count("rejected")?,
        })
    }
}

fn outcome_params(o: &RecordOutcome) -> impl rusqlite::Params + '_ {
    let codes = (!o.codes.is_empty()).then(|| o.codes.join(","));
    (
        to_i64(o.seq),
        o.outcome.as_str(),
        codes,
        o.detail.as_deref(),
    )
}

fn append_in(
    tx: &Transaction<'_>,
    key: &KeyPair,
    agent: &AgentId,
    records: &[NewRecord<'_>],
    now_ms: i64,
) -> Result<Vec<u64>, OutboxError> {
    let head = head_of(tx)?;
    for (i, r) in records.iter().enumerate() {
        if r.body.len() > MAX_BODY_BYTES {
            return Err(OutboxError::BodyTooLarge {
                index: i + 1,
                len: r.body.len(),
            });
        }
        // The body travels to the hub as raw JSON, so it must be JSON text; checked here so a
        // stored record can always be sent.
        if serde_json::from_slice::<&RawValue>(r.body).is_err() {
            return Err(OutboxError::NotJson { index: i + 1 });
        }
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO envelopes (seq, prev, hash, body, sig, kind, record_id, rev, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut insert = |r: &NewRecord<'_>, link: &Link| -> Result<u64, OutboxError> {
        stmt.execute(params![
            to_i64(link.seq),
            &link.prev.0[..],
            &link.hash.0[..],
            r.body,
            &link.sig.0[..],
            r.kind.as_str(),
            r.id.as_str(),
            r.rev,
            now_ms,
        ])?;
        Ok(link.seq)
    };
    if records.len() < PARALLEL_SIGNING_FROM {
        let mut links = Links::new(key, agent, head.seq, head.hash);
        return records
            .iter()
            .map(|r| insert(r, &links.next(r.body)))
            .collect();
    }
    // Signing is strictly sequential (each envelope's prev is the last one's hash, which
    // covers its signature) and is most of the work: one thread signs while this one, which
    // owns the transaction, inserts what it has signed.
    std::thread::scope(|scope| {
        let (send, signed) = std::sync::mpsc::sync_channel::<Link>(SIGNED_AHEAD);
        scope.spawn(move || {
            let mut links = Links::new(key, agent, head.seq, head.hash);
            for r in records {
                if send.send(links.next(r.body)).is_err() {
                    // The inserting side failed and stopped listening.
                    return;
                }
            }
        });
        records
            .iter()
            .map(|r| {
                let link = signed
                    .recv()
                    .map_err(|_| OutboxError::Task("the signing thread stopped".into()))?;
                insert(r, &link)
            })
            .collect()
    })
}

/// Submissions of at least this many records are signed on a second thread.
const PARALLEL_SIGNING_FROM: usize = 256;
/// How many signed envelopes may wait to be inserted.
const SIGNED_AHEAD: usize = 1024;

/// One envelope's place in the chain: what is stored beside its body.
struct Link {
    seq: u64,
    prev: Digest,
    hash: Digest,
    sig: Signature,
}

/// Signs bodies one after the other into the chain after `(seq, hash)`.
struct Links<'a> {
    key: &'a KeyPair,
    agent: &'a AgentId,
    seq: u64,
    prev: Digest,
}

impl<'a> Links<'a> {
    fn new(key: &'a KeyPair, agent: &'a AgentId, seq: u64, prev: Digest) -> Links<'a> {
        Links {
            key,
            agent,
            seq,
            prev,
        }
    }

    fn next(&mut self, body: &[u8]) -> Link {
        self.seq += 1;
        let e = Envelope::sign(
            self.key,
            self.agent.clone(),
            self.seq,
            self.prev,
            body.to_vec(),
        );
        let link = Link {
            seq: self.seq,
            prev: self.prev,
            hash: e.hash(),
            sig: e.sig,
        };
        self.prev = link.hash;
        link
    }
}

/// An outbox connection used from async code: each call runs on tokio's blocking pool, so a
/// slow fsync or a wait for another writer's lock never stalls the runtime. Each component
/// (the intake server, the sync loop) opens its own; SQLite orders their writes.
/// The keys that signed this agent's chain: retired keys with the last seq each signed, then
/// the current key for everything after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing {
    pub current: PublicKey,
    /// `(key, last_seq)`, by `last_seq`.
    pub retired: Vec<(PublicKey, u64)>,
}

impl From<PublicKey> for KeyRing {
    fn from(current: PublicKey) -> KeyRing {
        KeyRing {
            current,
            retired: Vec::new(),
        }
    }
}

impl KeyRing {
    /// The key that signed envelope `seq`.
    pub fn for_seq(&self, seq: u64) -> &PublicKey {
        self.retired
            .iter()
            .find(|(_, last)| seq <= *last)
            .map_or(&self.current, |(k, _)| k)
    }
}

/// A key rotation the hub has not confirmed yet: the old key and the last seq it signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRotation {
    pub old_key: PublicKey,
    pub last_old_seq: u64,
}

impl Outbox {
    /// The retired keys (confirmed rotations), by the last seq each signed.
    pub fn retired_keys(&self) -> Result<Vec<(PublicKey, u64)>, OutboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT public_key, last_seq FROM key_history WHERE state = 'retired' \
             ORDER BY last_seq, at_ms",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(k, seq)| {
                let k = <[u8; 32]>::try_from(k.as_slice())
                    .map_err(|_| OutboxError::Corrupt("key_history.public_key".into()))?;
                let seq = u64::try_from(seq)
                    .map_err(|_| OutboxError::Corrupt("key_history.last_seq".into()))?;
                Ok((PublicKey(k), seq))
            })
            .collect()
    }

    /// The key ring with `current` as the current key.
    pub fn key_ring(&self, current: PublicKey) -> Result<KeyRing, OutboxError> {
        Ok(KeyRing {
            current,
            retired: self.retired_keys()?,
        })
    }

    /// Starts a rotation away from `old_key`: notes it as pending with the chain's head as the
    /// last seq the old key signs, in a transaction that holds the write lock, so no append
    /// slips in between. Returns that seq.
    pub fn begin_rotation(&mut self, old_key: &PublicKey, now_ms: i64) -> Result<u64, OutboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let head = head_of(&tx)?.seq;
        tx.execute("DELETE FROM key_history WHERE state = 'pending'", [])?;
        tx.execute(
            "INSERT INTO key_history (public_key, last_seq, state, at_ms) VALUES (?1, ?2, 'pending', ?3)",
            params![&old_key.0[..], i64::try_from(head).unwrap_or(i64::MAX), now_ms],
        )?;
        tx.commit()?;
        Ok(head)
    }

    /// The rotation the hub has not confirmed yet, if any.
    pub fn pending_rotation(&self) -> Result<Option<PendingRotation>, OutboxError> {
        let row = self
            .conn
            .query_row(
                "SELECT public_key, last_seq FROM key_history WHERE state = 'pending'",
                [],
                |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?;
        row.map(|(k, seq)| {
            Ok(PendingRotation {
                old_key: PublicKey(
                    <[u8; 32]>::try_from(k.as_slice())
                        .map_err(|_| OutboxError::Corrupt("key_history.public_key".into()))?,
                ),
                last_old_seq: u64::try_from(seq)
                    .map_err(|_| OutboxError::Corrupt("key_history.last_seq".into()))?,
            })
        })
        .transpose()
    }

    /// The hub confirmed the pending rotation: its old key is retired.
    pub fn confirm_rotation(&mut self) -> Result<(), OutboxError> {
        self.conn.execute(
            "UPDATE key_history SET state = 'retired' WHERE state = 'pending'",
            [],
        )?;
        Ok(())
    }

    /// The hub did not take the pending rotation: forget it.
    pub fn abandon_rotation(&mut self) -> Result<(), OutboxError> {
        self.conn
            .execute("DELETE FROM key_history WHERE state = 'pending'", [])?;
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct SharedOutbox(Arc<Mutex<Outbox>>);

impl SharedOutbox {
    pub fn new(outbox: Outbox) -> SharedOutbox {
        SharedOutbox(Arc::new(Mutex::new(outbox)))
    }

    pub async fn call<R, F>(&self, f: F) -> Result<R, OutboxError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Outbox) -> Result<R, OutboxError> + Send + 'static,
    {
        let inner = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            // A panic mid-call cannot leave SQLite half-written (an open transaction rolls back
            // when dropped), so a poisoned lock still guards a consistent connection.
            let mut outbox = inner.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut outbox)
        })
        .await
        .map_err(|e| OutboxError::Task(e.to_string()))?
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_wait_for_the_write_lock_is_short_steps_then_gives_up_after_the_timeout() {
        assert_eq!(busy_step(0), Some(Duration::from_micros(50)));
        assert_eq!(busy_step(19), Some(Duration::from_micros(50)));
        assert_eq!(busy_step(20), Some(Duration::from_millis(1)));
        let steps: Vec<Duration> = (0..).map_while(busy_step).collect();
        let total: Duration = steps.iter().sum();
        assert!(
            total >= BUSY_TIMEOUT - Duration::from_millis(1),
            "{total:?}"
        );
        assert!(total <= BUSY_TIMEOUT, "{total:?}");
        assert_eq!(busy_step(i32::MAX), None);
    }
    use proptest::prelude::*;
    use tongbu_shared::envelope::verify_run;
    use tongbu_shared::protocol::Outcome;

    pub(crate) fn agent() -> AgentId {
        AgentId::parse("430112-3f9a0c1d").unwrap()
    }

    pub(crate) fn key() -> KeyPair {
        KeyPair::from_seed(&[7; 32]).unwrap()
    }

    pub(crate) fn body(n: u64) -> Vec<u8> {
        format!(
            r#"{{"kind":"payment","id":"P-{n}","rev":1,"county":"430112","contract_id":"C-1","amount_fen":100,"paid_on":"2024-04-01","voucher_no":"V{n}"}}"#
        )
        .into_bytes()
    }

    fn code(s: &str) -> Code {
        Code::parse(s).unwrap()
    }

    /// Appends `bodies` as payments; `None` stands for a body that must be refused.
    fn append(outbox: &mut Outbox, bodies: &[Option<Vec<u8>>]) -> Result<Vec<u64>, OutboxError> {
        let id = code("P-1");
        let too_big = vec![b' '; MAX_BODY_BYTES + 1];
        let records: Vec<NewRecord<'_>> = bodies
            .iter()
            .map(|b| NewRecord {
                body: b.as_deref().unwrap_or(&too_big),
                kind: Kind::Payment,
                id: &id,
                rev: 1,
            })
            .collect();
        outbox.append(&key(), &agent(), &records, 1_000)
    }

    fn verify_all(outbox: &Outbox) -> Digest {
        let envelopes: Vec<Envelope> = outbox
            .envelopes_after(&agent(), 0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(e, stored)| {
                assert_eq!(e.hash(), stored, "stored hash of seq {}", e.seq);
                e
            })
            .collect();
        verify_run(
            &key().public_key(),
            &agent(),
            0,
            Digest::GENESIS,
            &envelopes,
        )
        .unwrap()
    }

    #[test]
    fn append_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        append(&mut outbox, &[Some(body(1)), Some(body(2))]).unwrap();
        let before = outbox.head().unwrap();
        assert_eq!(before.seq, 2);

        let err = append(&mut outbox, &[Some(body(3)), None, Some(body(5))]).unwrap_err();
        assert!(
            matches!(err, OutboxError::BodyTooLarge { index: 2, .. }),
            "{err}"
        );
        let err = append(&mut outbox, &[Some(body(3)), Some(b"not json".to_vec())]).unwrap_err();
        assert!(matches!(err, OutboxError::NotJson { index: 2 }), "{err}");
        assert_eq!(outbox.head().unwrap(), before);
        assert_eq!(outbox.rows_after(0, 100).unwrap().len(), 2);

        assert_eq!(append(&mut outbox, &[Some(body(3))]).unwrap(), vec![3]);
        verify_all(&outbox);
    }

    #[test]
    fn a_large_submission_signed_on_a_second_thread_makes_the_same_chain() {
        let bodies: Vec<Option<Vec<u8>>> = (1..=700).map(|n| Some(body(n))).collect();
        let dir = tempfile::tempdir().unwrap();
        // One submission of 700 (signed beside the inserts) ...
        let mut one = Outbox::open(&dir.path().join("one.db")).unwrap();
        assert_eq!(
            append(&mut one, &bodies).unwrap(),
            (1..=700).collect::<Vec<_>>()
        );
        // ... and seven of 100 (signed in line) end in the same chain, row for row.
        let mut seven = Outbox::open(&dir.path().join("seven.db")).unwrap();
        for chunk in bodies.chunks(100) {
            append(&mut seven, chunk).unwrap();
        }
        assert_eq!(verify_all(&one), verify_all(&seven));
        assert_eq!(
            one.rows_after(0, 1000).unwrap(),
            seven.rows_after(0, 1000).unwrap()
        );
        // A bad record anywhere in a large submission still stores nothing of it.
        let mut bad = bodies.clone();
        bad[650] = Some(b"not json".to_vec());
        let err = append(&mut one, &bad).unwrap_err();
        assert!(matches!(err, OutboxError::NotJson { index: 651 }), "{err}");
        assert_eq!(one.head().unwrap().seq, 700);
    }

    #[test]
    fn the_chain_continues_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        {
            let mut outbox = Outbox::open(&path).unwrap();
            assert_eq!(outbox.head().unwrap(), Head::EMPTY);
            append(&mut outbox, &[Some(body(1)), Some(body(2))]).unwrap();
        }
        let mut outbox = Outbox::open(&path).unwrap();
        let head = outbox.head().unwrap();
        assert_eq!(head.seq, 2);
        assert_eq!(append(&mut outbox, &[Some(body(3))]).unwrap(), vec![3]);
        let rows = outbox.rows_after(2, 10).unwrap();
        assert_eq!(rows[0].prev, head.hash.0.to_vec());
        assert_eq!(verify_all(&outbox), outbox.head().unwrap().hash);
    }

    #[test]
    fn a_second_connection_appends_after_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let mut a = Outbox::open(&path).unwrap();
        let mut b = Outbox::open(&path).unwrap();
        append(&mut a, &[Some(body(1))]).unwrap();
        assert_eq!(append(&mut b, &[Some(body(2))]).unwrap(), vec![2]);
        assert_eq!(append(&mut a, &[Some(body(3))]).unwrap(), vec![3]);
        verify_all(&a);
    }

    /// A receipt acknowledging `acked_seq` with the local hash there.
    pub(crate) fn receipt(
        outbox: &Outbox,
        acked_seq: u64,
        outcomes: Vec<RecordOutcome>,
        updates: Vec<RecordOutcome>,
        outcome_cursor: u64,
    ) -> Receipt {
        Receipt {
            agent_id: agent(),
            acked_seq,
            head_hash: outbox.hash_at(acked_seq).unwrap().unwrap(),
            outcomes,
            hub_time_ms: 0,
            updates,
            outcome_cursor,
            policy_version: 0,
            log: None,
        }
    }

    fn outcome(seq: u64, outcome: Outcome, codes: &[&str]) -> RecordOutcome {
        RecordOutcome {
            seq,
            outcome,
            codes: codes.iter().map(|c| c.to_string()).collect(),
            duplicate: false,
            detail: (!codes.is_empty()).then(|| format!("{}: why", codes[0])),
            policy_version: None,
        }
    }

    fn stored_outcome(
        outbox: &Outbox,
        seq: u64,
    ) -> (Option<String>, Option<String>, Option<String>) {
        outbox
            .conn
            .query_row(
                "SELECT outcome, codes, detail FROM envelopes WHERE seq = ?1",
                [to_i64(seq)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
    }

    #[test]
    fn receipts_set_acked_and_outcomes_together() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        append(&mut outbox, &[Some(body(1)), Some(body(2)), Some(body(3))]).unwrap();
        let h2 = outbox.hash_at(2).unwrap().unwrap();
        let r = receipt(
            &outbox,
            2,
            vec![
                outcome(1, Outcome::Accepted, &[]),
                outcome(2, Outcome::Rejected, &["BUDGET_EXCEEDED", "DATE_ORDER"]),
                outcome(99, Outcome::Held, &[]),
            ],
            Vec::new(),
            0,
        );
        outbox.apply_receipt(&r).unwrap();
        let state = outbox.sync_state().unwrap();
        assert_eq!((state.acked_seq, state.acked_hash), (2, Some(h2)));
        assert_eq!(
            stored_outcome(&outbox, 2),
            (
                Some("rejected".into()),
                Some("BUDGET_EXCEEDED,DATE_ORDER".into()),
                Some("BUDGET_EXCEEDED: why".into())
            )
        );
        assert_eq!(
            outbox.outcome_counts().unwrap(),
            OutcomeCounts {
                held: 0,
                rejected: 1
            }
        );
        outbox.record_failure("network: down", 5).unwrap();
        assert_eq!(
            outbox.sync_state().unwrap().last_error.as_deref(),
            Some("network: down")
        );
        outbox.record_success(6).unwrap();
        let state = outbox.sync_state().unwrap();
        assert_eq!(
            (state.last_error, state.last_sync_ms, state.last_attempt_ms),
            (None, Some(6), Some(6))
        );
        outbox.record_sync(7, Some("policy_rollback: x")).unwrap();
        let state = outbox.sync_state().unwrap();
        assert_eq!(
            (state.last_error.as_deref(), state.last_sync_ms),
            (Some("policy_rollback: x"), Some(7))
        );
    }

    #[test]
    fn outcome_updates_and_the_cursor_ride_with_the_ack() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        append(&mut outbox, &[Some(body(1)), Some(body(2)), Some(body(3))]).unwrap();
        let held = vec![
            outcome(1, Outcome::Held, &["AWAITING_CONTRACT"]),
            outcome(2, Outcome::Held, &["AWAITING_CONTRACT"]),
        ];
        outbox
            .apply_receipt(&receipt(&outbox, 2, held, Vec::new(), 4))
            .unwrap();
        assert_eq!(outbox.outcome_counts().unwrap().held, 2);
        assert_eq!(outbox.sync_state().unwrap().outcome_cursor, 4);

        // Seq 1 is accepted later, seq 2 rejected (the latest update wins); seq 3 arrives as a
        // resend whose stale outcome must not undo an update.
        let mut resend = outcome(1, Outcome::Held, &["AWAITING_CONTRACT"]);
        resend.duplicate = true;
        let fresh = outcome(3, Outcome::Accepted, &[]);
        let updates = vec![
            outcome(1, Outcome::Accepted, &[]),
            outcome(2, Outcome::Accepted, &[]),
            outcome(2, Outcome::Rejected, &["UNKNOWN_CONTRACT"]),
        ];
        outbox
            .apply_receipt(&receipt(&outbox, 3, vec![resend, fresh], updates, 7))
            .unwrap();
        assert_eq!(
            stored_outcome(&outbox, 1),
            (Some("accepted".into()), None, None)
        );
        assert_eq!(
            stored_outcome(&outbox, 2),
            (
                Some("rejected".into()),
                Some("UNKNOWN_CONTRACT".into()),
                Some("UNKNOWN_CONTRACT: why".into())
            )
        );
        assert_eq!(stored_outcome(&outbox, 3).0.as_deref(), Some("accepted"));
        assert_eq!(
            outbox.outcome_counts().unwrap(),
            OutcomeCounts {
                held: 0,
                rejected: 1
            }
        );
        let state = outbox.sync_state().unwrap();
        assert_eq!((state.acked_seq, state.outcome_cursor), (3, 7));
    }

    #[test]
    fn appending_at_a_stale_head_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        append(&mut outbox, &[Some(body(1))]).unwrap();
        let id = code("P-2");
        let b = body(2);
        let rec = [NewRecord {
            body: &b,
            kind: Kind::Payment,
            id: &id,
            rev: 1,
        }];
        let err = outbox.append_at(&key(), &agent(), 0, &rec, 1).unwrap_err();
        assert!(
            matches!(
                err,
                OutboxError::HeadMoved {
                    expected: 0,
                    found: 1
                }
            ),
            "{err}"
        );
        assert_eq!(outbox.head().unwrap().seq, 1);
        assert_eq!(
            outbox.append_at(&key(), &agent(), 1, &rec, 1).unwrap(),
            vec![2]
        );
        assert_eq!(outbox.bodies_after(1, 10).unwrap(), vec![(2, b)]);
    }

    #[test]
    fn a_schema_1_outbox_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute("UPDATE sync_state SET last_error = 'old'", [])
                .unwrap();
        }
        let mut outbox = Outbox::open(&path).unwrap();
        let state = outbox.sync_state().unwrap();
        assert_eq!(
            (state.last_error.as_deref(), state.outcome_cursor),
            (Some("old"), 0)
        );
        assert_eq!(outbox.latest_policy().unwrap(), None);
        append(&mut outbox, &[Some(body(1))]).unwrap();
        assert_eq!(stored_outcome(&outbox, 1), (None, None, None));
        let version: i64 = outbox
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[test]
    fn enrollment_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        assert_eq!(outbox.enrollment().unwrap(), None);
        let e = Enrollment {
            agent_id: agent(),
            county: CountyCode::parse("430112").unwrap(),
            county_name: "望城区".into(),
            hub_url: HubUrl::new(
                "https://hub.example.cn:8440",
                crate::tls::HubTrust::Pinned(tongbu_shared::certpin::CertFingerprint::of_der(
                    b"cert",
                )),
            )
            .unwrap(),
            hub_public_key: KeyPair::from_seed(&[1; 32]).unwrap().public_key(),
            enrolled_at: "2026-11-27T06:48:33Z".into(),
        };
        outbox.save_enrollment(&e).unwrap();
        assert_eq!(outbox.enrollment().unwrap(), Some(e.clone()));
        assert!(matches!(
            outbox.save_enrollment(&e),
            Err(OutboxError::AlreadyEnrolled(_))
        ));
        // A move changes the URL and the trust together.
        let moved = HubUrl::plain("http://127.0.0.1:8440").unwrap();
        outbox.set_hub_url(&moved).unwrap();
        assert_eq!(outbox.enrollment().unwrap().unwrap().hub_url, moved);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Append this many records; the one at `bad` (if any) is refused.
        Append {
            n: usize,
            bad: Option<usize>,
        },
        /// Acknowledge up to this fraction (per mille) of the head.
        Ack(u16),
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1usize..5, proptest::option::of(0usize..5))
                .prop_map(|(n, bad)| Op::Append { n, bad }),
            2 => (0u16..=1000).prop_map(Op::Ack),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn appends_and_acks_keep_the_chain_whole(ops in proptest::collection::vec(op(), 1..20)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("outbox.db");
            let mut outbox = Outbox::open(&path).unwrap();
            let mut expected_head = 0u64;
            let mut counter = 0u64;
            for op in ops {
                match op {
                    Op::Append { n, bad } => {
                        let bodies: Vec<Option<Vec<u8>>> = (0..n)
                            .map(|i| {
                                counter += 1;
                                (bad != Some(i)).then(|| body(counter))
                            })
                            .collect();
                        let refused = bad.is_some_and(|b| b < n);
                        let result = append(&mut outbox, &bodies);
                        prop_assert_eq!(result.is_err(), refused);
                        if !refused {
                            let seqs = result.unwrap();
                            let want: Vec<u64> = (expected_head + 1..=expected_head + n as u64).collect();
                            prop_assert_eq!(seqs, want);
                            expected_head += n as u64;
                        }
                    }
                    Op::Ack(per_mille) => {
                        let seq = expected_head * u64::from(per_mille) / 1000;
                        let r = receipt(&outbox, seq, Vec::new(), Vec::new(), 0);
                        outbox.apply_receipt(&r).unwrap();
                    }
                    Op::Reopen => {
                        drop(outbox);
                        outbox = Outbox::open(&path).unwrap();
                    }
                }
                let head = outbox.head().unwrap();
                prop_assert_eq!(head.seq, expected_head);
                let rows = outbox.rows_after(0, usize::MAX).unwrap();
                let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
                let want: Vec<u64> = (1..=expected_head).collect();
                prop_assert_eq!(seqs, want);
                prop_assert_eq!(verify_all(&outbox), head.hash);
                let verified = crate::verify::verify_chain(&outbox, &agent(), &KeyRing::from(key().public_key()));
                prop_assert_eq!(verified.unwrap().head_hash, head.hash);
                prop_assert!(outbox.sync_state().unwrap().acked_seq <= head.seq);
            }
        }
    }
}
