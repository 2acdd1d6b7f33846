//! HTTPS between agent and hub, with the real binaries: the hub serves TLS and (to loopback
//! peers) plain HTTP on one port; the agent pins the hub's certificate from its enrollment token
//! (or `--cert-sha256`), or checks it against a CA (`--ca`), and refuses anything else before a
//! single request byte — the token included — is sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use tongbu_tests::{Agent, Hub, assert_same_chain, records, wait_for};

const COUNTY: &str = "430112";

fn hub_with_county(serve_args: &[&str]) -> Hub {
    let hub = Hub::start_with(serve_args).unwrap();
    hub.add_county(COUNTY, "望城区");
    hub
}

/// Notes the id of an agent just enrolled by hand.
fn remember_id(agent: &mut Agent) {
    agent.agent_id = agent.status().unwrap()["agent_id"]
        .as_str()
        .unwrap()
        .to_owned();
}

/// The token without its certificate pin (what an older hub would have printed).
fn secret_only(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(secret, _)| secret)
}

#[test]
fn an_agent_enrolled_over_https_syncs_and_keeps_syncing_after_the_hub_restarts() {
    let mut hub = hub_with_county(&[]);
    let token = hub.issue_token(COUNTY);
    let (_, pin) = token.rsplit_once('.').expect("the token carries a pin");
    assert_eq!(pin.len(), 43, "{token}");

    let mut agent = Agent::new().unwrap();
    let out = agent
        .enroll(&hub.https_url(), &token)
        .expect_ok("enroll over https");
    let fingerprint = hub.cert_sha256();
    assert_eq!(fingerprint.len(), 64);
    assert!(
        out.stderr
            .contains(&format!("hub TLS certificate: pinned sha256:{fingerprint}")),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("NOT ENCRYPTED"), "{}", out.stderr);
    let status = agent.status().unwrap();
    assert_eq!(status["hub_url"], hub.https_url());
    assert_eq!(status["hub_tls"], format!("pinned sha256:{fingerprint}"));
    agent.agent_id = status["agent_id"].as_str().unwrap().to_owned();

    agent.submit(&records(COUNTY, 5, 100)).expect_ok("submit");
    agent.start().unwrap();
    assert_eq!(agent.wait_synced().unwrap(), 100);
    assert_same_chain(&hub, &agent);
    assert!(!agent.log().contains("NOT ENCRYPTED"), "{}", agent.log());

    // Same data directory, same certificate: the agent carries on after the restart.
    hub.restart().unwrap();
    agent.submit(&records(COUNTY, 6, 10)).expect_ok("submit");
    assert_eq!(agent.wait_synced().unwrap(), 110);
    assert_same_chain(&hub, &agent);
    assert_eq!(hub.cert_sha256(), fingerprint);
    let row = hub.agent_row(&agent.agent_id).unwrap().unwrap();
    assert_eq!(row["acked_seq"], 110);
}

#[test]
fn the_pin_holds_whatever_name_the_hub_is_reached_by() {
    let hub = hub_with_county(&[]);
    let port = hub.https_url().rsplit(':').next().unwrap().to_owned();
    let mut agent = Agent::new().unwrap();
    agent
        .enroll(
            &format!("https://localhost:{port}"),
            &hub.issue_token(COUNTY),
        )
        .expect_ok("enroll via localhost");
    remember_id(&mut agent);
    agent.submit(&records(COUNTY, 7, 20)).expect_ok("submit");
    agent
        .cli(&["sync", "--once"])
        .expect_ok("sync over https://localhost");
    assert_same_chain(&hub, &agent);
}

#[test]
fn a_token_of_another_hub_is_refused_before_it_is_sent() {
    let hub_a = hub_with_county(&[]);
    let hub_b = hub_with_county(&[]);
    let (a_pin, b_pin) = (hub_a.cert_sha256(), hub_b.cert_sha256());
    assert_ne!(a_pin, b_pin, "two hubs made the same certificate");
    let token_a = hub_a.issue_token(COUNTY);

    // Hub B answers where the agent was told hub A is: it is refused in the TLS handshake.
    let agent = Agent::new().unwrap();
    let out = agent.enroll(&hub_b.https_url(), &token_a);
    assert!(!out.ok, "enrolled with the wrong hub: {}", out.stdout);
    assert!(
        out.stderr.contains("certificate_mismatch"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("pins sha256:{a_pin}"))
            && out
                .stderr
                .contains(&format!("presented TLS certificate sha256:{b_pin}")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("nothing was sent"), "{}", out.stderr);
    assert!(agent.status().unwrap()["agent_id"].is_null());
    assert!(hub_b.agents().unwrap().is_empty());

    // The token never left the agent: it still enrolls with the hub that issued it.
    agent
        .enroll(&hub_a.https_url(), &token_a)
        .expect_ok("the unspent token enrolls with its own hub");
    assert_eq!(hub_a.agents().unwrap().len(), 1);
    // And hub B's own tokens work for hub B.
    Agent::new()
        .unwrap()
        .enroll(&hub_b.https_url(), &hub_b.issue_token(COUNTY))
        .expect_ok("enroll with hub B");
}

#[test]
fn https_needs_a_pin_and_cert_sha256_gives_one() {
    let hub = hub_with_county(&[]);
    let token = hub.issue_token(COUNTY);
    let bare = secret_only(&token);
    let agent = Agent::new().unwrap();

    let out = agent.enroll(&hub.https_url(), bare);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("an https hub needs a pinned certificate"),
        "{}",
        out.stderr
    );
    // Nothing was sent: the hub has not seen the token, so the full one still works below.
    assert!(hub.agents().unwrap().is_empty());

    // A wrong --cert-sha256 overrides the token's (right) pin and is refused…
    let wrong = "ab".repeat(32);
    let out = agent.enroll_with(&hub.https_url(), &token, &["--cert-sha256", &wrong]);
    assert!(
        !out.ok && out.stderr.contains("certificate_mismatch"),
        "{}",
        out.stderr
    );
    // …the right one (as `tls show` prints it, in any case) is trusted.
    let pin = hub.cert_sha256().to_uppercase();
    agent
        .enroll_with(&hub.https_url(), &token, &["--cert-sha256", &pin])
        .expect_ok("enroll with --cert-sha256");
    assert_eq!(
        agent.status().unwrap()["hub_tls"],
        format!("pinned sha256:{}", pin.to_lowercase())
    );
}

#[test]
fn plain_http_is_for_this_machine_unless_explicitly_allowed() {
    let hub = hub_with_county(&[]);
    let token = hub.issue_token(COUNTY);

    // Plain HTTP to another machine is refused before anything is sent (no lookup, no
    // connection: the host does not exist).
    let agent = Agent::new().unwrap();
    let out = agent.enroll("http://hub.invalid:8440", &token);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("refusing plain HTTP to hub.invalid"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--allow-plain-http"), "{}", out.stderr);

    // On this machine it works, with a warning (the v1 contract's loopback enrollment).
    let out = agent
        .enroll(&hub.url(), &token)
        .expect_ok("enroll over loopback http");
    assert!(out.stderr.contains("NOT ENCRYPTED"), "{}", out.stderr);
    assert_eq!(agent.status().unwrap()["hub_tls"], "plain");

    // Certificate options make no sense over plain HTTP.
    let out = Agent::new().unwrap().enroll_with(
        &hub.url(),
        &hub.issue_token(COUNTY),
        &["--cert-sha256", &hub.cert_sha256()],
    );
    assert!(!out.ok && out.stderr.contains("--cert-sha256 applies to https://"));
}

#[test]
fn plain_http_off_refuses_plain_requests_while_https_works() {
    let hub = hub_with_county(&["--plain-http", "off"]);
    let proc_url = hub.proc.as_ref().unwrap().url.clone();
    assert!(
        proc_url.starts_with("https://127.0.0.1:"),
        "READY {proc_url}"
    );

    let plain = tongbu_tests::http()
        .get(format!("{}/healthz", hub.url()))
        .send()
        .unwrap();
    assert_eq!(plain.status().as_u16(), 400);
    let body: serde_json::Value = plain.json().unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only HTTPS"),
        "{body}"
    );

    let https = tongbu_tests::https(&std::fs::read(hub.cert_path()).unwrap());
    let health = https
        .get(format!("{}/healthz", hub.https_url()))
        .send()
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let agents = https
        .get(format!("{}/api/v1/agents", hub.https_url()))
        .bearer_auth(&hub.api_key)
        .send()
        .unwrap();
    assert_eq!(agents.status().as_u16(), 200);

    // An agent told the plain URL is turned away by the hub; over https it enrolls and syncs.
    let token = hub.issue_token(COUNTY);
    let mut agent = Agent::new().unwrap();
    let out = agent.enroll(&hub.url(), &token);
    assert!(
        !out.ok && out.stderr.contains("only HTTPS"),
        "{}",
        out.stderr
    );
    agent
        .enroll(&hub.https_url(), &token)
        .expect_ok("enroll over https");
    remember_id(&mut agent);
    agent.submit(&records(COUNTY, 8, 30)).expect_ok("submit");
    agent.cli(&["sync", "--once"]).expect_ok("sync");
    assert_same_chain(&hub, &agent);
}

/// A CA and a server certificate it issued for `names`, written into `dir`; returns the paths
/// of (CA certificate, server certificate, server key).
fn ca_and_leaf(dir: &Path, tag: &str, names: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("Tongbu test CA {tag}"));
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut leaf = rcgen::CertificateParams::new(names).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, format!("hub {tag}"));
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
    let paths = (
        dir.join(format!("{tag}-ca.pem")),
        dir.join(format!("{tag}-hub.pem")),
        dir.join(format!("{tag}-hub.key")),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    // The chain the hub presents: its certificate, then the CA's.
    std::fs::write(&paths.1, leaf_cert.pem() + &ca_cert.pem()).unwrap();
    std::fs::write(&paths.2, leaf_key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

#[test]
fn a_hub_with_a_ca_issued_certificate_is_trusted_through_that_ca_only() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_and_leaf(certs.path(), "good", &["localhost"]);
    let (other_ca, _, _) = ca_and_leaf(certs.path(), "other", &["localhost"]);
    let arg = |p: &Path| p.to_str().unwrap().to_owned();
    let hub = hub_with_county(&["--tls-cert", &arg(&cert), "--tls-key", &arg(&key)]);
    let port = hub.https_url().rsplit(':').next().unwrap().to_owned();
    let by_name = format!("https://localhost:{port}");
    let token = hub.issue_token(COUNTY);

    // Another CA's word is not enough; nothing is sent.
    let mut agent = Agent::new().unwrap();
    let out = agent.enroll_with(&by_name, &token, &["--ca", &arg(&other_ca)]);
    assert!(
        !out.ok && out.stderr.contains("untrusted_certificate"),
        "{}",
        out.stderr
    );
    // The right CA, but a name the certificate does not carry: refused too.
    let out = agent.enroll_with(&hub.https_url(), &token, &["--ca", &arg(&ca)]);
    assert!(
        !out.ok && out.stderr.contains("not valid for the hub's host name"),
        "{}",
        out.stderr
    );
    assert!(hub.agents().unwrap().is_empty());

    // The right CA and name: enrolled (the token's pin is not needed), and records flow.
    agent
        .enroll_with(&by_name, &token, &["--ca", &arg(&ca)])
        .expect_ok("enroll with --ca");
    let status = agent.status().unwrap();
    assert_eq!(status["hub_tls"], "ca (1 certificate)");
    agent.agent_id = status["agent_id"].as_str().unwrap().to_owned();
    agent.submit(&records(COUNTY, 9, 25)).expect_ok("submit");
    agent
        .cli(&["sync", "--once"])
        .expect_ok("sync through the CA");
    assert_same_chain(&hub, &agent);

    // The hub presents the configured certificate, and tokens pin it.
    let https = tongbu_tests::https(&std::fs::read(&ca).unwrap());
    let health = https.get(format!("{by_name}/healthz")).send().unwrap();
    assert_eq!(health.status().as_u16(), 200);
    Agent::new()
        .unwrap()
        .enroll(&hub.https_url(), &hub.issue_token(COUNTY))
        .expect_ok("enroll with the pin of the configured certificate");
}

#[test]
fn a_replaced_hub_certificate_stops_the_agent_until_it_is_told_the_new_one() {
    let mut hub = hub_with_county(&[]);
    let mut agent = Agent::enrolled(&hub, COUNTY).unwrap();
    let old_pin = hub.cert_sha256();
    agent.submit(&records(COUNTY, 10, 5)).expect_ok("submit");
    agent.cli(&["sync", "--once"]).expect_ok("first sync");

    // The operator replaces the hub's certificate (here: a fresh self-signed pair).
    hub.stop().unwrap();
    std::fs::rename(
        hub.data_dir().join("tls"),
        hub.data_dir().join("tls.replaced"),
    )
    .unwrap();
    hub.restart().unwrap();
    let new_pin = hub.cert_sha256();
    assert_ne!(old_pin, new_pin);

    agent.submit(&records(COUNTY, 11, 5)).expect_ok("submit");
    let out = agent.cli(&["sync", "--once"]);
    assert!(!out.ok, "synced with an unpinned certificate");
    assert!(
        out.stderr.contains("certificate_mismatch"),
        "{}",
        out.stderr
    );
    let status = agent.status().unwrap();
    let last_error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.contains("certificate_mismatch") && last_error.contains(&new_pin),
        "{status}"
    );
    assert_eq!(status["acked_seq"], 5);

    // The running service does not give up, but does not get through either.
    agent.start().unwrap();
    wait_for("the service to report the mismatch", || {
        agent.log().contains("certificate_mismatch").then_some(())
    })
    .unwrap();
    agent.kill9();

    // Told the new fingerprint, it syncs again; the pinned hub key never changed.
    let url = hub.https_url();
    let out = agent
        .cli(&["set-hub", "--hub", &url, "--cert-sha256", &new_pin])
        .expect_ok("set-hub --cert-sha256");
    assert!(
        out.stdout.contains(&format!("pinned sha256:{new_pin}")),
        "{}",
        out.stdout
    );
    agent
        .cli(&["sync", "--once"])
        .expect_ok("sync after set-hub");
    assert_eq!(agent.wait_synced().unwrap(), 10);
    assert_same_chain(&hub, &agent);
}
