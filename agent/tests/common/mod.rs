//! A tiny fake hub for the agent's tests (axum on 127.0.0.1:0) speaking the v1 enroll, batches
//! and watermark calls with the shared types and a fixed hub key. It checks request signatures
//! and chain continuity like the real hub, and can be told to lose records, forge receipts or
//! quarantine the agent.

#![allow(clippy::unwrap_used, dead_code)]

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tongbu_shared::KeyPair;
use tongbu_shared::crypto::{Digest, Domain, PublicKey, Signature};
use tongbu_shared::envelope::{Envelope, verify_run};
use tongbu_shared::ids::{AgentId, CountyCode};
use tongbu_shared::protocol::{
    AgentState, ApiError, BatchRequest, EnrollRequest, EnrollResponse, ErrorCode, Heartbeat,
    Outcome, PROTOCOL_VERSION, Receipt, RecordOutcome, Watermark,
};
use tongbu_shared::signed::{
    HEADER_AGENT, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, RequestAuth, Signed,
    enroll_proof_bytes,
};

pub fn hub_key() -> KeyPair {
    KeyPair::from_seed(&[9; 32]).unwrap()
}

/// The id the fake hub assigns at enrollment (and the one pre-registered agents use).
pub fn agent_id() -> AgentId {
    AgentId::parse("430112-0000abcd").unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptMode {
    Honest,
    /// Signed by a key other than the pinned one.
    Forged,
    /// The receipt's JSON without a signature.
    Unsigned,
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
        }));
        let app = Router::new()
            .route("/api/v1/enroll", post(enroll))
            .route("/api/v1/agents/{agent}/watermark", get(watermark))
            .route("/api/v1/agents/{agent}/batches", post(batches))
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
        return api_error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::BadRequestSignature,
            None,
        );
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
        return api_error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::BadRequestSignature,
            None,
        );
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
        outcomes.push(RecordOutcome {
            seq: e.seq,
            outcome: Outcome::Accepted,
            codes: if e.seq % 2 == 0 {
                vec!["PAID_WITHOUT_EVALUATION".into()]
            } else {
                Vec::new()
            },
            duplicate,
            detail: None,
            policy_version: None,
        });
    }
    let receipt = Receipt {
        agent_id: agent_id(),
        acked_seq: hub.chain.len() as u64,
        head_hash: head(&hub.chain),
        outcomes,
        hub_time_ms: 0,
        updates: Vec::new(),
        outcome_cursor: 0,
        policy_version: 0,
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
