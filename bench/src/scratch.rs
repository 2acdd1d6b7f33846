//! Scratch folders for the benchmark's databases and data directories: made with a unique
//! name under a parent folder (the system's temporary folder unless told otherwise) and
//! removed, with everything in them, when dropped.
//!
//! Not the `tempfile` crate, on purpose: CI builds this benchmark in the same cargo invocation
//! and target folder as the binaries it drives (`target/e2e`, where the end-to-end tests build
//! them), and `tempfile` would switch on features of crates the binaries use (`bitflags/std`
//! through `rustix`), forcing both binaries to be rebuilt there on every other run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A folder removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A new folder `<prefix>-<unique>` in the system's temporary folder.
    pub fn new(prefix: &str) -> std::io::Result<Scratch> {
        Scratch::new_in(&std::env::temp_dir(), prefix)
    }

    /// A new folder `<prefix>-<unique>` in `parent`.
    pub fn new_in(parent: &Path, prefix: &str) -> std::io::Result<Scratch> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("{prefix}-{}-{n}-{nanos:x}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(Scratch { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn made_unique_and_removed_on_drop() {
        let a = Scratch::new("tongbu-bench-test").unwrap();
        let b = Scratch::new("tongbu-bench-test").unwrap();
        assert_ne!(a.path(), b.path());
        std::fs::write(a.path().join("x"), b"x").unwrap();
        let kept = a.path().to_path_buf();
        drop(a);
        assert!(!kept.exists());
        assert!(b.path().is_dir());
    }
}
