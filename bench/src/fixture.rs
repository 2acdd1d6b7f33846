//! The real `tongbu-hub` and `tongbu-agent` binaries, driven as operators and county systems
//! drive them: CLI commands for set-up (`apikey create`, `county add`, `token issue`,
//! `enroll`, `submit`), `serve` and `run` started on port 0 in a data directory of their own,
//! ready once they print their `READY` line (through [`tongbu_procs::Running`], the process
//! handling the end-to-end tests use too). Agents enroll over HTTPS with the certificate pin
//! their token carries, as a county out on the network would.
//!
//! Every process is killed when its handle drops; data directories live in temporary folders
//! that the scenarios own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use tongbu_procs::Running;
use tongbu_shared::certpin::CertFingerprint;

/// How long a binary may take to print its READY line.
const READY_DEADLINE: Duration = Duration::from_secs(120);

/// Where the two binaries are.
#[derive(Debug, Clone)]
pub struct Bins {
    pub dir: PathBuf,
    pub hub: PathBuf,
    pub agent: PathBuf,
}

impl Bins {
    /// The binaries in `dir`, by default the folder of this executable (`target/release`
    /// when the benchmark was built with `cargo build --release`).
    pub fn locate(dir: Option<PathBuf>) -> anyhow::Result<Bins> {
        let dir = match dir {
            Some(d) => d,
            None => std::env::current_exe()?
                .parent()
                .map(Path::to_path_buf)
                .context("this executable has no folder")?,
        };
        let bins = Bins {
            hub: dir.join("tongbu-hub"),
            agent: dir.join("tongbu-agent"),
            dir,
        };
        for bin in [&bins.hub, &bins.agent] {
            anyhow::ensure!(
                bin.is_file(),
                "{} is missing: build the binaries first \
                 (cargo build --release -p tongbu-hub -p tongbu-agent -p tongbu-bench), \
                 or name their folder with --bin-dir",
                bin.display()
            );
        }
        Ok(bins)
    }

    /// Whether the binaries look like a debug build (their folder is named `debug`).
    pub fn is_debug(&self) -> bool {
        self.dir.file_name().is_some_and(|n| n == "debug")
    }
}

/// Runs `bin args… --data-dir dir`; its stdout, or an error with its stderr.
fn cli(bin: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new(bin);
    cmd.args(args).arg("--data-dir").arg(dir);
    let out = tongbu_procs::run_output(cmd, None)
        .with_context(|| format!("cannot run {}", bin.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} {} failed ({}): {}",
        bin.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A hub data directory, and its `serve` process while it runs.
pub struct HubProc {
    bin: PathBuf,
    pub dir: PathBuf,
    proc: Option<Running>,
    /// The port `serve` listens on (0 until it first started; then kept across restarts).
    pub port: u16,
    /// An operator API key for the read API.
    pub api_key: String,
}

impl HubProc {
    /// A new hub in `dir` (created) with an operator API key; not serving yet.
    pub fn new(bins: &Bins, dir: &Path) -> anyhow::Result<HubProc> {
        std::fs::create_dir_all(dir)?;
        let mut hub = HubProc {
            bin: bins.hub.clone(),
            dir: dir.to_path_buf(),
            proc: None,
            port: 0,
            api_key: String::new(),
        };
        hub.api_key = hub
            .cli(&["apikey", "create", "--role", "operator"])?
            .trim()
            .to_owned();
        Ok(hub)
    }

    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        cli(&self.bin, &self.dir, args)
    }

    /// Starts `serve` on 127.0.0.1 (the port it had before, or a free one the first time) and
    /// waits for its READY line.
    pub fn serve(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.proc.is_none(), "the hub is already serving");
        let mut cmd = Command::new(&self.bin);
        cmd.args(["serve", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)]);
        let running = Running::spawn(
            cmd,
            self.dir.join("hub.log"),
            "READY listen=",
            READY_DEADLINE,
        )?;
        self.port = running
            .port()
            .with_context(|| format!("bad READY url {}", running.url))?;
        self.proc = Some(running);
        Ok(())
    }

    /// Stops `serve` with SIGTERM (a clean shutdown).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(p) = self.proc.take() {
            anyhow::ensure!(p.terminate()?, "the hub did not exit cleanly on SIGTERM");
        }
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Running::pid)
    }

    /// Plain HTTP (served to loopback peers): the read API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// HTTPS on the same port: what agents use.
    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The fingerprint of the certificate `serve` presents (made on its first start).
    pub fn fingerprint(&self) -> anyhow::Result<CertFingerprint> {
        let hex = self.cli(&["tls", "show"])?;
        Ok(CertFingerprint::parse_hex(hex.trim())?)
    }

    /// The acknowledged seqs of every agent added up, from the read API (`GET /api/v1/agents`).
    pub async fn acked_total(&self) -> anyhow::Result<u64> {
        let v: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/agents", self.url()))
            .bearer_auth(&self.api_key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(v["agents"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["acked_seq"].as_u64()).sum())
            .unwrap_or(0))
    }

    pub fn add_county(&self, code: &str, name: &str) -> anyhow::Result<()> {
        self.cli(&["county", "add", "--code", code, "--name", name])?;
        Ok(())
    }

    /// A one-time enrollment token for `county` carrying the certificate's pin.
    pub fn issue_token(&self, county: &str) -> anyhow::Result<String> {
        Ok(self
            .cli(&["token", "issue", "--county", county])?
            .trim()
            .to_owned())
    }
}

/// An agent data directory, and its `run` process while it runs.
pub struct AgentProc {
    bin: PathBuf,
    pub dir: PathBuf,
    proc: Option<Running>,
    pub agent_id: String,
}

impl AgentProc {
    /// A new agent in `dir`, enrolled with the serving `hub` for `county` (which must exist)
    /// over HTTPS with the pinned token.
    pub fn enrolled(
        bins: &Bins,
        dir: &Path,
        hub: &HubProc,
        county: &str,
    ) -> anyhow::Result<AgentProc> {
        std::fs::create_dir_all(dir)?;
        let mut agent = AgentProc {
            bin: bins.agent.clone(),
            dir: dir.to_path_buf(),
            proc: None,
            agent_id: String::new(),
        };
        let token = hub.issue_token(county)?;
        agent.cli(&["enroll", "--hub", &hub.https_url(), "--token", &token])?;
        agent.agent_id = agent.status()?["agent_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok(agent)
    }

    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        cli(&self.bin, &self.dir, args)
    }

    /// `status --json`.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.cli(&["status", "--json"])?)?)
    }

    /// `submit FILE`: checks, signs and stores the whole file (or fails).
    pub fn submit(&self, file: &Path) -> anyhow::Result<()> {
        let path = file.to_str().context("a records path that is not UTF-8")?;
        self.cli(&["submit", path])?;
        Ok(())
    }

    /// Starts `run` (intake on 127.0.0.1:0, the sync loop) with `extra` flags and waits for
    /// its READY line.
    pub fn run(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        anyhow::ensure!(self.proc.is_none(), "the agent is already running");
        let mut cmd = Command::new(&self.bin);
        cmd.args(["run", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra);
        self.proc = Some(Running::spawn(
            cmd,
            self.dir.join("agent.log"),
            "READY intake=",
            READY_DEADLINE,
        )?);
        Ok(())
    }

    /// The intake's URL while `run` runs.
    pub fn intake_url(&self) -> Option<String> {
        self.proc.as_ref().map(|p| p.url.clone())
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Running::pid)
    }

    /// `GET /status` on the running agent's intake (the figures `status --json` shows).
    pub async fn intake_status(
        &self,
        client: &reqwest::Client,
    ) -> anyhow::Result<serde_json::Value> {
        let intake = self.intake_url().context("the agent is not running")?;
        Ok(client
            .get(format!("{intake}/status"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Stops `run` with SIGTERM (a clean shutdown).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(p) = self.proc.take() {
            anyhow::ensure!(p.terminate()?, "the agent did not exit cleanly on SIGTERM");
        }
        Ok(())
    }
}
