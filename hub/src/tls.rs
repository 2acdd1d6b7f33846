//! The hub's TLS identity: its certificate chain and private key (PEM files), and the
//! self-signed pair a first run makes in `<data-dir>/tls/` (`cert.pem`, `key.pem`).
//!
//! Agents pin the SHA-256 of the end-entity certificate ([`CertFingerprint`]); enrollment
//! tokens carry it. So the pair is made once and then only read: replacing it means pointing
//! every agent at the new fingerprint (`tongbu-agent set-hub --cert-sha256`).
//!
//! Invariants: a generated pair is written into a fresh temporary directory (key mode 0600,
//! each file fsynced) that is then renamed to `tls/` in one step, so `cert.pem` and `key.pem`
//! always belong together, even when `serve` and `token issue` race to make them; an existing
//! pair is never overwritten. A certificate and key that do not belong together, or a file that
//! holds no certificate (key), is refused with the file named.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tongbu_shared::certpin::CertFingerprint;

use crate::keys::{sync_dir, write_private};

/// The folder of the data directory holding the generated pair.
pub const TLS_DIR: &str = "tls";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
/// A copy of the certificate `serve` last presented when it was given `--tls-cert` (public,
/// not secret): what `token issue` and `tls show` pin when they are not told which file.
pub const SERVING_CERT_FILE: &str = "serving-cert.pem";
/// How long a generated certificate is valid. Agents pin it, so it is long: replacing it is
/// an operator's decision, not a calendar's.
pub const GENERATED_VALID_DAYS: i64 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {}: {cause}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    #[error("the TLS {what} file {} holds no usable PEM {what}: {problem}", path.display())]
    BadPem {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error(
        "the TLS certificate {} and key {} do not belong together: {problem}",
        cert.display(),
        key.display()
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        problem: String,
    },
    #[error(
        "the TLS pair in {} is incomplete: {} exists but {} does not; restore the missing file, or move the folder aside to make a new pair (agents pinned to the old certificate then need `tongbu-agent set-hub --cert-sha256`)",
        dir.display(),
        present.display(),
        missing.display()
    )]
    Incomplete {
        dir: PathBuf,
        present: PathBuf,
        missing: PathBuf,
    },
    #[error("cannot make a self-signed TLS certificate: {0}")]
    Generate(String),
    #[error("cannot write the TLS pair into {}: {cause}", dir.display())]
    Write { dir: PathBuf, cause: io::Error },
}

/// Where a certificate and its key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The generated pair's place in `data_dir`.
    pub fn in_data_dir(data_dir: &Path) -> TlsFiles {
        let dir = data_dir.join(TLS_DIR);
        TlsFiles {
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
        }
    }
}

/// A certificate chain with its fingerprint (the end-entity certificate's).
#[derive(Debug, Clone)]
pub struct HubCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub fingerprint: CertFingerprint,
    pub path: PathBuf,
}

/// The hub's certificate chain and private key, checked to belong together.
pub struct HubIdentity {
    pub cert: HubCert,
    key: PrivateKeyDer<'static>,
    pub key_path: PathBuf,
    /// Whether this run made the pair.
    pub generated: bool,
}

impl std::fmt::Debug for HubIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubIdentity")
            .field("cert", &self.cert)
            .field("key_path", &self.key_path)
            .field("generated", &self.generated)
            .finish_non_exhaustive()
    }
}

/// The rustls provider the hub uses (ring, like the rest of Tongbu's crypto).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl HubIdentity {
    /// A rustls server configuration for this identity: TLS 1.2 and 1.3, HTTP/1.1 by ALPN.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mismatch = |problem: String| TlsError::Mismatch {
            cert: self.cert.path.clone(),
            key: self.key_path.clone(),
            problem,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| mismatch(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.cert.chain.clone(), self.key.clone_key())
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => {
                    mismatch("the key is not the certificate's".into())
                }
                other => mismatch(other.to_string()),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Reads a PEM certificate chain (end-entity certificate first).
pub fn load_cert(path: &Path) -> Result<HubCert, TlsError> {
    let bytes = read(path, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            what: "certificate",
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::BadPem {
            what: "certificate",
            path: path.to_owned(),
            problem: "no `BEGIN CERTIFICATE` block".into(),
        });
    };
    Ok(HubCert {
        fingerprint: CertFingerprint::of_der(leaf),
        chain,
        path: path.to_owned(),
    })
}

/// Reads a certificate chain and its private key (PKCS#8, PKCS#1 or SEC1 PEM) and checks that
/// they belong together.
pub fn load(files: &TlsFiles) -> Result<HubIdentity, TlsError> {
    let cert = load_cert(&files.cert)?;
    let bytes = read(&files.key, "key")?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::BadPem {
        what: "key",
        path: files.key.clone(),
        problem: e.to_string(),
    })?;
    let identity = HubIdentity {
        cert,
        key,
        key_path: files.key.clone(),
        generated: false,
    };
    // Building the server configuration is what checks the key against the certificate.
    identity.server_config()?;
    Ok(identity)
}

/// The data directory's pair, made (self-signed) first when there is none: the one function
/// both `serve` and `token issue` use, so the token pins what the server presents.
/// `extra_names` are added to the generated certificate's names (DNS names or IP addresses);
/// `now_unix` dates it.
pub fn load_or_generate(
    data_dir: &Path,
    extra_names: &[String],
    now_unix: i64,
) -> Result<HubIdentity, TlsError> {
    let files = TlsFiles::in_data_dir(data_dir);
    let dir = data_dir.join(TLS_DIR);
    match (files.cert.exists(), files.key.exists()) {
        (true, true) => return load(&files),
        (true, false) => {
            return Err(TlsError::Incomplete {
                dir,
                present: files.cert,
                missing: files.key,
            });
        }
        (false, true) => {
            return Err(TlsError::Incomplete {
                dir,
                present: files.key,
                missing: files.cert,
            });
        }
        (false, false) => {}
    }
    let pair = generate(&subject_names(extra_names), now_unix)?;
    let made = install(data_dir, &pair)?;
    let mut identity = load(&files)?;
    identity.generated = made;
    Ok(identity)
}

/// Records which certificate `serve` presents: a copy of `cert` (a certificate given with
/// `--tls-cert`), or none (the data directory's own pair). Written to a temporary file, synced
/// and renamed, so a reader sees the old copy or the new one.
pub fn record_serving(data_dir: &Path, cert: Option<&Path>) -> Result<(), TlsError> {
    let dir = data_dir.join(TLS_DIR);
    let target = dir.join(SERVING_CERT_FILE);
    let write = |cause| TlsError::Write {
        dir: dir.clone(),
        cause,
    };
    match cert {
        None => match fs::remove_file(&target) {
            Ok(()) => sync_dir(&dir).map_err(write),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(write(e)),
        },
        Some(cert) => {
            let pem = fs::read(cert).map_err(|cause| TlsError::Read {
                what: "certificate",
                path: cert.to_owned(),
                cause,
            })?;
            fs::create_dir_all(&dir).map_err(write)?;
            let tmp = dir.join(format!("{SERVING_CERT_FILE}.tmp"));
            write_private(&tmp, &pem).map_err(write)?;
            fs::rename(&tmp, &target).map_err(write)?;
            sync_dir(&dir).map_err(write)
        }
    }
}

/// The certificate `serve` last presented, if it was given one (see [`record_serving`]).
pub fn serving_cert(data_dir: &Path) -> Option<PathBuf> {
    let path = data_dir.join(TLS_DIR).join(SERVING_CERT_FILE);
    path.exists().then_some(path)
}

/// A generated certificate and key, as PEM text.
#[derive(Clone)]
pub struct GeneratedPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The names a generated certificate carries: loopback names, this machine's name, `extra`.
pub fn subject_names(extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        IpAddr::V4(Ipv4Addr::LOCALHOST).to_string(),
        IpAddr::V6(Ipv6Addr::LOCALHOST).to_string(),
    ];
    names.extend(machine_name());
    for name in extra {
        let name = name.trim().to_owned();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// A self-signed certificate (ECDSA P-256) for `names`, valid from a day before `now_unix`
/// (clocks differ) for [`GENERATED_VALID_DAYS`].
pub fn generate(names: &[String], now_unix: i64) -> Result<GeneratedPair, TlsError> {
    let failed = |e: rcgen::Error| TlsError::Generate(e.to_string());
    if let Some(bad) = names
        .iter()
        .find(|n| n.parse::<IpAddr>().is_err() && !is_dns_name(n))
    {
        return Err(TlsError::Generate(format!(
            "{bad:?} is neither a DNS name nor an IP address"
        )));
    }
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(failed)?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "Tongbu");
    dn.push(
        rcgen::DnType::CommonName,
        format!(
            "tongbu-hub {}",
            names.get(3).map_or("localhost", String::as_str)
        ),
    );
    params.distinguished_name = dn;
    let day = time::Duration::days(1);
    let now = time::OffsetDateTime::from_unix_timestamp(now_unix)
        .map_err(|e| TlsError::Generate(format!("the time {now_unix} is out of range: {e}")))?;
    params.not_before = now - day;
    params.not_after = now + time::Duration::days(GENERATED_VALID_DAYS);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok(GeneratedPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes `pair` as `<data_dir>/tls/` in one rename. Returns `false` when another process
/// installed its own pair first (that one stays; `pair` is discarded).
fn install(data_dir: &Path, pair: &GeneratedPair) -> Result<bool, TlsError> {
    let dir = data_dir.join(TLS_DIR);
    let write_err = |cause| TlsError::Write {
        dir: dir.clone(),
        cause,
    };
    fs::create_dir_all(data_dir).map_err(write_err)?;
    // A name no other maker (process or thread) uses: racers each build their own pair.
    let mut nonce = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| TlsError::Generate("the system random number generator failed".into()))?;
    let tmp = data_dir.join(format!(".{TLS_DIR}.tmp-{}", hex::encode(nonce)));
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(&tmp).map_err(write_err)?;
    let written = write_private(&tmp.join(KEY_FILE), pair.key_pem.as_bytes())
        .and_then(|()| write_private(&tmp.join(CERT_FILE), pair.cert_pem.as_bytes()))
        .and_then(|()| sync_dir(&tmp));
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(write_err(e));
    }
    // The certificate is public: readable by all, like any certificate.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = fs::set_permissions(tmp.join(CERT_FILE), fs::Permissions::from_mode(0o644));
    }
    match fs::rename(&tmp, &dir) {
        Ok(()) => {
            sync_dir(data_dir).map_err(write_err)?;
            Ok(true)
        }
        // Another process renamed its pair into place first (`tls/` is not empty now).
        Err(_) if dir.join(CERT_FILE).exists() && dir.join(KEY_FILE).exists() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(false)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(write_err(e))
        }
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|cause| TlsError::Read {
        what,
        path: path.to_owned(),
        cause,
    })
}

/// This machine's host name when it is a usable DNS name (best effort).
fn machine_name() -> Option<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .ok()?;
    let name = name.trim().to_ascii_lowercase();
    (name != "localhost" && is_dns_name(&name)).then_some(name)
}

/// Whether `name` is a DNS host name (letters, digits and hyphens in dot-separated labels; a
/// leading `*.` wildcard allowed).
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const NOW: i64 = 1_750_000_000;

    #[test]
    fn a_first_run_makes_a_private_pair_and_later_runs_keep_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_generate(dir.path(), &["hub.example.cn".into()], NOW).unwrap();
        assert!(first.generated);
        let files = TlsFiles::in_data_dir(dir.path());
        assert_eq!(first.cert.path, files.cert);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&files.key), 0o600);
            assert_eq!(mode(&dir.path().join(TLS_DIR)), 0o700);
        }
        let again = load_or_generate(dir.path(), &[], NOW + 10).unwrap();
        assert!(!again.generated);
        assert_eq!(again.cert.fingerprint, first.cert.fingerprint);
        assert_eq!(
            load_cert(&files.cert).unwrap().fingerprint,
            first.cert.fingerprint
        );
        assert_eq!(
            first.cert.fingerprint,
            CertFingerprint::of_der(&first.cert.chain[0])
        );
        // Nothing is left behind but the pair.
        let entries: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, vec![std::ffi::OsString::from(TLS_DIR)]);
    }

    #[test]
    fn the_served_certificate_is_recorded_for_token_issue() {
        let data = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        assert_eq!(serving_cert(data.path()), None);
        let pair = generate(&subject_names(&[]), NOW).unwrap();
        let given = elsewhere.path().join("hub.pem");
        fs::write(&given, &pair.cert_pem).unwrap();
        record_serving(data.path(), Some(&given)).unwrap();
        let recorded = serving_cert(data.path()).unwrap();
        assert_eq!(
            load_cert(&recorded).unwrap().fingerprint,
            load_cert(&given).unwrap().fingerprint
        );
        // Back to the data directory's own pair: the record goes, and going twice is fine.
        record_serving(data.path(), None).unwrap();
        record_serving(data.path(), None).unwrap();
        assert_eq!(serving_cert(data.path()), None);
        // A missing file is named.
        let err = record_serving(data.path(), Some(&elsewhere.path().join("nope.pem")));
        assert!(matches!(err, Err(TlsError::Read { .. })));
    }

    #[test]
    fn generated_names_cover_loopback_and_extras_once() {
        let names = subject_names(&["hub.example.cn".into(), "localhost".into(), " ".into()]);
        assert_eq!(&names[..3], ["localhost", "127.0.0.1", "::1"]);
        assert!(names.contains(&"hub.example.cn".to_owned()));
        assert_eq!(names.iter().filter(|n| *n == "localhost").count(), 1);
        assert!(!names.iter().any(|n| n.trim().is_empty()));
        assert!(generate(&["not a dns name!".into()], NOW).is_err());
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = generate(&subject_names(&[]), NOW).unwrap();
        let b = generate(&subject_names(&[]), NOW).unwrap();
        let cert = dir.path().join("a.pem");
        let key = dir.path().join("b.key");
        fs::write(&cert, &a.cert_pem).unwrap();
        fs::write(&key, &b.key_pem).unwrap();
        let err = load(&TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{text}");
        assert!(
            text.contains("a.pem")
                && text.contains("b.key")
                && text.contains("not the certificate's"),
            "{text}"
        );
        fs::write(&key, &a.key_pem).unwrap();
        assert!(load(&TlsFiles { cert, key }).is_ok());
    }

    #[test]
    fn unreadable_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let err = load_cert(&missing).unwrap_err().to_string();
        assert!(err.contains("nope.pem"), "{err}");
        let junk = dir.path().join("junk.pem");
        fs::write(&junk, "hello\n").unwrap();
        let err = load_cert(&junk).unwrap_err();
        assert!(matches!(err, TlsError::BadPem { .. }), "{err}");
        assert!(err.to_string().contains("junk.pem"), "{err}");
        let pair = generate(&subject_names(&[]), NOW).unwrap();
        let cert = dir.path().join("cert.pem");
        fs::write(&cert, &pair.cert_pem).unwrap();
        // A certificate where the key should be.
        let err = load(&TlsFiles {
            cert: cert.clone(),
            key: cert.clone(),
        })
        .unwrap_err();
        assert!(matches!(err, TlsError::BadPem { what: "key", .. }), "{err}");
    }

    #[test]
    fn half_a_pair_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        load_or_generate(dir.path(), &[], NOW).unwrap();
        let files = TlsFiles::in_data_dir(dir.path());
        fs::remove_file(&files.key).unwrap();
        let err = load_or_generate(dir.path(), &[], NOW).unwrap_err();
        assert!(matches!(err, TlsError::Incomplete { .. }), "{err}");
        assert!(err.to_string().contains("key.pem"), "{err}");
        assert!(files.cert.exists());
    }

    #[test]
    fn racing_first_runs_end_with_one_pair() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let made: Vec<HubIdentity> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let path = path.clone();
                    s.spawn(move || load_or_generate(&path, &[], NOW).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Whoever renamed first won; every other racer uses the winner's pair, not its own.
        let on_disk = load_cert(&TlsFiles::in_data_dir(&path).cert)
            .unwrap()
            .fingerprint;
        assert!(made.iter().all(|id| id.cert.fingerprint == on_disk));
        assert_eq!(made.iter().filter(|id| id.generated).count(), 1);
        assert_eq!(
            fs::read_dir(&path).unwrap().count(),
            1,
            "temporary folders left"
        );
    }
}
