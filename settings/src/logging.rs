//! Log output for both binaries: always on stderr (the journal under systemd), filtered by the
//! `log_level` setting, as human-readable text (the default) or one JSON object per line.

use std::fmt;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's
    /// fields side by side.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("expected text or json, got {other:?}")),
        }
    }
}

/// A log filter in `RUST_LOG` syntax: a level (`info`, `debug`, …) or directives such as
/// `warn,tongbu_hub=debug`; checked when it is read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct LogLevel(String);

impl LogLevel {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for LogLevel {
    fn default() -> LogLevel {
        LogLevel("info".to_owned())
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected a log level (off, error, warn, info, debug, trace) or filter directives such as \"warn,tongbu_hub=debug\"";
        // EnvFilter takes a bare word for a target to log at every level, so a misspelt level
        // would silently log nothing; a bare word must be a level here (`target=level` names a
        // target).
        if let Some(word) = s
            .split(',')
            .map(str::trim)
            .find(|d| !d.is_empty() && !d.contains('=') && !d.contains('[') && !is_level(d))
        {
            return Err(format!("{expected}: {word:?} is not a level"));
        }
        match EnvFilter::builder().parse(s) {
            Ok(_) => Ok(LogLevel(s.to_owned())),
            Err(e) => Err(format!("{expected}: {e}")),
        }
    }
}

impl TryFrom<String> for LogLevel {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

fn is_level(word: &str) -> bool {
    ["off", "error", "warn", "info", "debug", "trace"]
        .iter()
        .any(|level| word.eq_ignore_ascii_case(level))
}

/// Starts logging to stderr. Call once, before anything logs.
pub fn init_logging(
    format: LogFormat,
    level: &LogLevel,
) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
    let filter = EnvFilter::builder().parse(level.as_str())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn levels_and_directives_are_checked_when_read() {
        for good in [
            "info",
            "debug",
            "warn,tongbu_hub=debug",
            "tongbu_agent::sync=trace",
        ] {
            assert_eq!(good.parse::<LogLevel>().unwrap().as_str(), good);
        }
        for bad in ["loud", "infoo", "info,tongbu_hub=verbose", "=="] {
            let err = bad.parse::<LogLevel>().unwrap_err();
            assert!(err.starts_with("expected a log level"), "{bad}: {err}");
        }
        assert!("xml".parse::<LogFormat>().is_err());
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
    }
}
