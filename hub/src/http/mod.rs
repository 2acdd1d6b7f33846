//! The HTTP API (axum), the only module that knows HTTP. Handlers are thin: extract, call the
//! [`Hub`], map the result. Bodies are read as bytes (at most `MAX_REQUEST_BYTES`) and parsed
//! here with serde_json, so every failure — too large, not JSON, wrong shape — is answered
//! with the same `ApiError` JSON as any other error (see [`error`]).
//!
//! | route | auth | reply |
//! |---|---|---|
//! | `POST /api/v1/enroll` | token + proof in the body | `EnrollResponse` |
//! | `POST /api/v1/agents/{agent}/batches` | agent request signature | `Signed<Receipt>` |
//! | `GET /api/v1/agents/{agent}/watermark` | agent request signature | `Signed<Watermark>` |
//! | `GET /api/v1/agents` | bearer API key | `AgentsResponse` |
//! | `GET /api/v1/records/{agent}/{seq}` | bearer API key | the stored envelope |
//! | `GET /healthz`, `GET /metrics` | none | status, Prometheus text |

pub mod error;

use std::future::Future;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tongbu_shared::crypto::{Digest, Signature};
use tongbu_shared::ids::AgentId;
use tongbu_shared::protocol::{
    AgentsResponse, BatchRequest, ENROLL_PATH, EnrollRequest, EnrollResponse, ErrorCode,
    MAX_REQUEST_BYTES, Outcome, Receipt, Watermark,
};
use tongbu_shared::signed::{
    HEADER_AGENT, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, Signed,
};
use tower_http::trace::TraceLayer;

use crate::auth::AuthHeaders;
use crate::clock::rfc3339;
use crate::hub::Hub;
use crate::store::AgentRecord;

pub use error::AppError;

/// The hub's routes over `hub`, ready to serve or to call directly in tests.
pub fn app(hub: Hub) -> Router {
    Router::new()
        .route(ENROLL_PATH, post(enroll))
        .route("/api/v1/agents", get(list_agents))
        .route("/api/v1/agents/{agent}/batches", post(batches))
        .route("/api/v1/agents/{agent}/watermark", get(watermark))
        .route("/api/v1/records/{agent}/{seq}", get(record))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(TraceLayer::new_for_http())
        .with_state(hub)
}

/// Serves the API on `listener` until `shutdown` completes, then lets requests in flight
/// finish and waits for every queued write to commit.
pub async fn serve(
    hub: Hub,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(hub.clone()))
        .with_graceful_shutdown(shutdown)
        .await?;
    if let Err(e) = hub.db().flush().await {
        tracing::warn!(error = %e, "cannot drain the database writer");
    }
    Ok(())
}

type ApiResult<T> = Result<T, AppError>;

/// Reads the whole body, refusing more than `MAX_REQUEST_BYTES`.
async fn read_body(headers: &HeaderMap, body: Body) -> ApiResult<Bytes> {
    let too_large = || {
        AppError::new(
            ErrorCode::BodyTooLarge,
            format!("the request body is larger than {MAX_REQUEST_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return Err(too_large());
    }
    match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(AppError::new(
            ErrorCode::BadRequest,
            format!("cannot read the request body: {e}"),
        )),
    }
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        AppError::new(
            ErrorCode::MalformedJson,
            format!("the body is not JSON of the expected shape: {e}"),
        )
    })
}

fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query()
        .map_or_else(|| uri.path(), |pq| pq.as_str())
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn auth_headers(headers: &HeaderMap) -> AuthHeaders<'_> {
    AuthHeaders {
        agent: header_str(headers, HEADER_AGENT),
        timestamp: header_str(headers, HEADER_TIMESTAMP),
        nonce: header_str(headers, HEADER_NONCE),
        signature: header_str(headers, HEADER_SIGNATURE),
    }
}

fn bad_path(e: PathRejection) -> AppError {
    AppError::new(ErrorCode::BadRequest, e.body_text())
}

async fn require_api_key(hub: &Hub, headers: &HeaderMap) -> ApiResult<()> {
    hub.check_api_key(header_str(headers, header::AUTHORIZATION.as_str()))
        .await?;
    Ok(())
}

/// A signed agent request, authenticated: the agent as stored and the body.
async fn signed_request(
    hub: &Hub,
    agent: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<(AgentRecord, Bytes)> {
    let body = read_body(headers, body).await?;
    let agent = hub
        .authenticate(
            agent,
            &auth_headers(headers),
            method.as_str(),
            path_and_query(uri),
            &body,
        )
        .await?;
    Ok((agent, body))
}

async fn enroll(
    State(hub): State<Hub>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<EnrollResponse>> {
    let body = read_body(&headers, body).await?;
    let req: EnrollRequest = parse_json(&body)?;
    Ok(Json(hub.enroll(req).await?))
}

async fn batches(
    State(hub): State<Hub>,
    agent: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Signed<Receipt>>> {
    let Path(agent) = agent.map_err(bad_path)?;
    let (agent, body) = signed_request(&hub, &agent, &method, &uri, &headers, body).await?;
    let batch: BatchRequest = match parse_json(&body) {
        Ok(batch) => batch,
        Err(e) => {
            hub.note_contact(&agent.id).await;
            return Err(e);
        }
    };
    Ok(Json(hub.ingest(agent, batch).await?))
}

async fn watermark(
    State(hub): State<Hub>,
    agent: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Signed<Watermark>>> {
    let Path(agent) = agent.map_err(bad_path)?;
    let (agent, _) = signed_request(&hub, &agent, &method, &uri, &headers, body).await?;
    Ok(Json(hub.watermark(agent).await?))
}

async fn list_agents(
    State(hub): State<Hub>,
    headers: HeaderMap,
) -> ApiResult<Json<AgentsResponse>> {
    require_api_key(&hub, &headers).await?;
    Ok(Json(AgentsResponse {
        agents: hub.agents().await?,
    }))
}

/// A stored envelope as `GET /api/v1/records/{agent}/{seq}` shows it; `body` is the exact
/// stored bytes, embedded as raw JSON.
#[derive(Serialize)]
struct RecordView {
    agent_id: AgentId,
    seq: u64,
    prev: Digest,
    hash: Digest,
    sig: Signature,
    body: Box<RawValue>,
    received_at: String,
    outcome: Outcome,
    codes: Vec<String>,
}

async fn record(
    State(hub): State<Hub>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult<Json<RecordView>> {
    require_api_key(&hub, &headers).await?;
    let Path((agent, seq)) = path.map_err(bad_path)?;
    let not_found = || {
        AppError::new(
            ErrorCode::NotFound,
            format!("no record {seq} of agent {agent}"),
        )
    };
    let agent_id = AgentId::parse(&agent).map_err(|_| not_found())?;
    let seq_n: u64 = seq.parse().map_err(|_| {
        AppError::new(
            ErrorCode::BadRequest,
            format!("seq must be a positive integer, got {seq:?}"),
        )
    })?;
    let stored = hub.envelope(agent_id, seq_n).await?.ok_or_else(not_found)?;
    let body = String::from_utf8(stored.body)
        .ok()
        .and_then(|text| RawValue::from_string(text).ok())
        .ok_or_else(|| {
            tracing::error!(agent = %stored.agent, seq = stored.seq, "stored body is not JSON");
            AppError::new(
                ErrorCode::Internal,
                "the stored body cannot be shown as JSON",
            )
        })?;
    Ok(Json(RecordView {
        agent_id: stored.agent,
        seq: stored.seq,
        prev: stored.prev,
        hash: stored.hash,
        sig: stored.sig,
        body,
        received_at: rfc3339(stored.received_at_ms),
        outcome: stored.outcome,
        codes: stored.codes,
    }))
}

async fn healthz(State(hub): State<Hub>) -> ApiResult<Response> {
    match hub.check_health().await {
        Ok(()) => Ok(Json(serde_json::json!({"status": "ok"})).into_response()),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            Err(AppError::new(
                ErrorCode::Unavailable,
                "the database does not answer",
            ))
        }
    }
}

async fn metrics(State(hub): State<Hub>) -> ApiResult<Response> {
    let text = hub.metrics_text().await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn not_found(uri: Uri) -> AppError {
    AppError::new(
        ErrorCode::NotFound,
        format!("no such endpoint: {}", uri.path()),
    )
}

#[cfg(test)]
mod tests;
