//! Enrollment: an agent presents a one-time token an admin issued for a county, its new
//! public key and a signature proving it holds the private half; the hub answers with the
//! agent's id and its own public key. Marking the token used and creating the agent happen in
//! one transaction, so a token enrolls at most one agent and a failed attempt changes nothing.

use ring::rand::SecureRandom;
use tongbu_shared::crypto::Domain;
use tongbu_shared::ids::{AgentId, CountyCode};
use tongbu_shared::protocol::EnrollRequest;
use tongbu_shared::signed::enroll_proof_bytes;

use crate::auth::secret_hash;
use crate::ingest::clip;
use crate::store::{AuditEntry, NewAgent, StoreError, Writes};

/// How many random agent ids to try before giving up (a collision among 2^32 ids per county
/// is rare; sixteen in a row means the generator is broken).
const ID_ATTEMPTS: usize = 16;
const MAX_HOSTNAME_CHARS: usize = 255;
const MAX_VERSION_CHARS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("the enrollment token is not known to this hub")]
    TokenUnknown,
    #[error("the enrollment token was already used; ask an administrator for a new one")]
    TokenUsed,
    #[error("the enrollment token has expired; ask an administrator for a new one")]
    TokenExpired,
    #[error("the proof does not verify: it must be the new key's signature over the token")]
    BadProof,
    #[error("this public key is already enrolled as agent {0}")]
    KeyInUse(AgentId),
    #[error("county {0} is not registered")]
    UnknownCounty(CountyCode),
    #[error("cannot draw a free agent id: {0}")]
    NoFreeId(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks that the request is signed by the key it enrolls. Pure and cheap; do it before
/// touching the store.
pub fn check_proof(req: &EnrollRequest) -> Result<(), EnrollError> {
    req.public_key
        .verify(
            Domain::Enroll,
            &enroll_proof_bytes(&req.token, &req.public_key),
            &req.proof,
        )
        .map_err(|_| EnrollError::BadProof)
}

/// The agent enrollment created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub agent_id: AgentId,
    pub county: CountyCode,
    pub county_name: String,
}

/// Spends the token and creates the agent, inside the caller's write transaction. Any error
/// leaves the store as it was (the caller rolls back).
pub fn apply(
    w: &mut dyn Writes,
    req: &EnrollRequest,
    now_ms: i64,
    rng: &dyn SecureRandom,
) -> Result<Enrolled, EnrollError> {
    let token_hash = secret_hash(&req.token);
    let token = w
        .enroll_token(&token_hash)?
        .ok_or(EnrollError::TokenUnknown)?;
    if token.used_at_ms.is_some() {
        return Err(EnrollError::TokenUsed);
    }
    if now_ms >= token.expires_at_ms {
        return Err(EnrollError::TokenExpired);
    }
    if let Some(existing) = w.agent_by_key(&req.public_key)? {
        return Err(EnrollError::KeyInUse(existing));
    }
    let county = w
        .county(&token.county)?
        .ok_or_else(|| EnrollError::UnknownCounty(token.county.clone()))?;
    let agent_id = free_agent_id(w, &county.code, rng)?;
    let hostname = req.hostname.as_deref().map(|h| clip(h, MAX_HOSTNAME_CHARS));
    w.insert_agent(&NewAgent {
        id: agent_id.clone(),
        county: county.code.clone(),
        public_key: req.public_key,
        enrolled_at_ms: now_ms,
        agent_version: clip(&req.agent_version, MAX_VERSION_CHARS),
        hostname: hostname.clone(),
    })?;
    w.mark_token_used(&token_hash, now_ms, &agent_id)?;
    w.insert_audit(&AuditEntry {
        at_ms: now_ms,
        actor: format!("agent:{agent_id}"),
        action: "enroll".into(),
        detail: format!(
            "county {}, key {}, host {}",
            county.code,
            req.public_key.fingerprint(),
            hostname.as_deref().unwrap_or("-")
        ),
    })?;
    Ok(Enrolled {
        agent_id,
        county: county.code,
        county_name: county.name,
    })
}

fn free_agent_id(
    w: &dyn Writes,
    county: &CountyCode,
    rng: &dyn SecureRandom,
) -> Result<AgentId, EnrollError> {
    for _ in 0..ID_ATTEMPTS {
        let mut random = [0u8; 4];
        rng.fill(&mut random)
            .map_err(|_| EnrollError::NoFreeId("the random number generator failed".into()))?;
        let id = AgentId::new(county, random);
        if w.agent(&id)?.is_none() {
            return Ok(id);
        }
    }
    Err(EnrollError::NoFreeId(format!(
        "{ID_ATTEMPTS} random ids in a row were taken"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{County, EnrollToken, SqliteStore, read, write};
    use ring::rand::SystemRandom;
    use tongbu_shared::KeyPair;
    use tongbu_shared::protocol::AgentState;

    const NOW: i64 = 1_795_762_113_000;

    fn county() -> CountyCode {
        CountyCode::parse("430112").unwrap()
    }

    fn setup(expires_at_ms: i64) -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        write(&mut store, |w| {
            w.insert_county(&County {
                code: county(),
                name: "望城区".into(),
                created_at_ms: 0,
            })?;
            w.insert_enroll_token(
                &secret_hash("tbe_t"),
                &EnrollToken {
                    county: county(),
                    created_at_ms: 0,
                    expires_at_ms,
                    used_at_ms: None,
                    used_by: None,
                },
            )
        })
        .unwrap();
        (dir, store)
    }

    fn request(token: &str, seed: u8) -> EnrollRequest {
        let key = KeyPair::from_seed(&[seed; 32]).unwrap();
        let proof = key.sign(
            Domain::Enroll,
            &enroll_proof_bytes(token, &key.public_key()),
        );
        EnrollRequest {
            token: token.into(),
            public_key: key.public_key(),
            proof,
            agent_version: "0.1.0".into(),
            hostname: Some("finance-01".into()),
        }
    }

    fn enroll(store: &mut SqliteStore, req: &EnrollRequest) -> Result<Enrolled, EnrollError> {
        check_proof(req)?;
        write(store, |w| apply(w, req, NOW, &SystemRandom::new()))
    }

    #[test]
    fn a_token_enrolls_one_agent_once() {
        let (_dir, mut store) = setup(NOW + 1);
        let req = request("tbe_t", 1);
        let enrolled = enroll(&mut store, &req).unwrap();
        assert_eq!(enrolled.county, county());
        assert_eq!(enrolled.county_name, "望城区");
        assert!(enrolled.agent_id.as_str().starts_with("430112-"));
        let agent = read(&mut store, |r| r.agent(&enrolled.agent_id))
            .unwrap()
            .unwrap();
        assert_eq!(agent.state, AgentState::Active);
        assert_eq!(agent.acked_seq, 0);
        assert_eq!(agent.public_key, req.public_key);
        assert_eq!(agent.hostname.as_deref(), Some("finance-01"));

        let again = enroll(&mut store, &request("tbe_t", 2)).unwrap_err();
        assert!(matches!(again, EnrollError::TokenUsed), "{again}");
        let token = read(&mut store, |r| r.enroll_token(&secret_hash("tbe_t")))
            .unwrap()
            .unwrap();
        assert_eq!(token.used_by, Some(enrolled.agent_id));
    }

    #[test]
    fn expired_and_unknown_tokens_are_refused() {
        let (_dir, mut store) = setup(NOW);
        let err = enroll(&mut store, &request("tbe_t", 1)).unwrap_err();
        assert!(matches!(err, EnrollError::TokenExpired), "{err}");
        let err = enroll(&mut store, &request("tbe_other", 1)).unwrap_err();
        assert!(matches!(err, EnrollError::TokenUnknown), "{err}");
        let agents = read(&mut store, |r| r.agents()).unwrap();
        assert!(agents.is_empty());
    }

    #[test]
    fn a_key_enrolls_once_and_a_failed_attempt_keeps_the_token() {
        let (_dir, mut store) = setup(NOW + 1);
        write(&mut store, |w| {
            w.insert_enroll_token(
                &secret_hash("tbe_u"),
                &EnrollToken {
                    county: county(),
                    created_at_ms: 0,
                    expires_at_ms: NOW + 1,
                    used_at_ms: None,
                    used_by: None,
                },
            )
        })
        .unwrap();
        enroll(&mut store, &request("tbe_t", 1)).unwrap();
        let err = enroll(&mut store, &request("tbe_u", 1)).unwrap_err();
        assert!(matches!(err, EnrollError::KeyInUse(_)), "{err}");
        // The second token was not spent by the failed attempt.
        enroll(&mut store, &request("tbe_u", 2)).unwrap();
    }

    #[test]
    fn a_proof_for_another_key_or_token_is_refused() {
        let mut req = request("tbe_t", 1);
        req.public_key = KeyPair::from_seed(&[2; 32]).unwrap().public_key();
        assert!(matches!(check_proof(&req), Err(EnrollError::BadProof)));
        let mut req = request("tbe_t", 1);
        req.token = "tbe_other".into();
        assert!(matches!(check_proof(&req), Err(EnrollError::BadProof)));
    }
}
