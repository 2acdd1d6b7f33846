//! The loopback intake API for county systems (axum): `POST /records` stores a submission (one
//! record, a JSON array or JSON Lines) all or nothing and answers only after the commit;
//! `POST /check` reports findings without storing; `GET /status` and `GET /healthz` for
//! operators. The API has no authentication, so the service binds it to loopback only.
//! Handlers are thin: read the body, call [`crate::intake`], map the result.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Notify;
use tongbu_shared::KeyPair;
use tongbu_shared::ids::CountyCode;

use crate::clock::Clock;
use crate::intake::{self, Finding, IntakeError, Stored};
use crate::outbox::{OutboxError, SharedOutbox};
use crate::status::{self, Status};

/// Largest request body the intake reads, in bytes.
pub const MAX_INTAKE_BYTES: usize = 32 * 1024 * 1024;

/// What the intake handlers share. The outbox connection is the intake's own.
#[derive(Debug, Clone)]
pub struct IntakeState {
    pub outbox: SharedOutbox,
    pub key: Arc<KeyPair>,
    pub county: CountyCode,
    pub clock: Arc<dyn Clock>,
    /// Notified after records are committed, so the sync loop sends them at once.
    pub wake: Arc<Notify>,
}

pub fn app(state: IntakeState) -> Router {
    Router::new()
        .route("/records", post(post_records))
        .route("/check", post(post_check))
        .route("/status", get(get_status))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(MAX_INTAKE_BYTES))
        .with_state(state)
}

/// An error reply: `{"error":{"code","message",...}}`; internals are logged, not shown.
#[derive(Debug)]
enum AppError {
    Malformed(Finding),
    Body(BytesRejection),
    Busy,
    Internal(String),
}

impl From<OutboxError> for AppError {
    fn from(e: OutboxError) -> Self {
        match e {
            OutboxError::Busy => AppError::Busy,
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            AppError::Malformed(f) => (
                StatusCode::BAD_REQUEST,
                json!({"error": {
                    "code": "malformed",
                    "message": format!("refused, nothing stored: {}", f.message),
                    "record": f.record,
                    "line": f.line,
                    "field": f.field,
                }}),
            ),
            AppError::Body(r) => {
                let status = r.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "body_too_large"
                } else {
                    "bad_body"
                };
                let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!(
                        "the body is larger than {MAX_INTAKE_BYTES} bytes; split the submission"
                    )
                } else {
                    r.body_text()
                };
                (status, json!({"error": {"code": code, "message": message}}))
            }
            AppError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": {"code": "busy", "message": "the outbox is busy; nothing stored, try again"}}),
            ),
            AppError::Internal(detail) => {
                tracing::error!(error = %detail, "intake failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": {"code": "internal", "message": "the agent could not store the records (see its log); nothing stored"}}),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}

#[derive(Debug, Serialize)]
struct StoredReply {
    stored: Vec<Stored>,
}

async fn post_records(
    State(state): State<IntakeState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StoredReply>, AppError> {
    let body = body.map_err(AppError::Body)?;
    let key = Arc::clone(&state.key);
    let now = state.clock.now_ms();
    let stored = state
        .outbox
        .call(move |o| Ok(intake::submit(o, &key, &body, now)))
        .await?
        .map_err(|e| match e {
            IntakeError::Refused(f) => AppError::Malformed(f),
            IntakeError::Outbox(e) => e.into(),
            other => AppError::Internal(other.to_string()),
        })?;
    state.wake.notify_one();
    Ok(Json(StoredReply { stored }))
}

#[derive(Debug, Serialize)]
struct CheckReply {
    ok: bool,
    records: usize,
    findings: Vec<Finding>,
}

async fn post_check(
    State(state): State<IntakeState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CheckReply>, AppError> {
    let body = body.map_err(AppError::Body)?;
    let county = state.county.clone();
    let report = tokio::task::spawn_blocking(move || intake::check(&body, Some(&county)))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(Json(CheckReply {
        ok: report.ok(),
        records: report.records,
        findings: report.findings,
    }))
}

async fn get_status(State(state): State<IntakeState>) -> Result<Json<Status>, AppError> {
    Ok(Json(state.outbox.call(|o| status::read(o)).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::outbox::tests::{agent, body, key};
    use crate::outbox::{Enrollment, Outbox};
    fn state(dir: &tempfile::TempDir) -> IntakeState {
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        let county = CountyCode::parse("430112").unwrap();
        outbox
            .save_enrollment(&Enrollment {
                agent_id: agent(),
                county: county.clone(),
                county_name: "望城区".into(),
                hub_url: "http://127.0.0.1:1".into(),
                hub_public_key: KeyPair::from_seed(&[1; 32]).unwrap().public_key(),
                enrolled_at: "2026-11-27T06:48:33Z".into(),
            })
            .unwrap();
        IntakeState {
            outbox: SharedOutbox::new(outbox),
            key: Arc::new(key()),
            county,
            clock: Arc::new(ManualClock::new(1_000)),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Serves `app` on a loopback port and sends one request to it.
    async fn call(
        app: Router,
        method: &str,
        uri: &str,
        body: Vec<u8>,
    ) -> (StatusCode, serde_json::Value) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = reqwest::Client::new()
            .request(method, format!("http://{addr}{uri}"))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let bytes = resp.bytes().await.unwrap();
        server.abort();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn records_are_stored_and_the_sync_loop_woken() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(&dir);
        let wake = Arc::clone(&st.wake);
        let (status, json) = call(app(st.clone()), "POST", "/records", body(1)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["stored"][0]["seq"], 1);
        assert_eq!(json["stored"][0]["id"], "P-1");
        // The wake-up was stored as a permit for the loop.
        tokio::time::timeout(std::time::Duration::from_secs(5), wake.notified())
            .await
            .unwrap();

        let (status, json) = call(app(st.clone()), "GET", "/status", Vec::new()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (json["head_seq"].as_u64(), json["queue_depth"].as_u64()),
            (Some(1), Some(1))
        );
    }

    #[tokio::test]
    async fn malformed_input_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(&dir);
        let bad = String::from_utf8(body(2))
            .unwrap()
            .replace("2024-04-01", "2024-13-01");
        let input = [body(1), bad.into_bytes()].join(&b'\n');
        let (status, json) = call(app(st.clone()), "POST", "/records", input.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["error"]["code"], "malformed");
        assert_eq!(json["error"]["record"], 2);
        assert_eq!(json["error"]["field"], "paid_on");
        let (_, json) = call(app(st.clone()), "GET", "/status", Vec::new()).await;
        assert_eq!(json["head_seq"], 0);

        let (status, json) = call(app(st), "POST", "/check", input).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json["ok"], false);
        assert_eq!(json["findings"][0]["record"], 2);
        assert_eq!(json["findings"][0]["field"], "paid_on");
    }

    #[tokio::test]
    async fn oversized_bodies_get_413() {
        let dir = tempfile::tempdir().unwrap();
        let (status, json) = call(
            app(state(&dir)),
            "POST",
            "/records",
            vec![b' '; MAX_INTAKE_BYTES + 1],
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(json["error"]["code"], "body_too_large");
    }
}
