//! sd_notify from the real binaries: a unix datagram socket stands in for systemd's
//! `NOTIFY_SOCKET`; `READY=1` must come once the service listens, `WATCHDOG=1` again and again
//! at half `WATCHDOG_USEC`, `STOPPING=1` on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use tongbu_procs::Running;
use tongbu_tests::{Agent, DEADLINE, Hub, TempDir, bins, http};

/// The watchdog interval the tests give (pings every 150 ms).
const WATCHDOG_USEC: &str = "300000";

/// A fake systemd notification socket in a temporary directory.
struct NotifySocket {
    dir: TempDir,
    sock: UnixDatagram,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::Builder::new()
            .prefix("tongbu-notify-")
            .tempdir()
            .unwrap();
        let sock = UnixDatagram::bind(dir.path().join("notify.sock")).unwrap();
        NotifySocket { dir, sock }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("notify.sock")
    }

    /// The next datagram, waiting at most until `until`.
    fn next(&self, until: Instant) -> Option<String> {
        let left = until.checked_duration_since(Instant::now())?;
        self.sock
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Datagrams up to and including the first one holding `line`; panics at the deadline.
    fn until_line(&self, line: &str) -> Vec<String> {
        let until = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        while let Some(msg) = self.next(until) {
            let found = msg.lines().any(|l| l == line);
            seen.push(msg);
            if found {
                return seen;
            }
        }
        panic!("no {line} within {DEADLINE:?}; got {seen:?}");
    }
}

fn with_notify(cmd: &mut Command, socket: &NotifySocket) {
    cmd.env("NOTIFY_SOCKET", socket.path())
        .env("WATCHDOG_USEC", WATCHDOG_USEC)
        .env_remove("WATCHDOG_PID");
}

/// READY=1 is the first notification, with a status line starting `status`, and the service
/// answers `/healthz` by then.
fn ready_first(proc: &Running, socket: &NotifySocket, status: &str) {
    let first = socket.until_line("READY=1");
    assert_eq!(
        first.len(),
        1,
        "READY=1 is the first notification: {first:?}"
    );
    assert!(first[0].lines().any(|l| l.starts_with(status)), "{first:?}");
    let health = http().get(format!("{}/healthz", proc.url)).send().unwrap();
    assert!(health.status().is_success());
}

/// After READY=1: several watchdog pings with a status line, then STOPPING=1 on SIGTERM.
fn pings_then_stops(proc: Running, socket: &NotifySocket, status_has: &str) {
    let mut pings = 0;
    let until = Instant::now() + DEADLINE;
    while pings < 3 {
        let msg = socket.next(until).expect("watchdog pings keep coming");
        if msg.lines().any(|l| l == "WATCHDOG=1") {
            assert!(
                msg.lines()
                    .any(|l| l.starts_with("STATUS=") && l.contains(status_has)),
                "a ping carries the status: {msg:?}"
            );
            pings += 1;
        }
    }
    assert!(proc.terminate().unwrap(), "a clean exit on SIGTERM");
    let rest = socket.until_line("STOPPING=1");
    assert!(
        !rest.iter().any(|m| m.contains("READY=1")),
        "READY=1 only once: {rest:?}"
    );
}

#[test]
fn the_hub_tells_systemd_it_is_ready_alive_and_stopping() {
    let socket = NotifySocket::bind();
    let data = tempfile::Builder::new()
        .prefix("tongbu-hub-")
        .tempdir()
        .unwrap();
    let mut cmd = Command::new(&bins().hub);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path());
    with_notify(&mut cmd, &socket);
    let proc = Running::spawn(cmd, data.path().join("hub.log"), "READY listen=", DEADLINE).unwrap();

    // READY=1 comes after the READY line (the listener is bound): the hub answers at once.
    ready_first(&proc, &socket, "STATUS=serving on 127.0.0.1:");

    pings_then_stops(proc, &socket, "0 agents");
}

#[test]
fn the_agent_tells_systemd_it_is_ready_alive_and_stopping() {
    let hub = Hub::start().unwrap();
    hub.add_county("430112", "望城区");
    let agent = Agent::enrolled(&hub, "430112").unwrap();
    agent
        .submit(&tongbu_tests::records("430112", 7, 3))
        .expect_ok("submit");

    let socket = NotifySocket::bind();
    let mut cmd = Command::new(&bins().agent);
    cmd.args([
        "run",
        "--listen",
        "127.0.0.1:0",
        "--heartbeat-secs",
        "1",
        "--data-dir",
    ])
    .arg(agent.data_dir());
    with_notify(&mut cmd, &socket);
    let proc = Running::spawn(
        cmd,
        agent.data_dir().join("agent.log"),
        "READY intake=",
        DEADLINE,
    )
    .unwrap();

    ready_first(&proc, &socket, "STATUS=intake on 127.0.0.1:");

    // The status line follows the sync: everything acknowledged, nothing queued.
    let head = agent.wait_synced().unwrap();
    let synced = format!("queue 0, acked seq {head}");
    socket.until_line(&format!("STATUS={synced}"));
    pings_then_stops(proc, &socket, &synced);
}
