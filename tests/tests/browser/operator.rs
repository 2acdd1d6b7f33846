//! The console as an operator sees it: every page readable, no control that changes anything,
//! and a write forged with the operator's own session and CSRF token refused with 403.

use std::time::Duration;

use tongbu_tests::browser::Browser;

use crate::admin::nav;
use crate::world::{HONGJIANG, OPERATOR, TRACE_BUDGET, TRACE_CONTRACT, World};

/// Every element that lets a user change something, on any console page.
const WRITE_CONTROLS: &[&str] = &[
    "#issue-token-form",
    ".review-form",
    "#policy-form",
    ".revoke-form",
    ".lift-form",
    "#add-county-form",
];

fn assert_read_only(browser: &Browser, page: &str) {
    for css in WRITE_CONTROLS {
        let found = browser.find_all(css).unwrap();
        assert!(found.is_empty(), "{page}: an operator sees {css}");
    }
}

#[test]
fn an_operator_reads_every_page_but_cannot_change_anything() {
    let Some(browser) = Browser::start_or_skip("console_operator").unwrap() else {
        return;
    };
    let world = World::start();
    world.login(&browser, OPERATOR);
    let who = browser.text("header .who").unwrap();
    assert!(who.contains("运维员"), "{who}");

    // Every page renders its data, without a single write control.
    assert!(!browser.find_all(".chart svg").unwrap().is_empty());
    assert_read_only(&browser, "overview");
    browser.screenshot_page("operator-overview").unwrap();
    let pages = [
        ("/console/counties", "#page-counties", "counties"),
        ("/console/violations", "#page-violations", "violations"),
        ("/console/agents", "#page-agents", "agents"),
        ("/console/policy", "#page-policy", "policy"),
        ("/console/audit", "#page-audit", "audit"),
    ];
    for (path, heading, name) in pages {
        nav(&browser, path, heading);
        assert_read_only(&browser, name);
        browser
            .screenshot_page(&format!("operator-{name}"))
            .unwrap();
    }
    browser
        .goto(&world.url(&format!("/console/counties/{}", HONGJIANG.0)))
        .unwrap();
    browser.find("#page-county").unwrap();
    assert_read_only(&browser, "county");
    browser
        .goto(&world.url(&format!("/console/trace?id={TRACE_BUDGET}")))
        .unwrap();
    browser
        .find(&format!("#trace-contract-{TRACE_CONTRACT}"))
        .unwrap();
    assert_read_only(&browser, "trace");

    // The agents page shows what each agent's own `status` says (both synced, so the hub's
    // view and the agent's agree on every figure).
    nav(&browser, "/console/agents", "#page-agents");
    for agent in &world.agents {
        let status = agent.status().unwrap();
        let cells: Vec<String> = browser
            .find_all(&format!("#agent-{} td", agent.agent_id))
            .unwrap()
            .iter()
            .map(|c| c.text().unwrap().trim().to_owned())
            .collect();
        let (acked, head) = (&status["acked_seq"], &status["head_seq"]);
        let lag = head.as_u64().unwrap() - acked.as_u64().unwrap();
        assert_eq!(cells[0], agent.agent_id);
        assert_eq!(cells[4], acked.to_string(), "acked: {cells:?} vs {status}");
        assert_eq!(cells[5], head.to_string(), "head: {cells:?} vs {status}");
        assert_eq!(cells[6], lag.to_string(), "lag: {cells:?} vs {status}");
        assert_eq!(
            cells[7],
            status["queue_depth"].to_string(),
            "queue: {cells:?} vs {status}"
        );
        assert_eq!(cells[9], status["last_error"].as_str().unwrap_or(""));
    }

    // The operator's violations table has no review column.
    nav(&browser, "/console/violations", "#page-violations");
    let violation = browser
        .find("#violations tbody tr[id^=violation-]")
        .unwrap()
        .attr("id")
        .unwrap()
        .unwrap()
        .trim_start_matches("violation-")
        .to_owned();

    // Forge writes with the operator's own session cookie and CSRF token (from the logout
    // form every page carries), so the role check is the only thing that can refuse them.
    let before = world.writable_state();
    let csrf = browser
        .find("#logout-form input[name=csrf]")
        .unwrap()
        .attr("value")
        .unwrap()
        .unwrap();
    let session = browser
        .cookie("tongbu_session")
        .unwrap()
        .expect("the session cookie");
    let agent = world.agents[1].agent_id.clone();
    let policy = serde_json::json!({ "catalogue": [], "negative_list": [] }).to_string();
    let forged: [(String, Vec<(&str, &str)>); 6] = [
        ("/console/tokens".into(), vec![("county", HONGJIANG.0)]),
        (
            format!("/console/violations/{violation}/review"),
            vec![("status", "resolved"), ("note", "operator was here")],
        ),
        ("/console/policy".into(), vec![("policy", policy.as_str())]),
        (
            format!("/console/agents/{agent}/revoke"),
            vec![("reason", "operator was here")],
        ),
        (
            format!("/console/agents/{agent}/lift"),
            vec![("reason", "operator was here")],
        ),
        (
            "/console/counties".into(),
            vec![("code", "430102"), ("name", "芙蓉区")],
        ),
    ];
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let cookie = format!("tongbu_session={session}");
    // The cookie is a live session: a read with it succeeds.
    let read = client
        .get(world.url("/console/agents"))
        .header("cookie", &cookie)
        .send()
        .unwrap();
    assert_eq!(read.status(), 200);
    for (path, fields) in &forged {
        let mut form = fields.clone();
        form.push(("csrf", csrf.as_str()));
        let resp = client
            .post(world.url(path))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().unwrap();
        assert_eq!(status, 403, "POST {path}: {body}");
        assert!(
            body.contains("only admins may change this"),
            "POST {path}: {body}"
        );
    }

    // And from the browser itself: a form injected into the page and submitted.
    nav(&browser, "/console/agents", "#page-agents");
    browser
        .execute(
            "const f = document.createElement('form');
             f.method = 'post';
             f.action = '/console/tokens';
             for (const [name, value] of [['csrf', arguments[0]], ['county', arguments[1]]]) {
                 const i = document.createElement('input');
                 i.type = 'hidden'; i.name = name; i.value = value;
                 f.appendChild(i);
             }
             document.body.appendChild(f);
             f.submit();",
            vec![csrf.clone().into(), HONGJIANG.0.into()],
        )
        .unwrap();
    let refused = browser.text("#page-error").unwrap();
    assert!(refused.contains("403"), "{refused}");
    assert!(browser.find_all("#issued-token").unwrap().is_empty());
    browser.screenshot("operator-forged-post-refused").unwrap();

    assert_eq!(
        world.writable_state(),
        before,
        "a refused write changed something"
    );
}
