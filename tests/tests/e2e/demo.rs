//! The README's first command: `tongbu-hub demo` runs a hub with three simulated counties whose
//! agents enroll themselves and keep submitting; stopped and started again, it resumes.

use std::collections::HashMap;

use tongbu_tests::{Demo, wait_for};

#[test]
fn the_demo_runs_three_counties_and_resumes_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("demo");
    let demo = Demo::start(&dir).unwrap();
    let first: HashMap<String, u64> = wait_for("three agents to sync records", || {
        let agents = demo.agents().ok()?;
        let ready = agents.len() == 3
            && agents.iter().all(|a| {
                a["state"] == "active"
                    && a["acked_seq"].as_u64() >= Some(10)
                    && a["last_error"].is_null()
            });
        ready.then(|| {
            agents
                .iter()
                .map(|a| {
                    (
                        a["agent_id"].as_str().unwrap_or_default().to_owned(),
                        a["acked_seq"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
    })
    .unwrap();
    let counties: Vec<&str> = first.keys().map(|id| &id[..6]).collect();
    for county in ["430112", "431281", "431002"] {
        assert!(
            counties.contains(&county),
            "{county} missing from {counties:?}"
        );
    }
    // The simulated counties break rules now and then, and the ledger fills.
    let get = |path: &str| -> Option<serde_json::Value> {
        let url = format!("{}{path}", demo.proc.url);
        let resp = tongbu_tests::http()
            .get(url)
            .bearer_auth(&demo.api_key)
            .send()
            .ok()?;
        resp.json().ok()
    };
    wait_for("violations and a ledger from the demo", || {
        let violations: usize = ["430112", "431281", "431002"]
            .iter()
            .filter_map(|c| get(&format!("/api/v1/violations?county={c}")))
            .map(|v| v["violations"].as_array().map_or(0, Vec::len))
            .sum();
        let ledger = get("/api/v1/ledger?county=430112&year=2025")?;
        (violations > 0 && ledger["budget_approved_fen"].as_i64()? > 0).then_some(())
    })
    .unwrap();
    // The console answers with the login the demo printed.
    let password = std::fs::read_to_string(dir.join("console-password")).unwrap();
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client
        .post(format!("{}/console/login", demo.proc.url))
        .form(&[
            ("username", "admin"),
            ("password", password.trim()),
            ("next", "/console/"),
        ])
        .send()
        .unwrap();
    assert_eq!(login.status().as_u16(), 303, "{:?}", login.text());
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = client
        .get(format!("{}/console/", demo.proc.url))
        .header("cookie", cookie)
        .send()
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().unwrap().contains("id=\"page-overview\""));

    assert!(
        demo.proc.terminate().unwrap(),
        "the demo exits cleanly on SIGTERM"
    );

    // Started again, the same agents carry on (no new enrollment) and sync more.
    let demo = Demo::start(&dir).unwrap();
    wait_for("the same agents to sync more", || {
        let agents = demo.agents().ok()?;
        let more = agents.len() == 3
            && agents.iter().all(|a| {
                let id = a["agent_id"].as_str().unwrap_or_default();
                first
                    .get(id)
                    .is_some_and(|&before| a["acked_seq"].as_u64() > Some(before))
            });
        more.then_some(())
    })
    .unwrap();
    assert!(demo.proc.terminate().unwrap());
}
