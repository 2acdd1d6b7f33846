//! The machine's own limits, measured in the same run as the figures compared with them.

use std::time::Instant;

use rusqlite::{Connection, params};

use crate::Figure;

/// Raw SQLite inserts (WAL, `synchronous=FULL`) of `rows` rows shaped like the hub's stored
/// envelopes (two keys and a ~300-byte body), `batch` rows per transaction.
pub fn sqlite_batched_inserts(rows: usize, batch: usize) -> anyhow::Result<Figure> {
    let dir = tempfile::tempdir()?;
    let conn = Connection::open(dir.path().join("raw.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE envelopes (agent_id TEXT NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL,
         hash BLOB NOT NULL, PRIMARY KEY (agent_id, seq)) WITHOUT ROWID;",
    )?;
    let body = vec![b'x'; 300];
    let hash = [7u8; 32];
    let start = Instant::now();
    let mut seq = 0i64;
    let mut conn = conn;
    while (seq as usize) < rows {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO envelopes (agent_id, seq, body, hash) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for _ in 0..batch.min(rows - seq as usize) {
                seq += 1;
                stmt.execute(params!["430112-00000001", seq, body, hash])?;
            }
        }
        tx.commit()?;
    }
    Ok(Figure::rate(
        &format!("SQLite raw insert, {batch}-row transactions, FULL"),
        rows,
        start.elapsed(),
    ))
}

/// Ed25519 signature verifications per second on one core (ring), over envelope-sized
/// messages signed by one key.
pub fn ring_verify_one_core(count: usize) -> anyhow::Result<Figure> {
    use tongbu_shared::KeyPair;
    use tongbu_shared::crypto::Domain;
    let key = KeyPair::from_seed(&[9; 32])?;
    let public = key.public_key();
    let messages: Vec<Vec<u8>> = (0..256)
        .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(250)).into_bytes())
        .collect();
    let sigs: Vec<_> = messages
        .iter()
        .map(|m| key.sign(Domain::Envelope, m))
        .collect();
    let start = Instant::now();
    for i in 0..count {
        let j = i % messages.len();
        public
            .verify(Domain::Envelope, &messages[j], &sigs[j])
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(Figure::rate(
        "ring Ed25519 verify, one core",
        count,
        start.elapsed(),
    ))
}
