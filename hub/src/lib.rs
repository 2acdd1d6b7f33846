//! `tongbu-hub`: the provincial hub. It verifies, orders and keeps forever every signed record
//! envelope that county agents send, judges each record by the in-step rules into a ledger per
//! county, fiscal year and catalogue code, answers each batch with a receipt it signs (with
//! outcomes that changed since), publishes the signed policy, and shows operators which agent
//! is how far behind and which records break which rule.
//!
//! Layout:
//! - [`hub`]: the running hub ([`Hub`]) and the operations the API calls;
//! - [`ingest`]: the batch decision (continue, resend, gap, equivocation) — the core;
//! - [`ledger`]: the shared rules engine over the store (held records, violations, the feed
//!   of changed outcomes); [`expiry`]: the grace-period task; [`policy`]: signed policy
//!   versions;
//! - [`enroll`], [`admin`], [`auth`]: enrollment, admin actions, request authentication;
//!   [`replay`]: the bounded memory of recent (agent, nonce) pairs that refuses replays;
//!   [`rotate`]: agent key rotation and the key ring (which key signed which seq);
//! - [`store`]: the narrow storage interface and its SQLite backend; [`db`]: its async face
//!   (one writer thread, a pool of readers);
//! - [`http`]: the axum routes and the accept loop (HTTPS and loopback plain HTTP on one port);
//!   [`tls`]: the hub's certificate and key (a self-signed pair on first run); [`keys`]: the
//!   hub's signing key; [`clock`]: injected time; [`metrics`]: Prometheus counters.
//! - [`ocds`]: a county's accepted records of a year as an OCDS 1.1 release package (open data).
//!
//! Architecture invariants: only `http` knows HTTP; only `store::sqlite` and `migrations/`
//! know SQL; the rules live in the shared crate and the hub only stores what they decide;
//! domain modules (`ingest`, `ledger`, `policy`, `enroll`, `admin`, `auth`) read the time from
//! a [`Clock`] and never from the system; every write goes through the single writer (or, for
//! CLI commands, its own SQLite transaction), and nothing is acknowledged before its
//! transaction has committed.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod console;
pub mod db;
pub mod enroll;
pub mod expiry;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod keys;
pub mod ledger;
pub mod log;
pub mod metrics;
pub mod ocds;
pub mod policy;
pub mod replay;
pub mod rotate;
pub mod sequence;
pub mod store;
pub mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use clock::{Clock, ManualClock, SystemClock};
pub use expiry::DEFAULT_EXPIRE_EVERY;
pub use hub::{Hub, OpenError};
pub use store::{SqliteStore, Store};

/// What `serve` needs to run a hub.
#[derive(Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub clock: Arc<dyn Clock>,
    /// How often held records are checked against the grace period.
    pub expire_every: Duration,
    /// Console sessions and logins.
    pub console: console::ConsoleConfig,
    /// HTTPS and/or plain HTTP (see [`http::listener`]).
    pub transport: http::Transport,
}

impl ServeConfig {
    /// A hub over `data_dir`, on the system clock, checking held records every minute.
    pub fn new(data_dir: impl Into<PathBuf>) -> ServeConfig {
        ServeConfig {
            data_dir: data_dir.into(),
            clock: Arc::new(SystemClock),
            expire_every: DEFAULT_EXPIRE_EVERY,
            console: console::ConsoleConfig::default(),
            transport: http::Transport::Plain,
        }
    }
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("data_dir", &self.data_dir)
            .field("expire_every", &self.expire_every)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the hub: {0}")]
    Open(#[from] OpenError),
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the hub in `config.data_dir` and serves its API on `listener` until `shutdown`
/// completes. The caller binds the listener (port 0 is fine) and so knows the real address.
pub async fn serve(
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let hub = Hub::open(&config.data_dir, config.clock)?;
    serve_hub_over(
        hub,
        listener,
        shutdown,
        config.expire_every,
        config.console,
        config.transport,
    )
    .await?;
    Ok(())
}

/// Serves an open hub's API on `listener` and runs its grace-period task every
/// `expire_every`, until `shutdown` completes; then lets requests in flight and the expiry
/// step in progress finish.
pub async fn serve_hub(
    hub: Hub,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    expire_every: Duration,
) -> std::io::Result<()> {
    serve_hub_with(
        hub,
        listener,
        shutdown,
        expire_every,
        console::ConsoleConfig::default(),
    )
    .await
}

/// [`serve_hub`] with the console's settings.
pub async fn serve_hub_with(
    hub: Hub,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    expire_every: Duration,
    console: console::ConsoleConfig,
) -> std::io::Result<()> {
    serve_hub_over(
        hub,
        listener,
        shutdown,
        expire_every,
        console,
        http::Transport::Plain,
    )
    .await
}

/// [`serve_hub_with`] over `transport` (HTTPS, and plain HTTP for loopback peers or none).
pub async fn serve_hub_over(
    hub: Hub,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    expire_every: Duration,
    console: console::ConsoleConfig,
    transport: http::Transport,
) -> std::io::Result<()> {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    // The expiry task stops when shutdown is signalled, or when the server ends any other
    // way (the sender is dropped with it).
    let expiry = tokio::spawn(expiry::run_until_stopped(
        hub.clone(),
        expire_every,
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        },
    ));
    let served = http::serve_over(hub, listener, console, transport, async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    })
    .await;
    if let Err(e) = expiry.await {
        tracing::warn!(error = %e, "the grace-period task failed");
    }
    served
}
