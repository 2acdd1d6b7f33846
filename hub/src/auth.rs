//! Who is asking. Agents sign every request (the `x-tongbu-*` headers, see
//! `tongbu_shared::signed`); people and scripts present an API key as a bearer token. The
//! checks here are pure functions of the request, the stored key and the hub's time; secrets
//! are only ever compared through their SHA-256, which is all the store keeps.
//!
//! A nonce is 16–64 hex characters; a request whose (agent, nonce) the hub has already seen
//! within the clock-skew window is refused as a replay (see `crate::replay`, checked by
//! `Hub::authenticate` after the signature and the clock, so only signed requests are
//! remembered).

use tongbu_shared::crypto::{Digest, PublicKey, Signature};
use tongbu_shared::ids::AgentId;
use tongbu_shared::protocol::MAX_CLOCK_SKEW_SECS;
use tongbu_shared::signed::RequestAuth;

/// Shortest nonce the hub accepts, in hex characters (64 bits).
pub const MIN_NONCE_LEN: usize = 16;
/// Longest nonce the hub accepts, in hex characters.
pub const MAX_NONCE_LEN: usize = 64;

/// The raw authentication headers of an agent request, as the transport found them.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthHeaders<'a> {
    pub agent: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// What is wrong with a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("request signature: {0}")]
    BadRequestSignature(String),
    #[error(
        "the request's timestamp is {skew_seconds} s away from the hub's clock \
         (at most {MAX_CLOCK_SKEW_SECS} s allowed): fix the agent's clock"
    )]
    ClockSkew { skew_seconds: i64 },
    #[error("missing or invalid API key")]
    Unauthorized,
    /// The (agent, nonce) pair was already seen within the clock-skew window.
    #[error("{}", crate::replay::ReplayError::Replayed)]
    Replayed,
    /// The hub's memory of recent requests is full; this agent sends the most. Retry later.
    #[error("{}", crate::replay::ReplayError::Busy)]
    Busy,
}

impl From<crate::replay::ReplayError> for AuthError {
    fn from(e: crate::replay::ReplayError) -> AuthError {
        match e {
            crate::replay::ReplayError::Replayed => AuthError::Replayed,
            crate::replay::ReplayError::Busy => AuthError::Busy,
        }
    }
}

/// Parses the four signature headers; the agent they name must be `path_agent`, the agent
/// whose resource the request addresses.
pub fn parse_request_auth(
    headers: &AuthHeaders<'_>,
    path_agent: &str,
) -> Result<RequestAuth, AuthError> {
    let missing = |name: &str| AuthError::BadRequestSignature(format!("missing header {name}"));
    let bad = |what: &str| AuthError::BadRequestSignature(what.to_owned());
    let agent = headers
        .agent
        .ok_or_else(|| missing(tongbu_shared::signed::HEADER_AGENT))?;
    let timestamp = headers
        .timestamp
        .ok_or_else(|| missing(tongbu_shared::signed::HEADER_TIMESTAMP))?;
    let nonce = headers
        .nonce
        .ok_or_else(|| missing(tongbu_shared::signed::HEADER_NONCE))?;
    let signature = headers
        .signature
        .ok_or_else(|| missing(tongbu_shared::signed::HEADER_SIGNATURE))?;

    if agent != path_agent {
        return Err(bad(
            "the signing agent is not the agent named in the request path",
        ));
    }
    let agent = AgentId::parse(agent).map_err(|e| bad(&format!("agent header: {e}")))?;
    let timestamp: i64 = timestamp
        .parse()
        .map_err(|_| bad("the timestamp header must be Unix seconds"))?;
    if !(MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len())
        || !nonce.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(bad(&format!(
            "the nonce header must be {MIN_NONCE_LEN}-{MAX_NONCE_LEN} hex characters"
        )));
    }
    let sig = Signature::from_base64(signature)
        .map_err(|_| bad("the signature header must be a base64 Ed25519 signature"))?;
    Ok(RequestAuth {
        agent,
        timestamp,
        nonce: nonce.to_owned(),
        sig,
    })
}

/// Checks the request's signature with the agent's enrolled key, then its timestamp against
/// the hub's clock.
pub fn verify_request(
    auth: &RequestAuth,
    key: &PublicKey,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<(), AuthError> {
    auth.verify(key, method, path_and_query, body)
        .map_err(|_| {
            AuthError::BadRequestSignature(
                "the signature does not verify with the agent's enrolled key".into(),
            )
        })?;
    let skew_seconds = now_ms.div_euclid(1000).saturating_sub(auth.timestamp);
    if skew_seconds.unsigned_abs() > MAX_CLOCK_SKEW_SECS.unsigned_abs() {
        return Err(AuthError::ClockSkew { skew_seconds });
    }
    Ok(())
}

/// The SHA-256 under which a secret (enrollment token, API key) is stored and looked up.
pub fn secret_hash(secret: &str) -> Digest {
    Digest::of(&[secret.as_bytes()])
}

/// The stored hash of the API key in an `Authorization: Bearer <key>` header value.
pub fn bearer_key_hash(authorization: Option<&str>) -> Result<Digest, AuthError> {
    let value = authorization.ok_or(AuthError::Unauthorized)?;
    let (scheme, key) = value.split_once(' ').ok_or(AuthError::Unauthorized)?;
    let key = key.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() {
        return Err(AuthError::Unauthorized);
    }
    Ok(secret_hash(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tongbu_shared::KeyPair;

    const AGENT: &str = "430112-0000000a";
    const NOW_MS: i64 = 1_795_762_113_000;

    fn signed(key: &KeyPair, timestamp: i64, body: &[u8]) -> RequestAuth {
        let agent = AgentId::parse(AGENT).unwrap();
        RequestAuth::sign(
            key,
            &agent,
            "POST",
            "/api/v1/agents/430112-0000000a/batches",
            timestamp,
            "00ff00ff00ff00ff".into(),
            body,
        )
    }

    fn headers(auth: &RequestAuth) -> [String; 4] {
        auth.headers().map(|(_, v)| v)
    }

    fn as_headers(h: &[String; 4]) -> AuthHeaders<'_> {
        AuthHeaders {
            agent: Some(&h[0]),
            timestamp: Some(&h[1]),
            nonce: Some(&h[2]),
            signature: Some(&h[3]),
        }
    }

    fn check(auth: &RequestAuth, key: &PublicKey, body: &[u8]) -> Result<(), AuthError> {
        let h = headers(auth);
        let parsed = parse_request_auth(&as_headers(&h), AGENT)?;
        verify_request(
            &parsed,
            key,
            "POST",
            "/api/v1/agents/430112-0000000a/batches",
            body,
            NOW_MS,
        )
    }

    #[test]
    fn a_fresh_signed_request_passes() {
        let key = KeyPair::from_seed(&[1; 32]).unwrap();
        let auth = signed(&key, NOW_MS / 1000, b"{}");
        assert_eq!(check(&auth, &key.public_key(), b"{}"), Ok(()));
    }

    #[test]
    fn a_tampered_body_fails() {
        let key = KeyPair::from_seed(&[1; 32]).unwrap();
        let auth = signed(&key, NOW_MS / 1000, b"{}");
        assert!(matches!(
            check(&auth, &key.public_key(), b"{ }"),
            Err(AuthError::BadRequestSignature(_))
        ));
    }

    #[test]
    fn another_key_fails() {
        let key = KeyPair::from_seed(&[1; 32]).unwrap();
        let other = KeyPair::from_seed(&[2; 32]).unwrap();
        let auth = signed(&other, NOW_MS / 1000, b"{}");
        assert!(matches!(
            check(&auth, &key.public_key(), b"{}"),
            Err(AuthError::BadRequestSignature(_))
        ));
    }

    #[test]
    fn clock_skew_reports_hub_minus_agent() {
        let key = KeyPair::from_seed(&[1; 32]).unwrap();
        let behind = signed(&key, NOW_MS / 1000 - 301, b"{}");
        assert_eq!(
            check(&behind, &key.public_key(), b"{}"),
            Err(AuthError::ClockSkew { skew_seconds: 301 })
        );
        let ahead = signed(&key, NOW_MS / 1000 + 400, b"{}");
        assert_eq!(
            check(&ahead, &key.public_key(), b"{}"),
            Err(AuthError::ClockSkew { skew_seconds: -400 })
        );
        let edge = signed(&key, NOW_MS / 1000 - 300, b"{}");
        assert_eq!(check(&edge, &key.public_key(), b"{}"), Ok(()));
    }

    #[test]
    fn the_signing_agent_must_be_the_path_agent() {
        let key = KeyPair::from_seed(&[1; 32]).unwrap();
        let auth = signed(&key, NOW_MS / 1000, b"{}");
        let h = headers(&auth);
        assert!(matches!(
            parse_request_auth(&as_headers(&h), "430112-0000000b"),
            Err(AuthError::BadRequestSignature(_))
        ));
    }

    #[test]
    fn missing_or_garbled_headers_fail() {
        let key = KeyPair::from_seed(&[1; 32]).unwrap();
        let auth = signed(&key, NOW_MS / 1000, b"{}");
        let h = headers(&auth);
        let mut partial = as_headers(&h);
        partial.nonce = None;
        assert!(parse_request_auth(&partial, AGENT).is_err());
        let mut garbled = as_headers(&h);
        garbled.timestamp = Some("soon");
        assert!(parse_request_auth(&garbled, AGENT).is_err());
        for nonce in ["00ff", "not hex, not hex!", &"a".repeat(65)] {
            let mut garbled = as_headers(&h);
            garbled.nonce = Some(nonce);
            assert!(parse_request_auth(&garbled, AGENT).is_err(), "{nonce}");
        }
        let mut garbled = as_headers(&h);
        garbled.signature = Some("AAAA");
        assert!(parse_request_auth(&garbled, AGENT).is_err());
        assert!(parse_request_auth(&AuthHeaders::default(), AGENT).is_err());
    }

    #[test]
    fn bearer_keys() {
        assert_eq!(
            bearer_key_hash(Some("Bearer tbk_x")),
            Ok(secret_hash("tbk_x"))
        );
        assert_eq!(
            bearer_key_hash(Some("bearer tbk_x")),
            Ok(secret_hash("tbk_x"))
        );
        for bad in [None, Some("tbk_x"), Some("Basic tbk_x"), Some("Bearer  ")] {
            assert_eq!(
                bearer_key_hash(bad),
                Err(AuthError::Unauthorized),
                "{bad:?}"
            );
        }
    }
}
