//! In step: three agents of one county send their streams in the worst order; held records
//! resolve when their predecessors arrive, outcomes flow back to the agents, and the ledger
//! equals both in-order delivery and an independent sum of the records.

use serde_json::Value;
use tongbu_tests::{Agent, Hub, records, wait_for};

const COUNTY: &str = "430112";

/// The county's stream split the way its systems hold it.
struct Streams {
    budget: String,
    procurement: String,
    treasury: String,
}

fn split(jsonl: &str) -> Streams {
    let mut s = Streams {
        budget: String::new(),
        procurement: String::new(),
        treasury: String::new(),
    };
    for line in jsonl.lines() {
        let kind = serde_json::from_str::<Value>(line).unwrap()["kind"]
            .as_str()
            .unwrap()
            .to_owned();
        let to = match kind.as_str() {
            "budget_line" => &mut s.budget,
            "payment" => &mut s.treasury,
            _ => &mut s.procurement,
        };
        to.push_str(line);
        to.push('\n');
    }
    s
}

/// Sums the records the way the ledger should: every record of a valid stream is accepted.
fn independent_sum(jsonl: &str) -> (i64, i64, i64, i64) {
    let (mut budget, mut contracted, mut paid, mut count) = (0, 0, 0, 0);
    for line in jsonl.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let amount = v["amount_fen"].as_i64().unwrap_or(0);
        match v["kind"].as_str().unwrap() {
            "budget_line" => budget += amount,
            "contract" => contracted += amount,
            "payment" => paid += amount,
            _ => {}
        }
        count += 1;
    }
    (budget, contracted, paid, count)
}

fn ledger(hub: &Hub, year: i32) -> Value {
    hub.ledger(COUNTY, year).unwrap()
}

#[test]
fn the_worst_order_ends_in_the_same_ledger_as_the_best() {
    let stream = records(COUNTY, 21, 400);
    let parts = split(&stream);
    let (budget, contracted, paid, count) = independent_sum(&stream);

    // Worst order: the treasury first, then procurement, then the budget office.
    let worst = Hub::start().unwrap();
    worst.add_county(COUNTY, "望城区");
    let office = Agent::enrolled(&worst, COUNTY).unwrap();
    let procurement = Agent::enrolled(&worst, COUNTY).unwrap();
    let treasury = Agent::enrolled(&worst, COUNTY).unwrap();
    treasury
        .submit(&parts.treasury)
        .expect_ok("treasury submit");
    treasury.sync_once();
    let early = ledger(&worst, 2024);
    assert!(
        early["held"].as_i64().unwrap() > 0,
        "payments wait for their contracts: {early}"
    );
    assert_eq!(early["paid_fen"], 0, "nothing held counts: {early}");
    procurement
        .submit(&parts.procurement)
        .expect_ok("procurement submit");
    procurement.sync_once();
    office
        .submit(&parts.budget)
        .expect_ok("budget office submit");
    office.sync_once();
    let after = ledger(&worst, 2024);
    assert_eq!(after["held"], 0, "every held record resolved: {after}");

    // The treasury hears on its next sync that its held payments were accepted.
    let before = treasury.status().unwrap();
    assert!(before["held"].as_i64().unwrap() > 0, "{before}");
    treasury.sync_once();
    let status = treasury.status().unwrap();
    assert_eq!(status["held"], 0, "{status}");
    assert_eq!(status["rejected"], 0, "{status}");
    assert!(status["policy_version"].as_u64().unwrap() >= 1, "{status}");

    // Best order on another hub: budget office, procurement, treasury.
    let best = Hub::start().unwrap();
    best.add_county(COUNTY, "望城区");
    for part in [&parts.budget, &parts.procurement, &parts.treasury] {
        let agent = Agent::enrolled(&best, COUNTY).unwrap();
        agent.submit(part).expect_ok("submit");
        agent.sync_once();
    }
    assert_eq!(ledger(&best, 2024), after);

    // And both equal an independent sum of what the counties sent.
    let expect = serde_json::json!({
        "county": COUNTY, "year": 2024, "budget_approved_fen": budget, "contracted_fen": contracted,
        "paid_fen": paid, "accepted": count, "held": 0, "rejected": 0,
    });
    assert_eq!(after, expect);
    let (status, v) = worst
        .get(&format!("/api/v1/violations?county={COUNTY}"))
        .unwrap();
    assert_eq!(status, 200);
    let warnings_only = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["rule"] == "PAID_WITHOUT_EVALUATION");
    assert!(warnings_only, "a valid stream breaks no rule: {v}");
}

#[test]
fn violations_are_reported_per_rule_and_the_county_is_told_at_once() {
    let hub = Hub::start().unwrap();
    hub.add_county(COUNTY, "望城区");
    let agent = Agent::enrolled(&hub, COUNTY).unwrap();
    agent.sync_once(); // fetch the policy
    let file = [
        r#"{"kind":"budget_line","id":"BL-9","rev":1,"county":"430112","department":"101001","fiscal_year":2024,"catalogue_code":"A0501","amount_fen":1000000,"stage":"approved","approved_on":"2024-01-15"}"#,
        r#"{"kind":"contract","id":"C-9","rev":1,"county":"430112","budget_line_id":"BL-9","supplier_uscc":"91350100M000100Y43","supplier_name":"颐养居家养老服务中心","method":"public_tender","catalogue_code":"A0501","amount_fen":1500000,"signed_on":"2024-03-01"}"#,
        r#"{"kind":"contract","id":"C-10","rev":1,"county":"430112","budget_line_id":"BL-9","supplier_uscc":"91350100M000100Y43","supplier_name":"颐养居家养老服务中心","method":"public_tender","catalogue_code":"N0201","amount_fen":500000,"signed_on":"2024-01-01"}"#,
        r#"{"kind":"payment","id":"P-9","rev":1,"county":"430112","contract_id":"C-9","amount_fen":100,"paid_on":"2024-04-01","voucher_no":"GK1"}"#,
    ]
    .join("\n");

    // --strict refuses the whole file and stores nothing.
    let strict = agent.cli_with_input(&["submit", "--strict", "-"], Some(file.as_bytes()));
    assert_eq!(strict.code, Some(2), "{} {}", strict.stdout, strict.stderr);
    assert!(
        strict.stderr.contains("BUDGET_EXCEEDED"),
        "{}",
        strict.stderr
    );
    assert_eq!(agent.status().unwrap()["head_seq"], 0);

    // Plain submit stores every record and tells the county the codes at once.
    let out = agent
        .cli_with_input(&["submit", "-"], Some(file.as_bytes()))
        .expect_ok("submit");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert!(!lines[0].contains("codes="), "{}", lines[0]);
    assert!(lines[1].contains("BUDGET_EXCEEDED"), "{}", lines[1]);
    assert!(
        lines[2].contains("NEGATIVE_LIST") && lines[2].contains("DATE_ORDER"),
        "{}",
        lines[2]
    );
    assert!(lines[3].contains("PREDECESSOR_REJECTED"), "{}", lines[3]);
    agent.sync_once();

    // The hub's verdict is authoritative and the same.
    let (_, v) = hub
        .get(&format!("/api/v1/violations?county={COUNTY}"))
        .unwrap();
    let rows: Vec<(String, u64, String)> = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["seq"].as_u64().unwrap(),
                r["rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("C-9", 2, "BUDGET_EXCEEDED"),
        ("C-10", 3, "NEGATIVE_LIST"),
        ("C-10", 3, "NOT_IN_CATALOGUE"),
        ("C-10", 3, "DATE_ORDER"),
        ("P-9", 4, "PREDECESSOR_REJECTED"),
    ] {
        let expected = (expected.0.to_owned(), expected.1, expected.2.to_owned());
        assert!(
            rows.contains(&expected),
            "{expected:?} missing from {rows:?}"
        );
    }
    assert!(
        v["violations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["agent_id"] == agent.agent_id.as_str()
                && r["kind"].is_string()
                && r["detail"].is_string())
    );
    let l = ledger(&hub, 2024);
    assert_eq!(
        (
            l["budget_approved_fen"].as_i64(),
            l["contracted_fen"].as_i64(),
            l["paid_fen"].as_i64()
        ),
        (Some(1_000_000), Some(0), Some(0))
    );
    assert_eq!(
        (l["accepted"].as_i64(), l["rejected"].as_i64()),
        (Some(1), Some(3))
    );
    let (status, rec) = hub
        .get(&format!("/api/v1/records/{}/2", agent.agent_id))
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(rec["outcome"], "rejected");
    assert!(
        rec["codes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "BUDGET_EXCEEDED"),
        "{rec}"
    );
    assert_eq!(agent.status().unwrap()["rejected"], 3);

    // Bad queries are refused clearly.
    let (status, v) = hub.get("/api/v1/ledger?county=43011&year=2024").unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
}

#[test]
fn agents_take_only_genuine_and_newer_policy() {
    let mut hub = Hub::start().unwrap();
    hub.add_county(COUNTY, "望城区");
    let agent = Agent::enrolled(&hub, COUNTY).unwrap();
    agent.sync_once();
    assert_eq!(agent.status().unwrap()["policy_version"], 1);
    let shown: Value =
        serde_json::from_str(&hub.cli(&["policy", "show"]).expect_ok("policy show").stdout)
            .unwrap();
    assert!(
        shown["catalogue"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["code"] == "A0501"),
        "{shown}"
    );
    assert!(shown["negative_list"].as_array().unwrap().len() >= 5);

    // A bad file changes nothing.
    let bad = hub.data_dir().join("bad-policy.json");
    std::fs::write(&bad, r#"{"catalogue":[],"negative_list":[]}"#).unwrap();
    assert!(!hub.cli(&["policy", "set", bad.to_str().unwrap()]).ok);

    // Back up the hub, then publish version 2 without A0501.
    hub.stop().unwrap();
    let backup = tempfile::tempdir().unwrap();
    for name in ["hub.db", "hub.db-wal", "hub.db-shm"] {
        if hub.data_dir().join(name).exists() {
            std::fs::copy(hub.data_dir().join(name), backup.path().join(name)).unwrap();
        }
    }
    hub.restart().unwrap();
    let mut v2 = shown.clone();
    v2.as_object_mut().unwrap().remove("version");
    v2["catalogue"] = Value::Array(
        v2["catalogue"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["code"] != "A0501")
            .cloned()
            .collect(),
    );
    let file = hub.data_dir().join("policy-v2.json");
    std::fs::write(&file, v2.to_string()).unwrap();
    hub.cli(&["policy", "set", file.to_str().unwrap()])
        .expect_ok("policy set");
    agent.sync_once();
    assert_eq!(agent.status().unwrap()["policy_version"], 2);
    // The agent judges with it, offline too.
    hub.stop().unwrap();
    let line = r#"{"kind":"budget_line","id":"BL-1","rev":1,"county":"430112","department":"101001","fiscal_year":2024,"catalogue_code":"A0501","amount_fen":100,"stage":"approved","approved_on":"2024-01-15"}"#;
    let check = agent.cli_with_input(&["check", "-"], Some(line.as_bytes()));
    assert_eq!(check.code, Some(1), "{} {}", check.stdout, check.stderr);
    assert!(
        check.stdout.contains("NOT_IN_CATALOGUE"),
        "{}",
        check.stdout
    );
    let fine = line.replace("A0501", "A0502");
    assert!(
        agent
            .cli_with_input(&["check", "-"], Some(fine.as_bytes()))
            .ok
    );

    // A hub restored from the older backup offers version 1 again: refused.
    hub.stop().unwrap();
    for name in ["hub.db", "hub.db-wal", "hub.db-shm"] {
        let _ = std::fs::remove_file(hub.data_dir().join(name));
        if backup.path().join(name).exists() {
            std::fs::copy(backup.path().join(name), hub.data_dir().join(name)).unwrap();
        }
    }
    hub.restart().unwrap();
    let _ = agent.cli(&["sync", "--once"]);
    let status = agent.status().unwrap();
    assert_eq!(status["policy_version"], 2, "{status}");
    assert!(
        status["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("policy_rollback"),
        "{status}"
    );

    // A tampered bundle (its signed bytes altered in the hub's store) is refused too. The
    // restored hub is at version 1: publish 2 and 3, then alter 3.
    let mut v1 = shown.clone();
    v1.as_object_mut().unwrap().remove("version");
    let v3 = hub.data_dir().join("policy-v3.json");
    std::fs::write(&v3, v1.to_string()).unwrap();
    hub.cli(&["policy", "set", v3.to_str().unwrap()])
        .expect_ok("policy set (2)");
    hub.cli(&["policy", "set", v3.to_str().unwrap()])
        .expect_ok("policy set (3)");
    let db = rusqlite::Connection::open(hub.data_dir().join("hub.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let changed = db
        .execute("UPDATE policies SET payload = CAST(replace(CAST(payload AS TEXT), '居家养老服务', '工程建设服务') AS BLOB) WHERE version = (SELECT MAX(version) FROM policies)", [])
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let _ = agent.cli(&["sync", "--once"]);
    let status = wait_for("the agent to refuse the tampered policy", || {
        let s = agent.status().ok()?;
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("bad_hub_signature"))
            .then_some(s)
    })
    .unwrap();
    assert_eq!(status["policy_version"], 2, "{status}");
}
