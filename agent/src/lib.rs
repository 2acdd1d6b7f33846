//! `tongbu-agent`: the county agent. It takes records from local systems, refuses malformed
//! input whole, signs every well-formed record into this agent's hash chain, keeps it in a
//! durable SQLite outbox and syncs the chain to the provincial hub with backoff, resume and
//! hub-signed receipts. Nothing is reported as stored before it is committed to disk.
//!
//! Layout (one file per layer; the binary in `main.rs` only parses flags and calls these):
//! - [`clock`]: where the time comes from (injected everywhere logic depends on it);
//! - [`data_dir`]: the data directory and the files in it;
//! - [`keyfile`]: the agent's private key (`agent.key`, PKCS#8, mode 0600);
//! - [`outbox`]: the SQLite outbox, the only module with SQL (`migrations/` holds the schema);
//! - [`policy`]: the hub-signed policy bundle, pulled conditionally and cached (re-verified
//!   with the pinned hub key whenever it is loaded);
//! - [`rules`]: the local view of the in-step rules (the shared engine over the cached policy
//!   and this agent's own stored records);
//! - [`import`]: CSV, Excel and OCDS files turned into v1 records for the intake;
//! - [`intake`]: a submission in, judged, signed and stored records with their rule codes (or a
//!   refusal naming the field) out;
//! - [`client`]: the signed HTTP client for the hub's agent API, verifying hub signatures;
//! - [`tls`]: the hub URL and how its TLS certificate is trusted (a pin, a CA, or plain HTTP
//!   only on this machine or when explicitly allowed);
//! - [`enroll`]: one-time enrollment with a token, pinning the hub's key;
//! - [`rotate`]: replacing the agent's key with the hub's confirmation, and settling a
//!   rotation interrupted by a crash;
//! - [`sync`]: the sync step (`Syncer::sync_once`) and its loop (`run_until_stopped`);
//!   [`round`]: a round's log line and a large backlog's progress;
//! - [`http`]: the loopback intake API (`POST /records`, `POST /check`, `GET /status`);
//! - [`service`]: intake server plus sync loop, and the entry points a demo can drive in-process;
//! - [`status`]: the figures `status` shows; [`metrics`]: the same figures and the sync loop's
//!   counters as Prometheus text (`GET /metrics`); [`verify`]: re-checking the local chain.
//!
//! Invariants: envelope seqs run from 1 without gaps, each `prev` is the previous envelope's
//! hash and the head is the last row; the outbox is append-only (records stay after the hub
//! acknowledges them); `acked_seq` moves only on a hub-signed receipt or watermark that matches
//! the local chain, and never past the local head; a policy is used only if it verifies against
//! the pinned hub key, and the cached policy version never goes back.

pub mod client;
pub mod clock;
pub mod data_dir;
pub mod enroll;
pub mod http;
pub mod import;
pub mod intake;
pub mod keyfile;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod policy;
pub mod rotate;
pub mod round;
pub mod rules;
pub mod service;
pub mod status;
pub mod sync;
pub mod tls;
pub mod verify;

pub use service::{ServiceOptions, enroll, run, submit};

/// This agent's version, reported to the hub at enrollment and in every heartbeat.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
