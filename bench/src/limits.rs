//! The machine's own limits, measured in the same run as the figures compared with them:
//! Ed25519 signing and verification (ring) on one core and on every core at once, SQLite
//! inserts (WAL, `synchronous=FULL`) in big transactions and one row per commit, and how many
//! small JSON records an HTTP server on loopback can take in when it only parses them.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use tongbu_shared::KeyPair;
use tongbu_shared::crypto::{Domain, Signature};

use crate::Figure;
use crate::scratch::Scratch;

/// Raw SQLite inserts (WAL, `synchronous=FULL`) of `rows` rows shaped like the hub's stored
/// envelopes (two keys and a ~300-byte body), `batch` rows per transaction.
pub fn sqlite_batched_inserts(rows: usize, batch: usize) -> anyhow::Result<Figure> {
    let dir = Scratch::new("tongbu-bench-sqlite")?;
    let mut conn = envelope_table(&dir)?;
    let body = vec![b'x'; 300];
    let hash = [7u8; 32];
    let start = Instant::now();
    let mut seq = 0i64;
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

/// Single-row SQLite commits (WAL, `synchronous=FULL`) for about `seconds`: each insert of an
/// envelope-shaped row is its own transaction, so each waits for its own fsync. This is what
/// durable intake would cost if every submitter committed alone.
pub fn sqlite_single_row_commits(seconds: f64) -> anyhow::Result<Figure> {
    let dir = Scratch::new("tongbu-bench-sqlite")?;
    sqlite_single_row_commits_in(dir.path(), seconds)
}

/// [`sqlite_single_row_commits`] with its database in a new folder under `parent`.
pub fn sqlite_single_row_commits_in(parent: &Path, seconds: f64) -> anyhow::Result<Figure> {
    let dir = Scratch::new_in(parent, "sqlite")?;
    let conn = envelope_table(&dir)?;
    let body = vec![b'x'; 300];
    let hash = [7u8; 32];
    let mut stmt =
        conn.prepare("INSERT INTO envelopes (agent_id, seq, body, hash) VALUES (?1, ?2, ?3, ?4)")?;
    let budget = Duration::from_secs_f64(seconds.max(0.05));
    let start = Instant::now();
    let mut seq = 0i64;
    while start.elapsed() < budget {
        seq += 1;
        stmt.execute(params!["430112-00000001", seq, body, hash])?;
    }
    Ok(Figure::rate(
        "SQLite single-row commits, FULL",
        seq as usize,
        start.elapsed(),
    ))
}

fn envelope_table(dir: &Scratch) -> anyhow::Result<Connection> {
    let conn = Connection::open(dir.path().join("raw.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE envelopes (agent_id TEXT NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL,
         hash BLOB NOT NULL, PRIMARY KEY (agent_id, seq)) WITHOUT ROWID;",
    )?;
    Ok(conn)
}

/// Envelope-sized messages (a ~260-byte JSON object each) and their signatures by one key.
struct Messages {
    key: KeyPair,
    messages: Vec<Vec<u8>>,
    sigs: Vec<Signature>,
}

impl Messages {
    fn new() -> anyhow::Result<Messages> {
        let key = KeyPair::from_seed(&[9; 32])?;
        let messages: Vec<Vec<u8>> = (0..256)
            .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(250)).into_bytes())
            .collect();
        let sigs = messages
            .iter()
            .map(|m| key.sign(Domain::Envelope, m))
            .collect();
        Ok(Messages {
            key,
            messages,
            sigs,
        })
    }

    fn sign(&self, count: usize) -> anyhow::Result<()> {
        let mut last = None;
        for i in 0..count {
            last = Some(
                self.key
                    .sign(Domain::Envelope, &self.messages[i % self.messages.len()]),
            );
        }
        anyhow::ensure!(count == 0 || last.is_some(), "nothing was signed");
        Ok(())
    }

    fn verify(&self, count: usize) -> anyhow::Result<()> {
        let public = self.key.public_key();
        for i in 0..count {
            let j = i % self.messages.len();
            public
                .verify(Domain::Envelope, &self.messages[j], &self.sigs[j])
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(())
    }
}

/// Runs `work(count)` on `threads` threads at once; the total per second of wall time.
fn on_threads(
    threads: usize,
    count: usize,
    work: impl Fn(usize) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(|| work(count))).collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a benchmark thread panicked"))??;
        }
        anyhow::Ok(())
    })?;
    Ok(start.elapsed())
}

/// Ed25519 signatures per second on one core (ring), over envelope-sized messages.
pub fn ring_sign_one_core(count: usize) -> anyhow::Result<Figure> {
    let m = Messages::new()?;
    let took = on_threads(1, count, |n| m.sign(n))?;
    Ok(Figure::rate("ring Ed25519 sign, one core", count, took))
}

/// Ed25519 signature verifications per second on one core (ring), over envelope-sized
/// messages signed by one key.
pub fn ring_verify_one_core(count: usize) -> anyhow::Result<Figure> {
    let m = Messages::new()?;
    let took = on_threads(1, count, |n| m.verify(n))?;
    Ok(Figure::rate("ring Ed25519 verify, one core", count, took))
}

/// Signatures per second with one thread per core signing at once (measured, not
/// multiplied: two hardware threads of one core, or a busy machine, show here).
pub fn ring_sign_all_cores(count: usize, cores: usize) -> anyhow::Result<Figure> {
    let m = Messages::new()?;
    let took = on_threads(cores, count, |n| m.sign(n))?;
    Ok(Figure::rate(
        &format!("ring Ed25519 sign, {cores} threads at once"),
        count * cores,
        took,
    ))
}

/// Verifications per second with one thread per core verifying at once (measured).
pub fn ring_verify_all_cores(count: usize, cores: usize) -> anyhow::Result<Figure> {
    let m = Messages::new()?;
    let took = on_threads(cores, count, |n| m.verify(n))?;
    Ok(Figure::rate(
        &format!("ring Ed25519 verify, {cores} threads at once"),
        count * cores,
        took,
    ))
}

/// `one_core` times `cores`: the figure the bars are stated in.
pub fn times_cores(one_core: &Figure, cores: usize, what: &str) -> Figure {
    Figure {
        name: format!("ring Ed25519 {what} × {cores} cores"),
        value: one_core.value * cores as f64,
        ..one_core.clone()
    }
}

/// How many small JSON records per second an HTTP server on loopback takes in when it only
/// parses them: an axum server on 127.0.0.1:0 parses each POSTed JSON array of `batch`
/// realistic records (`CountySim`, ~350 bytes each) into `serde_json::Value`s and discards
/// them; `clients` keep-alive clients post for about `seconds`. Plain HTTP, no TLS, no
/// signature, no disk: the transport and parsing ceiling of this machine.
pub async fn loopback_parse_only(
    seconds: f64,
    clients: usize,
    batch: usize,
) -> anyhow::Result<Figure> {
    use axum::Json;
    use axum::routing::post;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/records", listener.local_addr()?);
    let app =
        axum::Router::new()
            .route(
                "/records",
                post(|Json(records): Json<Vec<serde_json::Value>>| async move {
                    records.len().to_string()
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });

    let county = tongbu_shared::CountyCode::parse("430112")?;
    let mut sim = tongbu_shared::sample::CountySim::new(county, 5, 2025).with_anomalies();
    let records: Vec<serde_json::Value> = (0..batch.max(1))
        .map(|_| serde_json::from_str(&sim.next_json()))
        .collect::<Result<_, _>>()?;
    let body = axum::body::Bytes::from(serde_json::to_vec(&records)?);
    let budget = Duration::from_secs_f64(seconds.max(0.1));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1) {
        let (url, body) = (url.clone(), body.clone());
        tasks.spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()?;
            let mut taken = 0usize;
            while start.elapsed() < budget {
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                anyhow::ensure!(
                    resp.status().is_success(),
                    "parse-only server: {}",
                    resp.status()
                );
                taken += resp.text().await?.parse::<usize>()?;
            }
            anyhow::Ok(taken)
        });
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done??;
    }
    let took = start.elapsed();
    let _ = stop.send(());
    server.await??;
    Ok(Figure::rate(
        &format!("loopback HTTP, parse-only, {batch}-record posts"),
        total,
        took,
    ))
}
