//! Network faults between agent and hub: an agent enrolled directly with the hub is pointed at
//! the fault-injecting proxy and runs while a county system submits records. Whatever the
//! proxy does, the hub ends up holding exactly the agent's chain, once, the chain verifies and
//! the agent's status shows no error once the network is clean again.

use std::time::{Duration, Instant};

use tongbu_shared::Digest;
use tongbu_tests::proxy::{Fault, Plan, Proxy, Stats};
use tongbu_tests::{Agent, Hub, RawAgent, records, wait_for};

use crate::{assert_same_chain, wait_clean};

/// One hub, one agent syncing through a proxy that follows `plan`.
struct Rig {
    hub: Hub,
    agent: Agent,
    proxy: Proxy,
}

const COUNTY: &str = "430112";

impl Rig {
    /// Enrolls the agent with the hub directly, then points it at the proxy and starts it with
    /// quick retries and small batches (so a sync takes many requests, and many meet a fault).
    fn start(plan: Plan, batch_size: u32) -> Rig {
        let hub = Hub::start().unwrap();
        hub.add_county(COUNTY, "望城区");
        let mut agent = Agent::enrolled(&hub, COUNTY).unwrap();
        let proxy = Proxy::start(&hub.url()).unwrap();
        agent
            .cli(&["set-hub", "--hub", &proxy.url()])
            .expect_ok("set-hub");
        proxy.set_plan(plan);
        agent
            .start_with(&["--batch-size", &batch_size.to_string()])
            .unwrap();
        Rig { hub, agent, proxy }
    }

    /// Submits `n` records through the agent's loopback intake in chunks of `chunk`, while the
    /// agent syncs.
    fn submit(&self, seed: u64, n: usize, chunk: usize) {
        let url = self.agent.intake_url().unwrap();
        let text = records(COUNTY, seed, n);
        let lines: Vec<&str> = text.lines().collect();
        for part in lines.chunks(chunk) {
            let resp = tongbu_tests::http()
                .post(format!("{url}/records"))
                .body(part.join("\n"))
                .send()
                .unwrap();
            assert_eq!(
                resp.status().as_u16(),
                200,
                "intake refused: {}",
                resp.text().unwrap_or_default()
            );
        }
    }

    /// Waits (faults still on) until the hub acknowledges `n` records, then switches the proxy
    /// to pass-through and checks the end state; returns what the proxy did.
    fn finish(self, n: u64) -> (Stats, Rig) {
        let hub = &self.hub;
        let id = self.agent.agent_id.clone();
        wait_for(&format!("the hub to acknowledge {n} records"), || {
            (hub.agent_row(&id).ok()??["acked_seq"].as_u64()? == n).then_some(())
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}; proxy: {:?}; agent log:\n{}",
                self.proxy.stats(),
                self.agent.log()
            )
        });
        let stats = self.proxy.stats();
        self.proxy.set_plan(Plan::Always(Fault::Pass));
        let status = wait_clean(&self.agent, n);
        assert!(status["last_sync"].is_string(), "{status}");
        assert_same_chain(&self.hub, &self.agent);
        let stored: i64 = self
            .hub
            .db()
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM envelopes WHERE agent_id = ?1",
                [&id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored as u64, n, "no record stored twice");
        let verify = self.agent.cli(&["verify"]).expect_ok("verify");
        assert!(
            verify
                .stdout
                .starts_with(&format!("ok: {n} records verify")),
            "{}",
            verify.stdout
        );
        let row = self.hub.agent_row(&id).unwrap().unwrap();
        assert_eq!(row["state"], "active", "{row}");
        assert_eq!(row["lag"], 0, "{row}");
        (stats, self)
    }
}

/// Runs `plan` over `n` records submitted in chunks of 40, batches of 10; returns the stats.
fn survive(plan: Plan, seed: u64, n: usize) -> Stats {
    survive_on(plan, seed, n).0
}

fn survive_on(plan: Plan, seed: u64, n: usize) -> (Stats, Rig) {
    let started = Instant::now();
    let rig = Rig::start(plan, 10);
    rig.submit(seed, n, 40);
    let (stats, rig) = rig.finish(n as u64);
    let stored = metric(&rig.hub, "tongbu_envelopes_stored_total");
    assert_eq!(stored, n as u64, "the hub stored each record once");
    eprintln!(
        "{plan:?}: {n} records in {:?}; envelopes received by the hub {} (resends included); {stats:?}",
        started.elapsed(),
        metric(&rig.hub, "tongbu_envelopes_received_total"),
    );
    (stats, rig)
}

/// A counter from the hub's `/metrics`.
fn metric(hub: &Hub, name: &str) -> u64 {
    let text = tongbu_tests::http()
        .get(format!("{}/metrics", hub.url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[test]
fn slow_links_delay_every_chunk_and_everything_arrives() {
    let stats = survive(Plan::Always(Fault::Delay(Duration::from_millis(3))), 1, 120);
    assert!(stats.delayed >= 10, "{stats:?}");
    assert_eq!(stats.disruptions(), 0, "{stats:?}");
}

#[test]
fn dropped_connections_are_retried_until_everything_arrives() {
    let stats = survive(
        Plan::EveryNth {
            fault: Fault::Drop,
            n: 3,
        },
        2,
        120,
    );
    assert!(stats.dropped >= 3, "{stats:?}");
}

#[test]
fn requests_reset_mid_body_store_nothing_partial_and_are_resent() {
    let stats = survive(
        Plan::EveryNth {
            fault: Fault::ResetMidBody,
            n: 3,
        },
        3,
        120,
    );
    assert!(stats.reset >= 3, "{stats:?}");
}

#[test]
fn stalls_that_resume_only_slow_the_sync_and_stalls_that_close_are_retried() {
    let stats = survive(
        Plan::Always(Fault::Stall {
            pause: Duration::from_millis(150),
            resume: true,
        }),
        4,
        80,
    );
    assert!(stats.stalled_resumed >= 8, "{stats:?}");
    assert_eq!(stats.disruptions(), 0, "{stats:?}");

    let stats = survive(
        Plan::EveryNth {
            fault: Fault::Stall {
                pause: Duration::from_millis(300),
                resume: false,
            },
            n: 3,
        },
        5,
        80,
    );
    assert!(stats.stalled_closed >= 3, "{stats:?}");
}

#[test]
fn a_response_lost_after_the_hub_committed_is_recovered_without_a_duplicate() {
    let (stats, rig) = survive_on(
        Plan::EveryNth {
            fault: Fault::LoseResponse,
            n: 3,
        },
        6,
        120,
    );
    // The hub did the work behind at least one lost answer to a batch: the agent learned of
    // it again (it reads the hub's signed watermark after any failure and moves its acked seq
    // up to it, or resends and is acknowledged as a duplicate) and the hub stored each record
    // once (checked in `survive_on`).
    assert!(
        stats
            .lost
            .iter()
            .any(|l| l.starts_with("POST /api/v1/agents/") && l.ends_with("/batches -> 200")),
        "{stats:?}"
    );
    assert!(stats.lost_after_success >= 1, "{stats:?}");
    let row = rig.hub.agent_row(&rig.agent.agent_id).unwrap().unwrap();
    assert_eq!(row["acked_seq"], 120, "{row}");
}

#[test]
fn a_batch_resent_after_its_receipt_was_lost_is_acknowledged_idempotently() {
    // The same at the wire, with a hand-driven agent: the hub commits, the receipt is lost,
    // the very same envelopes are sent again and acknowledged as duplicates.
    let hub = Hub::start().unwrap();
    hub.add_county(COUNTY, "望城区");
    let direct = RawAgent::enroll(&hub.url(), &hub.issue_token(COUNTY), [21; 32]).unwrap();
    let proxy = Proxy::start(&hub.url()).unwrap();
    let raw = RawAgent {
        hub_url: proxy.url(),
        ..direct
    };
    let bodies: Vec<String> = records(COUNTY, 7, 5).lines().map(str::to_owned).collect();
    let chain = raw.chain(0, Digest::GENESIS, &bodies);

    proxy.set_plan(Plan::Always(Fault::LoseResponse));
    let lost = raw.send(&chain);
    assert!(lost.is_err(), "the receipt must not arrive: {lost:?}");
    let stats = wait_for("the proxy to count the lost response", || {
        Some(proxy.stats()).filter(|s| s.lost_responses == 1)
    })
    .unwrap();
    assert_eq!(stats.lost_after_success, 1, "{stats:?}");
    assert_eq!(
        hub.stored(raw.agent_id.as_str()).unwrap().len(),
        5,
        "the hub committed the batch whose receipt was lost"
    );

    proxy.set_plan(Plan::Always(Fault::Pass));
    let reply = raw.send(&chain).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let receipt = raw.receipt(&reply).unwrap();
    assert_eq!((receipt.acked_seq, receipt.head_hash), (5, chain[4].hash()));
    assert_eq!(receipt.outcomes.len(), 5);
    assert!(receipt.outcomes.iter().all(|o| o.duplicate), "{receipt:?}");
    let stored = hub.stored(raw.agent_id.as_str()).unwrap();
    assert_eq!(stored.len(), 5, "stored once");
    for (row, env) in stored.iter().zip(&chain) {
        assert_eq!(
            (row.0, &row.1, &row.2),
            (env.seq, &env.hash().0.to_vec(), &env.body)
        );
    }
}

#[test]
fn a_random_mix_of_faults_over_hundreds_of_records_loses_and_duplicates_nothing() {
    let stats = survive(
        Plan::Random {
            seed: 0x7047_6275,
            percent: 35,
        },
        8,
        300,
    );
    assert!(stats.disruptions() >= 5, "{stats:?}");
    assert!(stats.passed >= 10, "{stats:?}");
}

#[test]
fn the_proxy_stops_listening_when_dropped() {
    let hub = Hub::start().unwrap();
    let proxy = Proxy::start(&hub.url()).unwrap();
    let addr = proxy.addr();
    let resp = tongbu_tests::http()
        .get(format!("{}/healthz", proxy.url()))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // The connection is counted once its task finishes, just after the client has the reply.
    wait_for("the proxy to count the request", || {
        (proxy.stats().passed == 1).then_some(())
    })
    .unwrap();
    drop(proxy);
    // Polled: a process that another test forks at this very moment holds a copy of the
    // listening socket until it execs (the socket is close-on-exec), which keeps it open
    // for a few milliseconds.
    wait_for(&format!("nothing to listen on {addr} after drop"), || {
        std::net::TcpStream::connect(addr).is_err().then_some(())
    })
    .unwrap();
}
