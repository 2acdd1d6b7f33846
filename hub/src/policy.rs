//! The policy the rules judge by: the guidance catalogue, the negative list and the rule
//! settings, as numbered versions signed by the hub ([`PolicyBundle`] under the policy
//! signature domain). Version 1 is the reform's default policy, made the first time the hub
//! opens its data directory; every `policy set` adds the next version.
//!
//! Invariants: the hub never changes a version and never deletes one (a SQL trigger refuses
//! deletion), so a version's rules can be cached forever ([`PolicyCache`]); the stored payload
//! is the exact byte string the hub signed, and agents are served those bytes, never a
//! re-serialization (bytes altered in the store fail the agents' signature check); a refused
//! document changes nothing; every new version is audited with who set it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tongbu_shared::KeyPair;
use tongbu_shared::crypto::Signature;
use tongbu_shared::policy::{Policy, PolicyBundle, PolicyDoc, PolicyError, default_policy};
use tongbu_shared::signed::Signed;

use crate::store::{self, AuditEntry, Reads, Store, StoreError, StoredPolicy, Writes};

/// Why a policy could not be set or read.
#[derive(Debug, thiserror::Error)]
pub enum PolicyAdminError {
    /// The document was refused; nothing changed.
    #[error("the policy was refused: {0}")]
    Refused(#[from] PolicyError),
    #[error("cannot sign the policy: {0}")]
    Sign(String),
    #[error("the hub has no policy yet")]
    NoPolicy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A policy version just set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicySet {
    pub version: u64,
    /// Entries in the guidance catalogue.
    pub catalogue: usize,
    /// Entries on the negative list.
    pub negative_list: usize,
}

impl fmt::Display for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policy version {} set: {} catalogue entries, {} on the negative list",
            self.version, self.catalogue, self.negative_list
        )
    }
}

/// The current policy version as stored: the exact signed payload and its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentPolicy {
    pub version: u64,
    payload: Vec<u8>,
    sig: Signature,
}

impl CurrentPolicy {
    /// The exact bytes the hub signed (a `PolicyBundle` in JSON).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    pub fn signature(&self) -> Signature {
        self.sig
    }

    pub fn bundle(&self) -> Result<PolicyBundle, StoreError> {
        parse_bundle(self.version, &self.payload)
    }

    /// What `policy show` prints.
    pub fn view(&self) -> Result<PolicyView, StoreError> {
        let bundle = self.bundle()?;
        Ok(PolicyView {
            version: bundle.version,
            doc: bundle.doc(),
        })
    }
}

/// A policy version for people: `{"version", "catalogue", "negative_list", "settings"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyView {
    pub version: u64,
    #[serde(flatten)]
    pub doc: PolicyDoc,
}

fn parse_bundle(version: u64, payload: &[u8]) -> Result<PolicyBundle, StoreError> {
    let bundle: PolicyBundle = serde_json::from_slice(payload)
        .map_err(|e| StoreError::Corrupt(format!("policy version {version}: {e}")))?;
    if bundle.version != version {
        return Err(StoreError::Corrupt(format!(
            "policy version {version} holds a bundle numbered {}",
            bundle.version
        )));
    }
    Ok(bundle)
}

/// The rules of each policy version, parsed once. Versions never change, so entries never go
/// stale; a version missing here is read from the store.
#[derive(Debug, Clone, Default)]
pub struct PolicyCache {
    versions: Arc<Mutex<HashMap<u64, Arc<Policy>>>>,
}

impl PolicyCache {
    pub fn get<R: Reads + ?Sized>(&self, r: &R, version: u64) -> Result<Arc<Policy>, StoreError> {
        if let Some(p) = self.lock().get(&version) {
            return Ok(Arc::clone(p));
        }
        let stored = r
            .policy(version)?
            .ok_or_else(|| StoreError::Corrupt(format!("policy version {version} is missing")))?;
        let policy = Arc::new(parse_bundle(version, &stored.payload)?.policy());
        self.lock().insert(version, Arc::clone(&policy));
        Ok(policy)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Policy>>> {
        self.versions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The current policy version; an error if the hub has none (it makes one when it opens).
pub fn current_version<R: Reads + ?Sized>(r: &R) -> Result<u64, StoreError> {
    match r.current_policy_version()? {
        0 => Err(StoreError::Corrupt("the hub has no policy version".into())),
        v => Ok(v),
    }
}

/// The current policy version as stored.
pub fn current<R: Reads + ?Sized>(r: &R) -> Result<CurrentPolicy, PolicyAdminError> {
    let version = r.current_policy_version()?;
    let stored = r.policy(version)?.ok_or(PolicyAdminError::NoPolicy)?;
    Ok(CurrentPolicy {
        version,
        payload: stored.payload,
        sig: stored.sig,
    })
}

fn insert(
    w: &mut dyn Writes,
    key: &KeyPair,
    (now_ms, actor, action): (i64, &str, &str),
    version: u64,
    doc: PolicyDoc,
) -> Result<PolicySet, PolicyAdminError> {
    let set = PolicySet {
        version,
        catalogue: doc.catalogue.len(),
        negative_list: doc.negative_list.len(),
    };
    let bundle = PolicyBundle::new(version, now_ms, doc);
    let signed = Signed::sign(key, &bundle).map_err(|e| PolicyAdminError::Sign(e.to_string()))?;
    w.insert_policy(&StoredPolicy {
        version,
        payload: signed.payload_bytes().to_vec(),
        sig: signed.signature(),
        created_at_ms: now_ms,
        actor: actor.to_owned(),
    })?;
    w.insert_audit(&AuditEntry {
        at_ms: now_ms,
        actor: actor.to_owned(),
        action: action.to_owned(),
        detail: format!(
            "version {version}: {} catalogue entries, {} on the negative list, grace period {} h",
            set.catalogue, set.negative_list, bundle.settings.grace_period_hours
        ),
    })?;
    Ok(set)
}

/// Makes policy version 1 (the default policy) if the hub has no policy yet; returns the
/// current version.
pub fn ensure_initial(
    w: &mut dyn Writes,
    key: &KeyPair,
    now_ms: i64,
    actor: &str,
) -> Result<u64, PolicyAdminError> {
    match w.current_policy_version()? {
        0 => Ok(insert(w, key, (now_ms, actor, "policy.init"), 1, default_policy())?.version),
        v => Ok(v),
    }
}

/// Adds `doc` as the next policy version, inside the caller's write transaction. A document
/// that does not pass [`PolicyDoc::check`] is refused and nothing changes.
pub fn set(
    w: &mut dyn Writes,
    key: &KeyPair,
    now_ms: i64,
    actor: &str,
    doc: PolicyDoc,
) -> Result<PolicySet, PolicyAdminError> {
    doc.check()?;
    let current = ensure_initial(w, key, now_ms, actor)?;
    insert(w, key, (now_ms, actor, "policy.set"), current + 1, doc)
}

/// [`set`] as one transaction of its own, for the CLI (also while `serve` runs).
pub fn set_in(
    store: &mut dyn Store,
    key: &KeyPair,
    now_ms: i64,
    doc: PolicyDoc,
) -> Result<PolicySet, PolicyAdminError> {
    store::write(store, |w| set(w, key, now_ms, "cli", doc))
}

/// The current policy, for the CLI (making version 1 first on a new data directory).
pub fn show_in(
    store: &mut dyn Store,
    key: &KeyPair,
    now_ms: i64,
) -> Result<CurrentPolicy, PolicyAdminError> {
    store::write(store, |w| {
        ensure_initial(w, key, now_ms, "cli")?;
        current(&*w)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use tongbu_shared::Code;
    use tongbu_shared::policy::Entry;

    fn key() -> KeyPair {
        KeyPair::from_seed(&[9; 32]).unwrap()
    }

    fn doc(codes: &[&str]) -> PolicyDoc {
        PolicyDoc {
            catalogue: codes
                .iter()
                .map(|c| Entry {
                    code: Code::parse(c).unwrap(),
                    name: format!("服务 {c}"),
                })
                .collect(),
            negative_list: vec![],
            settings: Default::default(),
        }
    }

    #[test]
    fn versions_count_up_from_the_default_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let first = show_in(&mut store, &key(), 5).unwrap();
        assert_eq!(first.version, 1);
        assert_eq!(first.view().unwrap().doc, default_policy());
        let set = set_in(&mut store, &key(), 6, doc(&["A1", "A2"])).unwrap();
        assert_eq!(
            set.to_string(),
            "policy version 2 set: 2 catalogue entries, 0 on the negative list"
        );
        let now = show_in(&mut store, &key(), 7).unwrap();
        assert_eq!(now.version, 2);
        // The stored bytes are what was signed.
        let wire = format!(
            r#"{{"payload":{},"sig":"{}"}}"#,
            std::str::from_utf8(now.payload()).unwrap(),
            now.signature().to_base64()
        );
        let signed: Signed<PolicyBundle> = serde_json::from_str(&wire).unwrap();
        let bundle = signed.verify(&key().public_key()).unwrap();
        assert_eq!((bundle.version, bundle.issued_at_ms), (2, 6));
        assert_eq!(bundle.doc(), doc(&["A1", "A2"]));
        let view = serde_json::to_value(now.view().unwrap()).unwrap();
        assert_eq!(
            view,
            serde_json::json!({"version": 2,
                "catalogue": [{"code": "A1", "name": "服务 A1"}, {"code": "A2", "name": "服务 A2"}],
                "negative_list": [], "settings": {"grace_period_hours": 72}})
        );
    }

    #[test]
    fn a_bad_document_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        show_in(&mut store, &key(), 1).unwrap();
        let err = set_in(&mut store, &key(), 2, doc(&[])).unwrap_err();
        assert!(matches!(err, PolicyAdminError::Refused(_)), "{err}");
        assert!(err.to_string().contains("empty"), "{err}");
        assert_eq!(show_in(&mut store, &key(), 3).unwrap().version, 1);
    }

    #[test]
    fn the_cache_reads_each_version_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        show_in(&mut store, &key(), 1).unwrap();
        let cache = PolicyCache::default();
        let p = store::read(&mut store, |r| cache.get(r, 1)).unwrap();
        assert_eq!(p.version, 1);
        assert!(p.catalogue.contains_key(&Code::parse("A0501").unwrap()));
        let missing = store::read(&mut store, |r| cache.get(r, 7));
        assert!(matches!(missing, Err(StoreError::Corrupt(_))));
    }
}
