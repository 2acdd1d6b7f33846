//! The hub's Ed25519 signing key, kept at `<data-dir>/hub.key` as a PKCS#8 document. It is
//! made on first use, written to a temporary file with mode 0600, flushed to disk and only
//! then renamed into place, so a crash never leaves a half-written key behind; afterwards it
//! is only ever read. Agents pin the public half at enrollment, so losing this file means
//! re-enrolling every agent: back it up with the database.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use ring::rand::SecureRandom;
use tongbu_shared::KeyPair;
use tongbu_shared::crypto::CryptoError;

pub const KEY_FILE: &str = "hub.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the hub key {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write the hub key {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("the hub key {path} is not a valid Ed25519 PKCS#8 key: {source}")]
    Invalid { path: PathBuf, source: CryptoError },
    #[error("cannot make a new hub key: {0}")]
    Generate(CryptoError),
}

/// Loads the hub key from `data_dir`, making and storing a new one if there is none yet.
pub fn load_or_create(data_dir: &Path, rng: &dyn SecureRandom) -> Result<KeyPair, KeyError> {
    match load(data_dir) {
        Err(KeyError::Read { path, source }) if source.kind() == io::ErrorKind::NotFound => {
            create(&path, rng)
        }
        other => other,
    }
}

/// Loads the hub key from `data_dir`; a missing key is an error (for commands that only
/// check what exists, like `audit verify`).
pub fn load(data_dir: &Path) -> Result<KeyPair, KeyError> {
    let path = data_dir.join(KEY_FILE);
    match fs::read(&path) {
        Ok(doc) => KeyPair::from_pkcs8(&doc).map_err(|source| KeyError::Invalid { path, source }),
        Err(source) => Err(KeyError::Read { path, source }),
    }
}

fn create(path: &Path, rng: &dyn SecureRandom) -> Result<KeyPair, KeyError> {
    let (key, doc) = KeyPair::generate(rng).map_err(KeyError::Generate)?;
    let tmp = path.with_extension("key.tmp");
    let write_err = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    write_private(&tmp, &doc).map_err(write_err)?;
    fs::rename(&tmp, path).map_err(write_err)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir).map_err(write_err)?;
    }
    Ok(key)
}

/// Writes `bytes` to a new file readable by its owner only (0600) and flushes it to disk.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Flushes a directory, so the renames in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn a_key_is_made_once_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let rng = SystemRandom::new();
        let first = load_or_create(dir.path(), &rng).unwrap();
        let again = load_or_create(dir.path(), &rng).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), b"garbage").unwrap();
        let err = load_or_create(dir.path(), &SystemRandom::new()).unwrap_err();
        assert!(matches!(err, KeyError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("hub.key"));
    }
}
