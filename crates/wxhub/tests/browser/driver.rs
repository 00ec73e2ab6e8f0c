//! Headless Chromium through chromedriver (WebDriver, driven with `fantoccini`): starting the
//! driver on a free port, the browser session, waiting for pages, and full-page screenshots in
//! both languages at a phone's and a desktop's width.
//!
//! chromedriver comes from Debian's `chromium-driver` package. Without it the test says so and
//! passes without running, unless [`REQUIRE_VAR`] is `1` (CI sets it), when it fails.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method;
use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// Set to `1` where the browser test must run (CI): a missing chromedriver fails it.
pub const REQUIRE_VAR: &str = "WXHUB_REQUIRE_BROWSER";

/// What the test prints (on stderr) when it does not run.
pub const DID_NOT_RUN: &str = "did not run: chromedriver is not installed";

/// How long any page, element or condition may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The widths every page is photographed at: the WeChat in-app browser on a small phone, and
/// a desktop.
pub const WIDTHS: [u32; 2] = [375, 1280];

/// The tallest screenshot taken, so a runaway page cannot make a huge image.
const MAX_SHOT_HEIGHT: u32 = 8_000;

/// chromedriver on `PATH`; `None` (after saying why on stderr) when the test may be skipped.
/// Panics when it is missing and [`REQUIRE_VAR`] is `1`.
pub fn chromedriver_or_skip() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("chromedriver"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let install = "apt-get install chromium chromium-driver fonts-noto-cjk";
        if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") {
            panic!("{REQUIRE_VAR}=1 but there is no chromedriver on PATH ({install})");
        }
        // Straight to stderr, past the test harness's capture: whoever runs the tests sees
        // that this one did not run.
        let _ = writeln!(
            std::io::stderr(),
            "{DID_NOT_RUN} (no chromedriver on PATH; {install}, or set {REQUIRE_VAR}=1 to make \
             this a failure)"
        );
    }
    found
}

/// A chromedriver child process, killed when dropped (also when the test panics).
pub struct Chromedriver {
    child: Child,
    pub url: String,
}

impl Chromedriver {
    /// Starts `binary` on a port of its choosing and waits until it says which.
    pub fn start(binary: &Path) -> Chromedriver {
        let mut child = Command::new(binary)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, receive) = std::sync::mpsc::channel();
        // Reads to the end, so chromedriver never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut driver = Chromedriver {
            child,
            url: String::new(),
        };
        let deadline = Instant::now() + TIMEOUT;
        while driver.url.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = receive
                .recv_timeout(left)
                .expect("chromedriver says on which port it listens");
            if let Some(port) = line
                .split("started successfully on port ")
                .nth(1)
                .map(|rest| rest.trim_end_matches('.').trim())
            {
                driver.url = format!("http://127.0.0.1:{port}");
            }
        }
        driver
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium's profile directory, in the system's temporary directory and removed on drop.
/// Not a `testkit::TempDir`: those are kept for the secret canary check, and a browser's
/// history holds the login redirects' one-time codes, as any browser's does — what the check
/// looks for is what wxhub itself writes.
struct Profile(PathBuf);

impl Profile {
    fn new() -> Profile {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("wxhub-chromium-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a profile directory for Chromium");
        Profile(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The browser session and where its screenshots go.
pub struct Browser {
    pub client: Client,
    /// Chromium's profile, removed on drop.
    _profile: Profile,
    shots: Option<PathBuf>,
    taken: usize,
    /// Every screenshot file written, in order.
    pub files: Vec<PathBuf>,
    /// Pages wider than the viewport they were shown in, with what sticks out.
    pub too_wide: Vec<String>,
}

/// The innermost elements that stick out beyond the viewport's width (`arguments[0]`): their
/// box does, or content they let overflow does.
const WIDER_THAN_VIEWPORT: &str = "\
    const width = arguments[0];\
    const out = e => e.getBoundingClientRect().right > width + 0.5 ||\
      (e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX === 'visible');\
    return [...document.body.querySelectorAll('*')].filter(out)\
      .filter(e => ![...e.children].some(out))\
      .slice(0, 5)\
      .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +\
        (e.className ? '.' + String(e.className).split(' ').join('.') : '') +\
        ' (' + Math.max(Math.round(e.getBoundingClientRect().right), e.scrollWidth) + ' px)');";

/// Whether `error` says an element belongs to a page that is gone. (Mid-navigation Chromium
/// may say so as an "unknown error" from its inspector.)
fn is_stale(error: &CmdError) -> bool {
    use fantoccini::error::ErrorStatus;
    matches!(error, CmdError::Standard(e)
        if e.error == ErrorStatus::StaleElementReference
            || e.error == ErrorStatus::NoSuchElement
            || e.message.contains("does not belong to the document"))
}

impl Browser {
    /// A new headless Chromium session asking for Chinese pages first (the dashboard's
    /// default audience), its screenshots written under `shots` (emptied first), or none.
    pub async fn open(driver: &Chromedriver, shots: Option<PathBuf>) -> Browser {
        let profile = Profile::new();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    "--lang=zh-CN",
                    format!("--user-data-dir={}", profile.path().display()),
                    "--window-size=1280,900",
                    // The end user's steps happen in WeChat's own browser: the login gateway
                    // shows any other browser its scan-to-log-in page instead of WeChat's
                    // authorize page.
                    "--user-agent=Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) \
                     Chrome/126.0 Mobile Safari/537.36 MicroMessenger/8.0.50.2701 NetType/WIFI Language/zh_CN",
                ],
                "prefs": { "intl.accept_languages": "zh-CN,zh" },
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal");
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .expect("a chromedriver session");
        if let Some(shots) = &shots {
            let _ = std::fs::remove_dir_all(shots);
            std::fs::create_dir_all(shots).expect("create the screenshot directory");
        }
        Browser {
            client,
            _profile: profile,
            shots,
            taken: 0,
            files: Vec::new(),
            too_wide: Vec::new(),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Waits for the element `css` to appear.
    pub async fn wait_for(&self, css: &str) -> Element {
        let found = self
            .client
            .wait()
            .at_most(TIMEOUT)
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => element,
            Err(error) => {
                let url = self.client.current_url().await.map(String::from);
                let page = self.client.source().await.unwrap_or_default();
                panic!("waited {TIMEOUT:?} for {css} on {url:?}: {error}\n{page}")
            }
        }
    }

    /// The current URL.
    pub async fn url(&self) -> url::Url {
        self.client.current_url().await.expect("the current URL")
    }

    /// The text of the element `css`, once it is there.
    pub async fn text(&self, css: &str) -> String {
        self.wait_for(css)
            .await
            .text()
            .await
            .expect("an element's text")
    }

    /// The value of the form field `css` (a textarea's or an input's).
    pub async fn value(&self, css: &str) -> String {
        self.wait_for(css)
            .await
            .prop("value")
            .await
            .expect("a field's value")
            .unwrap_or_default()
    }

    /// Types `text` into the field `css`, replacing what it held.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.wait_for(css).await;
        field.clear().await.expect("clear a field");
        field.send_keys(text).await.expect("type into a field");
    }

    /// Clicks `css` and waits until the browser has left the page it was on (the old page's
    /// root element goes stale) and the new one has loaded.
    pub async fn click_to_next_page(&self, css: &str) {
        let old = self.wait_for("html").await;
        self.wait_for(css).await.click().await.expect("click");
        // chromedriver answers a click once the navigation it started has loaded, so the old
        // page is nearly always gone at the first look.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match old.tag_name().await {
                Err(error) if is_stale(&error) => break,
                Err(error) => panic!("waiting for the next page after {css}: {error}"),
                Ok(_) => assert!(
                    Instant::now() < deadline,
                    "clicking {css} did not lead to another page within {TIMEOUT:?}"
                ),
            }
        }
        self.wait_for("body").await;
    }

    /// The page's language (`<html lang>`).
    pub async fn lang(&self) -> String {
        self.wait_for("html")
            .await
            .attr("lang")
            .await
            .expect("the lang attribute")
            .unwrap_or_default()
    }

    /// Switches the dashboard's language with the page's own language link, back to the page.
    pub async fn switch_language(&self, lang: &str) {
        self.click_to_next_page(&format!("nav.langs a[lang='{lang}']"))
            .await;
        self.wait_for(&format!("html[lang='{lang}']")).await;
    }

    /// Photographs the whole page at each of [`WIDTHS`], in the language it is in.
    pub async fn shoot(&mut self, name: &str) {
        let Some(shots) = self.shots.clone() else {
            return;
        };
        self.taken += 1;
        let lang = self.lang().await;
        let lang = if lang.is_empty() {
            "page".to_owned()
        } else {
            lang
        };
        for width in WIDTHS {
            let file = shots.join(format!("{:02}-{name}-{lang}-{width}.png", self.taken));
            self.shoot_at(width, &file).await;
            self.files.push(file);
        }
    }

    /// A dashboard page (reached with GET) in both languages: as it is, then in the other
    /// language through the page's language switch, then back.
    pub async fn shoot_both(&mut self, name: &str) {
        if self.shots.is_none() {
            return;
        }
        let first = self.lang().await;
        let other = if first == "en" { "zh-CN" } else { "en" };
        self.shoot(name).await;
        // Both languages' files share the page's number.
        self.taken -= 1;
        self.switch_language(other).await;
        self.shoot(name).await;
        self.switch_language(&first).await;
    }

    /// Photographs the page as [`Browser::shoot`] does, with the browser asking for a dark
    /// colour scheme (`prefers-color-scheme: dark`).
    pub async fn shoot_dark(&mut self, name: &str) {
        if self.shots.is_none() {
            return;
        }
        let dark = json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] });
        self.cdp("Emulation.setEmulatedMedia", dark).await;
        self.shoot(&format!("{name}-dark")).await;
        self.cdp("Emulation.setEmulatedMedia", json!({ "features": [] }))
            .await;
    }

    async fn shoot_at(&mut self, width: u32, file: &Path) {
        // A desktop window cannot be narrower than 500 px, so the widths are emulated the way
        // DevTools' device mode does it (a phone's width also honours the page's viewport tag).
        let mobile = width < 600;
        // Measured as a desktop browser lays the page out at this width: a phone's browser
        // would zoom out to fit what sticks out, hiding it from the measurement.
        self.emulate(width, 900, false).await;
        let wide = self
            .client
            .execute("return document.documentElement.scrollWidth;", Vec::new())
            .await
            .expect("measure the page's width")
            .as_u64()
            .unwrap_or(0);
        if wide > u64::from(width) {
            let culprits = self
                .client
                .execute(WIDER_THAN_VIEWPORT, vec![json!(width)])
                .await
                .expect("find what is too wide");
            self.too_wide.push(format!(
                "{} is {wide} px wide at {width} px: {culprits}",
                file.display()
            ));
        }
        self.emulate(width, 900, mobile).await;
        let height = self
            .client
            .execute(
                "return Math.ceil(document.documentElement.scrollHeight);",
                Vec::new(),
            )
            .await
            .expect("measure the page")
            .as_u64()
            .and_then(|h| u32::try_from(h).ok())
            .unwrap_or(900);
        self.emulate(width, height.clamp(600, MAX_SHOT_HEIGHT), mobile)
            .await;
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(file, png).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({}))
            .await;
    }

    /// Makes the page's viewport `width` × `height` CSS pixels.
    async fn emulate(&self, width: u32, height: u32, mobile: bool) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": width,
                "height": height,
                "deviceScaleFactor": 1,
                "mobile": mobile,
            }),
        )
        .await;
    }

    /// A Chrome DevTools Protocol command, through chromedriver.
    async fn cdp(&self, cmd: &'static str, params: serde_json::Value) {
        self.client
            .issue_cmd(Cdp { cmd, params })
            .await
            .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    }

    /// Ends the session: Chromium quits.
    pub async fn close(self) -> Result<(), CmdError> {
        self.client.close().await
    }
}

/// chromedriver's own command that passes a DevTools Protocol command to the browser.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: serde_json::Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (Method::POST, Some(body.to_string()))
    }
}
