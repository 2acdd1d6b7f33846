//! The agent's Ed25519 private key, stored as PKCS#8 DER in `<data-dir>/agent.key` with mode
//! 0600. A key is written to a temporary file, fsynced, then hard-linked into place, so the
//! key file is either absent or complete, and an existing key is never overwritten — except by
//! [`replace`], which a confirmed key rotation uses: the old key is hard-linked to
//! `agent.key.old`, the new key renamed over `agent.key` (atomic), then the old link removed.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::SecureRandom;
use tongbu_shared::KeyPair;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("no agent key at {}: enroll this agent first (`tongbu-agent enroll --hub URL --token T`)", path.display())]
    Missing { path: PathBuf },
    #[error("cannot {action} the agent key {}: {cause}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{} is not a valid Ed25519 PKCS#8 private key", path.display())]
    Invalid { path: PathBuf },
    #[error("{} may be read by other users (mode {mode:o}); run `chmod 600` on it", path.display())]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("the system random number generator failed")]
    Random,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError {
    let path = path.to_owned();
    move |cause| KeyFileError::Io {
        action,
        path,
        cause,
    }
}

/// Loads the key at `path`.
pub fn load(path: &Path) -> Result<KeyPair, KeyFileError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(KeyFileError::Missing {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(io("read", path)(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let der = fs::read(path).map_err(io("read", path))?;
    KeyPair::from_pkcs8(&der).map_err(|_| KeyFileError::Invalid {
        path: path.to_owned(),
    })
}

/// Loads the key at `path`, or makes and stores a new one when there is none.
pub fn load_or_create(path: &Path, rng: &dyn SecureRandom) -> Result<KeyPair, KeyFileError> {
    match load(path) {
        Err(KeyFileError::Missing { .. }) => {}
        other => return other,
    }
    let (key, der) = KeyPair::generate(rng).map_err(|_| KeyFileError::Random)?;
    let tmp = path.with_extension("key.tmp");
    // A temporary file left by a crash may carry any mode; start afresh.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(io("replace", &tmp)(e)),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    file.write_all(&der).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("write", &tmp))?;
    drop(file);
    // A hard link fails when the target exists, so a key made concurrently by another process
    // is never replaced; that key wins and is loaded below.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return load(path),
        Err(e) => return Err(io("create", path)(e)),
    }
    sync_dir(path)?;
    Ok(key)
}

/// Removes the key file at `path` if there is one.
pub fn remove(path: &Path) -> Result<(), KeyFileError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", path)(e)),
    }
}

/// Makes the key at `new` the key at `current`, atomically: `current` is always either the
/// old key or the new one. The old key stays at `old` until the new one is in place.
pub fn replace(new: &Path, current: &Path, old: &Path) -> Result<(), KeyFileError> {
    load(new)?;
    remove(old)?;
    match fs::hard_link(current, old) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io("keep a copy of", current)(e)),
    }
    fs::rename(new, current).map_err(io("replace", current))?;
    sync_dir(current)?;
    remove(old)
}

fn sync_dir(path: &Path) -> Result<(), KeyFileError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync the directory of", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        assert!(matches!(load(&path), Err(KeyFileError::Missing { .. })));
        let rng = ring::rand::SystemRandom::new();
        let made = load_or_create(&path, &rng).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create(&path, &rng).unwrap();
        assert_eq!(made.public_key(), again.public_key());
        assert_eq!(load(&path).unwrap().public_key(), made.public_key());
        assert!(!dir.path().join("agent.key.tmp").exists());
    }

    #[test]
    fn refuses_bad_or_open_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        fs::write(&path, b"not a key").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load(&path), Err(KeyFileError::Invalid { .. })));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
