//! Sync: every record a county submitted reaches the hub exactly once, byte for byte, through
//! agent crashes, hub outages and lost acknowledgements.

use std::collections::HashMap;

use tongbu_tests::{Agent, Hub, assert_same_chain, records, wait_for};

#[test]
fn three_counties_a_thousand_records_each_arrive_exactly_once() {
    let hub = Hub::start().unwrap();
    let counties = [
        ("430112", "望城区"),
        ("431281", "洪江市"),
        ("431002", "北湖区"),
    ];
    let mut agents = Vec::new();
    for (i, (code, name)) in counties.iter().enumerate() {
        hub.add_county(code, name);
        let agent = Agent::enrolled(&hub, code).unwrap();
        let out = agent
            .submit(&records(code, i as u64 + 1, 1000))
            .expect_ok("submit");
        assert_eq!(
            out.stdout.lines().count(),
            1000,
            "one line per stored record"
        );
        assert!(
            out.stdout
                .lines()
                .next()
                .unwrap()
                .starts_with("seq=1 kind=budget_line id="),
            "{}",
            out.stdout
        );
        agents.push(agent);
    }
    for agent in &mut agents {
        agent.start().unwrap();
    }
    for agent in &agents {
        assert_eq!(agent.wait_synced().unwrap(), 1000, "log:\n{}", agent.log());
        assert_same_chain(&hub, agent);
        let row = hub.agent_row(&agent.agent_id).unwrap().unwrap();
        assert_eq!(row["acked_seq"], 1000);
        assert_eq!(row["lag"], 0);
        assert!(row["last_seen"].is_string());
        let status = agent.status().unwrap();
        assert!(status["last_sync"].is_string(), "{status}");
        assert!(status["last_error"].is_null(), "{status}");
    }
    let total: i64 = hub
        .db()
        .unwrap()
        .query_row("SELECT COUNT(*) FROM envelopes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(total, 3000);
    let distinct_bodies: i64 = hub
        .db()
        .unwrap()
        .query_row("SELECT COUNT(DISTINCT body) FROM envelopes", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(distinct_bodies, 3000, "no record stored twice");

    // Local intake over HTTP takes the same path; a graceful stop exits cleanly.
    let url = agents[0].intake_url().unwrap();
    let resp = tongbu_tests::http()
        .post(format!("{url}/records"))
        .body(records("430112", 99, 3))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let stored: serde_json::Value = resp.json().unwrap();
    assert_eq!(stored["stored"].as_array().unwrap().len(), 3);
    assert_eq!(stored["stored"][0]["seq"], 1001);
    assert_eq!(agents[0].wait_synced().unwrap(), 1003);
    assert_same_chain(&hub, &agents[0]);
    for agent in &mut agents {
        assert!(
            agent.proc.take().unwrap().terminate().unwrap(),
            "agent exits cleanly on SIGTERM"
        );
    }
}

#[test]
fn an_agent_killed_mid_sync_resumes_without_loss_or_duplicates() {
    let hub = Hub::start().unwrap();
    hub.add_county("431281", "洪江市");
    let mut agent = Agent::enrolled(&hub, "431281").unwrap();
    agent
        .submit(&records("431281", 5, 6000))
        .expect_ok("submit");
    // Small batches, so that a sync takes many round trips and a kill lands in the middle.
    let run_args = ["--batch-size", "20"];
    let acked_at_hub = |agent: &Agent| -> Option<u64> {
        hub.agent_row(&agent.agent_id).ok()??["acked_seq"].as_u64()
    };
    let mut partial_kills = 0;
    let mut last = 0;
    for _ in 0..5 {
        agent.start_with(&run_args).unwrap();
        // Kill it as soon as the hub holds more than before, but not everything.
        let acked = wait_for("the hub to acknowledge more", || {
            acked_at_hub(&agent).filter(|&a| a > last)
        })
        .unwrap();
        agent.kill9();
        if acked == 6000 {
            break;
        }
        partial_kills += 1;
        last = acked;
        // Whatever the hub got is a prefix of the chain.
        let at_hub = hub.stored(&agent.agent_id).unwrap();
        assert_eq!(&agent.stored().unwrap()[..at_hub.len()], &at_hub[..]);
    }
    assert!(partial_kills >= 1, "no kill landed mid-sync");

    agent.start_with(&run_args).unwrap();
    assert_eq!(agent.wait_synced().unwrap(), 6000, "log:\n{}", agent.log());
    assert_same_chain(&hub, &agent);
    assert!(
        agent
            .cli(&["verify"])
            .expect_ok("verify")
            .stdout
            .starts_with("ok: 6000 records verify")
    );
}

#[test]
fn agents_back_off_while_the_hub_is_down_then_catch_up() {
    let mut hub = Hub::start().unwrap();
    hub.add_county("430112", "望城区");
    let mut agent = Agent::enrolled(&hub, "430112").unwrap();
    agent.start().unwrap();
    let url = agent.intake_url().unwrap();
    let post = |n: usize, seed: u64| {
        let resp = tongbu_tests::http()
            .post(format!("{url}/records"))
            .body(records("430112", seed, n))
            .send()
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            200,
            "intake refused: {}",
            resp.text().unwrap_or_default()
        );
    };
    post(50, 1);
    agent.wait_synced().unwrap();

    hub.stop().unwrap();
    // Intake keeps working while the hub is away: records are durable locally.
    post(200, 2);
    let status = wait_for("the agent to notice the hub is down", || {
        let s = agent.status().ok()?;
        s["last_error"].is_string().then_some(s)
    })
    .unwrap();
    assert_eq!(status["head_seq"], 250);
    assert_eq!(status["queue_depth"], 200);
    assert_eq!(status["acked_seq"], 50);

    hub.restart().unwrap();
    assert_eq!(agent.wait_synced().unwrap(), 250, "log:\n{}", agent.log());
    assert_same_chain(&hub, &agent);
    assert!(agent.status().unwrap()["last_error"].is_null());
}

#[test]
fn a_hub_restored_from_an_older_backup_gets_back_what_it_lost() {
    let mut hub = Hub::start().unwrap();
    hub.add_county("431281", "洪江市");
    let agent = Agent::enrolled(&hub, "431281").unwrap();
    agent.submit(&records("431281", 8, 100)).expect_ok("submit");
    agent.cli(&["sync", "--once"]).expect_ok("sync --once");

    // The province backs up the stopped hub, then runs on; more records arrive.
    hub.stop().unwrap();
    let backup = tempfile::tempdir().unwrap();
    hub.backup_db(backup.path());
    hub.restart().unwrap();
    agent.submit(&records("431281", 9, 200)).expect_ok("submit");
    agent.cli(&["sync", "--once"]).expect_ok("sync --once");
    assert_eq!(
        hub.agent_row(&agent.agent_id).unwrap().unwrap()["acked_seq"],
        300
    );

    // The hub's disk is lost and the backup restored: it holds 100 where the agent saw 300.
    hub.stop().unwrap();
    hub.restore_db(backup.path());
    hub.restart().unwrap();
    assert_eq!(
        hub.agent_row(&agent.agent_id).unwrap().unwrap()["acked_seq"],
        100
    );

    // The agent keeps its records, notices from the watermark, and re-sends what was lost.
    agent
        .submit(&records("431281", 10, 10))
        .expect_ok("submit more");
    agent
        .cli(&["sync", "--once"])
        .expect_ok("sync after the restore");
    assert_eq!(agent.status().unwrap()["acked_seq"], 310);
    assert_same_chain(&hub, &agent);
}

#[test]
fn a_lost_acknowledgement_is_resent_and_acked_idempotently() {
    let hub = Hub::start().unwrap();
    hub.add_county("430112", "望城区");
    let agent = Agent::enrolled(&hub, "430112").unwrap();
    agent.submit(&records("430112", 3, 300)).expect_ok("submit");
    agent.cli(&["sync", "--once"]).expect_ok("sync --once");
    assert_same_chain(&hub, &agent);

    // The agent forgets the hub's acknowledgement (as if the reply had been lost) ...
    agent
        .db()
        .unwrap()
        .execute("UPDATE sync_state SET acked_seq = 0, acked_hash = NULL", [])
        .unwrap();
    assert_eq!(agent.status().unwrap()["acked_seq"], 0);
    // ... and syncs again: the hub already holds everything and says so; nothing is duplicated.
    let out = agent
        .cli(&["sync", "--once"])
        .expect_ok("second sync --once");
    assert!(out.stdout.contains("acked_seq=300"), "{}", out.stdout);
    assert_eq!(agent.status().unwrap()["acked_seq"], 300);
    assert_same_chain(&hub, &agent);

    let mut seqs: HashMap<u64, usize> = HashMap::new();
    for (seq, _, _) in hub.stored(&agent.agent_id).unwrap() {
        *seqs.entry(seq).or_default() += 1;
    }
    assert!(seqs.values().all(|&n| n == 1));
}
