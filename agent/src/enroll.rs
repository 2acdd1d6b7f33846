//! One-time enrollment: prove possession of this agent's key with an admin's one-time token,
//! receive the agent id and the hub's public key, and pin that key in the outbox. A data
//! directory is enrolled at most once; the private key never leaves it.
//!
//! The hub's TLS certificate is pinned first ([`HubUrl::for_enrollment`]: `--ca`, else
//! `--cert-sha256`, else the pin inside the token), before anything is sent: the token travels
//! only to a hub that proved it holds that certificate, and the trust is stored with the
//! enrollment for every later call.

use std::path::PathBuf;
use std::sync::Arc;

use ring::rand::SystemRandom;
use tongbu_shared::KeyPair;
use tongbu_shared::crypto::Domain;
use tongbu_shared::protocol::{ApiError, EnrollRequest, EnrollResponse, PROTOCOL_VERSION};
use tongbu_shared::signed::enroll_proof_bytes;

use crate::client::{ClientError, HubClient};
use crate::clock::{Clock, rfc3339};
use crate::data_dir::DataDir;
use crate::keyfile::{self, KeyFileError};
use crate::outbox::{Enrollment, Outbox, OutboxError};
use crate::tls::{HubUrl, TrustError, TrustOptions};

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(
        "already enrolled as agent {agent_id} with hub {hub_url}; to enroll another agent use another --data-dir"
    )]
    AlreadyEnrolled { agent_id: String, hub_url: String },
    /// The hub said no (bad, used or expired token, unknown county…): a person must act.
    #[error("enrollment refused: {0}")]
    Refused(ApiError),
    /// The hub could not be asked, or answered nonsense: trying again later may work.
    #[error("enrollment failed: {0}")]
    Hub(ClientError),
    #[error("enrollment failed: {0}")]
    BadResponse(String),
    /// The hub's certificate cannot be trusted as asked (nothing was sent).
    #[error("enrollment refused before contacting the hub: {0}")]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("enrollment failed: {0}")]
    Task(String),
}

impl From<ClientError> for EnrollError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api(api) => EnrollError::Refused(api),
            other => EnrollError::Hub(other),
        }
    }
}

/// Enrolls the agent whose data lives in `data_dir` with the hub at `hub_url`, creating its
/// key if there is none yet, trusting the hub's certificate as `trust` and the token say.
/// Returns what was pinned and the hub's reply. The token is sent exactly as given.
pub async fn enroll(
    data_dir: &DataDir,
    hub_url: &str,
    token: &str,
    trust: &TrustOptions,
    clock: Arc<dyn Clock>,
) -> Result<(Enrollment, EnrollResponse), EnrollError> {
    let hub_url = HubUrl::for_enrollment(hub_url, token, trust)?;
    let paths = (data_dir.outbox_path(), data_dir.key_path());
    let (mut outbox, key) = blocking(move || prepare(paths.0, paths.1)).await??;

    let public_key = key.public_key();
    let req = EnrollRequest {
        token: token.to_owned(),
        public_key,
        proof: key.sign(Domain::Enroll, &enroll_proof_bytes(token, &public_key)),
        agent_version: crate::AGENT_VERSION.to_owned(),
        hostname: hostname(),
    };
    let client = HubClient::new(&hub_url, Arc::clone(&clock))?;
    let resp = client.enroll(&req).await?;
    if resp.protocol != PROTOCOL_VERSION {
        return Err(EnrollError::BadResponse(format!(
            "the hub speaks protocol {}, this agent speaks {PROTOCOL_VERSION}",
            resp.protocol
        )));
    }
    if resp.agent_id.county() != resp.county {
        return Err(EnrollError::BadResponse(format!(
            "the hub assigned agent id {} outside its county {}",
            resp.agent_id, resp.county
        )));
    }
    let enrollment = Enrollment {
        agent_id: resp.agent_id.clone(),
        county: resp.county.clone(),
        county_name: resp.county_name.clone(),
        hub_url,
        hub_public_key: resp.hub_public_key,
        enrolled_at: rfc3339(clock.now_ms()),
    };
    let saved = enrollment.clone();
    blocking(move || outbox.save_enrollment(&saved))
        .await?
        .map_err(|e| match e {
            OutboxError::AlreadyEnrolled(id) => EnrollError::AlreadyEnrolled {
                agent_id: id.to_string(),
                hub_url: String::from("(enrolled concurrently)"),
            },
            other => other.into(),
        })?;
    Ok((enrollment, resp))
}

/// Opens the outbox, refuses an enrolled one, and loads or makes the key.
fn prepare(outbox_path: PathBuf, key_path: PathBuf) -> Result<(Outbox, KeyPair), EnrollError> {
    let outbox = Outbox::open(&outbox_path)?;
    if let Some(e) = outbox.enrollment()? {
        return Err(EnrollError::AlreadyEnrolled {
            agent_id: e.agent_id.to_string(),
            hub_url: e.hub_url.to_string(),
        });
    }
    let key = keyfile::load_or_create(&key_path, &SystemRandom::new())?;
    Ok((outbox, key))
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, EnrollError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EnrollError::Task(e.to_string()))
}

/// This machine's name, for the hub's agent list (best effort).
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.chars().take(255).collect())
}
