//! The command line: flags are parsed here (clap) into checked values, each command calls the
//! library, and errors become `anyhow` messages for people. Commands that print a secret
//! print it alone on stdout, so scripts can capture it; everything else people read goes to
//! stderr or is a short confirmation.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use ring::rand::SystemRandom;
use tongbu_hub::admin::{self, CountyAdded, DEFAULT_TOKEN_TTL_HOURS};
use tongbu_hub::audit;
use tongbu_hub::clock::{Clock as _, SystemClock};
use tongbu_hub::console::{ConsoleConfig, users};
use tongbu_hub::http::{PlainHttp, Transport};
use tongbu_hub::keys;
use tongbu_hub::policy;
use tongbu_hub::store::Role;
use tongbu_hub::tls;
use tongbu_hub::{Hub, SqliteStore};
use tongbu_shared::CountyCode;
use tongbu_shared::policy::PolicyDoc;
use tongbu_shared::protocol::AgentRow;

const DEFAULT_DATA_DIR: &str = "./tongbu-hub-data";
const DEMO_DATA_DIR: &str = "./tongbu-demo-data";

#[derive(Debug, Parser)]
#[command(
    name = "tongbu-hub",
    version,
    about = "Tongbu provincial hub: verifies, orders and keeps every county record"
)]
pub struct Cli {
    /// Where the hub keeps its database (hub.db) and signing key (hub.key).
    #[arg(long, global = true, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the hub API until SIGTERM or SIGINT: HTTPS, and plain HTTP for this machine
    /// (loopback) on the same port.
    Serve {
        /// Address to listen on (port 0 picks a free port; the READY line tells which).
        #[arg(long, default_value = "127.0.0.1:8440")]
        listen: String,
        #[command(flatten)]
        tls: TlsArgs,
        /// Who may speak plain HTTP on the port: `loopback` (this machine only: local scripts,
        /// a TLS-terminating proxy on the same host) or `off` (HTTPS only).
        #[arg(long, value_enum, default_value = "loopback")]
        plain_http: PlainHttpArg,
    },
    /// The hub's TLS certificate.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Manage counties.
    County {
        #[command(subcommand)]
        command: CountyCommand,
    },
    /// Manage enrollment tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage API keys.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// List enrolled agents and how far behind each is.
    Agents,
    /// Act on one enrolled agent.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Manage console users.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Manage the policy: guidance catalogue, negative list and rule settings.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Check the hub's records offline: signatures, chains, the Merkle log and its checkpoints.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Run a hub with three simulated counties, each with a real agent, in one process.
    Demo {
        /// Address the hub listens on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8440")]
        listen: String,
        /// Delete the demo's data directory first and start over.
        #[arg(long)]
        fresh: bool,
        /// Milliseconds between two submissions of one simulated county.
        #[arg(long, default_value_t = 2000)]
        interval_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Revoke an agent: the hub refuses it everything from its next request on (audited).
    Revoke {
        /// The agent id, e.g. 430112-0000abcd.
        #[arg(long)]
        agent: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CountyCommand {
    /// Register a county (a 6-digit GB/T 2260 code).
    Add {
        #[arg(long)]
        code: CountyCode,
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a one-time enrollment token for a county; prints the token alone.
    Issue {
        #[arg(long)]
        county: CountyCode,
        /// Hours until the token expires.
        #[arg(long, default_value_t = DEFAULT_TOKEN_TTL_HOURS)]
        ttl_hours: u32,
        /// The certificate `serve` presents (PEM), whose fingerprint the token carries.
        /// Default: <data-dir>/tls/cert.pem (made, with its key, if missing, as `serve` would).
        #[arg(long, value_name = "FILE", env = "TONGBU_HUB_TLS_CERT")]
        tls_cert: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Print the SHA-256 fingerprint of the hub's certificate (64 lowercase hex digits) alone;
    /// agents pin it with `tongbu-agent enroll --cert-sha256`.
    Show {
        /// The certificate file. Default: <data-dir>/tls/cert.pem.
        #[arg(long, value_name = "FILE", env = "TONGBU_HUB_TLS_CERT")]
        tls_cert: Option<PathBuf>,
    },
}

/// Where `serve` gets its certificate and key.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain (end-entity first) to serve HTTPS with; needs --tls-key.
    /// Default: <data-dir>/tls/cert.pem and key.pem, a self-signed pair made on first run.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        env = "TONGBU_HUB_TLS_CERT"
    )]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); needs --tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        env = "TONGBU_HUB_TLS_KEY"
    )]
    tls_key: Option<PathBuf>,
    /// Another name (DNS name or IP address) for the self-signed certificate made on first
    /// run; repeat for more. localhost, 127.0.0.1, ::1 and this machine's name are always in.
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_san: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlainHttpArg {
    Loopback,
    Off,
}

impl From<PlainHttpArg> for PlainHttp {
    fn from(p: PlainHttpArg) -> PlainHttp {
        match p {
            PlainHttpArg::Loopback => PlainHttp::Loopback,
            PlainHttpArg::Off => PlainHttp::Off,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Re-check every envelope's signature and chain, rebuild the Merkle log and compare it
    /// node by node, and check every signed checkpoint; exits non-zero naming what is wrong.
    /// Reads only: it may run beside a serving hub.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Make a policy file (JSON: catalogue, negative_list, optional settings) the next policy
    /// version; works while `serve` runs. `-` reads standard input.
    Set {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the current policy version as JSON.
    Show {
        /// One line instead of indented JSON.
        #[arg(long)]
        compact: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Add a console login user (Argon2id-hashed password, at least 10 characters).
    Add {
        #[arg(long)]
        user: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Read the password from the first line of standard input (else prompt twice).
        #[arg(long)]
        password_stdin: bool,
        /// Replace an existing user's role and password (ends its sessions).
        #[arg(long)]
        reset: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create an API key; prints the key alone.
    Create {
        #[arg(long, value_enum)]
        role: RoleArg,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Admin,
    Operator,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Admin => Role::Admin,
            RoleArg::Operator => Role::Operator,
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = cli.data_dir;
    match cli.command {
        Command::Serve {
            listen,
            tls,
            plain_http,
        } => serve(data_dir, &listen, &tls, plain_http.into()),
        Command::Tls {
            command: TlsCommand::Show { tls_cert },
        } => tls_show(&data_dir, tls_cert),
        Command::County {
            command: CountyCommand::Add { code, name },
        } => {
            let mut store = open_store(&data_dir)?;
            let added = admin::add_county_in(&mut store, SystemClock.now_ms(), &code, &name)?;
            match added {
                CountyAdded::Created => println!("county {code} {name} added"),
                CountyAdded::AlreadyExists => println!("county {code} {name} already exists"),
            }
            Ok(())
        }
        Command::Token {
            command:
                TokenCommand::Issue {
                    county,
                    ttl_hours,
                    tls_cert,
                },
        } => {
            let mut store = open_store(&data_dir)?;
            let pin = match tls_cert.or_else(|| tls::serving_cert(&data_dir)) {
                Some(path) => tls::load_cert(&path)?.fingerprint,
                None => hub_identity(&data_dir, &[])?.cert.fingerprint,
            };
            let rng = SystemRandom::new();
            let issued = admin::issue_token_in(
                &mut store,
                SystemClock.now_ms(),
                &rng,
                &county,
                ttl_hours,
                Some(&pin),
            )?;
            print_secret(issued.token.expose())
        }
        Command::Apikey {
            command: ApikeyCommand::Create { role },
        } => {
            let mut store = open_store(&data_dir)?;
            let rng = SystemRandom::new();
            let key =
                admin::create_api_key_in(&mut store, SystemClock.now_ms(), &rng, role.into())?;
            print_secret(key.expose())
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => audit_verify(&data_dir),
        Command::Demo {
            listen,
            fresh,
            interval_ms,
        } => {
            // The demo keeps its own folder unless --data-dir names one.
            let data_dir = if data_dir == std::path::Path::new(DEFAULT_DATA_DIR) {
                PathBuf::from(DEMO_DATA_DIR)
            } else {
                data_dir
            };
            crate::demo::run(crate::demo::DemoOptions {
                data_dir,
                listen,
                fresh,
                interval: std::time::Duration::from_millis(interval_ms),
            })
        }
        Command::Admin {
            command:
                AdminCommand::Add {
                    user,
                    role,
                    password_stdin,
                    reset,
                },
        } => {
            let password = read_password(password_stdin)?;
            let mut store = open_store(&data_dir)?;
            users::add_user_in(
                &mut store,
                SystemClock.now_ms(),
                &user,
                role.into(),
                &password,
                reset,
            )?;
            let done = if reset { "reset" } else { "added" };
            println!("console user {user} ({}) {done}", Role::from(role));
            Ok(())
        }
        Command::Agent {
            command: AgentCommand::Revoke { agent, reason },
        } => {
            let id = tongbu_shared::ids::AgentId::parse(&agent)
                .map_err(|e| anyhow::anyhow!("--agent {agent:?}: {e}"))?;
            let mut store = open_store(&data_dir)?;
            admin::revoke_agent_in(&mut store, SystemClock.now_ms(), &id, &reason)?;
            println!("agent {id} revoked");
            Ok(())
        }
        Command::Agents => {
            let mut store = open_store(&data_dir)?;
            let rows = admin::list_agents(&mut store)?;
            print!("{}", agents_table(&rows));
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Set { file },
        } => {
            let bytes = read_input(&file)?;
            let doc = PolicyDoc::parse(&bytes)
                .with_context(|| format!("the policy in {} was refused", file.display()))?;
            let mut store = open_store(&data_dir)?;
            let key = hub_key(&data_dir)?;
            let set = policy::set_in(&mut store, &key, SystemClock.now_ms(), doc)?;
            println!("{set}");
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Show { compact },
        } => {
            let mut store = open_store(&data_dir)?;
            let key = hub_key(&data_dir)?;
            let view = policy::show_in(&mut store, &key, SystemClock.now_ms())?.view()?;
            let json = if compact {
                serde_json::to_string(&view)
            } else {
                serde_json::to_string_pretty(&view)
            }
            .context("cannot print the policy")?;
            println!("{json}");
            Ok(())
        }
    }
}

/// A new password: the first line of standard input, or typed twice at a terminal.
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    use std::io::IsTerminal as _;
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("standard input is not a terminal: pass --password-stdin");
    }
    let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
    let again =
        rpassword::prompt_password("Password again: ").context("cannot read the password")?;
    if first != again {
        anyhow::bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

/// The bytes of `path`, or of standard input when it is `-`.
fn read_input(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if path == std::path::Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
            .context("cannot read standard input")?;
        Ok(bytes)
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// `audit verify`: the report on stdout, progress on stderr (a line per tenth).
fn audit_verify(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let key = keys::load(data_dir)
        .with_context(|| format!("cannot read the hub key in {}", data_dir.display()))?;
    let mut store = SqliteStore::open_reader(data_dir)
        .with_context(|| format!("cannot open the hub database in {}", data_dir.display()))?;
    eprintln!("audit: checking the database file (integrity_check)");
    store.check_integrity(true)?;
    let started = std::time::Instant::now();
    let mut shown = 0;
    let report = audit::verify(&mut store, &key.public_key(), &mut |p| {
        let tenth = (p.done * 10).checked_div(p.total).unwrap_or(10);
        if tenth > shown || p.done == p.total {
            shown = tenth;
            eprintln!("audit: {} of {} envelopes checked", p.done, p.total);
        }
    })?;
    let mut out = std::io::stdout().lock();
    let root = report.root.map_or_else(|| "-".to_owned(), |r| r.to_hex());
    writeln!(
        out,
        "envelopes     {} (signatures, chains, hashes)",
        report.envelopes
    )?;
    writeln!(out, "agents        {}", report.agents)?;
    writeln!(
        out,
        "log           {} entries, root {root}",
        report.tree_size
    )?;
    writeln!(
        out,
        "checkpoints   {} (signatures and roots)",
        report.checkpoints
    )?;
    writeln!(
        out,
        "took          {:.1} s",
        started.elapsed().as_secs_f64()
    )?;
    if report.ok() {
        writeln!(out, "result        OK")?;
        return Ok(());
    }
    writeln!(out, "result        {} PROBLEMS", report.problem_count)?;
    for p in &report.problems {
        writeln!(out, "  {p}")?;
    }
    out.flush()?;
    anyhow::bail!(
        "the audit found {} problems in {}",
        report.problem_count,
        data_dir.display()
    )
}

/// The hub's signing key (made on first use, like `serve` does).
fn hub_key(data_dir: &std::path::Path) -> anyhow::Result<tongbu_shared::KeyPair> {
    keys::load_or_create(data_dir, &SystemRandom::new())
        .with_context(|| format!("cannot load the hub key in {}", data_dir.display()))
}

fn open_store(data_dir: &std::path::Path) -> anyhow::Result<SqliteStore> {
    SqliteStore::open(data_dir)
        .with_context(|| format!("cannot open the hub database in {}", data_dir.display()))
}

fn print_secret(secret: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{secret}")
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// The data directory's TLS pair, made (self-signed, naming `extra_names` too) when missing:
/// what `serve` presents and `token issue` pins, unless they are given files.
fn hub_identity(
    data_dir: &std::path::Path,
    extra_names: &[String],
) -> anyhow::Result<tls::HubIdentity> {
    let identity = tls::load_or_generate(data_dir, extra_names, SystemClock.now_ms() / 1000)?;
    if identity.generated {
        tracing::info!(
            cert = %identity.cert.path.display(),
            cert_sha256 = %identity.cert.fingerprint.to_hex(),
            "made a self-signed TLS certificate for this hub (agents pin it through their enrollment tokens)"
        );
    }
    Ok(identity)
}

fn tls_show(data_dir: &std::path::Path, cert: Option<PathBuf>) -> anyhow::Result<()> {
    let path = cert
        .or_else(|| tls::serving_cert(data_dir))
        .unwrap_or_else(|| tls::TlsFiles::in_data_dir(data_dir).cert);
    if !path.exists() {
        anyhow::bail!(
            "no certificate at {} yet: `tongbu-hub serve` or `tongbu-hub token issue` makes a self-signed one on first run (or pass --tls-cert FILE)",
            path.display()
        );
    }
    let cert = tls::load_cert(&path)?;
    print_secret(&cert.fingerprint.to_hex())?;
    eprintln!(
        "{} ({} certificate(s)); agents pin it through tokens from `tongbu-hub token issue`, or with `tongbu-agent enroll --cert-sha256 {}`",
        path.display(),
        cert.chain.len(),
        cert.fingerprint.to_hex()
    );
    Ok(())
}

fn serve(
    data_dir: PathBuf,
    listen: &str,
    tls_args: &TlsArgs,
    plain: PlainHttp,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let hub = Hub::open(&data_dir, Arc::new(SystemClock))
            .with_context(|| format!("cannot open the hub in {}", data_dir.display()))?;
        let identity = match (&tls_args.tls_cert, &tls_args.tls_key) {
            (Some(cert), Some(key)) => {
                if !tls_args.tls_san.is_empty() {
                    tracing::warn!("--tls-san names only a generated certificate; it is ignored with --tls-cert");
                }
                let identity = tls::load(&tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                })?;
                tls::record_serving(&data_dir, Some(cert))?;
                identity
            }
            _ => {
                tls::record_serving(&data_dir, None)?;
                hub_identity(&data_dir, &tls_args.tls_san)?
            }
        };
        let config = identity.server_config()?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        tracing::info!(%addr, data_dir = %data_dir.display(), hub_key = %hub.public_key().fingerprint(), "hub serving");
        tracing::info!(
            url = %format!("https://{addr}"),
            cert = %identity.cert.path.display(),
            cert_sha256 = %identity.cert.fingerprint.to_hex(),
            "HTTPS on; enrollment tokens carry this certificate's fingerprint"
        );
        let scheme = match plain {
            PlainHttp::Loopback => {
                tracing::warn!(
                    url = %format!("http://{addr}"),
                    "PLAIN HTTP IS ACCEPTED FROM LOOPBACK PEERS (this machine only) on the same port; any other peer must use https (--plain-http off refuses plain HTTP from everyone)"
                );
                "http"
            }
            PlainHttp::Off => {
                tracing::info!("plain HTTP is off: HTTPS only");
                "https"
            }
        };
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "READY listen={scheme}://{addr}")
                .and_then(|()| out.flush())
                .context("cannot write to stdout")?;
        }
        let console = ConsoleConfig {
            token_pin: Some(identity.cert.fingerprint),
            ..ConsoleConfig::default()
        };
        tongbu_hub::serve_hub_over(
            hub,
            listener,
            shutdown_signal(),
            tongbu_hub::DEFAULT_EXPIRE_EVERY,
            console,
            Transport::Tls { config, plain },
        )
        .await
        .context("the server failed")?;
        tracing::info!("hub stopped");
        Ok(())
    })
}

/// Completes on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// The `agents` command's table.
fn agents_table(rows: &[AgentRow]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<15}  {:<6}  {:<11}  {:>8}  {:>8}  {:>6}  {:>6}  {:<20}  {:<10}  LAST ERROR",
        "AGENT", "COUNTY", "STATE", "ACKED", "HEAD", "LAG", "QUEUE", "LAST SEEN", "VERSION"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<15}  {:<6}  {:<11}  {:>8}  {:>8}  {:>6}  {:>6}  {:<20}  {:<10}  {}",
            r.agent_id,
            r.county,
            r.state,
            r.acked_seq,
            r.head_seq,
            r.lag,
            r.queue_depth,
            r.last_seen.as_deref().unwrap_or("never"),
            r.agent_version.as_deref().unwrap_or("-"),
            r.last_error.as_deref().unwrap_or("-"),
        );
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no agents enrolled)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_takes_a_data_dir() {
        for args in [
            vec!["tongbu-hub", "serve", "--data-dir", "/tmp/x"],
            vec!["tongbu-hub", "--data-dir", "/tmp/x", "agents"],
            vec![
                "tongbu-hub",
                "county",
                "add",
                "--code",
                "430112",
                "--name",
                "望城区",
                "--data-dir",
                "/tmp/x",
            ],
            vec![
                "tongbu-hub",
                "token",
                "issue",
                "--county",
                "430112",
                "--data-dir",
                "/tmp/x",
            ],
            vec![
                "tongbu-hub",
                "apikey",
                "create",
                "--role",
                "admin",
                "--data-dir",
                "/tmp/x",
            ],
            vec![
                "tongbu-hub",
                "policy",
                "set",
                "policy.json",
                "--data-dir",
                "/tmp/x",
            ],
            vec!["tongbu-hub", "policy", "show", "--data-dir", "/tmp/x"],
            vec!["tongbu-hub", "tls", "show", "--data-dir", "/tmp/x"],
            vec![
                "tongbu-hub",
                "admin",
                "add",
                "--user",
                "li.wei",
                "--role",
                "operator",
                "--password-stdin",
                "--data-dir",
                "/tmp/x",
            ],
        ] {
            let cli = Cli::try_parse_from(&args).unwrap();
            assert_eq!(cli.data_dir, PathBuf::from("/tmp/x"), "{args:?}");
        }
        assert!(
            Cli::try_parse_from(["tongbu-hub", "county", "add", "--code", "12", "--name", "x"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["tongbu-hub", "apikey", "create", "--role", "root"]).is_err());
    }

    #[test]
    fn serve_takes_a_certificate_and_key_together_and_a_plain_http_policy() {
        let serve = |extra: &[&str]| {
            let mut args = vec!["tongbu-hub", "serve", "--listen", "127.0.0.1:0"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args)
        };
        match serve(&[]).unwrap().command {
            Command::Serve {
                tls, plain_http, ..
            } => {
                assert!(tls.tls_cert.is_none() && tls.tls_key.is_none());
                assert!(matches!(plain_http, PlainHttpArg::Loopback));
            }
            other => panic!("{other:?}"),
        }
        let both = serve(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--plain-http",
            "off",
            "--tls-san",
            "hub.example.cn",
            "--tls-san",
            "10.0.0.8",
        ])
        .unwrap();
        match both.command {
            Command::Serve {
                tls, plain_http, ..
            } => {
                assert_eq!(tls.tls_cert, Some(PathBuf::from("c.pem")));
                assert_eq!(tls.tls_key, Some(PathBuf::from("k.pem")));
                assert_eq!(tls.tls_san, ["hub.example.cn", "10.0.0.8"]);
                assert!(matches!(plain_http, PlainHttpArg::Off));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            serve(&["--tls-cert", "c.pem"]).is_err(),
            "a cert without its key"
        );
        assert!(
            serve(&["--tls-key", "k.pem"]).is_err(),
            "a key without its cert"
        );
        assert!(serve(&["--plain-http", "everyone"]).is_err());
    }
}
