//! The systemd units in `deploy/systemd/` pass `systemd-analyze verify` (with `ExecStart`
//! pointed at the freshly built binary, since `/usr/bin/tongbu-*` is not installed here) and
//! keep their hardening (`systemd-analyze security` exposure at most 2.0); a broken unit is
//! refused by the same check, so the check can fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use tongbu_tests::{bins, workspace_dir};

/// What each unit must say: the contract with the packages, the binaries and the guide.
const HUB_MUST: &[&str] = &[
    "Type=notify",
    "NotifyAccess=main",
    "WatchdogSec=30s",
    "Restart=on-failure",
    "ExecStart=/usr/bin/tongbu-hub --config /etc/tongbu/hub.toml serve",
    "User=tongbu-hub",
    "StateDirectory=tongbu/hub",
    "ConfigurationDirectory=tongbu",
    "ProtectSystem=strict",
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "SystemCallFilter=@system-service",
    "LimitNOFILE=65536",
];
const AGENT_MUST: &[&str] = &[
    "Type=notify",
    "NotifyAccess=main",
    "WatchdogSec=30s",
    "Restart=on-failure",
    "ExecStart=/usr/bin/tongbu-agent --config /etc/tongbu/agent.toml run",
    "User=tongbu-agent",
    "StateDirectory=tongbu/agent",
    "ConfigurationDirectory=tongbu",
    "ProtectSystem=strict",
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "SystemCallFilter=@system-service",
];

/// `systemd-analyze`, or `None` (with a notice) where it cannot be had outside CI.
pub fn systemd_analyze() -> Option<PathBuf> {
    let found = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing in CI: .ci/run installs the systemd package"
        );
        eprintln!("NOTICE: systemd-analyze not found (apt-get install systemd); skipping");
    }
    found
}

/// Runs `systemd-analyze verify` on `unit`: passes only with exit 0 and not one warning about
/// the unit (unknown keys and bad values are only warnings to systemd, but errors here).
fn verify(tool: &Path, unit: &Path) -> Result<(), String> {
    let out = Command::new(tool)
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .map_err(|e| format!("cannot run systemd-analyze: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = unit.file_name().unwrap().to_string_lossy();
    let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains(&*name)).collect();
    if !out.status.success() || !about_unit.is_empty() {
        return Err(format!("{} ({}):\n{stderr}", name, out.status));
    }
    Ok(())
}

/// The exposure score `systemd-analyze security --offline` gives `unit` must stay at or below
/// 2.0 ("OK"): weakening the sandbox fails the test.
fn hardened(tool: &Path, unit: &Path) -> Result<(), String> {
    let out = Command::new(tool)
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(unit)
        .output()
        .map_err(|e| format!("cannot run systemd-analyze: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let summary = stdout.lines().last().unwrap_or_default();
        return Err(format!("{summary} ({})", out.status));
    }
    Ok(())
}

/// A copy of the unit `name` in `dir`, with `ExecStart` pointed at `binary`, and `edit` applied.
fn staged(dir: &Path, name: &str, binary: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(workspace_dir().join("deploy/systemd").join(name)).unwrap();
    let installed = format!("/usr/bin/{}", binary.file_name().unwrap().to_string_lossy());
    assert!(text.contains(&installed), "{name} runs {installed}");
    let text = edit(text.replace(&installed, binary.to_str().unwrap()));
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_units_pass_systemd_analyze_verify_and_stay_hardened() {
    let units = [
        ("tongbu-hub.service", &bins().hub, HUB_MUST),
        ("tongbu-agent.service", &bins().agent, AGENT_MUST),
    ];
    for (name, _, must) in &units {
        let text =
            std::fs::read_to_string(workspace_dir().join("deploy/systemd").join(name)).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for line in *must {
            assert!(lines.contains(line), "{name} lacks the line {line:?}");
        }
    }
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (name, binary, _) in &units {
        let unit = staged(dir.path(), name, binary, |t| t);
        verify(&tool, &unit).unwrap();
        hardened(&tool, &unit).unwrap();
    }
}

/// A change made to a unit's text.
type Edit = fn(String) -> String;

#[test]
fn the_checks_refuse_a_broken_unit() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let hub = &bins().hub;
    let broken: [(&str, Edit); 4] = [
        ("a misspelt key", |t| t.replace("Type=notify", "Typ=notify")),
        ("a bad value", |t| t.replace("Type=notify", "Type=notifyy")),
        ("a missing binary", |t| {
            t.replace("tongbu-hub --config", "tongbu-hub-missing --config")
        }),
        ("an unknown section", |t| t.replace("[Install]", "[Instal]")),
    ];
    for (what, edit) in broken {
        let dir = tempfile::tempdir().unwrap();
        let unit = staged(dir.path(), "tongbu-hub.service", hub, edit);
        assert!(verify(&tool, &unit).is_err(), "verify accepts {what}");
    }
    // The sandbox taken away: the exposure check fails.
    let dir = tempfile::tempdir().unwrap();
    let unit = staged(dir.path(), "tongbu-hub.service", hub, |t| {
        t.lines()
            .filter(|l| !l.starts_with("Protect") && !l.starts_with("SystemCall"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    verify(&tool, &unit).unwrap();
    assert!(hardened(&tool, &unit).is_err(), "an unhardened unit passes");
}
