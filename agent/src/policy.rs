//! The policy cache: the hub's signed policy bundle (catalogue, negative list, rule settings),
//! pulled with a conditional signed `GET` and kept in the outbox so the agent judges records
//! offline too.
//!
//! Invariants: a bundle is used only after its signature verifies against the hub key pinned at
//! enrollment, both when it arrives and every time it is loaded from disk; the cached version
//! never goes back (an older version is a rollback, the same version with other bytes a
//! conflict: both are refused, the cached bundle stays and `last_error` says why); what is
//! cached is the exact payload bytes and signature the hub sent.

use tongbu_shared::crypto::{PublicKey, Signature};
use tongbu_shared::policy::PolicyBundle;
use tongbu_shared::signed::SignedPayload;

use crate::client::{ClientError, Credentials, HubClient, PolicyReply};
use crate::outbox::{Outbox, OutboxError, SharedOutbox, StoredPolicy};

/// A cached policy bundle whose signature verified against the pinned hub key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPolicy {
    pub bundle: PolicyBundle,
    /// The exact payload bytes the hub signed.
    pub payload: Vec<u8>,
    pub fetched_at_ms: i64,
}

impl CachedPolicy {
    pub fn version(&self) -> u64 {
        self.bundle.version
    }
}

/// Why the cached policy cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The stored bundle does not verify or parse: the outbox was altered on disk.
    #[error(
        "policy_cache: the cached policy version {version} {problem}; it is not used (the outbox was altered on disk)"
    )]
    Damaged { version: u64, problem: String },
}

/// Verifies `payload` and `sig` against the pinned `hub_key`, then parses the bundle.
fn verify(hub_key: &PublicKey, payload: &[u8], sig: &[u8]) -> Result<PolicyBundle, String> {
    let sig = Signature::from_slice(sig).ok_or("has a signature that is not 64 bytes")?;
    hub_key
        .verify(PolicyBundle::DOMAIN, payload, &sig)
        .map_err(|_| "is not signed by the pinned hub key".to_owned())?;
    serde_json::from_slice(payload).map_err(|e| format!("does not parse: {e}"))
}

/// Loads the newest cached bundle and verifies it with the pinned hub key. `Ok(None)` when no
/// policy is cached yet.
pub fn load(outbox: &Outbox, hub_key: &PublicKey) -> Result<Option<CachedPolicy>, CacheError> {
    let Some(stored) = outbox.latest_policy()? else {
        return Ok(None);
    };
    let damaged = |problem: String| CacheError::Damaged {
        version: stored.version,
        problem,
    };
    let bundle = verify(hub_key, &stored.payload, &stored.sig).map_err(damaged)?;
    if bundle.version != stored.version {
        return Err(damaged(format!(
            "holds a bundle of version {}",
            bundle.version
        )));
    }
    Ok(Some(CachedPolicy {
        bundle,
        payload: stored.payload,
        fetched_at_ms: stored.fetched_at_ms,
    }))
}

/// The version of the cached policy in use: the newest cached bundle if it verifies.
pub fn cached_version(outbox: &Outbox, hub_key: &PublicKey) -> Result<Option<u64>, OutboxError> {
    match load(outbox, hub_key) {
        Ok(p) => Ok(p.map(|p| p.version())),
        Err(CacheError::Damaged { .. }) => Ok(None),
        Err(CacheError::Outbox(e)) => Err(e),
    }
}

/// What to do with a verified bundle the hub offers, given the cached one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Newer than the cached one (or none is cached): cache it.
    Take,
    /// The very bundle already cached.
    Same,
    /// Refused: older than the cached one.
    Rollback { cached: u64, offered: u64 },
    /// Refused: the cached version, with other bytes.
    Conflict { version: u64 },
}

/// Decides on an offered bundle: `cached` is the cached version and its exact payload bytes.
pub fn judge_offer(cached: Option<(u64, &[u8])>, offered: u64, payload: &[u8]) -> Offer {
    use std::cmp::Ordering;
    let Some((version, bytes)) = cached else {
        return Offer::Take;
    };
    match offered.cmp(&version) {
        Ordering::Greater => Offer::Take,
        Ordering::Less => Offer::Rollback {
            cached: version,
            offered,
        },
        Ordering::Equal if bytes == payload => Offer::Same,
        Ordering::Equal => Offer::Conflict { version },
    }
}

/// What one policy pull did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyPull {
    /// The cached bundle is current (304, or the hub sent the same bytes).
    Unchanged { version: u64 },
    /// A bundle was verified and cached; `from` is the version it replaces.
    Updated { from: Option<u64>, to: u64 },
    /// The hub publishes no policy yet.
    NoneOffered,
}

/// Why a policy pull changed nothing. `Display` is the one-line `last_error`, its code first.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "policy_rollback: the hub offers policy version {offered}, older than the cached version {cached}; the cached policy is kept"
    )]
    Rollback { cached: u64, offered: u64 },
    #[error(
        "policy_conflict: the hub offers policy version {version} with content that differs from the cached version {version}; the cached policy is kept"
    )]
    Conflict { version: u64 },
    /// The hub could not be asked, or its bundle does not verify (`bad_hub_signature: …`).
    #[error("{0}")]
    Hub(#[from] ClientError),
    #[error("outbox: {0}")]
    Outbox(#[from] OutboxError),
}

/// Pulls the hub's policy once: a signed `GET` with `If-None-Match` naming the cached
/// version; a bundle must verify against the pinned key, and is cached only if it is newer
/// than the cached one. A cached bundle that no longer verifies counts as none cached.
pub async fn pull(
    client: &HubClient,
    creds: &Credentials,
    outbox: &SharedOutbox,
    now_ms: i64,
) -> Result<PolicyPull, PullError> {
    let hub_key = creds.hub_key;
    let cached = outbox
        .call(move |o| match load(o, &hub_key) {
            Ok(p) => Ok(p),
            Err(CacheError::Damaged { .. }) => Ok(None),
            Err(CacheError::Outbox(e)) => Err(e),
        })
        .await?;
    let signed = match client
        .policy(creds, cached.as_ref().map(CachedPolicy::version))
        .await?
    {
        PolicyReply::NotModified => {
            return Ok(match &cached {
                Some(c) => PolicyPull::Unchanged {
                    version: c.version(),
                },
                // A 304 to an unconditional request: nothing to go on.
                None => PolicyPull::NoneOffered,
            });
        }
        PolicyReply::NotFound => return Ok(PolicyPull::NoneOffered),
        PolicyReply::Bundle(signed) => signed,
    };
    let offered = signed.bundle.version;
    let cached_pair = cached.as_ref().map(|c| (c.version(), c.payload.as_slice()));
    match judge_offer(cached_pair, offered, &signed.payload) {
        Offer::Same => Ok(PolicyPull::Unchanged { version: offered }),
        Offer::Rollback { cached, offered } => Err(PullError::Rollback { cached, offered }),
        Offer::Conflict { version } => Err(PullError::Conflict { version }),
        Offer::Take => {
            let stored = StoredPolicy {
                version: offered,
                payload: signed.payload,
                sig: signed.sig.0.to_vec(),
                fetched_at_ms: now_ms,
            };
            outbox.call(move |o| o.save_policy(&stored)).await?;
            Ok(PolicyPull::Updated {
                from: cached.map(|c| c.version()),
                to: offered,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tongbu_shared::KeyPair;
    use tongbu_shared::policy::default_policy;
    use tongbu_shared::signed::Signed;

    #[test]
    fn offers_never_move_the_cache_back() {
        assert_eq!(judge_offer(None, 3, b"x"), Offer::Take);
        assert_eq!(judge_offer(Some((3, b"x")), 4, b"y"), Offer::Take);
        assert_eq!(judge_offer(Some((3, b"x")), 3, b"x"), Offer::Same);
        assert_eq!(
            judge_offer(Some((3, b"x")), 2, b"x"),
            Offer::Rollback {
                cached: 3,
                offered: 2
            }
        );
        assert_eq!(
            judge_offer(Some((3, b"x")), 3, b"x "),
            Offer::Conflict { version: 3 }
        );
    }

    #[test]
    fn the_cache_is_verified_when_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        let hub = KeyPair::from_seed(&[9; 32]).unwrap();
        assert_eq!(load(&outbox, &hub.public_key()).unwrap(), None);

        let bundle = PolicyBundle::new(2, 5, default_policy());
        let signed = Signed::sign(&hub, &bundle).unwrap();
        let stored = StoredPolicy {
            version: 2,
            payload: signed.payload_bytes().to_vec(),
            sig: signed.signature().0.to_vec(),
            fetched_at_ms: 7,
        };
        outbox.save_policy(&stored).unwrap();
        let cached = load(&outbox, &hub.public_key()).unwrap().unwrap();
        assert_eq!((cached.bundle, cached.fetched_at_ms), (bundle, 7));
        assert_eq!(cached_version(&outbox, &hub.public_key()).unwrap(), Some(2));

        // Another key, or altered bytes on disk: not used.
        let other = KeyPair::from_seed(&[8; 32]).unwrap().public_key();
        let err = load(&outbox, &other).unwrap_err();
        assert!(err.to_string().starts_with("policy_cache:"), "{err}");
        assert_eq!(cached_version(&outbox, &other).unwrap(), None);
        let mut altered = stored.clone();
        altered.payload = String::from_utf8(stored.payload.clone())
            .unwrap()
            .replace("A0501", "A0599")
            .into_bytes();
        outbox.save_policy(&altered).unwrap();
        assert!(matches!(
            load(&outbox, &hub.public_key()),
            Err(CacheError::Damaged { version: 2, .. })
        ));
    }
}
