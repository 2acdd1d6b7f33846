//! The agent's data directory: `agent.key` (the private key) and `outbox.db` (the SQLite outbox,
//! with its `-wal` and `-shm` files); during a key rotation also `agent.key.new` (the new key,
//! until the hub confirms it) and, for a moment while it replaces `agent.key`, `agent.key.old`. It is created with mode 0700 when missing; nothing else in
//! the agent builds these paths.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// A data directory that exists.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot create the data directory {path}: {cause}")]
pub struct DataDirError {
    pub path: PathBuf,
    pub cause: std::io::Error,
}

impl DataDir {
    /// Opens `path`, creating it (and its parents) when missing.
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|cause| DataDirError {
                path: path.to_owned(),
                cause,
            })?;
        Ok(DataDir {
            root: path.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn key_path(&self) -> PathBuf {
        self.root.join("agent.key")
    }

    /// The new key of a rotation the hub has not confirmed yet.
    pub fn new_key_path(&self) -> PathBuf {
        self.root.join("agent.key.new")
    }

    /// The old key, kept while the new one replaces `agent.key`.
    pub fn old_key_path(&self) -> PathBuf {
        self.root.join("agent.key.old")
    }

    pub fn outbox_path(&self) -> PathBuf {
        self.root.join("outbox.db")
    }
}
