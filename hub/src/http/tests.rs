//! HTTP-level tests: the real router over a temporary data directory and a manual clock,
//! called in process with `tower::ServiceExt::oneshot`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::*;
use crate::clock::ManualClock;
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

fn signed(
    key: &KeyPair,
    agent: &AgentId,
    method: &str,
    uri: &str,
    body: Vec<u8>,
    timestamp: i64,
) -> Request<Body> {
    let auth = RequestAuth::sign(key, agent, method, uri, timestamp, "a1b2".into(), &body);
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
                r#"{{"kind":"payment","id":"P-{seq}","rev":1,"county":"430112","contract_id":"C-1","amount_fen":100,"paid_on":"2024-04-01","voucher_no":"V{seq}"}}"#
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
