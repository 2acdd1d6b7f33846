//! The agent's settings: the keys of its config file (`/etc/tongbu/agent.toml` if it exists,
//! `--config FILE` or `TONGBU_AGENT_CONFIG` otherwise), their `TONGBU_AGENT_<KEY>` variables
//! and flags, their defaults, and what `config check` prints.
//!
//! A setting is what an operator sets once for the installation (where the data lives, the
//! intake address, how the service syncs, the log output); what one command acts on (the hub
//! URL and token of `enroll`, a file to submit) stays a flag of that command — the hub's URL
//! and trust are kept with the enrollment in the data directory, not here. Precedence: flag >
//! variable > file > default ([`tongbu_settings::Layers`]). Invariants: unknown keys in the file
//! are errors; every value is parsed into its type when read (the intake address is a loopback
//! address, sizes and delays are in range, the shortest retry delay is not longer than the
//! longest), so a loaded [`AgentConfig`] holds only valid values; the defaults are the v1 ones
//! (`./tongbu-agent-data`, `127.0.0.1:8441`) and those of [`ServiceOptions::new`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use tongbu_agent::service::ServiceOptions;
use tongbu_settings::{
    Bounded, ConfigError, ConfigFile, Entry, Env, Layers, LogFormat, LogLevel, Setting, Value,
};

/// The packaged config file, read if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tongbu/agent.toml";
/// Names another config file.
pub const CONFIG_ENV: &str = "TONGBU_AGENT_CONFIG";
const ENV_PREFIX: &str = "TONGBU_AGENT_";
pub const DEFAULT_DATA_DIR: &str = "./tongbu-agent-data";

/// Seconds between syncs when nothing new arrives: a second to a day.
pub type HeartbeatSecs = Bounded<1, 86_400>;
/// A retry delay in milliseconds: a millisecond to an hour.
pub type RetryMs = Bounded<1, 3_600_000>;
/// Records per batch sent to the hub (the hub takes at most 1000).
pub type BatchSize = Bounded<1, 1000>;

/// The config file's keys; each is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    data_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
    log_level: Option<LogLevel>,
    listen: Option<IntakeAddr>,
    heartbeat_secs: Option<HeartbeatSecs>,
    retry_min_ms: Option<RetryMs>,
    retry_max_ms: Option<RetryMs>,
    batch_size: Option<BatchSize>,
}

/// The settings given as flags (`None`: not given).
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<LogLevel>,
    pub listen: Option<IntakeAddr>,
    pub heartbeat_secs: Option<HeartbeatSecs>,
    pub retry_min_ms: Option<RetryMs>,
    pub retry_max_ms: Option<RetryMs>,
    pub batch_size: Option<BatchSize>,
}

/// The agent's effective settings, each with its source.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The config file that was read, if any.
    pub file: Option<ConfigFile>,
    pub data_dir: Setting<PathBuf>,
    pub log_format: Setting<LogFormat>,
    pub log_level: Setting<LogLevel>,
    pub listen: Setting<IntakeAddr>,
    pub heartbeat_secs: Setting<HeartbeatSecs>,
    pub retry_min_ms: Setting<RetryMs>,
    pub retry_max_ms: Setting<RetryMs>,
    pub batch_size: Setting<BatchSize>,
}

impl AgentConfig {
    /// Finds and reads the config file (`default_path` only if it exists) and layers it.
    pub fn load(flags: Flags, env: &dyn Env, default_path: &Path) -> Result<Self, ConfigError> {
        let file = tongbu_settings::locate(flags.config.as_deref(), env, CONFIG_ENV, default_path)?;
        AgentConfig::layer(flags, env, file)
    }

    /// Layers flags, the environment and a file already read.
    pub fn layer(
        flags: Flags,
        env: &dyn Env,
        file: Option<ConfigFile>,
    ) -> Result<Self, ConfigError> {
        let keys: FileKeys = match &file {
            Some(f) => f.parse()?,
            None => FileKeys::default(),
        };
        let data_dir_in_file = match (&file, keys.data_dir) {
            (Some(f), Some(p)) => Some(f.resolve(&p)),
            (_, p) => p,
        };
        let defaults = ServiceOptions::new(DEFAULT_DATA_DIR);
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let layers = Layers::new(ENV_PREFIX, env);
        let config = AgentConfig {
            data_dir: layers.pick(
                "data_dir",
                flags.data_dir,
                data_dir_in_file,
                PathBuf::from(DEFAULT_DATA_DIR),
            )?,
            log_format: layers.pick(
                "log_format",
                flags.log_format,
                keys.log_format,
                LogFormat::Text,
            )?,
            // `RUST_LOG` was the agent's only log setting before the config file; it still
            // counts.
            log_level: layers.pick_aliased(
                "log_level",
                &["RUST_LOG"],
                flags.log_level,
                keys.log_level,
                LogLevel::default(),
            )?,
            listen: layers.pick(
                "listen",
                flags.listen,
                keys.listen,
                IntakeAddr(defaults.listen),
            )?,
            heartbeat_secs: layers.pick(
                "heartbeat_secs",
                flags.heartbeat_secs,
                keys.heartbeat_secs,
                bounded(defaults.heartbeat.as_secs())?,
            )?,
            retry_min_ms: layers.pick(
                "retry_min_ms",
                flags.retry_min_ms,
                keys.retry_min_ms,
                bounded(millis(defaults.retry_min))?,
            )?,
            retry_max_ms: layers.pick(
                "retry_max_ms",
                flags.retry_max_ms,
                keys.retry_max_ms,
                bounded(millis(defaults.retry_max))?,
            )?,
            batch_size: layers.pick(
                "batch_size",
                flags.batch_size,
                keys.batch_size,
                bounded(u64::try_from(defaults.batch_size).unwrap_or(u64::MAX))?,
            )?,
            file,
        };
        if config.retry_min_ms.value > config.retry_max_ms.value {
            return Err(ConfigError::Invalid(format!(
                "retry_min_ms = {} ({}) is longer than retry_max_ms = {} ({}): the first retry delay cannot exceed the longest",
                config.retry_min_ms.value,
                config.retry_min_ms.source,
                config.retry_max_ms.value,
                config.retry_max_ms.source
            )));
        }
        Ok(config)
    }

    /// How `run` runs the service.
    pub fn service_options(&self) -> ServiceOptions {
        ServiceOptions {
            listen: self.listen.value.0,
            heartbeat: Duration::from_secs(self.heartbeat_secs.value.get()),
            retry_min: Duration::from_millis(self.retry_min_ms.value.get()),
            retry_max: Duration::from_millis(self.retry_max_ms.value.get()),
            batch_size: self.batch_size(),
            ..ServiceOptions::new(&self.data_dir.value)
        }
    }

    /// Records per batch, for `run` and `sync --once`.
    pub fn batch_size(&self) -> usize {
        // At most 1000: it always fits.
        usize::try_from(self.batch_size.value.get()).unwrap_or(1000)
    }

    /// Every setting as `config check` prints it.
    pub fn entries(&self) -> Vec<Entry> {
        let number = |key, s: &Setting<u64>| Entry::new(key, Value::Number(s.value), &s.source);
        vec![
            Entry::new(
                "data_dir",
                Value::from(self.data_dir.value.as_path()),
                &self.data_dir.source,
            ),
            Entry::new(
                "log_format",
                Value::Text(self.log_format.value.to_string()),
                &self.log_format.source,
            ),
            Entry::new(
                "log_level",
                Value::Text(self.log_level.value.to_string()),
                &self.log_level.source,
            ),
            Entry::new(
                "listen",
                Value::Text(self.listen.value.to_string()),
                &self.listen.source,
            ),
            number("heartbeat_secs", &get(&self.heartbeat_secs)),
            number("retry_min_ms", &get(&self.retry_min_ms)),
            number("retry_max_ms", &get(&self.retry_max_ms)),
            number("batch_size", &get(&self.batch_size)),
        ]
    }
}

/// A setting's number, with its source.
fn get<const MIN: u64, const MAX: u64>(s: &Setting<Bounded<MIN, MAX>>) -> Setting<u64> {
    Setting::new(s.value.get(), s.source.clone())
}

/// A built-in default as a bounded value (a default out of its own bounds is a bug, reported
/// rather than hidden).
fn bounded<const MIN: u64, const MAX: u64>(n: u64) -> Result<Bounded<MIN, MAX>, ConfigError> {
    Bounded::new(n).map_err(|e| ConfigError::Invalid(format!("built-in default: {e}")))
}

/// The intake's address: a loopback address and port (port 0 picks a free port). The intake
/// has no authentication, so it never listens on another interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct IntakeAddr(SocketAddr);

impl fmt::Display for IntakeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for IntakeAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let addr: SocketAddr = s.parse().map_err(|_| {
            format!("expected a loopback address and port, e.g. 127.0.0.1:8441, got {s:?}")
        })?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "the intake API has no authentication, so it listens only on loopback (127.0.0.1 or [::1]), not {addr}"
            ));
        }
        Ok(IntakeAddr(addr))
    }
}

impl TryFrom<String> for IntakeAddr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use tongbu_settings::{FileOrigin, Located, Source};

    use super::*;

    use tongbu_settings::env_of as env;

    fn file(text: &str) -> Option<ConfigFile> {
        Some(ConfigFile::from_text(
            "/etc/tongbu/agent.toml",
            FileOrigin::DefaultPath,
            text,
        ))
    }

    fn located(e: ConfigError) -> Located {
        match e {
            ConfigError::File(l) => *l,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn without_file_variables_or_flags_the_v1_and_service_defaults_hold() {
        let c = AgentConfig::layer(Flags::default(), &env(&[]), None).unwrap();
        assert_eq!(
            c.data_dir,
            Setting::new(DEFAULT_DATA_DIR.into(), Source::Default)
        );
        assert_eq!(c.listen.value.to_string(), "127.0.0.1:8441");
        let opts = c.service_options();
        let defaults = ServiceOptions::new(DEFAULT_DATA_DIR);
        assert_eq!(opts.listen, defaults.listen);
        assert_eq!(opts.heartbeat, defaults.heartbeat);
        assert_eq!(opts.retry_min, defaults.retry_min);
        assert_eq!(opts.retry_max, defaults.retry_max);
        assert_eq!(opts.batch_size, defaults.batch_size);
        assert_eq!(opts.data_dir, defaults.data_dir);
    }

    #[test]
    fn flag_beats_variable_beats_file_beats_default_for_every_key() {
        let text = r#"
            data_dir = "data"
            log_format = "json"
            log_level = "warn"
            listen = "127.0.0.1:9441"
            heartbeat_secs = 30
            retry_min_ms = 1000
            retry_max_ms = 120000
            batch_size = 200
        "#;
        let c = AgentConfig::layer(Flags::default(), &env(&[]), file(text)).unwrap();
        for e in c.entries() {
            assert_eq!(e.source, Source::File, "{}", e.key);
        }
        assert_eq!(c.data_dir.value, Path::new("/etc/tongbu/data"));
        let opts = c.service_options();
        assert_eq!(opts.heartbeat, Duration::from_secs(30));
        assert_eq!(opts.retry_max, Duration::from_secs(120));
        assert_eq!(opts.batch_size, 200);
        assert_eq!(opts.data_dir, Path::new("/etc/tongbu/data"));

        let vars = env(&[
            ("TONGBU_AGENT_DATA_DIR", "/env/agent"),
            ("TONGBU_AGENT_LOG_FORMAT", "text"),
            ("TONGBU_AGENT_LOG_LEVEL", "debug"),
            ("TONGBU_AGENT_LISTEN", "[::1]:8441"),
            ("TONGBU_AGENT_HEARTBEAT_SECS", "5"),
            ("TONGBU_AGENT_RETRY_MIN_MS", "100"),
            ("TONGBU_AGENT_RETRY_MAX_MS", "1000"),
            ("TONGBU_AGENT_BATCH_SIZE", "1000"),
        ]);
        let c = AgentConfig::layer(Flags::default(), &vars, file(text)).unwrap();
        for e in c.entries() {
            let var = format!("TONGBU_AGENT_{}", e.key.to_uppercase());
            assert_eq!(e.source, Source::Env(var), "{}", e.key);
        }
        assert_eq!(c.service_options().listen.to_string(), "[::1]:8441");

        let flags = Flags {
            config: None,
            data_dir: Some("/flag/agent".into()),
            log_format: Some(LogFormat::Json),
            log_level: Some("error".parse().unwrap()),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            heartbeat_secs: Some("1".parse().unwrap()),
            retry_min_ms: Some("50".parse().unwrap()),
            retry_max_ms: Some("60".parse().unwrap()),
            batch_size: Some("7".parse().unwrap()),
        };
        let c = AgentConfig::layer(flags, &vars, file(text)).unwrap();
        for e in c.entries() {
            let flag = format!("--{}", e.key.replace('_', "-"));
            assert_eq!(e.source, Source::Flag(flag), "{}", e.key);
        }
        assert_eq!(c.batch_size(), 7);
    }

    #[test]
    fn unknown_keys_are_errors_with_their_place() {
        let err = located(
            AgentConfig::layer(
                Flags::default(),
                &env(&[]),
                file("batch_size = 10\nhub = \"https://hub.example.cn:8440\"\n"),
            )
            .unwrap_err(),
        );
        assert_eq!(
            (err.line, err.column, err.key.as_deref()),
            (2, 1, Some("hub"))
        );
        assert!(
            err.message.contains("unknown field `hub`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn bad_values_are_errors_naming_the_key_or_variable_and_what_was_expected() {
        for (text, key, expected) in [
            ("listen = \"0.0.0.0:8441\"", "listen", "only on loopback"),
            (
                "listen = \"localhost\"",
                "listen",
                "expected a loopback address",
            ),
            ("batch_size = 0", "batch_size", "from 1 to 1000, got 0"),
            (
                "batch_size = 5000",
                "batch_size",
                "from 1 to 1000, got 5000",
            ),
            ("batch_size = -1", "batch_size", "from 1 to 1000, got -1"),
            (
                "heartbeat_secs = \"10\"",
                "heartbeat_secs",
                "a whole number from 1 to 86400",
            ),
            ("retry_max_ms = 1.5", "retry_max_ms", "a whole number"),
        ] {
            let err =
                located(AgentConfig::layer(Flags::default(), &env(&[]), file(text)).unwrap_err());
            assert_eq!(err.key.as_deref(), Some(key), "{text}");
            assert!(err.message.contains(expected), "{text}: {}", err.message);
        }
        let err = AgentConfig::layer(
            Flags::default(),
            &env(&[("TONGBU_AGENT_BATCH_SIZE", "lots")]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("environment variable TONGBU_AGENT_BATCH_SIZE=\"lots\": expected a whole number from 1 to 1000"),
            "{err}"
        );
    }

    #[test]
    fn the_first_retry_delay_cannot_exceed_the_longest() {
        let err = AgentConfig::layer(
            Flags::default(),
            &env(&[("TONGBU_AGENT_RETRY_MIN_MS", "90000")]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "retry_min_ms = 90000 (env TONGBU_AGENT_RETRY_MIN_MS) is longer than retry_max_ms = 60000 (default): the first retry delay cannot exceed the longest"
        );
    }

    /// The example shipped in `deploy/config/` parses, as installed and with every commented
    /// setting switched on.
    #[test]
    fn the_example_config_parses_with_every_key_it_mentions() {
        let text = include_str!("../../deploy/config/agent.toml");
        let c = AgentConfig::layer(Flags::default(), &env(&[]), file(text)).unwrap();
        assert_eq!(
            c.data_dir,
            Setting::new("/var/lib/tongbu/agent".into(), Source::File)
        );
        assert_eq!(c.listen.value.to_string(), "127.0.0.1:8441");
        let all: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.chars().next().is_some_and(|c| c.is_ascii_lowercase()) => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = AgentConfig::layer(Flags::default(), &env(&[]), file(&all)).unwrap();
        let missing: Vec<_> = c
            .entries()
            .into_iter()
            .filter(|e| e.source != Source::File)
            .map(|e| e.key)
            .collect();
        assert!(
            missing.is_empty(),
            "the example does not mention {missing:?}"
        );
    }
}
