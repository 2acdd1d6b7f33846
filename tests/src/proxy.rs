//! A fault-injecting TCP proxy for the network-fault tests: it listens on `127.0.0.1:0`,
//! forwards HTTP/1.1 to an upstream (the hub) and, per connection, applies the fault that a
//! shared, switchable [`Plan`] picks: pass through, delay every chunk, drop the connection at
//! accept, reset in the middle of the request body, stall, or lose the response after the hub
//! answered (so after it committed). [`Proxy::stats`] counts what it did.
//!
//! It carries one request per connection: it reads the client's whole request (framed by
//! `Content-Length`), forwards it as the fault says, reads the hub's whole response (framed by
//! `Content-Length`, chunked, or the end of the stream) and returns it with `Connection: close`
//! added, so a client never reuses a connection the proxy is about to close and every request
//! meets the plan afresh. That keeps the faults exact: a dropped connection never carried a
//! byte, a reset request never reached the hub whole, a lost response was complete at the hub.
//!
//! The proxy runs on a small tokio runtime of its own; dropping the [`Proxy`] shuts the
//! runtime down, which cancels every task (pauses included) and closes every socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes forwarded per write (and so per delay in [`Fault::Delay`]).
const CHUNK: usize = 4096;
/// Longest request or response head the proxy reads.
const MAX_HEAD: usize = 64 * 1024;
/// How long the proxy waits for either side to send what it announced.
const IO_DEADLINE: Duration = Duration::from_secs(90);

/// What happens to one connection (one request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways untouched.
    Pass,
    /// Forward both ways, waiting this long before every chunk of at most 4 KiB.
    Delay(Duration),
    /// Accept the connection, then close it at once without reading a byte.
    Drop,
    /// Forward the request head and half the body (half the head when there is no body),
    /// then reset both sides (`SO_LINGER` 0, so the peers see RST, not FIN).
    ResetMidBody,
    /// Forward the request head and half the body, stop for `pause`, then either send the rest
    /// (`resume`) and carry on, or close both sides.
    Stall { pause: Duration, resume: bool },
    /// Forward the whole request, read the hub's whole response, then close the client's
    /// connection (with RST) without sending any of it.
    LoseResponse,
}

impl Fault {
    fn is_pass(self) -> bool {
        self == Fault::Pass
    }
}

/// Which connections get which fault. Switch it at any time with [`Proxy::set_plan`]; it
/// applies from the next accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Every connection gets the fault.
    Always(Fault),
    /// Every `n`th connection (the `n`th, the `2n`th, …) gets the fault; the others pass.
    /// With `n >= 3` a client that retries always gets two clean requests after a fault, so a
    /// sync (watermark, then a batch) can always make progress.
    EveryNth { fault: Fault, n: u64 },
    /// Each connection, drawn from a generator seeded with `seed`: with `percent` % chance one
    /// of the faults (short delays, drops, resets, stalls that resume or close, lost responses),
    /// otherwise pass.
    Random { seed: u64, percent: u8 },
}

/// What the proxy did, counted per connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub connections: u64,
    pub passed: u64,
    pub delayed: u64,
    pub dropped: u64,
    pub reset: u64,
    pub stalled_resumed: u64,
    pub stalled_closed: u64,
    /// Responses read from the hub and not delivered.
    pub lost_responses: u64,
    /// Of those, responses with a 2xx status: the hub had done the work.
    pub lost_after_success: u64,
    /// `METHOD path -> status` of every lost response, in order.
    pub lost: Vec<String>,
    /// Connections that ended in an I/O error the proxy did not cause (a client that gave up).
    pub io_errors: u64,
}

impl Stats {
    /// Connections that met a fault other than a delay.
    pub fn disruptions(&self) -> u64 {
        self.dropped + self.reset + self.stalled_closed + self.lost_responses
    }
}

/// The plan plus the per-connection decision state, behind one lock.
#[derive(Debug)]
struct Shared {
    plan: Plan,
    /// Connections decided since the plan was set (for `EveryNth`).
    decided: u64,
    /// The `Random` generator's state.
    rng: u64,
    stats: Stats,
}

impl Shared {
    fn next_fault(&mut self) -> Fault {
        self.stats.connections += 1;
        self.decided += 1;
        match self.plan {
            Plan::Always(f) => f,
            Plan::EveryNth { fault, n } => {
                if n > 0 && self.decided % n == 0 {
                    fault
                } else {
                    Fault::Pass
                }
            }
            Plan::Random { percent, .. } => {
                let roll = splitmix64(&mut self.rng);
                if roll % 100 >= u64::from(percent) {
                    return Fault::Pass;
                }
                let pick = splitmix64(&mut self.rng);
                let ms = 50 + pick / 7 % 400;
                match pick % 6 {
                    0 => Fault::Delay(Duration::from_millis(1 + pick / 11 % 5)),
                    1 => Fault::Drop,
                    2 => Fault::ResetMidBody,
                    3 => Fault::Stall {
                        pause: Duration::from_millis(ms),
                        resume: true,
                    },
                    4 => Fault::Stall {
                        pause: Duration::from_millis(ms),
                        resume: false,
                    },
                    _ => Fault::LoseResponse,
                }
            }
        }
    }
}

/// A fixed, well-mixed 64-bit generator (SplitMix64): deterministic per seed, no dependency.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

type SharedState = Arc<Mutex<Shared>>;

fn lock(shared: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running proxy. Stops (every task cancelled, every socket closed) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: SharedState,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Starts a proxy on `127.0.0.1:0` in front of `upstream` (`http://host:port`), passing
    /// everything through until the plan changes.
    pub fn start(upstream: &str) -> anyhow::Result<Proxy> {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fault-proxy")
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared {
            plan: Plan::Always(Fault::Pass),
            decided: 0,
            rng: 0,
            stats: Stats::default(),
        }));
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(listener)?
        };
        runtime.spawn(accept_loop(listener, upstream, Arc::clone(&shared)));
        Ok(Proxy {
            addr,
            shared,
            runtime: Some(runtime),
        })
    }

    /// The URL clients use instead of the hub's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the plan for the connections accepted from now on.
    pub fn set_plan(&self, plan: Plan) {
        let mut s = lock(&self.shared);
        s.plan = plan;
        s.decided = 0;
        if let Plan::Random { seed, .. } = plan {
            s.rng = seed;
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        lock(&self.shared).stats.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Every task is async, so cancelling them is prompt; the timeout is only a bound.
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: SharedState) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let fault = lock(&shared).next_fault();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let outcome = handle(client, upstream, fault).await;
            let mut s = lock(&shared);
            match outcome {
                Ok(done) => done.count(&mut s.stats),
                Err(_) => s.stats.io_errors += 1,
            }
        });
    }
}

/// What one connection ended as.
enum Done {
    Passed,
    Delayed,
    Dropped,
    Reset,
    Stalled { resumed: bool },
    Lost { request: String, status: u16 },
}

impl Done {
    fn count(self, stats: &mut Stats) {
        match self {
            Done::Passed => stats.passed += 1,
            Done::Delayed => stats.delayed += 1,
            Done::Dropped => stats.dropped += 1,
            Done::Reset => stats.reset += 1,
            Done::Stalled { resumed: true } => stats.stalled_resumed += 1,
            Done::Stalled { resumed: false } => stats.stalled_closed += 1,
            Done::Lost { request, status } => {
                stats.lost_responses += 1;
                if (200..300).contains(&status) {
                    stats.lost_after_success += 1;
                }
                stats.lost.push(format!("{request} -> {status}"));
            }
        }
    }
}

async fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
) -> std::io::Result<Done> {
    if fault == Fault::Drop {
        drop(client);
        return Ok(Done::Dropped);
    }
    let request = with_deadline(read_request(&mut client)).await?;
    let mut hub = TcpStream::connect(upstream).await?;
    hub.set_nodelay(true)?;
    client.set_nodelay(true)?;
    let delay = match fault {
        Fault::Delay(d) => Some(d),
        _ => None,
    };
    let mut resumed = None;
    match fault {
        Fault::ResetMidBody | Fault::Stall { .. } => {
            let cut = request.cut_point();
            write_chunks(&mut hub, &request.bytes[..cut], None).await?;
            if let Fault::Stall { pause, resume } = fault {
                tokio::time::sleep(pause).await;
                if resume {
                    write_chunks(&mut hub, &request.bytes[cut..], None).await?;
                    resumed = Some(true);
                } else {
                    let _ = hub.shutdown().await;
                    let _ = client.shutdown().await;
                    return Ok(Done::Stalled { resumed: false });
                }
            } else {
                reset(hub);
                reset(client);
                return Ok(Done::Reset);
            }
        }
        _ => write_chunks(&mut hub, &request.bytes, delay).await?,
    }
    let response = with_deadline(read_response(&mut hub, &request.method)).await?;
    drop(hub);
    if fault == Fault::LoseResponse {
        reset(client);
        return Ok(Done::Lost {
            request: request.line,
            status: response.status,
        });
    }
    write_chunks(&mut client, &response.bytes, delay).await?;
    let _ = client.shutdown().await;
    Ok(match (fault, resumed) {
        (_, Some(resumed)) => Done::Stalled { resumed },
        (f, _) if f.is_pass() => Done::Passed,
        _ => Done::Delayed,
    })
}

async fn with_deadline<T>(
    fut: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(IO_DEADLINE, fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "proxy deadline"))?
}

/// Closes `stream` with RST: `SO_LINGER` 0 makes the kernel drop unsent data and reset.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn write_chunks(
    to: &mut TcpStream,
    bytes: &[u8],
    delay: Option<Duration>,
) -> std::io::Result<()> {
    for chunk in bytes.chunks(CHUNK) {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        to.write_all(chunk).await?;
    }
    to.flush().await
}

/// A whole HTTP request as the client sent it.
struct Request {
    bytes: Vec<u8>,
    head_len: usize,
    method: String,
    /// `METHOD path`, for the counters.
    line: String,
}

impl Request {
    /// Where a partial forward stops: half way through the body, or through the head.
    fn cut_point(&self) -> usize {
        let body = self.bytes.len() - self.head_len;
        if body > 0 {
            self.head_len + body / 2
        } else {
            self.head_len / 2
        }
    }
}

/// A whole HTTP response from the hub, with `Connection: close` added to its head.
struct Response {
    bytes: Vec<u8>,
    status: u16,
}

/// Reads bytes into `buf` until it holds a full head; returns the head's length.
async fn read_head(from: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(i + 4);
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("head too long"));
        }
        if read_more(from, buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn read_more(from: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = from.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

async fn read_until_len(
    from: &mut TcpStream,
    buf: &mut Vec<u8>,
    len: usize,
) -> std::io::Result<()> {
    while buf.len() < len {
        if read_more(from, buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// The value of header `name` (case-insensitive) in a head.
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

async fn read_request(client: &mut TcpStream) -> std::io::Result<Request> {
    let mut buf = Vec::new();
    let head_len = read_head(client, &mut buf).await?;
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    if header(&head, "transfer-encoding").is_some() {
        return Err(invalid("the proxy forwards Content-Length requests only"));
    }
    let body_len: usize = match header(&head, "content-length") {
        Some(v) => v.parse().map_err(|_| invalid("bad Content-Length"))?,
        None => 0,
    };
    read_until_len(client, &mut buf, head_len + body_len).await?;
    buf.truncate(head_len + body_len);
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or_default().to_owned();
    let path = words.next().unwrap_or_default();
    Ok(Request {
        line: format!("{method} {path}"),
        method,
        head_len,
        bytes: buf,
    })
}

async fn read_response(hub: &mut TcpStream, method: &str) -> std::io::Result<Response> {
    let mut buf = Vec::new();
    let head_len = read_head(hub, &mut buf).await?;
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let no_body = method == "HEAD" || status / 100 == 1 || status == 204 || status == 304;
    let chunked = header(&head, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if no_body {
        buf.truncate(head_len);
    } else if chunked {
        let end = read_chunked(hub, &mut buf, head_len).await?;
        buf.truncate(end);
    } else if let Some(len) = header(&head, "content-length") {
        let len: usize = len.parse().map_err(|_| invalid("bad Content-Length"))?;
        read_until_len(hub, &mut buf, head_len + len).await?;
        buf.truncate(head_len + len);
    } else {
        while read_more(hub, &mut buf).await? > 0 {}
    }
    // Tell the client this connection ends with the response.
    let mut head_lines: Vec<&str> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| {
            !l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("connection"))
        })
        .collect();
    head_lines.push("connection: close");
    let mut bytes = head_lines.join("\r\n").into_bytes();
    bytes.extend_from_slice(b"\r\n\r\n");
    bytes.extend_from_slice(&buf[head_len..]);
    Ok(Response { bytes, status })
}

/// Reads a chunked body starting at `at`; returns where the message ends in `buf`.
async fn read_chunked(
    from: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut at: usize,
) -> std::io::Result<usize> {
    loop {
        let line_end = loop {
            if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                break at + i;
            }
            if read_more(from, buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        };
        let line = String::from_utf8_lossy(&buf[at..line_end]).into_owned();
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                let end = loop {
                    if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                        break at + i;
                    }
                    if read_more(from, buf).await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                };
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Ok(at);
                }
            }
        }
        read_until_len(from, buf, at + size + 2).await?;
        at += size + 2;
    }
}
