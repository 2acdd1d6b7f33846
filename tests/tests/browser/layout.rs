//! How the console reads: Chinese first, English on `?lang=en` (remembered until `?lang=zh`),
//! and pages that fit a 1366×768 office screen without scrolling sideways.

use tongbu_tests::browser::Browser;

use crate::admin::nav;
use crate::world::{ADMIN, TRACE_BUDGET, WANGCHENG, World};

/// Whether `s` holds a Han character (a label left in Chinese on an English page).
fn has_han(s: &str) -> bool {
    s.chars()
        .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c) || ('\u{3400}'..='\u{4dbf}').contains(&c))
}

/// The page's own words: its title, the text directly inside its navigation, headings, table
/// headings, buttons and labels, and its placeholders (never data such as county names, and
/// not the link to the other language, which names it in that language).
fn labels(browser: &Browser) -> Vec<String> {
    let v = browser
        .execute(
            "const out = [document.title];
             for (const el of document.querySelectorAll(
                     'header nav a, header .who button, main th, main h1, main h2, main button, main label')) {
                 const own = [...el.childNodes].filter(n => n.nodeType === Node.TEXT_NODE)
                     .map(n => n.textContent).join('').trim();
                 if (own) out.push(own);
             }
             for (const el of document.querySelectorAll('main [placeholder]')) {
                 out.push(el.getAttribute('placeholder'));
             }
             return out;",
            vec![],
        )
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn the_console_switches_between_chinese_and_english() {
    let Some(browser) = Browser::start_or_skip("console_language").unwrap() else {
        return;
    };
    let world = World::start();
    world.login(&browser, ADMIN);
    let counties_link = "header nav a[href=\"/console/counties\"]";
    assert_eq!(browser.text(counties_link).unwrap(), "县区");
    let html_lang = browser.find("html").unwrap().attr("lang").unwrap();
    assert_eq!(html_lang.as_deref(), Some("zh-CN"));
    browser.screenshot_page("lang-zh-overview").unwrap();

    browser.goto(&world.url("/console/?lang=en")).unwrap();
    browser.find("#page-overview").unwrap();
    assert_eq!(browser.text(counties_link).unwrap(), "Counties");
    let html_lang = browser.find("html").unwrap().attr("lang").unwrap();
    assert_eq!(html_lang.as_deref(), Some("en"));
    browser.screenshot_page("lang-en-overview").unwrap();

    // The choice is remembered across pages, and every label on them is English.
    let mut untranslated = Vec::new();
    for (path, heading) in [
        ("/console/", "#page-overview"),
        ("/console/counties", "#page-counties"),
        ("/console/trace", "#page-trace"),
        ("/console/violations", "#page-violations"),
        ("/console/agents", "#page-agents"),
        ("/console/policy", "#page-policy"),
        ("/console/audit", "#page-audit"),
    ] {
        nav(&browser, path, heading);
        assert_eq!(browser.text(counties_link).unwrap(), "Counties", "{path}");
        untranslated.extend(
            labels(&browser)
                .into_iter()
                .filter(|l| has_han(l))
                .map(|l| format!("{path}: {l:?}")),
        );
    }
    assert!(
        untranslated.is_empty(),
        "Chinese labels on English pages: {untranslated:#?}"
    );
    nav(&browser, "/console/violations", "#page-violations");
    browser.screenshot_page("lang-en-violations").unwrap();

    // The language link goes back to Chinese, and that too is remembered.
    browser.click("#lang-switch").unwrap();
    crate::wait_text(&browser, counties_link, "县区");
    nav(&browser, "/console/", "#page-overview");
    assert_eq!(browser.text(counties_link).unwrap(), "县区");
    browser.goto(&world.url("/console/?lang=zh")).unwrap();
    browser.find("#page-overview").unwrap();
    assert_eq!(browser.text(counties_link).unwrap(), "县区");
    browser.screenshot_page("lang-zh-again").unwrap();
}

/// How wide the page is: (viewport width, document scroll width, the elements in `main` that
/// scroll sideways inside themselves, by tag and class).
fn widths(browser: &Browser) -> (u64, u64, Vec<String>) {
    let v = browser
        .execute(
            "const inner = [...document.querySelectorAll('main, main *')]
                 .filter(e => e.scrollWidth > e.clientWidth + 1
                     && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
                 .map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : ''));
             return [window.innerWidth, document.documentElement.scrollWidth, inner];",
            vec![],
        )
        .unwrap();
    let inner = v[2]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap_or_default().to_owned())
        .collect();
    (v[0].as_u64().unwrap(), v[1].as_u64().unwrap(), inner)
}

#[test]
fn pages_fit_a_1366_by_768_screen_without_scrolling_sideways() {
    let Some(browser) = Browser::start_or_skip("console_1366x768").unwrap() else {
        return;
    };
    let world = World::start();
    world.login(&browser, ADMIN);
    let (viewport, scroll, inner) = widths(&browser);
    assert_eq!(viewport, 1366, "the window is 1366 wide");
    browser.screenshot("overview-1366x768").unwrap();
    assert!(
        scroll <= 1366,
        "the overview scrolls sideways: {scroll} px wide at 1366"
    );
    assert!(
        inner.is_empty(),
        "the overview has inner scrollbars: {inner:?}"
    );

    // Every other page, the trace of a whole project and a county's ledger included.
    let mut wide = Vec::new();
    for (path, heading) in [
        ("/console/counties", "#page-counties"),
        (
            &format!("/console/counties/{}", WANGCHENG.0),
            "#page-county",
        ),
        (&format!("/console/trace?id={TRACE_BUDGET}"), "#page-trace"),
        ("/console/violations", "#page-violations"),
        ("/console/agents", "#page-agents"),
        ("/console/policy", "#page-policy"),
        ("/console/audit", "#page-audit"),
    ] {
        browser.goto(&world.url(path)).unwrap();
        browser.find(heading).unwrap();
        let (_, scroll, inner) = widths(&browser);
        if scroll > 1366 || !inner.is_empty() {
            wide.push(format!("{path}: {scroll} px, inner scrollbars {inner:?}"));
        }
    }
    assert!(wide.is_empty(), "pages wider than 1366 px: {wide:#?}");
}

/// A reviewer's note is free text of up to 1000 characters: it must wrap inside the review
/// column instead of pushing the violations table, and the review form with it, off a
/// 1366-pixel screen.
#[test]
fn a_review_note_does_not_widen_the_violations_page() {
    let Some(browser) = Browser::start_or_skip("console_review_note_width").unwrap() else {
        return;
    };
    let world = World::start();
    world.login(&browser, ADMIN);
    nav(&browser, "/console/violations", "#page-violations");
    let row = browser
        .find("#violations tbody tr[id^=violation-]")
        .unwrap()
        .attr("id")
        .unwrap()
        .unwrap();
    let note = "已与县财政局核对：该合同的前序预算指标因超出批复金额被拒绝，县里已重新报批预算并将重新签订合同，本条记录保持原状。";
    browser
        .fill(&format!("#{row} .review-form input[name=note]"), note)
        .unwrap();
    browser
        .click(&format!("#{row} .review-form button[type=submit]"))
        .unwrap();
    let status = browser
        .text(&format!("#{row} td.review-status.status-reviewed"))
        .unwrap();
    assert!(status.contains(note), "{status}");
    let (_, scroll, _) = widths(&browser);
    browser.screenshot("violations-with-note").unwrap();
    assert!(
        scroll <= 1366,
        "the violations page is {scroll} px wide at 1366 once a violation has a review note"
    );
}
