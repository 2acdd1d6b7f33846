//! The console as a provincial admin uses it: every page, then the three things only an admin
//! does — issue an enrollment token, resolve a violation, publish a new policy version.

use tongbu_tests::Agent;
use tongbu_tests::browser::Browser;

use crate::world::{
    ADMIN, HONGJIANG, OVER_BUDGET_CONTRACT, TRACE_BUDGET, TRACE_CONTRACT, TRACE_EVALUATION,
    TRACE_PAYMENT, WANGCHENG, World, yuan,
};

/// Follows the navigation link to `path` and waits for the page's heading `#heading`.
pub fn nav(browser: &Browser, path: &str, heading: &str) {
    browser
        .click(&format!("header nav a[href=\"{path}\"]"))
        .unwrap();
    browser.find(heading).unwrap();
}

#[test]
fn an_admin_signs_in_and_walks_every_page() {
    let Some(browser) = Browser::start_or_skip("console_admin_walk").unwrap() else {
        return;
    };
    let world = World::start();
    world.login(&browser, ADMIN);

    // Overview: the province's totals are the sum of the counties' ledgers, drawn as charts.
    let (budget, contracted, paid) = world.province_totals();
    assert!(budget > 0 && contracted > 0 && paid > 0);
    let totals = browser.text("#province-totals").unwrap();
    for fen in [budget, contracted, paid] {
        assert!(totals.contains(&yuan(fen)), "{} not in {totals}", yuan(fen));
    }
    let charts = browser.find_all(".chart svg").unwrap();
    assert_eq!(charts.len(), 2, "the county and domain charts");
    let by_county = browser.text("#by-county").unwrap();
    for (code, name) in [WANGCHENG, HONGJIANG] {
        assert!(by_county.contains(&format!("{code} {name}")), "{by_county}");
    }
    let by_rule = browser.text("#violations-by-rule").unwrap();
    assert!(by_rule.contains("BUDGET_EXCEEDED"), "{by_rule}");
    browser.screenshot_page("admin-overview").unwrap();

    // Counties: one row each, healthy, since both agents synced everything.
    nav(&browser, "/console/counties", "#page-counties");
    for (code, name) in [WANGCHENG, HONGJIANG] {
        let row = browser.text(&format!("#county-{code}")).unwrap();
        assert!(row.contains(name), "{row}");
        let class = browser
            .find(&format!("#county-{code}"))
            .unwrap()
            .attr("class")
            .unwrap();
        assert_eq!(class.as_deref(), Some("ok"), "{row}");
    }
    browser.screenshot_page("admin-counties").unwrap();

    // A county: its ledger by catalogue code and its agent.
    browser
        .click(&format!("#county-{} a", WANGCHENG.0))
        .unwrap();
    let heading = browser.text("#page-county").unwrap();
    assert!(heading.contains(WANGCHENG.1), "{heading}");
    let ledger = browser.text("#county-ledger").unwrap();
    assert!(ledger.contains("A0501"), "{ledger}");
    let agents = browser.text("#agents").unwrap();
    assert!(agents.contains(&world.agents[0].agent_id), "{agents}");
    browser.screenshot_page("admin-county").unwrap();

    // Trace: the hand-written project, every step with a re-checked signature.
    nav(&browser, "/console/trace", "#page-trace");
    browser
        .fill("#trace-form input[name=id]", TRACE_BUDGET)
        .unwrap();
    browser.click("#trace-form button[type=submit]").unwrap();
    for (kind, id) in [
        ("budget_line", TRACE_BUDGET),
        ("contract", TRACE_CONTRACT),
        ("payment", TRACE_PAYMENT),
        ("evaluation", TRACE_EVALUATION),
    ] {
        let section = browser.text(&format!("#trace-{kind}-{id}")).unwrap();
        assert!(section.contains(id), "{section}");
    }
    let ok = browser.find_all("td.sig-ok").unwrap();
    assert_eq!(ok.len(), 4, "one signed revision per record");
    for cell in &ok {
        assert_eq!(cell.text().unwrap(), "✓");
    }
    assert!(browser.find_all("td.sig-bad").unwrap().is_empty());
    browser.screenshot_page("admin-trace").unwrap();

    // Violations: every one the hub found, the over-budget contract among them.
    nav(&browser, "/console/violations", "#page-violations");
    let found: usize = [WANGCHENG, HONGJIANG]
        .iter()
        .map(|(code, _)| world.violations(code).len())
        .sum();
    assert!(found > 1, "the anomalies break rules");
    let rows = browser
        .find_all("#violations tbody tr[id^=violation-]")
        .unwrap();
    assert_eq!(rows.len(), found.min(500));
    let table = browser.text("#violations").unwrap();
    assert!(
        table.contains(OVER_BUDGET_CONTRACT) && table.contains("BUDGET_EXCEEDED"),
        "{table}"
    );
    browser.screenshot_page("admin-violations").unwrap();

    // Agents: both active (正常 in the Chinese console).
    nav(&browser, "/console/agents", "#page-agents");
    for agent in &world.agents {
        let state = browser
            .text(&format!("#agent-{} td.state-active", agent.agent_id))
            .unwrap();
        assert_eq!(state, "正常");
    }
    browser.screenshot_page("admin-agents").unwrap();

    // Policy: the catalogue `policy show` reports, and the first version.
    nav(&browser, "/console/policy", "#page-policy");
    let shown = world.policy_show();
    let catalogue = browser.find_all("#catalogue tbody tr").unwrap();
    assert_eq!(
        catalogue.len(),
        shown["catalogue"].as_array().unwrap().len()
    );
    let versions = browser.find_all("#policy-versions tbody tr").unwrap();
    assert_eq!(versions.len(), 1);
    browser.screenshot_page("admin-policy").unwrap();

    // Audit: the sign-in is there.
    nav(&browser, "/console/audit", "#page-audit");
    let audit = browser.text("#audit").unwrap();
    assert!(
        audit.contains("console.login") && audit.contains(&format!("console:{}", ADMIN.0)),
        "{audit}"
    );
    browser.screenshot_page("admin-audit").unwrap();
}

#[test]
fn an_admin_issues_a_token_resolves_a_violation_and_changes_the_policy() {
    let Some(browser) = Browser::start_or_skip("console_admin_actions").unwrap() else {
        return;
    };
    let world = World::start();
    world.login(&browser, ADMIN);

    // Issue a token for 洪江市; the real agent enrolls with it.
    nav(&browser, "/console/agents", "#page-agents");
    browser
        .find(&format!(
            "#issue-token-form select[name=county] option[value=\"{}\"]",
            HONGJIANG.0
        ))
        .unwrap()
        .click()
        .unwrap();
    browser
        .click("#issue-token-form button[type=submit]")
        .unwrap();
    browser.find("#page-token").unwrap();
    let token = browser.text("pre#issued-token").unwrap();
    assert!(!token.trim().is_empty());
    browser.screenshot_page("admin-token").unwrap();
    let agent = Agent::new().unwrap();
    agent
        .enroll(&world.hub.url(), token.trim())
        .expect_ok("enroll with the console's token");
    let enrolled = agent.status().unwrap();
    let agent_id = enrolled["agent_id"].as_str().unwrap().to_owned();
    assert!(agent_id.starts_with(HONGJIANG.0), "{enrolled}");
    // A token works once.
    let again = Agent::new().unwrap().enroll(&world.hub.url(), token.trim());
    assert!(
        !again.ok,
        "a used token enrolled a second agent: {}",
        again.stdout
    );
    browser
        .click("#page-token ~ p a[href=\"/console/agents\"]")
        .unwrap();
    browser.find(&format!("#agent-{agent_id}")).unwrap();

    // Resolve the over-budget contract's violation with a note.
    nav(&browser, "/console/violations", "#page-violations");
    let row = browser
        .find_all("#violations tbody tr[id^=violation-]")
        .unwrap()
        .into_iter()
        .find(|r| {
            let text = r.text().unwrap();
            text.contains(OVER_BUDGET_CONTRACT) && text.contains("BUDGET_EXCEEDED")
        })
        .expect("the over-budget contract's violation");
    let row_id = row.attr("id").unwrap().unwrap();
    let violation_id = row_id.trim_start_matches("violation-").to_owned();
    let status = format!("#{row_id} td.review-status");
    assert!(browser.find(&format!("{status}.status-open")).is_ok());
    let note = "合同金额超出预算，县财政局已核减合同";
    browser
        .find(&format!(
            "#{row_id} .review-form select[name=status] option[value=resolved]"
        ))
        .unwrap()
        .click()
        .unwrap();
    browser
        .fill(&format!("#{row_id} .review-form input[name=note]"), note)
        .unwrap();
    browser
        .click(&format!("#{row_id} .review-form button[type=submit]"))
        .unwrap();
    let resolved = browser.text(&format!("{status}.status-resolved")).unwrap();
    assert!(
        resolved.contains("已处理") && resolved.contains(note) && resolved.contains(ADMIN.0),
        "{resolved}"
    );
    // The record itself did not change: the hub still reports the violation.
    assert!(
        world
            .violations(WANGCHENG.0)
            .iter()
            .any(|v| v["id"] == OVER_BUDGET_CONTRACT && v["rule"] == "BUDGET_EXCEEDED")
    );
    browser.screenshot("admin-violation-resolved").unwrap();
    nav(&browser, "/console/audit", "#page-audit");
    let audit = browser.text("#audit").unwrap();
    assert!(
        audit.contains("violation.review")
            && audit.contains(&format!("violation {violation_id} "))
            && audit.contains(note),
        "{audit}"
    );

    // Publish a policy without the last catalogue entry.
    nav(&browser, "/console/policy", "#page-policy");
    let before = world.policy_show();
    let textarea = browser.find("#policy-form textarea[name=policy]").unwrap();
    let mut doc: serde_json::Value =
        serde_json::from_str(&textarea.prop("value").unwrap().unwrap()).unwrap();
    let removed = doc["catalogue"].as_array_mut().unwrap().pop().unwrap();
    let removed_code = removed["code"].as_str().unwrap().to_owned();
    textarea
        .fill(&serde_json::to_string_pretty(&doc).unwrap())
        .unwrap();
    browser.click("#policy-form button[type=submit]").unwrap();
    let version = before["version"].as_i64().unwrap() + 1;
    browser
        .find("#policy-versions tbody tr:nth-child(2)")
        .unwrap();
    let heading = browser.text("#page-policy").unwrap();
    assert!(heading.ends_with(&format!(" {version}")), "{heading}");
    let versions = browser.text("#policy-versions").unwrap();
    let rows = browser.find_all("#policy-versions tbody tr").unwrap();
    assert_eq!(rows.len(), 2, "{versions}");
    assert!(
        versions.contains(&format!("console:{}", ADMIN.0)),
        "{versions}"
    );
    let catalogue = browser.text("#catalogue").unwrap();
    assert!(!catalogue.contains(&removed_code), "{catalogue}");
    let after = world.policy_show();
    assert_eq!(after["version"].as_i64(), Some(version), "{after}");
    assert_eq!(after["catalogue"], doc["catalogue"]);
    browser.screenshot_page("admin-policy-published").unwrap();

    // An invalid policy is refused on the page, and nothing changes.
    let textarea = browser.find("#policy-form textarea[name=policy]").unwrap();
    textarea
        .fill(r#"{"catalogue": [{"code": "A0101"}], "negative_list": []"#)
        .unwrap();
    browser.click("#policy-form button[type=submit]").unwrap();
    let error = browser.text("#policy-error").unwrap();
    assert!(!error.trim().is_empty());
    browser.screenshot_page("admin-policy-error").unwrap();
    assert_eq!(world.policy_show(), after);
    assert_eq!(
        browser.find_all("#policy-versions tbody tr").unwrap().len(),
        2
    );
}
