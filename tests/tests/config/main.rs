//! Configuration and log output with the real binaries: a hub and an agent started from a TOML
//! config file alone, `config check` naming each setting's source (flag > `TONGBU_*` variable >
//! file > default) and refusing bad files with their place, and `--log-format json` writing one
//! JSON object per stderr line.
//!
//! Every command runs with the test process's own `TONGBU_HUB_*`, `TONGBU_AGENT_*` and
//! `RUST_LOG` variables removed, so only what a test sets counts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tongbu_tests::{Agent, Cli, DEADLINE, Hub, Running, TempDir, bins, http, wait_for};

const COUNTY: &str = "430112";

/// `program` with none of the caller's settings variables.
fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("TONGBU_HUB_")
            || name.starts_with("TONGBU_AGENT_")
            || name == "RUST_LOG"
        {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd
}

fn run(mut cmd: Command, args: &[&str], env: &[(&str, &str)]) -> Cli {
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tongbu_procs::run_output(cmd, None).expect("run").into()
}

fn hub_cli(args: &[&str], env: &[(&str, &str)]) -> Cli {
    run(command(&bins().hub), args, env)
}

fn agent_cli(args: &[&str], env: &[(&str, &str)]) -> Cli {
    run(command(&bins().agent), args, env)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The `key = value  # source` line of a `config check` report.
fn setting<'a>(report: &'a str, key: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{report}"))
}

/// Waits until the log has at least one line, then checks every line is a JSON object with a
/// timestamp, a level and a message, and returns them.
fn json_lines(log: &Path) -> Vec<Value> {
    let text = wait_for("a log line", || {
        let text = std::fs::read_to_string(log).ok()?;
        text.contains('\n').then_some(text)
    })
    .unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{text}"));
            for field in ["timestamp", "level", "target", "message"] {
                assert!(v.get(field).is_some(), "no {field} in {line}");
            }
            v
        })
        .collect()
}

#[test]
fn a_hub_serves_from_its_config_file_alone_and_logs_json_lines() {
    let dir = TempDir::new().unwrap();
    let config = write(
        dir.path(),
        "hub.toml",
        "# a relative data_dir is relative to this file's folder\n\
         data_dir = \"data\"\n\
         listen = \"127.0.0.1:0\"\n\
         log_format = \"json\"\n\
         log_level = \"info\"\n",
    );
    // Started somewhere else, so a data_dir relative to the working directory would be wrong.
    let elsewhere = TempDir::new().unwrap();
    let mut cmd = command(&bins().hub);
    cmd.current_dir(elsewhere.path())
        .args(["serve", "--config", &config]);
    let log = dir.path().join("hub.log");
    let hub = Running::spawn(cmd, log.clone(), "READY listen=", DEADLINE).unwrap();
    assert!(hub.url.starts_with("http://127.0.0.1:"), "{}", hub.url);
    assert_ne!(hub.port(), Some(0));
    let health = http().get(format!("{}/healthz", hub.url)).send().unwrap();
    assert_eq!(health.status(), 200);
    assert!(dir.path().join("data/hub.key").exists());
    assert!(
        std::fs::read_dir(elsewhere.path())
            .unwrap()
            .next()
            .is_none()
    );

    let lines = json_lines(&log);
    let serving = lines
        .iter()
        .find(|l| l["message"] == "hub serving")
        .unwrap_or_else(|| panic!("no 'hub serving' line: {lines:?}"));
    assert_eq!(serving["level"], "INFO");
    assert!(
        serving["data_dir"].as_str().unwrap().ends_with("/data"),
        "{serving}"
    );
    assert!(hub.terminate().unwrap(), "the hub stops cleanly on SIGTERM");
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

#[test]
fn hub_config_check_names_each_settings_source_and_refuses_bad_settings() {
    let dir = TempDir::new().unwrap();
    let config = write(
        dir.path(),
        "hub.toml",
        "data_dir = \"/var/lib/tongbu/hub\"\nlisten = \"0.0.0.0:8440\"\nplain_http = \"off\"\n",
    );
    let out = hub_cli(
        &[
            "config",
            "check",
            "--config",
            &config,
            "--data-dir",
            "/srv/flag",
        ],
        &[
            ("TONGBU_HUB_DATA_DIR", "/srv/env"),
            ("TONGBU_HUB_LISTEN", "127.0.0.1:9440"),
            ("TONGBU_HUB_LOG_LEVEL", "debug"),
        ],
    )
    .expect_ok("config check");
    let report = &out.stdout;
    assert!(
        report.contains(&format!("# config file: {config} (named by --config)")),
        "{report}"
    );
    assert!(setting(report, "data_dir").starts_with("data_dir = \"/srv/flag\""));
    assert!(setting(report, "data_dir").ends_with("# flag --data-dir"));
    assert!(setting(report, "listen").starts_with("listen = \"127.0.0.1:9440\""));
    assert!(setting(report, "listen").ends_with("# env TONGBU_HUB_LISTEN"));
    assert!(setting(report, "plain_http").ends_with("# file"));
    assert!(setting(report, "log_level").ends_with("# env TONGBU_HUB_LOG_LEVEL"));
    assert!(setting(report, "log_format").ends_with("# default"));

    // A misspelt variable is reported, not silently ignored.
    let out = hub_cli(
        &["config", "check", "--config", &config],
        &[("TONGBU_HUB_LISTN", "127.0.0.1:9440")],
    )
    .expect_ok("config check with a misspelt variable");
    assert!(
        out.stderr
            .contains("warning: TONGBU_HUB_LISTN names no setting and is ignored"),
        "{}",
        out.stderr
    );
    assert!(setting(&out.stdout, "listen").ends_with("# file"));

    // The config file named by the variable instead of the flag.
    let out = hub_cli(&["config", "check"], &[("TONGBU_HUB_CONFIG", &config)])
        .expect_ok("config check from TONGBU_HUB_CONFIG");
    assert!(
        out.stdout.contains(&format!(
            "# config file: {config} (named by TONGBU_HUB_CONFIG)"
        )),
        "{}",
        out.stdout
    );
    assert!(setting(&out.stdout, "listen").ends_with("# file"));

    // An unknown key: the file, its line and column, the key, what is expected.
    let bad = write(
        dir.path(),
        "bad.toml",
        "listen = \"0.0.0.0:8440\"\nlisten_port = 8440\n",
    );
    let out = hub_cli(&["config", "check", "--config", &bad], &[]);
    assert!(!out.ok, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{bad}:2:1: listen_port: unknown field `listen_port`, expected one of"
        )),
        "{}",
        out.stderr
    );
    // A bad value, in the file and in a variable; every command refuses it, not only check.
    let bad = write(dir.path(), "bad-value.toml", "plain_http = \"everyone\"\n");
    let out = hub_cli(&["agents", "--config", &bad], &[]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains(&format!(
            "{bad}:1:14: plain_http: unknown variant `everyone`, expected `loopback` or `off`"
        )),
        "{}",
        out.stderr
    );
    let out = hub_cli(
        &["config", "check", "--config", &config],
        &[("TONGBU_HUB_LOG_FORMAT", "xml")],
    );
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("environment variable TONGBU_HUB_LOG_FORMAT=\"xml\": expected text or json"),
        "{}",
        out.stderr
    );
    // A missing file that was named is an error; key material is never repeated.
    let out = hub_cli(
        &["config", "check", "--config", "/nonexistent/hub.toml"],
        &[],
    );
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("cannot read the config file /nonexistent/hub.toml")
    );
    let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHNlY3JldHNlY3JldA==\n-----END PRIVATE KEY-----";
    let out = hub_cli(
        &["config", "check", "--config", &config],
        &[
            ("TONGBU_HUB_TLS_KEY", pem),
            ("TONGBU_HUB_TLS_CERT", "/c.pem"),
        ],
    );
    assert!(!out.ok);
    assert!(
        out.stderr.contains("tls_key (env TONGBU_HUB_TLS_KEY)"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("MC4CAQ") && !out.stdout.contains("MC4CAQ"));
    // Half a certificate pair is refused with where each half came from.
    let out = hub_cli(
        &["config", "check", "--config", &config],
        &[("TONGBU_HUB_TLS_CERT", "/c.pem")],
    );
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("tls_cert is set (env TONGBU_HUB_TLS_CERT) but tls_key is not"),
        "{}",
        out.stderr
    );
}

#[test]
fn agent_config_check_names_each_settings_source_and_refuses_bad_settings() {
    let dir = TempDir::new().unwrap();
    let config = write(
        dir.path(),
        "agent.toml",
        "data_dir = \"agent-data\"\nbatch_size = 200\nlog_format = \"json\"\n",
    );
    let out = agent_cli(
        &[
            "config",
            "check",
            "--config",
            &config,
            "--log-level",
            "warn",
        ],
        &[("TONGBU_AGENT_HEARTBEAT_SECS", "30")],
    )
    .expect_ok("config check");
    let report = &out.stdout;
    let data_dir = dir.path().join("agent-data");
    assert!(
        setting(report, "data_dir").starts_with(&format!("data_dir = \"{}\"", data_dir.display())),
        "{report}"
    );
    assert!(setting(report, "batch_size").starts_with("batch_size = 200"));
    assert!(setting(report, "batch_size").ends_with("# file"));
    assert!(setting(report, "heartbeat_secs").ends_with("# env TONGBU_AGENT_HEARTBEAT_SECS"));
    assert!(setting(report, "log_level").ends_with("# flag --log-level"));
    assert!(setting(report, "listen").starts_with("listen = \"127.0.0.1:8441\""));
    assert!(setting(report, "listen").ends_with("# default"));
    // The report is itself a config file.
    let again = write(dir.path(), "again.toml", report);
    agent_cli(&["config", "check", "--config", &again], &[]).expect_ok("check the report");

    // TONGBU_AGENT_DATA_DIR keeps working, and beats the file.
    let out = agent_cli(
        &["config", "check", "--config", &config],
        &[("TONGBU_AGENT_DATA_DIR", "/srv/agent")],
    )
    .expect_ok("config check");
    assert!(setting(&out.stdout, "data_dir").ends_with("# env TONGBU_AGENT_DATA_DIR"));

    let bad = write(
        dir.path(),
        "bad.toml",
        "batch_size = 200\nlisten = \"0.0.0.0:8441\"\n",
    );
    let out = agent_cli(&["config", "check", "--config", &bad], &[]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains(&format!("{bad}:2:10: listen: ")) && out.stderr.contains("loopback"),
        "{}",
        out.stderr
    );
    let bad = write(
        dir.path(),
        "unknown.toml",
        "hub_url = \"https://hub.example.cn\"\n",
    );
    let out = agent_cli(&["status", "--config", &bad], &[]);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains(&format!("{bad}:1:1: hub_url: unknown field `hub_url`")),
        "{}",
        out.stderr
    );
    let out = agent_cli(
        &["config", "check", "--config", &config],
        &[("TONGBU_AGENT_RETRY_MIN_MS", "70000")],
    );
    assert!(!out.ok);
    assert!(
        out.stderr.contains("retry_min_ms = 70000"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_agent_runs_from_its_config_file_and_logs_json_lines() {
    let hub = Hub::start().unwrap();
    hub.add_county(COUNTY, "望城区");
    let agent = Agent::enrolled(&hub, COUNTY).unwrap();
    let dir = TempDir::new().unwrap();
    let config = write(
        dir.path(),
        "agent.toml",
        &format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\nheartbeat_secs = 1\nretry_min_ms = 50\nretry_max_ms = 400\n",
            agent.data_dir().display().to_string()
        ),
    );
    let mut cmd = command(&bins().agent);
    cmd.args(["run", "--config", &config, "--log-format", "json"]);
    let log = dir.path().join("agent.log");
    let running = Running::spawn(cmd, log.clone(), "READY intake=", DEADLINE).unwrap();
    let health = http()
        .get(format!("{}/healthz", running.url))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200);
    let lines = json_lines(&log);
    assert!(lines.iter().all(|l| l["level"].is_string()), "{lines:?}");
    assert!(running.terminate().unwrap());
}
