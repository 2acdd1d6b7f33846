//! The hub killed with SIGKILL mid-ingest, again and again, and restarted on the same port while
//! four agents keep uploading: nothing the hub committed is lost, every record reaches it exactly
//! once, the chains verify and the ledgers equal independent sums, held records included.
//!
//! One county's stream is split the way its systems hold it (budget office, procurement,
//! treasury: three agents whose batches arrive in any order, so records are held and released
//! across the kills); a second county sends its whole stream through one agent. The test runs in
//! epochs: each epoch the feeders hand their agents a share of their streams through the intake,
//! then the hub is killed when its watermarks have moved a random number of records past where
//! the epoch began, while the rest of the share is still queued or in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tongbu_tests::crash::{
    Budget, Heard, HubWatch, Rng, Totals, check_agent, ledger, poll, post_records,
};
use tongbu_tests::{Agent, Hub, records};

const SPLIT: (&str, &str) = ("430112", "望城区");
const WHOLE: (&str, &str) = ("431281", "洪江市");
const YEAR: i32 = 2024;

/// One agent's share of a stream and the county system that feeds it.
struct Feed {
    county: &'static str,
    lines: Vec<String>,
    /// Records handed over per epoch, so the stream lasts until the last kill.
    per_epoch: usize,
    batch_size: &'static str,
}

/// A county's stream split by who holds each kind of record.
fn split_by_office(jsonl: &str) -> [Vec<String>; 3] {
    let mut parts: [Vec<String>; 3] = Default::default();
    for line in jsonl.lines() {
        let kind = serde_json::from_str::<Value>(line).expect("record")["kind"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let office = match kind.as_str() {
            "budget_line" => 0,
            "payment" => 2,
            _ => 1,
        };
        parts[office].push(line.to_owned());
    }
    parts
}

/// Feeds `lines` to the agent's intake, a share per epoch (each `go`), reporting each share done
/// on `done`; when `go` closes, feeds the rest. Returns the records in the order they were stored.
fn feeder(
    agent: &Agent,
    feed: &Feed,
    mut rng: Rng,
    go: Receiver<()>,
    done: Sender<()>,
    head: &AtomicU64,
) -> Result<Vec<String>> {
    let url = agent.intake_url().context("intake url")?;
    let mut stored: Vec<String> = Vec::new();
    let mut next = 0;
    loop {
        let last = go.recv().is_err();
        let until = if last {
            feed.lines.len()
        } else {
            (next + feed.per_epoch).min(feed.lines.len())
        };
        while next < until {
            let n = (rng.range(1, 12) as usize).min(until - next);
            let lines = &feed.lines[next..next + n];
            match post_records(&url, lines) {
                Heard::Stored(seqs) => {
                    let first = stored.len() as u64 + 1;
                    ensure!(
                        seqs.first() == Some(&first),
                        "agent {}: stored at {seqs:?}, expected from {first}",
                        agent.agent_id
                    );
                }
                Heard::Nothing(why) => bail!("agent {}: intake failed: {why}", agent.agent_id),
            }
            stored.extend_from_slice(lines);
            head.store(stored.len() as u64, Ordering::SeqCst);
            next += n;
        }
        if last {
            return Ok(stored);
        }
        let _ = done.send(());
    }
}

/// Where the hub kills landed.
#[derive(Debug, Default)]
struct Landed {
    kills: usize,
    /// Killed right after READY, while the agents reconnect and resend.
    at_startup: usize,
    /// Killed on the watermarks' progress while records handed to the agents were not yet all
    /// committed at the hub: batches were being received, verified or written.
    mid_ingest: usize,
    /// Killed on the watermarks' progress with nothing left to ingest.
    idle: usize,
}

/// Batch uploads a hub kill cut off, as the agent logged them: the connection closed or was
/// reset while `POST .../batches` was under way (a refused connection is not counted).
fn cut_batches(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("/batches)")
                && (l.contains("connection closed before message completed")
                    || l.contains("reset by peer"))
        })
        .count()
}

fn sum(acked: &HashMap<String, u64>, ids: &[String]) -> u64 {
    ids.iter()
        .map(|id| acked.get(id).copied().unwrap_or(0))
        .sum()
}

/// Kills and restarts the hub, one epoch per kill, until `kills` kills have landed mid-ingest
/// (kills right after a restart come on top); checks after every kill and every restart that
/// nothing the hub had committed was lost.
fn kill_loop(
    hub: &mut Hub,
    kills: usize,
    rng: &mut Rng,
    ids: &[String],
    heads: &[AtomicU64],
    go: &[Sender<()>],
    done: &[Receiver<()>],
) -> Result<Landed> {
    let mut landed = Landed::default();
    let mut watch = HubWatch::new(hub);
    while landed.mid_ingest < kills {
        ensure!(
            landed.kills < 2 * kills + 10,
            "only {} of {} kills landed mid-ingest: {landed:?}",
            landed.mid_ingest,
            landed.kills
        );
        for (g, d) in go.iter().zip(done) {
            g.send(()).context("a feeder stopped")?;
            d.recv().context("a feeder stopped")?;
        }
        let queued: u64 = heads.iter().map(|h| h.load(Ordering::SeqCst)).sum();
        let seen = poll("the hub's watermarks", || watch.acked())?;
        let committed = sum(&seen, ids);
        // A tenth of the kills come right after READY; the rest when the hub has ingested a
        // random number of the records still queued, or at once if none are.
        let at_startup = rng.chance(10);
        let seen = if at_startup || queued <= committed {
            seen
        } else {
            let target = committed + rng.range(1, (queued - committed).min(20));
            poll("the hub to ingest past the target", || {
                watch.acked().filter(|a| sum(a, ids) >= target)
            })?
        };
        hub.kill9();
        landed.kills += 1;
        let at_kill = poll("the dead hub's watermarks", || watch.acked())?;
        not_behind(&at_kill, &seen, ids, "the kill")?;
        if at_startup {
            landed.at_startup += 1;
        } else if queued > sum(&at_kill, ids) {
            landed.mid_ingest += 1;
        } else {
            landed.idle += 1;
        }
        hub.restart()
            .context("the hub does not start after a SIGKILL")?;
        let restarted = poll("the restarted hub's watermarks", || watch.acked())?;
        not_behind(&restarted, &at_kill, ids, "the restart")?;
    }
    Ok(landed)
}

/// Fails unless every agent's watermark in `now` is at least what it was `before`.
fn not_behind(
    now: &HashMap<String, u64>,
    before: &HashMap<String, u64>,
    ids: &[String],
    event: &str,
) -> Result<()> {
    for id in ids {
        let (b, n) = (before.get(id), now.get(id));
        ensure!(
            n >= b,
            "LOST at the hub: agent {id} was acknowledged through {b:?} before {event}, {n:?} after"
        );
    }
    Ok(())
}

/// The value, or a failed test with the seed and the tail of the hub's log.
fn ok<T>(seed: u64, hub: &Hub, r: Result<T>) -> T {
    let what = match r {
        Ok(v) => return v,
        Err(e) => format!("{e:#}"),
    };
    let log = hub.proc.as_ref().map(|p| p.log_text()).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    panic!(
        "seed {seed}: {what}\nhub log (tail):\n{}",
        lines[lines.len().saturating_sub(40)..].join("\n")
    )
}

#[test]
fn a_hub_killed_mid_ingest_loses_and_duplicates_nothing() {
    let _turn = crate::one_at_a_time();
    let budget = Budget::from_env("a_hub_killed_mid_ingest_loses_and_duplicates_nothing");
    let started = Instant::now();
    let kills = budget.hub_kills;
    let mut hub = Hub::start().unwrap();
    hub.add_county(SPLIT.0, SPLIT.1);
    hub.add_county(WHOLE.0, WHOLE.1);

    // The streams last through the epochs the kills take (a tenth land at startup).
    let epochs = kills + kills / 4 + 10;
    let split_stream = records(SPLIT.0, 31, epochs * 24);
    let whole_stream = records(WHOLE.0, 32, epochs * 12);
    let [budget_office, procurement, treasury] = split_by_office(&split_stream);
    let whole: Vec<String> = whole_stream.lines().map(str::to_owned).collect();
    let feed = |county, lines: Vec<String>, batch_size| Feed {
        county,
        per_epoch: lines.len().div_ceil(epochs),
        lines,
        batch_size,
    };
    let feeds = [
        feed(SPLIT.0, budget_office, "5"),
        feed(SPLIT.0, procurement, "10"),
        feed(SPLIT.0, treasury, "10"),
        feed(WHOLE.0, whole, "25"),
    ];
    let mut agents: Vec<Agent> = feeds
        .iter()
        .map(|f| {
            let mut a = Agent::enrolled(&hub, f.county).unwrap();
            a.start_with(&["--batch-size", f.batch_size]).unwrap();
            a
        })
        .collect();
    let ids: Vec<String> = agents.iter().map(|a| a.agent_id.clone()).collect();
    let heads: Vec<AtomicU64> = feeds.iter().map(|_| AtomicU64::new(0)).collect();
    let mut rng = Rng::fork(budget.seed, 0);

    let (landed, stored) = std::thread::scope(|scope| {
        let mut go = Vec::new();
        let mut done = Vec::new();
        let mut workers = Vec::new();
        for (i, (agent, feed)) in agents.iter().zip(&feeds).enumerate() {
            let (go_tx, go_rx) = channel();
            let (done_tx, done_rx) = channel();
            go.push(go_tx);
            done.push(done_rx);
            let head = &heads[i];
            let frng = Rng::fork(budget.seed, i as u64 + 1);
            workers.push(scope.spawn(move || feeder(agent, feed, frng, go_rx, done_tx, head)));
        }
        let landed = kill_loop(&mut hub, kills, &mut rng, &ids, &heads, &go, &done);
        drop(go);
        let stored: Vec<Result<Vec<String>>> = workers
            .into_iter()
            .map(|w| w.join().expect("feeder thread"))
            .collect();
        (landed, stored)
    });
    let seed = budget.seed;
    let landed = ok(seed, &hub, landed);
    let stored: Vec<Vec<String>> = stored.into_iter().map(|s| ok(seed, &hub, s)).collect();

    // Every agent catches up; the hub holds exactly each chain; the ledgers equal the sums.
    let mut records_total = 0;
    for (agent, lines) in agents.iter().zip(&stored) {
        let head = ok(seed, &hub, agent.wait_synced());
        assert_eq!(head, lines.len() as u64);
        ok(seed, &hub, check_agent(&hub, agent, lines));
        records_total += lines.len();
    }
    for (county, stream) in [(SPLIT.0, &split_stream), (WHOLE.0, &whole_stream)] {
        let lines: Vec<String> = stream.lines().map(str::to_owned).collect();
        let want = Totals::of(&lines).expected_reply(county, YEAR);
        let got = ledger(&hub, county, YEAR).unwrap();
        assert_eq!(got, want, "seed {}: county {county}'s ledger", budget.seed);
    }
    if std::env::var("CRASH_DEBUG").is_ok() {
        eprintln!("{}", agents[3].log());
        eprintln!("{}", agents[1].log());
    }
    let cut: usize = agents.iter().map(|a| cut_batches(&a.log())).sum();
    for agent in &mut agents {
        assert!(agent.proc.take().unwrap().terminate().unwrap());
    }
    hub.stop().unwrap();
    eprintln!(
        "hub crash test: seed {}, {} kills in {:.1?}, {records_total} records from {} agents at \
         the hub exactly once, chains verify, ledgers equal the sums; kills landed: {landed:?}; \
         batch uploads cut off by a kill (agent logs): {cut}",
        budget.seed,
        landed.kills,
        started.elapsed(),
        agents.len()
    );
}
