//! The loopback intake API for county systems (axum): `POST /records` stores a submission (one
//! record, a JSON array or JSON Lines) all or nothing and answers only after the commit, with
//! each record's rule codes (`?strict=true` refuses the whole submission if a record breaks a
//! rule); `POST /check` reports malformed records and rule findings without storing;
//! `GET /status`, `GET /metrics` (Prometheus text, the same figures as `status`; see
//! [`crate::metrics`]) and `GET /healthz` for operators. The API has no authentication, so the
//! service binds it to loopback only. A full or read-only disk answers 503 `unavailable` with
//! nothing stored, and the service accepts again once space returns. Handlers are thin: read the body, call
//! [`crate::intake`], map the result.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::intake::{Finding, IntakeError, SharedIntake, Stored, Strictness};
use crate::metrics::AgentMetrics;
use crate::outbox::OutboxError;
use crate::status::{self, Status};

/// Largest request body the intake reads, in bytes.
pub const MAX_INTAKE_BYTES: usize = 32 * 1024 * 1024;

/// What the intake handlers share. The intake's outbox connection is its own.
#[derive(Debug, Clone)]
pub struct IntakeState {
    pub intake: SharedIntake,
    pub clock: Arc<dyn Clock>,
    /// Notified after records are committed, so the sync loop sends them at once.
    pub wake: Arc<Notify>,
    /// Shared with the sync loop; rendered with the status figures by `GET /metrics`.
    pub metrics: Arc<AgentMetrics>,
}

pub fn app(state: IntakeState) -> Router {
    Router::new()
        .route("/records", post(post_records))
        .route("/check", post(post_check))
        .route("/status", get(get_status))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(MAX_INTAKE_BYTES))
        .with_state(state)
}

/// An error reply: `{"error":{"code","message",...}}`; internals are logged, not shown.
#[derive(Debug)]
enum AppError {
    Malformed(Finding),
    BreaksRules {
        message: String,
        findings: Vec<Finding>,
    },
    Body(BytesRejection),
    Query(QueryRejection),
    Busy,
    /// The disk is full or read-only: nothing stored, retry later.
    Unavailable(String),
    Internal(String),
}

impl From<IntakeError> for AppError {
    fn from(e: IntakeError) -> Self {
        let message = e.to_string();
        match e {
            IntakeError::Refused(f) => AppError::Malformed(*f),
            IntakeError::BreaksRules { findings, .. } => {
                AppError::BreaksRules { message, findings }
            }
            IntakeError::Outbox(OutboxError::Busy) => AppError::Busy,
            e if e.is_unavailable() => AppError::Unavailable(message),
            _ => AppError::Internal(message),
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
            AppError::BreaksRules { message, findings } => (
                StatusCode::BAD_REQUEST,
                json!({"error": {
                    "code": "breaks_rules",
                    "message": message,
                    "findings": findings,
                }}),
            ),
            AppError::Query(r) => (
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": "bad_query", "message": r.body_text()}}),
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
            AppError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "intake cannot write");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": {"code": "unavailable", "message": format!("refused, nothing stored: the disk is full or the data directory is read-only; try again once there is space ({detail})")}}),
                )
            }
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsQuery {
    /// Refuse the whole submission if any record breaks a rule.
    #[serde(default)]
    strict: bool,
}

async fn post_records(
    State(state): State<IntakeState>,
    query: Result<Query<RecordsQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StoredReply>, AppError> {
    let Query(query) = query.map_err(AppError::Query)?;
    let body = body.map_err(AppError::Body)?;
    let strictness = if query.strict {
        Strictness::Strict
    } else {
        Strictness::Lenient
    };
    let stored = state
        .intake
        .submit(body.into(), strictness, Arc::clone(&state.clock))
        .await?;
    state.metrics.taken_in(stored.len());
    state.wake.notify_one();
    Ok(Json(StoredReply { stored }))
}

#[derive(Debug, Serialize)]
struct CheckReply {
    /// No malformed record and no record that breaks a rule (warnings allowed).
    ok: bool,
    records: usize,
    findings: Vec<Finding>,
    /// The cached policy version the rules were checked with (none cached: null).
    policy_version: Option<u64>,
    /// Why part of the rules could not be checked, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

async fn post_check(
    State(state): State<IntakeState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CheckReply>, AppError> {
    let body = body.map_err(AppError::Body)?;
    let report = state.intake.call(move |i| i.check(&body)).await?;
    Ok(Json(CheckReply {
        ok: report.ok(),
        records: report.records,
        policy_version: report.policy.version(),
        note: report.policy.note(),
        findings: report.findings,
    }))
}

async fn get_status(State(state): State<IntakeState>) -> Result<Json<Status>, AppError> {
    Ok(Json(read_status(&state).await?))
}

/// What `tongbu-agent status` shows, read the same way for `/status` and `/metrics`.
async fn read_status(state: &IntakeState) -> Result<Status, AppError> {
    Ok(state.intake.call(|i| Ok(status::read(i.outbox())?)).await?)
}

async fn get_metrics(State(state): State<IntakeState>) -> Result<Response, AppError> {
    let status = read_status(&state).await?;
    let text = state.metrics.render(&status, state.clock.now_ms());
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::intake::Intake;
    use crate::outbox::tests::{agent, body, key};
    use crate::outbox::{Enrollment, Outbox};
    use tongbu_shared::KeyPair;
    use tongbu_shared::ids::CountyCode;

    fn state(dir: &tempfile::TempDir) -> IntakeState {
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        let county = CountyCode::parse("430112").unwrap();
        outbox
            .save_enrollment(&Enrollment {
                agent_id: agent(),
                county,
                county_name: "望城区".into(),
                hub_url: crate::tls::HubUrl::plain("http://127.0.0.1:1").unwrap(),
                hub_public_key: KeyPair::from_seed(&[1; 32]).unwrap().public_key(),
                enrolled_at: "2026-11-27T06:48:33Z".into(),
            })
            .unwrap();
        IntakeState {
            intake: SharedIntake::new(Intake::new(outbox, Arc::new(key())).unwrap()),
            clock: Arc::new(ManualClock::new(1_000)),
            wake: Arc::new(Notify::new()),
            metrics: Arc::new(AgentMetrics::default()),
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

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(axum::serve(listener, app(st)).into_future());
        let resp = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.headers()["content-type"], crate::metrics::CONTENT_TYPE);
        let text = resp.text().await.unwrap();
        server.abort();
        for line in [
            "tongbu_agent_head_seq 1\n",
            "tongbu_agent_queue_depth_records 1\n",
            "tongbu_agent_records_taken_in_total 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    /// `n` distinct payments as JSON Lines.
    fn payments(from: u64, n: u64) -> Vec<u8> {
        (from..from + n).map(body).collect::<Vec<_>>().join(&b'\n')
    }

    async fn head_seq(st: &IntakeState) -> Option<u64> {
        let (_, json) = call(app(st.clone()), "GET", "/status", Vec::new()).await;
        json["head_seq"].as_u64()
    }

    #[tokio::test]
    async fn a_full_disk_stores_nothing_and_intake_resumes_when_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(&dir);
        let (status, _) = call(app(st.clone()), "POST", "/records", body(1)).await;
        assert_eq!(status, StatusCode::OK);
        // The disk is "full": the database may not grow by a single page.
        st.intake
            .call(|i| {
                let pages = i.outbox().page_count()?;
                i.outbox().set_max_page_count(pages)?;
                Ok(())
            })
            .await
            .unwrap();
        let (status, json) = call(app(st.clone()), "POST", "/records", payments(2, 400)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
        assert_eq!(json["error"]["code"], "unavailable");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains("disk is full"), "{message}");
        // Nothing of the submission was stored.
        assert_eq!(head_seq(&st).await, Some(1));

        // Space returns: the same service takes the same submission.
        st.intake
            .call(|i| {
                i.outbox().set_max_page_count(1 << 30)?;
                Ok(())
            })
            .await
            .unwrap();
        let (status, json) = call(app(st.clone()), "POST", "/records", payments(2, 400)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(head_seq(&st).await, Some(401));
    }

    #[tokio::test]
    async fn a_read_only_database_stores_nothing_and_intake_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(&dir);
        st.intake
            .call(|i| Ok(i.outbox().set_query_only(true)?))
            .await
            .unwrap();
        let (status, json) = call(app(st.clone()), "POST", "/records", body(1)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
        assert_eq!(json["error"]["code"], "unavailable");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("read-only")
        );
        assert_eq!(head_seq(&st).await, Some(0));
        st.intake
            .call(|i| Ok(i.outbox().set_query_only(false)?))
            .await
            .unwrap();
        let (status, _) = call(app(st.clone()), "POST", "/records", body(1)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(head_seq(&st).await, Some(1));
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

    fn line(id: &str, amount: i64) -> String {
        format!(
            r#"{{"kind":"budget_line","id":"{id}","rev":1,"county":"430112","department":"101001","fiscal_year":2024,"catalogue_code":"A0501","amount_fen":{amount},"stage":"approved","approved_on":"2024-01-15"}}"#
        )
    }

    fn contract(id: &str, amount: i64) -> String {
        format!(
            r#"{{"kind":"contract","id":"{id}","rev":1,"county":"430112","budget_line_id":"BL-1","supplier_uscc":"91350100M000100Y43","supplier_name":"颐养居家养老服务中心","method":"public_tender","catalogue_code":"A0501","amount_fen":{amount},"signed_on":"2024-03-01"}}"#
        )
    }

    #[tokio::test]
    async fn rule_codes_come_back_and_strict_submissions_are_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(&dir);
        let input = [line("BL-1", 100), contract("C-1", 200)].join("\n");
        let (status, json) = call(app(st.clone()), "POST", "/records", input.into_bytes()).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["stored"][0]["codes"], serde_json::json!([]));
        assert_eq!(
            json["stored"][1]["codes"],
            serde_json::json!(["BUDGET_EXCEEDED"])
        );
        assert!(
            json["stored"][1]["detail"]
                .as_str()
                .unwrap()
                .starts_with("BUDGET_EXCEEDED: 200 fen")
        );

        let strict = [contract("C-2", 50), contract("C-3", 60)].join("\n");
        let (status, json) = call(
            app(st.clone()),
            "POST",
            "/records?strict=true",
            strict.clone().into_bytes(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
        assert_eq!(json["error"]["code"], "breaks_rules");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "refused (strict), nothing stored: record 2 (line 2): BUDGET_EXCEEDED: 60 fen"
            ),
            "{message}"
        );
        assert_eq!(json["error"]["findings"][0]["code"], "BUDGET_EXCEEDED");
        let (_, json) = call(app(st.clone()), "GET", "/status", Vec::new()).await;
        assert_eq!(json["head_seq"], 2);

        let (status, json) = call(
            app(st.clone()),
            "POST",
            "/records?strict=maybe",
            strict.clone().into_bytes(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["error"]["code"], "bad_query");

        // /check: the same findings, nothing stored.
        let (status, json) = call(app(st.clone()), "POST", "/check", strict.into_bytes()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json["ok"], false);
        assert_eq!(json["records"], 2);
        assert_eq!(json["policy_version"], serde_json::Value::Null);
        assert!(
            json["note"]
                .as_str()
                .unwrap()
                .starts_with("no policy cached yet")
        );
        let finding = &json["findings"][0];
        let keys: Vec<&str> = finding
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["code", "field", "id", "line", "message", "record"]);
        assert_eq!(
            (
                &finding["record"],
                &finding["line"],
                &finding["id"],
                &finding["code"]
            ),
            (
                &serde_json::json!(2),
                &serde_json::json!(2),
                &serde_json::json!("C-3"),
                &serde_json::json!("BUDGET_EXCEEDED")
            )
        );
        assert!(
            finding["message"]
                .as_str()
                .unwrap()
                .starts_with("record 2 (line 2) C-3: BUDGET_EXCEEDED: ")
        );
        let (_, json) = call(app(st), "GET", "/status", Vec::new()).await;
        assert_eq!(json["head_seq"], 2);
    }
}
