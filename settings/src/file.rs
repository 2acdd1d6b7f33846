//! The config file: which one is read (`--config`, else the binary's variable, else the default
//! path if it exists), and its parsing into the binary's keys with errors that point at the
//! place: `path:line:column: key: what was expected`, and the line itself.
//!
//! Invariants: a file named by the flag or the variable must exist; only the default path may
//! be absent. A file is read whole before anything is parsed, and parsed strictly (the binaries'
//! key structs deny unknown fields). A relative path inside a file is relative to the file's
//! own folder, whatever the working directory.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::report::{looks_secret, mask};
use crate::{ConfigError, Env};

/// How the config file was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOrigin {
    /// `--config FILE`.
    Flag,
    /// The binary's variable (its name), e.g. `TONGBU_HUB_CONFIG`.
    Env(String),
    /// The packaged default path, which existed.
    DefaultPath,
}

impl fmt::Display for FileOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileOrigin::Flag => f.write_str("named by --config"),
            FileOrigin::Env(var) => write!(f, "named by {var}"),
            FileOrigin::DefaultPath => f.write_str("the default path"),
        }
    }
}

/// A config file's text, read whole.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    origin: FileOrigin,
    text: String,
}

/// Finds and reads the config file: `flag`, else the variable `env_var`, else `default_path`
/// if it exists (`None` if it does not). An empty variable counts as unset.
pub fn locate(
    flag: Option<&Path>,
    env: &dyn Env,
    env_var: &str,
    default_path: &Path,
) -> Result<Option<ConfigFile>, ConfigError> {
    let (path, origin) = match (flag, env.var(env_var).filter(|v| !v.is_empty())) {
        (Some(path), _) => (path.to_path_buf(), FileOrigin::Flag),
        (None, Some(path)) => (PathBuf::from(path), FileOrigin::Env(env_var.to_owned())),
        (None, None) => (default_path.to_path_buf(), FileOrigin::DefaultPath),
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && origin == FileOrigin::DefaultPath => {
            return Ok(None);
        }
        Err(error) => {
            return Err(ConfigError::Read {
                path,
                origin,
                error,
            });
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::Read {
        path: path.clone(),
        origin: origin.clone(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })?;
    Ok(Some(ConfigFile::from_text(path, origin, text)))
}

impl ConfigFile {
    /// A file's text as if read from `path` (tests, and files read some other way).
    pub fn from_text(
        path: impl Into<PathBuf>,
        origin: FileOrigin,
        text: impl Into<String>,
    ) -> Self {
        ConfigFile {
            path: path.into(),
            origin,
            text: text.into(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn origin(&self) -> &FileOrigin {
        &self.origin
    }

    /// The file parsed into the binary's keys (`T` should deny unknown fields).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| self.error_at(e.span(), e.message()))
    }

    /// An error at `span` of the file (a byte range, as `toml::Spanned` and toml's errors give
    /// it): the key is the one whose line holds the span, or the nearest above it.
    pub fn error_at(&self, span: Option<Range<usize>>, message: &str) -> ConfigError {
        let at = span.as_ref().map_or(0, |s| s.start.min(self.text.len()));
        let (line, column) = line_column(&self.text, at);
        let source_line = self.text.lines().nth(line - 1).unwrap_or("");
        ConfigError::File(Box::new(Located {
            path: self.path.clone(),
            line,
            column,
            key: span.and(key_at(&self.text, line)),
            message: mask(message),
            excerpt: (!looks_secret(source_line)).then(|| source_line.to_owned()),
        }))
    }

    /// `path` as written in the file, made relative to the file's folder if it is relative.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match self.path.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }
}

/// A place in the config file and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// The key the problem belongs to, when the file says.
    pub key: Option<String>,
    pub message: String,
    /// The file's line, unless it looks like it holds a secret.
    pub excerpt: Option<String>,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.path.display(), self.line, self.column)?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(excerpt) = &self.excerpt {
            let gutter = self.line.to_string().len();
            write!(
                f,
                "\n {:gutter$} |\n {} | {excerpt}\n {:gutter$} | {:>col$}",
                "",
                self.line,
                "",
                "^",
                col = self.column
            )?;
        }
        Ok(())
    }
}

/// 1-based line and character column of byte offset `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// The key whose `key = value` line is `line` (1-based) or the nearest above it (a value may
/// span lines); a `[table]` header names the table.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().take(line).collect();
    lines.iter().rev().find_map(|l| {
        let l = l.trim_start();
        if l.starts_with('#') {
            return None;
        }
        if let Some(header) = l.strip_prefix('[') {
            let name = header.trim_start_matches('[').split(']').next()?.trim();
            return Some(name.trim_matches('"').to_owned());
        }
        let (key, _) = l.split_once('=')?;
        let key = key.trim().trim_matches('"').trim_matches('\'');
        let bare = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        bare.then(|| key.to_owned())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde::Deserialize;

    use super::*;
    use crate::Bounded;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Keys {
        name: Option<String>,
        size: Option<Bounded<1, 10>>,
        names: Option<Vec<String>>,
    }

    fn file(text: &str) -> ConfigFile {
        ConfigFile::from_text("/etc/t/t.toml", FileOrigin::Flag, text)
    }

    fn located(e: ConfigError) -> Located {
        match e {
            ConfigError::File(l) => *l,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_good_file_parses_into_the_keys() {
        let keys: Keys = file("name = \"a\"\nsize = 3\nnames = [\"x\", \"y\"]\n")
            .parse()
            .unwrap();
        assert_eq!(keys.name.as_deref(), Some("a"));
        assert_eq!(keys.size.map(Bounded::get), Some(3));
        assert_eq!(keys.names.unwrap(), ["x", "y"]);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_place() {
        let err = located(
            file("name = \"a\"\n\n  nmae = \"b\"\n")
                .parse::<Keys>()
                .unwrap_err(),
        );
        assert_eq!((err.line, err.column), (3, 3));
        assert_eq!(err.key.as_deref(), Some("nmae"));
        assert!(
            err.message.contains("unknown field `nmae`"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("`name`"),
            "says what is expected: {}",
            err.message
        );
        let shown = ConfigError::File(Box::new(err)).to_string();
        assert!(
            shown.starts_with("/etc/t/t.toml:3:3: nmae: unknown field"),
            "{shown}"
        );
        assert!(shown.contains("3 |   nmae = \"b\""), "{shown}");
    }

    #[test]
    fn a_bad_value_is_named_with_its_place_and_what_was_expected() {
        let err = located(
            file("name = \"a\"\nsize = 11\n")
                .parse::<Keys>()
                .unwrap_err(),
        );
        assert_eq!(
            (err.line, err.column, err.key.as_deref()),
            (2, 8, Some("size"))
        );
        assert!(err.message.contains("from 1 to 10"), "{}", err.message);
        let err = located(file("size = \"big\"\n").parse::<Keys>().unwrap_err());
        assert!(
            err.message.contains("a whole number from 1 to 10"),
            "{}",
            err.message
        );
        let err = located(
            file("names = [\n  \"a\",\n  3,\n]\n")
                .parse::<Keys>()
                .unwrap_err(),
        );
        assert_eq!((err.line, err.key.as_deref()), (3, Some("names")));
        let err = located(file("[names]\nx = 1\n").parse::<Keys>().unwrap_err());
        assert_eq!(err.key.as_deref(), Some("names"));
    }

    #[test]
    fn bad_toml_is_located_too() {
        let err = located(file("name = \"a\nsize = 3\n").parse::<Keys>().unwrap_err());
        assert_eq!(err.line, 1);
        assert_eq!(err.key.as_deref(), Some("name"));
    }

    #[test]
    fn a_secret_on_the_bad_line_is_not_shown() {
        let err = located(file("name = 5 # tbk_s3cr3t\n").parse::<Keys>().unwrap_err());
        assert_eq!(err.excerpt, None);
        assert!(
            !ConfigError::File(Box::new(err))
                .to_string()
                .contains("s3cr3t")
        );
    }

    #[test]
    fn the_flag_then_the_variable_then_the_default_path_which_may_be_missing() {
        let dir = tempfile::tempdir().unwrap();
        let named = dir.path().join("named.toml");
        let by_env = dir.path().join("env.toml");
        let default = dir.path().join("default.toml");
        std::fs::write(&named, "name = \"flag\"").unwrap();
        std::fs::write(&by_env, "name = \"env\"").unwrap();
        let var = by_env.to_string_lossy().into_owned();
        let env = move |n: &str| (n == "T_CONFIG").then(|| var.clone());
        let no_env = |_: &str| None;

        let f = locate(Some(&named), &env, "T_CONFIG", &default)
            .unwrap()
            .unwrap();
        assert_eq!((f.path(), f.origin()), (named.as_path(), &FileOrigin::Flag));
        let f = locate(None, &env, "T_CONFIG", &default).unwrap().unwrap();
        assert_eq!(f.origin(), &FileOrigin::Env("T_CONFIG".into()));
        assert!(
            locate(None, &no_env, "T_CONFIG", &default)
                .unwrap()
                .is_none()
        );
        std::fs::write(&default, "").unwrap();
        let f = locate(None, &no_env, "T_CONFIG", &default)
            .unwrap()
            .unwrap();
        assert_eq!(f.origin(), &FileOrigin::DefaultPath);

        let missing = dir.path().join("missing.toml");
        let err = locate(Some(&missing), &no_env, "T_CONFIG", &default).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot read the config file {} (named by --config): ",
                missing.display()
            )),
            "{err}"
        );
        let var = missing.to_string_lossy().into_owned();
        let env = move |n: &str| (n == "T_CONFIG").then(|| var.clone());
        assert!(locate(None, &env, "T_CONFIG", &default).is_err());
    }

    #[test]
    fn relative_paths_in_a_file_are_relative_to_its_folder() {
        let f = file("");
        assert_eq!(f.resolve(Path::new("data")), Path::new("/etc/t/data"));
        assert_eq!(f.resolve(Path::new("/var/lib/t")), Path::new("/var/lib/t"));
    }
}
