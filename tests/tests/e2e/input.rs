//! Intake: malformed input is refused whole with a reason that names the record and field,
//! and nothing of it is stored; good input is stored, signed and chained.

use tongbu_tests::{Agent, Hub, records};

#[test]
fn a_file_with_one_bad_record_is_refused_whole() {
    let hub = Hub::start().unwrap();
    hub.add_county("430112", "望城区");
    let agent = Agent::enrolled(&hub, "430112").unwrap();
    agent
        .submit(&records("430112", 1, 5))
        .expect_ok("first submit");

    let mut lines: Vec<String> = records("430112", 2, 4).lines().map(str::to_owned).collect();
    lines[2] = lines[2].replace("\"rev\":1", "\"rev\":1,\"amount\":5");
    let out = agent.submit(&(lines.join("\n") + "\n"));
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stdout.is_empty(),
        "nothing reported stored: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains("record 3 (line 3)") && out.stderr.contains("`amount`"),
        "{}",
        out.stderr
    );

    let cases = [
        (
            "\"amount_fen\":",
            "\"amount_fen\":0,\"x_amount_fen\":",
            "x_amount_fen",
        ),
        ("\"county\":\"430112\"", "\"county\":\"431281\"", "county"),
    ];
    for (from, to, field) in cases {
        let mut bad = lines.clone();
        bad[2] = records("430112", 3, 3)
            .lines()
            .nth(1)
            .unwrap()
            .replacen(from, to, 1);
        let out = agent.submit(&(bad.join("\n") + "\n"));
        assert!(!out.ok, "{field}: accepted");
        assert!(
            out.stderr.contains(&format!("`{field}`")),
            "{field}: {}",
            out.stderr
        );
    }
    assert!(!agent.submit("not json\n").ok);
    assert!(!agent.submit("").ok);

    let status = agent.status().unwrap();
    assert_eq!(status["head_seq"], 5, "refused input changed nothing");
    assert!(
        agent
            .cli(&["verify"])
            .expect_ok("verify")
            .stdout
            .starts_with("ok: 5 records verify")
    );

    // A JSON array from stdin is fine.
    let array = format!(
        "[{}]",
        records("430112", 4, 2)
            .lines()
            .collect::<Vec<_>>()
            .join(",")
    );
    let out = agent
        .cli_with_input(&["submit", "-"], Some(array.as_bytes()))
        .expect_ok("submit -");
    assert!(out.stdout.starts_with("seq=6 kind="), "{}", out.stdout);
    assert_eq!(agent.status().unwrap()["head_seq"], 7);

    // check reports without storing.
    let check = agent.cli_with_input(&["check", "-"], Some(lines.join("\n").as_bytes()));
    assert_eq!(check.code, Some(1));
    assert_eq!(agent.status().unwrap()["head_seq"], 7);
}

#[test]
fn the_intake_http_refuses_bad_records_and_changes_nothing() {
    let hub = Hub::start().unwrap();
    hub.add_county("431281", "洪江市");
    let mut agent = Agent::enrolled(&hub, "431281").unwrap();
    agent.start().unwrap();
    let url = agent.intake_url().unwrap();
    let bad = records("431281", 1, 2).replace("\"fiscal_year\":2024", "\"fiscal_year\":\"2024\"");
    let resp = tongbu_tests::http()
        .post(format!("{url}/records"))
        .body(bad)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fiscal_year"),
        "{body}"
    );
    assert_eq!(agent.status().unwrap()["head_seq"], 0);

    let resp = tongbu_tests::http()
        .post(format!("{url}/check"))
        .body(records("431281", 1, 2))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(agent.status().unwrap()["head_seq"], 0);
}
