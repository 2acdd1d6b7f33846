//! Enrollment: a one-time token binds a new agent key to a county; the hub's key is pinned.

use tongbu_tests::{Agent, Hub, RawAgent};

#[test]
fn an_agent_enrolls_once_and_the_hub_lists_it() {
    let hub = Hub::start().unwrap();
    hub.add_county("430112", "望城区");
    let token = hub.issue_token("430112");
    assert!(
        token.len() >= 20 && !token.contains(char::is_whitespace),
        "token printed alone: {token:?}"
    );

    let agent = Agent::new().unwrap();
    let out = agent.enroll(&hub.url(), &token).expect_ok("enroll");
    assert!(out.stdout.contains("enrolled as 430112-"), "{}", out.stdout);

    let status = agent.status().unwrap();
    let agent_id = status["agent_id"].as_str().unwrap().to_owned();
    assert_eq!(status["county"], "430112");
    assert_eq!(status["head_seq"], 0);
    assert_eq!(status["acked_seq"], 0);

    let row = hub.agent_row(&agent_id).unwrap().expect("agent listed");
    assert_eq!(row["county"], "430112");
    assert_eq!(row["state"], "active");
    assert_eq!(row["acked_seq"], 0);

    // The key file is private to its owner.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(agent.data_dir().join("agent.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "agent.key mode {mode:o}");

    // The same token cannot enroll a second agent, and the hub says why.
    let second = Agent::new().unwrap();
    let again = second.enroll(&hub.url(), &token);
    assert!(!again.ok, "a used token enrolled again");
    assert!(again.stderr.contains("token_used"), "{}", again.stderr);
    let err = RawAgent::enroll(&hub.url(), &token, [9; 32])
        .err()
        .expect("raw reuse refused")
        .to_string();
    assert!(err.contains("token_used"), "{err}");

    // Nor does an invented token, nor does one for an unknown county get issued.
    let bogus = second.enroll(&hub.url(), "tbe_not-a-real-token");
    assert!(
        !bogus.ok && bogus.stderr.contains("token_unknown"),
        "{}",
        bogus.stderr
    );
    assert!(!hub.cli(&["token", "issue", "--county", "999999"]).ok);
    assert_eq!(hub.agents().unwrap().len(), 1);

    // An enrolled agent refuses to enroll again (it would lose its chain).
    let token2 = hub.issue_token("430112");
    assert!(!agent.enroll(&hub.url(), &token2).ok);
}

#[test]
fn the_agents_api_needs_an_api_key() {
    let hub = Hub::start().unwrap();
    let resp = tongbu_tests::http()
        .get(format!("{}/api/v1/agents", hub.url()))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let resp = tongbu_tests::http()
        .get(format!("{}/api/v1/agents", hub.url()))
        .bearer_auth("tbk_wrong")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let health = tongbu_tests::http()
        .get(format!("{}/healthz", hub.url()))
        .send()
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}
