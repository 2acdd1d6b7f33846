//! The transparency log on SQLite (`migrations/0007_log.sql`, `0008_*.sql`): the number of
//! leaves (`log_head`), perfect subtrees by (level, idx), signed checkpoints by tree size, and
//! the leaves themselves read from `envelopes` by arrival. The tables are append-only
//! (triggers refuse changes); every read is a primary-key lookup or range.

use rusqlite::{Connection, OptionalExtension as _, params};
use tongbu_shared::checkpoint::Checkpoint;
use tongbu_shared::crypto::Digest;
use tongbu_shared::ids::AgentId;
use tongbu_shared::signed::Signed;

use super::{agent_id, digest, from_sqlite, signature, to_i64, to_u64};
use crate::store::{StoreError, StoredCheckpoint};

pub(super) fn size(c: &Connection) -> Result<u64, StoreError> {
    let size: i64 = c
        .prepare_cached("SELECT size FROM log_head WHERE id = 1")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
        .map_err(from_sqlite)?;
    to_u64(size, "log size")
}

pub(super) fn set_size(c: &Connection, size: u64) -> Result<(), StoreError> {
    let size = to_i64(size, "log size")?;
    c.prepare_cached("UPDATE log_head SET size = ?1 WHERE id = 1")
        .and_then(|mut st| st.execute([size]))
        .map_err(from_sqlite)
        .and_then(|n| match n {
            1 => Ok(()),
            _ => Err(StoreError::Corrupt("the log has no head row".into())),
        })
}

/// The leaves `first..first + count` (arrivals `first + 1 ..= first + count`): agent, seq and
/// chain hash of each, in order; fewer when the envelopes end earlier.
pub(super) fn leaves(
    c: &Connection,
    first: u64,
    count: u64,
) -> Result<Vec<(AgentId, u64, Digest)>, StoreError> {
    let from = to_i64(first, "log index")?;
    let to = to_i64(first.saturating_add(count), "log index")?;
    let rows: Vec<(String, i64, Vec<u8>)> = c
        .prepare_cached(
            "SELECT agent_id, seq, hash FROM envelopes WHERE arrival > ?1 AND arrival <= ?2 \
             ORDER BY arrival",
        )
        .and_then(|mut st| {
            st.query_map(params![from, to], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(from_sqlite)?;
    rows.into_iter()
        .map(|(agent, seq, hash)| {
            Ok((
                agent_id(&agent)?,
                to_u64(seq, "seq")?,
                digest(&hash, "envelope hash")?,
            ))
        })
        .collect()
}

pub(super) fn node(c: &Connection, level: u8, idx: u64) -> Result<Option<Digest>, StoreError> {
    let Ok(idx) = i64::try_from(idx) else {
        return Ok(None);
    };
    let hash: Option<Vec<u8>> = c
        .prepare_cached("SELECT hash FROM log_nodes WHERE level = ?1 AND idx = ?2")
        .and_then(|mut st| st.query_row(params![level, idx], |r| r.get(0)).optional())
        .map_err(from_sqlite)?;
    hash.map(|h| digest(&h, "log node")).transpose()
}

pub(super) fn insert_nodes(c: &Connection, nodes: &[(u8, u64, Digest)]) -> Result<(), StoreError> {
    let mut st = c
        .prepare_cached("INSERT INTO log_nodes (level, idx, hash) VALUES (?1, ?2, ?3)")
        .map_err(from_sqlite)?;
    for (level, idx, hash) in nodes {
        st.execute(params![level, to_i64(*idx, "log index")?, &hash.0[..]])
            .map_err(from_sqlite)?;
    }
    Ok(())
}

const CHECKPOINT_COLUMNS: &str =
    "SELECT tree_size, root, hub_time_ms, payload, sig FROM log_checkpoints";

type Row = (i64, Vec<u8>, i64, String, Vec<u8>);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn stored(
    (tree_size, root, hub_time_ms, payload, sig): Row,
) -> Result<StoredCheckpoint, StoreError> {
    let checkpoint = Checkpoint {
        tree_size: to_u64(tree_size, "tree size")?,
        root: digest(&root, "log root")?,
        hub_time_ms,
    };
    let signed = Signed::from_parts(payload, signature(&sig)?)
        .map_err(|e| StoreError::Corrupt(format!("checkpoint {tree_size}: {e}")))?;
    Ok(StoredCheckpoint { checkpoint, signed })
}

pub(super) fn checkpoint(
    c: &Connection,
    tree_size: Option<u64>,
) -> Result<Option<StoredCheckpoint>, StoreError> {
    let found = match tree_size {
        Some(n) => {
            let Ok(n) = i64::try_from(n) else {
                return Ok(None);
            };
            c.prepare_cached(&format!("{CHECKPOINT_COLUMNS} WHERE tree_size = ?1"))
                .and_then(|mut st| st.query_row([n], row).optional())
        }
        None => c
            .prepare_cached(&format!(
                "{CHECKPOINT_COLUMNS} ORDER BY tree_size DESC LIMIT 1"
            ))
            .and_then(|mut st| st.query_row([], row).optional()),
    }
    .map_err(from_sqlite)?;
    found.map(stored).transpose()
}

pub(super) fn checkpoints_after(
    c: &Connection,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredCheckpoint>, StoreError> {
    let after = to_i64(after, "tree size")?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<Row> = c
        .prepare_cached(&format!(
            "{CHECKPOINT_COLUMNS} WHERE tree_size > ?1 ORDER BY tree_size LIMIT ?2"
        ))
        .and_then(|mut st| st.query_map(params![after, limit], row)?.collect())
        .map_err(from_sqlite)?;
    rows.into_iter().map(stored).collect()
}

pub(super) fn insert_checkpoint(c: &Connection, cp: &StoredCheckpoint) -> Result<(), StoreError> {
    let payload = std::str::from_utf8(cp.signed.payload_bytes())
        .map_err(|e| StoreError::Backend(format!("checkpoint payload: {e}")))?;
    let tree_size = to_i64(cp.checkpoint.tree_size, "tree size")?;
    c.prepare_cached(
        "INSERT INTO log_checkpoints (tree_size, root, hub_time_ms, payload, sig) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut st| {
        st.execute(params![
            tree_size,
            &cp.checkpoint.root.0[..],
            cp.checkpoint.hub_time_ms,
            payload,
            &cp.signed.signature().0[..],
        ])
    })
    .map_err(from_sqlite)?;
    Ok(())
}
