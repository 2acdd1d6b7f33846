//! The real `tongbu-agent` binary against the fake hub: enroll, submit (stored and refused),
//! sync --once, status, run (READY line, POST /records, wake-up, SIGTERM) and verify (intact
//! and altered), checking the exact output lines the v1 interface promises.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::FakeHub;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

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
    assert_eq!(text(&out.stdout), "ok: 3 records are well formed\n");

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
