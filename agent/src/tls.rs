//! How the agent trusts the hub's transport: the hub's URL together with the one way its TLS
//! certificate is checked ([`HubUrl`], [`HubTrust`]), chosen at enrollment, stored with it in
//! the outbox and used by every later call.
//!
//! - `Pinned`: exactly one certificate is accepted, the one whose SHA-256 the agent was given
//!   (inside the enrollment token, or `--cert-sha256`). Neither the host name nor the validity
//!   dates are checked — the pin names one certificate exactly, which is stronger than any name
//!   or date — but the handshake signatures are, so the server must hold the certificate's key.
//! - `Ca`: standard WebPKI verification against only the CA certificates given (`--ca`), host
//!   name checked.
//! - `Plain`: `http://` only; allowed without a flag only for a hub on this machine (loopback or
//!   `localhost`), otherwise only with `--allow-plain-http`, and loudly warned about.
//!
//! Invariants: a [`HubUrl`] always pairs an `https` URL with `Pinned` or `Ca` and an `http` URL
//! with `Plain` (an enrollment stored before pinning may be `Unpinned`, which refuses every call
//! until `set-hub` names a trust); there is no trust-everything mode; a certificate mismatch
//! fails the handshake, before any request byte (token included) is sent.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use tongbu_shared::certpin::{CertFingerprint, token_pin};

/// How the agent checks the hub's TLS certificate.
#[derive(Clone, PartialEq, Eq)]
pub enum HubTrust {
    /// Exactly the certificate with this SHA-256.
    Pinned(CertFingerprint),
    /// Any certificate for the hub's host name issued by one of these CAs.
    Ca(CaCerts),
    /// No TLS: an `http://` hub.
    Plain,
    /// An `https://` enrollment stored before certificate pinning: every call is refused until
    /// `set-hub` gives a pin or a CA.
    Unpinned,
}

/// CA certificates given with `--ca`, kept as the PEM text they came in.
#[derive(Clone, PartialEq, Eq)]
pub struct CaCerts {
    pem: String,
    certs: Vec<CertificateDer<'static>>,
}

/// A trust that cannot be chosen or stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error(
        "an https hub needs a pinned certificate: use a token issued by this hub, --cert-sha256 (the fingerprint `tongbu-hub tls show` prints) or --ca FILE"
    )]
    NeedsPin,
    #[error(
        "refusing plain HTTP to {host}: traffic to the hub would be neither encrypted nor authenticated; use https://, or pass --allow-plain-http if you really mean it"
    )]
    PlainNotAllowed { host: String },
    #[error("{flag} applies to https:// hub URLs only; {url} is plain HTTP")]
    TrustNeedsHttps { flag: &'static str, url: String },
    #[error("{0}")]
    BadTokenPin(String),
    #[error("--ca {path}: {problem}")]
    BadCa { path: String, problem: String },
    #[error("invalid hub URL {url:?}: {problem}")]
    BadUrl { url: String, problem: String },
    #[error("the stored hub trust {stored:?} is not valid: {problem}")]
    BadStored { stored: String, problem: String },
}

impl CaCerts {
    /// Parses one or more PEM CA certificates (`label` names their file in errors).
    pub fn parse(pem: &str, label: &str) -> Result<CaCerts, TrustError> {
        let bad = |problem: String| TrustError::BadCa {
            path: label.to_owned(),
            problem,
        };
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(bad("holds no `BEGIN CERTIFICATE` block".into()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in &certs {
            roots
                .add(cert.clone())
                .map_err(|e| bad(format!("a certificate cannot be a trust anchor: {e}")))?;
        }
        Ok(CaCerts {
            pem: pem.to_owned(),
            certs,
        })
    }

    /// Reads and parses a CA file.
    pub fn read(path: &Path) -> Result<CaCerts, TrustError> {
        let label = path.display().to_string();
        let pem = std::fs::read_to_string(path).map_err(|e| TrustError::BadCa {
            path: label.clone(),
            problem: format!("cannot read it: {e}"),
        })?;
        CaCerts::parse(&pem, &label)
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

impl HubTrust {
    /// How `status` shows it: `pinned sha256:…`, `ca (N certificates)`, `plain`, `unpinned`.
    pub fn describe(&self) -> String {
        match self {
            HubTrust::Pinned(pin) => format!("pinned {pin}"),
            HubTrust::Ca(ca) if ca.len() == 1 => "ca (1 certificate)".to_owned(),
            HubTrust::Ca(ca) => format!("ca ({} certificates)", ca.len()),
            HubTrust::Plain => "plain".to_owned(),
            HubTrust::Unpinned => "unpinned".to_owned(),
        }
    }

    /// The text kept in the outbox.
    pub fn to_stored(&self) -> String {
        match self {
            HubTrust::Pinned(pin) => format!("pinned {pin}"),
            HubTrust::Ca(ca) => format!("ca\n{}", ca.pem),
            HubTrust::Plain => "plain".to_owned(),
            HubTrust::Unpinned => "unpinned".to_owned(),
        }
    }

    /// Reads [`HubTrust::to_stored`]'s text back.
    pub fn from_stored(stored: &str) -> Result<HubTrust, TrustError> {
        let bad = |problem: String| TrustError::BadStored {
            stored: stored.chars().take(80).collect(),
            problem,
        };
        if let Some(pin) = stored.strip_prefix("pinned ") {
            return CertFingerprint::parse_hex(pin)
                .map(HubTrust::Pinned)
                .map_err(|e| bad(e.to_string()));
        }
        if let Some(pem) = stored.strip_prefix("ca\n") {
            return CaCerts::parse(pem, "(stored)")
                .map(HubTrust::Ca)
                .map_err(|e| bad(e.to_string()));
        }
        match stored {
            "plain" => Ok(HubTrust::Plain),
            "unpinned" => Ok(HubTrust::Unpinned),
            _ => Err(bad("unknown kind".into())),
        }
    }
}

impl fmt::Debug for HubTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl fmt::Debug for CaCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaCerts({} certificates)", self.certs.len())
    }
}

/// What the operator said about trust on the command line (`--ca`, `--cert-sha256`,
/// `--allow-plain-http`).
#[derive(Debug, Clone, Default)]
pub struct TrustOptions {
    pub ca: Option<CaCerts>,
    pub cert_sha256: Option<CertFingerprint>,
    pub allow_plain_http: bool,
}

/// A hub URL (checked: `http` or `https`, a host, no query or fragment, no trailing `/`) and
/// the trust that goes with it.
#[derive(Clone, PartialEq, Eq)]
pub struct HubUrl {
    url: String,
    trust: HubTrust,
}

impl HubUrl {
    /// Pairs `url` with `trust`; refuses a pairing the invariants forbid.
    pub fn new(url: &str, trust: HubTrust) -> Result<HubUrl, TrustError> {
        let (url, https) = check_url(url)?;
        match (&trust, https) {
            (HubTrust::Pinned(_) | HubTrust::Ca(_) | HubTrust::Unpinned, true)
            | (HubTrust::Plain, false) => Ok(HubUrl { url, trust }),
            (HubTrust::Pinned(_), false) => Err(TrustError::TrustNeedsHttps {
                flag: "a certificate pin",
                url,
            }),
            (HubTrust::Ca(_), false) => Err(TrustError::TrustNeedsHttps { flag: "--ca", url }),
            (HubTrust::Unpinned, false) => Ok(HubUrl {
                url,
                trust: HubTrust::Plain,
            }),
            (HubTrust::Plain, true) => Err(TrustError::NeedsPin),
        }
    }

    /// An `http://` hub on this machine (tests, the in-process demo).
    pub fn plain(url: &str) -> Result<HubUrl, TrustError> {
        HubUrl::new(url, HubTrust::Plain)
    }

    /// The trust for a new enrollment: with https, `--ca`, else `--cert-sha256`, else the pin
    /// inside `token`; with http, plain if the hub is on this machine or `--allow-plain-http`.
    /// Decided before anything is sent.
    pub fn for_enrollment(
        url: &str,
        token: &str,
        options: &TrustOptions,
    ) -> Result<HubUrl, TrustError> {
        HubUrl::choose(url, options, || match token_pin(token) {
            Ok(Some(pin)) => Ok(HubTrust::Pinned(pin)),
            Ok(None) => Err(TrustError::NeedsPin),
            Err(e) => Err(TrustError::BadTokenPin(e.to_string())),
        })
    }

    /// The trust after `set-hub`: as for enrollment, except that without `--ca` or
    /// `--cert-sha256` an https hub keeps the pin or CA it had (the hub moved, its certificate
    /// did not).
    pub fn for_move(
        url: &str,
        current: &HubTrust,
        options: &TrustOptions,
    ) -> Result<HubUrl, TrustError> {
        HubUrl::choose(url, options, || match current {
            HubTrust::Pinned(_) | HubTrust::Ca(_) => Ok(current.clone()),
            HubTrust::Plain | HubTrust::Unpinned => Err(TrustError::NeedsPin),
        })
    }

    fn choose(
        url: &str,
        options: &TrustOptions,
        otherwise: impl FnOnce() -> Result<HubTrust, TrustError>,
    ) -> Result<HubUrl, TrustError> {
        let (checked, https) = check_url(url)?;
        if https {
            let trust = if let Some(ca) = &options.ca {
                HubTrust::Ca(ca.clone())
            } else if let Some(pin) = options.cert_sha256 {
                HubTrust::Pinned(pin)
            } else {
                otherwise()?
            };
            return HubUrl::new(&checked, trust);
        }
        if options.ca.is_some() {
            return Err(TrustError::TrustNeedsHttps {
                flag: "--ca",
                url: checked,
            });
        }
        if options.cert_sha256.is_some() {
            return Err(TrustError::TrustNeedsHttps {
                flag: "--cert-sha256",
                url: checked,
            });
        }
        let hub = HubUrl::plain(&checked)?;
        if !hub.is_on_this_machine() && !options.allow_plain_http {
            return Err(TrustError::PlainNotAllowed {
                host: hub.host().unwrap_or_default(),
            });
        }
        Ok(hub)
    }

    /// A stored enrollment: `stored` is `None` for one made before certificate pinning.
    pub fn from_stored(url: &str, stored: Option<&str>) -> Result<HubUrl, TrustError> {
        let trust = match stored {
            Some(text) => HubTrust::from_stored(text)?,
            None => HubTrust::Unpinned,
        };
        HubUrl::new(url, trust)
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn trust(&self) -> &HubTrust {
        &self.trust
    }

    fn host(&self) -> Option<String> {
        reqwest::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
    }

    /// Whether the hub is on this machine: a loopback address or `localhost`.
    pub fn is_on_this_machine(&self) -> bool {
        let Some(host) = self.host() else {
            return false;
        };
        // The URL parser normalises addresses (`127.1` is `127.0.0.1`) and brackets IPv6 ones.
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(IpAddr::V4(ip)) => ip.is_loopback(),
            Ok(IpAddr::V6(ip)) => {
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            Err(_) => host.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
        }
    }

    /// The warning a plain HTTP hub deserves, louder when the traffic leaves this machine;
    /// `None` with TLS.
    pub fn plain_warning(&self) -> Option<String> {
        if self.trust != HubTrust::Plain {
            return None;
        }
        Some(if self.is_on_this_machine() {
            format!(
                "WARNING: traffic to the hub at {} is NOT ENCRYPTED (plain HTTP; allowed because the hub is on this machine)",
                self.url
            )
        } else {
            format!(
                "WARNING: TRAFFIC TO THE HUB AT {} IS NOT ENCRYPTED: plain HTTP to another machine (--allow-plain-http); anyone on the network path can read the records; use https://",
                self.url
            )
        })
    }
}

impl fmt::Display for HubUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl fmt::Debug for HubUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HubUrl({} {:?})", self.url, self.trust)
    }
}

/// Checks a hub URL; returns it without a trailing `/`, and whether it is https.
fn check_url(url: &str) -> Result<(String, bool), TrustError> {
    let trimmed = url.trim().trim_end_matches('/');
    let bad = |problem: &str| TrustError::BadUrl {
        url: url.to_owned(),
        problem: problem.to_owned(),
    };
    let parsed = reqwest::Url::parse(trimmed).map_err(|e| bad(&e.to_string()))?;
    let https = match parsed.scheme() {
        "https" => true,
        "http" => false,
        _ => return Err(bad("the scheme must be http or https")),
    };
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("it names no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("it must not carry a query or fragment"));
    }
    Ok((trimmed.to_owned(), https))
}

/// The hub presented another certificate than the pinned one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the hub presented TLS certificate {presented}, not the pinned {expected}")]
pub struct PinMismatch {
    pub expected: CertFingerprint,
    pub presented: CertFingerprint,
}

/// Accepts exactly the pinned certificate and checks the handshake signatures with it.
#[derive(Debug)]
struct PinnedVerifier {
    pin: CertFingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = CertFingerprint::of_der(end_entity);
        if presented == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch {
                    expected: self.pin,
                    presented,
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `trust`; `None` for plain HTTP (and for `Unpinned`,
/// which the caller refuses).
pub fn client_config(trust: &HubTrust) -> Result<Option<rustls::ClientConfig>, rustls::Error> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let config = match trust {
        HubTrust::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin: *pin,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        HubTrust::Ca(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in &ca.certs {
                roots.add(cert.clone())?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        HubTrust::Plain | HubTrust::Unpinned => return Ok(None),
    };
    Ok(Some(config))
}

/// What went wrong with the hub's certificate, if that is why `error` (or one of its causes)
/// happened: a pin mismatch, or another certificate refusal.
pub fn certificate_failure(
    error: &(dyn std::error::Error + 'static),
) -> Option<Result<PinMismatch, String>> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(rustls::Error::InvalidCertificate(cert)) = e.downcast_ref::<rustls::Error>() {
            return Some(match cert {
                CertificateError::Other(OtherError(other)) => other
                    .downcast_ref::<PinMismatch>()
                    .cloned()
                    .ok_or_else(|| other.to_string()),
                other => Err(describe_certificate_error(other)),
            });
        }
        // An io::Error hides the error it wraps from `source()`; `get_ref()` reaches it.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn describe_certificate_error(e: &CertificateError) -> String {
    match e {
        CertificateError::UnknownIssuer => {
            "it is not issued by the CA this agent trusts (--ca)".to_owned()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!("it is not valid for the hub's host name ({e})")
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("it has expired ({e})")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tongbu_shared::certpin::pinned_token;

    fn pin(seed: &[u8]) -> CertFingerprint {
        CertFingerprint::of_der(seed)
    }

    fn ca() -> CaCerts {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        CaCerts::parse(&cert.pem(), "ca.pem").unwrap()
    }

    #[test]
    fn https_trust_is_ca_then_fingerprint_then_the_tokens_pin() {
        let token = pinned_token("tbe_secret", &pin(b"token"));
        let url = "https://hub.example.cn:8440/";
        let hub = HubUrl::for_enrollment(url, &token, &TrustOptions::default()).unwrap();
        assert_eq!(hub.as_str(), "https://hub.example.cn:8440");
        assert_eq!(hub.trust(), &HubTrust::Pinned(pin(b"token")));
        assert_eq!(hub.plain_warning(), None);

        let flag = TrustOptions {
            cert_sha256: Some(pin(b"flag")),
            ..TrustOptions::default()
        };
        let hub = HubUrl::for_enrollment(url, &token, &flag).unwrap();
        assert_eq!(hub.trust(), &HubTrust::Pinned(pin(b"flag")));

        let with_ca = TrustOptions {
            ca: Some(ca()),
            ..flag
        };
        let hub = HubUrl::for_enrollment(url, &token, &with_ca).unwrap();
        assert!(matches!(hub.trust(), HubTrust::Ca(_)), "{hub:?}");
        assert_eq!(hub.trust().describe(), "ca (1 certificate)");
    }

    #[test]
    fn https_without_any_pin_is_refused_before_anything_is_sent() {
        let err = HubUrl::for_enrollment(
            "https://hub.example.cn",
            "tbe_secret",
            &TrustOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err, TrustError::NeedsPin);
        assert!(
            err.to_string()
                .contains("an https hub needs a pinned certificate")
        );
        let err = HubUrl::for_enrollment(
            "https://hub.example.cn",
            "tbe_secret.garbled",
            &TrustOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, TrustError::BadTokenPin(_)), "{err}");
    }

    #[test]
    fn plain_http_is_for_this_machine_unless_explicitly_allowed() {
        let token = pinned_token("tbe_secret", &pin(b"token"));
        for local in [
            "http://127.0.0.1:8440",
            "http://127.8.9.10",
            "http://localhost:8440",
            "http://LOCALHOST.",
            "http://[::1]:8440",
            "http://[::ffff:127.0.0.1]:1",
        ] {
            let hub = HubUrl::for_enrollment(local, &token, &TrustOptions::default())
                .unwrap_or_else(|e| panic!("{local}: {e}"));
            assert_eq!(hub.trust(), &HubTrust::Plain, "{local}");
            let warning = hub.plain_warning().unwrap();
            assert!(warning.contains("NOT ENCRYPTED"), "{warning}");
            assert!(warning.contains("on this machine"), "{warning}");
        }
        for remote in [
            "http://hub.example.cn",
            "http://10.0.0.8:8440",
            "http://[2001:db8::1]",
            "http://localhost.example.cn",
        ] {
            let err = HubUrl::for_enrollment(remote, &token, &TrustOptions::default()).unwrap_err();
            assert!(
                matches!(err, TrustError::PlainNotAllowed { .. }),
                "{remote}: {err}"
            );
            let allowed = TrustOptions {
                allow_plain_http: true,
                ..TrustOptions::default()
            };
            let hub = HubUrl::for_enrollment(remote, &token, &allowed).unwrap();
            assert_eq!(hub.trust(), &HubTrust::Plain);
            let warning = hub.plain_warning().unwrap();
            assert!(warning.contains("another machine"), "{warning}");
        }
        // Certificate options make no sense without TLS.
        let pinned = TrustOptions {
            cert_sha256: Some(pin(b"x")),
            ..TrustOptions::default()
        };
        let err = HubUrl::for_enrollment("http://127.0.0.1:1", &token, &pinned).unwrap_err();
        assert!(matches!(
            err,
            TrustError::TrustNeedsHttps {
                flag: "--cert-sha256",
                ..
            }
        ));
        let with_ca = TrustOptions {
            ca: Some(ca()),
            ..TrustOptions::default()
        };
        let err = HubUrl::for_enrollment("http://127.0.0.1:1", &token, &with_ca).unwrap_err();
        assert!(matches!(
            err,
            TrustError::TrustNeedsHttps { flag: "--ca", .. }
        ));
    }

    #[test]
    fn a_moved_hub_keeps_its_pin_unless_told_otherwise() {
        let pinned = HubTrust::Pinned(pin(b"old"));
        let moved =
            HubUrl::for_move("https://new.example.cn", &pinned, &TrustOptions::default()).unwrap();
        assert_eq!(moved.trust(), &pinned);
        let new_pin = TrustOptions {
            cert_sha256: Some(pin(b"new")),
            ..TrustOptions::default()
        };
        let moved = HubUrl::for_move("https://new.example.cn", &pinned, &new_pin).unwrap();
        assert_eq!(moved.trust(), &HubTrust::Pinned(pin(b"new")));
        // From plain HTTP to https needs a pin: there is none to keep.
        let err = HubUrl::for_move(
            "https://new.example.cn",
            &HubTrust::Plain,
            &TrustOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err, TrustError::NeedsPin);
        // And back to loopback plain HTTP (a proxy in front of the hub on this machine).
        let local =
            HubUrl::for_move("http://127.0.0.1:9", &pinned, &TrustOptions::default()).unwrap();
        assert_eq!(local.trust(), &HubTrust::Plain);
    }

    #[test]
    fn the_stored_form_reads_back_the_same() {
        for trust in [
            HubTrust::Pinned(pin(b"a")),
            HubTrust::Ca(ca()),
            HubTrust::Plain,
            HubTrust::Unpinned,
        ] {
            assert_eq!(HubTrust::from_stored(&trust.to_stored()).unwrap(), trust);
        }
        assert!(HubTrust::from_stored("pinned nonsense").is_err());
        assert!(HubTrust::from_stored("trust me").is_err());
        // An enrollment stored before pinning.
        let old = HubUrl::from_stored("https://hub.example.cn", None).unwrap();
        assert_eq!(old.trust(), &HubTrust::Unpinned);
        let old = HubUrl::from_stored("http://127.0.0.1:8440", None).unwrap();
        assert_eq!(old.trust(), &HubTrust::Plain);
        // The pairing rules hold for stored values too.
        assert!(
            HubUrl::from_stored("http://x", Some(&HubTrust::Pinned(pin(b"a")).to_stored()))
                .is_err()
        );
        assert!(HubUrl::from_stored("https://x", Some("plain")).is_err());
    }

    #[test]
    fn urls_are_checked() {
        for bad in [
            "127.0.0.1:8440",
            "ftp://x",
            "https://x/?a=1",
            "https://x/#f",
            "not a url",
        ] {
            assert!(HubUrl::plain(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            HubUrl::plain("http://127.0.0.1:8440/tongbu/")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8440/tongbu"
        );
    }
}
