//! Wire types of the agent–hub protocol, v1 (all under `/api/v1`). Field names here are part
//! of the interface contract in DESIGN.md; add fields only as optional ones.
//!
//! | call | request | reply |
//! |---|---|---|
//! | `POST /api/v1/enroll` | [`EnrollRequest`] | [`EnrollResponse`] |
//! | `POST /api/v1/agents/{agent}/batches` (signed request) | [`BatchRequest`] | `Signed<`[`Receipt`]`>` |
//! | `GET /api/v1/agents/{agent}/watermark` (signed request) | – | `Signed<`[`Watermark`]`>` |
//! | `GET /api/v1/policy` (signed request, `If-None-Match`) | – | `Signed<PolicyBundle>` or 304 |
//! | `POST /api/v1/agents/{agent}/key` (signed by the old key) | [`RotateKeyRequest`] | `Signed<`[`KeyRotated`]`>` |
//! | `GET /api/v1/agents` (bearer API key) | – | [`AgentsResponse`] |
//!
//! Every error reply is an [`ApiError`] with a stable [`ErrorCode`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::checkpoint::LogProof;
use crate::crypto::{Digest, Domain, PublicKey, Signature};
use crate::envelope::Envelope;
use crate::ids::{AgentId, CountyCode};
use crate::signed::SignedPayload;

pub const PROTOCOL_VERSION: u32 = 1;
/// Most envelopes in one batch.
pub const MAX_BATCH_ENVELOPES: usize = 1000;
/// Largest request body the hub reads, in bytes.
pub const MAX_REQUEST_BYTES: usize = 24 * 1024 * 1024;
/// How far an agent's clock may be from the hub's before requests are refused, in seconds.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

pub const ENROLL_PATH: &str = "/api/v1/enroll";
/// `GET` (signed agent request): the current `Signed<PolicyBundle>`. Send
/// `If-None-Match: "<version>"` to get `304 Not Modified` when nothing changed; the reply's
/// `ETag` is `"<version>"`.
pub const POLICY_PATH: &str = "/api/v1/policy";
/// Most outcome updates one receipt carries.
pub const MAX_OUTCOME_UPDATES: usize = 1000;

pub fn batches_path(agent: &AgentId) -> String {
    format!("/api/v1/agents/{agent}/batches")
}

pub fn watermark_path(agent: &AgentId) -> String {
    format!("/api/v1/agents/{agent}/watermark")
}

/// `POST` (signed agent request, by the key being replaced): switch to a new key.
pub fn key_path(agent: &AgentId) -> String {
    format!("/api/v1/agents/{agent}/key")
}

/// An agent's request to replace its key. The request is signed by the old key; `proof` is the
/// new key's signature over `Domain::Rotate` + `rotate_proof_bytes(agent, old, new,
/// last_old_seq)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    pub new_public_key: PublicKey,
    /// The last seq the old key signed (the agent's chain head): envelopes up to it verify
    /// with the old key, later ones with the new key.
    pub last_old_seq: u64,
    pub proof: Signature,
}

/// The hub's signed confirmation that an agent's key was replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRotated {
    pub agent_id: AgentId,
    /// The key the hub now accepts (and the only one it accepts requests from).
    pub public_key: PublicKey,
    /// The last seq signed by the old key.
    pub last_old_seq: u64,
    pub hub_time_ms: i64,
}

impl SignedPayload for KeyRotated {
    const DOMAIN: Domain = Domain::KeyRotated;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time enrollment token an admin issued for the county.
    pub token: String,
    pub public_key: PublicKey,
    /// Signature by the new key over `Domain::Enroll` + `enroll_proof_bytes(token, key)`.
    pub proof: Signature,
    pub agent_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub agent_id: AgentId,
    pub county: CountyCode,
    pub county_name: String,
    /// The hub's signing key; the agent pins it and trusts no other from then on.
    pub hub_public_key: PublicKey,
    pub protocol: u32,
}

/// What an agent reports about itself with every batch (also an empty one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub head_seq: u64,
    pub queue_depth: u64,
    pub agent_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The last outcome change (`Receipt::outcome_cursor`) this agent has recorded; the hub
    /// sends the changes after it.
    #[serde(default)]
    pub outcome_cursor: u64,
    /// The size of the last hub checkpoint this agent verified: the hub proves its log
    /// extends that tree (0: none yet).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub log_size: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub heartbeat: Heartbeat,
    /// Consecutive envelopes of this agent, in seq order (may be empty: a heartbeat).
    pub envelopes: Vec<Envelope>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Accepted,
    Held,
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Held => "held",
            Outcome::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "accepted" => Some(Outcome::Accepted),
            "held" => Some(Outcome::Held),
            "rejected" => Some(Outcome::Rejected),
            _ => None,
        }
    }
}

/// The hub's verdict on one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordOutcome {
    pub seq: u64,
    pub outcome: Outcome,
    /// Rule codes that apply (empty when clean).
    pub codes: Vec<String>,
    /// True when the hub already held this exact envelope (a resend).
    pub duplicate: bool,
    /// The findings' sentences, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The policy version the record was judged by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<u64>,
}

/// The hub's signed acknowledgement of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub agent_id: AgentId,
    /// Highest seq the hub holds durably for this agent (all below it too).
    pub acked_seq: u64,
    /// Hash of the envelope at `acked_seq` (genesis when 0).
    pub head_hash: Digest,
    pub outcomes: Vec<RecordOutcome>,
    pub hub_time_ms: i64,
    /// Outcomes of this agent's earlier records that changed since `Heartbeat::outcome_cursor`
    /// (a held record accepted or rejected), oldest first.
    #[serde(default)]
    pub updates: Vec<RecordOutcome>,
    /// The position after `updates`: the agent sends it back once it has recorded them.
    #[serde(default)]
    pub outcome_cursor: u64,
    /// The hub's current policy version: an agent holding an older one pulls the new bundle.
    #[serde(default)]
    pub policy_version: u64,
    /// The hub's log after this batch: a signed checkpoint, the proof that the agent's head
    /// is in it and that it extends the tree of `Heartbeat::log_size` leaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogProof>,
}

impl SignedPayload for Receipt {
    const DOMAIN: Domain = Domain::Receipt;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Active,
    Quarantined,
    Revoked,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Active => "active",
            AgentState::Quarantined => "quarantined",
            AgentState::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<AgentState> {
        match s {
            "active" => Some(AgentState::Active),
            "quarantined" => Some(AgentState::Quarantined),
            "revoked" => Some(AgentState::Revoked),
            _ => None,
        }
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the hub holds of one agent's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    pub agent_id: AgentId,
    pub acked_seq: u64,
    pub head_hash: Digest,
    pub state: AgentState,
    pub hub_time_ms: i64,
}

impl SignedPayload for Watermark {
    const DOMAIN: Domain = Domain::Watermark;
}

/// One row of `GET /api/v1/agents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRow {
    pub agent_id: AgentId,
    pub county: CountyCode,
    pub acked_seq: u64,
    /// The head seq the agent last reported.
    pub head_seq: u64,
    /// `head_seq - acked_seq` (0 when the agent reported nothing newer).
    pub lag: u64,
    /// RFC 3339 time of the agent's last authenticated request, if any.
    pub last_seen: Option<String>,
    pub state: AgentState,
    #[serde(default)]
    pub queue_depth: u64,
    #[serde(default)]
    pub agent_version: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentsResponse {
    pub agents: Vec<AgentRow>,
}

/// Stable error codes of the hub API. Agents decide what to do next from the code alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not JSON of the expected shape.
    MalformedJson,
    /// The body exceeds `MAX_REQUEST_BYTES`.
    BodyTooLarge,
    /// More than `MAX_BATCH_ENVELOPES` envelopes.
    BatchTooLarge,
    /// A query or path parameter is invalid.
    BadRequest,
    /// Missing or invalid API key.
    Unauthorized,
    /// The API key's role may not do this.
    Forbidden,
    /// No agent with this id is enrolled.
    UnknownAgent,
    /// The request signature headers are missing or do not verify.
    BadRequestSignature,
    /// The request timestamp is too far from the hub's clock (see `skew_seconds`).
    ClockSkew,
    /// An envelope's signature does not verify (see `seq`).
    BadSignature,
    /// An envelope names another agent than the one sending it.
    WrongAgent,
    /// The batch's envelopes are not consecutive.
    NotConsecutive,
    /// The batch starts past the hub's watermark + 1 (see `acked_seq`): resend from there.
    ChainGap,
    /// The batch's `prev` does not continue the hub's chain head.
    ChainBroken,
    /// A different, validly signed envelope at a seq the hub already holds: agent quarantined.
    Equivocation,
    AgentQuarantined,
    AgentRevoked,
    TokenUnknown,
    TokenUsed,
    TokenExpired,
    /// This public key is already enrolled as another agent.
    KeyInUse,
    UnknownCounty,
    NotFound,
    /// The hub cannot write (disk full, read-only): retry later.
    Unavailable,
    Internal,
    /// The hub already received a request with this agent and nonce: a replay, refused.
    ReplayedRequest,
    /// The hub is receiving more signed requests than it can remember, most of them from this
    /// agent: retry later (with a fresh request).
    RateLimited,
    /// A key rotation was refused: the proof by the new key does not verify, or the new key is
    /// the old one or belongs to another agent.
    BadKeyRotation,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::BatchTooLarge => "batch_too_large",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::UnknownAgent => "unknown_agent",
            ErrorCode::BadRequestSignature => "bad_request_signature",
            ErrorCode::ClockSkew => "clock_skew",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::WrongAgent => "wrong_agent",
            ErrorCode::NotConsecutive => "not_consecutive",
            ErrorCode::ChainGap => "chain_gap",
            ErrorCode::ChainBroken => "chain_broken",
            ErrorCode::Equivocation => "equivocation",
            ErrorCode::AgentQuarantined => "agent_quarantined",
            ErrorCode::AgentRevoked => "agent_revoked",
            ErrorCode::TokenUnknown => "token_unknown",
            ErrorCode::TokenUsed => "token_used",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::KeyInUse => "key_in_use",
            ErrorCode::UnknownCounty => "unknown_county",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::ReplayedRequest => "replayed_request",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::BadKeyRotation => "bad_key_rotation",
        }
    }

    /// Whether the same request may succeed later without anyone intervening.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable
                | ErrorCode::Internal
                | ErrorCode::ClockSkew
                | ErrorCode::RateLimited
        )
    }

    /// Whether the agent should fetch the watermark and resume from it.
    pub fn needs_resync(self) -> bool {
        matches!(
            self,
            ErrorCode::ChainGap | ErrorCode::ChainBroken | ErrorCode::NotConsecutive
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error reply: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: ApiErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// The hub's watermark, where it helps the agent resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_seq: Option<u64>,
    /// The envelope at fault, where one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Hub time minus the request's timestamp, in seconds (for `clock_skew`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skew_seconds: Option<i64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            error: ApiErrorDetail {
                code,
                message: message.into(),
                acked_seq: None,
                seq: None,
                skew_seconds: None,
            },
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error.code, self.error.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_serialize_as_their_names() {
        for code in [
            ErrorCode::ChainGap,
            ErrorCode::Equivocation,
            ErrorCode::TokenUsed,
            ErrorCode::BadRequestSignature,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        let e = ApiError::new(ErrorCode::ClockSkew, "x");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"error":{"code":"clock_skew","message":"x"}})
        );
    }
}
