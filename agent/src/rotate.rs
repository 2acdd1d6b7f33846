//! Key rotation: `tongbu-agent rotate-key` replaces the agent's Ed25519 key. The new key is
//! written to `agent.key.new`; the rotation is noted as pending in the outbox (with the chain
//! head as the last seq the old key signs, under the outbox's write lock); the hub is asked
//! with a request signed by the OLD key carrying the new key and the new key's proof; only
//! once the hub's signed confirmation verifies is `agent.key` replaced (atomically, the old
//! key kept as `agent.key.old` meanwhile) and the pending rotation marked done.
//!
//! A rotation interrupted anywhere is finished or undone by [`recover`] on the next start
//! (`run`, `sync --once`, `rotate-key`): with a pending rotation and `agent.key.new` present,
//! the hub is asked with the new key; if it accepts it the new key is put in place, if it
//! refuses the signature the old key stays. Until that is settled the agent does not sign
//! records ([`pending_problem`]), since it cannot know which key signs the next seq.
//!
//! Stop the service (`run`) before rotating: it holds the key it started with, and records it
//! signed with the old key after the rotation point would be refused by the hub.

use std::sync::Arc;

use ring::rand::SystemRandom;
use tongbu_shared::crypto::Domain;
use tongbu_shared::protocol::{ErrorCode, KeyRotated, RotateKeyRequest};
use tongbu_shared::signed::rotate_proof_bytes;

use crate::client::{ClientError, Credentials, HubClient};
use crate::clock::Clock;
use crate::data_dir::DataDir;
use crate::keyfile::{self, KeyFileError};
use crate::outbox::{Enrollment, Outbox, OutboxError};

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The hub refused the rotation; the old key stays in use.
    #[error("the hub refused the key rotation ({0}); the old key stays in use")]
    Refused(ClientError),
    /// The hub could not be asked, or its answer is unknown: the rotation stays pending.
    #[error(
        "key rotation not settled: {0}; the new key waits in agent.key.new and the agent signs nothing until `tongbu-agent rotate-key` (or `run`/`sync --once`) settles it with the hub"
    )]
    InDoubt(ClientError),
    #[error("bad_reply: the hub's confirmation {0}; the rotation stays pending")]
    BadConfirmation(String),
}

/// What [`recover`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// No rotation was in progress.
    Nothing,
    /// The hub had accepted the new key: it is now `agent.key`.
    Finished,
    /// The hub had not: the old key stays.
    Undone,
}

/// Why the agent must not sign records now, if a rotation is unsettled.
pub fn pending_problem(dir: &DataDir, outbox: &Outbox) -> Result<Option<String>, OutboxError> {
    Ok(
        (outbox.pending_rotation()?.is_some() && dir.new_key_path().exists()).then(|| {
            format!(
                "a key rotation in {} is not settled with the hub yet; run `tongbu-agent rotate-key` or `tongbu-agent sync --once` first",
                dir.root().display()
            )
        }),
    )
}

/// Replaces the agent's key, settling an earlier interrupted rotation first. Returns the
/// hub's confirmation.
pub async fn rotate_key(
    dir: &DataDir,
    outbox: &mut Outbox,
    enrollment: &Enrollment,
    clock: Arc<dyn Clock>,
) -> Result<KeyRotated, RotateError> {
    recover(dir, outbox, enrollment, Arc::clone(&clock)).await?;
    let client =
        HubClient::new(&enrollment.hub_url, Arc::clone(&clock)).map_err(RotateError::Refused)?;
    let old = keyfile::load(&dir.key_path())?;
    keyfile::remove(&dir.new_key_path())?;
    let new = keyfile::load_or_create(&dir.new_key_path(), &SystemRandom::new())?;
    let last_old_seq = outbox.begin_rotation(&old.public_key(), clock.now_ms())?;
    let agent = &enrollment.agent_id;
    let proof = new.sign(
        Domain::Rotate,
        &rotate_proof_bytes(agent, &old.public_key(), &new.public_key(), last_old_seq),
    );
    let req = RotateKeyRequest {
        new_public_key: new.public_key(),
        last_old_seq,
        proof,
    };
    let creds = Credentials {
        agent: agent.clone(),
        key: Arc::new(old),
        hub_key: enrollment.hub_public_key,
    };
    match client.rotate_key(&creds, &req).await {
        Ok(confirmed) => {
            if confirmed.agent_id != *agent
                || confirmed.public_key != new.public_key()
                || confirmed.last_old_seq != last_old_seq
            {
                return Err(RotateError::BadConfirmation(format!(
                    "names agent {} key {} after seq {}, not this rotation",
                    confirmed.agent_id,
                    confirmed.public_key.fingerprint(),
                    confirmed.last_old_seq
                )));
            }
            finish(dir, outbox)?;
            Ok(confirmed)
        }
        Err(e) if settled_refusal(&e) => {
            undo(dir, outbox)?;
            Err(RotateError::Refused(e))
        }
        Err(e) => Err(RotateError::InDoubt(e)),
    }
}

/// Settles a rotation interrupted by a crash or a lost reply (see the module doc).
pub async fn recover(
    dir: &DataDir,
    outbox: &mut Outbox,
    enrollment: &Enrollment,
    clock: Arc<dyn Clock>,
) -> Result<Recovered, RotateError> {
    let pending = outbox.pending_rotation()?;
    let new_path = dir.new_key_path();
    match (pending, new_path.exists()) {
        (None, false) => {
            keyfile::remove(&dir.old_key_path())?;
            Ok(Recovered::Nothing)
        }
        // A rotation undone half way: the new key was never accepted.
        (None, true) => {
            keyfile::remove(&new_path)?;
            keyfile::remove(&dir.old_key_path())?;
            Ok(Recovered::Undone)
        }
        // The new key was already put in place (only done after the hub confirmed).
        (Some(_), false) => {
            outbox.confirm_rotation()?;
            keyfile::remove(&dir.old_key_path())?;
            Ok(Recovered::Finished)
        }
        (Some(_), true) => {
            let new = keyfile::load(&new_path)?;
            let client =
                HubClient::new(&enrollment.hub_url, clock).map_err(RotateError::InDoubt)?;
            let creds = Credentials {
                agent: enrollment.agent_id.clone(),
                key: Arc::new(new),
                hub_key: enrollment.hub_public_key,
            };
            match client.watermark(&creds).await {
                Ok(_) => {
                    finish(dir, outbox)?;
                    Ok(Recovered::Finished)
                }
                Err(e) if e.code() == Some(ErrorCode::BadRequestSignature) => {
                    undo(dir, outbox)?;
                    Ok(Recovered::Undone)
                }
                Err(e) => Err(RotateError::InDoubt(e)),
            }
        }
    }
}

/// Whether the hub answered the rotation with a refusal that stands (so it did not rotate).
fn settled_refusal(e: &ClientError) -> bool {
    match e.code() {
        Some(code) => !code.is_transient(),
        None => matches!(e, ClientError::BadUrl { .. }),
    }
}

/// The hub confirmed: the new key becomes `agent.key`, then the rotation is marked done.
fn finish(dir: &DataDir, outbox: &mut Outbox) -> Result<(), RotateError> {
    keyfile::replace(&dir.new_key_path(), &dir.key_path(), &dir.old_key_path())?;
    outbox.confirm_rotation()?;
    Ok(())
}

/// The hub refused: forget the rotation first, then the new key (see [`recover`]'s cases).
fn undo(dir: &DataDir, outbox: &mut Outbox) -> Result<(), RotateError> {
    outbox.abandon_rotation()?;
    keyfile::remove(&dir.new_key_path())?;
    Ok(())
}
