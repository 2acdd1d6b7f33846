//! The HTTP client for the hub's agent API (reqwest, rustls). The hub's TLS certificate is
//! checked the way the enrollment says ([`crate::tls`]: a pin or a CA; plain HTTP only where
//! allowed), and a certificate the agent does not trust is an error a person must act on, not
//! a network blip to retry quietly. Every agent call is signed with
//! the agent's key (`RequestAuth` over the exact method, path and body sent), and every signed
//! document the hub returns is verified against the hub key pinned at enrollment before it is
//! parsed: a receipt, watermark or policy bundle that does not verify is an error, never
//! trusted. Every request carries a fresh 128-bit random nonce (32 hex characters), which the
//! hub remembers to refuse replays; a `clock_skew` refusal is described as how far this
//! machine's clock is ahead of or behind the hub's.

use std::sync::Arc;
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tongbu_shared::KeyPair;
use tongbu_shared::certpin::CertFingerprint;
use tongbu_shared::crypto::{PublicKey, Signature};
use tongbu_shared::ids::AgentId;
use tongbu_shared::policy::PolicyBundle;
use tongbu_shared::protocol::{
    ApiError, BatchRequest, ENROLL_PATH, EnrollRequest, EnrollResponse, ErrorCode, KeyRotated,
    POLICY_PATH, Receipt, RotateKeyRequest, Watermark, batches_path, key_path, watermark_path,
};
use tongbu_shared::signed::{RequestAuth, Signed, SignedPayload};

use crate::clock::Clock;
use crate::tls::{self, HubTrust, HubUrl};

/// How long to wait for a TCP (and TLS) connection to the hub.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, reply included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What an agent signs its requests with and which hub key it trusts.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub agent: AgentId,
    pub key: Arc<KeyPair>,
    pub hub_key: PublicKey,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid hub URL {url:?}: {problem}")]
    BadUrl { url: String, problem: String },
    /// The hub could not be reached, or the connection failed mid-request.
    #[error("network: could not reach the hub at {url}: {cause}")]
    Network { url: String, cause: String },
    /// The hub refused the request with a Tongbu error.
    #[error("{}", describe_api_error(.0))]
    Api(ApiError),
    /// The hub (or something in front of it) answered with an error that is not a Tongbu one.
    #[error("http_{status}: the hub at {url} answered HTTP {status}: {excerpt}")]
    Status {
        url: String,
        status: u16,
        excerpt: String,
    },
    /// A 2xx reply that is not what the protocol says.
    #[error("bad_reply: the hub's reply to {what} is not valid: {cause}")]
    BadReply { what: &'static str, cause: String },
    /// The hub presented another TLS certificate than the one pinned: nothing was sent.
    #[error(
        "certificate_mismatch: the hub at {url} presented TLS certificate {presented}, but this agent pins {expected}; nothing was sent. If the hub's certificate was replaced on purpose, compare `tongbu-hub tls show` on the hub and run `tongbu-agent set-hub --hub {url} --cert-sha256 NEW`; otherwise something is impersonating the hub"
    )]
    CertificateMismatch {
        url: String,
        expected: CertFingerprint,
        presented: CertFingerprint,
    },
    /// The hub's TLS certificate does not verify against the trusted CA: nothing was sent.
    #[error(
        "untrusted_certificate: the hub at {url} presented a TLS certificate this agent does not trust: {cause}; nothing was sent (change the trust with `tongbu-agent set-hub --hub URL --ca FILE` or `--cert-sha256 HEX`)"
    )]
    UntrustedCertificate { url: String, cause: String },
    /// The enrollment names an https hub but no way to check its certificate.
    #[error(
        "no_tls_trust: this agent was enrolled with the https hub {url} before certificate pinning; name the hub's certificate with `tongbu-agent set-hub --hub {url} --cert-sha256 HEX` (from `tongbu-hub tls show`) or `--ca FILE`"
    )]
    NoTrust { url: String },
    /// A signed document whose signature does not verify against the pinned hub key.
    #[error(
        "bad_hub_signature: the hub's {what} is not signed by the pinned hub key (fingerprint {fingerprint}); not trusted"
    )]
    BadHubSignature {
        what: &'static str,
        fingerprint: String,
    },
}

/// A one-line message for a hub error, with its code first and a hint where one helps.
fn describe_api_error(e: &ApiError) -> String {
    let d = &e.error;
    match d.code {
        ErrorCode::ClockSkew => match d.skew_seconds {
            Some(skew) => {
                let (amount, direction) = if skew >= 0 {
                    (skew, "behind")
                } else {
                    (-skew, "ahead of")
                };
                format!(
                    "clock_skew: this machine's clock is {amount} s {direction} the hub's; fix the clock (NTP) ({})",
                    d.message
                )
            }
            None => format!("clock_skew: {}; fix the clock (NTP)", d.message),
        },
        ErrorCode::BadSignature => format!(
            "bad_signature: {}{}: a stored record was altered on disk; run `tongbu-agent verify`",
            d.message,
            d.seq.map(|s| format!(" (seq {s})")).unwrap_or_default()
        ),
        ErrorCode::Equivocation => format!(
            "equivocation: {}; the hub has quarantined this agent, an admin must investigate",
            d.message
        ),
        ErrorCode::KeyInUse => format!(
            "key_in_use: {}; this agent's key is already enrolled (an earlier enrollment may have been interrupted): ask an admin, or enroll from a fresh --data-dir",
            d.message
        ),
        _ => e.to_string(),
    }
}

impl ClientError {
    /// The hub's error code, when the hub sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.error.code),
            _ => None,
        }
    }

    /// Whether the same request may succeed later without anyone intervening.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Network { .. } => true,
            ClientError::Api(e) => e.error.code.is_transient(),
            ClientError::Status { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            ClientError::BadUrl { .. }
            | ClientError::BadReply { .. }
            | ClientError::BadHubSignature { .. }
            | ClientError::CertificateMismatch { .. }
            | ClientError::UntrustedCertificate { .. }
            | ClientError::NoTrust { .. } => false,
        }
    }
}

/// A policy bundle whose signature verified against the pinned hub key, with the exact bytes
/// and signature it came with (what the agent caches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBundle {
    pub bundle: PolicyBundle,
    pub payload: Vec<u8>,
    pub sig: Signature,
}

/// The hub's answer to a policy pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyReply {
    /// `304 Not Modified`: the version named in `If-None-Match` is current.
    NotModified,
    /// The hub publishes no policy (yet).
    NotFound,
    Bundle(VerifiedBundle),
}

/// A client for one hub.
#[derive(Debug, Clone)]
pub struct HubClient {
    http: reqwest::Client,
    base: reqwest::Url,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
}

impl HubClient {
    /// The hub's base URL.
    pub fn hub(&self) -> &str {
        self.base.as_str()
    }

    /// A client for `hub`, checking its certificate as `hub`'s trust says.
    pub fn new(hub: &HubUrl, clock: Arc<dyn Clock>) -> Result<HubClient, ClientError> {
        let cannot = |problem: String| ClientError::BadUrl {
            url: hub.to_string(),
            problem,
        };
        let base = reqwest::Url::parse(hub.as_str()).map_err(|e| cannot(e.to_string()))?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("tongbu-agent/", env!("CARGO_PKG_VERSION")));
        if hub.trust() == &HubTrust::Unpinned {
            return Err(ClientError::NoTrust {
                url: hub.to_string(),
            });
        }
        if let Some(config) = tls::client_config(hub.trust())
            .map_err(|e| cannot(format!("cannot set up TLS: {e}")))?
        {
            builder = builder.use_preconfigured_tls(config).https_only(true);
        }
        let http = builder
            .build()
            .map_err(|e| cannot(format!("cannot build an HTTP client: {e}")))?;
        Ok(HubClient {
            http,
            base,
            clock,
            rng: SystemRandom::new(),
        })
    }

    /// Enrolls with a one-time token. The reply is not signed: the token is what makes this
    /// first contact trustworthy, and the hub key it returns is pinned from then on.
    pub async fn enroll(&self, req: &EnrollRequest) -> Result<EnrollResponse, ClientError> {
        let body = to_json(req)?;
        let url = self.url(ENROLL_PATH);
        let reply = self
            .send(self.http.post(url.clone()).body(body), &url)
            .await?;
        serde_json::from_slice(&reply).map_err(|e| ClientError::BadReply {
            what: "enroll",
            cause: e.to_string(),
        })
    }

    /// What the hub holds of this agent's chain, verified against the pinned hub key.
    pub async fn watermark(&self, creds: &Credentials) -> Result<Watermark, ClientError> {
        let reply = self
            .signed_call(
                creds,
                reqwest::Method::GET,
                &watermark_path(&creds.agent),
                Vec::new(),
            )
            .await?;
        verify_signed(&reply, &creds.hub_key, "watermark")
    }

    /// Sends one batch (maybe empty: a heartbeat); returns the verified receipt.
    pub async fn send_batch(
        &self,
        creds: &Credentials,
        req: &BatchRequest,
    ) -> Result<Receipt, ClientError> {
        let body = to_json(req)?;
        let reply = self
            .signed_call(
                creds,
                reqwest::Method::POST,
                &batches_path(&creds.agent),
                body,
            )
            .await?;
        verify_signed(&reply, &creds.hub_key, "receipt")
    }

    /// Asks the hub to replace this agent's key (`creds` holds the old key, which signs the
    /// request); returns the hub's confirmation, verified against the pinned hub key.
    pub async fn rotate_key(
        &self,
        creds: &Credentials,
        req: &RotateKeyRequest,
    ) -> Result<KeyRotated, ClientError> {
        let body = to_json(req)?;
        let reply = self
            .signed_call(creds, reqwest::Method::POST, &key_path(&creds.agent), body)
            .await?;
        verify_signed(&reply, &creds.hub_key, "key rotation confirmation")
    }

    /// Pulls the hub's current policy bundle. With `cached`, asks conditionally
    /// (`If-None-Match: "<version>"`), so an unchanged policy costs a `304` and no body. A
    /// bundle is returned only once its signature verifies against the pinned hub key.
    pub async fn policy(
        &self,
        creds: &Credentials,
        cached: Option<u64>,
    ) -> Result<PolicyReply, ClientError> {
        let what = "policy bundle";
        let (request, url) =
            self.signed_request(creds, reqwest::Method::GET, POLICY_PATH, Vec::new())?;
        let request = match cached {
            Some(version) => {
                request.header(reqwest::header::IF_NONE_MATCH, format!("\"{version}\""))
            }
            None => request,
        };
        let reply = match self.exchange(request, &url).await {
            Ok(Some(reply)) => reply,
            Ok(None) => return Ok(PolicyReply::NotModified),
            Err(e) if is_not_found(&e) => return Ok(PolicyReply::NotFound),
            Err(e) => return Err(e),
        };
        let signed: Signed<PolicyBundle> =
            serde_json::from_slice(&reply).map_err(|e| ClientError::BadReply {
                what,
                cause: format!("not a signed document: {e}"),
            })?;
        let bundle = verify_document(&signed, &creds.hub_key, what)?;
        Ok(PolicyReply::Bundle(VerifiedBundle {
            bundle,
            payload: signed.payload_bytes().to_vec(),
            sig: signed.signature(),
        }))
    }

    fn url(&self, path: &str) -> reqwest::Url {
        let mut url = self.base.clone();
        let joined = format!("{}{path}", self.base.path().trim_end_matches('/'));
        url.set_path(&joined);
        url
    }

    async fn signed_call(
        &self,
        creds: &Credentials,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let (request, url) = self.signed_request(creds, method, path, body)?;
        self.send(request, &url).await
    }

    /// A request to `path` signed with the agent's key (`RequestAuth` headers).
    fn signed_request(
        &self,
        creds: &Credentials,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(reqwest::RequestBuilder, reqwest::Url), ClientError> {
        let url = self.url(path);
        let mut nonce = [0u8; 16];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| ClientError::Network {
                url: url.to_string(),
                cause: "the system random number generator failed".into(),
            })?;
        // Sign the path exactly as it goes on the wire (a base URL may add a prefix).
        let auth = RequestAuth::sign(
            &creds.key,
            &creds.agent,
            method.as_str(),
            url.path(),
            self.clock.now_secs(),
            hex::encode(nonce),
            &body,
        );
        let mut request = self.http.request(method, url.clone());
        for (name, value) in auth.headers() {
            request = request.header(name, value);
        }
        if !body.is_empty() {
            request = request.body(body);
        }
        Ok((request, url))
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &reqwest::Url,
    ) -> Result<Vec<u8>, ClientError> {
        self.exchange(request, url)
            .await?
            .ok_or_else(|| ClientError::BadReply {
                what: "a request",
                cause: "304 Not Modified to an unconditional request".into(),
            })
    }

    /// Sends a request: the body of a 2xx reply, `None` for `304 Not Modified`, or the error.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        url: &reqwest::Url,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let network = |e: reqwest::Error| self.transport_error(&e);
        let response = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .send()
            .await
            .map_err(network)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        let bytes = response.bytes().await.map_err(network)?;
        if status.is_success() {
            return Ok(Some(bytes.to_vec()));
        }
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(e) => Err(ClientError::Api(e)),
            Err(_) => {
                let text = String::from_utf8_lossy(&bytes);
                let mut excerpt: String = text.trim().chars().take(200).collect();
                excerpt = excerpt.replace(['\n', '\r'], " ");
                if excerpt.is_empty() {
                    excerpt = status
                        .canonical_reason()
                        .unwrap_or("no reason given")
                        .to_owned();
                }
                Err(ClientError::Status {
                    url: url.to_string(),
                    status: status.as_u16(),
                    excerpt,
                })
            }
        }
    }
}

impl HubClient {
    /// A failed exchange: a certificate the agent does not trust, or a network failure.
    fn transport_error(&self, e: &reqwest::Error) -> ClientError {
        let url = self.base.as_str().trim_end_matches('/').to_owned();
        match tls::certificate_failure(e) {
            Some(Ok(mismatch)) => ClientError::CertificateMismatch {
                url,
                expected: mismatch.expected,
                presented: mismatch.presented,
            },
            Some(Err(cause)) => ClientError::UntrustedCertificate { url, cause },
            None => ClientError::Network {
                url,
                cause: error_chain(e),
            },
        }
    }
}

/// A 404 from the hub (a Tongbu `not_found`, or a hub that predates the call).
fn is_not_found(e: &ClientError) -> bool {
    match e {
        ClientError::Api(api) => api.error.code == ErrorCode::NotFound,
        ClientError::Status { status, .. } => *status == 404,
        _ => false,
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(value).map_err(|e| ClientError::BadReply {
        what: "a request (it cannot be encoded)",
        cause: e.to_string(),
    })
}

fn verify_signed<T: SignedPayload + DeserializeOwned>(
    reply: &[u8],
    hub_key: &PublicKey,
    what: &'static str,
) -> Result<T, ClientError> {
    let signed: Signed<T> = serde_json::from_slice(reply).map_err(|e| ClientError::BadReply {
        what,
        cause: format!("not a signed document: {e}"),
    })?;
    verify_document(&signed, hub_key, what)
}

fn verify_document<T: SignedPayload + DeserializeOwned>(
    signed: &Signed<T>,
    hub_key: &PublicKey,
    what: &'static str,
) -> Result<T, ClientError> {
    signed.verify(hub_key).map_err(|e| match e {
        tongbu_shared::signed::SignedError::BadSignature => ClientError::BadHubSignature {
            what,
            fingerprint: hub_key.fingerprint(),
        },
        tongbu_shared::signed::SignedError::Payload(e) => ClientError::BadReply {
            what,
            cause: e.to_string(),
        },
    })
}

/// An error and its causes on one line (reqwest's own message omits the interesting part).
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        format!("timed out ({e})")
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_onto_a_base_prefix() {
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::ManualClock::new(0));
        let pinned = HubUrl::new(
            "https://hub.example.cn/tongbu/",
            HubTrust::Pinned(CertFingerprint::of_der(b"cert")),
        )
        .unwrap();
        let c = HubClient::new(&pinned, Arc::clone(&clock)).unwrap();
        assert_eq!(
            c.url(ENROLL_PATH).as_str(),
            "https://hub.example.cn/tongbu/api/v1/enroll"
        );
        let c = HubClient::new(&HubUrl::plain("http://127.0.0.1:8440").unwrap(), clock).unwrap();
        assert_eq!(c.url(ENROLL_PATH).path(), "/api/v1/enroll");
    }

    /// A one-connection-at-a-time TLS server presenting `cert` that answers every request
    /// `200 not json` (enough to tell the handshake passed).
    async fn tls_server(cert: &rcgen::CertifiedKey) -> std::net::SocketAddr {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der())),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nnot json")
                    .await;
                let _ = tls.shutdown().await;
            }
        });
        addr
    }

    fn enroll_request() -> EnrollRequest {
        let key = KeyPair::from_seed(&[7; 32]).unwrap();
        let public_key = key.public_key();
        EnrollRequest {
            token: "tbe_x".into(),
            public_key,
            proof: key.sign(
                tongbu_shared::crypto::Domain::Enroll,
                &tongbu_shared::signed::enroll_proof_bytes("tbe_x", &public_key),
            ),
            agent_version: "test".into(),
            hostname: None,
        }
    }

    #[tokio::test]
    async fn only_the_pinned_or_ca_issued_certificate_is_trusted() {
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::ManualClock::new(0));
        let hub = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let stranger = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let addr = tls_server(&hub).await;
        let url = format!("https://{addr}");
        let hub_pin = CertFingerprint::of_der(hub.cert.der());
        let call = |trust: HubTrust| {
            let client = HubClient::new(&HubUrl::new(&url, trust).unwrap(), Arc::clone(&clock));
            async move { client.unwrap().enroll(&enroll_request()).await.unwrap_err() }
        };

        // The pinned certificate: the request goes through (and the reply is nonsense).
        let err = call(HubTrust::Pinned(hub_pin)).await;
        assert!(matches!(err, ClientError::BadReply { .. }), "{err}");

        // Another pin: refused in the handshake, naming both fingerprints; a person must act.
        let other_pin = CertFingerprint::of_der(stranger.cert.der());
        let err = call(HubTrust::Pinned(other_pin)).await;
        match &err {
            ClientError::CertificateMismatch {
                expected,
                presented,
                ..
            } => {
                assert_eq!(*expected, other_pin);
                assert_eq!(*presented, hub_pin);
            }
            other => panic!("{other}"),
        }
        let text = err.to_string();
        assert!(text.starts_with("certificate_mismatch: "), "{text}");
        assert!(
            text.contains(&hub_pin.to_hex()) && text.contains(&other_pin.to_hex()),
            "{text}"
        );
        assert!(!err.is_transient());

        // A CA: the hub's own self-signed certificate is its issuer; a stranger's is not.
        let own = tls::CaCerts::parse(&hub.cert.pem(), "hub.pem").unwrap();
        let err = call(HubTrust::Ca(own)).await;
        assert!(matches!(err, ClientError::BadReply { .. }), "{err}");
        let foreign = tls::CaCerts::parse(&stranger.cert.pem(), "stranger.pem").unwrap();
        let err = call(HubTrust::Ca(foreign)).await;
        assert!(
            matches!(err, ClientError::UntrustedCertificate { .. }),
            "{err}"
        );
        assert!(!err.is_transient());
    }

    #[test]
    fn an_enrollment_without_a_trust_refuses_to_call() {
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::ManualClock::new(0));
        let old = HubUrl::from_stored("https://hub.example.cn", None).unwrap();
        let err = HubClient::new(&old, clock).unwrap_err();
        assert!(err.to_string().starts_with("no_tls_trust: "), "{err}");
        assert!(!err.is_transient());
    }

    #[test]
    fn clock_skew_names_the_direction() {
        let mut e = ApiError::new(ErrorCode::ClockSkew, "timestamp too far from hub time");
        e.error.skew_seconds = Some(420);
        let text = ClientError::Api(e).to_string();
        assert!(
            text.starts_with("clock_skew: this machine's clock is 420 s behind"),
            "{text}"
        );
        let mut e = ApiError::new(ErrorCode::ClockSkew, "timestamp too far from hub time");
        e.error.skew_seconds = Some(-305);
        let err = ClientError::Api(e);
        let text = err.to_string();
        assert!(
            text.starts_with("clock_skew: this machine's clock is 305 s ahead of the hub's"),
            "{text}"
        );
        assert!(err.is_transient());
    }

    #[test]
    fn replays_and_rate_limits_are_named() {
        let replayed = ClientError::Api(ApiError::new(ErrorCode::ReplayedRequest, "seen"));
        assert!(replayed.to_string().starts_with("replayed_request: "));
        assert!(!replayed.is_transient());
        let busy = ClientError::Api(ApiError::new(ErrorCode::RateLimited, "busy"));
        assert!(busy.is_transient());
    }
}
