//! The console's queries and changes on SQLite (`migrations/0003_console.sql`): users,
//! sessions, violation reviews, the record index and province-wide reads of the ledger. Every
//! list is an index read or a scan of a small table (counties, policies, audit by id).

use rusqlite::{Connection, OptionalExtension as _, params};
use tongbu_shared::crypto::Digest;
use tongbu_shared::ids::CountyCode;
use tongbu_shared::rules::{Slot, Totals};

use super::{agent_id, county_code, from_sqlite, outcome_of, signature, to_u64};
use crate::store::{
    AuditEntry, AuditRow, ConsoleSession, ConsoleUser, ConsoleViolation, ConsoleViolationFilter,
    County, IndexedRecord, NewViolation, ReviewStatus, Role, StoreError, StoredPolicy,
    ViolationReview, ViolationRow,
};

pub(super) fn counties(c: &Connection) -> Result<Vec<County>, StoreError> {
    let rows = c
        .prepare_cached("SELECT code, name, created_at_ms FROM counties ORDER BY code")
        .and_then(|mut st| {
            st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(from_sqlite)?;
    rows.into_iter()
        .map(|(code, name, created_at_ms)| {
            Ok(County {
                code: county_code(&code)?,
                name,
                created_at_ms,
            })
        })
        .collect()
}

pub(super) fn province_ledger(
    c: &Connection,
    year: Option<i32>,
) -> Result<Vec<(CountyCode, Slot, Totals)>, StoreError> {
    let rows = c
        .prepare_cached(
            "SELECT county, fiscal_year, catalogue_code, budget_approved_fen, contracted_fen, \
             paid_fen, accepted, held, rejected FROM ledger \
             WHERE ?1 IS NULL OR fiscal_year = ?1 \
             ORDER BY county, fiscal_year, catalogue_code",
        )
        .and_then(|mut st| {
            st.query_map(params![year], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Slot {
                        year: r.get(1)?,
                        catalogue: r.get(2)?,
                    },
                    Totals {
                        budget_approved: r.get(3)?,
                        contracted: r.get(4)?,
                        paid: r.get(5)?,
                        accepted: r.get(6)?,
                        held: r.get(7)?,
                        rejected: r.get(8)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(from_sqlite)?;
    rows.into_iter()
        .map(|(county, slot, totals)| Ok((county_code(&county)?, slot, totals)))
        .collect()
}

pub(super) fn ledger_years(c: &Connection) -> Result<Vec<i32>, StoreError> {
    c.prepare_cached("SELECT DISTINCT fiscal_year FROM ledger ORDER BY fiscal_year DESC")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, i32>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(from_sqlite)
}

pub(super) fn violation_rule_counts(
    c: &Connection,
    year: Option<i32>,
) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = c
        .prepare_cached(
            "SELECT rule, count(*) FROM violations WHERE ?1 IS NULL OR fiscal_year = ?1 \
             GROUP BY rule ORDER BY count(*) DESC, rule",
        )
        .and_then(|mut st| {
            st.query_map(params![year], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(from_sqlite)?;
    rows.into_iter()
        .map(|(rule, n)| Ok((rule, to_u64(n, "count")?)))
        .collect()
}

type ViolationCols = (
    (i64, String, i64, i64, String, Option<i32>),
    (String, String, String, String, i64, String),
    (Option<String>, Option<String>, Option<String>, Option<i64>),
);

/// Violations matching `filter` (or the one with `id`), newest first, with their latest review.
pub(super) fn violations(
    c: &Connection,
    filter: &ConsoleViolationFilter,
    id: Option<i64>,
) -> Result<Vec<ConsoleViolation>, StoreError> {
    let mut out = Vec::new();
    each_violation(c, filter, id, &mut |v| {
        out.push(v);
        true
    })?;
    Ok(out)
}

/// Hands `f` each violation matching `filter` (or the one with `id`), newest first, with its
/// latest review, one row at a time (nothing is collected), until `f` returns false.
pub(super) fn each_violation(
    c: &Connection,
    filter: &ConsoleViolationFilter,
    id: Option<i64>,
    f: &mut dyn FnMut(ConsoleViolation) -> bool,
) -> Result<(), StoreError> {
    let mut st = c
        .prepare_cached(
            "SELECT v.id, v.agent_id, v.seq, v.arrival, v.county, v.fiscal_year, v.kind, \
             v.entity_id, v.rule, v.detail, v.at_ms, e.outcome, \
             r.status, r.note, r.by_user, r.at_ms \
             FROM violations v \
             JOIN envelopes e INDEXED BY envelopes_outcome \
                 ON e.agent_id = v.agent_id AND e.seq = v.seq \
             LEFT JOIN violation_reviews r ON r.id = ( \
                 SELECT max(id) FROM violation_reviews WHERE violation_id = v.id) \
             WHERE (?1 IS NULL OR v.county = ?1) AND (?2 IS NULL OR v.fiscal_year = ?2) \
               AND (?3 IS NULL OR v.rule = ?3) AND (?4 IS NULL OR v.id = ?4) \
             ORDER BY v.id DESC LIMIT ?5",
        )
        .map_err(from_sqlite)?;
    let mut rows = st
        .query(params![
            filter.county.as_ref().map(|c| c.as_str()),
            filter.year,
            filter.rule.as_deref(),
            id,
            i64::from(filter.limit),
        ])
        .map_err(from_sqlite)?;
    while let Some(r) = rows.next().map_err(from_sqlite)? {
        let cols = (|| -> rusqlite::Result<ViolationCols> {
            Ok((
                (
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ),
                (
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                ),
                (r.get(12)?, r.get(13)?, r.get(14)?, r.get(15)?),
            ))
        })()
        .map_err(from_sqlite)?;
        if !f(console_violation(cols)?) {
            break;
        }
    }
    Ok(())
}

fn console_violation(
    (
        (id, agent, seq, arrival, county, fiscal_year),
        (kind, entity_id, rule, detail, at_ms, outcome),
        review,
    ): ViolationCols,
) -> Result<ConsoleViolation, StoreError> {
    let review = match review {
        (Some(status), Some(note), Some(by), Some(r_at)) => Some(ViolationReview {
            violation_id: id,
            status: ReviewStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("review status {status:?}")))?,
            note,
            by,
            at_ms: r_at,
        }),
        _ => None,
    };
    Ok(ConsoleViolation {
        id,
        row: ViolationRow {
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
        },
        review,
    })
}

pub(super) fn policy_versions(c: &Connection) -> Result<Vec<StoredPolicy>, StoreError> {
    let rows = c
        .prepare_cached(
            "SELECT version, payload, sig, created_at_ms, actor FROM policies \
             ORDER BY version DESC",
        )
        .and_then(|mut st| {
            st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(from_sqlite)?;
    rows.into_iter()
        .map(|(version, payload, sig, created_at_ms, actor)| {
            Ok(StoredPolicy {
                version: to_u64(version, "policy version")?,
                payload,
                sig: signature(&sig)?,
                created_at_ms,
                actor,
            })
        })
        .collect()
}

pub(super) fn audit_page(
    c: &Connection,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<AuditRow>, StoreError> {
    c.prepare_cached(
        "SELECT id, at_ms, actor, action, detail FROM audit_log \
         WHERE ?1 IS NULL OR id < ?1 ORDER BY id DESC LIMIT ?2",
    )
    .and_then(|mut st| {
        st.query_map(params![before, i64::from(limit)], |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                entry: AuditEntry {
                    at_ms: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    detail: r.get(4)?,
                },
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()
    })
    .map_err(from_sqlite)
}

pub(super) fn user(c: &Connection, username: &str) -> Result<Option<ConsoleUser>, StoreError> {
    let row = c
        .prepare_cached(
            "SELECT role, password_hash, created_at_ms, disabled FROM users WHERE username = ?1",
        )
        .and_then(|mut st| {
            st.query_row([username], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, bool>(3)?,
                ))
            })
            .optional()
        })
        .map_err(from_sqlite)?;
    row.map(|(role, password_hash, created_at_ms, disabled)| {
        Ok(ConsoleUser {
            username: username.to_owned(),
            role: Role::parse(&role)
                .ok_or_else(|| StoreError::Corrupt(format!("user role {role:?}")))?,
            password_hash,
            created_at_ms,
            disabled,
        })
    })
    .transpose()
}

pub(super) fn put_user(
    c: &Connection,
    user: &ConsoleUser,
    replace: bool,
) -> Result<bool, StoreError> {
    let exists = self::user(c, &user.username)?.is_some();
    if exists && !replace {
        return Ok(false);
    }
    if exists {
        c.execute("DELETE FROM sessions WHERE username = ?1", [&user.username])
            .map_err(from_sqlite)?;
        c.execute(
            "UPDATE users SET role = ?2, password_hash = ?3, disabled = ?4 WHERE username = ?1",
            params![
                user.username,
                user.role.as_str(),
                user.password_hash,
                user.disabled
            ],
        )
        .map_err(from_sqlite)?;
    } else {
        c.execute(
            "INSERT INTO users (username, role, password_hash, created_at_ms, disabled) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                user.username,
                user.role.as_str(),
                user.password_hash,
                user.created_at_ms,
                user.disabled
            ],
        )
        .map_err(from_sqlite)?;
    }
    Ok(true)
}

pub(super) fn session(
    c: &Connection,
    token_hash: &Digest,
) -> Result<Option<ConsoleSession>, StoreError> {
    let row = c
        .prepare_cached(
            "SELECT username, csrf, created_at_ms, expires_at_ms, last_seen_ms FROM sessions \
             WHERE token_hash = ?1",
        )
        .and_then(|mut st| {
            st.query_row([&token_hash.0[..]], |r| {
                Ok(ConsoleSession {
                    token_hash: *token_hash,
                    username: r.get(0)?,
                    csrf: r.get(1)?,
                    created_at_ms: r.get(2)?,
                    expires_at_ms: r.get(3)?,
                    last_seen_ms: r.get(4)?,
                })
            })
            .optional()
        })
        .map_err(from_sqlite)?;
    Ok(row)
}

pub(super) fn insert_session(c: &Connection, s: &ConsoleSession) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO sessions (token_hash, username, csrf, created_at_ms, expires_at_ms, \
         last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            &s.token_hash.0[..],
            s.username,
            s.csrf,
            s.created_at_ms,
            s.expires_at_ms,
            s.last_seen_ms
        ],
    )
    .map(|_| ())
    .map_err(from_sqlite)
}

pub(super) fn touch_session(
    c: &Connection,
    token_hash: &Digest,
    now_ms: i64,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE sessions SET last_seen_ms = ?2 WHERE token_hash = ?1",
        params![&token_hash.0[..], now_ms],
    )
    .map(|_| ())
    .map_err(from_sqlite)
}

pub(super) fn delete_session(c: &Connection, token_hash: &Digest) -> Result<(), StoreError> {
    c.execute(
        "DELETE FROM sessions WHERE token_hash = ?1",
        [&token_hash.0[..]],
    )
    .map(|_| ())
    .map_err(from_sqlite)
}

pub(super) fn insert_review(c: &Connection, r: &ViolationReview) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO violation_reviews (violation_id, status, note, by_user, at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![r.violation_id, r.status.as_str(), r.note, r.by, r.at_ms],
    )
    .map(|_| ())
    .map_err(from_sqlite)
}

fn indexed(
    c: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<IndexedRecord>, StoreError> {
    let rows = c
        .prepare_cached(sql)
        .and_then(|mut st| {
            st.query_map(args, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(from_sqlite)?;
    rows.into_iter()
        .map(|(county, kind, entity_id, parent_id, agent, seq)| {
            Ok(IndexedRecord {
                county,
                kind,
                entity_id,
                parent_id,
                agent: agent_id(&agent)?,
                seq: to_u64(seq, "seq")?,
            })
        })
        .collect()
}

const INDEX_COLUMNS: &str = "x.county, x.kind, x.entity_id, x.parent_id, x.agent_id, x.seq";

pub(super) fn records_of_entity(
    c: &Connection,
    id: &str,
    county: Option<&str>,
) -> Result<Vec<IndexedRecord>, StoreError> {
    indexed(
        c,
        &format!(
            "SELECT {INDEX_COLUMNS} FROM record_index x \
             JOIN envelopes e ON e.agent_id = x.agent_id AND e.seq = x.seq \
             WHERE x.entity_id = ?1 AND (?2 IS NULL OR x.county = ?2) \
             ORDER BY e.arrival, e.received_at_ms"
        ),
        params![id, county],
    )
}

pub(super) fn records_with_parent(
    c: &Connection,
    county: &str,
    parent_id: &str,
) -> Result<Vec<IndexedRecord>, StoreError> {
    indexed(
        c,
        &format!(
            "SELECT {INDEX_COLUMNS} FROM record_index x \
             JOIN envelopes e ON e.agent_id = x.agent_id AND e.seq = x.seq \
             WHERE x.county = ?1 AND x.parent_id = ?2 \
             ORDER BY e.arrival, e.received_at_ms"
        ),
        params![county, parent_id],
    )
}
