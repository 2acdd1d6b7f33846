//! The SQLite backend: `<data-dir>/hub.db` in WAL mode with `synchronous=FULL`, foreign keys
//! on and a busy timeout, so CLI commands can write while `serve` runs on the same file.
//! Migrations are compiled in and applied in order inside one `BEGIN IMMEDIATE` transaction,
//! tracked by `PRAGMA user_version`; a database from a newer hub is refused, not touched.
//! This module and its migrations are the only place that knows SQL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};
use tongbu_shared::crypto::{Digest, PublicKey, Signature};
use tongbu_shared::ids::{AgentId, CountyCode};
use tongbu_shared::protocol::{AgentState, Outcome};

use super::{
    AgentRecord, Alert, AlertKind, ApiKey, AuditEntry, County, EnrollToken, Equivocation,
    HeartbeatUpdate, NewAgent, NewEnvelope, Reads, Role, Store, StoreError, StoredEnvelope,
    StoredVerdict, Writes,
};

pub const DB_FILE: &str = "hub.db";

/// Schema migrations, applied in order; `user_version` counts how many have been applied.
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/0001_init.sql")];

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
        let conn = Connection::open(data_dir.join(DB_FILE)).map_err(from_sqlite)?;
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
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")
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

impl Reads for Sql<'_> {
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
            .prepare_cached("SELECT agent_id FROM agents WHERE public_key = ?1")
            .and_then(|mut st| {
                st.query_row([&key.0[..]], |row| row.get::<_, String>(0))
                    .optional()
            })
            .map_err(from_sqlite)?;
        id.as_deref().map(agent_id).transpose()
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
                "SELECT prev, body, sig, hash, received_at_ms, outcome, codes \
                 FROM envelopes WHERE agent_id = ?1 AND seq = ?2",
            )
            .and_then(|mut st| {
                st.query_row(params![agent.as_str(), seq_i], |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, Vec<u8>>(1)?,
                        row.get::<_, Vec<u8>>(2)?,
                        row.get::<_, Vec<u8>>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, String>(5)?,
                        row.get::<_, String>(6)?,
                    ))
                })
                .optional()
            })
            .map_err(from_sqlite)?;
        row.map(|(prev, body, sig, hash, received_at_ms, outcome, codes)| {
            Ok(StoredEnvelope {
                agent: agent.clone(),
                seq,
                prev: digest(&prev, "prev")?,
                body,
                sig: Signature::from_slice(&sig)
                    .ok_or_else(|| StoreError::Corrupt("sig is not 64 bytes".into()))?,
                hash: digest(&hash, "hash")?,
                received_at_ms,
                outcome: Outcome::parse(&outcome)
                    .ok_or_else(|| StoreError::Corrupt(format!("outcome {outcome:?}")))?,
                codes: codes_from_json(&codes)?,
            })
        })
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
                "SELECT seq, hash, outcome, codes FROM envelopes \
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
                            row.get::<_, String>(2)?,
                            row.get::<_, String>(3)?,
                        ))
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(from_sqlite)?;
        rows.into_iter()
            .map(|(seq, hash, outcome, codes)| {
                Ok(StoredVerdict {
                    seq: to_u64(seq, "seq")?,
                    hash: digest(&hash, "hash")?,
                    outcome: Outcome::parse(&outcome)
                        .ok_or_else(|| StoreError::Corrupt(format!("outcome {outcome:?}")))?,
                    codes: codes_from_json(&codes)?,
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
}

impl Writes for Sql<'_> {
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
                "INSERT INTO envelopes \
                 (agent_id, seq, prev, body, sig, hash, received_at_ms, outcome, codes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(from_sqlite)?;
        for e in envelopes {
            let env = e.envelope;
            st.execute(params![
                env.agent.as_str(),
                to_i64(env.seq, "seq")?,
                &env.prev.0[..],
                &env.body[..],
                &env.sig.0[..],
                &e.hash.0[..],
                received_at_ms,
                e.outcome.as_str(),
                codes_to_json(e.codes)?,
            ])
            .map_err(from_sqlite)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{read, write};
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
    fn envelopes_are_immutable() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let key = KeyPair::from_seed(&[1; 32]).unwrap();
        let id = AgentId::parse("430112-00000001").unwrap();
        let env = Envelope::sign(&key, id.clone(), 1, Digest::GENESIS, b"{}".to_vec());
        write(&mut store, |w| {
            w.insert_county(&county())?;
            w.insert_agent(&NewAgent {
                id: id.clone(),
                county: county().code,
                public_key: key.public_key(),
                enrolled_at_ms: 1,
                agent_version: "t".into(),
                hostname: None,
            })?;
            w.insert_envelopes(
                5,
                &[NewEnvelope {
                    envelope: &env,
                    hash: env.hash(),
                    outcome: Outcome::Accepted,
                    codes: &[],
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
    }
}
