//! HTTP-level tests: the real router over a temporary data directory and a manual clock,
//! called in process with `tower::ServiceExt::oneshot`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::*;
use crate::clock::{Clock as _, ManualClock};
use crate::store::Role;
use tongbu_shared::crypto::Domain;
use tongbu_shared::signed::{RequestAuth, enroll_proof_bytes};
use tongbu_shared::{CountyCode, Envelope, KeyPair};

const NOW_MS: i64 = 1_795_762_113_000;

struct TestHub {
    _dir: tempfile::TempDir,
    hub: Hub,
    clock: Arc<ManualClock>,
    api_key: String,
}

async fn test_hub() -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW_MS));
    let hub = Hub::open(dir.path(), clock.clone()).unwrap();
    hub.add_county(county(), "望城区".into()).await.unwrap();
    let api_key = hub.create_api_key(Role::Operator).await.unwrap();
    TestHub {
        _dir: dir,
        hub,
        clock,
        api_key: api_key.expose().to_owned(),
    }
}

fn county() -> CountyCode {
    CountyCode::parse("430112").unwrap()
}

async fn send_raw(hub: &Hub, req: Request<Body>) -> (StatusCode, Bytes) {
    let resp = app(hub.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// Sends `req`; the reply as JSON (or as a JSON string when it is not JSON).
async fn send(hub: &Hub, req: Request<Body>) -> (StatusCode, Value) {
    let (status, bytes) = send_raw(hub, req).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// Sends a request that must succeed with a document signed by the hub; returns its payload.
async fn send_signed<T: tongbu_shared::signed::SignedPayload>(hub: &Hub, req: Request<Body>) -> T {
    let (status, bytes) = send_raw(hub, req).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let signed: Signed<T> = serde_json::from_slice(&bytes).unwrap();
    signed.verify(&hub.public_key()).unwrap()
}

fn post_json(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

fn get_with_key(uri: &str, key: &str) -> Request<Body> {
    Request::get(uri)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap()
}

/// A fresh nonce for every request (a repeated one is a replay).
fn fresh_nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:032x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn signed(
    key: &KeyPair,
    agent: &AgentId,
    method: &str,
    uri: &str,
    body: Vec<u8>,
    timestamp: i64,
) -> Request<Body> {
    signed_with_nonce(key, agent, method, uri, body, timestamp, &fresh_nonce())
}

fn signed_with_nonce(
    key: &KeyPair,
    agent: &AgentId,
    method: &str,
    uri: &str,
    body: Vec<u8>,
    timestamp: i64,
    nonce: &str,
) -> Request<Body> {
    let auth = RequestAuth::sign(key, agent, method, uri, timestamp, nonce.into(), &body);
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in auth.headers() {
        req = req.header(name, value);
    }
    req.body(Body::from(body)).unwrap()
}

/// Enrolls an agent over HTTP; returns its id.
async fn enroll_agent(t: &TestHub, key: &KeyPair) -> AgentId {
    let token = t.hub.issue_token(county(), 72).await.unwrap();
    let token = token.token.expose().to_owned();
    let proof = key.sign(
        Domain::Enroll,
        &enroll_proof_bytes(&token, &key.public_key()),
    );
    let req = EnrollRequest {
        token,
        public_key: key.public_key(),
        proof,
        agent_version: "0.1.0".into(),
        hostname: Some("finance-01".into()),
    };
    let (status, body) = send(
        &t.hub,
        post_json(ENROLL_PATH, serde_json::to_vec(&req).unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let resp: EnrollResponse = serde_json::from_value(body).unwrap();
    assert_eq!(resp.hub_public_key, t.hub.public_key());
    assert_eq!(resp.county_name, "望城区");
    resp.agent_id
}

fn chain(key: &KeyPair, agent: &AgentId, from: u64, prev: Digest, n: u64) -> Vec<Envelope> {
    let mut prev = prev;
    (from..from + n)
        .map(|seq| {
            let body = format!(
                r#"{{"kind":"budget_line","id":"BL-{seq}","rev":1,"county":"430112","department":"101001","fiscal_year":2024,"catalogue_code":"A0501","amount_fen":{},"stage":"approved","approved_on":"2024-01-15"}}"#,
                1000 * seq
            );
            let e = Envelope::sign(key, agent.clone(), seq, prev, body.into_bytes());
            prev = e.hash();
            e
        })
        .collect()
}

fn batch_body(envelopes: &[Envelope], head_seq: u64) -> Vec<u8> {
    serde_json::to_vec(&BatchRequest {
        heartbeat: tongbu_shared::protocol::Heartbeat {
            head_seq,
            queue_depth: 2,
            agent_version: "0.1.0".into(),
            last_error: None,
            outcome_cursor: 0,
            log_size: 0,
        },
        envelopes: envelopes.to_vec(),
    })
    .unwrap()
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn an_oversize_body_gets_a_json_413() {
    let t = test_hub().await;
    let big = vec![b' '; MAX_REQUEST_BYTES + 1];
    let (status, body) = send(&t.hub, post_json(ENROLL_PATH, big.clone())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "body_too_large");
    let declared = Request::post(ENROLL_PATH)
        .header("content-length", (MAX_REQUEST_BYTES + 1).to_string())
        .body(Body::from(big))
        .unwrap();
    let (status, body) = send(&t.hub, declared).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "body_too_large");
}

#[tokio::test]
async fn malformed_json_gets_a_400_with_a_message() {
    let t = test_hub().await;
    let (status, body) = send(&t.hub, post_json(ENROLL_PATH, "{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "malformed_json");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    let (status, body) = send(&t.hub, post_json(ENROLL_PATH, r#"{"token":"x"}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "malformed_json");
}

#[tokio::test]
async fn the_agents_list_needs_an_api_key() {
    let t = test_hub().await;
    let no_key = Request::get("/api/v1/agents").body(Body::empty()).unwrap();
    let (status, body) = send(&t.hub, no_key).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "unauthorized");
    let (status, body) = send(&t.hub, get_with_key("/api/v1/agents", "tbk_wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "unauthorized");
    let (status, body) = send(&t.hub, get_with_key("/api/v1/agents", &t.api_key)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"agents": []}));
}

#[tokio::test]
async fn enroll_sync_and_read_back() {
    let t = test_hub().await;
    let key = KeyPair::from_seed(&[11; 32]).unwrap();
    let agent = enroll_agent(&t, &key).await;
    let uri = batches_uri(&agent);
    let c = chain(&key, &agent, 1, Digest::GENESIS, 3);
    let receipt: Receipt = send_signed(
        &t.hub,
        signed(&key, &agent, "POST", &uri, batch_body(&c, 5), NOW_MS / 1000),
    )
    .await;
    assert_eq!(receipt.acked_seq, 3);
    assert_eq!(receipt.head_hash, c[2].hash());
    assert_eq!(receipt.outcomes.len(), 3);
    assert_eq!(receipt.hub_time_ms, NOW_MS);

    // Watermark.
    let wm_uri = format!("/api/v1/agents/{agent}/watermark");
    let wm: Watermark = send_signed(
        &t.hub,
        signed(&key, &agent, "GET", &wm_uri, Vec::new(), NOW_MS / 1000),
    )
    .await;
    assert_eq!((wm.acked_seq, wm.head_hash), (3, c[2].hash()));

    // The agents list shows the lag from the heartbeat.
    t.clock.advance_ms(1000);
    let (status, body) = send(&t.hub, get_with_key("/api/v1/agents", &t.api_key)).await;
    assert_eq!(status, StatusCode::OK);
    let row = &body["agents"][0];
    assert_eq!(row["agent_id"], agent.as_str());
    assert_eq!(row["county"], "430112");
    assert_eq!(row["acked_seq"], 3);
    assert_eq!(row["head_seq"], 5);
    assert_eq!(row["lag"], 2);
    assert_eq!(row["state"], "active");
    assert_eq!(row["last_seen"], "2026-11-27T06:48:33Z");

    // A record, with its body exactly as signed.
    let (status, body) = send(
        &t.hub,
        get_with_key(&format!("/api/v1/records/{agent}/2"), &t.api_key),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["seq"], 2);
    assert_eq!(body["outcome"], "accepted");
    assert_eq!(body["codes"], json!([]));
    assert_eq!(body["hash"], c[1].hash().to_hex());
    assert_eq!(body["prev"], c[0].hash().to_hex());
    assert_eq!(body["sig"], c[1].sig.to_base64());
    assert_eq!(body["received_at"], "2026-11-27T06:48:33Z");
    let expected_body: Value = serde_json::from_slice(&c[1].body).unwrap();
    assert_eq!(body["body"], expected_body);
    let (status, body) = send(
        &t.hub,
        get_with_key(&format!("/api/v1/records/{agent}/9"), &t.api_key),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
}

fn batches_uri(agent: &AgentId) -> String {
    tongbu_shared::protocol::batches_path(agent)
}

#[tokio::test]
async fn request_signatures_are_enforced() {
    let t = test_hub().await;
    let key = KeyPair::from_seed(&[12; 32]).unwrap();
    let agent = enroll_agent(&t, &key).await;
    let uri = batches_uri(&agent);
    let body = batch_body(&[], 0);

    // Clock skew.
    let (status, resp) = send(
        &t.hub,
        signed(
            &key,
            &agent,
            "POST",
            &uri,
            body.clone(),
            NOW_MS / 1000 - 400,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&resp), "clock_skew");
    assert_eq!(resp["error"]["skew_seconds"], 400);

    // Signed by another key.
    let other = KeyPair::from_seed(&[13; 32]).unwrap();
    let (status, resp) = send(
        &t.hub,
        signed(&other, &agent, "POST", &uri, body.clone(), NOW_MS / 1000),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&resp), "bad_request_signature");

    // Signed for another agent's path.
    let stranger = AgentId::parse("430112-ffffffff").unwrap();
    let mut req = signed(&key, &stranger, "POST", &uri, body.clone(), NOW_MS / 1000);
    *req.uri_mut() = uri.parse().unwrap();
    let (status, resp) = send(&t.hub, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&resp), "bad_request_signature");

    // Body changed after signing.
    let mut req = signed(&key, &agent, "POST", &uri, body.clone(), NOW_MS / 1000);
    *req.body_mut() = Body::from(batch_body(&[], 1));
    let (status, resp) = send(&t.hub, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&resp), "bad_request_signature");

    // No headers at all.
    let (status, resp) = send(&t.hub, post_json(&uri, body.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&resp), "bad_request_signature");

    // Unknown agent.
    let ghost_uri = batches_uri(&stranger);
    let (status, resp) = send(
        &t.hub,
        signed(&key, &stranger, "POST", &ghost_uri, body, NOW_MS / 1000),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&resp), "unknown_agent");
}

#[tokio::test]
async fn a_replayed_request_is_refused() {
    let t = test_hub().await;
    let key = KeyPair::from_seed(&[14; 32]).unwrap();
    let agent = enroll_agent(&t, &key).await;
    let uri = tongbu_shared::protocol::watermark_path(&agent);
    let now = NOW_MS / 1000;
    let nonce = "0123456789abcdef0123456789abcdef";
    let request = || signed_with_nonce(&key, &agent, "GET", &uri, Vec::new(), now, nonce);

    let (status, body) = send(&t.hub, request()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The very same request again: refused, also a minute later.
    t.clock.advance_ms(60_000);
    let (status, body) = send(&t.hub, request()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "replayed_request");
    // The same request with another nonce is a new request.
    let (status, body) = send(
        &t.hub,
        signed_with_nonce(&key, &agent, "GET", &uri, Vec::new(), now, &fresh_nonce()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Past the window the clock check refuses it before the replay memory is asked.
    t.clock.advance_ms(300_000);
    let (status, body) = send(&t.hub, request()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "clock_skew");
    // Nonces are 16-64 hex characters.
    let now = t.clock.now_ms() / 1000;
    for bad in ["a1b2", "zzzzzzzzzzzzzzzzzzzz"] {
        let (status, body) = send(
            &t.hub,
            signed_with_nonce(&key, &agent, "GET", &uri, Vec::new(), now, bad),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(error_code(&body), "bad_request_signature");
    }
}

#[tokio::test]
async fn chain_errors_carry_what_the_agent_needs() {
    let t = test_hub().await;
    let key = KeyPair::from_seed(&[14; 32]).unwrap();
    let agent = enroll_agent(&t, &key).await;
    let uri = batches_uri(&agent);
    let c = chain(&key, &agent, 1, Digest::GENESIS, 4);
    let ok = signed(
        &key,
        &agent,
        "POST",
        &uri,
        batch_body(&c[..1], 4),
        NOW_MS / 1000,
    );
    assert_eq!(send(&t.hub, ok).await.0, StatusCode::OK);

    let gap = signed(
        &key,
        &agent,
        "POST",
        &uri,
        batch_body(&c[2..], 4),
        NOW_MS / 1000,
    );
    let (status, resp) = send(&t.hub, gap).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&resp), "chain_gap");
    assert_eq!(resp["error"]["acked_seq"], 1);

    let mut forged = c[1].clone();
    forged.body = b"{}".to_vec();
    let bad = signed(
        &key,
        &agent,
        "POST",
        &uri,
        batch_body(&[forged], 4),
        NOW_MS / 1000,
    );
    let (status, resp) = send(&t.hub, bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&resp), "bad_signature");
    assert_eq!(resp["error"]["seq"], 2);

    let not_json = signed(&key, &agent, "POST", &uri, b"[1,".to_vec(), NOW_MS / 1000);
    let (status, resp) = send(&t.hub, not_json).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&resp), "malformed_json");

    // Equivocation: a different, validly signed seq 1.
    let fork = Envelope::sign(
        &key,
        agent.clone(),
        1,
        Digest::GENESIS,
        b"{\"x\":1}".to_vec(),
    );
    let req = signed(
        &key,
        &agent,
        "POST",
        &uri,
        batch_body(&[fork], 4),
        NOW_MS / 1000,
    );
    let (status, resp) = send(&t.hub, req).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&resp), "equivocation");
    let again = signed(
        &key,
        &agent,
        "POST",
        &uri,
        batch_body(&c[1..], 4),
        NOW_MS / 1000,
    );
    let (status, resp) = send(&t.hub, again).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&resp), "agent_quarantined");

    // A quarantined agent may still read its watermark.
    let wm_uri = format!("/api/v1/agents/{agent}/watermark");
    let wm: Watermark = send_signed(
        &t.hub,
        signed(&key, &agent, "GET", &wm_uri, Vec::new(), NOW_MS / 1000),
    )
    .await;
    assert_eq!(wm.state, tongbu_shared::protocol::AgentState::Quarantined);
    assert_eq!(wm.acked_seq, 1);
}

#[tokio::test]
async fn enrollment_errors_are_distinct() {
    let t = test_hub().await;
    let key = KeyPair::from_seed(&[15; 32]).unwrap();
    let token = t.hub.issue_token(county(), 1).await.unwrap();
    let token = token.token.expose().to_owned();
    let request = |token: &str, key: &KeyPair| {
        let proof = key.sign(
            Domain::Enroll,
            &enroll_proof_bytes(token, &key.public_key()),
        );
        serde_json::to_vec(&EnrollRequest {
            token: token.into(),
            public_key: key.public_key(),
            proof,
            agent_version: "0.1.0".into(),
            hostname: None,
        })
        .unwrap()
    };
    let (status, resp) = send(&t.hub, post_json(ENROLL_PATH, request("tbe_nope", &key))).await;
    assert_eq!(
        (status, error_code(&resp)),
        (StatusCode::UNAUTHORIZED, "token_unknown")
    );

    let mut forged: Value = serde_json::from_slice(&request(&token, &key)).unwrap();
    forged["public_key"] = json!(
        KeyPair::from_seed(&[16; 32])
            .unwrap()
            .public_key()
            .to_base64()
    );
    let (status, resp) = send(
        &t.hub,
        post_json(ENROLL_PATH, serde_json::to_vec(&forged).unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&resp), "bad_signature");

    let (status, _) = send(&t.hub, post_json(ENROLL_PATH, request(&token, &key))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, resp) = send(&t.hub, post_json(ENROLL_PATH, request(&token, &key))).await;
    assert_eq!(
        (status, error_code(&resp)),
        (StatusCode::UNAUTHORIZED, "token_used")
    );

    let second = t.hub.issue_token(county(), 1).await.unwrap();
    let second = second.token.expose().to_owned();
    let (status, resp) = send(&t.hub, post_json(ENROLL_PATH, request(&second, &key))).await;
    assert_eq!(
        (status, error_code(&resp)),
        (StatusCode::CONFLICT, "key_in_use")
    );

    t.clock.advance_ms(3_600_000);
    let other = KeyPair::from_seed(&[17; 32]).unwrap();
    let (status, resp) = send(&t.hub, post_json(ENROLL_PATH, request(&second, &other))).await;
    assert_eq!(
        (status, error_code(&resp)),
        (StatusCode::UNAUTHORIZED, "token_expired")
    );
}

#[tokio::test]
async fn health_metrics_and_unknown_routes() {
    let t = test_hub().await;
    let (status, body) = send(
        &t.hub,
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));

    let key = KeyPair::from_seed(&[18; 32]).unwrap();
    let agent = enroll_agent(&t, &key).await;
    let uri = batches_uri(&agent);
    let c = chain(&key, &agent, 1, Digest::GENESIS, 2);
    let req = signed(&key, &agent, "POST", &uri, batch_body(&c, 2), NOW_MS / 1000);
    assert_eq!(send(&t.hub, req).await.0, StatusCode::OK);

    let (status, body) = send(
        &t.hub,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    assert!(
        text.contains("tongbu_envelopes_received_total 2\n"),
        "{text}"
    );
    assert!(text.contains("tongbu_batches_total 1\n"), "{text}");
    assert!(
        text.contains("tongbu_agents{state=\"active\"} 1\n"),
        "{text}"
    );

    let (status, body) = send(&t.hub, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
}

#[tokio::test]
async fn revoked_agents_are_refused_everything() {
    let t = test_hub().await;
    let key = KeyPair::from_seed(&[19; 32]).unwrap();
    let agent = enroll_agent(&t, &key).await;
    let id = agent.clone();
    let revoked: Result<(), crate::store::StoreError> = t
        .hub
        .db()
        .write(move |w| w.set_agent_state(&id, tongbu_shared::protocol::AgentState::Revoked))
        .await;
    revoked.unwrap();
    let uri = batches_uri(&agent);
    let req = signed(
        &key,
        &agent,
        "POST",
        &uri,
        batch_body(&[], 0),
        NOW_MS / 1000,
    );
    let (status, resp) = send(&t.hub, req).await;
    assert_eq!(
        (status, error_code(&resp)),
        (StatusCode::FORBIDDEN, "agent_revoked")
    );
    let wm_uri = format!("/api/v1/agents/{agent}/watermark");
    let req = signed(&key, &agent, "GET", &wm_uri, Vec::new(), NOW_MS / 1000);
    let (status, resp) = send(&t.hub, req).await;
    assert_eq!(
        (status, error_code(&resp)),
        (StatusCode::FORBIDDEN, "agent_revoked")
    );
}

// ---- the ledger, the policy and the grace period -----------------------------------------

/// A chain of `bodies` signed by `key`, from genesis.
fn envelopes(key: &KeyPair, agent: &AgentId, bodies: &[&str]) -> Vec<Envelope> {
    let mut prev = Digest::GENESIS;
    bodies
        .iter()
        .zip(1..)
        .map(|(body, seq)| {
            let e = Envelope::sign(key, agent.clone(), seq, prev, body.as_bytes().to_vec());
            prev = e.hash();
            e
        })
        .collect()
}

fn batch_with_cursor(envelopes: &[Envelope], cursor: u64) -> Vec<u8> {
    serde_json::to_vec(&BatchRequest {
        heartbeat: tongbu_shared::protocol::Heartbeat {
            head_seq: envelopes.last().map_or(0, |e| e.seq),
            queue_depth: 0,
            agent_version: "0.1.0".into(),
            last_error: None,
            outcome_cursor: cursor,
            log_size: 0,
        },
        envelopes: envelopes.to_vec(),
    })
    .unwrap()
}

const LINE: &str = r#"{"kind":"budget_line","id":"BL-1","rev":1,"county":"430112","department":"101001","fiscal_year":2024,"catalogue_code":"A0501","amount_fen":1000,"stage":"approved","approved_on":"2024-01-15"}"#;
const OVER: &str = r#"{"kind":"contract","id":"C-1","rev":1,"county":"430112","budget_line_id":"BL-1","supplier_uscc":"91350100M000100Y43","supplier_name":"颐养居家养老服务中心","method":"public_tender","catalogue_code":"A0501","amount_fen":2000,"signed_on":"2024-03-01"}"#;
const FITS: &str = r#"{"kind":"contract","id":"C-2","rev":1,"county":"430112","budget_line_id":"BL-1","supplier_uscc":"91350100M000100Y43","supplier_name":"颐养居家养老服务中心","method":"public_tender","catalogue_code":"A0501","amount_fen":600,"signed_on":"2024-03-01"}"#;
const WAITS: &str = r#"{"kind":"payment","id":"P-1","rev":1,"county":"430112","contract_id":"C-9","amount_fen":100,"paid_on":"2024-04-01","voucher_no":"GK-1"}"#;

/// Sends a signed batch at the hub clock's time; returns the verified receipt.
async fn send_batch(t: &TestHub, key: &KeyPair, agent: &AgentId, body: Vec<u8>) -> Receipt {
    let now = t.clock.now_ms() / 1000;
    send_signed(
        &t.hub,
        signed(key, agent, "POST", &batches_uri(agent), body, now),
    )
    .await
}

/// A full response (status, headers and body) to `req`.
async fn send_full(hub: &Hub, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let resp = app(hub.clone()).oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn policy_request(
    t: &TestHub,
    key: &KeyPair,
    agent: &AgentId,
    etag: Option<&str>,
) -> Request<Body> {
    let now = t.clock.now_ms() / 1000;
    let mut req = signed(key, agent, "GET", POLICY_PATH, Vec::new(), now);
    if let Some(etag) = etag {
        req.headers_mut()
            .insert(header::IF_NONE_MATCH, etag.parse().unwrap());
    }
    req
}

#[tokio::test]
async fn the_policy_is_served_signed_with_its_version_as_etag() {
    use tongbu_shared::policy::{PolicyBundle, default_policy};
    let t = test_hub().await;
    let key = KeyPair::from_seed(&[21; 32]).unwrap();
    let agent = enroll_agent(&t, &key).await;

    let (status, headers, body) = send_full(&t.hub, policy_request(&t, &key, &agent, None)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers[header::ETAG], "\"1\"");
    let signed: Signed<PolicyBundle> = serde_json::from_slice(&body).unwrap();
    let bundle = signed.verify(&t.hub.public_key()).unwrap();
    assert_eq!((bundle.version, bundle.issued_at_ms), (1, NOW_MS));
    assert_eq!(bundle.doc(), default_policy());
    // The payload is served exactly as stored (and signed).
    let current = t.hub.current_policy().await.unwrap();
    assert_eq!(signed.payload_bytes(), current.payload());

    let (status, headers, body) =
        send_full(&t.hub, policy_request(&t, &key, &agent, Some("\"1\""))).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(headers[header::ETAG], "\"1\"");
    assert!(body.is_empty());

    // A new version: the old ETag no longer matches.
    let mut doc = default_policy();
    doc.settings.grace_period_hours = 24;
    let set = t.hub.set_policy(doc.clone()).await.unwrap();
    assert_eq!(set.version, 2);
    let (status, headers, body) =
        send_full(&t.hub, policy_request(&t, &key, &agent, Some("\"1\""))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::ETAG], "\"2\"");
    let signed: Signed<PolicyBundle> = serde_json::from_slice(&body).unwrap();
    assert_eq!(signed.verify(&t.hub.public_key()).unwrap().doc(), doc);
    let (status, _, _) = send_full(
        &t.hub,
        policy_request(&t, &key, &agent, Some("W/\"2\", \"3\"")),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    // Only enrolled agents, by signature.
    let (status, body) = send(
        &t.hub,
        Request::get(POLICY_PATH).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "bad_request_signature");
    let stranger = KeyPair::from_seed(&[22; 32]).unwrap();
    let (status, _) = send(&t.hub, policy_request(&t, &stranger, &agent, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn ledger_violations_and_records_have_the_contract_shapes() {
    let t = test_hub().await;
    let key = KeyPair::from_seed(&[23; 32]).unwrap();
    let agent = enroll_agent(&t, &key).await;
    let c = envelopes(&key, &agent, &[LINE, OVER, FITS, WAITS]);
    let receipt = send_batch(&t, &key, &agent, batch_with_cursor(&c, 0)).await;
    let got: Vec<(Outcome, Vec<String>)> = receipt
        .outcomes
        .iter()
        .map(|o| (o.outcome, o.codes.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (Outcome::Accepted, vec![]),
            (Outcome::Rejected, vec!["BUDGET_EXCEEDED".to_owned()]),
            (Outcome::Accepted, vec![]),
            (Outcome::Held, vec!["AWAITING_CONTRACT".to_owned()]),
        ]
    );
    assert_eq!(receipt.policy_version, 1);
    assert_eq!(receipt.outcomes[1].policy_version, Some(1));

    let (status, body) = send(
        &t.hub,
        get_with_key("/api/v1/ledger?county=430112&year=2024", &t.api_key),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"county": "430112", "year": 2024, "budget_approved_fen": 1000,
            "contracted_fen": 600, "paid_fen": 0, "accepted": 2, "held": 1, "rejected": 1})
    );
    let (_, body) = send(
        &t.hub,
        get_with_key("/api/v1/ledger?county=431281&year=2023", &t.api_key),
    )
    .await;
    assert_eq!(
        body,
        json!({"county": "431281", "year": 2023, "budget_approved_fen": 0,
            "contracted_fen": 0, "paid_fen": 0, "accepted": 0, "held": 0, "rejected": 0})
    );

    let (status, body) = send(
        &t.hub,
        get_with_key("/api/v1/violations?county=430112", &t.api_key),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body["violations"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{body}");
    let row = &rows[0];
    for (field, value) in [
        ("agent_id", json!(agent.as_str())),
        ("seq", json!(2)),
        ("kind", json!("contract")),
        ("id", json!("C-1")),
        ("rule", json!("BUDGET_EXCEEDED")),
        ("county", json!("430112")),
        ("fiscal_year", json!(2024)),
        ("outcome", json!("rejected")),
        ("at", json!("2026-11-27T06:48:33Z")),
    ] {
        assert_eq!(row[field], value, "{field} in {row}");
    }
    assert!(
        row["detail"]
            .as_str()
            .unwrap()
            .contains("over its 1000 fen"),
        "{row}"
    );
    for (query, n) in [
        ("county=430112&rule=BUDGET_EXCEEDED", 1),
        ("county=430112&rule=DATE_ORDER", 0),
        ("county=430112&year=2023", 0),
        ("county=430112&year=2024&limit=1", 1),
        ("county=431281", 0),
    ] {
        let (status, body) = send(
            &t.hub,
            get_with_key(&format!("/api/v1/violations?{query}"), &t.api_key),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(body["violations"].as_array().unwrap().len(), n, "{query}");
    }

    let (status, body) = send(
        &t.hub,
        get_with_key(&format!("/api/v1/records/{agent}/2"), &t.api_key),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["outcome"], "rejected");
    assert_eq!(body["codes"], json!(["BUDGET_EXCEEDED"]));
    assert_eq!(body["policy_version"], 1);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("BUDGET_EXCEEDED: ")
    );

    // Read calls need an API key.
    let (status, _) = send(
        &t.hub,
        Request::get("/api/v1/ledger?county=430112&year=2024")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_query_parameters_are_refused_naming_the_parameter() {
    let t = test_hub().await;
    for (uri, param) in [
        ("/api/v1/ledger?year=2024", "county"),
        ("/api/v1/ledger?county=43011&year=2024", "county"),
        ("/api/v1/ledger?county=430112", "year"),
        ("/api/v1/ledger?county=430112&year=20x4", "year"),
        ("/api/v1/ledger?county=430112&year=1800", "year"),
        ("/api/v1/ledger?county=430112&year=2024&yaer=2024", "yaer"),
        (
            "/api/v1/ledger?county=430112&county=431281&year=2024",
            "county",
        ),
        ("/api/v1/ledger", "county"),
        ("/api/v1/violations", "county"),
        ("/api/v1/violations?county=430112&rule=NOPE", "rule"),
        ("/api/v1/violations?county=430112&limit=0", "limit"),
        ("/api/v1/violations?county=430112&limit=x", "limit"),
        ("/api/v1/violations?county=430112&year=two", "year"),
    ] {
        let (status, body) = send(&t.hub, get_with_key(uri, &t.api_key)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(error_code(&body), "bad_request", "{uri}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{param}`")), "{uri}: {message}");
    }
}

#[tokio::test]
async fn held_records_expire_by_the_hub_clock_and_flow_back() {
    let t = test_hub().await;
    let key = KeyPair::from_seed(&[24; 32]).unwrap();
    let agent = enroll_agent(&t, &key).await;
    let c = envelopes(&key, &agent, &[WAITS]);
    let receipt = send_batch(&t, &key, &agent, batch_with_cursor(&c, 0)).await;
    assert_eq!(receipt.outcomes[0].outcome, Outcome::Held);

    t.clock.advance_ms(72 * 3_600_000);
    assert!(t.hub.expire_once().await.unwrap().is_empty());
    t.clock.advance_ms(1);
    let judged = t.hub.expire_once().await.unwrap();
    assert_eq!(judged.len(), 1);
    assert_eq!(judged[0].verdict.codes, ["UNKNOWN_CONTRACT"]);

    let receipt = send_batch(&t, &key, &agent, batch_with_cursor(&[], 0)).await;
    assert_eq!(receipt.updates.len(), 1);
    let u = &receipt.updates[0];
    assert_eq!((u.seq, u.outcome), (1, Outcome::Rejected));
    assert_eq!(u.codes, ["UNKNOWN_CONTRACT"]);
    assert!(
        u.detail.as_deref().unwrap().contains("within 72 h"),
        "{u:?}"
    );
    let cursor = receipt.outcome_cursor;
    let receipt = send_batch(&t, &key, &agent, batch_with_cursor(&[], cursor)).await;
    assert!(receipt.updates.is_empty());
    assert_eq!(receipt.outcome_cursor, cursor);

    let (_, body) = send(
        &t.hub,
        get_with_key("/api/v1/ledger?county=430112&year=2024", &t.api_key),
    )
    .await;
    assert_eq!(
        (body["held"].as_i64(), body["rejected"].as_i64()),
        (Some(0), Some(1))
    );
    let (_, body) = send(
        &t.hub,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    let text = body.as_str().unwrap();
    assert!(
        text.contains("tongbu_records_total{outcome=\"held\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("tongbu_records_total{outcome=\"rejected\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("tongbu_violations_total{rule=\"UNKNOWN_CONTRACT\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("tongbu_records_held 0\n"), "{text}");
    assert!(text.contains("tongbu_policy_version 1\n"), "{text}");
}

#[tokio::test]
async fn the_grace_period_task_runs_until_stopped() {
    let t = test_hub().await;
    let key = KeyPair::from_seed(&[25; 32]).unwrap();
    let agent = enroll_agent(&t, &key).await;
    let c = envelopes(&key, &agent, &[WAITS]);
    send_batch(&t, &key, &agent, batch_with_cursor(&c, 0)).await;
    t.clock.advance_ms(73 * 3_600_000);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crate::expiry::run_until_stopped(
        t.hub.clone(),
        std::time::Duration::from_millis(5),
        async move {
            let _ = stopped.await;
        },
    ));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let e = t.hub.envelope(agent.clone(), 1).await.unwrap().unwrap();
        if e.outcome == Outcome::Rejected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the record was never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(20), task)
        .await
        .expect("the task stops when told")
        .unwrap();
}

fn rotation(
    agent: &AgentId,
    old: &KeyPair,
    new: &KeyPair,
    proof_by: &KeyPair,
    last_old_seq: u64,
) -> Vec<u8> {
    let proof = proof_by.sign(
        Domain::Rotate,
        &tongbu_shared::signed::rotate_proof_bytes(
            agent,
            &old.public_key(),
            &new.public_key(),
            last_old_seq,
        ),
    );
    serde_json::to_vec(&RotateKeyRequest {
        new_public_key: new.public_key(),
        last_old_seq,
        proof,
    })
    .unwrap()
}

#[tokio::test]
async fn a_rotated_key_takes_over_and_old_envelopes_still_verify() {
    use tongbu_shared::protocol::key_path;
    let t = test_hub().await;
    let old = KeyPair::from_seed(&[40; 32]).unwrap();
    let new = KeyPair::from_seed(&[41; 32]).unwrap();
    let agent = enroll_agent(&t, &old).await;
    let now = NOW_MS / 1000;
    // Seqs 1-5 are signed by the old key; the hub holds 1-3 when the key changes.
    let by_old = chain(&old, &agent, 1, Digest::GENESIS, 5);
    let req = signed(
        &old,
        &agent,
        "POST",
        &batches_uri(&agent),
        batch_body(&by_old[..3], 5),
        now,
    );
    assert_eq!(send(&t.hub, req).await.0, StatusCode::OK);

    let uri = key_path(&agent);
    // Refused: a proof signed by the old key, or a rotation point below what the hub holds.
    for (body, why) in [
        (
            rotation(&agent, &old, &new, &old, 5),
            "proof by the old key",
        ),
        (rotation(&agent, &old, &new, &new, 2), "seq below acked"),
        (rotation(&agent, &old, &old, &old, 5), "same key"),
    ] {
        let (status, resp) = send(&t.hub, signed(&old, &agent, "POST", &uri, body, now)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {resp}");
        assert_eq!(error_code(&resp), "bad_key_rotation", "{why}");
    }
    // Asked with the new key itself: not the agent's key yet.
    let body = rotation(&agent, &old, &new, &new, 5);
    let (status, _) = send(
        &t.hub,
        signed(&new, &agent, "POST", &uri, body.clone(), now),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let confirmed: KeyRotated =
        send_signed(&t.hub, signed(&old, &agent, "POST", &uri, body, now)).await;
    assert_eq!(confirmed.public_key, new.public_key());
    assert_eq!(confirmed.last_old_seq, 5);

    // From now on the old key is refused, the new one accepted.
    let wm_uri = tongbu_shared::protocol::watermark_path(&agent);
    let (status, resp) = send(&t.hub, signed(&old, &agent, "GET", &wm_uri, vec![], now)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&resp), "bad_request_signature");
    let wm: Watermark =
        send_signed(&t.hub, signed(&new, &agent, "GET", &wm_uri, vec![], now)).await;
    assert_eq!(wm.acked_seq, 3);

    // Seqs 4-5 (old key) and 6 (new key) arrive together and all verify.
    let by_new = chain(&new, &agent, 6, by_old[4].hash(), 1);
    let mut rest = by_old[3..].to_vec();
    rest.extend(by_new.iter().cloned());
    let receipt: Receipt = send_signed(
        &t.hub,
        signed(
            &new,
            &agent,
            "POST",
            &batches_uri(&agent),
            batch_body(&rest, 6),
            now,
        ),
    )
    .await;
    assert_eq!(receipt.acked_seq, 6);
    // A seq past the rotation point signed by the old key is refused.
    let forged = chain(&old, &agent, 7, by_new[0].hash(), 1);
    let (status, resp) = send(
        &t.hub,
        signed(
            &new,
            &agent,
            "POST",
            &batches_uri(&agent),
            batch_body(&forged, 7),
            now,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert_eq!(error_code(&resp), "bad_signature");

    // The history and the audit log tell the story.
    let id = agent.clone();
    let retired = t.hub.db().read(move |r| r.retired_keys(&id)).await.unwrap();
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].public_key, old.public_key());
    assert_eq!(
        (retired[0].valid_from_seq, retired[0].valid_until_seq),
        (1, 5)
    );
    let audit = t.hub.db().read(|r| r.audit_page(None, 10)).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.entry.action == "agent.key_rotated"
                && a.entry.actor == format!("agent:{agent}")),
        "{audit:?}"
    );
    // The retired key cannot enroll again.
    let token = t.hub.issue_token(county(), 72).await.unwrap();
    let token = token.token.expose().to_owned();
    let req = EnrollRequest {
        proof: old.sign(
            Domain::Enroll,
            &enroll_proof_bytes(&token, &old.public_key()),
        ),
        token,
        public_key: old.public_key(),
        agent_version: "0.1.0".into(),
        hostname: None,
    };
    let (status, resp) = send(
        &t.hub,
        post_json(ENROLL_PATH, serde_json::to_vec(&req).unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&resp), "key_in_use");
}

#[tokio::test]
async fn the_cli_revocation_is_audited_and_refuses_the_next_request() {
    let t = test_hub().await;
    let key = KeyPair::from_seed(&[42; 32]).unwrap();
    let agent = enroll_agent(&t, &key).await;
    // What `tongbu-hub agent revoke` does: its own connection and transaction.
    let mut cli = crate::store::SqliteStore::open(t._dir.path()).unwrap();
    assert!(matches!(
        crate::admin::revoke_agent_in(&mut cli, NOW_MS, &agent, "  "),
        Err(crate::admin::AdminError::NoReason)
    ));
    crate::admin::revoke_agent_in(&mut cli, NOW_MS, &agent, "laptop stolen").unwrap();
    assert!(matches!(
        crate::admin::revoke_agent_in(&mut cli, NOW_MS, &agent, "again"),
        Err(crate::admin::AdminError::AlreadyRevoked(_))
    ));
    let wm_uri = tongbu_shared::protocol::watermark_path(&agent);
    let (status, resp) = send(
        &t.hub,
        signed(&key, &agent, "GET", &wm_uri, vec![], NOW_MS / 1000),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&resp), "agent_revoked");
    let audit = t.hub.db().read(|r| r.audit_page(None, 10)).await.unwrap();
    let entry = audit
        .iter()
        .find(|a| a.entry.action == "agent.revoke")
        .expect("audited");
    assert_eq!(entry.entry.actor, "cli");
    assert!(entry.entry.detail.contains("laptop stolen"));
}

#[tokio::test]
async fn a_store_that_cannot_write_answers_503_unavailable() {
    use axum::response::IntoResponse as _;
    for e in [
        crate::store::StoreError::Unavailable("database or disk is full".into()),
        crate::store::StoreError::Unavailable("attempt to write a readonly database".into()),
    ] {
        let resp = error::AppError::from(e).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(error_code(&body), "unavailable");
    }
}

#[tokio::test]
async fn a_pipelined_batch_waits_for_the_batch_before_it() {
    // An agent catching up sends its next batch before the last one's receipt is back; the
    // later batch (small, so checked first) must still be written after the earlier one.
    let t = test_hub().await;
    let key = KeyPair::from_seed(&[21; 32]).unwrap();
    let agent = enroll_agent(&t, &key).await;
    let all = chain(&key, &agent, 1, Digest::GENESIS, 700);
    let id = agent.clone();
    let record = t
        .hub
        .db()
        .read(move |r| r.agent(&id))
        .await
        .unwrap()
        .unwrap();
    let request = |envelopes: &[Envelope]| BatchRequest {
        heartbeat: tongbu_shared::protocol::Heartbeat {
            head_seq: 700,
            queue_depth: 0,
            agent_version: "0.1.0".into(),
            last_error: None,
            outcome_cursor: 0,
            log_size: 0,
        },
        envelopes: envelopes.to_vec(),
    };
    let earlier = t.hub.ingest(record.clone(), request(&all[..600]));
    let later = t.hub.ingest(record, request(&all[600..]));
    tokio::pin!(earlier, later);
    // The earlier batch takes its place as it arrives (its first poll).
    let first_poll =
        std::future::poll_fn(|cx| std::task::Poll::Ready(earlier.as_mut().poll(cx).is_pending()))
            .await;
    assert!(first_poll);
    let (later, earlier) = tokio::join!(later, earlier);
    let key = t.hub.public_key();
    let earlier = earlier.unwrap().verify(&key).unwrap();
    let later = later.unwrap().verify(&key).unwrap();
    assert_eq!((earlier.acked_seq, later.acked_seq), (600, 700));
    assert_eq!(later.outcomes.len(), 100);
    assert!(later.outcomes.iter().all(|o| !o.duplicate));
}
