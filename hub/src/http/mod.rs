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
//! | `POST /api/v1/agents/{agent}/key` | agent request signature (old key) | `Signed<KeyRotated>` |
//! | `GET /api/v1/policy` | agent request signature | `Signed<PolicyBundle>` (ETag), or 304 |
//! | `GET /api/v1/agents` | bearer API key | `AgentsResponse` |
//! | `GET /api/v1/records/{agent}/{seq}` | bearer API key | the stored envelope and verdict |
//! | `GET /api/v1/ledger?county=C&year=Y` | bearer API key | a county's totals for a year |
//! | `GET /api/v1/violations?county=C[&year=Y][&rule=R][&limit=N]` | bearer API key | violations |
//! | `GET /api/v1/ocds?county=C&year=Y[&ocid_prefix=P]` | bearer API key | OCDS 1.1 release package ([`crate::ocds`]) |
//! | `GET /api/v1/schema/record` | none | the JSON Schema of the v1 record (public documentation) |
//! | `GET /api/v1/openapi.json` | none | the OpenAPI 3.1 document of these routes ([`openapi`]) |
//! | `GET /healthz`, `GET /metrics` | none | status, Prometheus text |

pub mod error;
pub mod listener;
pub mod openapi;

use std::future::Future;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tongbu_shared::crypto::{Digest, Signature};
use tongbu_shared::ids::AgentId;
use tongbu_shared::ids::CountyCode;
use tongbu_shared::protocol::{
    AgentState, AgentsResponse, BatchRequest, ENROLL_PATH, EnrollRequest, EnrollResponse,
    ErrorCode, KeyRotated, MAX_REQUEST_BYTES, Outcome, POLICY_PATH, Receipt, RotateKeyRequest,
    Watermark,
};
use tongbu_shared::rules::Rule;
use tongbu_shared::signed::{
    HEADER_AGENT, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, Signed,
};
use tower_http::trace::TraceLayer;

use crate::auth::AuthHeaders;
use crate::clock::rfc3339;
use crate::console::{Console, ConsoleConfig};
use crate::hub::Hub;
use crate::ingest::{IngestError, MALFORMED_RECORD};
use crate::store::{AgentRecord, ViolationFilter, ViolationRow};

pub use error::AppError;
pub use listener::{PlainHttp, Transport};

/// The hub's routes over `hub` (with the console on its default settings), ready to serve or
/// to call directly in tests.
pub fn app(hub: Hub) -> Router {
    app_with(hub, ConsoleConfig::default())
}

/// The hub's routes, the console under `/console` with `console`'s settings.
pub fn app_with(hub: Hub, console: ConsoleConfig) -> Router {
    let mut router =
        Router::new().merge(crate::console::router(Console::new(hub.clone(), console)));
    for route in api_routes() {
        router = router.route(route.path, route.handler);
    }
    router
        .fallback(not_found)
        // Request spans only: an error reply is logged once, by `AppError`, with its cause;
        // the layer's own failure line would repeat it without one.
        .layer(TraceLayer::new_for_http().on_failure(()))
        .with_state(hub)
}

/// The method of an API route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    Post,
}

impl Verb {
    #[cfg_attr(not(test), allow(dead_code, reason = "read by the OpenAPI tests"))]
    pub(crate) fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
        }
    }
}

/// One route of the API (everything but the console).
pub(crate) struct ApiRoute {
    #[cfg_attr(not(test), allow(dead_code, reason = "read by the OpenAPI tests"))]
    pub(crate) verb: Verb,
    pub(crate) path: &'static str,
    handler: MethodRouter<Hub>,
}

fn api_route<H, T>(verb: Verb, path: &'static str, handler: H) -> ApiRoute
where
    H: Handler<T, Hub>,
    T: 'static,
{
    let handler = match verb {
        Verb::Get => get(handler),
        Verb::Post => post(handler),
    };
    ApiRoute {
        verb,
        path,
        handler,
    }
}

/// Every API route: [`app_with`] registers exactly these (besides the console), and the
/// OpenAPI document (`hub/openapi.json`) is tested against this list.
pub(crate) fn api_routes() -> Vec<ApiRoute> {
    use Verb::{Get, Post};
    vec![
        api_route(Post, ENROLL_PATH, enroll),
        api_route(Get, "/api/v1/agents", list_agents),
        api_route(Post, "/api/v1/agents/{agent}/batches", batches),
        api_route(Get, "/api/v1/agents/{agent}/watermark", watermark),
        api_route(Post, "/api/v1/agents/{agent}/key", rotate_key),
        api_route(Get, "/api/v1/records/{agent}/{seq}", record),
        api_route(Get, POLICY_PATH, policy),
        api_route(Get, "/api/v1/ledger", ledger),
        api_route(Get, "/api/v1/violations", violations),
        api_route(Get, "/api/v1/ocds", ocds),
        api_route(Get, RECORD_SCHEMA_PATH, record_schema),
        api_route(Get, openapi::OPENAPI_PATH, openapi::openapi),
        api_route(Get, "/healthz", healthz),
        api_route(Get, "/metrics", metrics),
    ]
}

/// Serves the API on `listener` until `shutdown` completes, then lets requests in flight
/// finish and waits for every queued write to commit.
pub async fn serve(
    hub: Hub,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(hub, listener, ConsoleConfig::default(), shutdown).await
}

/// [`serve`] with the console's settings, plain HTTP (in-process hubs on loopback).
pub async fn serve_with(
    hub: Hub,
    listener: TcpListener,
    console: ConsoleConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_over(hub, listener, console, Transport::Plain, shutdown).await
}

/// [`serve_with`] over `transport` (HTTPS, with plain HTTP for loopback peers or none; see
/// [`listener`]). The client's address reaches the handlers (the console's login limiter
/// counts failures per address).
pub async fn serve_over(
    hub: Hub,
    listener: TcpListener,
    console: ConsoleConfig,
    transport: Transport,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener::serve(
        listener,
        app_with(hub.clone(), console),
        transport,
        shutdown,
    )
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

async fn rotate_key(
    State(hub): State<Hub>,
    agent: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Signed<KeyRotated>>> {
    let Path(agent) = agent.map_err(bad_path)?;
    let (agent, body) = signed_request(&hub, &agent, &method, &uri, &headers, body).await?;
    let req: RotateKeyRequest = parse_json(&body)?;
    Ok(Json(hub.rotate_key(agent, req).await?))
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
    detail: Option<String>,
    policy_version: Option<u64>,
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
        detail: stored.detail,
        policy_version: stored.policy_version,
    }))
}

/// A signed document on the wire, built from stored bytes: the payload exactly as signed.
#[derive(Serialize)]
struct SignedWire<'a> {
    payload: &'a RawValue,
    sig: Signature,
}

/// Whether an `If-None-Match` header value names `etag` (or is `*`).
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|tag| {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag == etag
    })
}

async fn policy(
    State(hub): State<Hub>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    // No agent in the path: the request is the signing agent's own.
    let agent = header_str(&headers, HEADER_AGENT)
        .unwrap_or_default()
        .to_owned();
    let (agent, _) = signed_request(&hub, &agent, &method, &uri, &headers, body).await?;
    if agent.state == AgentState::Revoked {
        return Err(IngestError::AgentRevoked.into());
    }
    let current = hub.current_policy().await?;
    let etag = format!("\"{}\"", current.version);
    let etag_header = HeaderValue::from_str(&etag)
        .map_err(|e| AppError::new(ErrorCode::Internal, format!("etag: {e}")))?;
    if header_str(&headers, header::IF_NONE_MATCH.as_str()).is_some_and(|v| etag_matches(v, &etag))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response());
    }
    let payload: &RawValue = serde_json::from_slice(current.payload()).map_err(|e| {
        tracing::error!(version = current.version, error = %e, "stored policy is not JSON");
        AppError::new(ErrorCode::Internal, "the stored policy cannot be sent")
    })?;
    Ok((
        [(header::ETAG, etag_header)],
        Json(SignedWire {
            payload,
            sig: current.signature(),
        }),
    )
        .into_response())
}

/// Query parameters, checked against the names an endpoint takes: an unknown or repeated
/// parameter is refused, so a typo never silently widens a query.
struct Params(Vec<(String, String)>);

fn bad_param(name: &str, problem: impl std::fmt::Display) -> AppError {
    AppError::new(
        ErrorCode::BadRequest,
        format!("query parameter `{name}`: {problem}"),
    )
}

impl Params {
    fn new(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
        allowed: &[&str],
    ) -> ApiResult<Params> {
        let Query(pairs) =
            query.map_err(|e| AppError::new(ErrorCode::BadRequest, e.body_text()))?;
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                return Err(bad_param(
                    name,
                    format!("unknown; this endpoint takes {}", allowed.join(", ")),
                ));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(bad_param(name, "given more than once"));
            }
        }
        Ok(Params(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> ApiResult<&str> {
        self.get(name).ok_or_else(|| bad_param(name, "is required"))
    }

    fn county(&self, name: &str) -> ApiResult<CountyCode> {
        CountyCode::parse(self.required(name)?).map_err(|e| bad_param(name, e))
    }

    fn year(value: &str, name: &str) -> ApiResult<i32> {
        value
            .parse::<i32>()
            .ok()
            .filter(|y| (1990..=2199).contains(y))
            .ok_or_else(|| {
                bad_param(
                    name,
                    format!("must be a year from 1990 to 2199, got {value:?}"),
                )
            })
    }
}

/// `GET /api/v1/ledger`: exactly these fields (DESIGN.md, "Interfaces").
#[derive(Serialize)]
struct LedgerView {
    county: CountyCode,
    year: i32,
    budget_approved_fen: i64,
    contracted_fen: i64,
    paid_fen: i64,
    accepted: i64,
    held: i64,
    rejected: i64,
}

async fn ledger(
    State(hub): State<Hub>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<LedgerView>> {
    require_api_key(&hub, &headers).await?;
    let params = Params::new(query, &["county", "year"])?;
    let county = params.county("county")?;
    let year = Params::year(params.required("year")?, "year")?;
    let t = hub.ledger(county.clone(), year).await?;
    Ok(Json(LedgerView {
        county,
        year,
        budget_approved_fen: t.budget_approved,
        contracted_fen: t.contracted,
        paid_fen: t.paid,
        accepted: t.accepted,
        held: t.held,
        rejected: t.rejected,
    }))
}

/// Most violations one request lists.
const MAX_VIOLATIONS: u32 = 10_000;
/// Violations listed when no `limit` is given.
const DEFAULT_VIOLATIONS: u32 = 1_000;

#[derive(Serialize)]
struct ViolationsView {
    violations: Vec<ViolationView>,
}

/// One row of `GET /api/v1/violations`: the contract's fields first, then extras.
#[derive(Serialize)]
struct ViolationView {
    agent_id: AgentId,
    seq: u64,
    kind: String,
    id: String,
    rule: String,
    detail: String,
    county: CountyCode,
    fiscal_year: Option<i32>,
    /// The record's outcome now (`accepted` for a warning).
    outcome: Outcome,
    /// When the rule was found (RFC 3339).
    at: String,
}

impl From<ViolationRow> for ViolationView {
    fn from(row: ViolationRow) -> ViolationView {
        let v = row.violation;
        ViolationView {
            agent_id: v.agent,
            seq: v.seq,
            kind: v.kind,
            id: v.entity_id,
            rule: v.rule,
            detail: v.detail,
            county: v.county,
            fiscal_year: v.fiscal_year,
            outcome: row.outcome,
            at: rfc3339(v.at_ms),
        }
    }
}

async fn violations(
    State(hub): State<Hub>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<ViolationsView>> {
    require_api_key(&hub, &headers).await?;
    let params = Params::new(query, &["county", "year", "rule", "limit"])?;
    let county = params.county("county")?;
    let year = params
        .get("year")
        .map(|y| Params::year(y, "year"))
        .transpose()?;
    let rule = params
        .get("rule")
        .map(|r| {
            if r == MALFORMED_RECORD || Rule::parse(r).is_some() {
                Ok(r.to_owned())
            } else {
                Err(bad_param("rule", format!("{r:?} is not a rule code")))
            }
        })
        .transpose()?;
    let limit = params
        .get("limit")
        .map(|l| {
            l.parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_VIOLATIONS).contains(n))
                .ok_or_else(|| {
                    bad_param(
                        "limit",
                        format!("must be from 1 to {MAX_VIOLATIONS}, got {l:?}"),
                    )
                })
        })
        .transpose()?
        .unwrap_or(DEFAULT_VIOLATIONS);
    let rows = hub
        .violations(ViolationFilter {
            county,
            year,
            rule,
            limit,
        })
        .await?;
    Ok(Json(ViolationsView {
        violations: rows.into_iter().map(ViolationView::from).collect(),
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

/// Where the JSON Schema of the v1 record is served.
pub const RECORD_SCHEMA_PATH: &str = "/api/v1/schema/record";

/// `GET /api/v1/ocds`: a county's accepted records of a year as an OCDS 1.1 release package.
async fn ocds(
    State(hub): State<Hub>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Response> {
    use crate::ocds::{ExportError, ExportOptions, check_prefix, export_json};
    require_api_key(&hub, &headers).await?;
    let params = Params::new(query, &["county", "year", "ocid_prefix"])?;
    let county = params.county("county")?;
    let year = Params::year(params.required("year")?, "year")?;
    let mut opts = ExportOptions::default();
    if let Some(prefix) = params.get("ocid_prefix") {
        check_prefix(prefix).map_err(|e| bad_param("ocid_prefix", e))?;
        opts.ocid_prefix = prefix.to_owned();
    }
    let json = export_json(&hub, county, year, opts)
        .await
        .map_err(|e| match e {
            ExportError::UnknownCounty(_) => AppError::new(ErrorCode::UnknownCounty, e.to_string()),
            ExportError::Nothing { .. } => AppError::new(ErrorCode::NotFound, e.to_string()),
            ExportError::Store(e) => AppError::from(e),
            ExportError::Internal(e) => AppError::from(crate::store::StoreError::Backend(e)),
        })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// `GET /api/v1/schema/record`: public documentation, like the OpenAPI document.
async fn record_schema() -> Response {
    (
        [(header::CONTENT_TYPE, "application/schema+json")],
        tongbu_shared::schema::RECORD_SCHEMA_V1,
    )
        .into_response()
}

async fn metrics(State(hub): State<Hub>) -> ApiResult<Response> {
    let text = hub.metrics_text().await?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

async fn not_found(uri: Uri) -> AppError {
    AppError::new(
        ErrorCode::NotFound,
        format!("no such endpoint: {}", uri.path()),
    )
}

#[cfg(test)]
mod tests;
