//! The hub's accept loop: HTTPS and plain HTTP on one port. The first byte of each connection
//! decides: `0x16` (a TLS handshake record, the ClientHello) goes to rustls, anything else is
//! plain HTTP, which is served only to loopback peers (127.0.0.0/8, `::1`, and their
//! IPv4-mapped forms) unless the [`Transport`] says otherwise. Loopback traffic never leaves the
//! machine, so this keeps local tools, scripts and a TLS-terminating proxy on the same host
//! working while everything that crosses a network is encrypted.
//!
//! Invariants: no connection is held longer than [`FIRST_BYTE_TIMEOUT`] before it speaks, or
//! [`HANDSHAKE_TIMEOUT`] for its TLS handshake, or hyper's header timeout for a request head;
//! at most [`connection_limit`] are open at once (beyond that the kernel's backlog waits): as
//! many as the process may open files, less [`RESERVED_FDS`] for the database and the rest,
//! between [`MIN_CONNECTIONS`] and [`MAX_CONNECTIONS`] — `serve` first raises the soft limit on
//! open files to the hard one, so a default systemd or shell limit does not cap the agents; a
//! refused plain connection gets one short `400` JSON error and is closed; every request carries
//! its peer's address (`ConnectInfo<SocketAddr>`) and, over TLS, the [`OverTls`] marker. On
//! shutdown the loop stops accepting, connections not yet serving are dropped, requests in flight
//! finish, and only then does [`serve`] return.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tongbu_shared::protocol::{ApiError, ErrorCode};
use tower::Service as _;

/// How long a new connection may stay silent before it is closed.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request head (also closes idle keep-alive connections).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many connections are open at once, whatever the file limit (every agent keeps
/// one open between heartbeats; an idle one costs a few kilobytes).
pub const MAX_CONNECTIONS: usize = 16_384;
/// At least this many, even under a very low file limit.
pub const MIN_CONNECTIONS: usize = 64;
/// Files kept for the rest of the hub (database connections, WAL and shared-memory files,
/// logs, certificates) when the connection limit is derived from the open-file limit.
pub const RESERVED_FDS: u64 = 256;
/// The first byte of a TLS record carrying a handshake message (RFC 8446 §5.1).
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a refused connection is drained (so the client reads the reply, not a reset).
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Which peers may speak plain HTTP when TLS is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainHttp {
    /// Loopback peers only (the default).
    Loopback,
    /// Nobody: TLS only.
    Off,
}

/// How the hub's port is served.
#[derive(Clone)]
pub enum Transport {
    /// Plain HTTP to every peer, no TLS: for in-process hubs (the demo, tests, benchmarks) on
    /// loopback listeners.
    Plain,
    /// TLS to every peer; plain HTTP as `plain` allows.
    Tls {
        config: Arc<rustls::ServerConfig>,
        plain: PlainHttp,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Plain => f.write_str("Plain"),
            Transport::Tls { plain, .. } => f.debug_struct("Tls").field("plain", plain).finish(),
        }
    }
}

/// Marks a request that arrived over TLS (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverTls;

/// What to do with a new connection, decided by its first byte and its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Tls,
    Plain,
    /// Plain HTTP this hub does not serve to that peer: answer `400` with this message.
    Refuse(String),
}

/// Whether `ip` is this machine's loopback (IPv4-mapped IPv6 included).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

pub(crate) fn route(first_byte: u8, peer: IpAddr, transport: &Transport) -> Route {
    match transport {
        Transport::Plain => Route::Plain,
        Transport::Tls { .. } if first_byte == TLS_HANDSHAKE => Route::Tls,
        Transport::Tls {
            plain: PlainHttp::Loopback,
            ..
        } if is_loopback(peer) => Route::Plain,
        Transport::Tls {
            plain: PlainHttp::Loopback,
            ..
        } => Route::Refuse(
            "this hub serves plain HTTP only to its own machine (loopback); use https:// and pin the hub's certificate".into(),
        ),
        Transport::Tls {
            plain: PlainHttp::Off,
            ..
        } => Route::Refuse(
            "this hub serves only HTTPS (plain HTTP is off); use https:// and pin the hub's certificate".into(),
        ),
    }
}

/// How many connections may be open at once: the process's open-file limit (its soft limit
/// raised to the hard one first) less [`RESERVED_FDS`], within
/// [`MIN_CONNECTIONS`]..=[`MAX_CONNECTIONS`].
pub fn connection_limit() -> usize {
    connections_for(raise_open_file_limit())
}

/// Raises the soft limit on open files to the hard limit (Linux allows at most `nr_open`,
/// 2^20 by default); returns the soft limit in force afterwards (`None`: unlimited).
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    const MOST: u64 = 1 << 20;
    let now = getrlimit(Resource::Nofile);
    let wanted = now.maximum.map_or(MOST, |hard| hard.min(MOST));
    if now.current.is_some_and(|soft| soft < wanted) {
        let raised = Rlimit {
            current: Some(wanted),
            maximum: now.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return Some(wanted),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
    now.current
}

fn connections_for(open_files: Option<u64>) -> usize {
    let files = open_files.map_or(MAX_CONNECTIONS as u64, |n| n.saturating_sub(RESERVED_FDS));
    usize::try_from(files)
        .unwrap_or(MAX_CONNECTIONS)
        .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// Serves `app` on `listener` as `transport` says until `shutdown` completes, then lets the
/// requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    transport: Transport,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limit = connection_limit();
    tracing::debug!(connections = limit, "connection limit");
    let slots = Arc::new(Semaphore::new(limit));
    // `stop` tells connections to finish; every connection task holds a `done` receiver, so
    // `done_tx.closed()` completes when the last one has ended.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: give the machine a moment, as axum does.
                tracing::error!(error = %e, "cannot accept connections");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let connection = Connection {
            app: app.clone(),
            transport: transport.clone(),
            peer,
            stop: stop_rx.clone(),
        };
        let done = done_rx.clone();
        tokio::spawn(async move {
            connection.run(stream).await;
            drop(slot);
            drop(done);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// One accepted connection and what it needs to be served.
struct Connection {
    app: Router,
    transport: Transport,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let mut stop = self.stop.clone();
        // Until the connection is handed to hyper, shutdown simply drops it.
        let ready = tokio::select! {
            ready = self.prepare(stream) => ready,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match ready {
            Some(Prepared::Plain(stream)) => self.serve_http(stream, false).await,
            Some(Prepared::Tls(stream)) => self.serve_http(*stream, true).await,
            None => {}
        }
    }

    /// Sniffs the first byte, refuses or completes the TLS handshake. `None`: nothing to serve.
    async fn prepare(&self, stream: TcpStream) -> Option<Prepared> {
        let mut first = [0u8; 1];
        let first = match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first)).await {
            Ok(Ok(1)) => first[0],
            // Closed before a byte, an error, or silence past the deadline.
            Ok(Ok(_) | Err(_)) | Err(_) => return None,
        };
        match route(first, self.peer.ip(), &self.transport) {
            Route::Plain => Some(Prepared::Plain(stream)),
            Route::Refuse(message) => {
                tracing::debug!(peer = %self.peer, "plain HTTP refused: {message}");
                refuse(stream, &message).await;
                None
            }
            Route::Tls => {
                let Transport::Tls { config, .. } = &self.transport else {
                    return None;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => Some(Prepared::Tls(Box::new(tls))),
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                        None
                    }
                }
            }
        }
    }

    /// Serves HTTP/1.1 on `io` until the client closes or shutdown lets the last request end.
    async fn serve_http<IO>(mut self, io: IO, over_tls: bool)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let app = self.app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            if over_tls {
                req.extensions_mut().insert(OverTls);
            }
            let mut app = app.clone();
            async move { Ok::<_, Infallible>(app.call(req).await.unwrap_or_else(|e| match e {})) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut stopping = false;
        loop {
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::trace!(peer = %peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = self.stop.wait_for(|stop| *stop), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

enum Prepared {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Answers a plain HTTP connection this hub does not serve with `400` and `message` (the same
/// `ApiError` JSON as every other error), then drains what the client sent so it reads the
/// reply rather than a reset.
async fn refuse(mut stream: TcpStream, message: &str) {
    let body = serde_json::to_string(&ApiError::new(ErrorCode::BadRequest, message))
        .unwrap_or_else(|_| String::from("{}"));
    let reply = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let linger = async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < 64 * 1024 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            drained += n;
        }
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, linger).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn tls(plain: PlainHttp) -> Transport {
        let dir = tempfile::tempdir().unwrap();
        let identity = crate::tls::load_or_generate(dir.path(), &[], 1_750_000_000).unwrap();
        Transport::Tls {
            config: identity.server_config().unwrap(),
            plain,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_means_this_machine_in_every_spelling() {
        for yes in [
            "127.0.0.1",
            "127.9.8.7",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:127.1.2.3",
        ] {
            assert!(is_loopback(ip(yes)), "{yes}");
        }
        for no in [
            "10.0.0.1",
            "192.168.1.10",
            "0.0.0.0",
            "::",
            "::ffff:10.0.0.1",
            "fe80::1",
            "2001:db8::1",
            "::2",
        ] {
            assert!(!is_loopback(ip(no)), "{no}");
        }
        assert!(is_loopback(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(is_loopback(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn the_connection_limit_follows_the_open_file_limit() {
        assert_eq!(connections_for(Some(1024)), 1024 - RESERVED_FDS as usize);
        assert_eq!(
            connections_for(Some(10_000)),
            10_000 - RESERVED_FDS as usize
        );
        assert_eq!(connections_for(Some(100)), MIN_CONNECTIONS);
        assert_eq!(connections_for(Some(1 << 20)), MAX_CONNECTIONS);
        assert_eq!(connections_for(None), MAX_CONNECTIONS);
        // Serving raises the soft limit as far as the hard one allows; 3,000 agents fit
        // wherever the hard limit lets them.
        let limit = connection_limit();
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
        if hard.is_none_or(|h| h >= 4096) {
            assert!(limit >= 3_000, "{limit}");
        }
    }

    #[test]
    fn the_first_byte_and_the_peer_decide() {
        let loopback = tls(PlainHttp::Loopback);
        let off = tls(PlainHttp::Off);
        // A ClientHello goes to TLS from anywhere.
        for peer in ["127.0.0.1", "10.1.2.3", "2001:db8::5", "::ffff:192.0.2.1"] {
            assert_eq!(route(0x16, ip(peer), &loopback), Route::Tls, "{peer}");
            assert_eq!(route(0x16, ip(peer), &off), Route::Tls, "{peer}");
        }
        // Plain HTTP (`G` of GET, `P` of POST) from loopback is served by default…
        for peer in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(route(b'G', ip(peer), &loopback), Route::Plain, "{peer}");
            assert_eq!(route(b'P', ip(peer), &loopback), Route::Plain, "{peer}");
            assert!(
                matches!(route(b'G', ip(peer), &off), Route::Refuse(_)),
                "{peer}"
            );
        }
        // …and never from another machine.
        for peer in [
            "10.1.2.3",
            "192.168.0.9",
            "2001:db8::5",
            "::ffff:192.0.2.1",
            "fe80::1",
        ] {
            match route(b'G', ip(peer), &loopback) {
                Route::Refuse(message) => assert!(message.contains("https://"), "{message}"),
                other => panic!("{peer}: {other:?}"),
            }
        }
        // Without TLS (in-process hubs) everything is plain, as before.
        assert_eq!(route(b'G', ip("10.1.2.3"), &Transport::Plain), Route::Plain);
        assert_eq!(
            route(0x16, ip("127.0.0.1"), &Transport::Plain),
            Route::Plain
        );
    }

    /// Serves a trivial app on a loopback listener as `transport`; returns its address and the
    /// sender that stops it.
    async fn spawn(
        transport: Transport,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/peer",
            axum::routing::get(
                |ConnectInfo(peer): ConnectInfo<SocketAddr>,
                 tls: Option<axum::Extension<OverTls>>| async move {
                    format!("{} tls={}", peer.ip(), tls.is_some())
                },
            ),
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(serve(listener, app, transport, async {
            let _ = rx.await;
        }));
        (addr, tx, server)
    }

    async fn raw_get(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn loopback_plain_http_reaches_the_app_with_the_peer_address() {
        let (addr, stop, server) = spawn(tls(PlainHttp::Loopback)).await;
        let reply = raw_get(addr).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("127.0.0.1 tls=false"), "{reply}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn plain_http_off_answers_400_and_closes() {
        let (addr, stop, server) = spawn(tls(PlainHttp::Off)).await;
        let reply = raw_get(addr).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
        assert!(reply.contains("\"bad_request\""), "{reply}");
        assert!(reply.contains("only HTTPS"), "{reply}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_silent_connection_does_not_delay_shutdown() {
        let (addr, stop, server) = spawn(tls(PlainHttp::Loopback)).await;
        // Connected, but never says a word: shutdown must not wait for its timeout.
        let _silent = TcpStream::connect(addr).await.unwrap();
        let reply = raw_get(addr).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("shutdown waited for a silent connection")
            .unwrap()
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_the_first_byte_timeout() {
        let (addr, _stop, _server) = spawn(tls(PlainHttp::Loopback)).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        // With the clock paused, tokio advances it to the hub's deadline as soon as every task
        // waits: the read ends (EOF) when the hub gives up on the connection.
        let n = tokio::time::timeout(FIRST_BYTE_TIMEOUT * 100, silent.read(&mut buf))
            .await
            .expect("the hub kept a silent connection open")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}
