//! A read-only data directory (file modes): `tongbu-agent submit` exits 3 with a message that
//! says so, stores nothing, and works again once write access returns. Skipped (with a notice)
//! when running as root, whom file modes do not stop.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::enrollment;
use tongbu_agent::data_dir::DataDir;
use tongbu_agent::keyfile;
use tongbu_agent::outbox::Outbox;

const BIN: &str = env!("CARGO_BIN_EXE_tongbu-agent");

fn submit(dir: &Path, n: u32) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(["submit", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let record = format!(
        r#"{{"kind":"payment","id":"P-{n}","rev":1,"county":"430112","contract_id":"C-1","amount_fen":100,"paid_on":"2024-04-01","voucher_no":"V{n}"}}"#
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(record.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_read_only_data_dir_refuses_with_exit_3_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(&tmp.path().join("data")).unwrap();
    keyfile::load_or_create(&dir.key_path(), &ring::rand::SystemRandom::new()).unwrap();
    let mut outbox = Outbox::open(&dir.outbox_path()).unwrap();
    outbox
        .save_enrollment(&enrollment("http://127.0.0.1:9"))
        .unwrap();
    drop(outbox);
    let out = submit(dir.root(), 1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    set_mode(&dir.outbox_path(), 0o444);
    set_mode(dir.root(), 0o555);
    if std::fs::OpenOptions::new()
        .write(true)
        .open(dir.outbox_path())
        .is_ok()
    {
        set_mode(dir.root(), 0o700);
        eprintln!(
            "notice: running as root, file modes do not make the data directory read-only; skipped"
        );
        return;
    }
    let out = submit(dir.root(), 2);
    set_mode(dir.root(), 0o700);
    set_mode(&dir.outbox_path(), 0o600);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("read-only") && stderr.contains("nothing stored"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Write access is back: the same submission is taken, as seq 2 (nothing was stored).
    let out = submit(dir.root(), 2);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("seq=2 "), "{stdout}");
}
