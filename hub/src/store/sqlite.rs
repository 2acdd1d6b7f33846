//! The SQLite backend: `<data-dir>/hub.db` in WAL mode with `synchronous=FULL`, foreign keys
//! on and a busy timeout, so CLI commands can write while `serve` runs on the same file.
//! Migrations are compiled in and applied in order inside one `BEGIN IMMEDIATE` transaction,
//! tracked by `PRAGMA user_version`; a database from a newer hub is refused, not touched.
//! This module and its migrations are the only place that knows SQL.
//! [`SqliteStore::check_integrity`] runs SQLite's `quick_check`/`integrity_check`; a damaged
//! file (or one that is not a database) is [`StoreError::Damaged`] naming the file. SQLite's
//! full-disk, read-only and I/O errors are [`StoreError::Unavailable`] (retry later).
//! Every connection keeps its statements prepared and its statement journals in memory; the
//! serving writer leaves WAL checkpoints to another connection
//! ([`SqliteStore::checkpoint`], run by [`crate::db`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};
use tongbu_shared::crypto::{Digest, PublicKey, Signature};
use tongbu_shared::ids::{AgentId, CountyCode};
use tongbu_shared::protocol::{AgentState, Outcome};

use tongbu_shared::ids::Code;
use tongbu_shared::record::{Body, Kind};
use tongbu_shared::rules::{Entity, EntityKey, Slot, Totals};

#[path = "sqlite_console.rs"]
mod console;
#[path = "sqlite_log.rs"]
mod log;

use super::{
    AgentRecord, Alert, AlertKind, ApiKey, AuditEntry, AuditRow, ConsoleSession, ConsoleUser,
    ConsoleViolation, ConsoleViolationFilter, County, EnrollToken, Equivocation, HeartbeatUpdate,
    HeldEntry, HeldRecord, IndexedRecord, NewAgent, NewEnvelope, NewViolation, OutcomeUpdate,
    Reads, RetiredKey, Role, Store, StoreError, StoredEnvelope, StoredPolicy, StoredVerdict,
    Unjudged, Verdict, ViolationFilter, ViolationReview, ViolationRow, Writes,
};

pub const DB_FILE: &str = "hub.db";

/// Schema migrations, applied in order; `user_version` counts how many have been applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_ledger.sql"),
    include_str!("../../migrations/0003_console.sql"),
    include_str!("../../migrations/0004_console_indexes.sql"),
    include_str!("../../migrations/0005_append_only_audit.sql"),
    include_str!("../../migrations/0006_agent_keys.sql"),
    include_str!("../../migrations/0007_log.sql"),
    include_str!("../../migrations/0008_fewer_rows_per_envelope.sql"),
];

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection: more than the ingest path and the console use.
const STATEMENT_CACHE: usize = 128;
/// WAL pages (4 KiB) past which the writer checkpoints itself although another connection
/// is meant to (SQLite's own default is 1,000).
const WAL_BACKSTOP_PAGES: i64 = 4_096;

/// One connection to the hub database.
pub struct SqliteStore {
    conn: Connection,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.conn.path())
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if need be) the database in `data_dir` for reading and writing, and
    /// brings its schema up to date. Creates `data_dir` if it is missing.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        create_data_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        SqliteStore::open_file(&path).map_err(|e| damaged_at(&path, e))
    }

    fn open_file(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(from_sqlite)?;
        configure(&conn)?;
        let journal: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(from_sqlite)?;
        if !journal.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "cannot switch the database to WAL mode (it stays in {journal} mode)"
            )));
        }
        let mut store = SqliteStore { conn };
        store.migrate()?;
        Ok(store)
    }

    /// Runs `PRAGMA quick_check` (or the slower, thorough `integrity_check`): a database file
    /// that is truncated, overwritten or otherwise damaged is reported as
    /// [`StoreError::Damaged`] naming the file, never served from.
    pub fn check_integrity(&self, thorough: bool) -> Result<(), StoreError> {
        let pragma = if thorough {
            "PRAGMA integrity_check(20)"
        } else {
            "PRAGMA quick_check(20)"
        };
        let path = self.conn.path().map(PathBuf::from).unwrap_or_default();
        let found: Result<Vec<String>, rusqlite::Error> = self
            .conn
            .prepare(pragma)
            .and_then(|mut st| st.query_map([], |r| r.get::<_, String>(0))?.collect());
        match found {
            Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Ok(()),
            Ok(rows) => Err(StoreError::Damaged {
                path,
                problem: rows.join("; "),
            }),
            Err(e) => Err(damaged_at(&path, from_sqlite(e))),
        }
    }

    /// Opens a query-only connection to an existing, up-to-date database in `data_dir`.
    /// (Opened read-write with `query_only` on: a WAL reader must be able to use the
    /// shared-memory file, which a read-only open may not.)
    pub fn open_reader(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(data_dir.join(DB_FILE), flags).map_err(from_sqlite)?;
        configure(&conn)?;
        conn.pragma_update(None, "query_only", true)
            .map_err(from_sqlite)?;
        let version = user_version(&conn)?;
        if version != MIGRATIONS.len() {
            return Err(StoreError::Schema(format!(
                "the database is at schema version {version}, this hub expects {}",
                MIGRATIONS.len()
            )));
        }
        Ok(SqliteStore { conn })
    }

    /// Makes this (the writer's) connection leave WAL checkpoints to
    /// [`SqliteStore::checkpoint`] on another connection, except as a backstop when the WAL
    /// has grown past `WAL_BACKSTOP_PAGES` (4,096 pages, 16 MB: the other connection fell behind).
    pub fn leave_checkpoints_to_another_connection(&self) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)
            .map_err(from_sqlite)
    }

    /// Opens a connection to an existing, up-to-date database in `data_dir` for
    /// [`SqliteStore::checkpoint`] only.
    pub fn open_checkpointer(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        let store = SqliteStore::open_reader(data_dir)?;
        store
            .conn
            .pragma_update(None, "query_only", false)
            .map_err(from_sqlite)?;
        Ok(store)
    }

    /// Copies what the WAL holds into the database file without waiting for, or blocking,
    /// the writer and readers (`PRAGMA wal_checkpoint(PASSIVE)`); the writer then starts the
    /// WAL over from its beginning once all of it has been copied.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(from_sqlite)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(from_sqlite)?;
        let applied = user_version(&tx)?;
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Schema(format!(
                "the database is at schema version {applied}, newer than this hub ({}); \
                 run a newer tongbu-hub",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
            let version = i + 1;
            tx.execute_batch(sql)
                .map_err(|e| StoreError::Schema(format!("migration {version} failed: {e}")))?;
            tx.pragma_update(None, "user_version", version as i64)
                .map_err(from_sqlite)?;
        }
        tx.commit().map_err(from_sqlite)
    }
}

/// A corrupt-database error, as the damage of the file at `path`.
fn damaged_at(path: &Path, e: StoreError) -> StoreError {
    match e {
        StoreError::Corrupt(problem) => StoreError::Damaged {
            path: path.to_owned(),
            problem,
        },
        other => other,
    }
}

fn create_data_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| StoreError::DataDir {
        path: PathBuf::from(dir),
        source,
    })
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(from_sqlite)?;
    // Every statement the ingest transaction runs stays prepared (rusqlite keeps 16 by
    // default, fewer than one batch uses, so they were re-prepared in turn).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // `temp_store = MEMORY`: the statement journals of inserts with triggers and foreign keys
    // (one per statement, discarded at its end) stay in memory instead of being written to a
    // temporary file page by page; they never hold anything that must survive a crash.
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;",
    )
    .map_err(from_sqlite)
}

fn user_version(conn: &Connection) -> Result<usize, StoreError> {
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(from_sqlite)?;
    usize::try_from(v).map_err(|_| StoreError::Corrupt(format!("user_version {v}")))
}

impl Store for SqliteStore {
    fn read_tx(
        &mut self,
        f: &mut dyn FnMut(&dyn Reads) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(from_sqlite)?;
        f(&Sql(&tx))?;
        tx.commit().map_err(from_sqlite)
    }

    fn write_tx(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Writes) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // IMMEDIATE takes the write lock up front, so a busy database makes us wait (up to
        // the busy timeout) here rather than fail half way through.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(from_sqlite)?;
        f(&mut Sql(&tx))?;
        tx.commit().map_err(from_sqlite)
    }
}

fn from_sqlite(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::DiskFull
            | C::ReadOnly
            | C::DatabaseBusy
            | C::DatabaseLocked
            | C::SystemIoFailure
            | C::CannotOpen
            | C::OutOfMemory
            | C::FileLockingProtocolFailed => StoreError::Unavailable(e.to_string()),
            C::DatabaseCorrupt | C::NotADatabase => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Backend(e.to_string()),
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Backend(e.to_string()),
    }
}

/// Queries and changes on a connection that is inside a transaction.
struct Sql<'c>(&'c Connection);

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Backend(format!("{what} {v} is out of range")))
}

fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is {v}")))
}

fn digest(bytes: &[u8], what: &str) -> Result<Digest, StoreError> {
    Digest::from_slice(bytes).ok_or_else(|| StoreError::Corrupt(format!("{what} is not 32 bytes")))
}

fn agent_id(s: &str) -> Result<AgentId, StoreError> {
    AgentId::parse(s).map_err(|e| StoreError::Corrupt(format!("agent id: {e}")))
}

fn county_code(s: &str) -> Result<CountyCode, StoreError> {
    CountyCode::parse(s).map_err(|e| StoreError::Corrupt(format!("county code: {e}")))
}

fn agent_state(s: &str) -> Result<AgentState, StoreError> {
    AgentState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("agent state {s:?}")))
}

fn codes_from_json(s: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("codes {s:?}: {e}")))
}

fn codes_to_json(codes: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(codes).map_err(|e| StoreError::Backend(format!("codes: {e}")))
}

fn signature(bytes: &[u8]) -> Result<Signature, StoreError> {
    Signature::from_slice(bytes).ok_or_else(|| StoreError::Corrupt("sig is not 64 bytes".into()))
}

fn outcome_of(s: &str) -> Result<Outcome, StoreError> {
    Outcome::parse(s).ok_or_else(|| StoreError::Corrupt(format!("outcome {s:?}")))
}

/// An UPDATE that must have changed exactly one row.
fn one_row(n: usize, what: impl FnOnce() -> String) -> Result<(), StoreError> {
    if n == 1 {
        Ok(())
    } else {
        Err(StoreError::Corrupt(what()))
    }
}

/// A held-set DELETE must remove exactly the rows just read (each held row has its envelope).
fn check_taken(deleted: usize, read: usize) -> Result<(), StoreError> {
    if deleted == read {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "{deleted} held records removed but {read} found with their envelopes"
        )))
    }
}

/// A verdict's columns (outcome, codes, detail, policy_version) as SQLite returns them.
struct VerdictRow {
    outcome: String,
    codes: String,
    detail: Option<String>,
    policy_version: Option<i64>,
}

impl VerdictRow {
    fn from_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<VerdictRow> {
        Ok(VerdictRow {
            outcome: row.get(at)?,
            codes: row.get(at + 1)?,
            detail: row.get(at + 2)?,
            policy_version: row.get(at + 3)?,
        })
    }

    fn check(self) -> Result<Verdict, StoreError> {
        Ok(Verdict {
            outcome: outcome_of(&self.outcome)?,
            codes: codes_from_json(&self.codes)?,
            detail: self.detail,
            policy_version: self
                .policy_version
                .map(|v| to_u64(v, "policy version"))
                .transpose()?,
        })
    }
}

const HELD_COLUMNS: &str = "h.arrival, h.agent_id, h.seq, h.waits_county, h.waits_kind, \
     h.waits_id, h.received_at_ms, h.policy_version, h.held_year, h.held_catalogue, e.body";

/// A held row joined with its envelope's body, before its values are checked.
struct HeldRow {
    arrival: i64,
    agent_id: String,
    seq: i64,
    waits_county: String,
    waits_kind: String,
    waits_id: String,
    received_at_ms: i64,
    policy_version: i64,
    held_year: i32,
    held_catalogue: String,
    body: Vec<u8>,
}

impl HeldRow {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<HeldRow> {
        Ok(HeldRow {
            arrival: row.get(0)?,
            agent_id: row.get(1)?,
            seq: row.get(2)?,
            waits_county: row.get(3)?,
            waits_kind: row.get(4)?,
            waits_id: row.get(5)?,
            received_at_ms: row.get(6)?,
            policy_version: row.get(7)?,
            held_year: row.get(8)?,
            held_catalogue: row.get(9)?,
            body: row.get(10)?,
        })
    }

    fn check(self) -> Result<HeldRecord, StoreError> {
        let kind = Kind::parse(&self.waits_kind)
            .ok_or_else(|| StoreError::Corrupt(format!("held kind {:?}", self.waits_kind)))?;
        let id = Code::parse(&self.waits_id)
            .map_err(|e| StoreError::Corrupt(format!("held id {:?}: {e}", self.waits_id)))?;
        Ok(HeldRecord {
            entry: HeldEntry {
                arrival: to_u64(self.arrival, "arrival")?,
                agent: agent_id(&self.agent_id)?,
                seq: to_u64(self.seq, "seq")?,
                waits_on: EntityKey {
                    county: county_code(&self.waits_county)?,
                    kind,
                    id,
                },
                received_at_ms: self.received_at_ms,
                policy_version: to_u64(self.policy_version, "policy version")?,
                held_at: Slot {
                    year: self.held_year,
                    catalogue: self.held_catalogue,
                },
            },
            body: self.body,
        })
    }
}

const AGENT_COLUMNS: &str = "agent_id, county, public_key, state, enrolled_at_ms, acked_seq, \
     head_hash, reported_head_seq, queue_depth, agent_version, last_error, last_seen_ms, hostname";

/// An agents row as SQLite returns it, before its values are checked.
struct AgentRow {
    agent_id: String,
    county: String,
    public_key: Vec<u8>,
    state: String,
    enrolled_at_ms: i64,
    acked_seq: i64,
    head_hash: Vec<u8>,
    reported_head_seq: i64,
    queue_depth: i64,
    agent_version: Option<String>,
    last_error: Option<String>,
    last_seen_ms: Option<i64>,
    hostname: Option<String>,
}

impl AgentRow {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRow> {
        Ok(AgentRow {
            agent_id: row.get(0)?,
            county: row.get(1)?,
            public_key: row.get(2)?,
            state: row.get(3)?,
            enrolled_at_ms: row.get(4)?,
            acked_seq: row.get(5)?,
            head_hash: row.get(6)?,
            reported_head_seq: row.get(7)?,
            queue_depth: row.get(8)?,
            agent_version: row.get(9)?,
            last_error: row.get(10)?,
            last_seen_ms: row.get(11)?,
            hostname: row.get(12)?,
        })
    }

    fn check(self) -> Result<AgentRecord, StoreError> {
        let public_key = <[u8; 32]>::try_from(self.public_key.as_slice())
            .map(PublicKey)
            .map_err(|_| StoreError::Corrupt("agent public key is not 32 bytes".into()))?;
        Ok(AgentRecord {
            id: agent_id(&self.agent_id)?,
            county: county_code(&self.county)?,
            public_key,
            state: agent_state(&self.state)?,
            enrolled_at_ms: self.enrolled_at_ms,
            acked_seq: to_u64(self.acked_seq, "acked_seq")?,
            head_hash: digest(&self.head_hash, "head_hash")?,
            reported_head_seq: to_u64(self.reported_head_seq, "reported_head_seq")?,
            queue_depth: to_u64(self.queue_depth, "queue_depth")?,
            agent_version: self.agent_version,
            last_error: self.last_error,
            last_seen_ms: self.last_seen_ms,
            hostname: self.hostname,
        })
    }
}

/// The six ledger figures from `row`, from column `at` on (budget approved, contracted, paid,
/// accepted, held, rejected).
fn totals_from(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Totals> {
    Ok(Totals {
        budget_approved: row.get(at)?,
        contracted: row.get(at + 1)?,
        paid: row.get(at + 2)?,
        accepted: row.get(at + 3)?,
        held: row.get(at + 4)?,
        rejected: row.get(at + 5)?,
    })
}

/// Adds a stored envelope to the console's record index (`record_index`): county, kind, id
/// and parent (budget line of a contract, contract of a payment or evaluation) of a record.
/// A body that is not a well-formed record is indexed, if it looks enough like one, by the
/// same `json_extract` reading the index has always used (migrations 0003 and 0008).
fn index_record(c: &Connection, e: &super::NewEnvelope<'_>) -> Result<(), StoreError> {
    let env = e.envelope;
    let seq = to_i64(env.seq, "seq")?;
    let Some(record) = e.record else {
        return c
            .prepare_cached(
                "INSERT OR IGNORE INTO record_index \
                 (county, kind, entity_id, parent_id, agent_id, seq) \
                 SELECT b.county, b.kind, b.id, b.parent, ?2, ?3 \
                 FROM ( \
                     SELECT json_extract(CAST(?1 AS TEXT), '$.county') AS county, \
                            json_extract(CAST(?1 AS TEXT), '$.kind') AS kind, \
                            json_extract(CAST(?1 AS TEXT), '$.id') AS id, \
                            coalesce(json_extract(CAST(?1 AS TEXT), '$.budget_line_id'), \
                                     json_extract(CAST(?1 AS TEXT), '$.contract_id'), '') AS parent \
                     WHERE json_valid(CAST(?1 AS TEXT)) \
                 ) AS b \
                 WHERE typeof(b.county) = 'text' AND typeof(b.id) = 'text' \
                   AND typeof(b.parent) = 'text' \
                   AND b.kind IN ('budget_line', 'contract', 'payment', 'evaluation')",
            )
            .and_then(|mut st| st.execute(params![&env.body[..], env.agent.as_str(), seq]))
            .map(|_| ())
            .map_err(from_sqlite);
    };
    let h = &record.header;
    let parent = match &record.body {
        Some(Body::Contract(c)) => c.budget_line_id.as_str(),
        Some(Body::Payment(p)) => p.contract_id.as_str(),
        Some(Body::Evaluation(v)) => v.contract_id.as_str(),
        Some(Body::BudgetLine(_)) | None => "",
    };
    c.prepare_cached(
        "INSERT INTO record_index (county, kind, entity_id, parent_id, agent_id, seq) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut st| {
        st.execute(params![
            h.county.as_str(),
            h.kind.as_str(),
            h.id.as_str(),
            parent,
            env.agent.as_str(),
            seq
        ])
    })
    .map(|_| ())
    .map_err(from_sqlite)
}

impl Reads for Sql<'_> {
    fn log_size(&self) -> Result<u64, StoreError> {
        log::size(self.0)
    }

    fn log_node(&self, level: u8, idx: u64) -> Result<Option<Digest>, StoreError> {
        log::node(self.0, level, idx)
    }

    fn log_leaves(
        &self,
        first: u64,
        count: u64,
    ) -> Result<Vec<(AgentId, u64, Digest)>, StoreError> {
        log::leaves(self.0, first, count)
    }

    fn log_checkpoint(
        &self,
        tree_size: Option<u64>,
    ) -> Result<Option<super::StoredCheckpoint>, StoreError> {
        log::checkpoint(self.0, tree_size)
    }

    fn log_checkpoints_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<super::StoredCheckpoint>, StoreError> {
        log::checkpoints_after(self.0, after, limit)
    }

    fn envelopes_by_arrival(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEnvelope>, StoreError> {
        let after = to_i64(after, "arrival")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let ids: Vec<(String, i64)> = self
            .0
            .prepare_cached(
                "SELECT agent_id, seq FROM envelopes WHERE arrival > ?1 ORDER BY arrival LIMIT ?2",
            )
            .and_then(|mut st| {
                st.query_map(params![after, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(from_sqlite)?;
        ids.into_iter()
            .map(|(agent, seq)| {
                let agent = agent_id(&agent)?;
                let seq = to_u64(seq, "seq")?;
                self.envelope(&agent, seq)?.ok_or_else(|| {
                    StoreError::Corrupt(format!("envelope {agent} seq {seq} vanished"))
                })
            })
            .collect()
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.0
            .query_row("SELECT count(*) FROM counties", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|_| ())
            .map_err(from_sqlite)
    }

    fn county(&self, code: &CountyCode) -> Result<Option<County>, StoreError> {
        let row = self
            .0
            .prepare_cached("SELECT name, created_at_ms FROM counties WHERE code = ?1")
            .and_then(|mut st| {
                st.query_row([code.as_str()], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .optional()
            })
            .map_err(from_sqlite)?;
        Ok(row.map(|(name, created_at_ms)| County {
            code: code.clone(),
            name,
            created_at_ms,
        }))
    }

    fn enroll_token(&self, token_hash: &Digest) -> Result<Option<EnrollToken>, StoreError> {
        let row = self
            .0
            .prepare_cached(
                "SELECT county, created_at_ms, expires_at_ms, used_at_ms, used_by \
                 FROM enroll_tokens WHERE token_hash = ?1",
            )
            .and_then(|mut st| {
                st.query_row([&token_hash.0[..]], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, Option<i64>>(3)?,
                        row.get::<_, Option<String>>(4)?,
                    ))
                })
                .optional()
            })
            .map_err(from_sqlite)?;
        row.map(
            |(county, created_at_ms, expires_at_ms, used_at_ms, used_by)| {
                Ok(EnrollToken {
                    county: county_code(&county)?,
                    created_at_ms,
                    expires_at_ms,
                    used_at_ms,
                    used_by: used_by.as_deref().map(agent_id).transpose()?,
                })
            },
        )
        .transpose()
    }

    fn api_key(&self, key_hash: &Digest) -> Result<Option<ApiKey>, StoreError> {
        let row = self
            .0
            .prepare_cached(
                "SELECT role, created_at_ms, revoked_at_ms FROM api_keys WHERE key_hash = ?1",
            )
            .and_then(|mut st| {
                st.query_row([&key_hash.0[..]], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                    ))
                })
                .optional()
            })
            .map_err(from_sqlite)?;
        row.map(|(role, created_at_ms, revoked_at_ms)| {
            Ok(ApiKey {
                role: Role::parse(&role)
                    .ok_or_else(|| StoreError::Corrupt(format!("api key role {role:?}")))?,
                created_at_ms,
                revoked_at_ms,
            })
        })
        .transpose()
    }

    fn agent(&self, id: &AgentId) -> Result<Option<AgentRecord>, StoreError> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE agent_id = ?1");
        let row = self
            .0
            .prepare_cached(&sql)
            .and_then(|mut st| st.query_row([id.as_str()], AgentRow::from_row).optional())
            .map_err(from_sqlite)?;
        row.map(AgentRow::check).transpose()
    }

    fn agent_by_key(&self, key: &PublicKey) -> Result<Option<AgentId>, StoreError> {
        let id = self
            .0
            .prepare_cached(
                "SELECT agent_id FROM agents WHERE public_key = ?1 \
                 UNION ALL SELECT agent_id FROM agent_keys WHERE public_key = ?1 LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row([&key.0[..]], |row| row.get::<_, String>(0))
                    .optional()
            })
            .map_err(from_sqlite)?;
        id.as_deref().map(agent_id).transpose()
    }

    fn retired_keys(&self, agent: &AgentId) -> Result<Vec<RetiredKey>, StoreError> {
        let rows = self
            .0
            .prepare_cached(
                "SELECT public_key, valid_from_seq, valid_until_seq, valid_from_ms, \
                 valid_until_ms FROM agent_keys WHERE agent_id = ?1 ORDER BY id",
            )
            .and_then(|mut st| {
                st.query_map([agent.as_str()], |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, i64>(4)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(from_sqlite)?;
        rows.into_iter()
            .map(|(key, from, until, from_ms, until_ms)| {
                let key = <[u8; 32]>::try_from(key.as_slice())
                    .map_err(|_| StoreError::Corrupt("agent_keys.public_key".into()))?;
                Ok(RetiredKey {
                    public_key: PublicKey(key),
                    valid_from_seq: to_u64(from, "agent_keys.valid_from_seq")?,
                    valid_until_seq: to_u64(until, "agent_keys.valid_until_seq")?,
                    valid_from_ms: from_ms,
                    valid_until_ms: until_ms,
                })
            })
            .collect()
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY county, agent_id");
        let rows = self
            .0
            .prepare_cached(&sql)
            .and_then(|mut st| {
                st.query_map([], AgentRow::from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(from_sqlite)?;
        rows.into_iter().map(AgentRow::check).collect()
    }

    fn agent_state_counts(&self) -> Result<Vec<(AgentState, u64)>, StoreError> {
        let rows = self
            .0
            .prepare_cached("SELECT state, count(*) FROM agents GROUP BY state ORDER BY state")
            .and_then(|mut st| {
                st.query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(from_sqlite)?;
        rows.into_iter()
            .map(|(state, n)| Ok((agent_state(&state)?, to_u64(n, "agent count")?)))
            .collect()
    }

    fn envelope(&self, agent: &AgentId, seq: u64) -> Result<Option<StoredEnvelope>, StoreError> {
        let Ok(seq_i) = i64::try_from(seq) else {
            return Ok(None);
        };
        let row = self
            .0
            .prepare_cached(
                "SELECT prev, body, sig, hash, received_at_ms, outcome, codes, detail, \
                 policy_version, arrival FROM envelopes WHERE agent_id = ?1 AND seq = ?2",
            )
            .and_then(|mut st| {
                st.query_row(params![agent.as_str(), seq_i], |row| {
                    Ok((
                        (
                            row.get::<_, Vec<u8>>(0)?,
                            row.get::<_, Vec<u8>>(1)?,
                            row.get::<_, Vec<u8>>(2)?,
                            row.get::<_, Vec<u8>>(3)?,
                            row.get::<_, i64>(4)?,
                        ),
                        VerdictRow::from_row(row, 5)?,
                        row.get::<_, Option<i64>>(9)?,
                    ))
                })
                .optional()
            })
            .map_err(from_sqlite)?;
        row.map(
            |((prev, body, sig, hash, received_at_ms), verdict, arrival)| {
                let verdict = verdict.check()?;
                Ok(StoredEnvelope {
                    agent: agent.clone(),
                    seq,
                    prev: digest(&prev, "prev")?,
                    body,
                    sig: signature(&sig)?,
                    hash: digest(&hash, "hash")?,
                    received_at_ms,
                    outcome: verdict.outcome,
                    codes: verdict.codes,
                    detail: verdict.detail,
                    policy_version: verdict.policy_version,
                    arrival: arrival.map(|a| to_u64(a, "arrival")).transpose()?,
                })
            },
        )
        .transpose()
    }

    fn verdicts(
        &self,
        agent: &AgentId,
        from: u64,
        to: u64,
    ) -> Result<Vec<StoredVerdict>, StoreError> {
        let rows = self
            .0
            .prepare_cached(
                "SELECT seq, hash, outcome, codes, detail, policy_version FROM envelopes \
                 WHERE agent_id = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
            )
            .and_then(|mut st| {
                st.query_map(
                    params![
                        agent.as_str(),
                        i64::try_from(from).unwrap_or(i64::MAX),
                        i64::try_from(to).unwrap_or(i64::MAX)
                    ],
                    |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, Vec<u8>>(1)?,
                            VerdictRow::from_row(row, 2)?,
                        ))
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(from_sqlite)?;
        rows.into_iter()
            .map(|(seq, hash, verdict)| {
                let verdict = verdict.check()?;
                Ok(StoredVerdict {
                    seq: to_u64(seq, "seq")?,
                    hash: digest(&hash, "hash")?,
                    outcome: verdict.outcome,
                    codes: verdict.codes,
                    detail: verdict.detail,
                    policy_version: verdict.policy_version,
                })
            })
            .collect()
    }

    fn alerts(&self, agent: &AgentId) -> Result<Vec<Alert>, StoreError> {
        let rows = self
            .0
            .prepare_cached(
                "SELECT kind, seq, detail, at_ms FROM alerts WHERE agent_id = ?1 ORDER BY id",
            )
            .and_then(|mut st| {
                st.query_map([agent.as_str()], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, Option<i64>>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(from_sqlite)?;
        rows.into_iter()
            .map(|(kind, seq, detail, at_ms)| {
                Ok(Alert {
                    agent: agent.clone(),
                    kind: AlertKind::parse(&kind)
                        .ok_or_else(|| StoreError::Corrupt(format!("alert kind {kind:?}")))?,
                    seq: seq.map(|s| to_u64(s, "alert seq")).transpose()?,
                    detail,
                    at_ms,
                })
            })
            .collect()
    }

    fn equivocations(&self, agent: &AgentId) -> Result<Vec<Equivocation>, StoreError> {
        let rows = self
            .0
            .prepare_cached(
                "SELECT seq, evidence, at_ms FROM equivocations WHERE agent_id = ?1 ORDER BY id",
            )
            .and_then(|mut st| {
                st.query_map([agent.as_str()], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(from_sqlite)?;
        rows.into_iter()
            .map(|(seq, evidence, at_ms)| {
                Ok(Equivocation {
                    agent: agent.clone(),
                    seq: to_u64(seq, "equivocation seq")?,
                    evidence,
                    at_ms,
                })
            })
            .collect()
    }

    fn current_policy_version(&self) -> Result<u64, StoreError> {
        let v = self
            .0
            .prepare_cached("SELECT coalesce(max(version), 0) FROM policies")
            .and_then(|mut st| st.query_row([], |row| row.get::<_, i64>(0)))
            .map_err(from_sqlite)?;
        to_u64(v, "policy version")
    }

    fn policy(&self, version: u64) -> Result<Option<StoredPolicy>, StoreError> {
        let Ok(v) = i64::try_from(version) else {
            return Ok(None);
        };
        let row = self
            .0
            .prepare_cached(
                "SELECT payload, sig, created_at_ms, actor FROM policies WHERE version = ?1",
            )
            .and_then(|mut st| {
                st.query_row([v], |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, Vec<u8>>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                })
                .optional()
            })
            .map_err(from_sqlite)?;
        row.map(|(payload, sig, created_at_ms, actor)| {
            Ok(StoredPolicy {
                version,
                payload,
                sig: signature(&sig)?,
                created_at_ms,
                actor,
            })
        })
        .transpose()
    }

    fn last_arrival(&self) -> Result<u64, StoreError> {
        let v = self
            .0
            .prepare_cached("SELECT coalesce(max(arrival), 0) FROM envelopes")
            .and_then(|mut st| st.query_row([], |row| row.get::<_, i64>(0)))
            .map_err(from_sqlite)?;
        to_u64(v, "arrival")
    }

    fn entity(&self, key: &EntityKey) -> Result<Option<Entity>, StoreError> {
        let state = self
            .0
            .prepare_cached(
                "SELECT state FROM entities WHERE county = ?1 AND kind = ?2 AND id = ?3",
            )
            .and_then(|mut st| {
                st.query_row(
                    params![key.county.as_str(), key.kind.as_str(), key.id.as_str()],
                    |row| row.get::<_, String>(0),
                )
                .optional()
            })
            .map_err(from_sqlite)?;
        state
            .map(|s| {
                serde_json::from_str(&s)
                    .map_err(|e| StoreError::Corrupt(format!("entity {key}: {e}")))
            })
            .transpose()
    }

    fn totals(&self, county: &CountyCode, slot: &Slot) -> Result<Option<Totals>, StoreError> {
        self.0
            .prepare_cached(
                "SELECT budget_approved_fen, contracted_fen, paid_fen, accepted, held, rejected \
                 FROM ledger WHERE county = ?1 AND fiscal_year = ?2 AND catalogue_code = ?3",
            )
            .and_then(|mut st| {
                st.query_row(params![county.as_str(), slot.year, slot.catalogue], |row| {
                    totals_from(row, 0)
                })
                .optional()
            })
            .map_err(from_sqlite)
    }

    fn ledger_rows(
        &self,
        county: &CountyCode,
        year: Option<i32>,
    ) -> Result<Vec<(Slot, Totals)>, StoreError> {
        const COLUMNS: &str = "fiscal_year, catalogue_code, budget_approved_fen, \
             contracted_fen, paid_fen, accepted, held, rejected";
        let map = |row: &rusqlite::Row<'_>| -> rusqlite::Result<(Slot, Totals)> {
            Ok((
                Slot {
                    year: row.get(0)?,
                    catalogue: row.get(1)?,
                },
                totals_from(row, 2)?,
            ))
        };
        match year {
            Some(year) => self
                .0
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM ledger WHERE county = ?1 AND fiscal_year = ?2 \
                     ORDER BY catalogue_code"
                ))
                .and_then(|mut st| {
                    st.query_map(params![county.as_str(), year], map)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                }),
            None => self
                .0
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM ledger WHERE county = ?1 \
                     ORDER BY fiscal_year, catalogue_code"
                ))
                .and_then(|mut st| {
                    st.query_map(params![county.as_str()], map)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                }),
        }
        .map_err(from_sqlite)
    }

    fn violations(&self, filter: &ViolationFilter) -> Result<Vec<ViolationRow>, StoreError> {
        // One statement per combination of filters, so that each can use its index (by county,
        // or by rule and county) and read rows already in arrival order.
        let mut sql = String::from(
            "SELECT v.agent_id, v.seq, v.arrival, v.county, v.fiscal_year, v.kind, \
             v.entity_id, v.rule, v.detail, v.at_ms, e.outcome \
             FROM violations v JOIN envelopes e ON e.agent_id = v.agent_id AND e.seq = v.seq \
             WHERE v.county = ?1",
        );
        if filter.year.is_some() {
            sql.push_str(" AND v.fiscal_year = ?2");
        }
        if filter.rule.is_some() {
            sql.push_str(" AND v.rule = ?3");
        }
        sql.push_str(" ORDER BY v.arrival, v.id LIMIT ?4");
        let rows = self
            .0
            .prepare_cached(&sql)
            .and_then(|mut st| {
                let county = filter.county.as_str();
                let limit = i64::from(filter.limit);
                let year = filter.year;
                let rule = filter.rule.as_deref();
                // Unused numbered parameters are bound as NULL; the statement ignores them.
                st.query_map(params![county, year, rule, limit], |row| {
                    Ok((
                        (
                            row.get::<_, String>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, i64>(2)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, Option<i32>>(4)?,
                        ),
                        (
                            row.get::<_, String>(5)?,
                            row.get::<_, String>(6)?,
                            row.get::<_, String>(7)?,
                            row.get::<_, String>(8)?,
                            row.get::<_, i64>(9)?,
                            row.get::<_, String>(10)?,
                        ),
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(from_sqlite)?;
        rows.into_iter()
            .map(
                |(
                    (agent, seq, arrival, county, fiscal_year),
                    (kind, entity_id, rule, detail, at_ms, outcome),
                )| {
                    Ok(ViolationRow {
                        violation: NewViolation {
                            agent: agent_id(&agent)?,
                            seq: to_u64(seq, "seq")?,
                            county: county_code(&county)?,
                            fiscal_year,
                            kind,
                            entity_id,
                            rule,
                            detail,
                            at_ms,
                        },
                        arrival: to_u64(arrival, "arrival")?,
                        outcome: outcome_of(&outcome)?,
                    })
                },
            )
            .collect()
    }

    fn outcome_updates(
        &self,
        agent: &AgentId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<OutcomeUpdate>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .0
            .prepare_cached(
                "SELECT c.id, c.seq, e.outcome, e.codes, e.detail, e.policy_version \
                 FROM outcome_changes c \
                 JOIN envelopes e ON e.agent_id = c.agent_id AND e.seq = c.seq \
                 WHERE c.agent_id = ?1 AND c.id > ?2 ORDER BY c.id LIMIT ?3",
            )
            .and_then(|mut st| {
                st.query_map(params![agent.as_str(), after, limit], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        VerdictRow::from_row(row, 2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(from_sqlite)?;
        rows.into_iter()
            .map(|(id, seq, verdict)| {
                Ok(OutcomeUpdate {
                    id: to_u64(id, "outcome change id")?,
                    seq: to_u64(seq, "seq")?,
                    verdict: verdict.check()?,
                })
            })
            .collect()
    }

    fn last_outcome_change(&self) -> Result<u64, StoreError> {
        let v = self
            .0
            .prepare_cached("SELECT coalesce(max(id), 0) FROM outcome_changes")
            .and_then(|mut st| st.query_row([], |row| row.get::<_, i64>(0)))
            .map_err(from_sqlite)?;
        to_u64(v, "outcome change id")
    }

    fn held_count(&self) -> Result<u64, StoreError> {
        let v = self
            .0
            .prepare_cached("SELECT count(*) FROM held")
            .and_then(|mut st| st.query_row([], |row| row.get::<_, i64>(0)))
            .map_err(from_sqlite)?;
        to_u64(v, "held count")
    }

    fn unjudged(&self, limit: usize) -> Result<Vec<Unjudged>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .0
            .prepare_cached(
                "SELECT agent_id, seq, body, received_at_ms, outcome, codes FROM envelopes \
                 WHERE arrival IS NULL ORDER BY received_at_ms, agent_id, seq LIMIT ?1",
            )
            .and_then(|mut st| {
                st.query_map([limit], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Vec<u8>>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, String>(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(from_sqlite)?;
        rows.into_iter()
            .map(|(agent, seq, body, received_at_ms, outcome, codes)| {
                Ok(Unjudged {
                    agent: agent_id(&agent)?,
                    seq: to_u64(seq, "seq")?,
                    body,
                    received_at_ms,
                    outcome: outcome_of(&outcome)?,
                    codes: codes_from_json(&codes)?,
                })
            })
            .collect()
    }

    fn counties(&self) -> Result<Vec<County>, StoreError> {
        console::counties(self.0)
    }

    fn province_ledger(
        &self,
        year: Option<i32>,
    ) -> Result<Vec<(CountyCode, Slot, Totals)>, StoreError> {
        console::province_ledger(self.0, year)
    }

    fn ledger_years(&self) -> Result<Vec<i32>, StoreError> {
        console::ledger_years(self.0)
    }

    fn violation_rule_counts(&self, year: Option<i32>) -> Result<Vec<(String, u64)>, StoreError> {
        console::violation_rule_counts(self.0, year)
    }

    fn console_violations(
        &self,
        filter: &ConsoleViolationFilter,
    ) -> Result<Vec<ConsoleViolation>, StoreError> {
        console::violations(self.0, filter, None)
    }

    fn each_console_violation(
        &self,
        filter: &ConsoleViolationFilter,
        f: &mut dyn FnMut(ConsoleViolation) -> bool,
    ) -> Result<(), StoreError> {
        console::each_violation(self.0, filter, None, f)
    }

    fn console_violation(&self, id: i64) -> Result<Option<ConsoleViolation>, StoreError> {
        let filter = ConsoleViolationFilter {
            limit: 1,
            ..ConsoleViolationFilter::default()
        };
        Ok(console::violations(self.0, &filter, Some(id))?.pop())
    }

    fn policy_versions(&self) -> Result<Vec<StoredPolicy>, StoreError> {
        console::policy_versions(self.0)
    }

    fn audit_page(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        console::audit_page(self.0, before, limit)
    }

    fn console_user(&self, username: &str) -> Result<Option<ConsoleUser>, StoreError> {
        console::user(self.0, username)
    }

    fn console_session(&self, token_hash: &Digest) -> Result<Option<ConsoleSession>, StoreError> {
        console::session(self.0, token_hash)
    }

    fn records_of_entity(
        &self,
        id: &str,
        county: Option<&str>,
    ) -> Result<Vec<IndexedRecord>, StoreError> {
        console::records_of_entity(self.0, id, county)
    }

    fn records_with_parent(
        &self,
        county: &str,
        parent_id: &str,
    ) -> Result<Vec<IndexedRecord>, StoreError> {
        console::records_with_parent(self.0, county, parent_id)
    }
}

impl Writes for Sql<'_> {
    fn insert_log_nodes(&mut self, nodes: &[(u8, u64, Digest)]) -> Result<(), StoreError> {
        log::insert_nodes(self.0, nodes)
    }

    fn set_log_size(&mut self, size: u64) -> Result<(), StoreError> {
        log::set_size(self.0, size)
    }

    fn insert_log_checkpoint(
        &mut self,
        checkpoint: &super::StoredCheckpoint,
    ) -> Result<(), StoreError> {
        log::insert_checkpoint(self.0, checkpoint)
    }

    fn insert_county(&mut self, county: &County) -> Result<(), StoreError> {
        self.0
            .prepare_cached("INSERT INTO counties (code, name, created_at_ms) VALUES (?1, ?2, ?3)")
            .and_then(|mut st| {
                st.execute(params![
                    county.code.as_str(),
                    county.name,
                    county.created_at_ms
                ])
            })
            .map(|_| ())
            .map_err(from_sqlite)
    }

    fn insert_enroll_token(
        &mut self,
        token_hash: &Digest,
        token: &EnrollToken,
    ) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO enroll_tokens \
                 (token_hash, county, expires_at_ms, created_at_ms, used_at_ms, used_by) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    &token_hash.0[..],
                    token.county.as_str(),
                    token.expires_at_ms,
                    token.created_at_ms,
                    token.used_at_ms,
                    token.used_by.as_ref().map(AgentId::as_str),
                ])
            })
            .map(|_| ())
            .map_err(from_sqlite)
    }

    fn mark_token_used(
        &mut self,
        token_hash: &Digest,
        at_ms: i64,
        by: &AgentId,
    ) -> Result<(), StoreError> {
        let n = self
            .0
            .prepare_cached(
                "UPDATE enroll_tokens SET used_at_ms = ?2, used_by = ?3 \
                 WHERE token_hash = ?1 AND used_at_ms IS NULL",
            )
            .and_then(|mut st| st.execute(params![&token_hash.0[..], at_ms, by.as_str()]))
            .map_err(from_sqlite)?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::Backend(
                "the enrollment token was already used".into(),
            ))
        }
    }

    fn insert_api_key(&mut self, key_hash: &Digest, key: &ApiKey) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO api_keys (key_hash, role, created_at_ms, revoked_at_ms) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    &key_hash.0[..],
                    key.role.as_str(),
                    key.created_at_ms,
                    key.revoked_at_ms
                ])
            })
            .map(|_| ())
            .map_err(from_sqlite)
    }

    fn insert_agent(&mut self, agent: &NewAgent) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO agents (agent_id, county, public_key, state, enrolled_at_ms, \
                 acked_seq, head_hash, agent_version, hostname) \
                 VALUES (?1, ?2, ?3, 'active', ?4, 0, ?5, ?6, ?7)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    agent.id.as_str(),
                    agent.county.as_str(),
                    &agent.public_key.0[..],
                    agent.enrolled_at_ms,
                    &Digest::GENESIS.0[..],
                    agent.agent_version,
                    agent.hostname,
                ])
            })
            .map(|_| ())
            .map_err(from_sqlite)
    }

    fn rotate_agent_key(
        &mut self,
        agent: &AgentId,
        retired: &RetiredKey,
        new_key: &PublicKey,
    ) -> Result<(), StoreError> {
        let from = to_i64(retired.valid_from_seq, "valid_from_seq")?;
        let until = to_i64(retired.valid_until_seq, "valid_until_seq")?;
        self.0
            .prepare_cached(
                "INSERT INTO agent_keys (agent_id, public_key, valid_from_seq, valid_until_seq, \
                 valid_from_ms, valid_until_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    agent.as_str(),
                    &retired.public_key.0[..],
                    from,
                    until,
                    retired.valid_from_ms,
                    retired.valid_until_ms,
                ])
            })
            .map_err(from_sqlite)?;
        let n = self
            .0
            .prepare_cached(
                "UPDATE agents SET public_key = ?2 WHERE agent_id = ?1 AND public_key = ?3",
            )
            .and_then(|mut st| {
                st.execute(params![
                    agent.as_str(),
                    &new_key.0[..],
                    &retired.public_key.0[..]
                ])
            })
            .map_err(from_sqlite)?;
        one_row(n, || format!("agent {agent} with the retired key"))
    }

    fn set_agent_state(&mut self, agent: &AgentId, state: AgentState) -> Result<(), StoreError> {
        self.0
            .prepare_cached("UPDATE agents SET state = ?2 WHERE agent_id = ?1")
            .and_then(|mut st| st.execute(params![agent.as_str(), state.as_str()]))
            .map(|_| ())
            .map_err(from_sqlite)
    }

    fn insert_envelopes(
        &mut self,
        received_at_ms: i64,
        envelopes: &[NewEnvelope<'_>],
    ) -> Result<(), StoreError> {
        let mut st = self
            .0
            .prepare_cached(
                "INSERT INTO envelopes (agent_id, seq, prev, body, sig, hash, received_at_ms, \
                 outcome, codes, detail, policy_version, arrival) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .map_err(from_sqlite)?;
        for e in envelopes {
            let env = e.envelope;
            let v = e.verdict;
            st.execute(params![
                env.agent.as_str(),
                to_i64(env.seq, "seq")?,
                &env.prev.0[..],
                &env.body[..],
                &env.sig.0[..],
                &e.hash.0[..],
                received_at_ms,
                v.outcome.as_str(),
                codes_to_json(&v.codes)?,
                v.detail,
                v.policy_version
                    .map(|p| to_i64(p, "policy version"))
                    .transpose()?,
                to_i64(e.arrival, "arrival")?,
            ])
            .map_err(from_sqlite)?;
            index_record(self.0, e)?;
        }
        Ok(())
    }

    fn set_chain_head(
        &mut self,
        agent: &AgentId,
        acked_seq: u64,
        head_hash: &Digest,
    ) -> Result<(), StoreError> {
        let acked_seq = to_i64(acked_seq, "acked_seq")?;
        self.0
            .prepare_cached("UPDATE agents SET acked_seq = ?2, head_hash = ?3 WHERE agent_id = ?1")
            .and_then(|mut st| st.execute(params![agent.as_str(), acked_seq, &head_hash.0[..]]))
            .map(|_| ())
            .map_err(from_sqlite)
    }

    fn record_contact(
        &mut self,
        agent: &AgentId,
        at_ms: i64,
        heartbeat: Option<&HeartbeatUpdate>,
    ) -> Result<(), StoreError> {
        match heartbeat {
            None => self
                .0
                .prepare_cached("UPDATE agents SET last_seen_ms = ?2 WHERE agent_id = ?1")
                .and_then(|mut st| st.execute(params![agent.as_str(), at_ms])),
            Some(hb) => {
                // Heartbeat counts beyond i64 are nonsense from a broken agent; clamp them
                // rather than refuse the records that came with them.
                let head = i64::try_from(hb.reported_head_seq).unwrap_or(i64::MAX);
                let depth = i64::try_from(hb.queue_depth).unwrap_or(i64::MAX);
                self.0
                    .prepare_cached(
                        "UPDATE agents SET last_seen_ms = ?2, reported_head_seq = ?3, \
                         queue_depth = ?4, agent_version = ?5, last_error = ?6 \
                         WHERE agent_id = ?1",
                    )
                    .and_then(|mut st| {
                        st.execute(params![
                            agent.as_str(),
                            at_ms,
                            head,
                            depth,
                            hb.agent_version,
                            hb.last_error
                        ])
                    })
            }
        }
        .map(|_| ())
        .map_err(from_sqlite)
    }

    fn insert_alert(&mut self, alert: &Alert) -> Result<(), StoreError> {
        let seq = alert.seq.map(|s| to_i64(s, "seq")).transpose()?;
        self.0
            .prepare_cached(
                "INSERT INTO alerts (agent_id, kind, seq, detail, at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    alert.agent.as_str(),
                    alert.kind.as_str(),
                    seq,
                    alert.detail,
                    alert.at_ms
                ])
            })
            .map(|_| ())
            .map_err(from_sqlite)
    }

    fn insert_equivocation(&mut self, evidence: &Equivocation) -> Result<(), StoreError> {
        let seq = to_i64(evidence.seq, "seq")?;
        self.0
            .prepare_cached(
                "INSERT INTO equivocations (agent_id, seq, evidence, at_ms) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    evidence.agent.as_str(),
                    seq,
                    evidence.evidence,
                    evidence.at_ms
                ])
            })
            .map(|_| ())
            .map_err(from_sqlite)
    }

    fn insert_audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO audit_log (at_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    entry.at_ms,
                    entry.actor,
                    entry.action,
                    entry.detail
                ])
            })
            .map(|_| ())
            .map_err(from_sqlite)
    }
    fn insert_policy(&mut self, policy: &StoredPolicy) -> Result<(), StoreError> {
        let version = to_i64(policy.version, "policy version")?;
        self.0
            .prepare_cached(
                "INSERT INTO policies (version, payload, sig, created_at_ms, actor) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    version,
                    &policy.payload[..],
                    &policy.sig.0[..],
                    policy.created_at_ms,
                    policy.actor
                ])
            })
            .map(|_| ())
            .map_err(from_sqlite)
    }

    fn set_arrival(&mut self, agent: &AgentId, seq: u64, arrival: u64) -> Result<(), StoreError> {
        let (seq_i, arrival) = (to_i64(seq, "seq")?, to_i64(arrival, "arrival")?);
        let n = self
            .0
            .prepare_cached(
                "UPDATE envelopes SET arrival = ?3 \
                 WHERE agent_id = ?1 AND seq = ?2 AND arrival IS NULL",
            )
            .and_then(|mut st| st.execute(params![agent.as_str(), seq_i, arrival]))
            .map_err(from_sqlite)?;
        one_row(n, || format!("{agent} seq {seq} already has an arrival"))
    }

    fn set_verdict(
        &mut self,
        agent: &AgentId,
        seq: u64,
        verdict: &Verdict,
    ) -> Result<(), StoreError> {
        let policy_version = verdict
            .policy_version
            .map(|v| to_i64(v, "policy version"))
            .transpose()?;
        let (seq_i, codes) = (to_i64(seq, "seq")?, codes_to_json(&verdict.codes)?);
        let n = self
            .0
            .prepare_cached(
                "UPDATE envelopes SET outcome = ?3, codes = ?4, detail = ?5, policy_version = ?6 \
                 WHERE agent_id = ?1 AND seq = ?2",
            )
            .and_then(|mut st| {
                st.execute(params![
                    agent.as_str(),
                    seq_i,
                    verdict.outcome.as_str(),
                    codes,
                    verdict.detail,
                    policy_version
                ])
            })
            .map_err(from_sqlite)?;
        one_row(n, || format!("no envelope {agent} seq {seq} to judge"))
    }

    fn put_entity(&mut self, key: &EntityKey, entity: &Entity) -> Result<(), StoreError> {
        let state = serde_json::to_string(entity)
            .map_err(|e| StoreError::Backend(format!("entity {key}: {e}")))?;
        self.0
            .prepare_cached(
                "INSERT INTO entities (county, kind, id, state) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (county, kind, id) DO UPDATE SET state = excluded.state",
            )
            .and_then(|mut st| {
                st.execute(params![
                    key.county.as_str(),
                    key.kind.as_str(),
                    key.id.as_str(),
                    state
                ])
            })
            .map(|_| ())
            .map_err(from_sqlite)
    }

    fn put_totals(
        &mut self,
        county: &CountyCode,
        slot: &Slot,
        t: &Totals,
    ) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO ledger (county, fiscal_year, catalogue_code, budget_approved_fen, \
                 contracted_fen, paid_fen, accepted, held, rejected) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (county, fiscal_year, catalogue_code) DO UPDATE SET \
                 budget_approved_fen = excluded.budget_approved_fen, \
                 contracted_fen = excluded.contracted_fen, paid_fen = excluded.paid_fen, \
                 accepted = excluded.accepted, held = excluded.held, rejected = excluded.rejected",
            )
            .and_then(|mut st| {
                st.execute(params![
                    county.as_str(),
                    slot.year,
                    slot.catalogue,
                    t.budget_approved,
                    t.contracted,
                    t.paid,
                    t.accepted,
                    t.held,
                    t.rejected
                ])
            })
            .map(|_| ())
            .map_err(from_sqlite)
    }

    fn insert_held(&mut self, entry: &HeldEntry) -> Result<(), StoreError> {
        let w = &entry.waits_on;
        let arrival = to_i64(entry.arrival, "arrival")?;
        let seq = to_i64(entry.seq, "seq")?;
        let policy_version = to_i64(entry.policy_version, "policy version")?;
        self.0
            .prepare_cached(
                "INSERT INTO held (arrival, agent_id, seq, waits_county, waits_kind, waits_id, \
                 received_at_ms, policy_version, held_year, held_catalogue) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    arrival,
                    entry.agent.as_str(),
                    seq,
                    w.county.as_str(),
                    w.kind.as_str(),
                    w.id.as_str(),
                    entry.received_at_ms,
                    policy_version,
                    entry.held_at.year,
                    entry.held_at.catalogue
                ])
            })
            .map(|_| ())
            .map_err(from_sqlite)
    }

    fn take_held_waiting_on(&mut self, key: &EntityKey) -> Result<Vec<HeldRecord>, StoreError> {
        let args = params![key.county.as_str(), key.kind.as_str(), key.id.as_str()];
        let rows = self
            .0
            .prepare_cached(&format!(
                "SELECT {HELD_COLUMNS} FROM held h \
                 JOIN envelopes e ON e.agent_id = h.agent_id AND e.seq = h.seq \
                 WHERE h.waits_county = ?1 AND h.waits_kind = ?2 AND h.waits_id = ?3 \
                 ORDER BY h.arrival"
            ))
            .and_then(|mut st| {
                st.query_map(args, HeldRow::from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(from_sqlite)?;
        let n = self
            .0
            .prepare_cached(
                "DELETE FROM held WHERE waits_county = ?1 AND waits_kind = ?2 AND waits_id = ?3",
            )
            .and_then(|mut st| st.execute(args))
            .map_err(from_sqlite)?;
        check_taken(n, rows.len())?;
        rows.into_iter().map(HeldRow::check).collect()
    }

    fn take_held_before(&mut self, cutoff_ms: i64) -> Result<Vec<HeldRecord>, StoreError> {
        // Through the index on the time of receipt: usually nothing has expired, and the
        // held set is not scanned to find that out.
        let rows = self
            .0
            .prepare_cached(&format!(
                "SELECT {HELD_COLUMNS} FROM held h INDEXED BY held_by_received \
                 JOIN envelopes e ON e.agent_id = h.agent_id AND e.seq = h.seq \
                 WHERE h.received_at_ms < ?1 ORDER BY h.arrival"
            ))
            .and_then(|mut st| {
                st.query_map([cutoff_ms], HeldRow::from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(from_sqlite)?;
        let n = self
            .0
            .prepare_cached("DELETE FROM held WHERE received_at_ms < ?1")
            .and_then(|mut st| st.execute([cutoff_ms]))
            .map_err(from_sqlite)?;
        check_taken(n, rows.len())?;
        rows.into_iter().map(HeldRow::check).collect()
    }

    fn insert_violation(&mut self, v: &NewViolation) -> Result<(), StoreError> {
        let seq = to_i64(v.seq, "seq")?;
        self.0
            .prepare_cached(
                "INSERT INTO violations (agent_id, seq, arrival, county, fiscal_year, kind, \
                 entity_id, rule, detail, at_ms) \
                 VALUES (?1, ?2, (SELECT arrival FROM envelopes WHERE agent_id = ?1 AND seq = ?2), \
                 ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    v.agent.as_str(),
                    seq,
                    v.county.as_str(),
                    v.fiscal_year,
                    v.kind,
                    v.entity_id,
                    v.rule,
                    v.detail,
                    v.at_ms
                ])
            })
            .map(|_| ())
            .map_err(from_sqlite)
    }

    fn insert_outcome_change(
        &mut self,
        agent: &AgentId,
        seq: u64,
        at_ms: i64,
    ) -> Result<u64, StoreError> {
        let seq = to_i64(seq, "seq")?;
        self.0
            .prepare_cached(
                "INSERT INTO outcome_changes (agent_id, seq, at_ms) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut st| st.execute(params![agent.as_str(), seq, at_ms]))
            .map_err(from_sqlite)?;
        to_u64(self.0.last_insert_rowid(), "outcome change id")
    }

    fn put_console_user(&mut self, user: &ConsoleUser, replace: bool) -> Result<bool, StoreError> {
        console::put_user(self.0, user, replace)
    }

    fn insert_session(&mut self, session: &ConsoleSession) -> Result<(), StoreError> {
        console::insert_session(self.0, session)
    }

    fn touch_session(&mut self, token_hash: &Digest, now_ms: i64) -> Result<(), StoreError> {
        console::touch_session(self.0, token_hash, now_ms)
    }

    fn delete_session(&mut self, token_hash: &Digest) -> Result<(), StoreError> {
        console::delete_session(self.0, token_hash)
    }

    fn insert_violation_review(&mut self, review: &ViolationReview) -> Result<(), StoreError> {
        console::insert_review(self.0, review)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{read, write};
    use tongbu_shared::rules::TotalsDelta;
    use tongbu_shared::{Envelope, KeyPair};

    fn county() -> County {
        County {
            code: CountyCode::parse("430112").unwrap(),
            name: "望城区".into(),
            created_at_ms: 1,
        }
    }

    #[test]
    fn migrations_apply_once_and_tables_exist() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        drop(store);
        store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(user_version(&store.conn).unwrap(), MIGRATIONS.len());
        for table in [
            "envelopes",
            "agents",
            "counties",
            "enroll_tokens",
            "api_keys",
            "alerts",
            "equivocations",
            "policies",
            "entities",
            "ledger",
            "held",
            "violations",
            "outcome_changes",
            "users",
            "sessions",
            "violation_reviews",
            "record_index",
            "agent_keys",
        ] {
            let n: i64 = store
                .conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 1, "{table}");
        }
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        SqliteStore::open_reader(dir.path()).unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(store);
        let err = SqliteStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Schema(_)), "{err}");
    }

    /// A hub database with a few hundred kilobytes of audit entries, closed (WAL folded in).
    fn filled_db() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        write(&mut store, |w| {
            for i in 0..2000 {
                w.insert_audit(&AuditEntry {
                    at_ms: i,
                    actor: "cli".into(),
                    action: "test.fill".into(),
                    detail: format!("entry {i} {}", "x".repeat(100)),
                })?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
        drop(store);
        dir
    }

    fn damage(path: &Path, how: &str) {
        use std::io::{Seek as _, SeekFrom, Write as _};
        let len = std::fs::metadata(path).unwrap().len();
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        match how {
            "truncate" => f.set_len(len / 2).unwrap(),
            _ => {
                // Flip every byte of a stretch in the middle of the file.
                let at = len / 2 - 2048;
                let mut bytes = vec![0u8; 8192];
                {
                    use std::io::Read as _;
                    let mut r = std::fs::File::open(path).unwrap();
                    r.seek(SeekFrom::Start(at)).unwrap();
                    r.read_exact(&mut bytes).unwrap();
                }
                for b in &mut bytes {
                    *b = !*b;
                }
                f.seek(SeekFrom::Start(at)).unwrap();
                f.write_all(&bytes).unwrap();
            }
        }
        f.sync_all().unwrap();
    }

    #[test]
    fn a_damaged_database_is_refused_naming_the_file() {
        for how in ["truncate", "flip"] {
            let dir = filled_db();
            let path = dir.path().join(DB_FILE);
            SqliteStore::open(dir.path())
                .unwrap()
                .check_integrity(true)
                .unwrap();
            damage(&path, how);
            let err = SqliteStore::open(dir.path())
                .and_then(|s| s.check_integrity(false))
                .unwrap_err();
            assert!(matches!(err, StoreError::Damaged { .. }), "{how}: {err}");
            let text = err.to_string();
            assert!(
                text.contains(&path.display().to_string()) && text.contains("damaged"),
                "{how}: {text}"
            );
            // The hub itself refuses to start on it.
            let clock = std::sync::Arc::new(crate::clock::ManualClock::new(0));
            let err = crate::Hub::open(dir.path(), clock).unwrap_err();
            assert!(err.to_string().contains("damaged"), "{how}: {err}");
        }
    }

    fn audit_count(store: &mut SqliteStore) -> usize {
        read(store, |r| r.audit_page(None, 10_000)).unwrap().len()
    }

    fn fill(w: &mut dyn Writes, n: i64) -> Result<(), StoreError> {
        for i in 0..n {
            w.insert_audit(&AuditEntry {
                at_ms: i,
                actor: "cli".into(),
                action: "test.fill".into(),
                detail: "y".repeat(200),
            })?;
        }
        Ok(())
    }

    #[test]
    fn a_full_disk_is_unavailable_keeps_nothing_and_passes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let before = audit_count(&mut store);
        let pages: i64 = store
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        store
            .conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap();
        let err = write(&mut store, |w| fill(w, 500)).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        assert!(err.is_transient());
        assert_eq!(audit_count(&mut store), before);
        // Space returns: the same connection writes again.
        store
            .conn
            .query_row("PRAGMA max_page_count = 1073741823", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap();
        write(&mut store, |w| fill(w, 500)).unwrap();
        assert_eq!(audit_count(&mut store), before + 500);
    }

    #[test]
    fn a_read_only_database_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        store.conn.pragma_update(None, "query_only", true).unwrap();
        let err = write(&mut store, |w| fill(w, 1)).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        store.conn.pragma_update(None, "query_only", false).unwrap();
        write(&mut store, |w| fill(w, 1)).unwrap();
    }

    #[test]
    fn a_failed_transaction_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let res: Result<(), StoreError> = write(&mut store, |w| {
            w.insert_county(&county())?;
            Err(StoreError::Backend("changed my mind".into()))
        });
        assert!(res.is_err());
        let found = read(&mut store, |r| r.county(&county().code)).unwrap();
        assert_eq!(found, None);
    }

    #[test]
    fn the_audit_log_is_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        write(&mut store, |w| {
            w.insert_audit(&AuditEntry {
                at_ms: 1,
                actor: "cli".into(),
                action: "county.add".into(),
                detail: "430112".into(),
            })
        })
        .unwrap();
        let refused = store
            .conn
            .execute("UPDATE audit_log SET actor = 'someone else'", []);
        assert!(refused.is_err_and(|e| e.to_string().contains("append-only")));
        assert!(store.conn.execute("DELETE FROM audit_log", []).is_err());
        // A review row (the foreign key to its violation is beside the point here).
        store
            .conn
            .execute_batch(
                "PRAGMA foreign_keys = OFF;
             INSERT INTO violation_reviews (violation_id, status, note, by_user, at_ms)
             VALUES (1, 'reviewed', 'checked with the county', 'li.hua', 1);",
            )
            .unwrap();
        assert!(
            store
                .conn
                .execute("UPDATE violation_reviews SET note = 'x'", [])
                .is_err()
        );
        assert!(
            store
                .conn
                .execute("DELETE FROM violation_reviews", [])
                .is_err()
        );
        let count: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 1);
    }

    /// The county and one agent with `key`, as every envelope needs.
    fn enroll(w: &mut dyn Writes, id: &AgentId, key: &KeyPair) -> Result<(), StoreError> {
        w.insert_county(&county())?;
        w.insert_agent(&NewAgent {
            id: id.clone(),
            county: county().code,
            public_key: key.public_key(),
            enrolled_at_ms: 1,
            agent_version: "t".into(),
            hostname: None,
        })
    }

    #[test]
    fn a_parsed_record_is_indexed_as_its_json_reads() {
        // The record index of a well-formed record comes from the parsed record; of any other
        // body from json_extract, as the trigger of migration 0003 did. For the same bytes,
        // both readings must agree (and a body that is no record at all gets no row).
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let key = KeyPair::from_seed(&[1; 32]).unwrap();
        let id = AgentId::parse("430112-00000001").unwrap();
        let mut sim =
            tongbu_shared::sample::CountySim::new(county().code, 7, 2024).with_anomalies();
        let mut bodies: Vec<Vec<u8>> = (0..60).map(|_| sim.next_json().into_bytes()).collect();
        bodies.push(
            br#"{"kind":"contract","id":"C-9","rev":2,"county":"430112","cancelled":true}"#
                .to_vec(),
        );
        bodies.push(
            br#"{"kind":"payment","id":"P-9","county":"430112","contract_id":"C-9"}"#.to_vec(),
        );
        bodies.push(br#"{"kind":"gift","id":"G","county":"430112"}"#.to_vec());
        bodies.push(br#"[1,2]"#.to_vec());
        let mut prev = Digest::GENESIS;
        let mut envs = Vec::new();
        for (i, body) in bodies.iter().flat_map(|b| [b, b]).enumerate() {
            let e = Envelope::sign(&key, id.clone(), i as u64 + 1, prev, body.clone());
            prev = e.hash();
            envs.push(e);
        }
        let records: Vec<Option<tongbu_shared::Record>> = envs
            .iter()
            .map(|e| tongbu_shared::Record::parse_lenient(&e.body).ok())
            .collect();
        assert!(records.iter().filter(|r| r.is_some()).count() > 100);
        let verdict = Verdict {
            outcome: Outcome::Accepted,
            codes: vec![],
            detail: None,
            policy_version: None,
        };
        write(&mut store, |w| {
            enroll(w, &id, &key)?;
            let rows: Vec<NewEnvelope<'_>> = envs
                .iter()
                .zip(&records)
                .enumerate()
                .map(|(i, (e, record))| NewEnvelope {
                    envelope: e,
                    hash: e.hash(),
                    arrival: i as u64 + 1,
                    verdict: &verdict,
                    // Odd seqs from the parsed record, even ones from the JSON.
                    record: if i % 2 == 0 { record.as_ref() } else { None },
                })
                .collect();
            w.insert_envelopes(5, &rows)
        })
        .unwrap();
        type IndexRow = (String, String, String, String);
        let rows: Vec<(i64, Option<IndexRow>)> = (1..=envs.len() as i64)
            .map(|seq| {
                let row = store
                    .conn
                    .query_row(
                        "SELECT county, kind, entity_id, parent_id FROM record_index \
                         WHERE agent_id = ?1 AND seq = ?2",
                        params![id.as_str(), seq],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()
                    .unwrap();
                (seq, row)
            })
            .collect();
        for pair in rows.chunks(2) {
            assert_eq!(pair[0].1, pair[1].1, "seq {} and {}", pair[0].0, pair[1].0);
        }
        let parents: Vec<&str> = rows
            .iter()
            .filter_map(|(_, r)| r.as_ref().map(|r| r.3.as_str()))
            .collect();
        assert!(parents.iter().any(|p| p.is_empty()) && parents.iter().any(|p| !p.is_empty()));
        assert_eq!(rows[rows.len() - 1].1, None);
        assert_eq!(rows[rows.len() - 3].1, None);
    }

    #[test]
    fn envelopes_are_immutable() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let key = KeyPair::from_seed(&[1; 32]).unwrap();
        let id = AgentId::parse("430112-00000001").unwrap();
        let env = Envelope::sign(&key, id.clone(), 1, Digest::GENESIS, b"{}".to_vec());
        write(&mut store, |w| {
            enroll(w, &id, &key)?;
            w.insert_envelopes(
                5,
                &[NewEnvelope {
                    envelope: &env,
                    hash: env.hash(),
                    arrival: 1,
                    verdict: &Verdict {
                        outcome: Outcome::Accepted,
                        codes: vec![],
                        detail: None,
                        policy_version: None,
                    },
                    record: None,
                }],
            )
        })
        .unwrap();
        let stored = read(&mut store, |r| r.envelope(&id, 1)).unwrap().unwrap();
        assert_eq!(stored.body, b"{}");
        assert_eq!(stored.hash, env.hash());
        assert_eq!(stored.received_at_ms, 5);
        assert!(
            store
                .conn
                .execute("UPDATE envelopes SET body = x'00'", [])
                .is_err()
        );
        assert!(store.conn.execute("DELETE FROM envelopes", []).is_err());
        assert!(
            store
                .conn
                .execute("UPDATE envelopes SET outcome = 'rejected'", [])
                .is_ok()
        );
        // The verdict may be revised; the arrival, once given, may not.
        let verdict = Verdict {
            outcome: Outcome::Rejected,
            codes: vec!["DATE_ORDER".into()],
            detail: Some("DATE_ORDER: paid before signed".into()),
            policy_version: Some(3),
        };
        write(&mut store, |w| w.set_verdict(&id, 1, &verdict)).unwrap();
        let stored = read(&mut store, |r| r.envelope(&id, 1)).unwrap().unwrap();
        assert_eq!(
            (
                stored.codes,
                stored.detail,
                stored.policy_version,
                stored.arrival
            ),
            (
                verdict.codes.clone(),
                verdict.detail.clone(),
                Some(3),
                Some(1)
            )
        );
        assert!(
            store
                .conn
                .execute("UPDATE envelopes SET arrival = 2", [])
                .is_err()
        );
        let missing: Result<(), StoreError> =
            write(&mut store, |w| w.set_verdict(&id, 2, &verdict));
        assert!(matches!(missing, Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn ledger_totals_never_go_below_zero() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let slot = Slot {
            year: 2024,
            catalogue: "A0501".into(),
        };
        let add = |store: &mut SqliteStore, delta: TotalsDelta| {
            write(store, |w| w.add_totals(&county().code, &slot, &delta))
        };
        add(
            &mut store,
            TotalsDelta {
                paid: 5,
                accepted: 1,
                ..TotalsDelta::default()
            },
        )
        .unwrap();
        let err = add(
            &mut store,
            TotalsDelta {
                paid: -6,
                ..TotalsDelta::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        let err = add(
            &mut store,
            TotalsDelta {
                paid: i64::MAX,
                ..TotalsDelta::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        let rows = read(&mut store, |r| r.ledger_rows(&county().code, Some(2024))).unwrap();
        assert_eq!(
            rows,
            [(
                slot.clone(),
                Totals {
                    paid: 5,
                    accepted: 1,
                    ..Totals::default()
                }
            )]
        );
    }
}
