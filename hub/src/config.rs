//! The hub's settings: the keys of its config file (`/etc/tongbu/hub.toml` if it exists,
//! `--config FILE` or `TONGBU_HUB_CONFIG` otherwise), their `TONGBU_HUB_<KEY>` variables and
//! flags, their defaults, and what `config check` prints.
//!
//! A setting is what an operator sets once for the installation (where the data lives, the
//! address, the certificate, the log output); what one command acts on (a county code, a file,
//! a token's lifetime) stays a flag of that command. Precedence: flag > variable > file >
//! default ([`tongbu_settings::Layers`]). Invariants: unknown keys in the file are errors;
//! every value is parsed into its type when read, so a loaded [`HubConfig`] holds only valid
//! values; the defaults are the v1 ones (`./tongbu-hub-data`, `127.0.0.1:8440`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use tongbu_settings::{
    ConfigError, ConfigFile, Entry, Env, Layers, LogFormat, LogLevel, Setting, Source, Value,
};

/// The packaged config file, read if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tongbu/hub.toml";
/// Names another config file.
pub const CONFIG_ENV: &str = "TONGBU_HUB_CONFIG";
const ENV_PREFIX: &str = "TONGBU_HUB_";
pub const DEFAULT_DATA_DIR: &str = "./tongbu-hub-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8440";

/// The config file's keys; each is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    data_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
    log_level: Option<LogLevel>,
    listen: Option<ListenAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_san: Option<Vec<String>>,
    plain_http: Option<PlainHttpMode>,
}

/// The settings given as flags (`None` or empty: not given).
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<LogLevel>,
    pub listen: Option<ListenAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_san: Vec<String>,
    pub plain_http: Option<PlainHttpMode>,
}

/// The hub's effective settings, each with its source.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The config file that was read, if any.
    pub file: Option<ConfigFile>,
    pub data_dir: Setting<PathBuf>,
    pub log_format: Setting<LogFormat>,
    pub log_level: Setting<LogLevel>,
    pub listen: Setting<ListenAddr>,
    pub tls_cert: Setting<Option<PathBuf>>,
    pub tls_key: Setting<Option<PathBuf>>,
    pub tls_san: Setting<Vec<String>>,
    pub plain_http: Setting<PlainHttpMode>,
}

impl HubConfig {
    /// Finds and reads the config file (`default_path` only if it exists) and layers it.
    pub fn load(flags: Flags, env: &dyn Env, default_path: &Path) -> Result<Self, ConfigError> {
        let file = tongbu_settings::locate(flags.config.as_deref(), env, CONFIG_ENV, default_path)?;
        HubConfig::layer(flags, env, file)
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
        let in_file = |p: Option<PathBuf>| match (&file, p) {
            (Some(f), Some(p)) => Some(f.resolve(&p)),
            (_, p) => p,
        };
        let layers = Layers::new(ENV_PREFIX, env);
        let default_listen = ListenAddr(DEFAULT_LISTEN.to_owned());
        let config = HubConfig {
            data_dir: layers.pick(
                "data_dir",
                flags.data_dir,
                in_file(keys.data_dir),
                PathBuf::from(DEFAULT_DATA_DIR),
            )?,
            log_format: layers.pick(
                "log_format",
                flags.log_format,
                keys.log_format,
                LogFormat::Text,
            )?,
            // `RUST_LOG` was the hub's only log setting before the config file; it still counts.
            log_level: layers.pick_aliased(
                "log_level",
                &["RUST_LOG"],
                flags.log_level,
                keys.log_level,
                LogLevel::default(),
            )?,
            listen: layers.pick("listen", flags.listen, keys.listen, default_listen)?,
            tls_cert: layers.pick_optional("tls_cert", flags.tls_cert, in_file(keys.tls_cert))?,
            tls_key: layers.pick_optional("tls_key", flags.tls_key, in_file(keys.tls_key))?,
            tls_san: layers.pick_list("tls_san", flags.tls_san, keys.tls_san),
            plain_http: layers.pick(
                "plain_http",
                flags.plain_http,
                keys.plain_http,
                PlainHttpMode::Loopback,
            )?,
            file,
        };
        for (key, setting) in [("tls_cert", &config.tls_cert), ("tls_key", &config.tls_key)] {
            if let Some(path) = &setting.value {
                if tongbu_settings::looks_secret(&path.to_string_lossy()) {
                    return Err(ConfigError::Invalid(format!(
                        "{key} ({}) holds PEM text or a secret, not a path: put it in a file readable only by the hub's user and give that file's path",
                        setting.source
                    )));
                }
            }
        }
        Ok(config)
    }

    /// The certificate and key `serve` presents: both or neither (a self-signed pair in
    /// `<data_dir>/tls/`).
    pub fn tls_pair(&self) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        match (&self.tls_cert.value, &self.tls_key.value) {
            (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigError::Invalid(format!(
                "tls_cert is set ({}) but tls_key is not: give the certificate's key too, or neither (a self-signed pair in <data_dir>/tls/)",
                self.tls_cert.source
            ))),
            (None, Some(_)) => Err(ConfigError::Invalid(format!(
                "tls_key is set ({}) but tls_cert is not: give its certificate too, or neither (a self-signed pair in <data_dir>/tls/)",
                self.tls_key.source
            ))),
        }
    }

    /// Every setting as `config check` prints it.
    pub fn entries(&self) -> Vec<Entry> {
        let path = |key, s: &Setting<Option<PathBuf>>, unset| {
            let value = s.value.as_deref().map_or(Value::Unset(unset), Value::from);
            Entry::new(key, value, &s.source)
        };
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
            path(
                "tls_cert",
                &self.tls_cert,
                "serve makes a self-signed pair in <data_dir>/tls/",
            ),
            path(
                "tls_key",
                &self.tls_key,
                "serve makes a self-signed pair in <data_dir>/tls/",
            ),
            Entry::new(
                "tls_san",
                Value::List(self.tls_san.value.clone()),
                &self.tls_san.source,
            ),
            Entry::new(
                "plain_http",
                Value::Text(self.plain_http.value.to_string()),
                &self.plain_http.source,
            ),
        ]
    }

    /// Whether `data_dir` was named on the command line (the demo keeps its own folder
    /// otherwise, so a packaged config never points it at a real hub's data).
    pub fn data_dir_from_flag(&self) -> Option<&Path> {
        matches!(self.data_dir.source, Source::Flag(_)).then_some(self.data_dir.value.as_path())
    }
}

/// The address `serve` listens on: `host:port` (a name or an IP address; port 0 picks a free
/// port).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ListenAddr(String);

impl ListenAddr {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected host:port, e.g. 0.0.0.0:8440 or [::]:8440, got {s:?}");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host_ok = match host.strip_prefix('[') {
            Some(v6) => v6
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
            None => {
                !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            }
        };
        if !host_ok || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        Ok(ListenAddr(s.to_owned()))
    }
}

impl TryFrom<String> for ListenAddr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Who may speak plain HTTP on the hub's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlainHttpMode {
    /// This machine only (loopback peers): local scripts, a TLS-terminating proxy on the host.
    Loopback,
    /// Nobody: HTTPS only.
    Off,
}

impl fmt::Display for PlainHttpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlainHttpMode::Loopback => "loopback",
            PlainHttpMode::Off => "off",
        })
    }
}

impl FromStr for PlainHttpMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "loopback" => Ok(PlainHttpMode::Loopback),
            "off" => Ok(PlainHttpMode::Off),
            other => Err(format!("expected loopback or off, got {other:?}")),
        }
    }
}

impl From<PlainHttpMode> for tongbu_hub::http::PlainHttp {
    fn from(mode: PlainHttpMode) -> Self {
        match mode {
            PlainHttpMode::Loopback => tongbu_hub::http::PlainHttp::Loopback,
            PlainHttpMode::Off => tongbu_hub::http::PlainHttp::Off,
        }
    }
}

#[cfg(test)]
mod tests {
    use tongbu_settings::{FileOrigin, Located};

    use super::*;

    use tongbu_settings::env_of as env;

    fn file(text: &str) -> Option<ConfigFile> {
        Some(ConfigFile::from_text(
            "/etc/tongbu/hub.toml",
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
    fn without_file_variables_or_flags_the_v1_defaults_hold() {
        let c = HubConfig::layer(Flags::default(), &env(&[]), None).unwrap();
        assert_eq!(
            c.data_dir,
            Setting::new(DEFAULT_DATA_DIR.into(), Source::Default)
        );
        assert_eq!(c.listen.value.as_str(), "127.0.0.1:8440");
        assert_eq!(c.log_format.value, LogFormat::Text);
        assert_eq!(c.log_level.value.as_str(), "info");
        assert_eq!(c.plain_http.value, PlainHttpMode::Loopback);
        assert_eq!(c.tls_pair().unwrap(), None);
        assert!(c.tls_san.value.is_empty());
        assert!(c.data_dir_from_flag().is_none());
    }

    #[test]
    fn flag_beats_variable_beats_file_beats_default_for_every_key() {
        let text = r#"
            data_dir = "/srv/hub"
            log_format = "json"
            log_level = "warn"
            listen = "0.0.0.0:9000"
            tls_cert = "tls/hub.crt"
            tls_key = "/etc/tongbu/tls/hub.key"
            tls_san = ["hub.example.cn"]
            plain_http = "off"
        "#;
        let c = HubConfig::layer(Flags::default(), &env(&[]), file(text)).unwrap();
        for e in c.entries() {
            assert_eq!(e.source, Source::File, "{}", e.key);
        }
        assert_eq!(c.data_dir.value, Path::new("/srv/hub"));
        assert_eq!(
            c.tls_pair().unwrap(),
            Some((
                "/etc/tongbu/tls/hub.crt".into(),
                "/etc/tongbu/tls/hub.key".into()
            )),
            "a relative path in the file is relative to the file's folder"
        );
        assert_eq!(c.tls_san.value, ["hub.example.cn"]);

        let vars = env(&[
            ("TONGBU_HUB_DATA_DIR", "/env/hub"),
            ("TONGBU_HUB_LOG_FORMAT", "text"),
            ("TONGBU_HUB_LOG_LEVEL", "debug"),
            ("RUST_LOG", "trace"),
            ("TONGBU_HUB_LISTEN", "127.0.0.1:0"),
            ("TONGBU_HUB_TLS_CERT", "env.crt"),
            ("TONGBU_HUB_TLS_KEY", "env.key"),
            ("TONGBU_HUB_TLS_SAN", "a.cn,b.cn"),
            ("TONGBU_HUB_PLAIN_HTTP", "loopback"),
        ]);
        let c = HubConfig::layer(Flags::default(), &vars, file(text)).unwrap();
        for e in c.entries() {
            let var = format!("TONGBU_HUB_{}", e.key.to_uppercase());
            assert_eq!(e.source, Source::Env(var), "{}", e.key);
        }
        assert_eq!(
            c.tls_pair().unwrap(),
            Some(("env.crt".into(), "env.key".into())),
            "a relative path in a variable is relative to the working directory"
        );
        assert_eq!(c.log_level.value.as_str(), "debug");

        let flags = Flags {
            config: None,
            data_dir: Some("/flag/hub".into()),
            log_format: Some(LogFormat::Json),
            log_level: Some("error".parse().unwrap()),
            listen: Some("127.0.0.1:1".parse().unwrap()),
            tls_cert: Some("f.crt".into()),
            tls_key: Some("f.key".into()),
            tls_san: vec!["f.cn".into()],
            plain_http: Some(PlainHttpMode::Off),
        };
        let c = HubConfig::layer(flags, &vars, file(text)).unwrap();
        for e in c.entries() {
            let flag = format!("--{}", e.key.replace('_', "-"));
            assert_eq!(e.source, Source::Flag(flag), "{}", e.key);
        }
        assert_eq!(c.data_dir_from_flag(), Some(Path::new("/flag/hub")));
        assert_eq!(c.listen.value.as_str(), "127.0.0.1:1");
    }

    #[test]
    fn rust_log_still_sets_the_level_below_the_hubs_own_variable() {
        let c = HubConfig::layer(Flags::default(), &env(&[("RUST_LOG", "debug")]), None).unwrap();
        assert_eq!(c.log_level.source, Source::Env("RUST_LOG".into()));
        assert!(HubConfig::layer(Flags::default(), &env(&[("RUST_LOG", "infoo")]), None).is_err());
    }

    #[test]
    fn unknown_keys_are_errors_with_their_place() {
        let err = located(
            HubConfig::layer(
                Flags::default(),
                &env(&[]),
                file("listen = \"0.0.0.0:8440\"\nlisten_addr = \"x\"\n"),
            )
            .unwrap_err(),
        );
        assert_eq!((err.line, err.column), (2, 1));
        assert_eq!(err.key.as_deref(), Some("listen_addr"));
        assert!(
            err.message.contains("unknown field `listen_addr`"),
            "{}",
            err.message
        );
        let err = located(
            HubConfig::layer(
                Flags::default(),
                &env(&[]),
                file("[hub]\nlisten = \"x:1\"\n"),
            )
            .unwrap_err(),
        );
        assert_eq!(err.key.as_deref(), Some("hub"));
    }

    #[test]
    fn bad_values_are_errors_naming_the_key_or_variable_and_what_was_expected() {
        for (text, key, expected) in [
            ("listen = \"8440\"", "listen", "expected host:port"),
            ("listen = \"0.0.0.0:http\"", "listen", "expected host:port"),
            ("listen = 8440", "listen", "expected a string"),
            (
                "plain_http = \"everyone\"",
                "plain_http",
                "expected `loopback` or `off`",
            ),
            (
                "log_format = \"xml\"",
                "log_format",
                "expected `text` or `json`",
            ),
            (
                "log_level = \"verbose\"",
                "log_level",
                "expected a log level",
            ),
            ("tls_san = \"hub.example.cn\"", "tls_san", "a sequence"),
            ("data_dir = 5", "data_dir", "invalid type"),
        ] {
            let err =
                located(HubConfig::layer(Flags::default(), &env(&[]), file(text)).unwrap_err());
            assert_eq!(err.key.as_deref(), Some(key), "{text}");
            assert_eq!(err.line, 1, "{text}");
            assert!(err.message.contains(expected), "{text}: {}", err.message);
        }
        let err = HubConfig::layer(
            Flags::default(),
            &env(&[("TONGBU_HUB_PLAIN_HTTP", "everyone")]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "environment variable TONGBU_HUB_PLAIN_HTTP=\"everyone\": expected loopback or off, got \"everyone\""
        );
    }

    #[test]
    fn a_certificate_without_its_key_is_refused_naming_where_it_was_set() {
        let c =
            HubConfig::layer(Flags::default(), &env(&[]), file("tls_cert = \"/c.pem\"")).unwrap();
        let err = c.tls_pair().unwrap_err().to_string();
        assert!(
            err.starts_with("tls_cert is set (file) but tls_key is not"),
            "{err}"
        );
        let key_only = env(&[("TONGBU_HUB_TLS_KEY", "/k.pem")]);
        let c = HubConfig::layer(Flags::default(), &key_only, None).unwrap();
        let err = c.tls_pair().unwrap_err().to_string();
        assert!(err.contains("(env TONGBU_HUB_TLS_KEY)"), "{err}");
        // Layers combine: the certificate from a flag, its key from the file.
        let flags = Flags {
            tls_cert: Some("/flag.pem".into()),
            ..Flags::default()
        };
        let c = HubConfig::layer(flags, &env(&[]), file("tls_key = \"/k.pem\"")).unwrap();
        assert_eq!(
            c.tls_pair().unwrap(),
            Some(("/flag.pem".into(), "/k.pem".into()))
        );
    }

    #[test]
    fn key_material_in_place_of_a_key_path_is_refused_without_repeating_it() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGxkdW1teQ==\n-----END PRIVATE KEY-----";
        let vars = env(&[
            ("TONGBU_HUB_TLS_KEY", pem),
            ("TONGBU_HUB_TLS_CERT", "/c.pem"),
        ]);
        let err = HubConfig::layer(Flags::default(), &vars, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("tls_key (env TONGBU_HUB_TLS_KEY) holds PEM text"),
            "{err}"
        );
        assert!(!err.contains("MC4CAQ"), "{err}");
        let err = HubConfig::layer(
            Flags::default(),
            &env(&[("TONGBU_HUB_LISTEN", "tbk_0123456789")]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("0123456789"), "{err}");
    }

    #[test]
    fn config_check_prints_every_key_with_its_source_as_toml() {
        let vars = env(&[("TONGBU_HUB_LOG_LEVEL", "debug")]);
        let flags = Flags {
            log_format: Some(LogFormat::Json),
            ..Flags::default()
        };
        let c = HubConfig::layer(flags, &vars, file("listen = \"0.0.0.0:8440\"")).unwrap();
        let out = tongbu_settings::render(
            "tongbu-hub",
            c.file.as_ref(),
            Path::new(DEFAULT_CONFIG_PATH),
            &c.entries(),
        );
        assert!(
            out.contains("# config file: /etc/tongbu/hub.toml (the default path)"),
            "{out}"
        );
        let line = |key: &str| {
            out.lines()
                .find(|l| {
                    l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} "))
                })
                .unwrap_or_else(|| panic!("{key} missing: {out}"))
                .to_owned()
        };
        assert!(line("listen").ends_with("# file"), "{out}");
        assert!(
            line("log_level").ends_with("# env TONGBU_HUB_LOG_LEVEL"),
            "{out}"
        );
        assert!(line("log_format").ends_with("# flag --log-format"), "{out}");
        assert!(line("data_dir").ends_with("# default"), "{out}");
        assert!(
            line("tls_cert").starts_with("# tls_cert is not set"),
            "{out}"
        );
        let parsed: FileKeys = ConfigFile::from_text("out", FileOrigin::Flag, out)
            .parse()
            .unwrap();
        assert_eq!(parsed.listen.unwrap().as_str(), "0.0.0.0:8440");
    }

    /// The example shipped in `deploy/config/` parses, as installed and with every commented
    /// setting switched on.
    #[test]
    fn the_example_config_parses_with_every_key_it_mentions() {
        let text = include_str!("../../deploy/config/hub.toml");
        let c = HubConfig::layer(Flags::default(), &env(&[]), file(text)).unwrap();
        assert_eq!(
            c.data_dir,
            Setting::new("/var/lib/tongbu/hub".into(), Source::File)
        );
        assert_eq!(c.tls_pair().unwrap(), None);
        let all = uncomment_settings(text);
        let c = HubConfig::layer(Flags::default(), &env(&[]), file(&all)).unwrap();
        let from_file: Vec<_> = c
            .entries()
            .into_iter()
            .filter(|e| e.source != Source::File)
            .map(|e| e.key)
            .collect();
        assert!(
            from_file.is_empty(),
            "the example does not mention {from_file:?}"
        );
        c.tls_pair().unwrap();
    }

    /// `#key = value` lines made live (commented-out examples of a setting).
    fn uncomment_settings(text: &str) -> String {
        text.lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.chars().next().is_some_and(|c| c.is_ascii_lowercase()) => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
