//! The console's read-only pages. Each handler checks the session, reads what it shows in one
//! snapshot (index reads of `ledger`, `violations`, `agents`, `record_index`; never a scan
//! of the envelope log) and renders its template.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Serialize;
use tongbu_shared::ids::CountyCode;
use tongbu_shared::protocol::AgentState;

use super::i18n::Lang;
use super::session::Session;
use super::{Console, Fail, PageResult, chart};
use crate::admin::agent_row;
use crate::policy;
use crate::store::{
    AgentRecord, ConsoleViolation, ConsoleViolationFilter, IndexedRecord, Reads, StoreError,
};

/// An agent is in sync when nothing is left to send and it was seen within this long...
const IN_SYNC_MS: i64 = 5 * 60 * 1000;
/// ...and silent when not seen for this long.
const SILENT_MS: i64 = 60 * 60 * 1000;
/// Most violations one page lists.
pub const PAGE_VIOLATIONS: u32 = 500;
/// Audit entries per page.
const AUDIT_PAGE: u32 = 50;

type Q = Query<HashMap<String, String>>;

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../assets/console.css"),
    )
        .into_response()
}

pub async fn to_overview() -> Redirect {
    Redirect::to("/console/")
}

/// A year parameter (empty means none).
pub fn year_param(q: &HashMap<String, String>) -> Result<Option<i32>, Fail> {
    match q.get("year").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(y) => y
            .parse::<i32>()
            .ok()
            .filter(|y| (1990..=2199).contains(y))
            .map(Some)
            .ok_or_else(|| Fail::BadRequest(format!("year must be 1990 to 2199, got {y:?}"))),
    }
}

/// A county parameter (empty means none).
pub fn county_param(q: &HashMap<String, String>) -> Result<Option<CountyCode>, Fail> {
    match q.get("county").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(c) => CountyCode::parse(c)
            .map(Some)
            .map_err(|e| Fail::BadRequest(format!("county: {e}"))),
    }
}

pub fn text_param(q: &HashMap<String, String>, name: &str) -> Option<String> {
    q.get(name)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// How an agent is doing, as the console colours it.
fn agent_health(a: &AgentRecord, now: i64) -> &'static str {
    let row = agent_row(a);
    let since = a.last_seen_ms.map(|t| now.saturating_sub(t));
    match a.state {
        AgentState::Quarantined | AgentState::Revoked => "bad",
        AgentState::Active if since.is_none_or(|s| s >= SILENT_MS) => "bad",
        AgentState::Active if row.lag > 0 || since.is_some_and(|s| s >= IN_SYNC_MS) => "warn",
        AgentState::Active => "ok",
    }
}

#[derive(Serialize)]
struct AgentView {
    agent_id: String,
    county: String,
    version: String,
    state: &'static str,
    acked_seq: u64,
    head_seq: u64,
    lag: u64,
    queue_depth: u64,
    last_seen: Option<i64>,
    last_error: String,
    health: &'static str,
}

fn agent_view(a: &AgentRecord, now: i64) -> AgentView {
    let row = agent_row(a);
    AgentView {
        agent_id: a.id.to_string(),
        county: a.county.to_string(),
        version: a.agent_version.clone().unwrap_or_default(),
        state: a.state.as_str(),
        acked_seq: row.acked_seq,
        head_seq: row.head_seq,
        lag: row.lag,
        queue_depth: a.queue_depth,
        last_seen: a.last_seen_ms,
        last_error: a.last_error.clone().unwrap_or_default(),
        health: agent_health(a, now),
    }
}

#[derive(Serialize, Default)]
struct Money {
    budget_approved: i64,
    contracted: i64,
    paid: i64,
    held: i64,
    rejected: i64,
}

impl Money {
    fn add(&mut self, t: &tongbu_shared::rules::Totals) {
        self.budget_approved = self.budget_approved.saturating_add(t.budget_approved);
        self.contracted = self.contracted.saturating_add(t.contracted);
        self.paid = self.paid.saturating_add(t.paid);
        self.held = self.held.saturating_add(t.held);
        self.rejected = self.rejected.saturating_add(t.rejected);
    }
}

/// Catalogue and negative-list names of the current policy, by code.
fn catalogue_names(r: &dyn Reads) -> Result<HashMap<String, String>, StoreError> {
    let current = policy::current(r).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let doc = current.bundle()?.doc();
    Ok(doc
        .catalogue
        .iter()
        .chain(doc.negative_list.iter())
        .map(|e| (e.code.to_string(), e.name.clone()))
        .collect())
}

/// The catalogue domain a code belongs to, as a translation key.
fn domain_key(code: &str) -> &'static str {
    match code.as_bytes().first() {
        Some(b'A') => "domain_a",
        Some(b'B') => "domain_b",
        Some(b'C') => "domain_c",
        Some(b'D') => "domain_d",
        Some(b'E') => "domain_e",
        Some(b'N') => "domain_n",
        _ => "domain_other",
    }
}

pub async fn overview(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Q,
) -> PageResult {
    let s = c.session(&headers, &uri).await?;
    let lang = Lang::of(&headers, &q);
    let asked = year_param(&q)?;
    let now = c.now_ms();
    let data = c
        .hub
        .db()
        .read(move |r| {
            let years = r.ledger_years()?;
            let year = asked.or_else(|| years.first().copied());
            let rows = match year {
                Some(y) => r.province_ledger(Some(y))?,
                None => Vec::new(),
            };
            let rules = r.violation_rule_counts(year)?;
            Ok::<_, StoreError>((
                years,
                year,
                rows,
                rules,
                r.counties()?,
                r.agents()?,
                catalogue_names(r)?,
            ))
        })
        .await?;
    let (years, year, rows, rules, counties, agents, names) = data;
    let county_names: HashMap<String, String> = counties
        .iter()
        .map(|c| (c.code.to_string(), c.name.clone()))
        .collect();
    let mut totals = Money::default();
    let mut by_county: BTreeMap<String, Money> = BTreeMap::new();
    let mut by_domain: BTreeMap<String, Money> = BTreeMap::new();
    for (county, slot, t) in &rows {
        totals.add(t);
        by_county.entry(county.to_string()).or_default().add(t);
        by_domain.entry(slot.catalogue.clone()).or_default().add(t);
    }
    let mut health = BTreeMap::from([
        ("in_sync", 0u64),
        ("behind", 0),
        ("silent", 0),
        ("quarantined", 0),
        ("revoked", 0),
    ]);
    for a in &agents {
        let row = agent_row(a);
        let since = a.last_seen_ms.map(|t| now.saturating_sub(t));
        let key = match a.state {
            AgentState::Revoked => "revoked",
            AgentState::Quarantined => "quarantined",
            AgentState::Active if since.is_none_or(|s| s >= SILENT_MS) => "silent",
            AgentState::Active if row.lag > 0 => "behind",
            AgentState::Active if since.is_some_and(|s| s < IN_SYNC_MS) => "in_sync",
            AgentState::Active => "behind",
        };
        *health.entry(key).or_default() += 1;
    }
    let series = [
        lang.text("budget_approved"),
        lang.text("contracted"),
        lang.text("paid"),
    ];
    let county_chart = chart::in_step_svg(
        &by_county
            .iter()
            .map(|(code, m)| {
                let label = county_names
                    .get(code)
                    .cloned()
                    .unwrap_or_else(|| code.clone());
                (label, [m.budget_approved, m.contracted, m.paid])
            })
            .collect::<Vec<_>>(),
        series,
        lang.text("unit_wan"),
    );
    // The chart groups catalogue codes by their domain (the code's first letter: A 基本公共服务,
    // B 社会管理性服务, …); the table below it keeps one row per code.
    let mut domains: BTreeMap<&'static str, [i64; 3]> = BTreeMap::new();
    for (code, m) in &by_domain {
        let d = domains.entry(domain_key(code)).or_default();
        d[0] += m.budget_approved;
        d[1] += m.contracted;
        d[2] += m.paid;
    }
    let domain_chart = chart::in_step_svg(
        &domains
            .iter()
            .filter(|(_, v)| v.iter().any(|x| *x != 0))
            .map(|(key, v)| (lang.text(key).to_owned(), *v))
            .collect::<Vec<_>>(),
        series,
        lang.text("unit_wan"),
    );
    let by_county: Vec<_> = by_county
        .into_iter()
        .map(|(code, m)| {
            let name = county_names.get(&code).cloned().unwrap_or_default();
            context! { code, name, ..minijinja::Value::from_serialize(&m) }
        })
        .collect();
    let by_domain: Vec<_> = by_domain
        .into_iter()
        .map(|(code, m)| {
            let name = if code.is_empty() {
                lang.text("catalogue_unknown").to_owned()
            } else {
                names.get(&code).cloned().unwrap_or_default()
            };
            context! { code, name, ..minijinja::Value::from_serialize(&m) }
        })
        .collect();
    let rules: Vec<_> = rules
        .into_iter()
        .map(|(rule, count)| context! { rule, count })
        .collect();
    c.render(
        "overview.html",
        lang,
        Some(&s),
        context! {
            years, year, totals, by_county, by_domain, rules, health,
            county_chart, domain_chart,
        },
    )
}

pub async fn counties(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Q,
) -> PageResult {
    let s = c.session(&headers, &uri).await?;
    let lang = Lang::of(&headers, &q);
    let now = c.now_ms();
    let (counties, agents, rows) = c
        .hub
        .db()
        .read(|r| Ok::<_, StoreError>((r.counties()?, r.agents()?, r.province_ledger(None)?)))
        .await?;
    let mut list = Vec::new();
    for county in counties {
        let mine: Vec<&AgentRecord> = agents.iter().filter(|a| a.county == county.code).collect();
        let mut money = Money::default();
        for (_, _, t) in rows.iter().filter(|(c, _, _)| *c == county.code) {
            money.add(t);
        }
        let last_seen = mine.iter().filter_map(|a| a.last_seen_ms).max();
        let lag: u64 = mine.iter().map(|a| agent_row(a).lag).sum();
        let queue_depth: u64 = mine.iter().map(|a| a.queue_depth).sum();
        let healths: Vec<&str> = mine.iter().map(|a| agent_health(a, now)).collect();
        let health = if healths.contains(&"bad") {
            "bad"
        } else if healths.contains(&"warn") || mine.is_empty() {
            "warn"
        } else {
            "ok"
        };
        let since_seen =
            last_seen.map_or_else(String::new, |t| duration_text(now.saturating_sub(t)));
        list.push(context! {
            code => county.code.to_string(),
            name => county.name,
            agents => mine.len(),
            last_seen, lag, since_seen, queue_depth,
            held => money.held,
            rejected => money.rejected,
            health,
        });
    }
    c.render(
        "counties.html",
        lang,
        Some(&s),
        context! { counties => list },
    )
}

/// `1h 05m`, `3m 20s`, `12s`.
fn duration_text(ms: i64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

pub async fn county(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    Path(code): Path<String>,
    Query(q): Q,
) -> PageResult {
    let s = c.session(&headers, &uri).await?;
    let lang = Lang::of(&headers, &q);
    let code = CountyCode::parse(&code).map_err(|e| Fail::NotFound(format!("county: {e}")))?;
    let now = c.now_ms();
    let lookup = code.clone();
    let (county, rows, agents, names) = c
        .hub
        .db()
        .read(move |r| {
            Ok::<_, StoreError>((
                r.county(&lookup)?,
                r.ledger_rows(&lookup, None)?,
                r.agents()?,
                catalogue_names(r)?,
            ))
        })
        .await?;
    let county = county.ok_or_else(|| Fail::NotFound(format!("no county {code}")))?;
    let rows: Vec<_> = rows
        .into_iter()
        .map(|(slot, t)| {
            context! {
                year => slot.year,
                catalogue_name => names.get(&slot.catalogue).cloned().unwrap_or_default(),
                catalogue => slot.catalogue,
                budget_approved => t.budget_approved,
                contracted => t.contracted,
                paid => t.paid,
                accepted => t.accepted,
                held => t.held,
                rejected => t.rejected,
            }
        })
        .collect();
    let agents: Vec<AgentView> = agents
        .iter()
        .filter(|a| a.county == code)
        .map(|a| agent_view(a, now))
        .collect();
    c.render(
        "county.html",
        lang,
        Some(&s),
        context! {
            county => context! { code => county.code.to_string(), name => county.name },
            rows, agents,
        },
    )
}

// ---- trace ----------------------------------------------------------------------------

#[derive(Serialize)]
struct Revision {
    rev: Option<i64>,
    outcome: &'static str,
    codes: String,
    amount: Option<i64>,
    date: String,
    agent: String,
    seq: u64,
    hash: String,
    sig_ok: bool,
    received: i64,
}

#[derive(Serialize)]
struct Node {
    kind: String,
    id: String,
    depth: u8,
    revisions: Vec<Revision>,
}

/// The revisions of one entity, each re-verified against the agent's key for that seq.
fn revisions(r: &dyn Reads, recs: &[&IndexedRecord]) -> Result<Vec<Revision>, StoreError> {
    let mut out = Vec::new();
    for rec in recs {
        let Some(env) = r.envelope(&rec.agent, rec.seq)? else {
            continue;
        };
        let sig_ok = match r.agent(&rec.agent)? {
            Some(a) => {
                let keys = crate::rotate::AgentKeys::of(r, &a)?;
                env.clone()
                    .into_envelope()
                    .verify(keys.for_seq(env.seq))
                    .is_ok()
            }
            None => false,
        };
        let body: serde_json::Value = serde_json::from_slice(&env.body).unwrap_or_default();
        let date = ["approved_on", "signed_on", "paid_on", "evaluated_on"]
            .iter()
            .find_map(|k| body.get(k).and_then(|v| v.as_str()))
            .unwrap_or_default()
            .to_owned();
        out.push(Revision {
            rev: body.get("rev").and_then(serde_json::Value::as_i64),
            outcome: env.outcome.as_str(),
            codes: env.codes.join(", "),
            amount: body.get("amount_fen").and_then(serde_json::Value::as_i64),
            date,
            agent: env.agent.to_string(),
            seq: env.seq,
            hash: env.hash.to_hex(),
            sig_ok,
            received: env.received_at_ms,
        });
    }
    Ok(out)
}

/// Groups records by (kind, entity id), keeping first-arrival order.
fn group<'a>(
    recs: &'a [IndexedRecord],
    kinds: &[&str],
) -> Vec<(String, String, Vec<&'a IndexedRecord>)> {
    let mut out: Vec<(String, String, Vec<&IndexedRecord>)> = Vec::new();
    for rec in recs.iter().filter(|r| kinds.contains(&r.kind.as_str())) {
        match out
            .iter_mut()
            .find(|(k, id, _)| *k == rec.kind && *id == rec.entity_id)
        {
            Some((_, _, list)) => list.push(rec),
            None => out.push((rec.kind.clone(), rec.entity_id.clone(), vec![rec])),
        }
    }
    out
}

/// What a trace found: the chain's nodes, or the counties to choose from.
type Traced = (Vec<Node>, Vec<String>);

/// Builds the chain budget line → contracts → payments and evaluations around record `id`.
fn trace_chain(r: &dyn Reads, id: &str, county: Option<&str>) -> Result<Traced, StoreError> {
    let found = r.records_of_entity(id, county)?;
    let mut counties: Vec<String> = found.iter().map(|f| f.county.clone()).collect();
    counties.sort();
    counties.dedup();
    if counties.len() != 1 {
        return Ok((
            Vec::new(),
            if counties.len() > 1 {
                counties
            } else {
                Vec::new()
            },
        ));
    }
    let county = counties.remove(0);
    // Prefer the most upstream kind with this id.
    let kind_rank = |k: &str| match k {
        "budget_line" => 0,
        "contract" => 1,
        "payment" => 2,
        _ => 3,
    };
    let Some(start) = found.iter().min_by_key(|f| kind_rank(&f.kind)) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let latest_parent = |recs: &[IndexedRecord], kind: &str, id: &str| {
        recs.iter()
            .rev()
            .find(|r| r.kind == kind && r.entity_id == id)
            .map(|r| r.parent_id.clone())
            .filter(|p| !p.is_empty())
    };
    // Walk up to the budget line (as far as records are known).
    let (mut root_kind, mut root_id) = (start.kind.clone(), start.entity_id.clone());
    if root_kind == "payment" || root_kind == "evaluation" {
        if let Some(contract) = latest_parent(&found, &root_kind, &root_id) {
            root_kind = "contract".into();
            root_id = contract;
        }
    }
    if root_kind == "contract" {
        let recs = r.records_of_entity(&root_id, Some(&county))?;
        if let Some(bl) = latest_parent(&recs, "contract", &root_id) {
            if r.records_of_entity(&bl, Some(&county))?
                .iter()
                .any(|x| x.kind == "budget_line")
            {
                root_kind = "budget_line".into();
                root_id = bl;
            }
        }
    }
    let mut nodes = Vec::new();
    let root_recs = r.records_of_entity(&root_id, Some(&county))?;
    let contracts: Vec<(String, String, Vec<&IndexedRecord>)>;
    let child_recs;
    if root_kind == "budget_line" {
        let bl = group(&root_recs, &["budget_line"]);
        for (kind, id, recs) in &bl {
            nodes.push(Node {
                kind: kind.clone(),
                id: id.clone(),
                depth: 0,
                revisions: revisions(r, recs)?,
            });
        }
        child_recs = r.records_with_parent(&county, &root_id)?;
        contracts = group(&child_recs, &["contract"]);
    } else if root_kind == "contract" {
        contracts = group(&root_recs, &["contract"]);
    } else {
        for (kind, id, recs) in group(&root_recs, &[root_kind.as_str()]) {
            nodes.push(Node {
                kind,
                id,
                depth: 0,
                revisions: revisions(r, &recs)?,
            });
        }
        return Ok((nodes, Vec::new()));
    }
    for (kind, cid, recs) in &contracts {
        nodes.push(Node {
            kind: kind.clone(),
            id: cid.clone(),
            depth: 1,
            revisions: revisions(r, recs)?,
        });
        let below = r.records_with_parent(&county, cid)?;
        for (kind, id, recs) in group(&below, &["payment", "evaluation"]) {
            nodes.push(Node {
                kind,
                id,
                depth: 2,
                revisions: revisions(r, &recs)?,
            });
        }
    }
    Ok((nodes, Vec::new()))
}

pub async fn trace(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Q,
) -> PageResult {
    let s = c.session(&headers, &uri).await?;
    let lang = Lang::of(&headers, &q);
    let id = text_param(&q, "id");
    let county = county_param(&q)?;
    let (nodes, choices) = match &id {
        Some(id) => {
            let id = id.clone();
            let county = county.as_ref().map(ToString::to_string);
            c.hub
                .db()
                .read(move |r| trace_chain(r, &id, county.as_deref()))
                .await?
        }
        None => (Vec::new(), Vec::new()),
    };
    c.render(
        "trace.html",
        lang,
        Some(&s),
        context! {
            searched => id.is_some(),
            id => id.unwrap_or_default(),
            county => county.map(|c| c.to_string()).unwrap_or_default(),
            nodes, choices,
        },
    )
}

// ---- violations -----------------------------------------------------------------------

/// The violations filter of a query (`county`, `rule`, `year`; empty means any).
pub fn violation_filter(
    q: &HashMap<String, String>,
    limit: u32,
) -> Result<ConsoleViolationFilter, Fail> {
    Ok(ConsoleViolationFilter {
        county: county_param(q)?,
        year: year_param(q)?,
        rule: text_param(q, "rule"),
        limit,
    })
}

#[derive(Serialize)]
pub struct ViolationView {
    pub id: i64,
    pub county: String,
    pub year: Option<i32>,
    pub kind: String,
    pub entity_id: String,
    pub rule: String,
    pub detail: String,
    pub outcome: &'static str,
    pub agent: String,
    pub seq: u64,
    pub at: i64,
    pub status: &'static str,
    pub note: String,
    pub by: String,
}

pub fn violation_view(v: ConsoleViolation) -> ViolationView {
    let row = v.row.violation;
    ViolationView {
        id: v.id,
        county: row.county.to_string(),
        year: row.fiscal_year,
        kind: row.kind,
        entity_id: row.entity_id,
        rule: row.rule,
        detail: row.detail,
        outcome: v.row.outcome.as_str(),
        agent: row.agent.to_string(),
        seq: row.seq,
        at: row.at_ms,
        status: v.review.as_ref().map_or("open", |r| r.status.as_str()),
        note: v
            .review
            .as_ref()
            .map(|r| r.note.clone())
            .unwrap_or_default(),
        by: v.review.map(|r| r.by).unwrap_or_default(),
    }
}

pub async fn violations(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Q,
) -> PageResult {
    let s = c.session(&headers, &uri).await?;
    let lang = Lang::of(&headers, &q);
    let filter = violation_filter(&q, PAGE_VIOLATIONS)?;
    let list = c
        .hub
        .db()
        .read(move |r| r.console_violations(&filter))
        .await?;
    let violations: Vec<ViolationView> = list.into_iter().map(violation_view).collect();
    c.render(
        "violations.html",
        lang,
        Some(&s),
        context! {
            violations,
            county => text_param(&q, "county").unwrap_or_default(),
            rule => text_param(&q, "rule").unwrap_or_default(),
            year => text_param(&q, "year").unwrap_or_default(),
        },
    )
}

// ---- agents, policy, audit --------------------------------------------------------------

pub async fn agents(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Q,
) -> PageResult {
    let s = c.session(&headers, &uri).await?;
    let lang = Lang::of(&headers, &q);
    let now = c.now_ms();
    let (agents, counties) = c
        .hub
        .db()
        .read(|r| Ok::<_, StoreError>((r.agents()?, r.counties()?)))
        .await?;
    let agents: Vec<AgentView> = agents.iter().map(|a| agent_view(a, now)).collect();
    let counties: Vec<_> = counties
        .into_iter()
        .map(|c| context! { code => c.code.to_string(), name => c.name })
        .collect();
    c.render("agents.html", lang, Some(&s), context! { agents, counties })
}

/// Renders the policy page; `edited` is a refused document to show again with its error.
pub async fn policy_page(
    c: &Console,
    s: &Session,
    lang: Lang,
    edited: Option<(String, String)>,
) -> PageResult {
    let (current, versions) = c
        .hub
        .db()
        .read(|r| {
            let current = policy::current(r).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok::<_, StoreError>((current, r.policy_versions()?))
        })
        .await?;
    let view = current.view()?;
    let pretty = serde_json::to_string_pretty(&view.doc).map_err(|e| {
        tracing::error!(error = %e, "cannot show the policy");
        Fail::Internal
    })?;
    let versions: Vec<_> = versions
        .iter()
        .map(|v| {
            let bundle: Option<tongbu_shared::policy::PolicyBundle> =
                serde_json::from_slice(&v.payload).ok();
            let doc = bundle.map(|b| b.doc());
            context! {
                version => v.version,
                at => v.created_at_ms,
                actor => v.actor.clone(),
                catalogue => doc.as_ref().map_or(0, |d| d.catalogue.len()),
                negative_list => doc.as_ref().map_or(0, |d| d.negative_list.len()),
            }
        })
        .collect();
    let entries = |list: &[tongbu_shared::policy::Entry]| -> Vec<minijinja::Value> {
        list.iter()
            .map(|e| context! { code => e.code.to_string(), name => e.name.clone() })
            .collect()
    };
    let (policy_json, error, status) = match edited {
        Some((text, error)) => (text, Some(error), StatusCode::BAD_REQUEST),
        None => (pretty, None, StatusCode::OK),
    };
    let mut resp = c.render(
        "policy.html",
        lang,
        Some(s),
        context! {
            version => view.version,
            catalogue => entries(&view.doc.catalogue),
            negative_list => entries(&view.doc.negative_list),
            versions, policy_json, error,
        },
    )?;
    *resp.status_mut() = status;
    Ok(resp)
}

pub async fn policy(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Q,
) -> PageResult {
    let s = c.session(&headers, &uri).await?;
    let lang = Lang::of(&headers, &q);
    policy_page(&c, &s, lang, None).await
}

pub async fn audit(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Q,
) -> PageResult {
    let s = c.session(&headers, &uri).await?;
    let lang = Lang::of(&headers, &q);
    let before =
        match text_param(&q, "before") {
            None => None,
            Some(b) => Some(b.parse::<i64>().map_err(|_| {
                Fail::BadRequest(format!("before must be an entry number, got {b:?}"))
            })?),
        };
    let rows = c
        .hub
        .db()
        .read(move |r| r.audit_page(before, AUDIT_PAGE))
        .await?;
    let older = (rows.len() == AUDIT_PAGE as usize)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let entries: Vec<_> = rows
        .into_iter()
        .map(|r| {
            context! {
                id => r.id,
                at => r.entry.at_ms,
                actor => r.entry.actor,
                action => r.entry.action,
                detail => r.entry.detail,
            }
        })
        .collect();
    c.render("audit.html", lang, Some(&s), context! { entries, older })
}
