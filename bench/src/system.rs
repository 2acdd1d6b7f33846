//! What the benchmark reads about this machine and its child processes from `/proc` (Linux):
//! cores, CPU model, kernel, memory and load for the report; a process's resident memory
//! (`VmRSS`) and its peak (`VmHWM`, the high-water mark since it started) and its CPU time.
//! Nothing here changes the machine.

use std::process::Command;
use std::time::Instant;

use serde::Serialize;

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_mb: u64,
    pub hostname: String,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
        let memory_mb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| field_kb(&m, "MemTotal:"))
            .map_or(0, |kb| kb / 1024);
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned())
        };
        Machine {
            cores: cores(),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease"),
            memory_mb,
            hostname: read("/proc/sys/kernel/hostname"),
        }
    }
}

/// The cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The 1-, 5- and 15-minute load averages.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|w| w.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// A `kB` figure from a `/proc` status-style text.
fn field_kb(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// A process's memory now: resident (`VmRSS`) and its peak so far (`VmHWM`), in bytes.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Memory {
    pub rss: u64,
    pub peak: u64,
}

/// [`Memory`] of process `pid`, or `None` when it is gone.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Memory {
        rss: field_kb(&status, "VmRSS:")? * 1024,
        peak: field_kb(&status, "VmHWM:")? * 1024,
    })
}

/// CPU time (user + system) process `pid` has used, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100, Linux's usual value, if that fails).
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Measures the share of one core a process used between [`CpuMeter::start`] and
/// [`CpuMeter::percent`] (100 % = one core busy all the time).
#[derive(Debug, Clone)]
pub struct CpuMeter {
    pid: u32,
    ticks: u64,
    since: Instant,
    per_second: f64,
}

impl CpuMeter {
    pub fn start(pid: u32) -> CpuMeter {
        CpuMeter {
            pid,
            ticks: cpu_ticks(pid).unwrap_or(0),
            since: Instant::now(),
            per_second: ticks_per_second(),
        }
    }

    /// CPU use since the start, in percent of one core; `None` when the process is gone.
    pub fn percent(&self) -> Option<f64> {
        let used = cpu_ticks(self.pid)?.saturating_sub(self.ticks) as f64 / self.per_second;
        Some(used / self.since.elapsed().as_secs_f64() * 100.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let m = memory(me).unwrap();
        assert!(m.rss > 0 && m.peak >= m.rss);
        let meter = CpuMeter::start(me);
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(meter.percent().unwrap() >= 0.0);
        let machine = Machine::read();
        assert!(machine.cores >= 1 && machine.memory_mb > 0);
        assert!(load_average()[0] >= 0.0);
    }
}
