//! `tongbu-hub`: the provincial hub. It verifies, orders and keeps forever every signed record
//! envelope that county agents send, answers each batch with a receipt it signs, and shows
//! operators which agent is how far behind.
//!
//! Layout:
//! - [`hub`]: the running hub ([`Hub`]) and the operations the API calls;
//! - [`ingest`]: the batch decision (continue, resend, gap, equivocation) — the core;
//! - [`enroll`], [`admin`], [`auth`]: enrollment, admin actions, request authentication;
//! - [`store`]: the narrow storage interface and its SQLite backend; [`db`]: its async face
//!   (one writer thread, a pool of readers);
//! - [`http`]: the axum routes; [`keys`]: the hub's signing key; [`clock`]: injected time;
//!   [`metrics`]: Prometheus counters.
//!
//! Architecture invariants: only `http` knows HTTP; only `store::sqlite` and `migrations/`
//! know SQL; domain modules (`ingest`, `enroll`, `admin`, `auth`) read the time from a
//! [`Clock`] and never from the system; every write goes through the single writer, and
//! nothing is acknowledged before its transaction has committed.

pub mod admin;
pub mod auth;
pub mod clock;
pub mod db;
pub mod enroll;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod keys;
pub mod metrics;
pub mod store;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

pub use clock::{Clock, ManualClock, SystemClock};
pub use hub::{Hub, OpenError};
pub use store::{SqliteStore, Store};

/// What `serve` needs to run a hub.
#[derive(Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub clock: Arc<dyn Clock>,
}

impl ServeConfig {
    /// A hub over `data_dir`, on the system clock.
    pub fn new(data_dir: impl Into<PathBuf>) -> ServeConfig {
        ServeConfig {
            data_dir: data_dir.into(),
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("data_dir", &self.data_dir)
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
    http::serve(hub, listener, shutdown).await?;
    Ok(())
}
