//! The hub's transparency log end to end: receipts carry checkpoints the agents verify; a hub
//! restored from an older copy is caught by the agents (and by the hub itself), which re-send
//! what it lost; `tongbu-hub audit verify` re-checks everything offline and names tampering.

use tongbu_tests::{Agent, Hub, assert_same_chain, records};

fn sync(agent: &Agent) {
    agent
        .cli(&["sync", "--once", "--batch-size", "40"])
        .expect_ok("sync --once");
}

#[test]
fn agents_verify_the_log_and_catch_a_hub_restored_from_an_older_copy() {
    let mut hub = Hub::start().unwrap();
    hub.add_county("430112", "望城区");
    hub.add_county("431281", "洪江市");
    let a = Agent::enrolled(&hub, "430112").unwrap();
    let b = Agent::enrolled(&hub, "431281").unwrap();
    a.submit(&records("430112", 1, 100)).expect_ok("submit a");
    b.submit(&records("431281", 2, 60)).expect_ok("submit b");
    sync(&a);
    sync(&b);
    let status = a.status().unwrap();
    assert_eq!(status["hub_log_size"], 100, "{status}");
    assert_eq!(status["hub_log_findings"], 0);
    assert_eq!(b.status().unwrap()["hub_log_size"], 160);

    // A backup of the stopped hub; then both counties go on.
    hub.stop().unwrap();
    let copy = tempfile::tempdir().unwrap();
    hub.backup_db(copy.path());
    hub.restart().unwrap();
    a.submit(&records("430112", 3, 120)).expect_ok("submit a");
    b.submit(&records("431281", 4, 80)).expect_ok("submit b");
    sync(&a);
    sync(&b);
    assert_eq!(a.status().unwrap()["hub_log_findings"], 0);
    assert_eq!(b.status().unwrap()["hub_log_size"], 360);

    // The hub's disk is lost and the older copy restored: 160 entries where agents saw 360.
    hub.stop().unwrap();
    hub.restore_db(copy.path());
    hub.restart().unwrap();

    // B re-sends first, so the log the hub now grows is another history than the one A saw.
    sync(&b);
    sync(&a);
    for (agent, n) in [(&a, 220), (&b, 140)] {
        let status = agent.status().unwrap();
        assert_eq!(status["acked_seq"], n, "{status}");
        assert_eq!(status["hub_log_findings"], 1, "{status}");
        let finding = status["last_hub_log_finding"].as_str().unwrap();
        assert!(
            finding.contains("log_rollback") || finding.contains("log_inconsistent"),
            "{finding}"
        );
        assert_same_chain(&hub, agent);
    }
    // The hub noticed too: agents held checkpoints larger than its log.
    let metrics = tongbu_tests::http()
        .get(format!("{}/metrics", hub.url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let seen = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tongbu_log_rollbacks_seen_total "))
        .unwrap();
    assert!(seen.parse::<u64>().unwrap() >= 1, "{metrics}");

    // One incident is reported once: later syncs extend the new history cleanly.
    a.submit(&records("430112", 5, 10)).expect_ok("submit a");
    sync(&a);
    sync(&b);
    let status = a.status().unwrap();
    assert_eq!(status["hub_log_findings"], 1, "{status}");
    assert_eq!(status["hub_log_size"], 370);
    assert_eq!(b.status().unwrap()["hub_log_findings"], 1);

    // The healed hub's records all check out offline.
    hub.stop().unwrap();
    let audit = hub.cli(&["audit", "verify"]).expect_ok("audit verify");
    assert!(
        audit.stdout.contains("result        OK"),
        "{}",
        audit.stdout
    );
    assert!(
        audit.stdout.contains("log           370 entries"),
        "{}",
        audit.stdout
    );
}

/// Runs `audit verify` on a copy of the hub's data with `tamper` applied (triggers dropped
/// first, as someone editing the file by hand would), and returns its output.
fn audit_after(hub: &Hub, tamper: &str) -> tongbu_tests::Cli {
    let copy = tempfile::tempdir().unwrap();
    hub.backup_db(copy.path());
    std::fs::copy(hub.data_dir().join("hub.key"), copy.path().join("hub.key")).unwrap();
    let db = rusqlite::Connection::open(copy.path().join("hub.db")).unwrap();
    db.execute_batch(tamper).unwrap();
    drop(db);
    let mut cmd = std::process::Command::new(&tongbu_tests::bins().hub);
    cmd.args(["audit", "verify", "--data-dir"]).arg(copy.path());
    cmd.output().unwrap().into()
}

#[test]
fn audit_verify_rechecks_everything_and_names_tampering() {
    let mut hub = Hub::start().unwrap();
    hub.add_county("430112", "望城区");
    let a = Agent::enrolled(&hub, "430112").unwrap();
    a.submit(&records("430112", 7, 150)).expect_ok("submit");
    sync(&a);
    hub.stop().unwrap();

    let clean = hub.cli(&["audit", "verify"]).expect_ok("audit verify");
    assert!(
        clean.stdout.contains("envelopes     150"),
        "{}",
        clean.stdout
    );
    assert!(
        clean.stdout.contains("result        OK"),
        "{}",
        clean.stdout
    );
    // One checkpoint per batch of 40 that grew the log.
    assert!(
        clean.stdout.contains("checkpoints   4 "),
        "{}",
        clean.stdout
    );

    let cases = [
        (
            "DROP TRIGGER envelopes_signed_part_is_immutable;
             UPDATE envelopes SET body = CAST(replace(body, '\"rev\":1', '\"rev\":2') AS BLOB)
             WHERE seq = 17;",
            "seq 17: the signature does not verify",
        ),
        // The log stores subtrees of 16 leaves and more (smaller ones are recomputed from
        // the envelopes, whose tampering the chain checks name).
        (
            "DROP TRIGGER log_nodes_are_append_only_delete;
             DELETE FROM log_nodes WHERE level = 4 AND idx = 5;",
            "log node (level 4, index 5) is missing",
        ),
        (
            "DROP TRIGGER log_nodes_are_append_only_update;
             UPDATE log_nodes SET hash = zeroblob(32) WHERE level = 5 AND idx = 2;",
            "log node (level 5, index 2) differs",
        ),
        (
            "DROP TRIGGER log_checkpoints_are_append_only_update;
             UPDATE log_checkpoints SET payload = replace(payload, '\"tree_size\":80', '\"tree_size\":81')
             WHERE tree_size = 80;",
            "checkpoint of 80 entries: the hub's signature does not verify",
        ),
        (
            "UPDATE agents SET acked_seq = 151;",
            "acknowledged through seq 151 but the log holds only 150",
        ),
    ];
    for (tamper, named) in cases {
        let out = audit_after(&hub, tamper);
        assert!(!out.ok, "audit passed after: {tamper}\n{}", out.stdout);
        assert!(
            out.stdout.contains("PROBLEMS"),
            "{}\n{}",
            out.stdout,
            out.stderr
        );
        assert!(
            out.stdout.contains(named),
            "expected {named:?} after {tamper}:\n{}",
            out.stdout
        );
    }
}
