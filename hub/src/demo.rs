//! `tongbu-hub demo`: one command that shows the whole path working. It runs a hub on loopback
//! and, in the same process, one real county agent per simulated county (the `tongbu-agent`
//! library, each with its own data directory and loopback intake). A feeder per county plays
//! the county's finance systems: it posts realistic records to its agent's intake, the agent
//! signs and syncs them, and the hub acknowledges them. Everything lives under `--data-dir`,
//! so stopping and starting the demo resumes where it was; `--fresh` starts over.
//!
//! The demo lives in the binary, not the library: the hub library knows nothing of the agent.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::{oneshot, watch};
use tongbu_hub::clock::{Clock as _, SystemClock};
use tongbu_hub::store::Role;
use tongbu_hub::{Hub, admin::CountyAdded};
use tongbu_shared::CountyCode;
use tongbu_shared::sample::CountySim;

/// The simulated counties: the reform's two pilot counties and one more.
const COUNTIES: &[(&str, &str)] = &[
    ("430112", "长沙市望城区"),
    ("431281", "怀化市洪江市"),
    ("431002", "郴州市北湖区"),
];
/// Marks a directory the demo created, so `--fresh` never deletes anything else.
const MARKER: &str = "TONGBU-DEMO";
/// The demo's records are for the last completed fiscal year.
const FISCAL_YEAR: i32 = 2025;

/// What `tongbu-hub demo` was asked to do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub data_dir: PathBuf,
    pub listen: String,
    pub fresh: bool,
    /// Pause between two submissions of one simulated county.
    pub interval: Duration,
}

pub fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(opts))
}

fn prepare_dir(dir: &Path, fresh: bool) -> anyhow::Result<()> {
    let marker = dir.join(MARKER);
    if fresh && dir.exists() {
        if !marker.exists() {
            bail!(
                "--fresh would delete {}, which the demo did not create (no {MARKER} file); choose another --data-dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    if dir.exists() && !marker.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} is not empty and is not a demo directory; choose another --data-dir",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(&marker, "Data of `tongbu-hub demo`. Safe to delete.\n")?;
    Ok(())
}

/// The demo's API key: created once, kept in the data directory (mode 0600) so a restarted
/// demo prints the same one.
async fn api_key(hub: &Hub, dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("demo-api-key");
    if let Ok(key) = std::fs::read_to_string(&path) {
        return Ok(key.trim().to_owned());
    }
    let key = hub.create_api_key(Role::Admin).await?.expose().to_owned();
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    writeln!(f, "{key}")?;
    f.sync_all()?;
    Ok(key)
}

/// The demo's console login: user `admin` with a random password, made once and kept in the
/// data directory (mode 0600) so a restarted demo prints the same one.
async fn console_login(hub: &Hub, dir: &Path) -> anyhow::Result<String> {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let path = dir.join("console-password");
    if let Ok(password) = std::fs::read_to_string(&path) {
        return Ok(password.trim().to_owned());
    }
    let mut raw = [0u8; 12];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = tongbu_hub::console::password::hash(&password)?;
    let now = SystemClock.now_ms();
    hub.db()
        .write(move |w| {
            tongbu_hub::console::users::put_user(w, now, "demo", "admin", Role::Admin, hash, true)
        })
        .await?;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    writeln!(f, "{password}")?;
    f.sync_all()?;
    Ok(password)
}

async fn run_async(opts: DemoOptions) -> anyhow::Result<()> {
    prepare_dir(&opts.data_dir, opts.fresh)?;
    let hub_dir = opts.data_dir.join("hub");
    let hub = Hub::open(&hub_dir, Arc::new(SystemClock))
        .with_context(|| format!("cannot open the hub in {}", hub_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let hub_url = format!("http://{addr}");
    let key = api_key(&hub, &opts.data_dir).await?;
    let console_password = console_login(&hub, &opts.data_dir).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    {
        let hub = hub.clone();
        let stop = stopped();
        tasks.spawn(async move {
            tongbu_hub::http::serve(hub, listener, stop)
                .await
                .context("the hub server failed")
        });
    }

    let mut lines = Vec::new();
    for (i, (code, name)) in COUNTIES.iter().enumerate() {
        let county = CountyCode::parse(code)?;
        if let CountyAdded::Created = hub.add_county(county.clone(), (*name).to_owned()).await? {
            tracing::info!(%county, name, "county added");
        }
        let agent_dir = opts.data_dir.join("agents").join(code);
        let agent_id = match tongbu_agent::service::open_enrolled(&agent_dir) {
            Ok(agent) => {
                // The hub may listen elsewhere this time (e.g. port 0): follow it.
                if agent.enrollment.hub_url.as_str() != hub_url {
                    tongbu_agent::service::set_hub_url(&agent_dir, &hub_url)?;
                }
                agent.enrollment.agent_id.to_string()
            }
            Err(_) => {
                let token = hub.issue_token(county.clone(), 1).await?;
                let enrolled = tongbu_agent::enroll(&agent_dir, &hub_url, token.token.expose())
                    .await
                    .with_context(|| format!("the agent for {code} could not enroll"))?;
                enrolled.agent_id.to_string()
            }
        };
        let (ready_tx, ready_rx) = oneshot::channel::<SocketAddr>();
        let options = tongbu_agent::ServiceOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            heartbeat: Duration::from_secs(5),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            ..tongbu_agent::ServiceOptions::new(&agent_dir)
        };
        let stop = stopped();
        tasks.spawn(async move {
            tongbu_agent::run(options, stop, move |a| {
                let _ = ready_tx.send(a);
            })
            .await
        });
        let intake = ready_rx
            .await
            .context("an agent stopped before its intake was ready")?;
        let seed = SystemClock.now_ms() as u64 + i as u64;
        let feeder = Feeder {
            intake: format!("http://{intake}/records"),
            sim: CountySim::new(county, seed, FISCAL_YEAR).with_anomalies(),
            interval: opts.interval,
        };
        tasks.spawn(feeder.run(stopped()));
        lines.push(format!(
            "  {code} {name:<8} agent {agent_id}  intake http://{intake}/records"
        ));
    }

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Tongbu demo: a hub and {} simulated counties are running.",
        COUNTIES.len()
    )?;
    writeln!(
        out,
        "  console    {hub_url}/console/   user admin, password {console_password}"
    )?;
    writeln!(out, "  hub API    {hub_url}")?;
    writeln!(
        out,
        "  API key    {key}   (also in {})",
        opts.data_dir.join("demo-api-key").display()
    )?;
    writeln!(out, "  data       {}", opts.data_dir.display())?;
    for l in &lines {
        writeln!(out, "{l}")?;
    }
    writeln!(
        out,
        "Watch the agents catch up (acked_seq, lag, last_seen):"
    )?;
    writeln!(
        out,
        "  curl -s -H 'Authorization: Bearer {key}' {hub_url}/api/v1/agents"
    )?;
    writeln!(
        out,
        "The ledger and what breaks the rules (records are for fiscal year {FISCAL_YEAR}):"
    )?;
    writeln!(
        out,
        "  curl -s -H 'Authorization: Bearer {key}' '{hub_url}/api/v1/ledger?county={}&year={FISCAL_YEAR}'",
        COUNTIES[0].0
    )?;
    writeln!(
        out,
        "  curl -s -H 'Authorization: Bearer {key}' '{hub_url}/api/v1/violations?county={}'",
        COUNTIES[0].0
    )?;
    writeln!(out, "  curl -s {hub_url}/metrics")?;
    writeln!(
        out,
        "Stop with Ctrl-C; run again to resume, or with --fresh to start over."
    )?;
    writeln!(out, "READY listen={hub_url}")?;
    out.flush()?;
    drop(out);

    tokio::select! {
        () = crate::cli::shutdown_signal() => {}
        Some(done) = tasks.join_next() => {
            // A part stopped on its own: that is a failure; stop the rest and report it.
            let _ = stop_tx.send(true);
            while tasks.join_next().await.is_some() {}
            return match done {
                Ok(Ok(())) => Err(anyhow::anyhow!("a demo task stopped unexpectedly")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("a demo task panicked: {e}")),
            };
        }
    }
    let _ = stop_tx.send(true);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "a demo task failed while stopping")
            }
            Err(e) => tracing::warn!(error = %e, "a demo task panicked"),
        }
    }
    Ok(())
}

/// Plays one county's finance systems: posts a few records to the agent's intake, pauses,
/// repeats until the demo stops.
struct Feeder {
    intake: String,
    sim: CountySim,
    interval: Duration,
}

impl Feeder {
    async fn run(mut self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        tokio::pin!(stop);
        let mut round: usize = 0;
        loop {
            round += 1;
            // One to five records a round, like a county system's periodic export.
            let body = self.sim.batch(1 + round % 5);
            match client.post(&self.intake).body(body).send().await {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => {
                    tracing::warn!(status = %resp.status(), intake = %self.intake, "the agent refused demo records")
                }
                Err(e) => {
                    tracing::warn!(error = %e, intake = %self.intake, "cannot reach the agent's intake")
                }
            }
            tokio::select! {
                () = &mut stop => return Ok(()),
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}
