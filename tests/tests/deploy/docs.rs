//! Every `tongbu-hub …` / `tongbu-agent …` command the operator documents (the guide
//! `docs/OPERATIONS.md`, `README.md`, `deploy/README.md`, and the comments of the units and the
//! compose file) names a subcommand that exists and only flags it has, as the real binaries'
//! `--help` says. In Markdown only code (blocks and `spans`) is read; in the other files only
//! comment lines indented as examples (`#   command`, two spaces or more).

use std::collections::BTreeSet;
use std::process::Command;

use tongbu_tests::{bins, workspace_dir};

/// Global flags that take a value and may stand before the subcommand.
const GLOBAL_WITH_VALUE: &[&str] = &["--config", "--data-dir", "--log-format", "--log-level"];

/// The code in a Markdown text: fenced blocks line by line, and inline `spans`.
fn markdown_code(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            out.push(line.to_owned());
        } else {
            out.extend(line.split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    out
}

/// The example lines in a file's comments: `#` followed by two spaces or more.
fn comment_examples(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix('#'))
        .filter(|rest| rest.starts_with("  "))
        .map(str::to_owned)
        .collect()
}

/// Lines ending in `\` joined with the next, as the shell reads them.
fn join_continued(lines: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in lines {
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(&line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A documented invocation: the binary and the words after it, up to the end of the command.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Invocation {
    bin: String,
    words: Vec<String>,
}

/// Every invocation in one line of code. An occurrence of the binary's name counts only as a
/// command word: not as a path, a user (`sudo -u tongbu-hub`, `-o`, `-g`, `root:tongbu-hub`)
/// or a unit name, and only when a subcommand word follows.
fn invocations(line: &str) -> Vec<Invocation> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let mut out = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let token = token.trim_start_matches("$(").trim_start_matches('(');
        let bin = match token {
            "tongbu-hub" | "tongbu-agent" => token,
            _ => continue,
        };
        if i > 0 && matches!(tokens[i - 1], "-u" | "-o" | "-g" | "-t" | "--user") {
            continue;
        }
        let mut words = Vec::new();
        for word in &tokens[i + 1..] {
            if word.starts_with('#')
                || matches!(*word, "|" | "&&" | ";" | "||" | ">" | "2>&1")
                || word.starts_with(')')
            {
                break;
            }
            let end = word.ends_with(')') || word.ends_with(';');
            words.push(word.trim_end_matches([')', ';', ',']).to_owned());
            if end {
                break;
            }
        }
        out.push(Invocation {
            bin: bin.to_owned(),
            words,
        });
    }
    out
}

fn help(bin: &str, path: &[&str]) -> Option<String> {
    let exe = if bin == "tongbu-hub" {
        &bins().hub
    } else {
        &bins().agent
    };
    let out = Command::new(exe).args(path).arg("--help").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_word(w: &str) -> bool {
    w.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
}

/// Checks one invocation; `None` when the text is no command (no subcommand word follows).
fn check(inv: &Invocation) -> Option<Result<(), String>> {
    let mut rest = inv.words.iter().map(String::as_str).peekable();
    // Global flags before the subcommand.
    let mut globals = Vec::new();
    while let Some(w) = rest.peek() {
        if GLOBAL_WITH_VALUE.contains(w) {
            globals.push(rest.next()?);
            rest.next();
        } else {
            break;
        }
    }
    let first = *rest.peek()?;
    if !is_word(first) {
        return None;
    }
    let mut path = vec![rest.next()?];
    let Some(mut text) = help(&inv.bin, &path) else {
        return Some(Err(format!("{} has no subcommand {first:?}", inv.bin)));
    };
    if text.contains("\nCommands:") {
        let Some(second) = rest.next().filter(|w| is_word(w)) else {
            return Some(Err(format!("{} {first} needs a subcommand", inv.bin)));
        };
        path.push(second);
        match help(&inv.bin, &path) {
            Some(t) => text = t,
            None => {
                return Some(Err(format!(
                    "{} {} does not exist",
                    inv.bin,
                    path.join(" ")
                )));
            }
        }
    }
    for flag in rest.chain(globals).filter(|w| w.starts_with("--")) {
        let name = flag.split('=').next().unwrap_or(flag);
        let listed = text
            .lines()
            .any(|l| l.split([' ', ',', '=']).any(|t| t == name));
        if !listed {
            return Some(Err(format!(
                "{} {} has no flag {name}",
                inv.bin,
                path.join(" ")
            )));
        }
    }
    Some(Ok(()))
}

#[test]
fn every_documented_command_exists() {
    let mut sources: Vec<(String, Vec<String>)> = Vec::new();
    for md in ["docs/OPERATIONS.md", "README.md", "deploy/README.md"] {
        let text = std::fs::read_to_string(workspace_dir().join(md)).unwrap();
        sources.push((md.to_owned(), join_continued(markdown_code(&text))));
    }
    for plain in [
        "deploy/container/compose.yaml",
        "deploy/systemd/tongbu-hub.service",
        "deploy/systemd/tongbu-agent.service",
    ] {
        let text = std::fs::read_to_string(workspace_dir().join(plain)).unwrap();
        sources.push((plain.to_owned(), join_continued(comment_examples(&text))));
    }

    let mut checked = BTreeSet::new();
    let mut problems = Vec::new();
    for (file, lines) in &sources {
        for line in lines {
            for inv in invocations(line) {
                match check(&inv) {
                    Some(Ok(())) => {
                        checked.insert(format!("{} {}", inv.bin, inv.words.join(" ")));
                    }
                    Some(Err(problem)) => {
                        problems.push(format!("{file}: `{}`: {problem}", line.trim()))
                    }
                    None => {}
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The guide really was read: its main commands are among those checked.
    for must in [
        "tongbu-hub token issue",
        "tongbu-agent enroll",
        "tongbu-hub audit verify",
        "tongbu-agent rotate-key",
        "tongbu-agent set-hub",
        "tongbu-hub --config /etc/tongbu/hub.toml config check",
    ] {
        assert!(
            checked.iter().any(|c| c.starts_with(must)),
            "{must} was not found among {checked:#?}"
        );
    }
}

#[test]
fn the_checker_refuses_what_does_not_exist() {
    let bad = [
        "tongbu-hub token revoke --county 430112",
        "tongbu-agent enrol --hub https://h:8440",
        "tongbu-hub county add --code 430112 --title x",
        "tongbu-hub token",
    ];
    for line in bad {
        let invs = invocations(line);
        assert_eq!(invs.len(), 1, "{line}");
        assert!(matches!(check(&invs[0]), Some(Err(_))), "accepted: {line}");
    }
    // Users, paths and unit names are not commands.
    for line in [
        "sudo -u tongbu-hub tongbu-hub agents",
        "journalctl -u tongbu-hub -n 50",
        "chown root:tongbu-hub /etc/tongbu/hub.key",
        "systemctl start tongbu-hub",
    ] {
        let checked: Vec<_> = invocations(line).iter().filter_map(check).collect();
        assert!(checked.iter().all(Result::is_ok), "{line}: {checked:?}");
    }
}
