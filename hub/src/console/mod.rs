//! The provincial web console under `/console`: server-rendered HTML (minijinja templates
//! embedded from `hub/templates/`), no JavaScript, one stylesheet from `/console/assets/`.
//!
//! Access invariants: every page and endpoint but the login form and the stylesheet needs a
//! valid server-side session (else 303 to `/console/login?next=…`); a session is a random
//! 32-byte token in the `tongbu_session` cookie of which only the SHA-256 is stored, with an
//! absolute and an idle expiry read from the hub's injected clock; every POST carries the
//! session's CSRF token (else 403, nothing changes); only `admin` users may change anything
//! (write controls are not rendered for operators and every write route refuses them with
//! 403); failed logins are limited per user name and per client address; every response
//! carries the security headers of [`security_headers`]; every admin action is audited.
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET/POST /console/login`, `POST /console/logout` | anyone / session | sign in and out |
//! | `GET /console/` | session | overview |
//! | `GET /console/counties`, `GET /console/counties/{code}` | session | counties |
//! | `POST /console/counties` | admin | add a county |
//! | `GET /console/trace?id=X[&county=C]` | session | a project end to end |
//! | `GET /console/violations`, `POST /console/violations/{id}/review` | session / admin | |
//! | `GET /console/agents`, `POST /console/tokens`, `POST /console/agents/{id}/revoke`, `POST /console/agents/{id}/lift` | session / admin | |
//! | `GET/POST /console/policy` | session / admin | |
//! | `GET /console/audit` | session | the audit log |
//! | `GET /console/export/ledger.csv`, `GET /console/export/violations.csv` | session | CSV |

mod actions;
mod chart;
mod export;
mod i18n;
mod pages;
pub mod password;
mod render;
mod session;
pub mod users;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tongbu_shared::certpin::CertFingerprint;

use crate::hub::Hub;
use crate::store::StoreError;

pub use i18n::Lang;

/// How the console treats sessions and logins.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Mark the session cookie `Secure` (only when the console is served over HTTPS).
    pub secure_cookie: bool,
    /// A session ends this long after login, whatever happens.
    pub session_lifetime: Duration,
    /// A session ends after this long without a request.
    pub idle_timeout: Duration,
    /// Failed logins are counted over this window...
    pub login_window: Duration,
    /// ...and this many of them for one user name or one client address lock it out.
    pub max_failed_logins: usize,
    /// The fingerprint of the certificate the hub serves HTTPS with: tokens issued here carry
    /// it, so agents pin it at enrollment (`None`: a hub without TLS issues plain tokens).
    pub token_pin: Option<CertFingerprint>,
}

impl Default for ConsoleConfig {
    fn default() -> ConsoleConfig {
        ConsoleConfig {
            secure_cookie: false,
            session_lifetime: Duration::from_secs(8 * 3600),
            idle_timeout: Duration::from_secs(30 * 60),
            login_window: Duration::from_secs(15 * 60),
            max_failed_logins: 5,
            token_pin: None,
        }
    }
}

/// The console's state: the hub, its settings, the login limiter and the templates.
#[derive(Clone)]
pub struct Console {
    hub: Hub,
    config: Arc<ConsoleConfig>,
    failures: Arc<Mutex<HashMap<String, Vec<i64>>>>,
    templates: Arc<minijinja::Environment<'static>>,
}

impl Console {
    pub fn new(hub: Hub, config: ConsoleConfig) -> Console {
        Console {
            hub,
            config: Arc::new(config),
            failures: Arc::default(),
            templates: Arc::new(render::environment()),
        }
    }

    fn now_ms(&self) -> i64 {
        self.hub.now_ms()
    }

    fn window_ms(&self) -> i64 {
        i64::try_from(self.config.login_window.as_millis()).unwrap_or(i64::MAX)
    }

    /// Whether a login for any of `keys` is locked out now.
    fn login_locked(&self, keys: &[String]) -> bool {
        let now = self.now_ms();
        let window = self.window_ms();
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        keys.iter().any(|k| {
            failures.get_mut(k).is_some_and(|times| {
                times.retain(|t| now.saturating_sub(*t) < window);
                times.len() >= self.config.max_failed_logins
            })
        })
    }

    fn note_login_failure(&self, keys: &[String]) {
        let now = self.now_ms();
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        for k in keys {
            failures.entry(k.clone()).or_default().push(now);
        }
    }

    fn clear_login_failures(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// The console's routes, with their state, ready to merge into the hub's router.
pub fn router<S: Clone + Send + Sync + 'static>(console: Console) -> Router<S> {
    Router::new()
        .route("/console", get(pages::to_overview))
        .route("/console/", get(pages::overview))
        .route(
            "/console/login",
            get(session::login_form).post(session::login),
        )
        .route("/console/logout", post(session::logout))
        .route("/console/assets/console.css", get(pages::stylesheet))
        .route(
            "/console/counties",
            get(pages::counties).post(actions::add_county),
        )
        .route("/console/counties/{code}", get(pages::county))
        .route("/console/trace", get(pages::trace))
        .route("/console/violations", get(pages::violations))
        .route(
            "/console/violations/{id}/review",
            post(actions::review_violation),
        )
        .route("/console/agents", get(pages::agents))
        .route("/console/tokens", post(actions::issue_token))
        .route("/console/agents/{id}/revoke", post(actions::revoke_agent))
        .route("/console/agents/{id}/lift", post(actions::lift_quarantine))
        .route(
            "/console/policy",
            get(pages::policy).post(actions::set_policy),
        )
        .route("/console/audit", get(pages::audit))
        .route("/console/export/ledger.csv", get(export::ledger_csv))
        .route(
            "/console/export/violations.csv",
            get(export::violations_csv),
        )
        .layer(middleware::from_fn(security_headers))
        .with_state(console)
}

/// The content security policy of every console response: no inline script or style.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'";

/// Adds the security headers to every console response (and `Cache-Control: no-store` to
/// everything but the stylesheet).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Why a console request failed, as a small HTML page with the right status.
#[derive(Debug)]
pub enum Fail {
    /// No valid session: go to the login form, then back to `next`.
    Login {
        next: String,
    },
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    Internal,
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        tracing::error!(error = %e, "console: store error");
        Fail::Internal
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            Fail::Login { next } => {
                let to = format!(
                    "/console/login?next={}",
                    serde_urlencoded::to_string([("x", next.as_str())])
                        .unwrap_or_default()
                        .trim_start_matches("x=")
                );
                return (
                    StatusCode::SEE_OTHER,
                    [(header::LOCATION, to)],
                    "login required",
                )
                    .into_response();
            }
            Fail::Forbidden(m) => (StatusCode::FORBIDDEN, "403 禁止 Forbidden", m),
            Fail::NotFound(m) => (StatusCode::NOT_FOUND, "404 未找到 Not found", m),
            Fail::BadRequest(m) => (StatusCode::BAD_REQUEST, "400 请求有误 Bad request", m),
            Fail::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 内部错误 Internal error",
                "see the hub's log".to_owned(),
            ),
        };
        let body = format!(
            "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>{title}</title>\
             <link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head><body><main>\
             <h1 id=\"page-error\">{title}</h1><p class=\"error\">{}</p>\
             <p><a href=\"/console/\">← 概览 Overview</a></p></main></body></html>",
            render::escape(&message)
        );
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

type PageResult = Result<Response, Fail>;
