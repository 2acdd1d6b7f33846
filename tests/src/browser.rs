//! Browser tests: real headless Chromium driven through chromedriver (WebDriver, `fantoccini`).
//! [`Browser::start`] runs `chromedriver` on a free loopback port, waits for its "started
//! successfully" line, and opens a headless Chromium with a fresh profile; the test then uses
//! plain blocking calls (`goto`, `find`, `fill`, `click`, `text`, `screenshot`). Screenshots
//! are PNGs in `target/screenshots/<test>/`. Dropping the `Browser` always ends the session
//! (Chromium quits) and kills chromedriver, so a failing test leaves nothing running.
//!
//! The browser and driver are Debian's `chromium` and `chromium-driver` (with `fonts-noto-cjk`
//! so Chinese text renders); `.ci/run` installs them. Where they are missing and `CI` is not
//! set, [`Browser::start_or_skip`] returns `None` so `cargo test` still passes on a machine
//! with only the Rust toolchain; in CI a missing browser fails the test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use fantoccini::{Client, ClientBuilder, Locator};

use crate::DEADLINE;

/// Debian's Chromium and its WebDriver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Flags for a quiet, reproducible headless Chromium in a container (no sandbox: CI runs as
/// root; no GPU; /dev/shm may be small).
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1366,768",
];

/// How long one element lookup waits for the element to appear.
const FIND_WAIT: Duration = Duration::from_secs(10);

/// A headless Chromium session and the chromedriver behind it.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    driver_log: PathBuf,
    /// The profile directory (`--user-data-dir`), removed after the driver is gone.
    profile: Option<tempfile::TempDir>,
    shots: PathBuf,
    shots_told: std::cell::Cell<bool>,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium for the test `test` (its screenshots go to
    /// `target/screenshots/<test>/`).
    pub fn start(test: &str) -> Result<Browser> {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(bin).exists() {
                bail!(
                    "{bin} is missing: apt-get install chromium chromium-driver fonts-noto-cjk \
                     (as .ci/run does)"
                );
            }
        }
        let profile = tempfile::Builder::new()
            .prefix("tongbu-chromium-")
            .tempdir()?;
        let driver_log = profile.path().with_extension("chromedriver.log");
        let (driver, port) = start_driver(&driver_log)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let mut browser = Browser {
            runtime,
            client: None,
            driver,
            driver_log,
            profile: Some(profile),
            shots: screenshot_dir(test),
            shots_told: std::cell::Cell::new(false),
        };
        let profile_dir = browser
            .profile
            .as_ref()
            .map(|p| p.path().to_owned())
            .ok_or_else(|| anyhow!("no profile directory"))?;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile_dir.display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": CHROMIUM, "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = browser
            .runtime
            .block_on(async {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&url)
                    .await
                    .map_err(anyhow::Error::from)
            })
            .with_context(|| format!("start Chromium; chromedriver log:\n{}", browser.log()))?;
        browser.client = Some(client);
        Ok(browser)
    }

    /// [`Browser::start`], or `None` (with a note on stderr) when Chromium or chromedriver is
    /// not installed and this is not CI. In CI (`CI` set) a missing browser is an error.
    pub fn start_or_skip(test: &str) -> Result<Option<Browser>> {
        let installed = [CHROMIUM, CHROMEDRIVER]
            .iter()
            .all(|b| Path::new(b).exists());
        if !installed && std::env::var_os("CI").is_none() {
            eprintln!(
                "SKIPPED {test}: no {CHROMIUM} / {CHROMEDRIVER} (apt-get install chromium \
                 chromium-driver fonts-noto-cjk; CI installs them)"
            );
            return Ok(None);
        }
        Browser::start(test).map(Some)
    }

    fn client(&self) -> Result<&Client> {
        self.client
            .as_ref()
            .ok_or_else(|| anyhow!("the browser session is closed"))
    }

    /// chromedriver's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.driver_log).unwrap_or_default()
    }

    /// Opens `url` and waits for the page to load.
    pub fn goto(&self, url: &str) -> Result<()> {
        let client = self.client()?;
        self.runtime
            .block_on(client.goto(url))
            .with_context(|| format!("goto {url}"))
    }

    /// The URL the browser shows now.
    pub fn current_url(&self) -> Result<String> {
        let client = self.client()?;
        Ok(self.runtime.block_on(client.current_url())?.to_string())
    }

    /// The page's HTML source as the browser holds it now.
    pub fn source(&self) -> Result<String> {
        let client = self.client()?;
        Ok(self.runtime.block_on(client.source())?)
    }

    /// The first element matching `css`, waiting up to 10 s for it to appear.
    pub fn find(&self, css: &str) -> Result<Found<'_>> {
        let client = self.client()?;
        let element = self
            .runtime
            .block_on(
                client
                    .wait()
                    .at_most(FIND_WAIT)
                    .for_element(Locator::Css(css)),
            )
            .with_context(|| format!("find {css:?}"))?;
        Ok(Found {
            browser: self,
            element,
            css: css.to_owned(),
        })
    }

    /// Every element matching `css` now (no waiting; empty when none).
    pub fn find_all(&self, css: &str) -> Result<Vec<Found<'_>>> {
        let client = self.client()?;
        let elements = self
            .runtime
            .block_on(client.find_all(Locator::Css(css)))
            .with_context(|| format!("find all {css:?}"))?;
        Ok(elements
            .into_iter()
            .map(|element| Found {
                browser: self,
                element,
                css: css.to_owned(),
            })
            .collect())
    }

    /// Replaces the value of the input matching `css` with `text`.
    pub fn fill(&self, css: &str, text: &str) -> Result<()> {
        self.find(css)?.fill(text)
    }

    /// Clicks the element matching `css`.
    pub fn click(&self, css: &str) -> Result<()> {
        self.find(css)?.click()
    }

    /// The rendered text of the element matching `css` (`"body"` for the whole page).
    pub fn text(&self, css: &str) -> Result<String> {
        self.find(css)?.text()
    }

    /// Runs `js` in the page as the body of a function (WebDriver "execute script": `arguments`
    /// holds `args`, and what it `return`s comes back as JSON).
    pub fn execute(&self, js: &str, args: Vec<serde_json::Value>) -> Result<serde_json::Value> {
        let client = self.client()?;
        self.runtime
            .block_on(client.execute(js, args))
            .with_context(|| format!("execute {js:?}"))
    }

    /// The value of the cookie `name` for the page the browser shows now, if it has one
    /// (HttpOnly cookies included: WebDriver sees what a page script cannot).
    pub fn cookie(&self, name: &str) -> Result<Option<String>> {
        let client = self.client()?;
        let cookies = self.runtime.block_on(client.get_all_cookies())?;
        Ok(cookies
            .into_iter()
            .find(|c| c.name() == name)
            .map(|c| c.value().to_owned()))
    }

    /// Saves a PNG of the whole page like [`Browser::screenshot`]: for the shot the window is
    /// made as tall as the page (the window at most 8000 px tall), then given back its size. The width never
    /// changes, so neither does the layout.
    pub fn screenshot_page(&self, name: &str) -> Result<PathBuf> {
        let client = self.client()?;
        let (width, height) = self.runtime.block_on(client.get_window_size())?;
        // The window is taller than the viewport by the browser's own chrome.
        let sizes = self.execute(
            "return [Math.ceil(document.documentElement.scrollHeight), window.innerHeight]",
            vec![],
        )?;
        let (page, viewport) = (
            sizes[0].as_u64().unwrap_or(height),
            sizes[1].as_u64().unwrap_or(height),
        );
        let chrome = height.saturating_sub(viewport);
        let (width, height) = (u32::try_from(width)?, u32::try_from(height)?);
        let tall = u32::try_from((page + chrome).clamp(u64::from(height), 8000))?;
        self.runtime.block_on(client.set_window_size(width, tall))?;
        let shot = self.screenshot(name);
        self.runtime
            .block_on(client.set_window_size(width, height))?;
        shot
    }

    /// Saves a PNG of the viewport as `target/screenshots/<test>/<name>.png` and returns its
    /// path (the folder is printed on stderr the first time, even when the test passes).
    pub fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let client = self.client()?;
        let png = self.runtime.block_on(client.screenshot())?;
        std::fs::create_dir_all(&self.shots)
            .with_context(|| format!("create {}", self.shots.display()))?;
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("write {}", path.display()))?;
        if !self.shots_told.replace(true) {
            // Straight to the process's stderr, past the test harness's output capture, so a
            // passing `cargo test` run still says where the pictures are.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "screenshots: {}", self.shots.display());
        }
        Ok(path)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the WebDriver session first so chromedriver makes Chromium quit; bounded, since
        // a wedged browser must not hang the test run.
        if let Some(client) = self.client.take() {
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(DEADLINE, client.close()).await });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        drop(self.profile.take());
        let _ = std::fs::remove_file(&self.driver_log);
    }
}

/// An element found on the page.
pub struct Found<'b> {
    browser: &'b Browser,
    element: fantoccini::elements::Element,
    css: String,
}

impl Found<'_> {
    pub fn text(&self) -> Result<String> {
        self.browser
            .runtime
            .block_on(self.element.text())
            .with_context(|| format!("text of {:?}", self.css))
    }

    pub fn click(&self) -> Result<()> {
        self.browser
            .runtime
            .block_on(self.element.click())
            .with_context(|| format!("click {:?}", self.css))
    }

    /// Clears the input and types `text` into it.
    pub fn fill(&self, text: &str) -> Result<()> {
        self.browser
            .runtime
            .block_on(async {
                self.element.clear().await?;
                self.element.send_keys(text).await
            })
            .with_context(|| format!("fill {:?}", self.css))
    }

    /// A DOM property's value (`value` of an input or textarea as it is now), if set.
    pub fn prop(&self, name: &str) -> Result<Option<String>> {
        self.browser
            .runtime
            .block_on(self.element.prop(name))
            .with_context(|| format!("property {name} of {:?}", self.css))
    }

    /// An attribute's value, if the element has it.
    pub fn attr(&self, name: &str) -> Result<Option<String>> {
        self.browser
            .runtime
            .block_on(self.element.attr(name))
            .with_context(|| format!("attribute {name} of {:?}", self.css))
    }
}

/// Where screenshots of `test` go: `<target>/screenshots/<test>/`.
fn screenshot_dir(test: &str) -> PathBuf {
    crate::target_dir().join("screenshots").join(test)
}

/// A loopback port that was free a moment ago: bind port 0, note the port, let it go.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Starts chromedriver on a free loopback port and waits for its "started successfully" line;
/// its stderr goes to `log`.
fn start_driver(log: &Path) -> Result<(Child, u16)> {
    let port = free_port()?;
    let log_file = std::fs::File::create(log)?;
    let mut driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("spawn {CHROMEDRIVER}"))?;
    let stdout = driver
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no chromedriver stdout"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        // Keep reading to the end so chromedriver never blocks on a full pipe.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && line.contains("started successfully") {
                let _ = tx.send(());
                sent = true;
            }
        }
    });
    if rx.recv_timeout(DEADLINE).is_err() {
        let _ = driver.kill();
        let _ = driver.wait();
        bail!(
            "chromedriver did not start on port {port}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    Ok((driver, port))
}
