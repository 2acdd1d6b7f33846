//! Settings for the Tongbu binaries, in layers. Each setting's effective value comes from the
//! first layer that has it: a command-line flag, then an environment variable
//! (`<PREFIX><KEY>`, e.g. `TONGBU_HUB_LISTEN`), then the TOML config file, then the built-in
//! default; the value remembers its layer ([`Source`]) so `config check` can say where it came
//! from. The binaries describe their own keys (`hub/src/config.rs`, `agent/src/config.rs`);
//! this crate knows nothing about the hub or the agent.
//!
//! Invariants: nothing here reads the process environment except [`ProcessEnv`], which the
//! binaries pass in (tests pass a closure), so layering is tested without touching it. A bad
//! value in any layer is an error naming where it came from — file path, line, column and key;
//! the variable; or the flag — never a silent fall back to a lower layer. An empty variable
//! counts as unset. Values that look like secrets ([`looks_secret`]) are masked in reports and
//! in error messages alike.

mod file;
mod logging;
mod report;
mod values;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use file::{ConfigFile, FileOrigin, Located, locate};
pub use logging::{LogFormat, LogLevel, init_logging};
pub use report::{Entry, Value, looks_secret, mask, render};
pub use values::Bounded;

/// An environment made of fixed pairs, for tests of the layering (which never touch the
/// process's own environment).
pub fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name: &str| map.get(name).cloned()
}

/// Where an effective setting came from; the later variants win over the earlier ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The config file.
    File,
    /// An environment variable (its name).
    Env(String),
    /// A command-line flag (its spelling, e.g. `--listen`).
    Flag(String),
}

impl Source {
    pub fn is_flag(&self) -> bool {
        matches!(self, Source::Flag(_))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File => f.write_str("file"),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// An effective value and the layer it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Setting<T> {
    pub fn new(value: T, source: Source) -> Setting<T> {
        Setting { value, source }
    }
}

/// The environment, as the loaders see it.
pub trait Env {
    /// The variable's value, if it is set.
    fn var(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// The process environment: what the binaries pass to their loaders.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl ProcessEnv {
    /// The names of every variable set (for [`unknown_vars`]).
    pub fn names(&self) -> Vec<String> {
        std::env::vars_os()
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect()
    }
}

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        // A value that is not UTF-8 reaches the parser as it decodes, so it is refused with the
        // variable's name rather than ignored.
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    }
}

/// A setting that could not be read, or settings that do not fit together.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read (an explicitly named file that is missing included).
    #[error("cannot read the config file {} ({origin}): {error}", path.display())]
    Read {
        path: PathBuf,
        origin: FileOrigin,
        error: std::io::Error,
    },
    /// A key or a value in the config file is wrong.
    #[error("{0}")]
    File(Box<Located>),
    /// An environment variable's value is wrong.
    #[error("environment variable {var}={value}: {message}")]
    Env {
        var: String,
        /// Quoted, or masked if it looks like a secret.
        value: String,
        message: String,
    },
    /// Settings that are each valid but not together, or a value the binary refuses after
    /// parsing it (the message names the settings and their sources).
    #[error("{0}")]
    Invalid(String),
}

/// The layers of one binary's settings: its environment prefix and the environment.
pub struct Layers<'a> {
    prefix: &'static str,
    env: &'a dyn Env,
}

impl<'a> Layers<'a> {
    /// `prefix` is the binary's variable prefix, e.g. `TONGBU_HUB_`.
    pub fn new(prefix: &'static str, env: &'a dyn Env) -> Layers<'a> {
        Layers { prefix, env }
    }

    /// The environment variable for `key`: the prefix and the key upper-cased.
    pub fn env_var(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key.to_ascii_uppercase())
    }

    /// The flag for `key`: `--` and the key with dashes.
    pub fn flag_name(key: &str) -> String {
        format!("--{}", key.replace('_', "-"))
    }

    /// flag > env > file > default.
    pub fn pick<T>(
        &self,
        key: &str,
        flag: Option<T>,
        file: Option<T>,
        default: T,
    ) -> Result<Setting<T>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.pick_aliased(key, &[], flag, file, default)
    }

    /// [`Layers::pick`], where older variable names (tried after the standard one, e.g.
    /// `RUST_LOG`) still count as the environment layer.
    pub fn pick_aliased<T>(
        &self,
        key: &str,
        aliases: &[&str],
        flag: Option<T>,
        file: Option<T>,
        default: T,
    ) -> Result<Setting<T>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        Ok(self
            .find(key, aliases, flag, file)?
            .unwrap_or_else(|| Setting::new(default, Source::Default)))
    }

    /// A setting without a default: `None` when no layer sets it.
    pub fn pick_optional<T>(
        &self,
        key: &str,
        flag: Option<T>,
        file: Option<T>,
    ) -> Result<Setting<Option<T>>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        Ok(match self.find(key, &[], flag, file)? {
            Some(found) => Setting::new(Some(found.value), found.source),
            None => Setting::new(None, Source::Default),
        })
    }

    /// A list: repeated flags, a comma-separated variable, a TOML array; empty by default. A
    /// layer that names no items does not count (an empty variable is unset).
    pub fn pick_list(
        &self,
        key: &str,
        flag: Vec<String>,
        file: Option<Vec<String>>,
    ) -> Setting<Vec<String>> {
        if !flag.is_empty() {
            return Setting::new(flag, Source::Flag(Self::flag_name(key)));
        }
        let var = self.env_var(key);
        if let Some(text) = self.env.var(&var).filter(|v| !v.trim().is_empty()) {
            let items = text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            return Setting::new(items, Source::Env(var));
        }
        match file {
            Some(items) => Setting::new(items, Source::File),
            None => Setting::new(Vec::new(), Source::Default),
        }
    }

    /// The value of the first layer that has one.
    fn find<T>(
        &self,
        key: &str,
        aliases: &[&str],
        flag: Option<T>,
        file: Option<T>,
    ) -> Result<Option<Setting<T>>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        if let Some(value) = flag {
            return Ok(Some(Setting::new(
                value,
                Source::Flag(Self::flag_name(key)),
            )));
        }
        if let Some(found) = self.in_env(key, aliases)? {
            return Ok(Some(found));
        }
        Ok(file.map(|value| Setting::new(value, Source::File)))
    }

    fn in_env<T>(&self, key: &str, aliases: &[&str]) -> Result<Option<Setting<T>>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let standard = self.env_var(key);
        let names = std::iter::once(standard.as_str()).chain(aliases.iter().copied());
        for var in names {
            let Some(text) = self.env.var(var).filter(|v| !v.is_empty()) else {
                continue;
            };
            return match text.parse::<T>() {
                Ok(value) => Ok(Some(Setting::new(value, Source::Env(var.to_owned())))),
                Err(e) => Err(ConfigError::Env {
                    var: var.to_owned(),
                    value: mask(&format!("{text:?}")),
                    message: mask(&e.to_string()),
                }),
            };
        }
        Ok(None)
    }
}

/// The variables among `names` that start with `prefix` but name no setting (`keys`) and are
/// not the config file's variable (`<prefix>CONFIG`): most likely misspelt, so `config check`
/// warns about them. Other commands cannot tell them from variables of other tools.
pub fn unknown_vars(
    prefix: &str,
    keys: &[&str],
    names: impl IntoIterator<Item = String>,
) -> Vec<String> {
    let mut unknown: Vec<String> = names
        .into_iter()
        .filter(|name| {
            name.strip_prefix(prefix).is_some_and(|rest| {
                rest != "CONFIG" && !keys.iter().any(|k| k.eq_ignore_ascii_case(rest))
            })
        })
        .collect();
    unknown.sort();
    unknown
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    #[test]
    fn the_first_layer_that_has_a_value_wins() {
        let e = env(&[("T_PORT", "2")]);
        let layers = Layers::new("T_", &e);
        let pick = |flag, file| layers.pick("port", flag, file, 4_u16).unwrap();
        assert_eq!(
            pick(Some(1), Some(3)),
            Setting::new(1, Source::Flag("--port".into()))
        );
        assert_eq!(
            pick(None, Some(3)),
            Setting::new(2, Source::Env("T_PORT".into()))
        );
        let none = env(&[]);
        let layers = Layers::new("T_", &none);
        assert_eq!(
            layers.pick("port", None, Some(3_u16), 4).unwrap(),
            Setting::new(3, Source::File)
        );
        assert_eq!(
            layers.pick("port", None, None, 4_u16).unwrap(),
            Setting::new(4, Source::Default)
        );
    }

    #[test]
    fn an_empty_variable_is_unset_and_a_bad_one_is_an_error_naming_it() {
        let e = env(&[("T_PORT", ""), ("T_OTHER_PORT", "eighty")]);
        let layers = Layers::new("T_", &e);
        assert_eq!(
            layers.pick("port", None, Some(3_u16), 4).unwrap().source,
            Source::File
        );
        let err = layers
            .pick("other_port", None, Some(3_u16), 4)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("environment variable T_OTHER_PORT=\"eighty\": "),
            "{err}"
        );
    }

    #[test]
    fn older_variable_names_count_after_the_standard_one() {
        let both = env(&[("T_LOG_LEVEL", "debug"), ("RUST_LOG", "warn")]);
        let layers = Layers::new("T_", &both);
        let level: Setting<String> = layers
            .pick_aliased("log_level", &["RUST_LOG"], None, None, "info".to_owned())
            .unwrap();
        assert_eq!(
            level,
            Setting::new("debug".into(), Source::Env("T_LOG_LEVEL".into()))
        );
        let old = env(&[("RUST_LOG", "warn")]);
        let layers = Layers::new("T_", &old);
        let level: Setting<String> = layers
            .pick_aliased(
                "log_level",
                &["RUST_LOG"],
                None,
                Some("error".into()),
                "info".into(),
            )
            .unwrap();
        assert_eq!(
            level,
            Setting::new("warn".into(), Source::Env("RUST_LOG".into()))
        );
    }

    #[test]
    fn lists_and_optional_settings_layer_too() {
        let e = env(&[("T_NAMES", " a.example.cn, 10.0.0.8 ,")]);
        let layers = Layers::new("T_", &e);
        let names = layers.pick_list("names", Vec::new(), Some(vec!["file".into()]));
        assert_eq!(names.value, ["a.example.cn", "10.0.0.8"]);
        assert_eq!(names.source, Source::Env("T_NAMES".into()));
        let names = layers.pick_list("names", vec!["flag".into()], None);
        assert_eq!(names.source, Source::Flag("--names".into()));
        let none = layers.pick_list("others", Vec::new(), None);
        assert_eq!(none, Setting::new(Vec::new(), Source::Default));
        let cert = layers
            .pick_optional::<PathBuf>("tls_cert", None, None)
            .unwrap();
        assert_eq!(cert, Setting::new(None, Source::Default));
    }

    #[test]
    fn misspelt_variables_are_found() {
        let names = [
            "T_LISTN",
            "T_LISTEN",
            "T_CONFIG",
            "OTHER_LISTN",
            "T_DATA_DIR",
        ];
        let unknown = unknown_vars("T_", &["listen", "data_dir"], names.map(str::to_owned));
        assert_eq!(unknown, ["T_LISTN"]);
    }

    #[test]
    fn a_secret_in_a_bad_variable_is_not_repeated_in_the_error() {
        let e = env(&[("T_PORT", "tbk_s3cr3t")]);
        let layers = Layers::new("T_", &e);
        let err = layers
            .pick("port", None, None, 4_u16)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(err.contains("T_PORT"), "{err}");
    }
}
