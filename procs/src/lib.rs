//! Child processes of the real `tongbu-hub` and `tongbu-agent` binaries, shared by the
//! end-to-end tests (`tongbu-tests`) and the benchmark (`tongbu-bench`): start one, wait with a
//! deadline for the `READY …` line it prints on stdout, keep its stderr in a log file, stop it
//! with SIGTERM or SIGKILL, and run one-shot CLI commands.
//!
//! Invariants: a [`Running`] process is killed and reaped when its handle drops, so a failing
//! test or benchmark leaves nothing behind; its stdout is read to the end by a thread of its
//! own, so the child never blocks on a full pipe; nothing here sleeps to wait, every wait polls
//! a condition until a deadline.

use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long [`Running::terminate`] waits for a process to exit after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// What went wrong with a child process.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot open the log file {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no {prefix:?} line within {deadline:?}; log:\n{log}")]
    NoReady {
        prefix: String,
        deadline: Duration,
        log: String,
    },
    #[error("timed out after {deadline:?} waiting for {what}")]
    TimedOut { what: String, deadline: Duration },
    #[error("cannot signal process {pid}: {detail}")]
    Signal { pid: u32, detail: String },
}

/// Polls `cond` until it returns `Some` or `deadline` passes. Between polls the thread parks
/// for a few milliseconds: this is a poll with a deadline, not a sleep that guesses how long
/// work takes.
pub fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut cond: impl FnMut() -> Option<T>,
) -> Result<T, ProcError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = cond() {
            return Ok(v);
        }
        if start.elapsed() > deadline {
            return Err(ProcError::TimedOut {
                what: what.to_owned(),
                deadline,
            });
        }
        std::thread::park_timeout(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A running child process whose stdout was read up to its READY line and whose stderr goes
/// to a log file. Killed on drop.
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// What followed the READY prefix on its line (a URL).
    pub url: String,
    pub log: PathBuf,
}

impl Running {
    /// Starts `cmd` (stdin closed, stderr appended to `log`) and waits up to `deadline` for a
    /// stdout line starting with `ready_prefix`; kills the child if none comes.
    pub fn spawn(
        mut cmd: Command,
        log: PathBuf,
        ready_prefix: &str,
        deadline: Duration,
    ) -> Result<Running, ProcError> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| ProcError::Log {
                path: log.clone(),
                source,
            })?;
        cmd.stdout(Stdio::piped())
            .stderr(log_file)
            .stdin(Stdio::null());
        let mut child = cmd.spawn().map_err(|source| ProcError::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            let prefix = ready_prefix.to_owned();
            std::thread::spawn(move || {
                let mut sent = false;
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if !sent && let Some(rest) = line.strip_prefix(&prefix) {
                        let _ = tx.send(rest.trim().to_owned());
                        sent = true;
                    }
                }
            });
        }
        match rx.recv_timeout(deadline) {
            Ok(url) => Ok(Running { child, url, log }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(ProcError::NoReady {
                    prefix: ready_prefix.to_owned(),
                    deadline,
                    log: std::fs::read_to_string(&log).unwrap_or_default(),
                })
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port at the end of the READY line's URL (`http://127.0.0.1:8440` → 8440).
    pub fn port(&self) -> Option<u16> {
        self.url.rsplit(':').next()?.parse().ok()
    }

    /// Whether the process has exited (and its status), without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to [`STOP_DEADLINE`] for the process to exit; returns whether
    /// it exited successfully.
    pub fn terminate(mut self) -> Result<bool, ProcError> {
        let pid = self.child.id();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .map_err(|e| ProcError::Signal {
                pid,
                detail: e.to_string(),
            })?;
        if !status.success() {
            return Err(ProcError::Signal {
                pid,
                detail: format!("kill -TERM exited with {status}"),
            });
        }
        let child = &mut self.child;
        let exit = wait_for("the process to exit after SIGTERM", STOP_DEADLINE, || {
            child.try_wait().ok().flatten()
        })?;
        Ok(exit.success())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to completion with `stdin` (or nothing) as its standard input and returns its
/// exit status, stdout and stderr.
pub fn run_output(mut cmd: Command, stdin: Option<&[u8]>) -> std::io::Result<Output> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn()?;
    if let Some(input) = stdin {
        // Writing on this thread while the child fills its pipes could deadlock for large
        // inputs, so a thread feeds stdin while `wait_with_output` drains stdout and stderr.
        let mut pipe = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin pipe"))?;
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || pipe.write_all(&input));
        let out = child.wait_with_output()?;
        feeder
            .join()
            .map_err(|_| std::io::Error::other("the stdin feeder panicked"))??;
        return Ok(out);
    }
    child.wait_with_output()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn waits_for_the_ready_line_and_kills_on_drop() {
        let dir = std::env::temp_dir().join(format!("tongbu-procs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo starting; echo 'READY listen=http://x:1'; echo log >&2; exec sleep 30",
        ]);
        let mut p = Running::spawn(
            cmd,
            dir.join("a.log"),
            "READY listen=",
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!((p.url.as_str(), p.port()), ("http://x:1", Some(1)));
        assert!(p.try_exit().is_none());
        assert!(p.terminate().is_ok());

        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo nothing; exit 0"]);
        let err = Running::spawn(cmd, dir.join("b.log"), "READY", Duration::from_millis(300))
            .unwrap_err();
        assert!(matches!(err, ProcError::NoReady { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn run_output_feeds_stdin() {
        let out = run_output(Command::new("cat"), Some(b"hello")).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hello");
        let waited = wait_for("never", Duration::from_millis(20), || None::<()>);
        assert!(matches!(waited, Err(ProcError::TimedOut { .. })));
    }
}
