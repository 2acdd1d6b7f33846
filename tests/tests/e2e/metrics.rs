//! Metrics: the agent's `GET /metrics` agrees with `tongbu-agent status --json`, the hub's
//! per-county gauges agree with its agents API, and every metric the Grafana dashboard
//! (`deploy/grafana/tongbu.json`) queries is one the real binaries expose.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use tongbu_tests::{Agent, Hub, RawAgent, records, records_with_anomalies, wait_for};

/// A scrape: each series (name with labels) and its value.
type Scrape = BTreeMap<String, f64>;

fn scrape(url: &str) -> Scrape {
    let resp = tongbu_tests::http()
        .get(format!("{url}/metrics"))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = resp.text().unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// The metric names in a scrape (the series without labels).
fn names(s: &Scrape) -> BTreeSet<String> {
    s.keys()
        .map(|k| k.split('{').next().unwrap().to_owned())
        .collect()
}

fn int(s: &Scrape, series: &str) -> Option<u64> {
    s.get(series).map(|v| *v as u64)
}

/// A scrape taken between two equal `status --json` reads, so both saw the same outbox.
fn scrape_with_status(agent: &Agent) -> (Scrape, Value) {
    let url = agent.intake_url().unwrap();
    wait_for("a status that holds still across a scrape", || {
        let before = agent.status().ok()?;
        let metrics = scrape(&url);
        let after = agent.status().ok()?;
        let stable = ["head_seq", "acked_seq", "held", "rejected", "hub_log_size"]
            .iter()
            .all(|k| before[k] == after[k]);
        stable.then_some((metrics, after))
    })
    .unwrap()
}

fn assert_agrees(metrics: &Scrape, status: &Value) {
    for (series, key) in [
        ("tongbu_agent_head_seq", "head_seq"),
        ("tongbu_agent_acked_seq", "acked_seq"),
        ("tongbu_agent_queue_depth_records", "queue_depth"),
        ("tongbu_agent_records_held", "held"),
        ("tongbu_agent_records_rejected", "rejected"),
        ("tongbu_agent_hub_log_size", "hub_log_size"),
        ("tongbu_agent_hub_log_findings_total", "hub_log_findings"),
        ("tongbu_agent_policy_version", "policy_version"),
    ] {
        assert_eq!(
            int(metrics, series),
            status[key].as_u64(),
            "{series} vs status {key}: {metrics:?}\n{status}"
        );
    }
    let info = format!(
        "tongbu_agent_info{{agent_id=\"{}\",county=\"{}\",version=\"{}\"}}",
        status["agent_id"].as_str().unwrap(),
        status["county"].as_str().unwrap(),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(int(metrics, &info), Some(1), "{metrics:?}");
}

#[test]
fn agent_and_hub_metrics_agree_with_status_and_the_agents_api_and_feed_the_dashboard() {
    let mut hub = Hub::start().unwrap();
    hub.add_county("430112", "望城区");
    hub.add_county("431281", "洪江市");
    let mut agent = Agent::enrolled(&hub, "430112").unwrap();
    agent.start().unwrap();
    let url = agent.intake_url().unwrap();
    let post = |body: String| {
        let resp = tongbu_tests::http()
            .post(format!("{url}/records"))
            .body(body)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().unwrap());
    };

    // Records, some of them breaking rules, taken in over the intake and synced.
    post(records_with_anomalies("430112", 7, 120));
    assert_eq!(agent.wait_synced().unwrap(), 120);
    let (synced, status) = scrape_with_status(&agent);
    assert_agrees(&synced, &status);
    assert!(status["rejected"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(int(&synced, "tongbu_agent_queue_depth_records"), Some(0));
    assert_eq!(
        int(&synced, "tongbu_agent_records_taken_in_total"),
        Some(120)
    );
    assert!(int(&synced, "tongbu_agent_sync_rounds_total").unwrap() >= 1);
    assert!(status["last_sync"].is_string());
    assert!(int(&synced, "tongbu_agent_last_sync_age_seconds").unwrap() < 60);
    assert!(
        !synced
            .keys()
            .any(|k| k.starts_with("tongbu_agent_last_error")),
        "no error, no error series: {synced:?}"
    );

    // The hub's agents API (whose `agent_row` the console's agent page shows too) agrees
    // with `status` once the agent is in sync.
    let row = hub.agent_row(&agent.agent_id).unwrap().unwrap();
    for (api, local) in [
        ("acked_seq", "acked_seq"),
        ("head_seq", "head_seq"),
        ("lag", "queue_depth"),
        ("last_error", "last_error"),
    ] {
        assert_eq!(
            row[api], status[local],
            "API {api} vs status {local}: {row}"
        );
    }
    assert_eq!(row["state"], "active");
    assert!(row["last_seen"].is_string(), "{row}");

    // A second county's agent reports a head beyond what it sent: the hub's lag gauge and
    // its agents API say the same.
    let raw = RawAgent::enroll(&hub.url(), &hub.issue_token("431281"), [41; 32]).unwrap();
    let bodies: Vec<String> = records("431281", 3, 3).lines().map(str::to_owned).collect();
    let envelopes = raw.chain(0, tongbu_shared::Digest::GENESIS, &bodies);
    let batch = tongbu_shared::protocol::BatchRequest {
        heartbeat: tongbu_shared::protocol::Heartbeat {
            head_seq: 10,
            queue_depth: 7,
            agent_version: "test".into(),
            last_error: None,
            outcome_cursor: 0,
            log_size: 0,
        },
        envelopes,
    };
    let path = tongbu_shared::protocol::batches_path(&raw.agent_id);
    let reply = raw
        .request("POST", &path, serde_json::to_vec(&batch).unwrap())
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.raw);
    let hub_metrics = scrape(&hub.url());
    let agents = hub.agents().unwrap();
    for county in ["430112", "431281"] {
        let lag: u64 = agents
            .iter()
            .filter(|a| a["county"] == county)
            .map(|a| a["lag"].as_u64().unwrap())
            .sum();
        assert_eq!(
            int(
                &hub_metrics,
                &format!("tongbu_county_lag_records{{county=\"{county}\"}}")
            ),
            Some(lag),
            "{county}: {hub_metrics:?}"
        );
    }
    assert_eq!(
        int(&hub_metrics, "tongbu_county_lag_records{county=\"431281\"}"),
        Some(7)
    );
    assert_eq!(
        int(
            &hub_metrics,
            "tongbu_county_queue_depth_records{county=\"431281\"}"
        ),
        Some(7)
    );
    assert_eq!(
        int(&hub_metrics, "tongbu_agents{state=\"active\"}"),
        Some(2)
    );
    assert_eq!(
        int(&hub_metrics, "tongbu_envelopes_stored_total"),
        Some(123)
    );
    assert!(int(&hub_metrics, "tongbu_ingest_batch_duration_seconds_count").unwrap() >= 2);
    let decided: u64 = ["accepted", "rejected"]
        .iter()
        .map(|o| {
            int(
                &hub_metrics,
                &format!("tongbu_records_total{{outcome=\"{o}\"}}"),
            )
            .unwrap()
        })
        .sum();
    assert!(decided > 0, "{hub_metrics:?}");

    // The hub goes away: the agent's metrics name the error class and count the retries,
    // and still agree with `status`.
    hub.stop().unwrap();
    post(records("430112", 8, 5));
    let (failing, status) = wait_for("the agent to report the hub down", || {
        let (metrics, status) = scrape_with_status(&agent);
        let retried = int(&metrics, "tongbu_agent_sync_retries_total")? >= 1;
        (status["last_error"].is_string() && retried).then_some((metrics, status))
    })
    .unwrap();
    assert_agrees(&failing, &status);
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .starts_with("network:"),
        "{status}"
    );
    assert_eq!(
        int(&failing, "tongbu_agent_last_error{class=\"network\"}"),
        Some(1),
        "{failing:?}"
    );
    assert_eq!(int(&failing, "tongbu_agent_queue_depth_records"), Some(5));
    assert_eq!(
        int(&failing, "tongbu_agent_records_taken_in_total"),
        Some(125)
    );

    // Every metric a dashboard expression names is one of these binaries' metrics.
    let exposed: BTreeSet<String> = [&synced, &failing, &hub_metrics]
        .into_iter()
        .flat_map(names)
        .collect();
    let path = tongbu_tests::workspace_dir().join("deploy/grafana/tongbu.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let used = dashboard_metrics(&dashboard);
    assert!(used.len() >= 15, "{used:?}");
    let unknown: Vec<&String> = used.iter().filter(|m| !exposed.contains(*m)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics nothing exposes: {unknown:?}\nexposed: {exposed:?}"
    );
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] != "row" {
            assert!(
                !panel["targets"].as_array().unwrap().is_empty(),
                "{}",
                panel["title"]
            );
        }
    }
}

/// Every `tongbu_*` name in the dashboard's queries (panel targets and template variables).
fn dashboard_metrics(dashboard: &Value) -> BTreeSet<String> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            queries.push(q.to_owned());
        }
    }
    let mut names = BTreeSet::new();
    for q in &queries {
        let mut rest = q.as_str();
        while let Some(at) = rest.find("tongbu_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}
