//! The command line: one function per command, printing exactly the lines the v1 interface
//! promises (end-to-end tests and county scripts parse them). Exit codes: 0 success, 1 failure
//! (or findings that reject, or a chain that does not verify), 2 a submission refused with
//! nothing stored, 3 nothing stored because the disk is full or the data directory read-only
//! (retry once there is space).

use std::io::{self, BufWriter, Read as _, Write as _};
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
use tongbu_agent::sync::{NextStep, Syncer};
use tongbu_agent::tls::{CaCerts, TrustOptions};
use tongbu_agent::verify::{self, VerifyError};
use tongbu_settings::{LogFormat, LogLevel, ProcessEnv};
use tongbu_shared::certpin::CertFingerprint;

use crate::config::{self, AgentConfig, BatchSize, HeartbeatSecs, IntakeAddr, RetryMs};

#[derive(Debug, Parser)]
#[command(
    name = "tongbu-agent",
    version,
    about = "Tongbu county agent: sign, store and sync records to the provincial hub"
)]
pub struct Cli {
    /// The config file (TOML; see deploy/config/agent.toml). Default: /etc/tongbu/agent.toml
    /// if it exists, or TONGBU_AGENT_CONFIG. Flags win over TONGBU_AGENT_* variables, which win
    /// over the file.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the agent keeps its key and outbox (created if missing).
    /// [default: ./tongbu-agent-data; env TONGBU_AGENT_DATA_DIR; config key data_dir]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log lines on stderr as text or JSON (one object per line). [default: text]
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Which log lines: a level (error, warn, info, debug, trace) or directives such as
    /// warn,tongbu_agent=debug. [default: info, or RUST_LOG]
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<LogLevel>,
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
    /// Convert a CSV file, an Excel workbook or an OCDS release package into records, then
    /// check, sign and store them like `submit` (all or nothing); `-` reads stdin. See
    /// docs/FORMATS.md for the column names, the mapping file and the OCDS mapping.
    Import(ImportArgs),
    /// Run the service: loopback intake API plus the sync loop.
    Run {
        /// The intake API's address (loopback only; port 0 picks a free port).
        /// [default: 127.0.0.1:8441]
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<IntakeAddr>,
        /// Seconds between syncs when nothing new arrives (each sync is a heartbeat), 1 to
        /// 86400. [default: 10]
        #[arg(long, value_name = "SECS")]
        heartbeat_secs: Option<HeartbeatSecs>,
        /// First retry delay after a failed sync, in milliseconds (up to 3600000).
        /// [default: 500]
        #[arg(long, value_name = "MS")]
        retry_min_ms: Option<RetryMs>,
        /// Longest retry delay, in milliseconds (up to 3600000). [default: 60000]
        #[arg(long, value_name = "MS")]
        retry_max_ms: Option<RetryMs>,
        /// Records per batch sent to the hub (at most 1000). [default: 500]
        #[arg(long, value_name = "N")]
        batch_size: Option<BatchSize>,
    },
    /// Report malformed records and the rules records break, storing nothing; `-` reads stdin.
    Check { file: String },
    /// Sync with the hub until nothing is left, then exit.
    Sync {
        /// Required: sync until nothing is left, then exit (the service syncs continuously).
        #[arg(long, required = true)]
        once: bool,
        /// Records per batch sent to the hub (at most 1000). [default: 500]
        #[arg(long, value_name = "N")]
        batch_size: Option<BatchSize>,
    },
    /// The configuration file and settings.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
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

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check the config file (--config FILE, TONGBU_AGENT_CONFIG or /etc/tongbu/agent.toml)
    /// and the TONGBU_AGENT_* variables, and print every effective setting with where it comes
    /// from (secrets masked); exits non-zero naming what is wrong.
    Check,
}

/// `import`'s flags.
#[derive(Debug, Clone, clap::Args)]
struct ImportArgs {
    /// The file's format: csv, xlsx or ocds (an OCDS 1.1 release package).
    #[arg(long)]
    format: tongbu_agent::import::Format,
    /// A TOML file naming which column gives which record field, constants and value words.
    #[arg(long, value_name = "FILE")]
    mapping: Option<PathBuf>,
    /// The kind of every row without a kind column: budget_line, contract, payment or evaluation.
    #[arg(long, value_parser = tongbu_agent::import::parse_kind)]
    kind: Option<tongbu_shared::record::Kind>,
    /// A CSV file's encoding: auto (UTF-8 if valid, else GB18030), utf-8, gbk or gb18030.
    #[arg(long, default_value = "auto")]
    encoding: tongbu_agent::import::Encoding,
    /// The workbook sheet to read (default: the first).
    #[arg(long)]
    sheet: Option<String>,
    /// Refuse the file if any record breaks a rule.
    #[arg(long)]
    strict: bool,
    /// The file to import; `-` reads standard input.
    file: String,
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

impl Cli {
    /// The settings given as flags, global or the command's own.
    fn config_flags(&self) -> config::Flags {
        let mut flags = config::Flags {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            log_format: self.log_format,
            log_level: self.log_level.clone(),
            ..config::Flags::default()
        };
        match &self.command {
            Command::Run {
                listen,
                heartbeat_secs,
                retry_min_ms,
                retry_max_ms,
                batch_size,
            } => {
                flags.listen = *listen;
                flags.heartbeat_secs = *heartbeat_secs;
                flags.retry_min_ms = *retry_min_ms;
                flags.retry_max_ms = *retry_max_ms;
                flags.batch_size = *batch_size;
            }
            Command::Sync { batch_size, .. } => flags.batch_size = *batch_size,
            _ => {}
        }
        flags
    }
}

/// Reads the settings (config file, `TONGBU_AGENT_*` variables, flags) and starts logging to
/// stderr as they say.
fn load_config(cli: &Cli) -> anyhow::Result<AgentConfig> {
    let config = AgentConfig::load(
        cli.config_flags(),
        &ProcessEnv,
        Path::new(config::DEFAULT_CONFIG_PATH),
    )?;
    tongbu_settings::init_logging(config.log_format.value, &config.log_level.value)
        .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))?;
    Ok(config)
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = load_config(&cli)?;
    let data_dir = config.data_dir.value.as_path();
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
        Command::Import(args) => import(data_dir, args),
        Command::Run { .. } => {
            let opts = ServiceOptions {
                notify: true,
                ..config.service_options()
            };
            runtime()?.block_on(service::run(opts, shutdown_signal(), |addr| {
                println!("READY intake=http://{addr}");
                let _ = io::stdout().flush();
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { file } => check(data_dir, &file),
        Command::Sync { .. } => runtime()?.block_on(sync_once(data_dir, config.batch_size())),
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check(&config),
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

/// `config check`: every effective setting with its source, as TOML, secrets masked (they
/// were all checked when they were loaded).
fn config_check(settings: &AgentConfig) -> anyhow::Result<ExitCode> {
    warn_unknown_vars(&settings.entries());
    let report = tongbu_settings::render(
        "tongbu-agent",
        settings.file.as_ref(),
        Path::new(config::DEFAULT_CONFIG_PATH),
        &settings.entries(),
    );
    let mut out = io::stdout().lock();
    out.write_all(report.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Warns on stderr about `TONGBU_AGENT_*` variables that name no setting (most likely misspelt).
fn warn_unknown_vars(entries: &[tongbu_settings::Entry]) {
    let keys: Vec<&str> = entries.iter().map(|e| e.key).collect();
    let names = ProcessEnv.names();
    for var in tongbu_settings::unknown_vars("TONGBU_AGENT_", &keys, names) {
        eprintln!(
            "warning: {var} names no setting and is ignored (the settings: {})",
            keys.join(", ")
        );
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
    store(data_dir, &input, strictness, &str::to_owned)
}

/// Converts a file with `tongbu_agent::import` and stores the records as `submit` does; every
/// message about a record names the row (or OCDS path) it came from.
fn import(data_dir: &Path, args: ImportArgs) -> anyhow::Result<ExitCode> {
    use tongbu_agent::import::{self, Mapping, Options};
    let input = read_input(&args.file)?;
    let mapping = match &args.mapping {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the mapping file {}", path.display()))?;
            Mapping::parse(&text)
                .map_err(|e| anyhow::anyhow!("mapping file {}: {e}", path.display()))?
        }
        None => Mapping::default(),
    };
    // The agent's county is the county of rows that name none, and the only one allowed.
    let dir = DataDir::open(data_dir)?;
    let county = Outbox::open(&dir.outbox_path())?
        .enrollment()?
        .map(|e| e.county)
        .ok_or(IntakeError::NotEnrolled)?;
    let opts = Options {
        mapping,
        kind: args.kind,
        encoding: args.encoding,
        sheet: args.sheet,
        county: Some(county),
    };
    let conversion = match import::convert(&input, args.format, &opts) {
        Ok(c) => c,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("error: refused, nothing stored: {line}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    if !conversion.ignored_columns.is_empty() {
        eprintln!(
            "note: no record field is read from the column(s) {}",
            conversion.ignored_columns.join(", ")
        );
    }
    let strictness = if args.strict {
        Strictness::Strict
    } else {
        Strictness::Lenient
    };
    store(data_dir, &conversion.submission(), strictness, &|m| {
        conversion.relabel(m)
    })
}

/// Checks, signs and stores a submission, printing one line per stored record (what `submit`
/// and `import` share). `place` rewrites an intake message about a record in the words of the
/// file it came from.
fn store(
    data_dir: &Path,
    input: &[u8],
    strictness: Strictness,
    place: &dyn Fn(&str) -> String,
) -> anyhow::Result<ExitCode> {
    let agent = match service::open_for_signing(data_dir) {
        Ok(agent) => agent,
        Err(e) => match e.downcast_ref::<tongbu_agent::outbox::OutboxError>() {
            Some(o) if o.is_unavailable() => return Ok(unavailable(o)),
            _ => return Err(e),
        },
    };
    let mut intake = Intake::new(agent.outbox, Arc::new(agent.key))?;
    let stored = match intake.submit(input, strictness, SystemClock.now_ms()) {
        Ok(stored) => stored,
        Err(e) if e.is_unavailable() => return Ok(unavailable(&e)),
        Err(IntakeError::Refused(finding)) => {
            eprintln!(
                "error: refused, nothing stored: {}",
                place(&finding.to_string())
            );
            return Ok(ExitCode::from(2));
        }
        Err(IntakeError::BreaksRules { offences, .. }) => {
            for offence in offences {
                eprintln!(
                    "error: refused (--strict), nothing stored: {}",
                    place(&offence)
                );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_flags_are_layered_not_defaulted_by_clap() {
        let cli = Cli::try_parse_from(["tongbu-agent", "run"]).unwrap();
        let flags = cli.config_flags();
        assert!(flags.data_dir.is_none() && flags.listen.is_none() && flags.batch_size.is_none());
        let cli = Cli::try_parse_from([
            "tongbu-agent",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--batch-size",
            "20",
            "--config",
            "/tmp/agent.toml",
            "--log-format",
            "json",
        ])
        .unwrap();
        let flags = cli.config_flags();
        assert_eq!(
            flags.listen.map(|l| l.to_string()).as_deref(),
            Some("127.0.0.1:0")
        );
        assert_eq!(flags.batch_size.map(BatchSize::get), Some(20));
        assert_eq!(flags.config, Some(PathBuf::from("/tmp/agent.toml")));
        assert_eq!(flags.log_format, Some(LogFormat::Json));
        let cli = Cli::try_parse_from(["tongbu-agent", "sync", "--once", "--batch-size", "9"]);
        assert_eq!(
            cli.unwrap().config_flags().batch_size.map(BatchSize::get),
            Some(9)
        );
        for bad in [
            ["tongbu-agent", "run", "--listen", "0.0.0.0:8441"],
            ["tongbu-agent", "run", "--batch-size", "1001"],
            ["tongbu-agent", "run", "--heartbeat-secs", "0"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        assert!(Cli::try_parse_from(["tongbu-agent", "config", "check"]).is_ok());
    }
}
