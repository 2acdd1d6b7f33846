//! The end-to-end harness: builds the real `tongbu-hub` and `tongbu-agent` binaries once, starts
//! them on port 0 in temporary directories, waits for their READY lines and talks to them the way
//! operators, county systems and agents do (CLI, HTTP). It never sleeps to wait: every wait polls
//! a condition until a deadline and fails with the processes' logs when the deadline passes.
//! Child processes are killed when their handle drops, so a failing test leaves nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod browser;
pub mod crash;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde_json::Value;

pub use tempfile::TempDir;

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Paths of the two binaries, built once per test process.
pub struct Bins {
    pub hub: PathBuf,
    pub agent: PathBuf,
}

/// The workspace's root folder.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The build's target folder: `CARGO_TARGET_DIR`, or `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target"))
}

/// A `tongbu-hub` command that reads no configuration file but what the test gives it: an
/// installed `/etc/tongbu/hub.toml` on the machine must not change what the tests see (an
/// empty file: every setting from flags, variables or defaults).
pub fn hub_command() -> Command {
    let mut cmd = Command::new(&bins().hub);
    cmd.env("TONGBU_HUB_CONFIG", "/dev/null");
    cmd
}

/// A `tongbu-agent` command that reads no configuration file but what the test gives it (see
/// [`hub_command`]).
pub fn agent_command() -> Command {
    let mut cmd = Command::new(&bins().agent);
    cmd.env("TONGBU_AGENT_CONFIG", "/dev/null");
    cmd
}

/// Builds both binaries once per test process and returns their paths.
///
/// They are built into a target directory of their own (`target/e2e`): a test run unifies
/// features across the whole workspace, dev-dependencies included, so building the binaries
/// into the shared directory with a different feature set would relink them on every run.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let workspace = workspace_dir();
        let target = target_dir().join("e2e");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&workspace)
            .args([
                "build",
                "--quiet",
                "-p",
                "tongbu-hub",
                "-p",
                "tongbu-agent",
                "--bins",
                "--target-dir",
            ])
            .arg(&target)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build of the binaries failed");
        let dir = target.join("debug");
        Bins {
            hub: dir.join("tongbu-hub"),
            agent: dir.join("tongbu-agent"),
        }
    })
}

/// Polls `cond` until it returns `Some` or `DEADLINE` passes (see [`tongbu_procs::wait_for`]).
pub fn wait_for<T>(what: &str, cond: impl FnMut() -> Option<T>) -> Result<T> {
    Ok(tongbu_procs::wait_for(what, DEADLINE, cond)?)
}

/// A running child process (READY line read, stderr in a log file, killed on drop); shared with
/// the benchmark in the `tongbu-procs` crate.
pub use tongbu_procs::Running;

fn spawn(cmd: Command, log: PathBuf, ready_prefix: &str) -> Result<Running> {
    Ok(Running::spawn(cmd, log, ready_prefix, DEADLINE)?)
}

fn run_output(cmd: Command, stdin: Option<&[u8]>) -> Result<Output> {
    Ok(tongbu_procs::run_output(cmd, stdin)?)
}

/// The result of one CLI command.
#[derive(Debug)]
pub struct Cli {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Cli {
    fn from(o: Output) -> Cli {
        Cli {
            ok: o.status.success(),
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Cli {
    /// Fails the test with the command's output unless it succeeded.
    pub fn expect_ok(self, what: &str) -> Cli {
        assert!(
            self.ok,
            "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// A hub with its own data directory.
pub struct Hub {
    pub dir: TempDir,
    pub proc: Option<Running>,
    pub api_key: String,
    port: u16,
    /// Extra `serve` arguments, kept for restarts.
    serve_args: Vec<String>,
}

impl Hub {
    /// Starts a hub on 127.0.0.1:0 and creates an operator API key.
    pub fn start() -> Result<Hub> {
        Hub::start_with(&[])
    }

    /// [`Hub::start`] with extra `serve` arguments (e.g. `--plain-http off`, `--tls-cert F
    /// --tls-key K`), used again on every restart.
    pub fn start_with(serve_args: &[&str]) -> Result<Hub> {
        let dir = tempfile::Builder::new().prefix("tongbu-hub-").tempdir()?;
        let mut hub = Hub {
            dir,
            proc: None,
            api_key: String::new(),
            port: 0,
            serve_args: serve_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        hub.api_key = hub
            .cli(&["apikey", "create", "--role", "operator"])
            .expect_ok("apikey create")
            .stdout
            .trim()
            .to_owned();
        hub.launch()?;
        Ok(hub)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn launch(&mut self) -> Result<()> {
        let mut cmd = hub_command();
        let listen = format!("127.0.0.1:{}", self.port);
        cmd.args(["serve", "--data-dir"])
            .arg(self.dir.path())
            .args(["--listen", &listen])
            .args(&self.serve_args);
        let running = spawn(cmd, self.dir.path().join("hub.log"), "READY listen=")?;
        self.port = running
            .port()
            .ok_or_else(|| anyhow!("bad READY url {}", running.url))?;
        self.proc = Some(running);
        Ok(())
    }

    /// The hub's plain HTTP URL (served to loopback peers unless `--plain-http off`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The hub's HTTPS URL (the same port).
    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The certificate the hub presents: `--tls-cert` if it was started with one, else the
    /// self-signed one it made in its data directory.
    pub fn cert_path(&self) -> PathBuf {
        self.serve_args
            .iter()
            .position(|a| a == "--tls-cert")
            .and_then(|i| self.serve_args.get(i + 1))
            .map(PathBuf::from)
            .unwrap_or_else(|| self.dir.path().join("tls").join("cert.pem"))
    }

    /// The SHA-256 fingerprint of [`Hub::cert_path`], as `tongbu-hub tls show` prints it.
    pub fn cert_sha256(&self) -> String {
        let path = self.cert_path();
        self.cli(&[
            "tls",
            "show",
            "--tls-cert",
            path.to_str().expect("utf-8 path"),
        ])
        .expect_ok("tls show")
        .stdout
        .trim()
        .to_owned()
    }

    /// Runs a hub CLI command against this hub's data directory.
    pub fn cli(&self, args: &[&str]) -> Cli {
        let mut cmd = hub_command();
        cmd.args(args).arg("--data-dir").arg(self.dir.path());
        run_output(cmd, None).expect("run tongbu-hub").into()
    }

    /// Runs a hub CLI command with `stdin` as its standard input.
    pub fn cli_with_input(&self, args: &[&str], stdin: &[u8]) -> Cli {
        let mut cmd = hub_command();
        cmd.args(args).arg("--data-dir").arg(self.dir.path());
        run_output(cmd, Some(stdin)).expect("run tongbu-hub").into()
    }

    /// Adds a console user through `tongbu-hub admin add --password-stdin`, as an operator
    /// of the hub does; `role` is `admin` or `operator`.
    pub fn add_console_user(&self, user: &str, role: &str, password: &str) {
        self.cli_with_input(
            &[
                "admin",
                "add",
                "--user",
                user,
                "--role",
                role,
                "--password-stdin",
            ],
            format!("{password}\n").as_bytes(),
        )
        .expect_ok("admin add");
    }

    pub fn add_county(&self, code: &str, name: &str) {
        self.cli(&["county", "add", "--code", code, "--name", name])
            .expect_ok("county add");
    }

    /// A one-time enrollment token for `county`, carrying the pin of the certificate the hub
    /// presents.
    pub fn issue_token(&self, county: &str) -> String {
        // No --tls-cert even when `serve` had one: `token issue` pins what `serve` presents.
        self.cli(&["token", "issue", "--county", county])
            .expect_ok("token issue")
            .stdout
            .trim()
            .to_owned()
    }

    /// SIGKILLs the hub.
    pub fn kill9(&mut self) {
        if let Some(p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Stops the hub with SIGTERM and checks it exits cleanly.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(p) = self.proc.take() {
            let clean = p.terminate()?;
            if !clean {
                bail!("hub did not exit cleanly on SIGTERM");
            }
        }
        Ok(())
    }

    /// Starts the hub again on the same port and data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.launch()
    }

    pub fn get(&self, path: &str) -> Result<(u16, Value)> {
        let resp = http()
            .get(format!("{}{path}", self.url()))
            .bearer_auth(&self.api_key)
            .send()?;
        let status = resp.status().as_u16();
        let text = resp.text()?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    pub fn agents(&self) -> Result<Vec<Value>> {
        let (status, v) = self.get("/api/v1/agents")?;
        if status != 200 {
            bail!("GET /api/v1/agents: {status} {v}");
        }
        Ok(v["agents"].as_array().cloned().unwrap_or_default())
    }

    /// `GET /api/v1/ledger` for one county and year.
    pub fn ledger(&self, county: &str, year: i32) -> Result<Value> {
        let path = format!("/api/v1/ledger?county={county}&year={year}");
        let (status, v) = self.get(&path)?;
        if status != 200 {
            bail!("GET {path}: {status} {v}");
        }
        Ok(v)
    }

    pub fn agent_row(&self, agent_id: &str) -> Result<Option<Value>> {
        Ok(self
            .agents()?
            .into_iter()
            .find(|a| a["agent_id"] == agent_id))
    }

    /// Opens the hub's database read-only (tests check what is stored, byte for byte).
    /// Copies the stopped hub's database files into `to` (a backup).
    pub fn backup_db(&self, to: &Path) {
        copy_db_files(self.data_dir(), to);
    }

    /// Replaces the stopped hub's database files with those in `from` (a restore).
    pub fn restore_db(&self, from: &Path) {
        copy_db_files(from, self.data_dir());
    }

    pub fn db(&self) -> Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open_with_flags(
            self.dir.path().join("hub.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(conn)
    }

    /// Every envelope the hub stores for `agent_id`, in seq order.
    pub fn stored(&self, agent_id: &str) -> Result<Vec<StoredRow>> {
        let sql = "SELECT seq, hash, body FROM envelopes WHERE agent_id = ?1 ORDER BY seq";
        stored_rows(&self.db()?, sql, &[&agent_id])
    }
}

/// One stored envelope as both sides keep it: (seq, chain hash, exact body bytes).
pub type StoredRow = (u64, Vec<u8>, Vec<u8>);

fn stored_rows(
    db: &rusqlite::Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<StoredRow>> {
    let mut stmt = db.prepare(sql)?;
    let rows = stmt
        .query_map(params, |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// A blocking HTTP client for tests (loopback only, short timeouts).
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// A blocking HTTPS client for tests that trusts only the certificate(s) in `root_pem` (a
/// hub's self-signed certificate, or the CA that issued its certificate).
pub fn https(root_pem: &[u8]) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .tls_built_in_root_certs(false)
        .https_only(true);
    for cert in reqwest::Certificate::from_pem_bundle(root_pem).expect("PEM certificates") {
        builder = builder.add_root_certificate(cert);
    }
    builder.build().expect("https client")
}

/// An agent with its own data directory.
pub struct Agent {
    pub dir: TempDir,
    pub proc: Option<Running>,
    pub agent_id: String,
}

impl Agent {
    pub fn new() -> Result<Agent> {
        let dir = tempfile::Builder::new().prefix("tongbu-agent-").tempdir()?;
        Ok(Agent {
            dir,
            proc: None,
            agent_id: String::new(),
        })
    }

    /// A new agent enrolled with `hub` for `county` (the county must exist), over HTTPS with
    /// the certificate pin its token carries, as a county out on the network would.
    pub fn enrolled(hub: &Hub, county: &str) -> Result<Agent> {
        let mut agent = Agent::new()?;
        let token = hub.issue_token(county);
        agent.enroll(&hub.https_url(), &token).expect_ok("enroll");
        agent.agent_id = agent.status()?["agent_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok(agent)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn cli(&self, args: &[&str]) -> Cli {
        self.cli_with_input(args, None)
    }

    /// `sync --once`, which must succeed.
    pub fn sync_once(&self) {
        self.cli(&["sync", "--once"]).expect_ok("sync --once");
    }

    pub fn cli_with_input(&self, args: &[&str], stdin: Option<&[u8]>) -> Cli {
        let mut cmd = agent_command();
        cmd.args(args).arg("--data-dir").arg(self.dir.path());
        run_output(cmd, stdin).expect("run tongbu-agent").into()
    }

    pub fn enroll(&self, hub_url: &str, token: &str) -> Cli {
        self.enroll_with(hub_url, token, &[])
    }

    /// `enroll` with `extra` arguments (`--ca FILE`, `--cert-sha256 HEX`, …).
    pub fn enroll_with(&self, hub_url: &str, token: &str, extra: &[&str]) -> Cli {
        let mut args = vec!["enroll", "--hub", hub_url, "--token", token];
        args.extend_from_slice(extra);
        self.cli(&args)
    }

    /// Submits `records` (JSON Lines) from a file; returns the CLI result.
    pub fn submit(&self, records: &str) -> Cli {
        let path = self
            .dir
            .path()
            .join(format!("submit-{}.jsonl", std::process::id()));
        std::fs::write(&path, records).expect("write records");
        let out = self.cli(&["submit", path.to_str().expect("utf-8 path")]);
        let _ = std::fs::remove_file(&path);
        out
    }

    pub fn status(&self) -> Result<Value> {
        let out = self.cli(&["status", "--json"]).expect_ok("status --json");
        Ok(serde_json::from_str(&out.stdout)?)
    }

    /// Starts `tongbu-agent run` with quick retries for tests.
    pub fn start(&mut self) -> Result<()> {
        self.start_with(&[])
    }

    /// Starts `tongbu-agent run` with quick retries and `extra` arguments.
    pub fn start_with(&mut self, extra: &[&str]) -> Result<()> {
        let mut cmd = agent_command();
        cmd.args(["run", "--data-dir"]).arg(self.dir.path()).args([
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-secs",
            "1",
            "--retry-min-ms",
            "50",
            "--retry-max-ms",
            "400",
        ]);
        cmd.args(extra);
        self.proc = Some(spawn(
            cmd,
            self.dir.path().join("agent.log"),
            "READY intake=",
        )?);
        Ok(())
    }

    pub fn intake_url(&self) -> Option<String> {
        self.proc.as_ref().map(|p| p.url.clone())
    }

    pub fn kill9(&mut self) {
        if let Some(p) = self.proc.take() {
            p.kill9();
        }
    }

    pub fn log(&self) -> String {
        self.proc
            .as_ref()
            .map(Running::log_text)
            .unwrap_or_else(|| {
                std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
            })
    }

    /// Waits until the hub has acknowledged everything this agent holds.
    pub fn wait_synced(&self) -> Result<u64> {
        wait_for(
            &format!("agent {} to be fully acked", self.agent_id),
            || {
                let s = self.status().ok()?;
                let head = s["head_seq"].as_u64()?;
                (s["acked_seq"].as_u64()? == head && s["queue_depth"].as_u64()? == 0)
                    .then_some(head)
            },
        )
    }

    /// Opens the agent's outbox database (read-write: some tests tamper with it on purpose).
    pub fn db(&self) -> Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(self.dir.path().join("outbox.db"))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(conn)
    }

    /// Every envelope in the outbox, in seq order.
    pub fn stored(&self) -> Result<Vec<StoredRow>> {
        stored_rows(
            &self.db()?,
            "SELECT seq, hash, body FROM envelopes ORDER BY seq",
            &[],
        )
    }
}

/// `tongbu-hub demo` running in a data directory of its own.
pub struct Demo {
    pub proc: Running,
    pub api_key: String,
}

impl Demo {
    /// Starts the demo on 127.0.0.1:0 with quick feeders; `dir` may hold an earlier demo.
    pub fn start(dir: &Path) -> Result<Demo> {
        let mut cmd = hub_command();
        cmd.args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--interval-ms",
            "100",
            "--data-dir",
        ])
        .arg(dir);
        let proc = spawn(cmd, dir.with_extension("log"), "READY listen=")?;
        let api_key = std::fs::read_to_string(dir.join("demo-api-key"))?
            .trim()
            .to_owned();
        Ok(Demo { proc, api_key })
    }

    pub fn agents(&self) -> Result<Vec<Value>> {
        let resp = http()
            .get(format!("{}/api/v1/agents", self.proc.url))
            .bearer_auth(&self.api_key)
            .send()?;
        let v: Value = resp.json()?;
        Ok(v["agents"].as_array().cloned().unwrap_or_default())
    }
}

/// `n` realistic records for `county` as JSON Lines (deterministic per seed).
pub fn records(county: &str, seed: u64, n: usize) -> String {
    let county = tongbu_shared::CountyCode::parse(county).expect("county code");
    tongbu_shared::sample::CountySim::new(county, seed, 2024).batch(n)
}

/// `n` realistic records for `county` as JSON Lines where about a third of the projects break
/// a rule, arrive out of order or are amended (deterministic per seed).
pub fn records_with_anomalies(county: &str, seed: u64, n: usize) -> String {
    let county = tongbu_shared::CountyCode::parse(county).expect("county code");
    tongbu_shared::sample::CountySim::new(county, seed, 2024)
        .with_anomalies()
        .batch(n)
}

/// Asserts the hub holds exactly the agent's chain: the same seqs, hashes and body bytes, no
/// gap, nothing twice.
pub fn assert_same_chain(hub: &Hub, agent: &Agent) {
    let local = agent.stored().expect("agent outbox");
    let remote = hub.stored(&agent.agent_id).expect("hub envelopes");
    assert_eq!(
        local.len(),
        remote.len(),
        "agent {} holds {} records, hub {}",
        agent.agent_id,
        local.len(),
        remote.len()
    );
    for (i, (l, r)) in local.iter().zip(&remote).enumerate() {
        assert_eq!(l.0, i as u64 + 1, "agent seq gap");
        assert_eq!(l, r, "seq {} differs between agent and hub", l.0);
    }
}

/// A hand-driven agent that speaks the wire protocol directly, for tests that must do what a
/// well-behaved agent never does: resend, forge, equivocate.
pub struct RawAgent {
    pub key: tongbu_shared::KeyPair,
    pub agent_id: tongbu_shared::AgentId,
    pub hub_url: String,
    pub hub_key: tongbu_shared::PublicKey,
}

impl RawAgent {
    /// Enrolls a fresh key with `token`.
    pub fn enroll(hub_url: &str, token: &str, seed: [u8; 32]) -> Result<RawAgent> {
        use tongbu_shared::crypto::Domain;
        use tongbu_shared::protocol::{ENROLL_PATH, EnrollRequest, EnrollResponse};
        let key = tongbu_shared::KeyPair::from_seed(&seed)?;
        let public_key = key.public_key();
        let proof = key.sign(
            Domain::Enroll,
            &tongbu_shared::signed::enroll_proof_bytes(token, &public_key),
        );
        let req = EnrollRequest {
            token: token.to_owned(),
            public_key,
            proof,
            agent_version: "test".into(),
            hostname: None,
        };
        let resp = http()
            .post(format!("{hub_url}{ENROLL_PATH}"))
            .json(&req)
            .send()?;
        if !resp.status().is_success() {
            bail!("enroll: {} {}", resp.status(), resp.text()?);
        }
        let er: EnrollResponse = resp.json()?;
        Ok(RawAgent {
            key,
            agent_id: er.agent_id,
            hub_url: hub_url.to_owned(),
            hub_key: er.hub_public_key,
        })
    }

    /// Signs a chain of `bodies` starting after (`after_seq`, `prev`).
    pub fn chain(
        &self,
        after_seq: u64,
        prev: tongbu_shared::Digest,
        bodies: &[String],
    ) -> Vec<tongbu_shared::Envelope> {
        let mut prev = prev;
        bodies
            .iter()
            .zip(after_seq + 1..)
            .map(|(b, seq)| {
                let e = tongbu_shared::Envelope::sign(
                    &self.key,
                    self.agent_id.clone(),
                    seq,
                    prev,
                    b.clone().into_bytes(),
                );
                prev = e.hash();
                e
            })
            .collect()
    }

    /// Sends a signed request.
    pub fn request(&self, method: &str, path: &str, body: Vec<u8>) -> Result<Reply> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        let nonce = hex::encode(now.to_be_bytes()) + &hex::encode(rand_bytes());
        let auth = tongbu_shared::signed::RequestAuth::sign(
            &self.key,
            &self.agent_id,
            method,
            path,
            now,
            nonce,
            &body,
        );
        let client = http();
        let mut req = match method {
            "GET" => client.get(format!("{}{path}", self.hub_url)),
            _ => client
                .post(format!("{}{path}", self.hub_url))
                .header("content-type", "application/json")
                .body(body),
        };
        for (name, value) in auth.headers() {
            req = req.header(name, value);
        }
        let resp = req.send()?;
        let status = resp.status().as_u16();
        let raw = resp.text()?;
        let body = serde_json::from_str(&raw).unwrap_or_else(|_| Value::String(raw.clone()));
        Ok(Reply { status, body, raw })
    }

    /// Posts a batch of envelopes with a heartbeat.
    pub fn send(&self, envelopes: &[tongbu_shared::Envelope]) -> Result<Reply> {
        use tongbu_shared::protocol::{BatchRequest, Heartbeat, batches_path};
        let batch = BatchRequest {
            heartbeat: Heartbeat {
                head_seq: envelopes.last().map_or(0, |e| e.seq),
                queue_depth: 0,
                agent_version: "test".into(),
                last_error: None,
                outcome_cursor: 0,
                log_size: 0,
            },
            envelopes: envelopes.to_vec(),
        };
        self.request(
            "POST",
            &batches_path(&self.agent_id),
            serde_json::to_vec(&batch)?,
        )
    }

    /// Verifies a signed receipt with the hub key pinned at enrollment. It must be parsed from
    /// the raw reply text: a signature covers bytes, which a `serde_json::Value` does not keep.
    pub fn receipt(&self, reply: &Reply) -> Result<tongbu_shared::protocol::Receipt> {
        let signed: tongbu_shared::signed::Signed<tongbu_shared::protocol::Receipt> =
            serde_json::from_str(&reply.raw)?;
        Ok(signed.verify(&self.hub_key)?)
    }
}

/// A reply from the hub: status, parsed JSON (or the text as a JSON string) and the raw text.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub raw: String,
}

fn rand_bytes() -> [u8; 8] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b
}

/// Copies `hub.db` and its WAL files from one directory to another, removing stale ones.
fn copy_db_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for name in ["hub.db", "hub.db-wal", "hub.db-shm"] {
        let _ = std::fs::remove_file(to.join(name));
        if from.join(name).exists() {
            std::fs::copy(from.join(name), to.join(name)).expect("copy a database file");
        }
    }
}
