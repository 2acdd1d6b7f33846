//! Console sessions: login and logout, the session cookie, and the checks every request
//! passes (valid session, CSRF token on POST, admin role for changes). Only the SHA-256 of
//! the session token is stored; a session ends 8 h after login or 30 min after its last
//! request (both configurable), whichever comes first.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use minijinja::context;
use ring::rand::SecureRandom;
use tongbu_shared::crypto::Digest;

use super::{Console, Fail, PageResult, i18n::Lang, password};
use crate::auth::secret_hash;
use crate::http::listener::OverTls;
use crate::store::{AuditEntry, ConsoleSession, Role, StoreError};

pub const SESSION_COOKIE: &str = "tongbu_session";
pub const LANG_COOKIE: &str = "tongbu_lang";

/// A signed-in user on this request.
#[derive(Debug, Clone)]
pub struct Session {
    pub username: String,
    pub role: Role,
    pub csrf: String,
    token_hash: Digest,
}

impl Session {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Who the audit log names for this user's actions.
    pub fn actor(&self) -> String {
        format!("console:{}", self.username)
    }
}

/// The value of cookie `name`, if the request sent it.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Where a request was going, to come back to after login.
pub fn next_of(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned())
}

/// Only a path on this console is a place to go after login (never another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/console")
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.contains("://") =>
        {
            n.to_owned()
        }
        _ => "/console/".to_owned(),
    }
}

impl Console {
    /// The session of this request, if it has a valid one (touching it); otherwise a redirect
    /// to the login form.
    pub async fn session(&self, headers: &HeaderMap, uri: &Uri) -> Result<Session, Fail> {
        let login = || Fail::Login { next: next_of(uri) };
        let token = cookie(headers, SESSION_COOKIE).ok_or_else(login)?;
        let hash = secret_hash(token);
        let now = self.now_ms();
        let idle = i64::try_from(self.config.idle_timeout.as_millis()).unwrap_or(i64::MAX);
        let found = self
            .hub
            .db()
            .read(move |r| {
                let Some(s) = r.console_session(&hash)? else {
                    return Ok::<_, StoreError>(None);
                };
                let user = r.console_user(&s.username)?;
                Ok(user.map(|u| (s, u)))
            })
            .await?;
        let Some((stored, user)) = found else {
            return Err(login());
        };
        let live = !user.disabled
            && now < stored.expires_at_ms
            && now.saturating_sub(stored.last_seen_ms) < idle;
        if !live {
            self.hub
                .db()
                .write(move |w| w.delete_session(&hash))
                .await?;
            return Err(login());
        }
        self.hub
            .db()
            .write(move |w| w.touch_session(&hash, now))
            .await?;
        Ok(Session {
            username: user.username,
            role: user.role,
            csrf: stored.csrf,
            token_hash: hash,
        })
    }

    /// A POST that changes something: a session, its CSRF token, and the admin role.
    pub async fn admin_post(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        form: &HashMap<String, String>,
    ) -> Result<Session, Fail> {
        let s = self.checked_post(headers, uri, form).await?;
        if !s.is_admin() {
            return Err(Fail::Forbidden(
                "只有管理员可以修改 / only admins may change this".into(),
            ));
        }
        Ok(s)
    }

    /// A POST from a signed-in user with the session's CSRF token.
    pub async fn checked_post(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        form: &HashMap<String, String>,
    ) -> Result<Session, Fail> {
        let s = self.session(headers, uri).await?;
        let sent = form.get("csrf").map(String::as_str).unwrap_or_default();
        if !constant_time_eq(sent.as_bytes(), s.csrf.as_bytes()) {
            return Err(Fail::Forbidden(
                "CSRF 令牌无效 / the form's CSRF token is missing or wrong; reload the page".into(),
            ));
        }
        Ok(s)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses an `application/x-www-form-urlencoded` body; a repeated field keeps its first value.
pub fn parse_form(body: &Bytes) -> Result<HashMap<String, String>, Fail> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|e| Fail::BadRequest(format!("the form cannot be read: {e}")))?;
    let mut map = HashMap::new();
    for (k, v) in pairs {
        map.entry(k).or_insert(v);
    }
    Ok(map)
}

fn random_token(console: &Console) -> Result<String, Fail> {
    let mut bytes = [0u8; 32];
    console.hub.rng().fill(&mut bytes).map_err(|_| {
        tracing::error!("the system random number generator failed");
        Fail::Internal
    })?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn client_addr(addr: Option<&ConnectInfo<SocketAddr>>) -> String {
    addr.map_or_else(|| "unknown".to_owned(), |a| a.0.ip().to_string())
}

pub async fn login_form(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    let lang = Lang::of(&headers, &q);
    let next = safe_next(q.get("next").map(String::as_str));
    c.render_login(lang, &next, "", None, StatusCode::OK)
}

impl Console {
    fn render_login(
        &self,
        lang: Lang,
        next: &str,
        username: &str,
        error: Option<&str>,
        status: StatusCode,
    ) -> PageResult {
        let mut resp = self.render("login.html", lang, None, context! { next, username, error })?;
        *resp.status_mut() = status;
        Ok(resp)
    }
}

/// The largest login form read.
const MAX_LOGIN_FORM: usize = 16 * 1024;

pub async fn login(State(c): State<Console>, req: Request) -> PageResult {
    let addr = req.extensions().get::<ConnectInfo<SocketAddr>>().cloned();
    // A login over HTTPS gets a `Secure` cookie, so the browser never sends it in the clear.
    let over_tls = req.extensions().get::<OverTls>().is_some();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), MAX_LOGIN_FORM)
        .await
        .map_err(|_| Fail::BadRequest("the login form is too large".into()))?;
    let form = parse_form(&body)?;
    let lang = Lang::of(&headers, &HashMap::new());
    let username = form.get("username").map_or("", |s| s.trim()).to_owned();
    let password = form.get("password").cloned().unwrap_or_default();
    let next = safe_next(form.get("next").map(String::as_str));
    let addr = client_addr(addr.as_ref());
    let keys = [format!("user:{username}"), format!("addr:{addr}")];
    let t = lang.table();
    if c.login_locked(&keys) {
        return c.render_login(
            lang,
            &next,
            &username,
            Some(t.get("login_locked").copied().unwrap_or_default()),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let name = username.clone();
    let user = c.hub.db().read(move |r| r.console_user(&name)).await?;
    let ok = match &user {
        Some(u) if !u.disabled => {
            let hash = u.password_hash.clone();
            tokio::task::spawn_blocking(move || password::verify(&password, &hash))
                .await
                .unwrap_or(false)
        }
        _ => {
            // Spend about as long as a real check, so timing does not tell which users exist.
            tokio::task::spawn_blocking(move || password::verify(&password, password::dummy_hash()))
                .await
                .unwrap_or(false)
        }
    };
    let now = c.now_ms();
    let Some(user) = user.filter(|_| ok) else {
        c.note_login_failure(&keys);
        let detail = format!("user {username:?} from {addr}");
        c.hub
            .db()
            .write(move |w| {
                w.insert_audit(&AuditEntry {
                    at_ms: now,
                    actor: "console".into(),
                    action: "console.login_failed".into(),
                    detail,
                })
            })
            .await?;
        return c.render_login(
            lang,
            &next,
            &username,
            Some(t.get("login_failed").copied().unwrap_or_default()),
            StatusCode::UNAUTHORIZED,
        );
    };
    c.clear_login_failures(&keys[0]);
    let token = random_token(&c)?;
    let csrf = random_token(&c)?;
    let lifetime = i64::try_from(c.config.session_lifetime.as_millis()).unwrap_or(i64::MAX);
    let session = ConsoleSession {
        token_hash: secret_hash(&token),
        username: user.username.clone(),
        csrf,
        created_at_ms: now,
        expires_at_ms: now.saturating_add(lifetime),
        last_seen_ms: now,
    };
    let detail = format!("role {} from {addr}", user.role);
    let actor = format!("console:{}", user.username);
    c.hub
        .db()
        .write(move |w| {
            w.insert_session(&session)?;
            w.insert_audit(&AuditEntry {
                at_ms: now,
                actor,
                action: "console.login".into(),
                detail,
            })
        })
        .await?;
    let secure = if c.config.secure_cookie || over_tls {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={}{secure}",
        c.config.session_lifetime.as_secs()
    );
    Ok((
        StatusCode::SEE_OTHER,
        [(header::LOCATION, next), (header::SET_COOKIE, cookie)],
    )
        .into_response())
}

pub async fn logout(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> PageResult {
    let form = parse_form(&body)?;
    let s = c.checked_post(&headers, &uri, &form).await?;
    let hash = s.token_hash;
    c.hub.db().write(move |w| w.delete_session(&hash)).await?;
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0");
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/login".to_owned()),
            (header::SET_COOKIE, clear),
        ],
    )
        .into_response())
}

/// A `Set-Cookie` value remembering the language.
pub fn lang_cookie(lang: Lang) -> String {
    format!(
        "{LANG_COOKIE}={}; SameSite=Strict; Path=/console; Max-Age=31536000",
        lang.code()
    )
}
