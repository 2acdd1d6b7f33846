//! What `config check` prints: every effective setting with its source, as TOML (so the output
//! is itself a valid config file), secrets masked.
//!
//! Invariant: a value is printed only if its setting is not secret and the value does not look
//! like a secret (key material, a Tongbu token or API key); otherwise it is `"********"`.

use std::fmt::Write as _;
use std::path::Path;

use crate::Source;
use crate::file::ConfigFile;

/// What a masked value prints as.
pub const MASKED: &str = "********";

/// Prefixes of Tongbu's secrets: enrollment tokens and API keys (`hub::admin`'s
/// `TOKEN_PREFIX`, `API_KEY_PREFIX`).
const SECRET_PREFIXES: [&str; 2] = ["tbe_", "tbk_"];

/// Whether `text` looks like it holds a secret: PEM material or a Tongbu token or API key.
/// Paths to key files are not secrets and do not match.
pub fn looks_secret(text: &str) -> bool {
    text.contains("-----BEGIN")
        || text.contains("PRIVATE KEY")
        || text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|word| SECRET_PREFIXES.iter().any(|p| word.starts_with(p)))
}

/// `text`, or [`MASKED`] if it looks like a secret.
pub fn mask(text: &str) -> String {
    if looks_secret(text) {
        MASKED.to_owned()
    } else {
        text.to_owned()
    }
}

/// A setting's value as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Number(u64),
    List(Vec<String>),
    /// No layer sets it and it has no default; the note says what happens then.
    Unset(&'static str),
}

impl From<&Path> for Value {
    fn from(path: &Path) -> Value {
        Value::Text(path.display().to_string())
    }
}

/// One setting as `config check` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: &'static str,
    pub value: Value,
    pub source: Source,
    /// Secret by nature: never printed whatever it looks like.
    pub secret: bool,
}

impl Entry {
    pub fn new(key: &'static str, value: Value, source: &Source) -> Entry {
        Entry {
            key,
            value,
            source: source.clone(),
            secret: false,
        }
    }

    /// The `key = value` TOML line (or a comment for an unset setting), masked.
    fn line(&self) -> String {
        let shown = |s: &str| {
            if self.secret || looks_secret(s) {
                toml_string(MASKED)
            } else {
                toml_string(s)
            }
        };
        match &self.value {
            Value::Text(s) => format!("{} = {}", self.key, shown(s)),
            Value::Number(n) => format!("{} = {n}", self.key),
            Value::List(items) => {
                let items: Vec<String> = items.iter().map(|s| shown(s)).collect();
                format!("{} = [{}]", self.key, items.join(", "))
            }
            Value::Unset(note) => format!("# {} is not set: {note}", self.key),
        }
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The report: a header naming the file (or why there is none), then one line per setting
/// with its source as a comment.
pub fn render(
    program: &str,
    file: Option<&ConfigFile>,
    default_path: &Path,
    entries: &[Entry],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {program} config check: every setting is valid");
    match file {
        Some(f) => {
            let _ = writeln!(
                out,
                "# config file: {} ({})",
                f.path().display(),
                f.origin()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "# config file: none ({} does not exist; --config FILE names one)",
                default_path.display()
            );
        }
    }
    let lines: Vec<String> = entries.iter().map(Entry::line).collect();
    let width = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    for (line, entry) in lines.iter().zip(entries) {
        let pad = width - line.chars().count();
        let _ = writeln!(out, "{line}{:pad$}  # {}", "", entry.source);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn key_material_and_tokens_look_secret_paths_do_not() {
        assert!(looks_secret("-----BEGIN PRIVATE KEY-----\nMC4CAQ..."));
        assert!(looks_secret("tbe_abc.def"));
        assert!(looks_secret("Bearer tbk_0123"));
        assert!(!looks_secret("/etc/tongbu/tls/hub.key"));
        assert!(!looks_secret("/var/lib/tongbu/hub"));
        assert!(!looks_secret("warn,tongbu_hub=debug"));
        assert_eq!(mask("tbk_x"), MASKED);
        assert_eq!(mask("info"), "info");
    }

    #[test]
    fn the_report_is_toml_with_sources_and_masks_secrets() {
        let entries = [
            Entry::new("listen", Value::Text("0.0.0.0:8440".into()), &Source::File),
            Entry::new(
                "tls_key",
                Value::Text("-----BEGIN PRIVATE KEY-----\nAAAA".into()),
                &Source::Env("T_TLS_KEY".into()),
            ),
            Entry {
                secret: true,
                ..Entry::new("password", Value::Text("hunter22".into()), &Source::Default)
            },
            Entry::new(
                "batch_size",
                Value::Number(500),
                &Source::Flag("--batch-size".into()),
            ),
            Entry::new(
                "tls_san",
                Value::List(vec!["a.cn".into()]),
                &Source::Default,
            ),
            Entry::new("tls_cert", Value::Unset("self-signed"), &Source::Default),
        ];
        let out = render("t", None, Path::new("/etc/t.toml"), &entries);
        assert!(!out.contains("AAAA") && !out.contains("hunter22"), "{out}");
        assert!(out.contains("listen = \"0.0.0.0:8440\""), "{out}");
        assert!(out.contains("# env T_TLS_KEY"), "{out}");
        assert!(out.contains("# flag --batch-size"), "{out}");
        assert!(out.contains("# tls_cert is not set: self-signed"), "{out}");
        let parsed: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(parsed["tls_key"].as_str(), Some(MASKED));
        assert_eq!(parsed["password"].as_str(), Some(MASKED));
        assert_eq!(parsed["batch_size"].as_integer(), Some(500));
        assert_eq!(parsed.len(), 5);
    }
}
