//! HTTP-level tests of the console: the real router (built once, so the login limiter keeps
//! its state) over a temporary data directory and a manual clock, called with `oneshot`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use super::password::hash_with;
use super::users::put_user;
use super::*;
use crate::auth::secret_hash;
use crate::clock::{Clock as _, ManualClock};
use crate::store::{Role, StoreError};
use tongbu_shared::crypto::{Digest, Domain};
use tongbu_shared::ids::AgentId;
use tongbu_shared::protocol::{BatchRequest, ENROLL_PATH, EnrollRequest, EnrollResponse};
use tongbu_shared::signed::{RequestAuth, enroll_proof_bytes};
use tongbu_shared::{CountyCode, Envelope, KeyPair};

const NOW_MS: i64 = 1_795_762_113_000;
const ADMIN_PW: &str = "admin-password-1";
const OPER_PW: &str = "operator-password-1";

const LINE: &str = r#"{"kind":"budget_line","id":"BL-1","rev":1,"county":"430112","department":"101001","fiscal_year":2024,"catalogue_code":"A0501","amount_fen":123456789,"stage":"approved","approved_on":"2024-01-15"}"#;
const OVER: &str = r#"{"kind":"contract","id":"C-1","rev":1,"county":"430112","budget_line_id":"BL-1","supplier_uscc":"91350100M000100Y43","supplier_name":"颐养居家养老服务中心","method":"public_tender","catalogue_code":"A0501","amount_fen":923456789,"signed_on":"2024-03-01"}"#;
const FITS: &str = r#"{"kind":"contract","id":"C-2","rev":1,"county":"430112","budget_line_id":"BL-1","supplier_uscc":"91350100M000100Y43","supplier_name":"颐养居家养老服务中心","method":"public_tender","catalogue_code":"A0501","amount_fen":600000,"signed_on":"2024-03-01"}"#;
const PAY: &str = r#"{"kind":"payment","id":"P-2","rev":1,"county":"430112","contract_id":"C-2","amount_fen":100000,"paid_on":"2024-04-01","voucher_no":"GK-2"}"#;

struct T {
    _dir: tempfile::TempDir,
    hub: Hub,
    clock: Arc<ManualClock>,
    app: Router,
}

struct Login {
    cookie: String,
    csrf: String,
}

fn county() -> CountyCode {
    CountyCode::parse("430112").unwrap()
}

async fn setup() -> T {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW_MS));
    let hub = Hub::open(dir.path(), clock.clone()).unwrap();
    hub.add_county(county(), "望城区".into()).await.unwrap();
    let cheap = argon2::Params::new(256, 1, 1, None).unwrap();
    for (name, role, pw) in [
        ("admin1", Role::Admin, ADMIN_PW),
        ("oper1", Role::Operator, OPER_PW),
    ] {
        let hash = hash_with(pw, cheap.clone()).unwrap();
        hub.db()
            .write(move |w| put_user(w, NOW_MS, "test", name, role, hash, false))
            .await
            .unwrap();
    }
    let app = crate::http::app_with(hub.clone(), ConsoleConfig::default());
    T {
        _dir: dir,
        hub,
        clock,
        app,
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(t: &T, req: Request<Body>) -> Reply {
    let resp = t.app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn get(uri: &str, login: Option<&Login>) -> Request<Body> {
    let mut req = Request::get(uri);
    if let Some(l) = login {
        req = req.header("cookie", &l.cookie);
    }
    req.body(Body::empty()).unwrap()
}

fn form(fields: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(fields).unwrap()
}

fn post(uri: &str, login: Option<&Login>, fields: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::post(uri).header("content-type", "application/x-www-form-urlencoded");
    if let Some(l) = login {
        req = req.header("cookie", &l.cookie);
    }
    req.body(Body::from(form(fields))).unwrap()
}

/// Posts with the session's CSRF token added.
fn post_csrf(uri: &str, login: &Login, fields: &[(&str, &str)]) -> Request<Body> {
    let mut all = fields.to_vec();
    all.push(("csrf", &login.csrf));
    post(uri, Some(login), &all)
}

async fn try_login(t: &T, user: &str, pw: &str) -> Reply {
    send(
        t,
        post(
            "/console/login",
            None,
            &[
                ("username", user),
                ("password", pw),
                ("next", "/console/agents"),
            ],
        ),
    )
    .await
}

async fn login(t: &T, user: &str, pw: &str) -> Login {
    let r = try_login(t, user, pw).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let set = r.headers.get("set-cookie").unwrap().to_str().unwrap();
    let token = set
        .strip_prefix("tongbu_session=")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let hash = secret_hash(&token);
    let csrf = t
        .hub
        .db()
        .read(move |r| r.console_session(&hash))
        .await
        .unwrap()
        .unwrap()
        .csrf;
    Login {
        cookie: format!("tongbu_session={token}"),
        csrf,
    }
}

async fn audit_actions(t: &T) -> Vec<String> {
    t.hub
        .db()
        .read(|r| r.audit_page(None, 1000))
        .await
        .unwrap()
        .into_iter()
        .map(|r| format!("{} {} {}", r.entry.actor, r.entry.action, r.entry.detail))
        .collect()
}

// ---- agents and records, through the real agent API -------------------------------------

async fn enroll(t: &T, token: &str, key: &KeyPair) -> Result<AgentId, StatusCode> {
    let proof = key.sign(
        Domain::Enroll,
        &enroll_proof_bytes(token, &key.public_key()),
    );
    let req = EnrollRequest {
        token: token.to_owned(),
        public_key: key.public_key(),
        proof,
        agent_version: "0.1.0".into(),
        hostname: None,
    };
    let r = send(
        t,
        Request::post(ENROLL_PATH)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&req).unwrap()))
            .unwrap(),
    )
    .await;
    if r.status != StatusCode::OK {
        return Err(r.status);
    }
    let resp: EnrollResponse = serde_json::from_str(&r.body).unwrap();
    Ok(resp.agent_id)
}

async fn send_batch(t: &T, key: &KeyPair, agent: &AgentId, envs: &[Envelope]) -> StatusCode {
    let body = serde_json::to_vec(&BatchRequest {
        heartbeat: tongbu_shared::protocol::Heartbeat {
            head_seq: envs.last().map_or(0, |e| e.seq),
            queue_depth: 0,
            agent_version: "0.1.0".into(),
            last_error: None,
            outcome_cursor: 0,
            log_size: 0,
        },
        envelopes: envs.to_vec(),
    })
    .unwrap();
    let uri = format!("/api/v1/agents/{agent}/batches");
    let auth = RequestAuth::sign(
        key,
        agent,
        "POST",
        &uri,
        t.clock.now_ms() / 1000,
        {
            use std::sync::atomic::{AtomicU64, Ordering};
            static NEXT: AtomicU64 = AtomicU64::new(1);
            format!("{:032x}", NEXT.fetch_add(1, Ordering::Relaxed))
        },
        &body,
    );
    let mut req = Request::post(&uri);
    for (name, value) in auth.headers() {
        req = req.header(name, value);
    }
    send(t, req.body(Body::from(body)).unwrap()).await.status
}

/// An agent with four records: a budget line, a contract over it (rejected), one that fits
/// and a payment on it.
async fn with_records(t: &T) -> (KeyPair, AgentId) {
    let key = KeyPair::from_seed(&[7; 32]).unwrap();
    let token = t.hub.issue_token(county(), 72).await.unwrap();
    let agent = enroll(t, token.token.expose(), &key).await.unwrap();
    let mut prev = Digest::GENESIS;
    let envs: Vec<Envelope> = [LINE, OVER, FITS, PAY]
        .iter()
        .zip(1..)
        .map(|(b, seq)| {
            let e = Envelope::sign(&key, agent.clone(), seq, prev, b.as_bytes().to_vec());
            prev = e.hash();
            e
        })
        .collect();
    assert_eq!(send_batch(t, &key, &agent, &envs).await, StatusCode::OK);
    (key, agent)
}

const PAGES: &[(&str, &str)] = &[
    ("/console/", "page-overview"),
    ("/console/counties", "page-counties"),
    ("/console/counties/430112", "page-county"),
    ("/console/trace?id=P-2", "page-trace"),
    ("/console/violations", "page-violations"),
    ("/console/agents", "page-agents"),
    ("/console/policy", "page-policy"),
    ("/console/audit", "page-audit"),
];

const WRITES: &[&str] = &[
    "/console/counties",
    "/console/tokens",
    "/console/violations/1/review",
    "/console/agents/430112-00000001/revoke",
    "/console/agents/430112-00000001/lift",
    "/console/policy",
];

// ---- access --------------------------------------------------------------------------

#[tokio::test]
async fn without_a_session_everything_redirects_to_login() {
    let t = setup().await;
    for (uri, _) in PAGES {
        let r = send(&t, get(uri, None)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{uri}");
        assert!(
            r.location().starts_with("/console/login?next=%2Fconsole"),
            "{uri}: {}",
            r.location()
        );
    }
    for uri in [
        "/console/export/ledger.csv",
        "/console/export/violations.csv",
    ] {
        assert_eq!(send(&t, get(uri, None)).await.status, StatusCode::SEE_OTHER);
    }
    for uri in WRITES.iter().chain(&["/console/logout"]) {
        let r = send(&t, post(uri, None, &[("csrf", "x")])).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{uri}");
    }
    // A forged cookie is no session either.
    let fake = Login {
        cookie: "tongbu_session=forged".into(),
        csrf: String::new(),
    };
    assert_eq!(
        send(&t, get("/console/", Some(&fake))).await.status,
        StatusCode::SEE_OTHER
    );
    // The login form itself and the stylesheet need none.
    let r = send(&t, get("/console/login?next=/console/agents", None)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains(r#"id="login-form""#) && r.body.contains(r#"name="password""#));
    assert_eq!(
        send(&t, get("/console/assets/console.css", None))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn login_sets_a_strict_cookie_and_wrong_passwords_are_audited() {
    let t = setup().await;
    let r = try_login(&t, "admin1", ADMIN_PW).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/console/agents");
    let cookie = r.headers.get("set-cookie").unwrap().to_str().unwrap();
    for flag in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP by default: {cookie}"
    );
    // Only the hash of the token is stored.
    let token = cookie
        .strip_prefix("tongbu_session=")
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let hash = secret_hash(token);
    assert!(
        t.hub
            .db()
            .read(move |r| r.console_session(&hash))
            .await
            .unwrap()
            .is_some()
    );

    let bad = try_login(&t, "admin1", "not-the-password").await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.body.contains(r#"id="login-error""#), "{}", bad.body);
    assert!(bad.headers.get("set-cookie").is_none());
    let unknown = try_login(&t, "nobody", "not-the-password").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    let audit = audit_actions(&t).await;
    assert!(
        audit
            .iter()
            .any(|a| a.starts_with("console:admin1 console.login ")),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|a| a.contains("console.login_failed") && a.contains("admin1")),
        "{audit:?}"
    );

    // An absolute `next` is never followed.
    let r = send(
        &t,
        post(
            "/console/login",
            None,
            &[
                ("username", "admin1"),
                ("password", ADMIN_PW),
                ("next", "https://evil.example/"),
            ],
        ),
    )
    .await;
    assert_eq!(r.location(), "/console/");

    // Logout ends the session.
    let l = login(&t, "admin1", ADMIN_PW).await;
    let r = send(&t, post_csrf("/console/logout", &l, &[])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        send(&t, get("/console/", Some(&l))).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn the_secure_flag_is_configurable() {
    let t = setup().await;
    let app = crate::http::app_with(
        t.hub.clone(),
        ConsoleConfig {
            secure_cookie: true,
            ..ConsoleConfig::default()
        },
    );
    let resp = app
        .oneshot(post(
            "/console/login",
            None,
            &[("username", "admin1"), ("password", ADMIN_PW)],
        ))
        .await
        .unwrap();
    let cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
}

async fn county_count(t: &T) -> usize {
    t.hub.db().read(|r| r.counties()).await.unwrap().len()
}

#[tokio::test]
async fn a_bad_or_missing_csrf_token_is_refused_and_changes_nothing() {
    let t = setup().await;
    let l = login(&t, "admin1", ADMIN_PW).await;
    let before = county_count(&t).await;
    for fields in [
        vec![("code", "431281"), ("name", "洪江市")],
        vec![("code", "431281"), ("name", "洪江市"), ("csrf", "wrong")],
    ] {
        let r = send(&t, post("/console/counties", Some(&l), &fields)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert!(r.body.contains("CSRF"));
    }
    let r = send(&t, post("/console/logout", Some(&l), &[])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(county_count(&t).await, before);
    // With the token it works, and is audited.
    let r = send(
        &t,
        post_csrf(
            "/console/counties",
            &l,
            &[("code", "431281"), ("name", "洪江市")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(county_count(&t).await, before + 1);
    assert!(
        audit_actions(&t)
            .await
            .iter()
            .any(|a| a.starts_with("console:admin1 county.add 431281"))
    );
}

#[tokio::test]
async fn operators_read_but_every_write_is_refused() {
    let t = setup().await;
    let (_, agent) = with_records(&t).await;
    let op = login(&t, "oper1", OPER_PW).await;
    for (uri, id) in PAGES {
        let r = send(&t, get(uri, Some(&op))).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        assert!(r.body.contains(&format!(r#"id="{id}""#)), "{uri}");
        for control in [
            "review-form",
            "policy-form",
            "revoke-form",
            "issue-token-form",
            "add-county-form",
        ] {
            assert!(
                !r.body.contains(control),
                "{uri} shows {control} to an operator"
            );
        }
    }
    let policy_before = t.hub.current_policy().await.unwrap().version;
    let audit_before = audit_actions(&t).await.len();
    let writes = [
        (
            "/console/counties".to_owned(),
            vec![("code", "431281"), ("name", "洪江市")],
        ),
        ("/console/tokens".to_owned(), vec![("county", "430112")]),
        (
            "/console/violations/1/review".to_owned(),
            vec![("status", "resolved"), ("note", "ok")],
        ),
        (
            format!("/console/agents/{agent}/revoke"),
            vec![("reason", "test")],
        ),
        (
            format!("/console/agents/{agent}/lift"),
            vec![("reason", "test")],
        ),
        ("/console/policy".to_owned(), vec![("policy", "{}")]),
    ];
    assert_eq!(writes.len(), WRITES.len());
    for (uri, fields) in &writes {
        let r = send(&t, post_csrf(uri, &op, fields)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}");
    }
    assert_eq!(county_count(&t).await, 1);
    assert_eq!(t.hub.current_policy().await.unwrap().version, policy_before);
    let a = t.hub.agents().await.unwrap();
    assert_eq!(a[0].state.as_str(), "active");
    let v = t
        .hub
        .db()
        .read(|r| r.console_violation(1))
        .await
        .unwrap()
        .unwrap();
    assert!(v.review.is_none());
    assert_eq!(audit_actions(&t).await.len(), audit_before);
}

#[tokio::test]
async fn sessions_expire_when_idle_and_after_eight_hours() {
    let t = setup().await;
    let l = login(&t, "admin1", ADMIN_PW).await;
    // Active use keeps it alive until the absolute limit.
    for _ in 0..16 {
        t.clock.advance_ms((29 * 60) * 1000);
        assert_eq!(
            send(&t, get("/console/", Some(&l))).await.status,
            StatusCode::OK
        );
    }
    t.clock.advance_ms((29 * 60) * 1000); // 8 h 24 min after login
    assert_eq!(
        send(&t, get("/console/", Some(&l))).await.status,
        StatusCode::SEE_OTHER
    );

    let l = login(&t, "admin1", ADMIN_PW).await;
    t.clock.advance_ms((30 * 60) * 1000);
    let r = send(&t, get("/console/agents", Some(&l))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/console/login?next=%2Fconsole%2Fagents");
}

#[tokio::test]
async fn five_failed_logins_lock_out_until_the_window_passes() {
    let t = setup().await;
    for _ in 0..5 {
        assert_eq!(
            try_login(&t, "admin1", "wrong-password").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Even the right password is refused now.
    let r = try_login(&t, "admin1", ADMIN_PW).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    t.clock.advance_ms((14 * 60) * 1000);
    assert_eq!(
        try_login(&t, "admin1", ADMIN_PW).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    t.clock.advance_ms((60) * 1000);
    assert_eq!(
        try_login(&t, "admin1", ADMIN_PW).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn failures_from_one_address_lock_it_out_for_every_user() {
    let t = setup().await;
    let from = |user: &str, pw: &str| {
        let mut req = post(
            "/console/login",
            None,
            &[("username", user), ("password", pw)],
        );
        req.extensions_mut().insert(axum::extract::ConnectInfo(
            "10.1.2.3:5000".parse::<std::net::SocketAddr>().unwrap(),
        ));
        req
    };
    for i in 0..5 {
        let r = send(&t, from(&format!("guess{i}"), "wrong-password")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        send(&t, from("oper1", OPER_PW)).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another address is not affected.
    assert_eq!(
        try_login(&t, "oper1", OPER_PW).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn security_headers_are_on_every_console_response() {
    let t = setup().await;
    let l = login(&t, "oper1", OPER_PW).await;
    for req in [
        get("/console/login", None),
        get("/console/", None),
        get("/console/", Some(&l)),
        get("/console/assets/console.css", None),
        post("/console/counties", Some(&l), &[]),
    ] {
        let r = send(&t, req).await;
        let h = &r.headers;
        assert_eq!(h["content-security-policy"], CONTENT_SECURITY_POLICY);
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "same-origin");
        assert!(h.contains_key("cache-control"));
    }
    let page = send(&t, get("/console/", Some(&l))).await;
    assert_eq!(page.headers["cache-control"], "no-store");
    assert!(!page.body.contains("<script") && !page.body.contains(" style="));
}

// ---- pages ---------------------------------------------------------------------------

#[tokio::test]
async fn every_page_renders_for_admins_with_data() {
    let t = setup().await;
    with_records(&t).await;
    let l = login(&t, "admin1", ADMIN_PW).await;
    for (uri, id) in PAGES {
        let r = send(&t, get(uri, Some(&l))).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.body);
        assert!(r.body.contains(&format!(r#"id="{id}""#)), "{uri}");
        assert!(r.body.contains(r#"name="csrf""#), "{uri}: the logout form");
    }
    let overview = send(&t, get("/console/", Some(&l))).await.body;
    assert!(overview.contains("¥1,234,567.89"), "{overview}");
    assert!(overview.contains("<svg"), "a server-side chart");
    assert!(overview.contains("BUDGET_EXCEEDED"));
    let county = send(&t, get("/console/counties/430112", Some(&l)))
        .await
        .body;
    assert!(county.contains("A0501") && county.contains("¥1,234,567.89"));
    // The trace of a payment shows its whole chain with verified signatures.
    let trace = send(&t, get("/console/trace?id=P-2", Some(&l))).await.body;
    for node in [
        "trace-budget_line-BL-1",
        "trace-contract-C-1",
        "trace-contract-C-2",
        "trace-payment-P-2",
    ] {
        assert!(trace.contains(node), "{node}: {trace}");
    }
    assert!(trace.contains("✓") && !trace.contains("✗"));
    assert!(trace.contains("BUDGET_EXCEEDED"));
    let missing = send(&t, get("/console/trace?id=NOPE", Some(&l))).await.body;
    assert!(missing.contains("trace-not-found"));
    let filtered = send(
        &t,
        get(
            "/console/violations?county=430112&rule=BUDGET_EXCEEDED&year=2024",
            Some(&l),
        ),
    )
    .await;
    assert_eq!(filtered.status, StatusCode::OK);
    assert!(filtered.body.contains("C-1"));
    let bad = send(&t, get("/console/violations?year=abc", Some(&l))).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn lang_en_switches_the_strings_and_is_remembered() {
    let t = setup().await;
    let l = login(&t, "oper1", OPER_PW).await;
    let zh = send(&t, get("/console/", Some(&l))).await.body;
    assert!(zh.contains("全省概览"));
    let en = send(&t, get("/console/?lang=en", Some(&l))).await;
    assert!(en.body.contains("Province overview") && !en.body.contains("全省概览"));
    let set = en.headers["set-cookie"].to_str().unwrap();
    assert!(set.starts_with("tongbu_lang=en"), "{set}");
    let again = Login {
        cookie: format!("{}; tongbu_lang=en", l.cookie),
        csrf: l.csrf.clone(),
    };
    assert!(
        send(&t, get("/console/agents", Some(&again)))
            .await
            .body
            .contains("Agents")
    );
}

// ---- admin actions -------------------------------------------------------------------

#[tokio::test]
async fn an_issued_token_is_shown_once_and_enrolls() {
    let t = setup().await;
    let l = login(&t, "admin1", ADMIN_PW).await;
    let r = send(
        &t,
        post_csrf("/console/tokens", &l, &[("county", "430112")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let start =
        r.body.find(r#"<pre id="issued-token">"#).unwrap() + r#"<pre id="issued-token">"#.len();
    let token = &r.body[start..start + r.body[start..].find("</pre>").unwrap()];
    assert!(token.starts_with("tbe_"));
    // Never shown again.
    assert!(
        !send(&t, get("/console/agents", Some(&l)))
            .await
            .body
            .contains(token)
    );
    assert!(
        !send(&t, get("/console/audit", Some(&l)))
            .await
            .body
            .contains(token)
    );
    let key = KeyPair::from_seed(&[3; 32]).unwrap();
    let agent = enroll(&t, token, &key).await.unwrap();
    assert_eq!(agent.to_string().len(), 15);
    assert!(
        audit_actions(&t)
            .await
            .iter()
            .any(|a| a.starts_with("console:admin1 token.issue county 430112"))
    );
}

#[tokio::test]
async fn revoke_stops_the_agent_and_lift_ends_a_quarantine() {
    let t = setup().await;
    let (key, agent) = with_records(&t).await;
    let l = login(&t, "admin1", ADMIN_PW).await;
    // A reason is required.
    let uri = format!("/console/agents/{agent}/revoke");
    let r = send(&t, post_csrf(&uri, &l, &[("reason", " ")])).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Lift needs a quarantined agent.
    let lift = format!("/console/agents/{agent}/lift");
    let r = send(&t, post_csrf(&lift, &l, &[("reason", "ok")])).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let id = agent.clone();
    t.hub
        .db()
        .write(move |w| w.set_agent_state(&id, tongbu_shared::protocol::AgentState::Quarantined))
        .await
        .unwrap();
    let r = send(
        &t,
        post_csrf(&lift, &l, &[("reason", "evidence checked, key rotated")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(t.hub.agents().await.unwrap()[0].state.as_str(), "active");
    assert_eq!(send_batch(&t, &key, &agent, &[]).await, StatusCode::OK);

    let r = send(&t, post_csrf(&uri, &l, &[("reason", "laptop stolen")])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(t.hub.agents().await.unwrap()[0].state.as_str(), "revoked");
    assert_eq!(
        send_batch(&t, &key, &agent, &[]).await,
        StatusCode::FORBIDDEN
    );
    let audit = audit_actions(&t).await;
    assert!(
        audit
            .iter()
            .any(|a| a.contains("agent.revoke") && a.contains("laptop stolen"))
    );
    assert!(
        audit
            .iter()
            .any(|a| a.contains("agent.lift_quarantine") && a.contains("key rotated"))
    );
}

#[tokio::test]
async fn reviewing_a_violation_is_audited_and_leaves_the_record_alone() {
    let t = setup().await;
    let (_, agent) = with_records(&t).await;
    let l = login(&t, "admin1", ADMIN_PW).await;
    let v = t
        .hub
        .db()
        .read(|r| r.console_violation(1))
        .await
        .unwrap()
        .unwrap();
    let (a, seq) = (agent.clone(), v.row.violation.seq);
    let before = t.hub.envelope(a.clone(), seq).await.unwrap().unwrap();
    let r = send(
        &t,
        post_csrf(
            "/console/violations/1/review",
            &l,
            &[("status", "resolved")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "a note is required");
    let r = send(
        &t,
        post_csrf(
            "/console/violations/1/review",
            &l,
            &[("status", "closed"), ("note", "x")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = send(
        &t,
        post_csrf(
            "/console/violations/999/review",
            &l,
            &[("status", "resolved"), ("note", "x")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(
        &t,
        post_csrf(
            "/console/violations/1/review",
            &l,
            &[("status", "resolved"), ("note", "县财政局已撤销合同")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = send(&t, get("/console/violations", Some(&l))).await.body;
    assert!(page.contains("status-resolved") && page.contains("县财政局已撤销合同"));
    let after = t.hub.envelope(a, seq).await.unwrap().unwrap();
    assert_eq!(before, after);
    let still = t
        .hub
        .db()
        .read(|r| r.console_violation(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still.row, v.row);
    assert!(
        audit_actions(&t)
            .await
            .iter()
            .any(|a| a.contains("violation.review") && a.contains("resolved"))
    );
}

#[tokio::test]
async fn the_policy_form_makes_a_new_version_and_a_bad_one_changes_nothing() {
    let t = setup().await;
    let l = login(&t, "admin1", ADMIN_PW).await;
    let page = send(&t, get("/console/policy", Some(&l))).await.body;
    assert!(page.contains("policy-form") && page.contains("A0501"));
    let r = send(
        &t,
        post_csrf("/console/policy", &l, &[("policy", r#"{"catalogue":[]"#)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains(r#"id="policy-error""#));
    let r = send(
        &t,
        post_csrf(
            "/console/policy",
            &l,
            &[("policy", r#"{"catalogue":[],"negative_list":[]}"#)],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(t.hub.current_policy().await.unwrap().version, 1);
    let doc = r#"{"catalogue":[{"code":"A0501","name":"居家养老服务"}],"negative_list":[{"code":"N0202","name":"建设工程"}]}"#;
    let r = send(&t, post_csrf("/console/policy", &l, &[("policy", doc)])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let current = t.hub.current_policy().await.unwrap();
    assert_eq!(current.version, 2);
    assert_eq!(current.view().unwrap().doc.catalogue.len(), 1);
    let page = send(&t, get("/console/policy", Some(&l))).await.body;
    assert!(page.contains("console:admin1"));
    assert!(
        audit_actions(&t)
            .await
            .iter()
            .any(|a| a.starts_with("console:admin1 policy.set version 2"))
    );
}

#[tokio::test]
async fn csv_exports_start_with_a_bom_and_parse() {
    let t = setup().await;
    with_records(&t).await;
    let l = login(&t, "oper1", OPER_PW).await;
    let r = send(&t, get("/console/export/ledger.csv?year=2024", Some(&l))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert!(r.body.starts_with('\u{feff}'));
    let lines: Vec<&str> = r.body.trim_start_matches('\u{feff}').lines().collect();
    assert!(lines[0].starts_with("county,county_name,year,catalogue_code,budget_approved_fen"));
    let row: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(
        &row[..6],
        &[
            "430112",
            "望城区",
            "2024",
            "A0501",
            "123456789",
            "1234567.89"
        ]
    );
    let r = send(
        &t,
        get(
            "/console/export/violations.csv?county=430112&rule=BUDGET_EXCEEDED",
            Some(&l),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.starts_with('\u{feff}'));
    let lines: Vec<&str> = r.body.trim_start_matches('\u{feff}').lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].contains("BUDGET_EXCEEDED") && lines[1].contains("C-1"));
}

#[tokio::test]
async fn the_record_index_is_filled_at_ingest() {
    let t = setup().await;
    with_records(&t).await;
    let recs = t
        .hub
        .db()
        .read(|r| r.records_with_parent("430112", "BL-1"))
        .await
        .unwrap();
    let ids: Vec<&str> = recs.iter().map(|r| r.entity_id.as_str()).collect();
    assert_eq!(ids, ["C-1", "C-2"]);
    let none: Result<Vec<_>, StoreError> =
        t.hub.db().read(|r| r.records_of_entity("X", None)).await;
    assert!(none.unwrap().is_empty());
}
