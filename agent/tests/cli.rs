//! The real `tongbu-agent` binary against the fake hub: enroll, submit (stored and refused),
//! sync --once, status, run (READY line, POST /records, wake-up, SIGTERM) and verify (intact
//! and altered); rule codes at intake, `--strict`, `check` exit codes, the local view across
//! processes and offline, and enrollment without a usable policy, checking the exact output
//! lines the v1 interface promises.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{FakeHub, PolicyMode};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;
use tongbu_shared::protocol::Outcome;

const BIN: &str = env!("CARGO_BIN_EXE_tongbu-agent");

async fn agent(data_dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir").arg(data_dir).args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        tokio::io::AsyncWriteExt::write_all(&mut input, bytes)
            .await
            .unwrap();
    }
    drop(input);
    child.wait_with_output().await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn payment(n: u32, amount: i64) -> String {
    format!(
        r#"{{"kind":"payment","id":"P-{n}","rev":1,"county":"430112","contract_id":"C-1","amount_fen":{amount},"paid_on":"2024-04-01","voucher_no":"V{n}"}}"#
    )
}

/// Polls `cond` until it holds or `deadline` passes.
async fn eventually(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_cli_end_to_end_against_a_fake_hub() {
    let hub = FakeHub::start(None, &["tok-1"]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");

    // enroll
    let out = agent(
        &data,
        &["enroll", "--hub", &hub.url, "--token", "tok-1"],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let fp = common::hub_key().public_key().fingerprint();
    assert_eq!(
        text(&out.stdout),
        format!(
            "enrolled as 430112-0000abcd (county 430112 望城区) with hub {}; hub key fingerprint {fp}\n",
            hub.url
        )
    );
    let out = agent(
        &data,
        &["enroll", "--hub", &hub.url, "--token", "tok-1"],
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("already enrolled as agent 430112-0000abcd"));
    let out = agent(
        &dir.path().join("other"),
        &["enroll", "--hub", &hub.url, "--token", "tok-1"],
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with("error: enrollment refused: token_used: "),
        "{}",
        text(&out.stderr)
    );

    // submit: refused whole, then stored
    let bad = [payment(1, 100), payment(2, 100), payment(3, 0)].join("\n");
    let out = agent(&data, &["submit", "-"], Some(bad.as_bytes())).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr)
            .starts_with("error: refused, nothing stored: record 3 (line 3): field `amount_fen`: "),
        "{}",
        text(&out.stderr)
    );
    let file = dir.path().join("records.jsonl");
    std::fs::write(
        &file,
        [payment(1, 100), payment(2, 100), payment(3, 5)].join("\n"),
    )
    .unwrap();
    let out = agent(&data, &["submit", file.to_str().unwrap()], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "seq=1 kind=payment id=P-1 rev=1\nseq=2 kind=payment id=P-2 rev=1\nseq=3 kind=payment id=P-3 rev=1\n"
    );

    // check stores nothing
    let out = agent(&data, &["check", "-"], Some(bad.as_bytes())).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).starts_with("record 3 (line 3): field `amount_fen`"));
    let out = agent(&data, &["check", file.to_str().unwrap()], None).await;
    assert_eq!(
        text(&out.stdout),
        "ok: 3 records are well formed and break no rule the agent can check\n"
    );

    // sync --once and status
    let out = agent(&data, &["sync", "--once"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "synced: acked_seq=3 head_seq=3\n");
    assert_eq!(hub.chain().len(), 3);
    let out = agent(&data, &["status", "--json"], None).await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["agent_id"], "430112-0000abcd");
    assert_eq!(status["acked_seq"], 3);
    assert_eq!(status["queue_depth"], 0);
    assert!(status["last_sync"].as_str().unwrap().ends_with('Z'));
    assert!(status["last_error"].is_null());

    // run: READY, POST /records wakes the sync loop, SIGTERM stops it
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["run", "--listen", "127.0.0.1:0", "--heartbeat-secs", "3600"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let intake = ready.strip_prefix("READY intake=").unwrap().to_owned();
    assert!(intake.starts_with("http://127.0.0.1:"), "{ready}");
    let resp = reqwest::Client::new()
        .post(format!("{intake}/records"))
        .body(payment(4, 100))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["stored"][0]["seq"], 4);
    // The heartbeat is an hour: only the wake-up can send it this soon.
    eventually(
        "the record to reach the hub",
        Duration::from_secs(20),
        || hub.chain().len() == 4,
    )
    .await;
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");

    // verify: intact, then with an altered body
    let out = agent(&data, &["verify"], None).await;
    assert!(out.status.success());
    let line = text(&out.stdout);
    assert!(
        line.starts_with("ok: 4 records verify, head seq 4 hash "),
        "{line}"
    );
    let db = rusqlite::Connection::open(data.join("outbox.db")).unwrap();
    db.execute(
        "UPDATE envelopes SET body = replace(body, 'V2', 'V9') WHERE seq = 2",
        [],
    )
    .unwrap();
    drop(db);
    let out = agent(&data, &["verify"], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).starts_with("seq 2: the signature does not verify"),
        "{}",
        text(&out.stdout)
    );
}

fn budget_line(id: &str, amount: i64, catalogue: &str) -> String {
    format!(
        r#"{{"kind":"budget_line","id":"{id}","rev":1,"county":"430112","department":"101001","fiscal_year":2024,"catalogue_code":"{catalogue}","amount_fen":{amount},"stage":"approved","approved_on":"2024-01-15"}}"#
    )
}

fn contract(id: &str, line: &str, amount: i64) -> String {
    format!(
        r#"{{"kind":"contract","id":"{id}","rev":1,"county":"430112","budget_line_id":"{line}","supplier_uscc":"91350100M000100Y43","supplier_name":"颐养居家养老服务中心","method":"public_tender","catalogue_code":"A0501","amount_fen":{amount},"signed_on":"2024-03-01"}}"#
    )
}

fn contract_payment(id: &str, contract: &str, amount: i64) -> String {
    format!(
        r#"{{"kind":"payment","id":"{id}","rev":1,"county":"430112","contract_id":"{contract}","amount_fen":{amount},"paid_on":"2024-04-01","voucher_no":"GK-{id}"}}"#
    )
}

async fn status_json(data: &Path) -> serde_json::Value {
    let out = agent(data, &["status", "--json"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_judged_at_intake_and_checked_offline() {
    let hub = FakeHub::start(None, &["tok-1"]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let out = agent(
        &data,
        &["enroll", "--hub", &hub.url, "--token", "tok-1"],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("policy version 1 cached"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(status_json(&data).await["policy_version"], 1);

    // A contract over its budget line is stored with its code, beside the line.
    let first = dir.path().join("first.jsonl");
    std::fs::write(
        &first,
        [
            budget_line("BL-1", 100, "A0501"),
            contract("C-1", "BL-1", 200),
        ]
        .join("\n"),
    )
    .unwrap();
    let out = agent(&data, &["submit", first.to_str().unwrap()], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "seq=1 kind=budget_line id=BL-1 rev=1\nseq=2 kind=contract id=C-1 rev=1 codes=BUDGET_EXCEEDED\n"
    );
    assert!(
        text(&out.stderr).contains("seq=2 id=C-1: BUDGET_EXCEEDED: 200 fen"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(status_json(&data).await["head_seq"], 2);

    // --strict refuses the whole file, naming the record, its line and its codes.
    let strict = [contract("C-2", "BL-1", 50), contract("C-3", "BL-1", 60)].join("\n");
    let out = agent(&data, &["submit", "--strict", "-"], Some(strict.as_bytes())).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).starts_with(
            "error: refused (--strict), nothing stored: record 2 (line 2): BUDGET_EXCEEDED: 60 fen"
        ),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(status_json(&data).await["head_seq"], 2);

    // A new process replays what is stored: a contract in a second file is judged against the
    // budget line from the first (C-1 was over budget, so it holds nothing of it).
    let out = agent(
        &data,
        &["submit", "-"],
        Some(contract("C-4", "BL-1", 150).as_bytes()),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "seq=3 kind=contract id=C-4 rev=1 codes=BUDGET_EXCEEDED\n"
    );
    let out = agent(
        &data,
        &["submit", "--strict", "-"],
        Some(contract("C-5", "BL-1", 40).as_bytes()),
    )
    .await;
    assert_eq!(text(&out.stdout), "seq=4 kind=contract id=C-5 rev=1\n");

    // check: a rejecting code exits 1, warnings alone exit 0; nothing is stored.
    let over = [
        contract_payment("P-1", "C-5", 30),
        contract("C-9", "BL-1", 70),
    ]
    .join("\n");
    let out = agent(&data, &["check", "-"], Some(over.as_bytes())).await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("record 2 (line 2) C-9: BUDGET_EXCEEDED: 70 fen"),
        "{stdout}"
    );
    assert_eq!(
        lines[1],
        "1 of 2 record(s) break a rule the agent can check"
    );
    let out = agent(
        &data,
        &["check", "-"],
        Some(contract_payment("P-2", "C-5", 40).as_bytes()),
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "record 1 (line 1) P-2: PAID_WITHOUT_EVALUATION: final payment of contract C-5 without a performance evaluation\n\
         ok: 1 records are well formed and break no rule the agent can check; 1 with warnings\n"
    );
    assert_eq!(status_json(&data).await["head_seq"], 4);

    // The hub's outcomes show in status.
    hub.lock()
        .verdicts
        .insert(2, (Outcome::Rejected, vec!["BUDGET_EXCEEDED".into()]));
    hub.lock()
        .verdicts
        .insert(4, (Outcome::Held, vec!["AWAITING_BUDGET_LINE".into()]));
    let out = agent(&data, &["sync", "--once"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("policy version 1 is current"),
        "{}",
        text(&out.stderr)
    );
    let status = status_json(&data).await;
    assert_eq!(
        (
            &status["held"],
            &status["rejected"],
            &status["policy_version"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(1)
        )
    );

    // With the hub gone, the cached policy still judges: a negative-list code is caught.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let out = agent(&data, &["set-hub", "--hub", &dead], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = agent(
        &data,
        &["check", "-"],
        Some(budget_line("BL-2", 500, "N0201").as_bytes()),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("record 1 (line 1) BL-2: NOT_IN_CATALOGUE: ")
            && stdout.contains("\nrecord 1 (line 1) BL-2: NEGATIVE_LIST: catalogue code N0201"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_stands_when_the_policy_does_not_verify() {
    let hub = FakeHub::start(None, &["tok-1"]).await;
    hub.lock().policy_mode = PolicyMode::Forged;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let out = agent(
        &data,
        &["enroll", "--hub", &hub.url, "--token", "tok-1"],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("enrolled as 430112-0000abcd"));
    assert!(
        text(&out.stderr).contains("warning: enrolled, but the policy could not be pulled yet"),
        "{}",
        text(&out.stderr)
    );
    let status = status_json(&data).await;
    assert!(status["policy_version"].is_null());
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .starts_with("bad_hub_signature: the hub's policy bundle"),
        "{status}"
    );

    // Without a policy the catalogue and negative list are not checked, and check says so.
    let out = agent(
        &data,
        &["check", "-"],
        Some(budget_line("BL-2", 500, "N0201").as_bytes()),
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "ok: 1 records are well formed and break no rule the agent can check (no policy cached yet: the catalogue and negative list were not checked)\n"
    );
}
