//! `deploy/container/`: the compose file parses, names one hub and three agents, and every
//! build file, config, volume, port and health check it relies on agrees with the Dockerfiles
//! and the example configs in `deploy/config/`. No container engine runs here, so this is the
//! check "by inspection" made mechanical.

use std::path::Path;

use tongbu_tests::workspace_dir;
use yaml_rust2::{Yaml, YamlLoader};

fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace_dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn config(rel: &str) -> toml::Table {
    read(rel).parse().unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn str_of<'a>(y: &'a Yaml, key: &str) -> &'a str {
    y[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string: {y:?}"))
}

/// The instructions of a Dockerfile, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    out.push(current.split_whitespace().collect::<Vec<_>>().join(" "));
                }
                current.clear();
            }
        }
    }
    out
}

/// What one Dockerfile must hold for the binary `bin` (tongbu-hub or tongbu-agent).
struct Image {
    bin: &'static str,
    config: &'static str,
}

fn check_dockerfile(rel: &str, image: &Image) -> Vec<String> {
    let text = read(rel);
    let lines = instructions(&text);
    let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    let find = |prefix: &str| {
        lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect::<Vec<_>>()
    };
    let cfg = config(image.config);
    let data_dir = cfg["data_dir"].as_str().unwrap();
    let listen = cfg["listen"].as_str().unwrap();
    let port = listen.rsplit(':').next().unwrap();

    let froms = find("FROM ");
    assert_eq!(
        froms.len(),
        2,
        "{rel}: a builder and a runtime stage: {froms:?}"
    );
    assert!(
        froms[0].starts_with("FROM rust:bookworm AS "),
        "{rel}: {froms:?}"
    );
    assert!(
        froms[1].starts_with("FROM debian:bookworm-slim"),
        "{rel}: {froms:?}"
    );
    assert!(
        has(&format!(
            "RUN cargo build --release --locked -p {}",
            image.bin
        )),
        "{rel}: builds {} with --locked",
        image.bin
    );
    assert!(
        has(&format!(
            "COPY --from=build /src/target/release/{0} /usr/bin/{0}",
            image.bin
        )),
        "{rel}: copies the binary"
    );
    let copy_config = format!("COPY {} /etc/tongbu/", image.config);
    assert!(
        lines.iter().any(|l| l.starts_with(&copy_config)),
        "{rel}: installs {}",
        image.config
    );
    assert!(
        lines.iter().any(|l| l.contains("ca-certificates")),
        "{rel}: ca-certificates"
    );
    let user = find("USER ");
    assert_eq!(user, vec![format!("USER {}", image.bin)], "{rel}: non-root");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("-o {0} -g {0} {data_dir}", image.bin))),
        "{rel}: {data_dir} is made for {}",
        image.bin
    );
    assert_eq!(find("VOLUME "), vec![format!("VOLUME {data_dir}")], "{rel}");
    let health = find("HEALTHCHECK ");
    assert_eq!(health.len(), 1, "{rel}: one HEALTHCHECK");
    assert!(
        health[0].contains(&format!("http://127.0.0.1:{port}/healthz")),
        "{rel}: the health check asks the configured port {port}: {}",
        health[0]
    );
    let entry = find("ENTRYPOINT ");
    assert_eq!(
        entry,
        vec![format!(
            r#"ENTRYPOINT ["/usr/bin/{}", "--config", "/etc/tongbu/{}"]"#,
            image.bin,
            Path::new(image.config)
                .file_name()
                .unwrap()
                .to_string_lossy()
        )],
        "{rel}"
    );
    find("EXPOSE ")
}

#[test]
fn the_dockerfiles_agree_with_the_configs() {
    let hub = Image {
        bin: "tongbu-hub",
        config: "deploy/config/hub.toml",
    };
    let agent = Image {
        bin: "tongbu-agent",
        config: "deploy/config/agent.toml",
    };
    let hub_port = config(hub.config)["listen"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        check_dockerfile("deploy/container/Dockerfile.hub", &hub),
        vec![format!("EXPOSE {hub_port}")]
    );
    // The agent's intake is loopback-only: exposing it would promise what it refuses.
    assert!(check_dockerfile("deploy/container/Dockerfile.agent", &agent).is_empty());
    let ignore = read(".dockerignore");
    assert!(
        ignore.lines().any(|l| l == "target"),
        "the build context leaves target/ out"
    );
}

#[test]
fn the_compose_file_runs_one_hub_and_three_enrolled_agents() {
    let text = read("deploy/container/compose.yaml");
    let docs = YamlLoader::load_from_str(&text).expect("compose.yaml is YAML");
    let compose = &docs[0];
    let services = compose["services"].as_hash().expect("services");
    let names: Vec<&str> = services.keys().filter_map(Yaml::as_str).collect();
    assert_eq!(
        names,
        ["hub", "agent-430112", "agent-431281", "agent-430121"],
        "one hub, three agents"
    );
    let compose_dir = workspace_dir().join("deploy/container");
    let hub_cfg = config("deploy/config/hub.toml");
    let agent_cfg = config("deploy/config/agent.toml");
    let volumes = compose["volumes"].as_hash().expect("named volumes");

    for (name, service) in services {
        let name = name.as_str().unwrap();
        let build = &service["build"];
        let context = compose_dir.join(str_of(build, "context"));
        assert_eq!(
            context.canonicalize().unwrap(),
            workspace_dir().canonicalize().unwrap(),
            "{name}: builds from the repository root"
        );
        let dockerfile = context.join(str_of(build, "dockerfile"));
        assert!(
            dockerfile.is_file(),
            "{name}: {} exists",
            dockerfile.display()
        );
        let (cfg, kind) = if name == "hub" {
            (&hub_cfg, "hub")
        } else {
            (&agent_cfg, "agent")
        };
        assert!(
            dockerfile.ends_with(format!("Dockerfile.{kind}")),
            "{name}: {}",
            dockerfile.display()
        );
        assert_eq!(str_of(service, "image"), format!("tongbu-{kind}:latest"));

        // The data volume is mounted where the config keeps the data.
        let mounts: Vec<&str> = service["volumes"]
            .as_vec()
            .expect("volumes")
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        assert_eq!(mounts.len(), 1, "{name}: {mounts:?}");
        let (volume, target) = mounts[0].split_once(':').unwrap();
        assert_eq!(target, cfg["data_dir"].as_str().unwrap(), "{name}");
        assert!(
            volumes.contains_key(&Yaml::String(volume.to_owned())),
            "{name}: volume {volume} is declared"
        );

        if kind == "agent" {
            assert_eq!(
                str_of(&service["depends_on"]["hub"], "condition"),
                "service_healthy",
                "{name} waits for a healthy hub"
            );
            assert!(
                service["ports"].is_badvalue(),
                "{name}: the intake is not published"
            );
            let county = name.trim_start_matches("agent-");
            assert!(
                text.contains(&format!("county add --code {county} ")),
                "the one-time steps add county {county}"
            );
        }
    }

    // The hub publishes its configured port, and agents reach it by the name its certificate
    // is given.
    let hub = &compose["services"]["hub"];
    let port = hub_cfg["listen"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    let ports: Vec<&str> = hub["ports"]
        .as_vec()
        .expect("hub ports")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(ports, [format!("{port}:{port}")]);
    assert_eq!(str_of(hub, "hostname"), "hub");
    assert_eq!(str_of(&hub["environment"], "TONGBU_HUB_TLS_SAN"), "hub");
    assert!(text.contains(&format!("--hub https://hub:{port} ")));
}
