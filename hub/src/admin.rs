//! Administrative actions, shared by the CLI, the demo and (later) the console: registering
//! counties, issuing enrollment tokens, creating API keys, listing and revoking agents. Each
//! action is
//! one transaction with an audit entry; a secret is returned once, as a [`Secret`], and only
//! its SHA-256 is stored. Bad input is refused before anything is written.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;
use tongbu_shared::certpin::{CertFingerprint, pinned_token};
use tongbu_shared::ids::{AgentId, CountyCode};
use tongbu_shared::protocol::{AgentRow, AgentState};
use tongbu_shared::record::Text;

use crate::auth::secret_hash;
use crate::clock::rfc3339;
use crate::store::{
    self, AgentRecord, ApiKey, AuditEntry, County, EnrollToken, Role, Store, StoreError, Writes,
};

/// Longest lifetime of an enrollment token, in hours (one year).
pub const MAX_TOKEN_TTL_HOURS: u32 = 24 * 365;
/// Default lifetime of an enrollment token, in hours.
pub const DEFAULT_TOKEN_TTL_HOURS: u32 = 72;
/// Prefix of enrollment tokens, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "tbe_";
/// Prefix of API keys.
pub const API_KEY_PREFIX: &str = "tbk_";

/// A secret shown to a person once. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("county name {name:?}: {reason}")]
    BadCountyName { name: String, reason: String },
    #[error(
        "county {code} already exists as {existing:?}; its name cannot be changed to {requested:?}"
    )]
    CountyNameConflict {
        code: CountyCode,
        existing: String,
        requested: String,
    },
    #[error(
        "county {0} is not registered; add it first with `tongbu-hub county add --code {0} --name NAME`"
    )]
    UnknownCounty(CountyCode),
    #[error("the token lifetime must be 1 to {MAX_TOKEN_TTL_HOURS} hours, got {0}")]
    BadTtl(u32),
    #[error("the system random number generator failed")]
    Random,
    #[error("no agent {0} is enrolled")]
    UnknownAgent(AgentId),
    #[error("agent {0} is already revoked")]
    AlreadyRevoked(AgentId),
    #[error("a revocation needs a reason (--reason)")]
    NoReason,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `add_county` created the county or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountyAdded {
    Created,
    AlreadyExists,
}

/// Registers a county. Adding the same code with the same name again is fine; a different
/// name for an existing code is an error.
pub fn add_county(
    w: &mut dyn Writes,
    now_ms: i64,
    actor: &str,
    code: &CountyCode,
    name: &str,
) -> Result<CountyAdded, AdminError> {
    let name = Text::parse(name).map_err(|reason| AdminError::BadCountyName {
        name: name.to_owned(),
        reason,
    })?;
    if let Some(existing) = w.county(code)? {
        return if existing.name == name.as_str() {
            Ok(CountyAdded::AlreadyExists)
        } else {
            Err(AdminError::CountyNameConflict {
                code: code.clone(),
                existing: existing.name,
                requested: name.as_str().to_owned(),
            })
        };
    }
    w.insert_county(&County {
        code: code.clone(),
        name: name.as_str().to_owned(),
        created_at_ms: now_ms,
    })?;
    w.insert_audit(&AuditEntry {
        at_ms: now_ms,
        actor: actor.to_owned(),
        action: "county.add".into(),
        detail: format!("{code} {}", name.as_str()),
    })?;
    Ok(CountyAdded::Created)
}

/// An enrollment token just issued.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: Secret,
    pub county: CountyCode,
    pub expires_at_ms: i64,
}

/// Issues a one-time enrollment token for `county`, valid for `ttl_hours` (without a
/// certificate pin: for agents that reach the hub over plain loopback HTTP).
pub fn issue_token(
    w: &mut dyn Writes,
    now_ms: i64,
    actor: &str,
    rng: &dyn SecureRandom,
    county: &CountyCode,
    ttl_hours: u32,
) -> Result<IssuedToken, AdminError> {
    issue_pinned_token(w, now_ms, actor, rng, county, ttl_hours, None)
}

/// [`issue_token`], the token carrying `pin`, the hub's TLS certificate fingerprint
/// (`tbe_<secret>.<pin>`, see [`tongbu_shared::certpin`]): the agent trusts exactly that
/// certificate on its first https contact. The whole string is the token; only its hash is
/// stored, so enrollment checks it like any other.
pub fn issue_pinned_token(
    w: &mut dyn Writes,
    now_ms: i64,
    actor: &str,
    rng: &dyn SecureRandom,
    county: &CountyCode,
    ttl_hours: u32,
    pin: Option<&CertFingerprint>,
) -> Result<IssuedToken, AdminError> {
    if ttl_hours == 0 || ttl_hours > MAX_TOKEN_TTL_HOURS {
        return Err(AdminError::BadTtl(ttl_hours));
    }
    if w.county(county)?.is_none() {
        return Err(AdminError::UnknownCounty(county.clone()));
    }
    let mut token = new_secret(TOKEN_PREFIX, rng)?;
    if let Some(pin) = pin {
        token = Secret(pinned_token(token.expose(), pin));
    }
    let expires_at_ms = now_ms.saturating_add(i64::from(ttl_hours) * 3_600_000);
    w.insert_enroll_token(
        &secret_hash(token.expose()),
        &EnrollToken {
            county: county.clone(),
            created_at_ms: now_ms,
            expires_at_ms,
            used_at_ms: None,
            used_by: None,
        },
    )?;
    w.insert_audit(&AuditEntry {
        at_ms: now_ms,
        actor: actor.to_owned(),
        action: "token.issue".into(),
        detail: format!("county {county}, expires {}", rfc3339(expires_at_ms)),
    })?;
    Ok(IssuedToken {
        token,
        county: county.clone(),
        expires_at_ms,
    })
}

/// Creates an API key with `role`.
pub fn create_api_key(
    w: &mut dyn Writes,
    now_ms: i64,
    actor: &str,
    rng: &dyn SecureRandom,
    role: Role,
) -> Result<Secret, AdminError> {
    let key = new_secret(API_KEY_PREFIX, rng)?;
    w.insert_api_key(
        &secret_hash(key.expose()),
        &ApiKey {
            role,
            created_at_ms: now_ms,
            revoked_at_ms: None,
        },
    )?;
    w.insert_audit(&AuditEntry {
        at_ms: now_ms,
        actor: actor.to_owned(),
        action: "apikey.create".into(),
        detail: format!("role {role}"),
    })?;
    Ok(key)
}

fn new_secret(prefix: &str, rng: &dyn SecureRandom) -> Result<Secret, AdminError> {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes).map_err(|_| AdminError::Random)?;
    Ok(Secret(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))))
}

/// One agent as `GET /api/v1/agents` shows it.
pub fn agent_row(a: &AgentRecord) -> AgentRow {
    // The agent may not have reported a head yet, or may report one below what the hub
    // holds (after restoring its own backup): the head is never shown below the watermark.
    let head_seq = a.reported_head_seq.max(a.acked_seq);
    AgentRow {
        agent_id: a.id.clone(),
        county: a.county.clone(),
        acked_seq: a.acked_seq,
        head_seq,
        lag: head_seq - a.acked_seq,
        last_seen: a.last_seen_ms.map(rfc3339),
        state: a.state,
        queue_depth: a.queue_depth,
        agent_version: a.agent_version.clone(),
        last_error: a.last_error.clone(),
    }
}

/// Every agent, ordered by county, then agent id.
pub fn list_agents(store: &mut dyn Store) -> Result<Vec<AgentRow>, AdminError> {
    let agents = store::read(store, |r| r.agents())?;
    Ok(agents.iter().map(agent_row).collect())
}

/// Revokes an agent (active or quarantined): from its next request on, the hub refuses it
/// everything. Audited as `agent.revoke` with the reason, like the console's revoke.
pub fn revoke_agent(
    w: &mut dyn Writes,
    now_ms: i64,
    actor: &str,
    agent: &AgentId,
    reason: &str,
) -> Result<(), AdminError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(AdminError::NoReason);
    }
    let a = w
        .agent(agent)?
        .ok_or_else(|| AdminError::UnknownAgent(agent.clone()))?;
    if a.state == AgentState::Revoked {
        return Err(AdminError::AlreadyRevoked(agent.clone()));
    }
    w.set_agent_state(agent, AgentState::Revoked)?;
    w.insert_audit(&AuditEntry {
        at_ms: now_ms,
        actor: actor.to_owned(),
        action: "agent.revoke".into(),
        detail: format!(
            "agent {agent} ({} → {}): {reason}",
            a.state,
            AgentState::Revoked
        ),
    })?;
    Ok(())
}

/// [`revoke_agent`] as one transaction of its own, for the CLI.
pub fn revoke_agent_in(
    store: &mut dyn Store,
    now_ms: i64,
    agent: &AgentId,
    reason: &str,
) -> Result<(), AdminError> {
    store::write(store, |w| revoke_agent(w, now_ms, "cli", agent, reason))
}

/// [`add_county`] as one transaction of its own, for the CLI and the demo.
pub fn add_county_in(
    store: &mut dyn Store,
    now_ms: i64,
    code: &CountyCode,
    name: &str,
) -> Result<CountyAdded, AdminError> {
    store::write(store, |w| add_county(w, now_ms, "cli", code, name))
}

/// [`issue_pinned_token`] as one transaction of its own, for the CLI.
pub fn issue_token_in(
    store: &mut dyn Store,
    now_ms: i64,
    rng: &dyn SecureRandom,
    county: &CountyCode,
    ttl_hours: u32,
    pin: Option<&CertFingerprint>,
) -> Result<IssuedToken, AdminError> {
    store::write(store, |w| {
        issue_pinned_token(w, now_ms, "cli", rng, county, ttl_hours, pin)
    })
}

/// [`create_api_key`] as one transaction of its own, for the CLI and the demo.
pub fn create_api_key_in(
    store: &mut dyn Store,
    now_ms: i64,
    rng: &dyn SecureRandom,
    role: Role,
) -> Result<Secret, AdminError> {
    store::write(store, |w| create_api_key(w, now_ms, "cli", rng, role))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use ring::rand::SystemRandom;

    fn code() -> CountyCode {
        CountyCode::parse("430112").unwrap()
    }

    #[test]
    fn counties_are_added_once_and_never_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(
            add_county_in(&mut store, 1, &code(), "望城区").unwrap(),
            CountyAdded::Created
        );
        assert_eq!(
            add_county_in(&mut store, 2, &code(), "望城区").unwrap(),
            CountyAdded::AlreadyExists
        );
        let err = add_county_in(&mut store, 3, &code(), "长沙县").unwrap_err();
        assert!(matches!(err, AdminError::CountyNameConflict { .. }));
        assert!(err.to_string().contains("望城区"));
        let err =
            add_county_in(&mut store, 3, &CountyCode::parse("431281").unwrap(), " ").unwrap_err();
        assert!(matches!(err, AdminError::BadCountyName { .. }));
    }

    #[test]
    fn tokens_need_a_county_and_a_sane_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let rng = SystemRandom::new();
        let err = issue_token_in(&mut store, 0, &rng, &code(), 72, None).unwrap_err();
        assert!(matches!(err, AdminError::UnknownCounty(_)));
        add_county_in(&mut store, 0, &code(), "望城区").unwrap();
        assert!(matches!(
            issue_token_in(&mut store, 0, &rng, &code(), 0, None),
            Err(AdminError::BadTtl(0))
        ));
        let issued = issue_token_in(&mut store, 1000, &rng, &code(), 2, None).unwrap();
        assert!(issued.token.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(issued.token.expose().len(), 4 + 43);
        assert_eq!(issued.expires_at_ms, 1000 + 2 * 3_600_000);
        assert!(!format!("{issued:?}").contains(issued.token.expose()));
        let stored = store::read(&mut store, |r| {
            r.enroll_token(&secret_hash(issued.token.expose()))
        })
        .unwrap()
        .unwrap();
        assert_eq!(stored.expires_at_ms, issued.expires_at_ms);
    }

    #[test]
    fn a_pinned_token_carries_the_certificate_and_is_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let rng = SystemRandom::new();
        add_county_in(&mut store, 0, &code(), "望城区").unwrap();
        let pin = CertFingerprint::of_der(b"the hub's certificate");
        let issued = issue_token_in(&mut store, 1, &rng, &code(), 2, Some(&pin)).unwrap();
        let token = issued.token.expose();
        assert!(token.starts_with(TOKEN_PREFIX), "{token}");
        assert_eq!(token.len(), 4 + 43 + 1 + 43, "{token}");
        assert_eq!(tongbu_shared::certpin::token_pin(token).unwrap(), Some(pin));
        // The hub knows the token by the hash of the whole printed string, pin included: a
        // token whose pin was swapped is not a token.
        let mut stored = |t: &str| {
            store::read(&mut store, |r| r.enroll_token(&secret_hash(t)))
                .unwrap()
                .is_some()
        };
        assert!(stored(token));
        let (secret, _) = token.rsplit_once('.').unwrap();
        assert!(!stored(secret));
        let other = pinned_token(secret, &CertFingerprint::of_der(b"a man in the middle"));
        assert!(!stored(&other));
    }

    #[test]
    fn api_keys_are_stored_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let key = create_api_key_in(&mut store, 5, &SystemRandom::new(), Role::Operator).unwrap();
        assert!(key.expose().starts_with(API_KEY_PREFIX));
        let found = store::read(&mut store, |r| r.api_key(&secret_hash(key.expose())))
            .unwrap()
            .unwrap();
        assert_eq!(found.role, Role::Operator);
    }
}
