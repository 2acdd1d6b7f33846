//! A damaged outbox is detected loudly: a truncated file, or one with bytes flipped in the
//! middle, stops `run` at start-up and fails `verify` with an error naming the file — never a
//! panic, never silent serving.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;

use common::{agent_id, append_payments, enrollment};
use tongbu_agent::data_dir::DataDir;
use tongbu_agent::keyfile;
use tongbu_agent::outbox::{Outbox, OutboxError};
use tongbu_agent::verify;

const BIN: &str = env!("CARGO_BIN_EXE_tongbu-agent");

/// An enrolled data directory with 600 records, every connection closed.
fn filled(root: &Path) -> DataDir {
    let dir = DataDir::open(root).unwrap();
    let key = keyfile::load_or_create(&dir.key_path(), &ring::rand::SystemRandom::new()).unwrap();
    let mut outbox = Outbox::open(&dir.outbox_path()).unwrap();
    outbox
        .save_enrollment(&enrollment("http://127.0.0.1:9"))
        .unwrap();
    append_payments(&mut outbox, &key, 1, 600);
    drop(outbox);
    dir
}

fn damage(path: &Path, how: &str) {
    let len = std::fs::metadata(path).unwrap().len();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    if how == "truncate" {
        f.set_len(len / 2).unwrap();
    } else {
        let at = len / 2 - 2048;
        let mut bytes = vec![0u8; 8192];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut bytes).unwrap();
        for b in &mut bytes {
            *b = !*b;
        }
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&bytes).unwrap();
    }
    f.sync_all().unwrap();
}

/// What the start-up check says about the outbox in `dir`.
fn start_check(dir: &DataDir) -> Result<(), OutboxError> {
    let outbox = Outbox::open(&dir.outbox_path())?;
    let key = keyfile::load(&dir.key_path()).unwrap();
    let keys = outbox.key_ring(key.public_key())?;
    verify::check_at_start(&outbox, &dir.outbox_path(), &agent_id(), &keys)
}

#[test]
fn an_intact_outbox_passes_the_start_up_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = filled(tmp.path());
    start_check(&dir).unwrap();
}

#[test]
fn a_damaged_outbox_is_refused_naming_the_file() {
    for how in ["truncate", "flip"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = filled(tmp.path());
        damage(&dir.outbox_path(), how);
        let err = start_check(&dir).unwrap_err();
        assert!(matches!(err, OutboxError::Damaged { .. }), "{how}: {err}");
        let text = err.to_string();
        let path = dir.outbox_path().display().to_string();
        assert!(
            text.contains(&path) && text.contains("damaged"),
            "{how}: {text}"
        );

        // The binary: `run` refuses to start, `verify` fails; both name the file.
        for args in [&["run", "--listen", "127.0.0.1:0"][..], &["verify"][..]] {
            let out = std::process::Command::new(BIN)
                .arg("--data-dir")
                .arg(dir.root())
                .args(args)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(!out.status.success(), "{how} {args:?}: {stdout}");
            assert!(!stdout.contains("READY"), "{how} {args:?}: {stdout}");
            assert!(!stderr.contains("panicked"), "{how} {args:?}: {stderr}");
            assert!(
                stderr.contains(&path) || stdout.contains(&path),
                "{how} {args:?}: {stderr} {stdout}"
            );
        }
    }
}
