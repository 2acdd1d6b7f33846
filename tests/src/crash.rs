//! Crash-test helpers (`tests/crash/`): the kill budget and a seeded random source whose seed is
//! printed for replay, tight polls that fire a SIGKILL the moment progress is observed, reads of
//! an agent's outbox and the hub's watermarks straight from their SQLite files (read-only, so
//! they work while the process that owns the file is dead), submissions that a kill may cut
//! short, and the ledger computed independently of the hub.
//!
//! A kill is never timed by a sleep: it is triggered by something observed (a reply returned,
//! a commit visible in the outbox, a watermark at the hub passed a threshold), so where it lands
//! depends on the processes' real progress, and the random choices only pick the trigger.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::{Agent, DEADLINE, Hub, StoredRow, agent_command, stored_rows};

/// The environment variable with the number of agent kills (the hub gets half as many, at
/// least 100): `TONGBU_CRASH_KILLS=1000` is the long mode.
pub const KILLS_VAR: &str = "TONGBU_CRASH_KILLS";
/// The environment variable that replays a run's random choices.
pub const SEED_VAR: &str = "TONGBU_CRASH_SEED";

/// How many kills a run makes and the seed of its random choices.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub agent_kills: usize,
    pub hub_kills: usize,
    pub seed: u64,
}

impl Budget {
    /// Reads `TONGBU_CRASH_KILLS` and `TONGBU_CRASH_SEED`; the defaults are CI's budget (200
    /// agent kills, 100 hub kills) and a seed from the clock. Prints the seed and how to replay.
    pub fn from_env(test: &str) -> Budget {
        let agent_kills = std::env::var(KILLS_VAR)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(200);
        let hub_kills = (agent_kills / 2).max(100);
        let seed = std::env::var(SEED_VAR)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                (now.as_nanos() as u64) ^ u64::from(std::process::id())
            });
        eprintln!(
            "{test}: seed {seed}, {agent_kills} agent kills, {hub_kills} hub kills \
             (replay: {SEED_VAR}={seed} {KILLS_VAR}={agent_kills} \
             cargo test -p tongbu-tests --test crash -- {test} --nocapture)"
        );
        Budget {
            agent_kills,
            hub_kills,
            seed,
        }
    }
}

/// SplitMix64: small, fast and the same on every machine, so a seed replays the same choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// An independent stream for worker `index` of a run seeded with `seed`.
    pub fn fork(seed: u64, index: u64) -> Rng {
        let mut r = Rng(seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next_u64() as usize % items.len()]
    }
}

/// Polls `cond` as tightly as the condition allows (a kill must land while the observed step is
/// still in progress), giving up after `DEADLINE`. Parks a few microseconds between polls so a
/// loaded machine still runs the processes being watched.
pub fn poll<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return Ok(v);
        }
        if start.elapsed() > DEADLINE {
            bail!("timed out after {DEADLINE:?} waiting for {what}");
        }
        std::thread::park_timeout(Duration::from_micros(200));
    }
}

fn open_read_only(path: &Path) -> Result<rusqlite::Connection> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("open {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// What an agent's outbox holds: how many envelopes and the highest seq (equal unless the chain
/// has a gap), the rows after a given seq, and how far it has recorded the hub's acknowledgement.
#[derive(Debug)]
pub struct OutboxState {
    pub count: u64,
    pub head_seq: u64,
    pub rows_after: Vec<StoredRow>,
    pub acked_seq: u64,
}

/// Reads the outbox of an agent whose processes are dead, in one read transaction. Only rows
/// after `after_seq` are returned, so a long run does not re-read its whole past every time.
pub fn outbox_state(agent: &Agent, after_seq: u64) -> Result<OutboxState> {
    let conn = open_read_only(&agent.data_dir().join("outbox.db"))?;
    let tx = conn.unchecked_transaction()?;
    let (count, head): (i64, i64) = tx.query_row(
        "SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM envelopes",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let rows_after = stored_rows(
        &tx,
        "SELECT seq, hash, body FROM envelopes WHERE seq > ?1 ORDER BY seq",
        &[&(after_seq as i64)],
    )?;
    let acked: i64 = tx.query_row("SELECT acked_seq FROM sync_state WHERE id = 1", [], |r| {
        r.get(0)
    })?;
    tx.finish()?;
    Ok(OutboxState {
        count: count as u64,
        head_seq: head as u64,
        rows_after,
        acked_seq: acked as u64,
    })
}

/// The outbox head (highest seq), read while the agent runs; `None` if it cannot be read now.
pub fn outbox_head(agent: &Agent) -> Option<u64> {
    let conn = open_read_only(&agent.data_dir().join("outbox.db")).ok()?;
    conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM envelopes", [], |r| {
        r.get::<_, i64>(0)
    })
    .ok()
    .map(|s| s as u64)
}

/// A read-only window on the hub's database that outlives the hub's processes: it reads the
/// watermarks (`agents.acked_seq`) while the hub runs, while it is dead and after it restarts.
pub struct HubWatch {
    path: std::path::PathBuf,
    conn: Option<rusqlite::Connection>,
}

impl HubWatch {
    pub fn new(hub: &Hub) -> HubWatch {
        HubWatch {
            path: hub.data_dir().join("hub.db"),
            conn: None,
        }
    }

    fn conn(&mut self) -> Result<&rusqlite::Connection> {
        if self.conn.is_none() {
            let conn = rusqlite::Connection::open_with_flags(
                &self.path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            // A poll must not hang behind a recovering writer: it just polls again.
            conn.busy_timeout(Duration::from_millis(50))?;
            self.conn = Some(conn);
        }
        self.conn.as_ref().ok_or_else(|| anyhow!("no connection"))
    }

    /// Every agent's watermark at the hub; `None` when the database cannot be read just now.
    pub fn acked(&mut self) -> Option<HashMap<String, u64>> {
        match self.read_acked() {
            Ok(rows) => Some(rows),
            Err(_) => {
                self.conn = None;
                None
            }
        }
    }

    fn read_acked(&mut self) -> Result<HashMap<String, u64>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached("SELECT agent_id, acked_seq FROM agents")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<rusqlite::Result<HashMap<_, _>>>()?;
        Ok(rows)
    }

    /// One agent's watermark at the hub (0 before its first batch).
    pub fn acked_of(&mut self, agent_id: &str) -> Option<u64> {
        self.acked().map(|m| m.get(agent_id).copied().unwrap_or(0))
    }

    /// The envelopes the hub stores for `agent_id` after `after_seq`, in seq order.
    pub fn stored_after(&mut self, agent_id: &str, after_seq: u64) -> Result<Vec<StoredRow>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT seq, hash, body FROM envelopes WHERE agent_id = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        let rows = stmt
            .query_map(rusqlite::params![agent_id, after_seq as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

/// What a county system heard back from a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// "Stored", with the seqs the records got.
    Stored(Vec<u64>),
    /// No answer, or an error: the records may or may not be stored.
    Nothing(String),
}

/// `POST /records` to a running agent's intake.
pub fn post_records(intake_url: &str, lines: &[String]) -> Heard {
    // One client for the whole run: building one per request would cost more than the request.
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(crate::http);
    let body = jsonl(lines);
    let resp = match client
        .post(format!("{intake_url}/records"))
        .body(body)
        .send()
    {
        Ok(r) => r,
        Err(e) => return Heard::Nothing(format!("request failed: {e}")),
    };
    let status = resp.status().as_u16();
    let text = match resp.text() {
        Ok(t) => t,
        Err(e) => return Heard::Nothing(format!("reply lost: {e}")),
    };
    if status != 200 {
        return Heard::Nothing(format!("{status}: {text}"));
    }
    let seqs = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            v["stored"]
                .as_array()?
                .iter()
                .map(|s| s["seq"].as_u64())
                .collect::<Option<Vec<u64>>>()
        })
        .unwrap_or_default();
    if seqs.len() != lines.len() {
        return Heard::Nothing(format!("200 without one seq per record: {text}"));
    }
    Heard::Stored(seqs)
}

/// Records as a JSON Lines document.
pub fn jsonl(lines: &[String]) -> String {
    let mut s = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// `tongbu-agent submit FILE` running as its own process, which a kill may cut short.
pub struct CliSubmit {
    child: Child,
    file: std::path::PathBuf,
    records: usize,
}

impl CliSubmit {
    /// Starts `tongbu-agent submit` on `lines` (written to a file in the agent's directory).
    pub fn start(agent: &Agent, lines: &[String], n: u64) -> Result<CliSubmit> {
        let file = agent.data_dir().join(format!("crash-submit-{n}.jsonl"));
        std::fs::write(&file, jsonl(lines))?;
        let child = agent_command()
            .arg("submit")
            .arg(&file)
            .arg("--data-dir")
            .arg(agent.data_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn tongbu-agent submit")?;
        Ok(CliSubmit {
            child,
            file,
            records: lines.len(),
        })
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL (a no-op if it already exited).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
    }

    /// Waits for the process and reports what its caller heard: one `seq=N ...` line per record
    /// and exit 0, or nothing.
    pub fn finish(self) -> Heard {
        let out = self.child.wait_with_output();
        let _ = std::fs::remove_file(&self.file);
        let out = match out {
            Ok(o) => o,
            Err(e) => return Heard::Nothing(format!("wait: {e}")),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Heard::Nothing(format!(
                "submit exited with {:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let seqs = stdout
            .lines()
            .map(|l| {
                l.strip_prefix("seq=")
                    .and_then(|r| r.split(' ').next())
                    .and_then(|s| s.parse::<u64>().ok())
            })
            .collect::<Option<Vec<u64>>>()
            .unwrap_or_default();
        if seqs.len() != self.records {
            return Heard::Nothing(format!("exit 0 without one seq per record: {stdout}"));
        }
        Heard::Stored(seqs)
    }
}

/// Starts `tongbu-agent run` without waiting for READY, so a kill can land while it opens its
/// outbox, migrates and recovers.
pub fn spawn_agent_unready(agent: &Agent) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(agent.data_dir().join("agent.log"))?;
    agent_command()
        .args(["run", "--data-dir"])
        .arg(agent.data_dir())
        .args(["--listen", "127.0.0.1:0", "--retry-min-ms", "50"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("spawn tongbu-agent run")
}

/// Whether process `pid` has `file` open (Linux `/proc`): the observable moment an agent has
/// opened its outbox and is migrating or recovering it, before it reports READY.
pub fn has_open(pid: u32, file: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == file))
}

/// One county-year's ledger totals, summed from the records themselves (each record of a valid
/// stream is accepted, so every amount counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub budget_approved: i64,
    pub contracted: i64,
    pub paid: i64,
    pub accepted: i64,
}

impl Totals {
    pub fn add(&mut self, line: &str) {
        let v: Value = serde_json::from_str(line).expect("a record is JSON");
        let amount = v["amount_fen"].as_i64().unwrap_or(0);
        let to = match v["kind"].as_str() {
            Some("budget_line") => &mut self.budget_approved,
            Some("contract") => &mut self.contracted,
            Some("payment") => &mut self.paid,
            _ => &mut 0,
        };
        *to = to.checked_add(amount).expect("sum within i64");
        self.accepted += 1;
    }

    pub fn of<'a>(lines: impl IntoIterator<Item = &'a String>) -> Totals {
        let mut t = Totals::default();
        for l in lines {
            t.add(l);
        }
        t
    }

    /// The reply `GET /api/v1/ledger` must give for these totals.
    pub fn expected_reply(&self, county: &str, year: i32) -> Value {
        json!({
            "county": county, "year": year,
            "budget_approved_fen": self.budget_approved, "contracted_fen": self.contracted,
            "paid_fen": self.paid, "accepted": self.accepted, "held": 0, "rejected": 0,
        })
    }
}

/// The hub's ledger for `county` and `year` (`GET /api/v1/ledger`).
pub fn ledger(hub: &Hub, county: &str, year: i32) -> Result<Value> {
    let (status, v) = hub.get(&format!("/api/v1/ledger?county={county}&year={year}"))?;
    if status != 200 {
        bail!("GET /api/v1/ledger: {status} {v}");
    }
    Ok(v)
}

/// Checks what a crash test must hold at the end for one agent: the hub stores exactly the
/// agent's chain (same seqs, hashes and body bytes, no gap, no duplicate), the chain verifies,
/// and the bodies are exactly `expected`, in order: every record whose submission was stored,
/// once each.
pub fn check_agent(hub: &Hub, agent: &Agent, expected: &[String]) -> Result<()> {
    let local = agent.stored()?;
    let remote = hub.stored(&agent.agent_id)?;
    if local.len() != remote.len() {
        bail!(
            "agent {} holds {} records, the hub {}",
            agent.agent_id,
            local.len(),
            remote.len()
        );
    }
    for (i, (l, r)) in local.iter().zip(&remote).enumerate() {
        if l.0 != i as u64 + 1 {
            bail!(
                "agent {}: seq {} at position {}",
                agent.agent_id,
                l.0,
                i + 1
            );
        }
        if l != r {
            bail!(
                "agent {}: seq {} differs between agent and hub",
                agent.agent_id,
                l.0
            );
        }
    }
    if local.len() != expected.len() {
        bail!(
            "agent {} holds {} records, {} were stored by submissions",
            agent.agent_id,
            local.len(),
            expected.len()
        );
    }
    for (row, want) in local.iter().zip(expected) {
        if row.2 != want.as_bytes() {
            bail!(
                "agent {}: seq {} holds {}, expected {want}",
                agent.agent_id,
                row.0,
                String::from_utf8_lossy(&row.2)
            );
        }
    }
    let verify = agent.cli(&["verify"]);
    let want = format!("ok: {} records verify", expected.len());
    if !verify.ok || !verify.stdout.starts_with(&want) {
        bail!(
            "agent {}: verify: {} {}",
            agent.agent_id,
            verify.stdout,
            verify.stderr
        );
    }
    let row = hub
        .agent_row(&agent.agent_id)?
        .ok_or_else(|| anyhow!("the hub does not know agent {}", agent.agent_id))?;
    if row["state"] != "active" {
        bail!("agent {} is {} at the hub", agent.agent_id, row["state"]);
    }
    Ok(())
}
