//! The `.deb` packages: `cargo deb` builds both (release profile, as shipped), `dpkg-deb`
//! shows what they hold (files, conffiles, dependencies, maintainer scripts), then both are
//! installed and run in a clean Debian tree:
//!
//! - as root with `debootstrap` (CI): a minimal Debian 12 tree is bootstrapped once (kept in
//!   `target/deploy-debroot/`), copied, and the packages are installed in it for real with
//!   `chroot … dpkg -i`, so the maintainer scripts run (system users, data folders, the unit
//!   enabled and not started); the services then run in the chroot as their users with the
//!   packaged configs, and `dpkg -r` / `dpkg -P` must leave the data and the users;
//! - otherwise (or if bootstrapping fails for want of a mirror): the packages are extracted
//!   with `dpkg-deb -x` and run with the packaged configs, only the paths moved into the tree
//!   by `TONGBU_*` variables.
//!
//! Either way the hub must come up (READY line, `/healthz`), issue a token, and the packaged
//! agent must enroll with it and come up. Skipped with a notice where cargo-deb or dpkg-deb is
//! missing, outside CI only (`.ci/run` installs cargo-deb and debootstrap).

use std::path::{Path, PathBuf};
use std::process::Command;

use tongbu_procs::{Running, run_output};
use tongbu_tests::{DEADLINE, http, wait_for, workspace_dir};

/// Whether `cmd --version` runs.
fn have(cmd: &[&str]) -> bool {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn tools_present() -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let missing: Vec<&str> = [
        (
            have(&[&cargo, "deb"]),
            "cargo-deb (cargo install cargo-deb --locked)",
        ),
        (have(&["dpkg-deb"]), "dpkg-deb"),
    ]
    .into_iter()
    .filter_map(|(ok, what)| (!ok).then_some(what))
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "missing in CI: {missing:?} (.ci/run installs them)"
    );
    eprintln!("NOTICE: {missing:?} not available; skipping the .deb test");
    false
}

/// Runs `cargo deb -p package` and returns the package file it made.
fn build(package: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace_dir())
        .args(["deb", "--locked", "-p", package])
        .output()
        .expect("run cargo deb");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo deb -p {package} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("cargo deb prints the package path")
            .trim(),
    );
    assert!(path.is_file(), "{}", path.display());
    path
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dpkg-deb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One control-archive member (`dpkg-deb -I DEB FILE`).
fn control_file(deb: &Path, name: &str) -> String {
    let out = Command::new("dpkg-deb")
        .arg("-I")
        .arg(deb)
        .arg(name)
        .output()
        .unwrap();
    assert!(out.status.success(), "{} has no {name}", deb.display());
    String::from_utf8(out.stdout).unwrap()
}

/// Checks one package (`who` is `hub` or `agent`) and extracts it into `root`.
fn inspect_and_extract(deb: &Path, who: &str, root: &Path) {
    let pkg = format!("tongbu-{who}");
    let info = dpkg_deb(&["-I"], deb);
    assert!(info.contains(&format!(" Package: {pkg}\n")), "{info}");
    let depends = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("{pkg} has no Depends:\n{info}"));
    assert!(depends.contains("adduser"), "{pkg}: {depends}");
    assert!(depends.contains("libc6"), "{pkg}: {depends}");

    // Files: the binary, the unit, the config, the guide; nothing under /var (systemd and the
    // postinst make the data folder, so removing the package cannot take data with it).
    let listing = dpkg_deb(&["-c"], deb);
    let files: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let mode = parts.next()?;
            Some((mode, parts.last()?))
        })
        .collect();
    let mode_of = |path: &str| {
        files
            .iter()
            .find(|(_, p)| *p == path)
            .map(|(m, _)| *m)
            .unwrap_or_else(|| panic!("{pkg} lacks {path}:\n{listing}"))
    };
    assert_eq!(mode_of(&format!("./usr/bin/{pkg}")), "-rwxr-xr-x");
    assert_eq!(
        mode_of(&format!("./usr/lib/systemd/system/{pkg}.service")),
        "-rw-r--r--"
    );
    assert_eq!(mode_of(&format!("./etc/tongbu/{who}.toml")), "-rw-r--r--");
    mode_of(&format!("./usr/share/doc/{pkg}/OPERATIONS.md"));
    assert!(
        !files.iter().any(|(_, p)| p.starts_with("./var/")),
        "{listing}"
    );

    assert_eq!(
        control_file(deb, "conffiles").trim(),
        format!("/etc/tongbu/{who}.toml")
    );
    let postinst = control_file(deb, "postinst");
    assert!(postinst.contains(&format!(
        "adduser --system --group --home /var/lib/tongbu/{who}"
    )));
    assert!(postinst.contains(&format!("chown {pkg}:{pkg} /var/lib/tongbu/{who}")));
    assert!(
        postinst.contains(&format!("deb-systemd-helper enable {pkg}.service")),
        "enabled"
    );
    // Enabled but not started on a first install (configure and enroll first); an upgrade
    // restarts only a unit that was running.
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
    assert!(postinst.contains(&format!("deb-systemd-invoke try-restart {pkg}.service")));
    let prerm = control_file(deb, "prerm");
    assert!(
        prerm.contains(&format!("deb-systemd-invoke stop {pkg}.service")),
        "{prerm}"
    );
    let postrm = control_file(deb, "postrm");
    assert!(postrm.contains("purge"), "{postrm}");
    assert!(
        !postrm.contains("rm -r") && !postrm.contains("deluser"),
        "data and user stay: {postrm}"
    );
    for script in [&postinst, &prerm, &postrm] {
        let check = Command::new("sh")
            .args(["-n", "-c", script])
            .status()
            .unwrap();
        assert!(
            check.success(),
            "sh -n refuses a maintainer script of {pkg}"
        );
    }

    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(root)
        .status()
        .unwrap();
    assert!(status.success());
    // What is installed is what the repository holds.
    for (installed, source) in [
        (
            format!("usr/lib/systemd/system/{pkg}.service"),
            format!("deploy/systemd/{pkg}.service"),
        ),
        (
            format!("etc/tongbu/{who}.toml"),
            format!("deploy/config/{who}.toml"),
        ),
    ] {
        assert_eq!(
            std::fs::read(root.join(&installed)).unwrap(),
            std::fs::read(workspace_dir().join(&source)).unwrap(),
            "{installed} is {source}"
        );
    }
}

/// Where the packages were installed, and how to run their binaries there.
enum Tree {
    /// A debootstrapped Debian tree the packages were installed into with `dpkg -i`.
    Installed(PathBuf),
    /// A folder the packages were extracted into with `dpkg-deb -x`.
    Extracted(PathBuf),
}

impl Tree {
    fn root(&self) -> &Path {
        match self {
            Tree::Installed(root) | Tree::Extracted(root) => root,
        }
    }

    /// A command of the package `who` (`hub` or `agent`) with its packaged config, listening
    /// on a free port: in the chroot as the package's user, or from the extracted tree with
    /// the data folder moved into it (made 0700, as the postinst would).
    fn command(&self, who: &str) -> Command {
        let upper = who.to_uppercase();
        let mut cmd = match self {
            Tree::Installed(root) => {
                let mut cmd = Command::new("chroot");
                cmd.arg(format!("--userspec=tongbu-{who}:tongbu-{who}"))
                    .arg(root)
                    .arg(format!("/usr/bin/tongbu-{who}"))
                    .args(["--config", &format!("/etc/tongbu/{who}.toml")]);
                cmd
            }
            Tree::Extracted(root) => {
                let data = root.join(format!("var/lib/tongbu/{who}"));
                if !data.exists() {
                    use std::os::unix::fs::PermissionsExt as _;
                    std::fs::create_dir_all(&data).unwrap();
                    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
                        .unwrap();
                }
                let mut cmd = Command::new(root.join(format!("usr/bin/tongbu-{who}")));
                cmd.arg("--config")
                    .arg(root.join(format!("etc/tongbu/{who}.toml")))
                    .env(format!("TONGBU_{upper}_DATA_DIR"), &data);
                cmd
            }
        };
        cmd.env(format!("TONGBU_{upper}_LISTEN"), "127.0.0.1:0")
            .env_remove(format!("TONGBU_{upper}_CONFIG"))
            .env_remove("NOTIFY_SOCKET");
        cmd
    }

    /// Runs `args` with [`Tree::command`]; panics naming the stderr unless it succeeds.
    fn ok(&self, who: &str, args: &[&str]) -> String {
        let mut cmd = self.command(who);
        cmd.args(args);
        let out = run_output(cmd, None).unwrap();
        assert!(
            out.status.success(),
            "tongbu-{who} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A clean, minimal Debian 12 tree to install into, when this test runs as root with
/// `debootstrap`; bootstrapped once into `target/deploy-debroot/base` and copied for each run.
fn debian_tree(into: &Path) -> Option<PathBuf> {
    let root_user = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root_user || !Path::new("/usr/sbin/debootstrap").exists() {
        eprintln!("NOTICE: not root or no debootstrap: the packages are extracted, not installed");
        return None;
    }
    let cache = tongbu_tests::target_dir().join("deploy-debroot");
    let base = cache.join("base");
    let done = cache.join("base.complete");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&cache).unwrap();
        let out = Command::new("/usr/sbin/debootstrap")
            .args([
                "--variant=minbase",
                "--include=adduser,init-system-helpers",
                "bookworm",
            ])
            .arg(&base)
            .arg("http://deb.debian.org/debian")
            .output()
            .unwrap();
        if !out.status.success() {
            // A mirror that cannot be reached is the machine's problem, not the packages':
            // they are still checked from an extracted tree.
            eprintln!(
                "NOTICE: debootstrap failed; the packages are extracted, not installed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        std::fs::write(&done, b"").unwrap();
    }
    let root = into.join("root");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&base)
        .arg(&root)
        .status()
        .unwrap();
    assert!(copied.success());
    Some(root)
}

/// `chroot ROOT args…`, which must succeed; returns stdout and stderr.
fn chroot(root: &Path, args: &[&str]) -> String {
    let out = Command::new("chroot")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "chroot {args:?}:\n{text}");
    text
}

/// Installs both packages into the Debian tree `root` with dpkg, and checks what the
/// maintainer scripts did.
fn install(root: &Path, debs: &[&Path]) {
    let mut args = vec!["dpkg".to_owned(), "-i".to_owned()];
    for deb in debs {
        let name = deb.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(deb, root.join("tmp").join(&name)).unwrap();
        args.push(format!("/tmp/{name}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = chroot(root, &args);
    for who in ["hub", "agent"] {
        let user = format!("tongbu-{who}");
        let passwd = chroot(root, &["getent", "passwd", &user]);
        assert!(
            passwd
                .trim_end()
                .ends_with(&format!(":/var/lib/tongbu/{who}:/usr/sbin/nologin")),
            "{passwd}"
        );
        let uid: u32 = passwd.split(':').nth(2).unwrap().parse().unwrap();
        assert!(uid < 1000, "a system user: {passwd}");
        use std::os::unix::fs::MetadataExt as _;
        let data = std::fs::metadata(root.join(format!("var/lib/tongbu/{who}"))).unwrap();
        assert_eq!(
            (data.uid(), data.mode() & 0o7777),
            (uid, 0o700),
            "/var/lib/tongbu/{who}"
        );
        let wants = root.join(format!(
            "etc/systemd/system/multi-user.target.wants/{user}.service"
        ));
        assert!(wants.is_symlink(), "{user}.service is enabled:\n{log}");
    }
}

/// Removing and purging the hub keeps its data and its user; purging deletes its config.
fn remove_and_purge(root: &Path) {
    chroot(root, &["dpkg", "-r", "tongbu-hub"]);
    assert!(
        root.join("etc/tongbu/hub.toml").exists(),
        "remove keeps the config"
    );
    assert!(
        root.join("var/lib/tongbu/hub/hub.db").exists(),
        "remove keeps the data"
    );
    let purged = chroot(root, &["dpkg", "-P", "tongbu-hub"]);
    assert!(
        !root.join("etc/tongbu/hub.toml").exists(),
        "purge deletes the conffile"
    );
    assert!(
        root.join("etc/tongbu/agent.toml").exists(),
        "but not the agent's"
    );
    for kept in ["hub.db", "hub.key", "tls/cert.pem"] {
        assert!(
            root.join("var/lib/tongbu/hub").join(kept).exists(),
            "purge keeps {kept}: {purged}"
        );
    }
    chroot(root, &["getent", "passwd", "tongbu-hub"]);
    assert!(!root.join("usr/bin/tongbu-hub").exists());
}

#[test]
fn the_packages_hold_what_they_should_and_run_in_a_clean_debian_tree() {
    if !tools_present() {
        return;
    }
    let hub_deb = build("tongbu-hub");
    let agent_deb = build("tongbu-agent");
    let scratch = tempfile::Builder::new()
        .prefix("tongbu-root-")
        .tempdir()
        .unwrap();
    let extracted = scratch.path().join("extracted");
    inspect_and_extract(&hub_deb, "hub", &extracted);
    inspect_and_extract(&agent_deb, "agent", &extracted);
    let tree = match debian_tree(scratch.path()) {
        Some(root) => {
            install(&root, &[&hub_deb, &agent_deb]);
            Tree::Installed(root)
        }
        None => Tree::Extracted(extracted),
    };
    let logs = scratch.path();

    // The packaged configs are valid as shipped.
    let check = tree.ok("hub", &["config", "check"]);
    assert!(check.contains("TONGBU_HUB_LISTEN"), "{check}");
    tree.ok("agent", &["config", "check"]);

    // The hub comes up.
    let mut serve = tree.command("hub");
    serve.arg("serve");
    let hub = Running::spawn(serve, logs.join("hub.log"), "READY listen=", DEADLINE).unwrap();
    let healthz = http().get(format!("{}/healthz", hub.url)).send().unwrap();
    assert!(healthz.status().is_success(), "{}", hub.log_text());
    assert!(tree.root().join("var/lib/tongbu/hub/hub.db").exists());

    // An operator's first steps, then the packaged agent enrolls and comes up.
    tree.ok(
        "hub",
        &["county", "add", "--code", "430112", "--name", "望城区"],
    );
    let token = tree.ok("hub", &["token", "issue", "--county", "430112"]);
    let hub_url = format!("https://127.0.0.1:{}", hub.port().unwrap());
    tree.ok(
        "agent",
        &["enroll", "--hub", &hub_url, "--token", token.trim()],
    );
    let mut run = tree.command("agent");
    run.arg("run");
    let agent = Running::spawn(run, logs.join("agent.log"), "READY intake=", DEADLINE).unwrap();
    let healthz = http().get(format!("{}/healthz", agent.url)).send().unwrap();
    assert!(healthz.status().is_success(), "{}", agent.log_text());
    let agents = wait_for("the hub to list the packaged agent as active", || {
        let out = tree.ok("hub", &["agents"]);
        (out.contains("430112-") && out.contains("active")).then_some(out)
    });
    assert!(agents.is_ok(), "{agents:?}");
    assert!(agent.terminate().unwrap());
    assert!(hub.terminate().unwrap());

    if let Tree::Installed(root) = &tree {
        remove_and_purge(root);
    }
}
