//! The console's changes, for admins only: each one checks the session, its CSRF token and
//! the admin role before anything else, runs in one write transaction with its audit entry
//! (who, when, what and why), and answers with a redirect back to the page (or a page showing
//! what was made, like a new enrollment token).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Redirect};
use minijinja::context;
use tongbu_shared::ids::{AgentId, CountyCode};
use tongbu_shared::policy::PolicyDoc;
use tongbu_shared::protocol::AgentState;

use super::i18n::Lang;
use super::session::parse_form;
use super::{Console, Fail, PageResult, pages};
use crate::admin::{self, AdminError, DEFAULT_TOKEN_TTL_HOURS};
use crate::policy::{self, PolicyAdminError};
use crate::store::{AuditEntry, ReviewStatus, StoreError, ViolationReview, Writes};

/// Longest note or reason kept, in characters.
const MAX_NOTE_CHARS: usize = 1000;

fn required(form: &HashMap<String, String>, name: &str) -> Result<String, Fail> {
    let v = form.get(name).map(|s| s.trim()).unwrap_or_default();
    if v.is_empty() {
        return Err(Fail::BadRequest(format!("`{name}` is required")));
    }
    if v.chars().count() > MAX_NOTE_CHARS {
        return Err(Fail::BadRequest(format!(
            "`{name}` is longer than {MAX_NOTE_CHARS} characters"
        )));
    }
    Ok(v.to_owned())
}

fn admin_fail(e: AdminError) -> Fail {
    match e {
        AdminError::Store(e) => e.into(),
        AdminError::Random => Fail::Internal,
        other => Fail::BadRequest(other.to_string()),
    }
}

fn audit(
    w: &mut dyn Writes,
    at_ms: i64,
    actor: &str,
    action: &str,
    detail: String,
) -> Result<(), StoreError> {
    w.insert_audit(&AuditEntry {
        at_ms,
        actor: actor.to_owned(),
        action: action.to_owned(),
        detail,
    })
}

pub async fn add_county(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> PageResult {
    let form = parse_form(&body)?;
    let s = c.admin_post(&headers, &uri, &form).await?;
    let code = CountyCode::parse(&required(&form, "code")?)
        .map_err(|e| Fail::BadRequest(format!("code: {e}")))?;
    let name = required(&form, "name")?;
    let now = c.now_ms();
    let actor = s.actor();
    c.hub
        .db()
        .write(move |w| admin::add_county(w, now, &actor, &code, &name))
        .await
        .map_err(admin_fail)?;
    Ok(Redirect::to("/console/counties").into_response())
}

pub async fn issue_token(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> PageResult {
    let form = parse_form(&body)?;
    let s = c.admin_post(&headers, &uri, &form).await?;
    let county = CountyCode::parse(&required(&form, "county")?)
        .map_err(|e| Fail::BadRequest(format!("county: {e}")))?;
    let now = c.now_ms();
    let actor = s.actor();
    let rng = c.hub.rng().clone();
    let pin = c.config.token_pin;
    let issued = c
        .hub
        .db()
        .write(move |w| {
            admin::issue_pinned_token(
                w,
                now,
                &actor,
                &rng,
                &county,
                DEFAULT_TOKEN_TTL_HOURS,
                pin.as_ref(),
            )
        })
        .await
        .map_err(admin_fail)?;
    let lang = Lang::of(&headers, &HashMap::new());
    c.render(
        "token.html",
        lang,
        Some(&s),
        context! {
            token => issued.token.expose(),
            county => issued.county.to_string(),
            expires_at => issued.expires_at_ms,
        },
    )
}

fn agent_param(id: &str) -> Result<AgentId, Fail> {
    AgentId::parse(id).map_err(|_| Fail::NotFound(format!("no agent {id}")))
}

/// An agent state change the console offers: from which states, to which, audited as what.
#[derive(Clone, Copy)]
struct Transition {
    from: &'static [AgentState],
    to: AgentState,
    action: &'static str,
}

const REVOKE: Transition = Transition {
    from: &[AgentState::Active, AgentState::Quarantined],
    to: AgentState::Revoked,
    action: "agent.revoke",
};

const LIFT: Transition = Transition {
    from: &[AgentState::Quarantined],
    to: AgentState::Active,
    action: "agent.lift_quarantine",
};

/// Moves an agent along `change`, audited with the reason given.
async fn change_agent_state(
    c: &Console,
    headers: &HeaderMap,
    uri: &Uri,
    id: &str,
    body: &Bytes,
    change: &Transition,
) -> PageResult {
    let Transition { from, to, action } = *change;
    let form = parse_form(body)?;
    let s = c.admin_post(headers, uri, &form).await?;
    let agent = agent_param(id)?;
    let reason = required(&form, "reason")?;
    let now = c.now_ms();
    let actor = s.actor();
    let changed = c
        .hub
        .db()
        .write(move |w| {
            let Some(a) = w.agent(&agent)? else {
                return Ok::<_, StoreError>(Err(Fail::NotFound(format!("no agent {agent}"))));
            };
            if !from.contains(&a.state) {
                return Ok(Err(Fail::BadRequest(format!(
                    "agent {agent} is {}; this action needs it {}",
                    a.state,
                    from.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ))));
            }
            w.set_agent_state(&agent, to)?;
            audit(
                w,
                now,
                &actor,
                action,
                format!("agent {agent} ({} → {to}): {reason}", a.state),
            )?;
            Ok(Ok(()))
        })
        .await?;
    changed?;
    Ok(Redirect::to("/console/agents").into_response())
}

pub async fn revoke_agent(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    body: Bytes,
) -> PageResult {
    change_agent_state(&c, &headers, &uri, &id, &body, &REVOKE).await
}

pub async fn lift_quarantine(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    body: Bytes,
) -> PageResult {
    change_agent_state(&c, &headers, &uri, &id, &body, &LIFT).await
}

pub async fn review_violation(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    body: Bytes,
) -> PageResult {
    let form = parse_form(&body)?;
    let s = c.admin_post(&headers, &uri, &form).await?;
    let id: i64 = id
        .parse()
        .map_err(|_| Fail::NotFound(format!("no violation {id}")))?;
    let status = ReviewStatus::parse(form.get("status").map_or("", |s| s.trim()))
        .ok_or_else(|| Fail::BadRequest("`status` must be reviewed or resolved".into()))?;
    let note = required(&form, "note")?;
    let now = c.now_ms();
    let actor = s.actor();
    let by = s.username.clone();
    let done = c
        .hub
        .db()
        .write(move |w| {
            let Some(v) = w.console_violation(id)? else {
                return Ok::<_, StoreError>(Err(Fail::NotFound(format!("no violation {id}"))));
            };
            w.insert_violation_review(&ViolationReview {
                violation_id: id,
                status,
                note: note.clone(),
                by,
                at_ms: now,
            })?;
            let row = v.row.violation;
            audit(
                w,
                now,
                &actor,
                "violation.review",
                format!(
                    "violation {id} ({} {} {} {}, {}/{}) {}: {note}",
                    row.county,
                    row.kind,
                    row.entity_id,
                    row.rule,
                    row.agent,
                    row.seq,
                    status.as_str()
                ),
            )?;
            Ok(Ok(()))
        })
        .await?;
    done?;
    Ok(Redirect::to(&format!("/console/violations#violation-{id}")).into_response())
}

pub async fn set_policy(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> PageResult {
    let form = parse_form(&body)?;
    let s = c.admin_post(&headers, &uri, &form).await?;
    let lang = Lang::of(&headers, &HashMap::new());
    let text = form.get("policy").cloned().unwrap_or_default();
    let doc = match PolicyDoc::parse(text.as_bytes()) {
        Ok(doc) => doc,
        Err(e) => return pages::policy_page(&c, &s, lang, Some((text, e.to_string()))).await,
    };
    let now = c.now_ms();
    let actor = s.actor();
    let hub = c.hub.clone();
    let set = c
        .hub
        .db()
        .write(move |w| policy::set(w, hub.signing_key(), now, &actor, doc))
        .await;
    match set {
        Ok(_) => Ok(Redirect::to("/console/policy").into_response()),
        Err(PolicyAdminError::Refused(e)) => {
            pages::policy_page(&c, &s, lang, Some((text, e.to_string()))).await
        }
        Err(PolicyAdminError::Store(e)) => Err(e.into()),
        Err(e) => {
            tracing::error!(error = %e, "console: cannot set the policy");
            Err(Fail::Internal)
        }
    }
}
