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
use tongbu_hub::clock::{Clock as _, SystemClock};
use tongbu_hub::console::users;
use tongbu_hub::keys;
use tongbu_hub::policy;
use tongbu_hub::store::Role;
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
    /// Serve the hub API until SIGTERM or SIGINT.
    Serve {
        /// Address to listen on (port 0 picks a free port; the READY line tells which).
        #[arg(long, default_value = "127.0.0.1:8440")]
        listen: String,
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
    },
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
        Command::Serve { listen } => serve(data_dir, &listen),
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
            command: TokenCommand::Issue { county, ttl_hours },
        } => {
            let mut store = open_store(&data_dir)?;
            let rng = SystemRandom::new();
            let issued =
                admin::issue_token_in(&mut store, SystemClock.now_ms(), &rng, &county, ttl_hours)?;
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

fn serve(data_dir: PathBuf, listen: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let hub = Hub::open(&data_dir, Arc::new(SystemClock))
            .with_context(|| format!("cannot open the hub in {}", data_dir.display()))?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        tracing::info!(%addr, data_dir = %data_dir.display(), hub_key = %hub.public_key().fingerprint(), "hub serving");
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "READY listen=http://{addr}")
                .and_then(|()| out.flush())
                .context("cannot write to stdout")?;
        }
        tongbu_hub::serve_hub(hub, listener, shutdown_signal(), tongbu_hub::DEFAULT_EXPIRE_EVERY)
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
}
