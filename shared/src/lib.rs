//! `tongbu-shared`: what the county agent and the provincial hub must agree on, byte for byte.
//! This crate does no I/O and reads no clock (save `progress`, which reports on stderr); time and
//! randomness come in as arguments.
//!
//! Layout:
//! - [`money`]: `Fen`, integer money with checked arithmetic;
//! - [`ids`], [`date`], [`uscc`]: newtypes that parse identifiers, dates and supplier codes once;
//! - [`record`]: the v1 record model and its strict parser;
//! - [`input`]: splitting a submission (JSON array or JSON Lines) into records, keeping bytes;
//! - [`clock`]: the `Clock` trait, a manual clock for tests, the RFC 3339 report format;
//! - [`crypto`]: Ed25519 keys, signatures, SHA-256 digests and signature domains;
//! - [`certpin`]: the hub's TLS certificate fingerprint as agents pin it, and pinned tokens;
//! - [`envelope`]: the signed envelope, its signing bytes and the per-agent hash chain;
//! - [`signed`]: hub-signed documents and agent-signed requests;
//! - [`merkle`], [`checkpoint`]: the hub's RFC 9162 transparency log, signed checkpoints, proofs;
//! - [`policy`]: catalogue, negative list and rule settings; signed policy bundles;
//! - [`protocol`]: the v1 wire types, paths and error codes;
//! - [`rules`]: the in-step rules and the ledger engine (generic over its storage);
//! - [`progress`]: progress of long work on stderr (a bar on a terminal, plain lines elsewhere);
//!   the one module that writes, and only to what it is given or to stderr;
//! - [`yuan`]: amounts written in yuan or 万元 as decimal text ↔ whole fen, exactly;
//! - [`schema`]: the JSON Schema of the v1 record, as the hub publishes it;
//! - [`sample`]: deterministic realistic records for the demo and tests.

pub mod certpin;
pub mod checkpoint;
pub mod clock;
pub mod crypto;
pub mod date;
pub mod envelope;
pub mod ids;
pub mod input;
pub mod merkle;
pub mod money;
pub mod policy;
pub mod progress;
pub mod protocol;
pub mod record;
pub mod rules;
pub mod sample;
pub mod schema;
pub mod signed;
pub mod uscc;
pub mod yuan;

pub use crypto::{Digest, KeyPair, PublicKey, Signature};
pub use date::Date;
pub use envelope::Envelope;
pub use ids::{AgentId, Code, CountyCode};
pub use money::Fen;
pub use record::{Kind, Record};
pub use uscc::Uscc;
