//! A tiny fake hub for the agent's tests (axum on 127.0.0.1:0) speaking the v1 enroll, batches,
//! watermark and policy calls with the shared types and a fixed hub key. It checks request
//! signatures and chain continuity like the real hub, and can be told to lose records, forge
//! receipts, quarantine the agent, hold or reject records and change their outcomes later, and
//! serve a policy honestly (ETag, `If-None-Match`, 304) or not (rolled back, conflicting,
//! forged), find the agent's clock off, and take (or refuse, or lose the reply to) a key
//! rotation.

#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tongbu_agent::clock::SystemClock;
use tongbu_agent::outbox::{Enrollment, NewRecord, Outbox, SharedOutbox};
use tongbu_agent::sync::Syncer;
use tongbu_shared::KeyPair;
use tongbu_shared::crypto::{Digest, Domain, PublicKey, Signature};
use tongbu_shared::envelope::{Envelope, verify_run};
use tongbu_shared::ids::{AgentId, Code, CountyCode};
use tongbu_shared::policy::{Entry, PolicyBundle, default_policy};
use tongbu_shared::protocol::{
    AgentState, ApiError, BatchRequest, EnrollRequest, EnrollResponse, ErrorCode, Heartbeat,
    KeyRotated, Outcome, POLICY_PATH, PROTOCOL_VERSION, Receipt, RecordOutcome, RotateKeyRequest,
    Watermark,
};
use tongbu_shared::record::Kind;
use tongbu_shared::signed::{
    HEADER_AGENT, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, RequestAuth, Signed,
    enroll_proof_bytes, rotate_proof_bytes,
};

pub fn hub_key() -> KeyPair {
    KeyPair::from_seed(&[9; 32]).unwrap()
}

/// The id the fake hub assigns at enrollment (and the one pre-registered agents use).
pub fn agent_id() -> AgentId {
    AgentId::parse("430112-0000abcd").unwrap()
}

/// The agent's own key, in tests that do not make one on disk.
pub fn agent_key() -> KeyPair {
    KeyPair::from_seed(&[7; 32]).unwrap()
}

/// The enrollment of [`agent_id`] with the fake hub's key, pointing at `hub_url`.
pub fn enrollment(hub_url: &str) -> Enrollment {
    Enrollment {
        agent_id: agent_id(),
        county: CountyCode::parse("430112").unwrap(),
        county_name: "望城区".into(),
        hub_url: tongbu_agent::tls::HubUrl::plain(hub_url).unwrap(),
        hub_public_key: hub_key().public_key(),
        enrolled_at: "2026-11-27T06:48:33Z".into(),
    }
}

/// A well-formed payment record, numbered `n`.
pub fn payment(n: u64) -> Vec<u8> {
    format!(
        r#"{{"kind":"payment","id":"P-{n}","rev":1,"county":"430112","contract_id":"C-1","amount_fen":100,"paid_on":"2024-04-01","voucher_no":"V{n}"}}"#
    )
    .into_bytes()
}

/// Appends payments `from..=to`, signed with `key`, to `outbox`.
pub fn append_payments(outbox: &mut Outbox, key: &KeyPair, from: u64, to: u64) {
    let id = Code::parse("P-1").unwrap();
    let bodies: Vec<Vec<u8>> = (from..=to).map(payment).collect();
    let records: Vec<NewRecord<'_>> = bodies
        .iter()
        .map(|b| NewRecord {
            body: b,
            kind: Kind::Payment,
            id: &id,
            rev: 1,
        })
        .collect();
    outbox.append(key, &agent_id(), &records, 0).unwrap();
}

/// An enrolled outbox with `records` payments, a fake hub that knows the agent, and a syncer.
pub struct Harness {
    pub hub: FakeHub,
    pub syncer: Syncer,
    /// A second connection, for looking at (and tampering with) the outbox.
    pub outbox: Outbox,
    pub _dir: tempfile::TempDir,
}

pub async fn harness(records: u64, batch_size: usize) -> Harness {
    let hub = FakeHub::start(Some(agent_key().public_key()), &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let mut outbox = Outbox::open(&path).unwrap();
    let enrolled = enrollment(&hub.url);
    outbox.save_enrollment(&enrolled).unwrap();
    if records > 0 {
        append_payments(&mut outbox, &agent_key(), 1, records);
    }
    let syncer = Syncer::new(
        SharedOutbox::new(Outbox::open(&path).unwrap()),
        &enrolled,
        Arc::new(agent_key()),
        Arc::new(SystemClock),
        batch_size,
    )
    .unwrap();
    Harness {
        hub,
        syncer,
        outbox,
        _dir: dir,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptMode {
    Honest,
    /// Signed by a key other than the pinned one.
    Forged,
    /// The receipt's JSON without a signature.
    Unsigned,
}

/// How the fake hub serves its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyMode {
    /// The current bundle, signed by the hub key; `If-None-Match` naming it gets a 304.
    Honest,
    /// The version before the current one (an old bundle replayed).
    Rollback,
    /// The current version with other content, whatever `If-None-Match` says.
    Conflict,
    /// The next version, signed by another key.
    Forged,
}

/// The policy bundle the fake hub starts with: the default policy as version `version`.
pub fn bundle(version: u64) -> PolicyBundle {
    PolicyBundle::new(version, 1_700_000_000_000, default_policy())
}

/// One policy request the fake hub answered: the `If-None-Match` it carried and the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRequest {
    pub if_none_match: Option<String>,
    pub status: u16,
}

#[derive(Debug)]
pub struct Hub {
    /// The enrolled agent's key (one agent per fake hub).
    pub agent_key: Option<PublicKey>,
    /// Unused one-time tokens.
    pub tokens: Vec<String>,
    pub chain: Vec<Envelope>,
    pub state: AgentState,
    pub mode: ReceiptMode,
    /// Envelope count and heartbeat of every batch received.
    pub batches: Vec<(usize, Heartbeat)>,
    /// The current policy (none: the hub publishes none, 404).
    pub policy: Option<PolicyBundle>,
    pub policy_mode: PolicyMode,
    pub policy_requests: Vec<PolicyRequest>,
    /// Outcomes (and codes) to give these seqs instead of "accepted".
    pub verdicts: HashMap<u64, (Outcome, Vec<String>)>,
    /// Outcome changes, in order: the change at index i has cursor i + 1.
    pub changes: Vec<RecordOutcome>,
    /// When set, every signed call is refused as `clock_skew` with this `skew_seconds`
    /// (hub time minus the request's timestamp).
    pub skew_seconds: Option<i64>,
    /// How many enrollments the hub accepted.
    pub enrollments: usize,
    /// Keys the agent rotated away from, with the last seq each signed.
    pub old_keys: Vec<(PublicKey, u64)>,
    pub rotate_mode: RotateMode,
}

/// How the fake hub answers a key rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateMode {
    Honest,
    /// Refuses it (`bad_key_rotation`).
    Refuse,
    /// Rotates, then answers 503 as if the reply was lost.
    LoseReply,
    /// Answers 503 without rotating.
    Unavailable,
}

impl Hub {
    /// The bundle the hub serves now, and whether it is signed by the hub key.
    fn served_policy(&self) -> Option<(PolicyBundle, bool)> {
        let current = self.policy.clone()?;
        Some(match self.policy_mode {
            PolicyMode::Honest => (current, true),
            PolicyMode::Rollback => (
                PolicyBundle {
                    version: current.version - 1,
                    ..current
                },
                true,
            ),
            PolicyMode::Conflict => {
                let mut other = current;
                other.negative_list.push(Entry {
                    code: Code::parse("A0501").unwrap(),
                    name: "居家养老服务 (moved to the negative list)".into(),
                });
                other.catalogue.retain(|e| e.code.as_str() != "A0501");
                (other, true)
            }
            PolicyMode::Forged => (
                PolicyBundle {
                    version: current.version + 1,
                    ..current
                },
                false,
            ),
        })
    }

    /// Records a later change of a record's outcome (sent to the agent in its next receipt).
    pub fn change_outcome(&mut self, seq: u64, outcome: Outcome, codes: &[&str]) {
        self.changes.push(RecordOutcome {
            seq,
            outcome,
            codes: codes.iter().map(|c| (*c).to_owned()).collect(),
            duplicate: false,
            detail: codes
                .first()
                .map(|c| format!("{c}: changed by the fake hub")),
            policy_version: None,
        });
    }
}

#[derive(Debug, Clone)]
pub struct FakeHub {
    pub url: String,
    hub: Arc<Mutex<Hub>>,
}

impl FakeHub {
    /// Starts a hub that knows `agent_key` as agent [`agent_id`] (or no agent yet) and accepts
    /// the one-time `tokens` for county 430112.
    pub async fn start(agent_key: Option<PublicKey>, tokens: &[&str]) -> FakeHub {
        let hub = Arc::new(Mutex::new(Hub {
            agent_key,
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            chain: Vec::new(),
            state: AgentState::Active,
            mode: ReceiptMode::Honest,
            batches: Vec::new(),
            policy: Some(bundle(1)),
            policy_mode: PolicyMode::Honest,
            policy_requests: Vec::new(),
            verdicts: HashMap::new(),
            changes: Vec::new(),
            skew_seconds: None,
            enrollments: 0,
            old_keys: Vec::new(),
            rotate_mode: RotateMode::Honest,
        }));
        let app = Router::new()
            .route("/api/v1/enroll", post(enroll))
            .route(POLICY_PATH, get(policy))
            .route("/api/v1/agents/{agent}/watermark", get(watermark))
            .route("/api/v1/agents/{agent}/batches", post(batches))
            .route("/api/v1/agents/{agent}/key", post(rotate_key))
            .with_state(Arc::clone(&hub));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeHub {
            url: format!("http://{addr}"),
            hub,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap()
    }

    pub fn chain(&self) -> Vec<Envelope> {
        self.lock().chain.clone()
    }
}

type Shared = Arc<Mutex<Hub>>;

/// The refusal of a request the fake hub did not authenticate: `clock_skew` when it is told
/// to find the agent's clock off, else `bad_request_signature`.
fn unauthenticated(hub: &Hub) -> Response {
    match hub.skew_seconds {
        Some(skew) => {
            let mut e = ApiError::new(
                ErrorCode::ClockSkew,
                format!("the request's timestamp is {skew} s away from the hub's clock"),
            );
            e.error.skew_seconds = Some(skew);
            (StatusCode::UNAUTHORIZED, Json(e)).into_response()
        }
        None => api_error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::BadRequestSignature,
            None,
        ),
    }
}

fn api_error(status: StatusCode, code: ErrorCode, acked: Option<u64>) -> Response {
    let mut e = ApiError::new(code, format!("fake hub says {code}"));
    e.error.acked_seq = acked;
    (status, Json(e)).into_response()
}

fn head(chain: &[Envelope]) -> Digest {
    chain.last().map_or(Digest::GENESIS, Envelope::hash)
}

async fn enroll(State(hub): State<Shared>, Json(req): Json<EnrollRequest>) -> Response {
    let mut hub = hub.lock().unwrap();
    let Some(i) = hub.tokens.iter().position(|t| *t == req.token) else {
        return api_error(StatusCode::FORBIDDEN, ErrorCode::TokenUsed, None);
    };
    let proof = enroll_proof_bytes(&req.token, &req.public_key);
    if req
        .public_key
        .verify(Domain::Enroll, &proof, &req.proof)
        .is_err()
    {
        return api_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequestSignature,
            None,
        );
    }
    hub.tokens.remove(i);
    hub.agent_key = Some(req.public_key);
    hub.enrollments += 1;
    Json(EnrollResponse {
        agent_id: agent_id(),
        county: CountyCode::parse("430112").unwrap(),
        county_name: "望城区".into(),
        hub_public_key: hub_key().public_key(),
        protocol: PROTOCOL_VERSION,
    })
    .into_response()
}

fn authenticated(
    hub: &Hub,
    agent: &str,
    headers: &HeaderMap,
    method: &str,
    uri: &Uri,
    body: &[u8],
) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let auth = (|| {
        Some(RequestAuth {
            agent: AgentId::parse(get(HEADER_AGENT)?).ok()?,
            timestamp: get(HEADER_TIMESTAMP)?.parse().ok()?,
            nonce: get(HEADER_NONCE)?.to_owned(),
            sig: Signature::from_base64(get(HEADER_SIGNATURE)?).ok()?,
        })
    })();
    let (Some(auth), Some(key)) = (auth, hub.agent_key) else {
        return false;
    };
    if hub.skew_seconds.is_some() {
        return false;
    }
    agent == agent_id().as_str()
        && auth.agent == agent_id()
        && auth.verify(&key, method, uri.path(), body).is_ok()
}

async fn watermark(
    State(hub): State<Shared>,
    Path(agent): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let hub = hub.lock().unwrap();
    if !authenticated(&hub, &agent, &headers, "GET", &uri, b"") {
        return unauthenticated(&hub);
    }
    let wm = Watermark {
        agent_id: agent_id(),
        acked_seq: hub.chain.len() as u64,
        head_hash: head(&hub.chain),
        state: hub.state,
        hub_time_ms: 0,
    };
    Json(Signed::sign(&hub_key(), &wm).unwrap()).into_response()
}

async fn batches(
    State(hub): State<Shared>,
    Path(agent): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let mut hub = hub.lock().unwrap();
    if !authenticated(&hub, &agent, &headers, "POST", &uri, &body) {
        return unauthenticated(&hub);
    }
    let Ok(req) = serde_json::from_slice::<BatchRequest>(&body) else {
        return api_error(StatusCode::BAD_REQUEST, ErrorCode::MalformedJson, None);
    };
    hub.batches
        .push((req.envelopes.len(), req.heartbeat.clone()));
    if hub.state != AgentState::Active {
        return api_error(StatusCode::FORBIDDEN, ErrorCode::AgentQuarantined, None);
    }
    let key = hub.agent_key.unwrap();
    let held = hub.chain.len() as u64;
    let mut outcomes = Vec::new();
    for e in &req.envelopes {
        let duplicate = e.seq <= held;
        if duplicate {
            if hub.chain[(e.seq - 1) as usize] != *e {
                hub.state = AgentState::Quarantined;
                return api_error(StatusCode::CONFLICT, ErrorCode::Equivocation, Some(held));
            }
        } else {
            let len = hub.chain.len() as u64;
            if e.seq != len + 1 {
                return api_error(StatusCode::CONFLICT, ErrorCode::ChainGap, Some(len));
            }
            let key = hub
                .old_keys
                .iter()
                .find(|(_, last)| e.seq <= *last)
                .map_or(key, |(k, _)| *k);
            match verify_run(
                &key,
                &agent_id(),
                len,
                head(&hub.chain),
                std::slice::from_ref(e),
            ) {
                Ok(_) => {}
                Err(tongbu_shared::envelope::ChainError::BadSignature { .. }) => {
                    return api_error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        ErrorCode::BadSignature,
                        Some(len),
                    );
                }
                Err(_) => {
                    return api_error(StatusCode::CONFLICT, ErrorCode::ChainBroken, Some(len));
                }
            }
            hub.chain.push(e.clone());
        }
        let (outcome, codes) = hub.verdicts.get(&e.seq).cloned().unwrap_or_else(|| {
            let codes = if e.seq % 2 == 0 {
                vec!["PAID_WITHOUT_EVALUATION".into()]
            } else {
                Vec::new()
            };
            (Outcome::Accepted, codes)
        });
        outcomes.push(RecordOutcome {
            seq: e.seq,
            outcome,
            detail: codes.first().map(|c| format!("{c}: said the fake hub")),
            codes,
            duplicate,
            policy_version: None,
        });
    }
    // Changes after the agent's cursor, at most a page of them.
    let from = usize::try_from(req.heartbeat.outcome_cursor).unwrap();
    let updates: Vec<RecordOutcome> = hub
        .changes
        .iter()
        .skip(from)
        .take(tongbu_shared::protocol::MAX_OUTCOME_UPDATES)
        .cloned()
        .collect();
    let receipt = Receipt {
        agent_id: agent_id(),
        acked_seq: hub.chain.len() as u64,
        head_hash: head(&hub.chain),
        outcomes,
        hub_time_ms: 0,
        outcome_cursor: (from + updates.len()) as u64,
        updates,
        policy_version: hub.served_policy().map_or(0, |(b, _)| b.version),
        log: None,
    };
    match hub.mode {
        ReceiptMode::Honest => Json(Signed::sign(&hub_key(), &receipt).unwrap()).into_response(),
        ReceiptMode::Forged => {
            let other = KeyPair::from_seed(&[66; 32]).unwrap();
            Json(Signed::sign(&other, &receipt).unwrap()).into_response()
        }
        ReceiptMode::Unsigned => Json(receipt).into_response(),
    }
}

async fn policy(State(hub): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    let mut hub = hub.lock().unwrap();
    if !authenticated(&hub, agent_id().as_str(), &headers, "GET", &uri, b"") {
        return unauthenticated(&hub);
    }
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let served = hub.served_policy();
    let (status, response) = match served {
        None => (
            StatusCode::NOT_FOUND,
            api_error(StatusCode::NOT_FOUND, ErrorCode::NotFound, None),
        ),
        Some((bundle, honest)) => {
            let etag = format!("\"{}\"", bundle.version);
            let etag_header = HeaderValue::from_str(&etag).unwrap();
            // A conflicting hub answers with its other content whatever the agent holds.
            let honors = hub.policy_mode != PolicyMode::Conflict;
            if honors && if_none_match.as_deref() == Some(etag.as_str()) {
                let mut r = StatusCode::NOT_MODIFIED.into_response();
                r.headers_mut().insert(header::ETAG, etag_header);
                (StatusCode::NOT_MODIFIED, r)
            } else {
                let key = if honest {
                    hub_key()
                } else {
                    KeyPair::from_seed(&[66; 32]).unwrap()
                };
                let mut r = Json(Signed::sign(&key, &bundle).unwrap()).into_response();
                r.headers_mut().insert(header::ETAG, etag_header);
                (StatusCode::OK, r)
            }
        }
    };
    hub.policy_requests.push(PolicyRequest {
        if_none_match,
        status: status.as_u16(),
    });
    response
}

async fn rotate_key(
    State(hub): State<Shared>,
    Path(agent): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let mut hub = hub.lock().unwrap();
    if !authenticated(&hub, &agent, &headers, "POST", &uri, &body) {
        return unauthenticated(&hub);
    }
    let Ok(req) = serde_json::from_slice::<RotateKeyRequest>(&body) else {
        return api_error(StatusCode::BAD_REQUEST, ErrorCode::MalformedJson, None);
    };
    let old = hub.agent_key.unwrap();
    let proof = rotate_proof_bytes(&agent_id(), &old, &req.new_public_key, req.last_old_seq);
    let refused = hub.rotate_mode == RotateMode::Refuse
        || req
            .new_public_key
            .verify(Domain::Rotate, &proof, &req.proof)
            .is_err();
    if refused {
        return api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::BadKeyRotation,
            None,
        );
    }
    if hub.rotate_mode == RotateMode::Unavailable {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            None,
        );
    }
    hub.old_keys.push((old, req.last_old_seq));
    hub.agent_key = Some(req.new_public_key);
    if hub.rotate_mode == RotateMode::LoseReply {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            None,
        );
    }
    let confirmed = KeyRotated {
        agent_id: agent_id(),
        public_key: req.new_public_key,
        last_old_seq: req.last_old_seq,
        hub_time_ms: 0,
    };
    Json(Signed::sign(&hub_key(), &confirmed).unwrap()).into_response()
}
