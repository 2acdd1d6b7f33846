//! The command line: one function per command, printing exactly the lines the v1 interface
//! promises (end-to-end tests and county scripts parse them). Exit codes: 0 success, 1 failure
//! (or findings that reject, or a chain that does not verify), 2 a submission refused with
//! nothing stored, 3 nothing stored because the disk is full or the data directory read-only
//! (retry once there is space).

use std::io::{self, BufWriter, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use backon::{BackoffBuilder as _, ExponentialBuilder};
use clap::{Parser, Subcommand};
use tongbu_agent::clock::{Clock, SystemClock};
use tongbu_agent::data_dir::DataDir;
use tongbu_agent::intake::{self, Intake, IntakeError, Strictness};
use tongbu_agent::outbox::{Outbox, SharedOutbox};
use tongbu_agent::policy::PolicyPull;
use tongbu_agent::rules::LocalView;
use tongbu_agent::service::{self, ServiceOptions};
use tongbu_agent::status;
use tongbu_agent::sync::{self, NextStep, Syncer};
use tongbu_agent::tls::{CaCerts, TrustOptions};
use tongbu_agent::verify::{self, VerifyError};
use tongbu_shared::certpin::CertFingerprint;

#[derive(Debug, Parser)]
#[command(
    name = "tongbu-agent",
    version,
    about = "Tongbu county agent: sign, store and sync records to the provincial hub"
)]
pub struct Cli {
    /// Where the agent keeps its key and outbox (created if missing).
    #[arg(
        long,
        global = true,
        default_value = "./tongbu-agent-data",
        env = "TONGBU_AGENT_DATA_DIR"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll this agent with the hub using a one-time token from an admin. With https, the
    /// hub's certificate is pinned from the token (or --cert-sha256, or checked against --ca)
    /// before the token is sent.
    Enroll {
        /// The hub's URL, e.g. https://hub.example.cn:8440
        #[arg(long)]
        hub: String,
        #[arg(long, env = "TONGBU_ENROLL_TOKEN", hide_env_values = true)]
        token: String,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Check, sign and store a file of records (all or nothing); `-` reads stdin.
    Submit {
        /// Refuse the file if any record breaks a rule.
        #[arg(long)]
        strict: bool,
        file: String,
    },
    /// Run the service: loopback intake API plus the sync loop.
    Run {
        /// The intake API's address (loopback only; port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8441")]
        listen: SocketAddr,
        /// Seconds between syncs when nothing new arrives (each sync is a heartbeat).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        heartbeat_secs: u64,
        /// First retry delay after a failed sync, in milliseconds.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
        retry_min_ms: u64,
        /// Longest retry delay, in milliseconds.
        #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
        retry_max_ms: u64,
        /// Records per batch sent to the hub (at most 1000).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1000))]
        batch_size: u64,
    },
    /// Report malformed records and the rules records break, storing nothing; `-` reads stdin.
    Check { file: String },
    /// Sync with the hub until nothing is left, then exit.
    Sync {
        /// Required: sync until nothing is left, then exit (the service syncs continuously).
        #[arg(long, required = true)]
        once: bool,
        /// Records per batch sent to the hub (at most 1000).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1000))]
        batch_size: u64,
    },
    /// Show this agent's sync state.
    Status {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-check the local chain: signatures, links and hashes, and the database's integrity.
    Verify,
    /// Replace this agent's key: the hub must confirm the new key before it is used. Stop the
    /// service (`run`) first.
    RotateKey,
    /// Point this agent at the hub's new address, or trust a new hub certificate (the hub's
    /// pinned signing key stays the same). Without --ca or --cert-sha256 an https hub keeps its
    /// certificate pin or CA.
    SetHub {
        /// The hub's new URL, e.g. https://hub.example.cn:8440
        #[arg(long)]
        hub: String,
        #[command(flatten)]
        trust: TrustArgs,
    },
}

/// How to trust the hub's TLS certificate (see `tongbu_agent::tls`).
#[derive(Debug, Clone, clap::Args)]
struct TrustArgs {
    /// Trust hub certificates issued by the CA certificate(s) in this PEM file (host name
    /// checked) instead of pinning one certificate.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Pin the hub certificate with this SHA-256 fingerprint (hex, as `tongbu-hub tls show`
    /// prints it) instead of the pin inside the token.
    #[arg(long, value_name = "HEX", value_parser = parse_fingerprint)]
    cert_sha256: Option<CertFingerprint>,
    /// Allow plain http:// to a hub on another machine: nothing would be encrypted.
    #[arg(long)]
    allow_plain_http: bool,
}

fn parse_fingerprint(text: &str) -> Result<CertFingerprint, String> {
    CertFingerprint::parse_hex(text).map_err(|e| e.to_string())
}

impl TrustArgs {
    fn options(&self) -> anyhow::Result<TrustOptions> {
        let ca = self.ca.as_deref().map(CaCerts::read).transpose()?;
        Ok(TrustOptions {
            ca,
            cert_sha256: self.cert_sha256,
            allow_plain_http: self.allow_plain_http,
        })
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let data_dir = cli.data_dir.as_path();
    match cli.command {
        Command::Enroll { hub, token, trust } => {
            let trust = trust.options()?;
            runtime()?.block_on(enroll(data_dir, &hub, &token, &trust))
        }
        Command::Submit { strict, file } => {
            let strictness = if strict {
                Strictness::Strict
            } else {
                Strictness::Lenient
            };
            submit(data_dir, &file, strictness)
        }
        Command::Run {
            listen,
            heartbeat_secs,
            retry_min_ms,
            retry_max_ms,
            batch_size,
        } => {
            let opts = ServiceOptions {
                listen,
                heartbeat: Duration::from_secs(heartbeat_secs),
                retry_min: Duration::from_millis(retry_min_ms),
                retry_max: Duration::from_millis(retry_max_ms),
                batch_size: usize::try_from(batch_size).unwrap_or(sync::DEFAULT_BATCH_SIZE),
                ..ServiceOptions::new(data_dir)
            };
            runtime()?.block_on(service::run(opts, shutdown_signal(), |addr| {
                println!("READY intake=http://{addr}");
                let _ = io::stdout().flush();
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { file } => check(data_dir, &file),
        Command::Sync {
            once: _,
            batch_size,
        } => {
            let batch_size = usize::try_from(batch_size).unwrap_or(sync::DEFAULT_BATCH_SIZE);
            runtime()?.block_on(sync_once(data_dir, batch_size))
        }
        Command::Status { json } => show_status(data_dir, json),
        Command::Verify => verify(data_dir),
        Command::RotateKey => runtime()?.block_on(rotate_key(data_dir)),
        Command::SetHub { hub, trust } => {
            let (previous, next) = service::set_hub(data_dir, &hub, &trust.options()?)?;
            if let Some(warning) = next.plain_warning() {
                eprintln!("{warning}");
            }
            println!(
                "hub URL changed from {previous} to {next}; TLS trust {}",
                next.trust().describe()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

fn read_input(file: &str) -> anyhow::Result<Vec<u8>> {
    if file == "-" {
        let mut input = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut input)
            .context("cannot read the records from stdin")?;
        Ok(input)
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {file}"))
    }
}

async fn enroll(
    data_dir: &Path,
    hub: &str,
    token: &str,
    trust: &TrustOptions,
) -> anyhow::Result<ExitCode> {
    let dir = DataDir::open(data_dir)?;
    let (e, _) =
        tongbu_agent::enroll::enroll(&dir, hub, token, trust, Arc::new(SystemClock)).await?;
    if let Some(warning) = e.hub_url.plain_warning() {
        eprintln!("{warning}");
    }
    println!(
        "enrolled as {} (county {} {}) with hub {}; hub key fingerprint {}",
        e.agent_id,
        e.county,
        e.county_name,
        e.hub_url,
        e.hub_public_key.fingerprint(),
    );
    eprintln!("hub TLS certificate: {}", e.hub_url.trust().describe());
    // Enrollment stands whether or not the policy comes too: the sync loop keeps trying.
    match service::pull_policy(data_dir).await {
        Ok(PolicyPull::Updated { to, .. } | PolicyPull::Unchanged { version: to }) => {
            eprintln!("policy version {to} cached");
        }
        Ok(PolicyPull::NoneOffered) => eprintln!("the hub publishes no policy yet"),
        Err(e) => eprintln!(
            "warning: enrolled, but the policy could not be pulled yet (sync tries again): {e:#}"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit code of a submission not stored because the disk is full or read-only.
const EXIT_UNAVAILABLE: u8 = 3;

fn unavailable(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!(
        "error: nothing stored: the disk is full or the data directory is read-only; free space (or restore write access) and submit again ({e})"
    );
    ExitCode::from(EXIT_UNAVAILABLE)
}

fn submit(data_dir: &Path, file: &str, strictness: Strictness) -> anyhow::Result<ExitCode> {
    let input = read_input(file)?;
    let agent = match service::open_for_signing(data_dir) {
        Ok(agent) => agent,
        Err(e) => match e.downcast_ref::<tongbu_agent::outbox::OutboxError>() {
            Some(o) if o.is_unavailable() => return Ok(unavailable(o)),
            _ => return Err(e),
        },
    };
    let mut intake = Intake::new(agent.outbox, Arc::new(agent.key))?;
    let stored = match intake.submit(&input, strictness, SystemClock.now_ms()) {
        Ok(stored) => stored,
        Err(e) if e.is_unavailable() => return Ok(unavailable(&e)),
        Err(IntakeError::Refused(finding)) => {
            eprintln!("error: refused, nothing stored: {finding}");
            return Ok(ExitCode::from(2));
        }
        Err(IntakeError::BreaksRules { offences, .. }) => {
            for offence in offences {
                eprintln!("error: refused (--strict), nothing stored: {offence}");
            }
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = BufWriter::new(io::stdout().lock());
    for s in &stored {
        write!(
            out,
            "seq={} kind={} id={} rev={}",
            s.seq, s.kind, s.id, s.rev
        )?;
        if !s.codes.is_empty() {
            write!(out, " codes={}", s.codes.join(","))?;
        }
        writeln!(out)?;
    }
    out.flush()?;
    for s in &stored {
        if let Some(detail) = &s.detail {
            eprintln!("seq={} id={}: {detail}", s.seq, s.id);
        }
    }
    if let (Some(first), Some(last)) = (stored.first(), stored.last()) {
        let flagged = stored.iter().filter(|s| !s.codes.is_empty()).count();
        let rules = if flagged == 0 {
            String::new()
        } else {
            format!(
                " ({flagged} with rule codes; stored anyway, the hub's outcome is authoritative)"
            )
        };
        eprintln!(
            "stored {} record(s), seq {}..={}{rules}; they sync to the hub with the running service or `tongbu-agent sync --once`",
            stored.len(),
            first.seq,
            last.seq
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn check(data_dir: &Path, file: &str) -> anyhow::Result<ExitCode> {
    let input = read_input(file)?;
    let dir = DataDir::open(data_dir)?;
    let outbox = Outbox::open(&dir.outbox_path())?;
    let (mut view, county) = match outbox.enrollment()? {
        Some(e) => (
            LocalView::load(&outbox, &e.agent_id, &e.hub_public_key)?,
            Some(e.county),
        ),
        None => (LocalView::empty(None), None),
    };
    let report = intake::check(&mut view, county.as_ref(), &input);
    let mut out = BufWriter::new(io::stdout().lock());
    for finding in &report.findings {
        writeln!(out, "{finding}")?;
    }
    // A malformed submission is not judged by the rules: its findings say it all.
    if report.findings.iter().any(|f| f.code.is_none()) {
        out.flush()?;
        return Ok(ExitCode::FAILURE);
    }
    let (n, refused, warned) = (
        report.records,
        report.refused_records(),
        report.warned_records(),
    );
    let mut summary = if refused > 0 {
        let mut s = format!("{refused} of {n} record(s) break a rule the agent can check");
        if warned > 0 {
            s.push_str(&format!("; {warned} more with warnings only"));
        }
        s
    } else {
        let mut s =
            format!("ok: {n} records are well formed and break no rule the agent can check");
        if warned > 0 {
            s.push_str(&format!("; {warned} with warnings"));
        }
        s
    };
    if let Some(note) = report.policy.note() {
        summary.push_str(&format!(" ({note})"));
    }
    writeln!(out, "{summary}")?;
    out.flush()?;
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn rotate_key(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let data_dir = data_dir.to_owned();
    let mut agent =
        tokio::task::spawn_blocking(move || service::open_enrolled(&data_dir)).await??;
    let old = agent.key.public_key().fingerprint();
    let confirmed = tongbu_agent::rotate::rotate_key(
        &agent.dir,
        &mut agent.outbox,
        &agent.enrollment,
        Arc::new(SystemClock),
    )
    .await
    .context("key rotation failed")?;
    println!(
        "key rotated: {old} -> {} (the old key signed up to seq {})",
        confirmed.public_key.fingerprint(),
        confirmed.last_old_seq
    );
    Ok(ExitCode::SUCCESS)
}

async fn sync_once(data_dir: &Path, batch_size: usize) -> anyhow::Result<ExitCode> {
    service::settle_rotation(data_dir).await?;
    let data_dir = data_dir.to_owned();
    let agent = tokio::task::spawn_blocking(move || service::open_enrolled(&data_dir)).await??;
    let mut syncer = Syncer::new(
        SharedOutbox::new(agent.outbox),
        &agent.enrollment,
        Arc::new(agent.key),
        Arc::new(SystemClock),
        batch_size,
    )?;
    syncer.want_policy();
    // A few quick retries ride out a blip; a longer outage is the service's job.
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(3)
        .with_jitter()
        .build();
    loop {
        match syncer.sync_once().await {
            Ok(summary) => {
                println!(
                    "synced: acked_seq={} head_seq={}",
                    summary.acked_seq, summary.head_seq
                );
                eprintln!(
                    "sent {} record(s) in {} ms",
                    summary.sent,
                    summary.duration.as_millis()
                );
                match summary.policy {
                    Some(PolicyPull::Updated { to, .. }) => {
                        eprintln!("policy version {to} cached");
                    }
                    Some(PolicyPull::Unchanged { version }) => {
                        eprintln!("policy version {version} is current");
                    }
                    Some(PolicyPull::NoneOffered) | None => {}
                }
                if let Some(problem) = &summary.problem {
                    eprintln!("warning: {problem}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => match (e.next_step(), delays.next()) {
                (NextStep::Retry, Some(delay)) => tokio::time::sleep(delay).await,
                _ => return Err(anyhow::Error::new(e).context("sync failed")),
            },
        }
    }
}

fn show_status(data_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let dir = DataDir::open(data_dir)?;
    let outbox = Outbox::open(&dir.outbox_path())?;
    let status = status::read(&outbox)?;
    if json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        print!("{status}");
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let agent = service::open_enrolled(data_dir)?;
    agent.outbox.check_integrity(true)?;
    let keys = agent.outbox.key_ring(agent.key.public_key())?;
    match verify::verify_chain(&agent.outbox, &agent.enrollment.agent_id, &keys) {
        Ok(v) => {
            println!(
                "ok: {} records verify, head seq {} hash {}",
                v.records,
                v.head_seq,
                v.head_hash.to_hex()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(VerifyError::Bad(bad)) => {
            println!("{bad}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}
