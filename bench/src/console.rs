//! `tongbu-bench console`: how fast the hub answers the pages an operator opens, over a data
//! directory (a big one from `tongbu-bench generate`), beside this machine's own loopback
//! limit measured in the same run: an empty 200 from a trivial axum handler on another port.
//!
//! The hub is served in process on 127.0.0.1:0 ([`tongbu_hub::serve_hub`]); one keep-alive
//! client asks for each page in turn, `--requests` times (and for at most `--max-seconds`),
//! after a few warm-up requests that are not counted. Every answer must be a 200 and is read
//! to its end (a redirect is not followed and fails the page). The pages are one table,
//! [`PAGES`]: the read API and the console's pages, the latter as a console admin made for
//! the run ([`console_session`]: a `bench` user added through the hub library, then a real
//! `POST /console/login`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::Serialize;
use tongbu_hub::store::{Reads, Role, StoreError};
use tongbu_hub::{DEFAULT_EXPIRE_EVERY, Hub, SystemClock};
use tongbu_shared::AgentId;

use crate::stats::Latencies;

/// Who may open a page, and so what a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, metrics).
    Open,
    /// The read API: `Authorization: Bearer <operator key>`.
    ApiKey,
    /// The console: the `tongbu_session` cookie of a logged-in console user.
    Console,
}

/// One page: a name for the report and a path template. `{county}`, `{year}`, `{agent}`,
/// `{seq}`, `{record}` (a record id), `{project}` (a budget line id with contracts and
/// payments below it) and `{rule}` (a rule some violation broke) are filled from the hub's
/// own data, a different one on each request.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub name: &'static str,
    pub path: &'static str,
    pub access: Access,
}

const fn page(name: &'static str, path: &'static str, access: Access) -> Page {
    Page { name, path, access }
}

/// Every page measured, in report order.
pub const PAGES: &[Page] = &[
    page("healthz", "/healthz", Access::Open),
    page("metrics", "/metrics", Access::Open),
    page("api: agents", "/api/v1/agents", Access::ApiKey),
    page(
        "api: ledger (county, year)",
        "/api/v1/ledger?county={county}&year={year}",
        Access::ApiKey,
    ),
    page(
        "api: violations (county)",
        "/api/v1/violations?county={county}",
        Access::ApiKey,
    ),
    page(
        "api: record",
        "/api/v1/records/{agent}/{seq}",
        Access::ApiKey,
    ),
    page("console: login form", "/console/login", Access::Open),
    page("console: overview", "/console/", Access::Console),
    page("console: counties", "/console/counties", Access::Console),
    page(
        "console: county",
        "/console/counties/{county}",
        Access::Console,
    ),
    page(
        "console: trace (project)",
        "/console/trace?id={project}",
        Access::Console,
    ),
    page(
        "console: violations",
        "/console/violations",
        Access::Console,
    ),
    page(
        "console: violations (county)",
        "/console/violations?county={county}",
        Access::Console,
    ),
    page(
        "console: violations (rule)",
        "/console/violations?rule={rule}",
        Access::Console,
    ),
    page("console: agents", "/console/agents", Access::Console),
    page("console: policy", "/console/policy", Access::Console),
    page("console: audit", "/console/audit", Access::Console),
    page(
        "console: ledger.csv",
        "/console/export/ledger.csv?year=2025",
        Access::Console,
    ),
    page(
        "console: violations.csv",
        "/console/export/violations.csv",
        Access::Console,
    ),
];

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: std::path::PathBuf,
    /// Counted requests per page.
    pub requests: usize,
    /// At most this long per page.
    pub max_seconds: f64,
}

/// One page's figures (latencies in milliseconds).
#[derive(Debug, Clone, Serialize)]
pub struct PageFigure {
    pub page: String,
    /// The path of the first counted request.
    pub example: String,
    pub requests: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
    pub per_s: f64,
    /// p50 over the loopback limit's p50 (none for the limit itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ratio: Option<f64>,
    pub mean_bytes: usize,
}

/// The report: the loopback limit and every page of [`PAGES`], in order.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub limit: PageFigure,
    pub pages: Vec<PageFigure>,
}

/// The values path templates are filled with, taken from the hub's data.
struct Sample {
    counties: Vec<String>,
    /// (agent id, acked seq), agents with at least one record.
    agents: Vec<(String, u64)>,
    records: Vec<String>,
    /// Budget line ids, each in one county only, with at least one contract that has at
    /// least one payment (the record ids when the hub has no such project).
    projects: Vec<String>,
    /// Rules some violation broke, most frequent first.
    rules: Vec<String>,
}

/// At most this many projects are sampled for the trace page.
const PROJECTS: usize = 16;

impl Sample {
    async fn of(hub: &Hub) -> anyhow::Result<Sample> {
        let rows = hub.agents().await?;
        let mut counties: Vec<String> = rows.iter().map(|a| a.county.to_string()).collect();
        counties.dedup();
        let agents: Vec<(String, u64)> = rows
            .iter()
            .filter(|a| a.acked_seq > 0)
            .map(|a| (a.agent_id.to_string(), a.acked_seq))
            .collect();
        anyhow::ensure!(
            !agents.is_empty(),
            "the hub holds no records: make one with `tongbu-bench generate`"
        );
        let mut records = Vec::new();
        for (i, row) in rows.iter().filter(|a| a.acked_seq > 0).take(32).enumerate() {
            let seq = 1 + (i as u64 * 7919) % row.acked_seq;
            if let Some(e) = hub.envelope(row.agent_id.clone(), seq).await? {
                let body: serde_json::Value = serde_json::from_slice(&e.body)?;
                if let Some(id) = body["id"].as_str() {
                    records.push(id.to_owned());
                }
            }
        }
        // Projects: budget lines from the middle of a spread of agents' chains whose
        // contracts have payments, found with the same index reads the trace page makes.
        let candidates: Vec<(AgentId, u64)> = rows
            .iter()
            .filter(|a| a.acked_seq > 0)
            .step_by((rows.len() / PROJECTS).max(1))
            .map(|a| (a.agent_id.clone(), a.acked_seq))
            .collect();
        let mut projects = hub
            .db()
            .read(move |r| {
                let mut found = Vec::new();
                for (agent, acked) in candidates {
                    let from = 1 + acked / 2;
                    for seq in from..=acked.min(from + 400) {
                        let Some(e) = r.envelope(&agent, seq)? else {
                            continue;
                        };
                        let body: serde_json::Value =
                            serde_json::from_slice(&e.body).unwrap_or_default();
                        let (Some("budget_line"), Some(id)) =
                            (body["kind"].as_str(), body["id"].as_str())
                        else {
                            continue;
                        };
                        if is_project(r, id)? {
                            found.push(id.to_owned());
                            break;
                        }
                    }
                }
                Ok::<_, StoreError>(found)
            })
            .await?;
        if projects.is_empty() {
            projects.clone_from(&records);
        }
        let rules: Vec<String> = hub
            .db()
            .read(|r| r.violation_rule_counts(None))
            .await?
            .into_iter()
            .map(|(rule, _)| rule)
            .collect();
        Ok(Sample {
            counties,
            agents,
            records,
            projects,
            rules,
        })
    }

    /// `template` filled for the `i`-th request.
    fn fill(&self, template: &str, i: usize) -> String {
        let (agent, acked) = &self.agents[i % self.agents.len()];
        let seq = 1 + (i as u64).wrapping_mul(7919) % acked;
        let pick = |list: &[String]| -> String {
            list.get(i % list.len().max(1))
                .map_or_else(|| "none".to_owned(), Clone::clone)
        };
        template
            .replace("{county}", &self.counties[i % self.counties.len()])
            .replace("{year}", if i % 2 == 0 { "2025" } else { "2024" })
            .replace("{agent}", agent)
            .replace("{seq}", &seq.to_string())
            .replace("{record}", &pick(&self.records))
            .replace("{project}", &pick(&self.projects))
            .replace("{rule}", &pick(&self.rules))
    }
}

/// Whether budget line `id` is in one county only and has a contract with a payment.
fn is_project(r: &dyn Reads, id: &str) -> Result<bool, StoreError> {
    let found = r.records_of_entity(id, None)?;
    let Some(first) = found.first() else {
        return Ok(false);
    };
    if found.iter().any(|x| x.county != first.county) {
        return Ok(false);
    }
    for contract in r
        .records_with_parent(&first.county, id)?
        .iter()
        .filter(|x| x.kind == "contract")
    {
        if r.records_with_parent(&first.county, &contract.entity_id)?
            .iter()
            .any(|x| x.kind == "payment")
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The console user the benchmark logs in as (added, or reset, in the data directory).
const CONSOLE_USER: &str = "bench";

/// Adds (or resets) the admin [`CONSOLE_USER`] with a fresh random password, through the hub
/// library exactly as `tongbu-hub admin add --reset` does, and returns the password.
async fn console_user(hub: &Hub) -> anyhow::Result<String> {
    let mut raw = [0u8; 16];
    SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    let password: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let hash = tongbu_hub::console::password::hash(&password)?;
    let now = hub.now_ms();
    hub.db()
        .write(move |w| {
            tongbu_hub::console::users::put_user(
                w,
                now,
                "bench",
                CONSOLE_USER,
                Role::Admin,
                hash,
                true,
            )
        })
        .await?;
    Ok(password)
}

/// Logs in as [`CONSOLE_USER`] (`POST /console/login`, the form a browser sends) and returns
/// the value of the `tongbu_session` cookie the 303 sets.
async fn console_session(
    client: &reqwest::Client,
    base: &str,
    password: &str,
) -> anyhow::Result<String> {
    let form = format!("username={CONSOLE_USER}&password={password}&next=%2Fconsole%2F");
    let resp = client
        .post(format!("{base}/console/login"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await?;
    let status = resp.status();
    anyhow::ensure!(
        status == reqwest::StatusCode::SEE_OTHER,
        "POST /console/login: {status}, not the 303 of a login"
    );
    resp.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.trim().strip_prefix("tongbu_session="))
        .find(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("POST /console/login set no tongbu_session cookie"))
}

/// Serves the hub over `opts.data_dir` and measures every page; see the module docs.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(measure_all(opts))
}

async fn measure_all(opts: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(
        opts.data_dir.join("hub.db").exists(),
        "{} holds no hub: make one with `tongbu-bench generate`",
        opts.data_dir.display()
    );
    let hub = Hub::open(&opts.data_dir, Arc::new(SystemClock))?;
    let prepared = prepare(&hub).await?;

    let (stop_hub, hub_stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(tongbu_hub::serve_hub(
        hub,
        listener,
        async move {
            let _ = hub_stopped.await;
        },
        DEFAULT_EXPIRE_EVERY,
    ));
    let report = measure_pages(
        &base,
        &prepared,
        opts.requests,
        Duration::from_secs_f64(opts.max_seconds.max(0.1)),
    )
    .await;
    let _ = stop_hub.send(());
    server.await??;
    report
}

/// What measuring a hub's pages needs from its data: an operator API key, the password of a
/// console admin made for the run, and the values path templates are filled with.
pub struct Prepared {
    api_key: String,
    password: String,
    sample: Sample,
}

/// Prepares `hub` (opened in process on its data directory) for [`measure_pages`]: creates an
/// operator API key, adds (or resets) the console user [`CONSOLE_USER`] and samples the data.
/// The hub may then be served by this process or by `tongbu-hub serve`.
pub async fn prepare(hub: &Hub) -> anyhow::Result<Prepared> {
    let api_key = hub
        .create_api_key(Role::Operator)
        .await?
        .expose()
        .to_owned();
    let sample = Sample::of(hub).await?;
    let password = console_user(hub).await?;
    Ok(Prepared {
        api_key,
        password,
        sample,
    })
}

/// Measures the loopback limit (an empty 200 from a trivial axum handler on another port,
/// served here) and every page of [`PAGES`] of the hub serving plain HTTP at `base`.
pub async fn measure_pages(
    base: &str,
    prepared: &Prepared,
    requests: usize,
    budget: Duration,
) -> anyhow::Result<Report> {
    let (stop_empty, empty_stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let empty_base = format!("http://{}", listener.local_addr()?);
    let empty = axum::Router::new().route("/", axum::routing::get(|| async {}));
    let empty_server = tokio::spawn(async move {
        axum::serve(listener, empty)
            .with_graceful_shutdown(async move {
                let _ = empty_stopped.await;
            })
            .await
    });

    // Redirects are not followed: a console page without a session is a 303 to the login
    // form, which must fail the page, not measure the form.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(1)
        .build()?;
    let requests = requests.max(1);

    let empty_page = page("loopback: empty 200 (axum)", "/", Access::Open);
    let limit = measure(
        &client,
        &empty_base,
        &empty_page,
        None,
        requests,
        budget,
        |_, _| "/".to_owned(),
    )
    .await?;

    let session = console_session(&client, base, &prepared.password).await?;
    let mut pages = Vec::new();
    for p in PAGES {
        let auth = match p.access {
            Access::Open => None,
            Access::ApiKey => Some(Credential::Bearer(&prepared.api_key)),
            Access::Console => Some(Credential::Session(&session)),
        };
        let mut f = measure(&client, base, p, auth, requests, budget, |t, i| {
            prepared.sample.fill(t, i)
        })
        .await?;
        f.p50_ratio = Some(f.p50_ms / limit.p50_ms);
        pages.push(f);
    }

    let _ = stop_empty.send(());
    empty_server.await??;
    Ok(Report { limit, pages })
}

#[derive(Clone, Copy)]
enum Credential<'a> {
    Bearer(&'a str),
    Session(&'a str),
}

/// Warms up, then asks for `page` until `requests` answers or `budget` time; each must be 200.
async fn measure(
    client: &reqwest::Client,
    base: &str,
    page: &Page,
    auth: Option<Credential<'_>>,
    requests: usize,
    budget: Duration,
    fill: impl Fn(&str, usize) -> String,
) -> anyhow::Result<PageFigure> {
    const WARM_UP: usize = 3;
    let mut latencies = Vec::with_capacity(requests);
    let mut bytes = 0usize;
    let mut example = String::new();
    let start = Instant::now();
    let mut counted_from = start;
    for i in 0..requests + WARM_UP {
        if i == WARM_UP {
            counted_from = Instant::now();
        }
        if i > WARM_UP && counted_from.elapsed() > budget {
            break;
        }
        let path = fill(page.path, i);
        let mut req = client.get(format!("{base}{path}"));
        match auth {
            Some(Credential::Bearer(key)) => req = req.bearer_auth(key),
            Some(Credential::Session(s)) => {
                req = req.header(header::COOKIE, format!("tongbu_session={s}"));
            }
            None => {}
        }
        let t = Instant::now();
        let resp = req.send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let took = t.elapsed();
        anyhow::ensure!(
            status == reqwest::StatusCode::OK,
            "GET {path}: {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        if i >= WARM_UP {
            if example.is_empty() {
                example = path;
            }
            latencies.push(took);
            bytes += body.len();
        }
    }
    let wall = counted_from.elapsed();
    let lat = Latencies::new(latencies);
    let n = lat.count();
    Ok(PageFigure {
        page: page.name.to_owned(),
        example,
        requests: n,
        p50_ms: lat.ms(50.0),
        p95_ms: lat.ms(95.0),
        max_ms: lat.max_ms(),
        per_s: n as f64 / wall.as_secs_f64(),
        p50_ratio: None,
        mean_bytes: bytes / n.max(1),
    })
}

/// The report as a table.
pub fn print(report: &Report) {
    println!(
        "{:<30} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  example",
        "page", "n", "p50 ms", "p95 ms", "max ms", "req/s", "p50 x", "bytes"
    );
    for f in std::iter::once(&report.limit).chain(&report.pages) {
        let ratio = f
            .p50_ratio
            .map_or_else(|| "(limit)".into(), |r| format!("{r:.1}"));
        println!(
            "{:<30} {:>5} {:>9.3} {:>9.3} {:>9.3} {:>9.0} {:>9} {:>9}  {}",
            f.page,
            f.requests,
            f.p50_ms,
            f.p95_ms,
            f.max_ms,
            f.per_s,
            ratio,
            f.mean_bytes,
            f.example
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::generate;

    /// Over a small generated hub, every page, the console's included (logged in), answers
    /// 200 and is measured.
    #[test]
    fn measures_every_page_of_a_generated_hub() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("hub");
        generate::run(&generate::Options {
            data_dir: data_dir.clone(),
            records: 600,
            counties: 3,
            seed: 1,
            batch: 200,
            in_flight: 2,
            progress: false,
        })
        .unwrap();
        let report = run(&Options {
            data_dir,
            requests: 5,
            max_seconds: 5.0,
        })
        .unwrap();
        assert_eq!(report.limit.requests, 5);
        let names: Vec<&str> = report.pages.iter().map(|p| p.page.as_str()).collect();
        let all: Vec<&str> = PAGES.iter().map(|p| p.name).collect();
        assert_eq!(names, all);
        for f in &report.pages {
            assert!(
                f.requests == 5 && f.p50_ms <= f.p95_ms && f.p95_ms <= f.max_ms,
                "{f:?}"
            );
            assert!(
                f.p50_ratio.is_some_and(|r| r > 0.0) && f.mean_bytes > 0,
                "{f:?}"
            );
        }
    }
}
