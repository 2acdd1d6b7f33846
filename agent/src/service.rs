//! The agent service: the loopback intake server and the sync loop, run together until a
//! shutdown future completes (SIGTERM/SIGINT in the binary). Also the entry points a demo can
//! drive in-process (`run`, `enroll`, `submit`, `pull_policy`); these return `anyhow` errors
//! with context, since they sit at task boundaries.
//!
//! Start-up (`run`): an interrupted key rotation is settled with the hub first
//! ([`crate::rotate::recover`]); then the outbox must pass `PRAGMA quick_check` and its last
//! 1,000 envelopes must verify, or the service refuses to start with an error naming the file.
//! Records are never signed while a rotation is unsettled ([`open_for_signing`]).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::{Notify, watch};
use tongbu_shared::KeyPair;
use tongbu_shared::protocol::EnrollResponse;
use tracing::{info, warn};

use crate::clock::{Clock, SystemClock};
use crate::data_dir::DataDir;
use crate::http::{self, IntakeState};
use crate::intake::{Intake, SharedIntake, Stored, Strictness};
use crate::keyfile;
use crate::notify;
use crate::outbox::{Enrollment, Outbox, SharedOutbox};
use crate::policy::PolicyPull;
use crate::sync::{self, LoopOptions, Syncer};
use crate::tls::{HubUrl, TrustOptions};

/// How the service runs. [`ServiceOptions::new`] gives the CLI's defaults.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub data_dir: PathBuf,
    /// The intake listener; must be a loopback address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Pause between syncs when there is nothing new (each sync is also a heartbeat).
    pub heartbeat: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub batch_size: usize,
    /// Tell systemd (sd_notify) when the service is ready, how it is doing, and ping its
    /// watchdog (see [`crate::notify`]); off for in-process agents such as the hub's demo.
    pub notify: bool,
}

impl ServiceOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> ServiceOptions {
        ServiceOptions {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8441)),
            heartbeat: Duration::from_secs(10),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            batch_size: sync::DEFAULT_BATCH_SIZE,
            notify: false,
        }
    }
}

/// An enrolled agent's files, opened.
#[derive(Debug)]
pub struct EnrolledAgent {
    pub dir: DataDir,
    pub outbox: Outbox,
    pub enrollment: Enrollment,
    pub key: KeyPair,
}

/// Opens the data directory of an enrolled agent: its outbox, enrollment and key.
pub fn open_enrolled(data_dir: &Path) -> anyhow::Result<EnrolledAgent> {
    let dir = DataDir::open(data_dir)?;
    let outbox = Outbox::open(&dir.outbox_path())?;
    let Some(enrollment) = outbox.enrollment()? else {
        bail!(
            "the agent in {} is not enrolled yet: run `tongbu-agent enroll --hub URL --token T` first",
            dir.root().display()
        );
    };
    let key = keyfile::load(&dir.key_path())?;
    Ok(EnrolledAgent {
        dir,
        outbox,
        enrollment,
        key,
    })
}

/// Opens an enrolled agent to sign records with: refused while a key rotation is unsettled
/// (which key signs the next seq depends on the hub's answer).
pub fn open_for_signing(data_dir: &Path) -> anyhow::Result<EnrolledAgent> {
    let agent = open_enrolled(data_dir)?;
    if let Some(problem) = crate::rotate::pending_problem(&agent.dir, &agent.outbox)? {
        bail!("{problem}");
    }
    Ok(agent)
}

/// Settles a key rotation that was interrupted (see [`crate::rotate::recover`]); nothing to do
/// for an agent that is not enrolled or not rotating.
pub async fn settle_rotation(data_dir: &Path) -> anyhow::Result<crate::rotate::Recovered> {
    let dir = DataDir::open(data_dir)?;
    let mut outbox = Outbox::open(&dir.outbox_path())?;
    let Some(enrollment) = outbox.enrollment()? else {
        return Ok(crate::rotate::Recovered::Nothing);
    };
    let recovered =
        crate::rotate::recover(&dir, &mut outbox, &enrollment, Arc::new(SystemClock)).await?;
    match recovered {
        crate::rotate::Recovered::Finished => {
            tracing::info!(
                "an interrupted key rotation was confirmed by the hub: the new key is in use"
            );
        }
        crate::rotate::Recovered::Undone => {
            tracing::warn!(
                "an interrupted key rotation was not taken by the hub: the old key stays"
            );
        }
        crate::rotate::Recovered::Nothing => {}
    }
    Ok(recovered)
}

/// Runs the intake server and the sync loop until `shutdown` completes. `on_ready` is called
/// with the address the intake really bound, once it accepts connections.
pub async fn run(
    opts: ServiceOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr) + Send,
) -> anyhow::Result<()> {
    if !opts.listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {}: the intake API has no authentication, so it binds only loopback addresses (127.0.0.1 or ::1)",
            opts.listen
        );
    }
    settle_rotation(&opts.data_dir).await?;
    let data_dir = opts.data_dir.clone();
    let loop_opts = LoopOptions {
        heartbeat: opts.heartbeat,
        retry_min: opts.retry_min,
        retry_max: opts.retry_max,
        jitter_seed: random_seed(),
    };
    let want_notify = opts.notify;
    let (agent, sync_outbox, health, progress) = tokio::task::spawn_blocking(move || {
        let agent = open_for_signing(&data_dir)?;
        // A damaged outbox stops the agent here, loudly, before it serves anything.
        let keys = agent.outbox.key_ring(agent.key.public_key())?;
        crate::verify::check_at_start(
            &agent.outbox,
            &agent.dir.outbox_path(),
            &agent.enrollment.agent_id,
            &keys,
        )?;
        // The sync loop gets a connection of its own; SQLite orders the two writers.
        let sync_outbox = Outbox::open(&agent.dir.outbox_path())?;
        let progress = notify::Progress::new(std::time::Instant::now());
        let health = if want_notify {
            let path = agent.dir.outbox_path();
            let stuck_after = notify::stuck_after(&loop_opts);
            Some(notify::AgentHealth::open(
                &path,
                progress.clone(),
                stuck_after,
            )?)
        } else {
            None
        };
        anyhow::Ok((agent, sync_outbox, health, progress))
    })
    .await
    .context("opening the data directory stopped")??;
    let EnrolledAgent {
        outbox,
        enrollment,
        key,
        ..
    } = agent;

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener
        .local_addr()
        .context("the intake listener has no address")?;

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let key = Arc::new(key);
    let wake = Arc::new(Notify::new());
    let intake = Intake::new(outbox, Arc::clone(&key))?;
    let metrics = Arc::new(crate::metrics::AgentMetrics::default());
    let intake = http::app(IntakeState {
        intake: SharedIntake::new(intake),
        clock: Arc::clone(&clock),
        wake: Arc::clone(&wake),
        metrics: Arc::clone(&metrics),
    });
    let syncer = Syncer::new(
        SharedOutbox::new(sync_outbox),
        &enrollment,
        key,
        clock,
        opts.batch_size,
    )?;
    let syncer = crate::metrics::Counted::new(syncer, metrics);
    let mut syncer = notify::Watched::new(syncer, progress);

    // One shutdown future fans out to the server and the loop.
    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = tokio::spawn(async move {
        shutdown.await;
        if want_notify {
            notify::send(&[notify::Note::Stopping]);
        }
        let _ = stop_tx.send(true);
    });
    let server = axum::serve(listener, intake).with_graceful_shutdown(stopped(stop_rx.clone()));
    let syncing = sync::run_until_stopped(&mut syncer, &loop_opts, &wake, stopped(stop_rx.clone()));

    info!(
        agent_id = %enrollment.agent_id,
        county = %enrollment.county,
        hub = %enrollment.hub_url,
        hub_tls = %enrollment.hub_url.trust().describe(),
        intake = %addr,
        "tongbu-agent running"
    );
    if let Some(warning) = enrollment.hub_url.plain_warning() {
        warn!("{warning}");
    }
    on_ready(addr);
    let supervisor = health.map(|health| {
        tokio::spawn(notify::supervise_agent(
            health,
            addr,
            stopped(stop_rx.clone()),
        ))
    });
    let (served, ()) = tokio::join!(async { server.await }, syncing);
    watcher.abort();
    if let Some(supervisor) = supervisor {
        supervisor.abort();
    }
    served.context("the intake server failed")?;
    info!("tongbu-agent stopped");
    Ok(())
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which happens only after shutdown was signalled.
    let _ = rx.wait_for(|stop| *stop).await;
}

fn random_seed() -> u64 {
    let mut seed = [0u8; 8];
    // Jitter only spreads retries out; a fixed seed is a fine fallback.
    let _ = SystemRandom::new().fill(&mut seed);
    u64::from_le_bytes(seed)
}

/// Enrolls the agent in `data_dir` with the hub at `hub_url` using a one-time `token`, then
/// pulls the hub's policy (best effort: a failed pull is logged and left to the sync loop).
pub async fn enroll(data_dir: &Path, hub_url: &str, token: &str) -> anyhow::Result<EnrollResponse> {
    let dir = DataDir::open(data_dir)?;
    let (_, response) = crate::enroll::enroll(
        &dir,
        hub_url,
        token,
        &TrustOptions::default(),
        Arc::new(SystemClock),
    )
    .await?;
    if let Err(e) = pull_policy(data_dir).await {
        warn!(error = %format!("{e:#}"), "enrolled, but the policy could not be pulled yet; the sync loop will try again");
    }
    Ok(response)
}

/// Pulls the hub's policy once for the enrolled agent in `data_dir` (a conditional signed
/// `GET`; a bundle is cached only if it verifies against the pinned hub key and is newer). A
/// failure is also kept as the agent's last error.
pub async fn pull_policy(data_dir: &Path) -> anyhow::Result<PolicyPull> {
    let data_dir = data_dir.to_owned();
    let agent = tokio::task::spawn_blocking(move || open_enrolled(&data_dir))
        .await
        .context("opening the data directory stopped")??;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let outbox = SharedOutbox::new(agent.outbox);
    let mut syncer = Syncer::new(
        outbox.clone(),
        &agent.enrollment,
        Arc::new(agent.key),
        Arc::clone(&clock),
        sync::DEFAULT_BATCH_SIZE,
    )?;
    match syncer.pull_policy().await {
        Ok(pulled) => Ok(pulled),
        Err(e) => {
            let line = e.to_string().replace(['\n', '\r'], " ");
            let now = clock.now_ms();
            // Failing to note it matters less than the failure itself.
            let _ = outbox.call(move |o| o.record_failure(&line, now)).await;
            Err(anyhow::Error::new(e).context("cannot pull the policy"))
        }
    }
}

/// Points the enrolled agent in `data_dir` at the hub's new URL (the hub moved), keeping the
/// certificate pin or CA for an https hub; returns the previous URL. The hub key pinned at
/// enrollment stays the only key trusted.
pub fn set_hub_url(data_dir: &Path, hub_url: &str) -> anyhow::Result<String> {
    let (previous, _) = set_hub(data_dir, hub_url, &TrustOptions::default())?;
    Ok(previous.to_string())
}

/// Points the enrolled agent in `data_dir` at `hub_url`, trusting its certificate as `trust`
/// says (`--ca`, `--cert-sha256`; without them an https hub keeps its pin or CA, see
/// [`HubUrl::for_move`]); returns the previous and the new hub.
pub fn set_hub(
    data_dir: &Path,
    hub_url: &str,
    trust: &TrustOptions,
) -> anyhow::Result<(HubUrl, HubUrl)> {
    let mut agent = open_enrolled(data_dir)?;
    let previous = agent.enrollment.hub_url.clone();
    let next = HubUrl::for_move(hub_url, previous.trust(), trust)?;
    agent.outbox.set_hub_url(&next)?;
    Ok((previous, next))
}

/// Checks, judges, signs and stores a submission into the outbox in `data_dir`, all or
/// nothing; each stored record carries the rule codes the agent can check locally. This blocks
/// on SQLite; from async code call it through `spawn_blocking`. A running service sends the
/// records at its next heartbeat.
pub fn submit(data_dir: &Path, input: &[u8]) -> anyhow::Result<Vec<Stored>> {
    let agent = open_for_signing(data_dir)?;
    let mut intake = Intake::new(agent.outbox, Arc::new(agent.key))?;
    let stored = intake.submit(input, Strictness::Lenient, SystemClock.now_ms())?;
    Ok(stored)
}
