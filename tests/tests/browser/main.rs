//! Browser tests: real headless Chromium (Debian's `chromium` via `chromedriver`) against the
//! real `tongbu-hub` binary started on port 0 (see `tongbu_tests::browser`). Screenshots land
//! in `target/screenshots/<test>/`.
//!
//! The console tests (`admin`, `operator`, `layout`) each build a province of their own
//! (`world`): a hub, two counties with a real agent each that synced a year of records, and an
//! admin and an operator made with `tongbu-hub admin add`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod layout;
mod operator;
mod world;

use tongbu_tests::browser::Browser;
use tongbu_tests::{Hub, wait_for};

/// Waits until the text of the element matching `css` contains `want` (the element may be
/// replaced by a page load meanwhile).
pub fn wait_text(browser: &Browser, css: &str, want: &str) {
    wait_for(&format!("{css} to show {want:?}"), || {
        browser
            .find_all(css)
            .ok()?
            .first()?
            .text()
            .ok()
            .filter(|t| t.contains(want))
    })
    .unwrap();
}

/// The infrastructure works end to end: Chromium opens the hub's health and metrics pages,
/// reads their text and saves screenshots, and CJK text renders with real glyphs.
#[test]
fn chromium_opens_the_hub_health_and_metrics_pages() {
    let Some(browser) = Browser::start_or_skip("health_and_metrics").unwrap() else {
        return;
    };
    let hub = Hub::start().unwrap();

    browser.goto(&format!("{}/healthz", hub.url())).unwrap();
    let health = browser.text("body").unwrap();
    assert!(
        health.contains(r#""status":"ok""#),
        "healthz shows: {health}"
    );
    let shot = browser.screenshot("healthz").unwrap();
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1000,
        "{}",
        shot.display()
    );

    browser.goto(&format!("{}/metrics", hub.url())).unwrap();
    let metrics = browser.text("body").unwrap();
    assert!(
        metrics.contains("tongbu_batches_total") && metrics.contains("tongbu_records_total"),
        "metrics shows: {metrics}"
    );
    browser.screenshot("metrics").unwrap();

    // Chinese county names must render (fonts-noto-cjk), since the console shows them.
    browser
        .goto("data:text/html;charset=utf-8,<h1 id=t>望城区 洪江市 北湖区 · 同步</h1>")
        .unwrap();
    assert_eq!(browser.text("#t").unwrap(), "望城区 洪江市 北湖区 · 同步");
    browser.screenshot("cjk").unwrap();
}
