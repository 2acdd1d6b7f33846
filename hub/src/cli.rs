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
use tongbu_settings::{LogFormat, LogLevel, ProcessEnv};
use tongbu_shared::CountyCode;
use tongbu_shared::policy::PolicyDoc;
use tongbu_shared::protocol::AgentRow;

use crate::config::{self, HubConfig, ListenAddr, PlainHttpMode};

const DEMO_DATA_DIR: &str = "./tongbu-demo-data";

#[derive(Debug, Parser)]
#[command(
    name = "tongbu-hub",
    version,
    about = "Tongbu provincial hub: verifies, orders and keeps every county record"
)]
pub struct Cli {
    /// The config file (TOML; see deploy/config/hub.toml). Default: /etc/tongbu/hub.toml if
    /// it exists. Flags win over TONGBU_HUB_* variables, which win over the file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the hub keeps its database (hub.db) and signing key (hub.key).
    /// [default: ./tongbu-hub-data; config key data_dir]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log lines on stderr as text or JSON (one object per line). [default: text]
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Which log lines: a level (error, warn, info, debug, trace) or directives such as
    /// warn,tongbu_hub=debug. [default: info, or RUST_LOG]
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<LogLevel>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the hub API until SIGTERM or SIGINT: HTTPS, and plain HTTP for this machine
    /// (loopback) on the same port.
    Serve {
        /// Address to listen on (port 0 picks a free port; the READY line tells which).
        /// [default: 127.0.0.1:8440]
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<ListenAddr>,
        #[command(flatten)]
        tls: TlsArgs,
        /// Who may speak plain HTTP on the port: `loopback` (this machine only: local scripts,
        /// a TLS-terminating proxy on the same host) or `off` (HTTPS only). [default: loopback]
        #[arg(long, value_enum)]
        plain_http: Option<PlainHttpMode>,
    },
    /// The configuration file and settings.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
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
    /// Publish a county's accepted records in an open-data format.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
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
pub enum ConfigCommand {
    /// Check the config file (--config FILE, TONGBU_HUB_CONFIG or /etc/tongbu/hub.toml) and the
    /// TONGBU_HUB_* variables, and print every effective setting with where it comes from
    /// (secrets masked); exits non-zero naming what is wrong.
    Check,
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
        /// The certificate `serve` presents (PEM), whose fingerprint the token carries
        /// (config key tls_cert). Default: the one `serve` last presented, else
        /// <data-dir>/tls/cert.pem (made, with its key, if missing, as `serve` would).
        #[arg(long, value_name = "FILE")]
        tls_cert: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Print the SHA-256 fingerprint of the hub's certificate (64 lowercase hex digits) alone;
    /// agents pin it with `tongbu-agent enroll --cert-sha256`.
    Show {
        /// The certificate file (config key tls_cert). Default: the one `serve` last
        /// presented, else <data-dir>/tls/cert.pem.
        #[arg(long, value_name = "FILE")]
        tls_cert: Option<PathBuf>,
    },
}

/// Where `serve` gets its certificate and key.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain (end-entity first) to serve HTTPS with; needs tls_key (flag,
    /// TONGBU_HUB_TLS_KEY or config file). Default: <data-dir>/tls/cert.pem and key.pem, a
    /// self-signed pair made on first run.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); needs tls_cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Another name (DNS name or IP address) for the self-signed certificate made on first
    /// run; repeat for more. localhost, 127.0.0.1, ::1 and this machine's name are always in.
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_san: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// An OCDS 1.1 release package (JSON) of one county's accepted records of one fiscal
    /// year, one release per budget line (see docs/FORMATS.md). Reads only: it may run beside
    /// a serving hub.
    Ocds {
        /// The county (6-digit code, e.g. 430112).
        #[arg(long)]
        county: CountyCode,
        /// The fiscal year.
        #[arg(long, value_parser = clap::value_parser!(i32).range(1990..=2199))]
        year: i32,
        /// Write the package to this file (default: standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// The publisher's ocid prefix (registered with the Open Contracting Partnership).
        #[arg(long, default_value = tongbu_hub::ocds::DEFAULT_OCID_PREFIX)]
        ocid_prefix: String,
    },
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
            Command::Serve {
                listen,
                tls,
                plain_http,
            } => {
                flags.listen.clone_from(listen);
                flags.tls_cert.clone_from(&tls.tls_cert);
                flags.tls_key.clone_from(&tls.tls_key);
                flags.tls_san.clone_from(&tls.tls_san);
                flags.plain_http = *plain_http;
            }
            Command::Token {
                command: TokenCommand::Issue { tls_cert, .. },
            }
            | Command::Tls {
                command: TlsCommand::Show { tls_cert },
            } => flags.tls_cert.clone_from(tls_cert),
            _ => {}
        }
        flags
    }
}

/// Reads the settings (config file, `TONGBU_HUB_*` variables, flags) and starts logging to
/// stderr as they say.
fn load_config(cli: &Cli) -> anyhow::Result<HubConfig> {
    let config = HubConfig::load(
        cli.config_flags(),
        &ProcessEnv,
        std::path::Path::new(config::DEFAULT_CONFIG_PATH),
    )?;
    tongbu_settings::init_logging(config.log_format.value, &config.log_level.value)
        .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))?;
    Ok(config)
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(&cli)?;
    let data_dir = config.data_dir.value.clone();
    match cli.command {
        Command::Serve { .. } => serve(&config),
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check(&config),
        Command::Tls {
            command: TlsCommand::Show { .. },
        } => tls_show(&data_dir, config.tls_cert.value.clone()),
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
            command: TokenCommand::Issue {
                county, ttl_hours, ..
            },
        } => {
            let mut store = open_store(&data_dir)?;
            let tls_cert = config.tls_cert.value.clone();
            let pin = match tls_cert.or_else(|| tls::serving_cert(&data_dir)) {
                Some(path) => tls::load_cert(&path)?.fingerprint,
                None => {
                    hub_identity(&data_dir, &config.tls_san.value)?
                        .cert
                        .fingerprint
                }
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
        Command::Export {
            command:
                ExportCommand::Ocds {
                    county,
                    year,
                    out,
                    ocid_prefix,
                },
        } => export_ocds(&data_dir, &county, year, out.as_deref(), ocid_prefix),
        Command::Demo {
            listen,
            fresh,
            interval_ms,
        } => {
            // The demo keeps its own folder unless --data-dir names one (never the data_dir of
            // a config file or variable: that is a real hub's, and --fresh deletes the folder).
            let data_dir = config.data_dir_from_flag().map_or_else(
                || PathBuf::from(DEMO_DATA_DIR),
                std::path::Path::to_path_buf,
            );
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

/// `export ocds`: the package to `out` (written whole, then renamed into place) or stdout.
fn export_ocds(
    data_dir: &std::path::Path,
    county: &CountyCode,
    year: i32,
    out: Option<&std::path::Path>,
    ocid_prefix: String,
) -> anyhow::Result<()> {
    use tongbu_hub::ocds::{self, ExportError, ExportOptions};
    ocds::check_prefix(&ocid_prefix).map_err(|e| anyhow::anyhow!("--ocid-prefix: {e}"))?;
    let opts = ExportOptions {
        ocid_prefix,
        ..ExportOptions::default()
    };
    let mut store = SqliteStore::open_reader(data_dir)
        .with_context(|| format!("cannot open the hub database in {}", data_dir.display()))?;
    let now_ms = SystemClock.now_ms();
    let package =
        tongbu_hub::store::read(&mut store, |r| ocds::build(r, county, year, &opts, now_ms))?;
    let releases = package.releases.len();
    let mut json =
        serde_json::to_vec_pretty(&package).map_err(|e| ExportError::Internal(e.to_string()))?;
    json.push(b'\n');
    match out {
        Some(path) => {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &json)
                .and_then(|()| std::fs::rename(&tmp, path))
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "wrote {releases} release(s) of county {county}, fiscal year {year}, to {}",
                path.display()
            );
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&json)
                .and_then(|()| stdout.flush())
                .context("cannot write to stdout")?;
        }
    }
    Ok(())
}

/// `audit verify`: the report on stdout, progress on stderr (`tongbu_shared::progress`).
fn audit_verify(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let key = keys::load(data_dir)
        .with_context(|| format!("cannot read the hub key in {}", data_dir.display()))?;
    let mut store = SqliteStore::open_reader(data_dir)
        .with_context(|| format!("cannot open the hub database in {}", data_dir.display()))?;
    eprintln!("audit: checking the database file (integrity_check)");
    store.check_integrity(true)?;
    let started = std::time::Instant::now();
    let report = audit::verify_reporting(&mut store, &key.public_key())?;
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

fn serve(settings: &HubConfig) -> anyhow::Result<()> {
    let data_dir = settings.data_dir.value.clone();
    let listen = settings.listen.value.as_str().to_owned();
    let tls_pair = settings.tls_pair()?;
    let tls_san = settings.tls_san.value.clone();
    let plain = PlainHttp::from(settings.plain_http.value);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let hub = Hub::open(&data_dir, Arc::new(SystemClock))
            .with_context(|| format!("cannot open the hub in {}", data_dir.display()))?;
        let identity = match tls_pair {
            Some((cert, key)) => {
                if !tls_san.is_empty() {
                    tracing::warn!("tls_san names only a generated certificate; it is ignored with tls_cert");
                }
                let identity = tls::load(&tls::TlsFiles {
                    cert: cert.clone(),
                    key,
                })?;
                tls::record_serving(&data_dir, Some(&cert))?;
                identity
            }
            None => {
                tls::record_serving(&data_dir, None)?;
                hub_identity(&data_dir, &tls_san)?
            }
        };
        let config = identity.server_config()?;
        let listener = tokio::net::TcpListener::bind(listen.as_str())
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
        let shutdown = crate::notify::serving(&hub, addr, shutdown_signal());
        tongbu_hub::serve_hub_over(
            hub,
            listener,
            shutdown,
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

/// `config check`: every effective setting with its source, as TOML, secrets masked. The
/// settings were parsed when they were loaded; what is left to check is what `serve` would
/// refuse: half a certificate pair, or files it cannot read.
fn config_check(settings: &HubConfig) -> anyhow::Result<()> {
    if let Some((cert, key)) = settings.tls_pair()? {
        tls::load(&tls::TlsFiles { cert, key }).with_context(|| {
            format!(
                "tls_cert ({}) and tls_key ({}) cannot be served",
                settings.tls_cert.source, settings.tls_key.source
            )
        })?;
    }
    warn_unknown_vars(&settings.entries());
    let report = tongbu_settings::render(
        "tongbu-hub",
        settings.file.as_ref(),
        std::path::Path::new(config::DEFAULT_CONFIG_PATH),
        &settings.entries(),
    );
    let mut out = std::io::stdout().lock();
    out.write_all(report.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// Warns on stderr about `TONGBU_HUB_*` variables that name no setting (most likely misspelt).
fn warn_unknown_vars(entries: &[tongbu_settings::Entry]) {
    let keys: Vec<&str> = entries.iter().map(|e| e.key).collect();
    let names = ProcessEnv.names();
    for var in tongbu_settings::unknown_vars("TONGBU_HUB_", &keys, names) {
        eprintln!(
            "warning: {var} names no setting and is ignored (the settings: {})",
            keys.join(", ")
        );
    }
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
            assert_eq!(cli.data_dir, Some(PathBuf::from("/tmp/x")), "{args:?}");
        }
        assert!(
            Cli::try_parse_from(["tongbu-hub", "county", "add", "--code", "12", "--name", "x"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["tongbu-hub", "apikey", "create", "--role", "root"]).is_err());
    }

    /// The settings `serve` is given as flags, layered with nothing else.
    fn serve_settings(extra: &[&str]) -> Result<HubConfig, String> {
        let mut args = vec!["tongbu-hub", "serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        let no_env = |_: &str| None;
        HubConfig::layer(cli.config_flags(), &no_env, None).map_err(|e| e.to_string())
    }

    #[test]
    fn serve_takes_a_certificate_and_key_together_and_a_plain_http_policy() {
        let plain = serve_settings(&[]).unwrap();
        assert_eq!(plain.tls_pair().unwrap(), None);
        assert_eq!(plain.plain_http.value, PlainHttpMode::Loopback);
        assert_eq!(plain.listen.value.as_str(), "127.0.0.1:0");
        let both = serve_settings(&[
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
        assert_eq!(
            both.tls_pair().unwrap(),
            Some((PathBuf::from("c.pem"), PathBuf::from("k.pem")))
        );
        assert_eq!(both.tls_san.value, ["hub.example.cn", "10.0.0.8"]);
        assert_eq!(both.plain_http.value, PlainHttpMode::Off);
        let cert_only = serve_settings(&["--tls-cert", "c.pem"]).unwrap();
        assert!(cert_only.tls_pair().is_err(), "a cert without its key");
        let key_only = serve_settings(&["--tls-key", "k.pem"]).unwrap();
        assert!(key_only.tls_pair().is_err(), "a key without its cert");
        assert!(serve_settings(&["--plain-http", "everyone"]).is_err());
        assert!(serve_settings(&["--listen", "8440"]).is_err());
    }

    #[test]
    fn global_settings_flags_go_anywhere_and_token_issue_and_tls_show_name_a_certificate() {
        let cli = Cli::try_parse_from([
            "tongbu-hub",
            "config",
            "check",
            "--config",
            "/tmp/hub.toml",
            "--log-format",
            "json",
            "--log-level",
            "warn,tongbu_hub=debug",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Config {
                command: ConfigCommand::Check
            }
        ));
        let flags = cli.config_flags();
        assert_eq!(flags.config, Some(PathBuf::from("/tmp/hub.toml")));
        assert_eq!(flags.log_format, Some(LogFormat::Json));
        assert_eq!(
            flags.log_level.map(|l| l.to_string()).as_deref(),
            Some("warn,tongbu_hub=debug")
        );
        assert!(Cli::try_parse_from(["tongbu-hub", "--log-format", "xml", "agents"]).is_err());
        assert!(Cli::try_parse_from(["tongbu-hub", "--log-level", "loud", "agents"]).is_err());
        for args in [
            [
                "tongbu-hub",
                "token",
                "issue",
                "--county",
                "430112",
                "--tls-cert",
                "c.pem",
            ]
            .as_slice(),
            ["tongbu-hub", "tls", "show", "--tls-cert", "c.pem"].as_slice(),
        ] {
            let flags = Cli::try_parse_from(args).unwrap().config_flags();
            assert_eq!(flags.tls_cert, Some(PathBuf::from("c.pem")), "{args:?}");
        }
    }
}
