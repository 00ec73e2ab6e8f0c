//! `wxhub demo`, the README's run command, as a person would use it: start it, open the sample
//! website it prints, log in with WeChat in both modes, and land back logged in. The browser is
//! played by an HTTP client that follows redirects by hand and keeps the login cookie.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Demo {
    child: Child,
    dir: std::path::PathBuf,
    /// Everything the demo logged (at debug level).
    log: std::path::PathBuf,
    site: String,
    sim: String,
    /// The one-time dashboard links printed for the demo owner and operator.
    dashboard_links: Vec<String>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Starts the demo on free ports and reads what it prints: the URLs, then the line saying
/// alice's follow (which the demo makes at start) has reached the hub.
fn start_demo() -> Demo {
    let dir = std::env::temp_dir().join(format!("wxhub-demo-test-{}", store::new_id()));
    let log = dir.with_extension("log");
    let log_file = std::fs::File::create(&log).expect("create the log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_wxhub"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WXHUB_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .env("WXHUB_LOG", "debug")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0", "demo"])
        .args([
            "--sim-listen",
            "127.0.0.1:0",
            "--site-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("start wxhub demo");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let (mut site, mut sim, mut followed) = (None, None, false);
    let mut dashboard_links = Vec::new();
    while !(followed && site.is_some() && sim.is_some() && dashboard_links.len() == 2) {
        let line = receive
            .recv_timeout(Duration::from_secs(30))
            .expect("the demo prints its URLs and alice's follow within 30 s");
        let url = line.split_whitespace().find(|w| w.starts_with("http://"));
        if line.contains("sample website") {
            site = url.map(str::to_owned);
        } else if line.contains("simulated WeChat app") {
            sim = url.map(|u| u.trim_end_matches("__sim/phone").to_owned());
        } else if line.contains("dashboard as the") {
            dashboard_links.extend(url.map(str::to_owned));
        } else if line.contains("alice now follows") {
            followed = true;
        }
    }
    Demo {
        child,
        dir,
        log,
        site: site.expect("the demo prints the sample website's URL"),
        sim: sim.expect("the demo prints the simulated WeChat app's URL"),
        dashboard_links,
    }
}

/// A browser: no automatic redirects, one cookie kept by hand (the login binding).
struct Browser {
    http: reqwest::Client,
    cookie: Option<String>,
    /// Every redirect target seen (they carry codes and states).
    seen: Vec<String>,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                // A person in WeChat's own browser: the gateway shows any other browser its
                // scan-to-log-in page instead of WeChat's authorize page.
                .user_agent(
                    "Mozilla/5.0 (iPhone) AppleWebKit/605.1.15 Mobile MicroMessenger/8.0.50",
                )
                .build()
                .unwrap(),
            cookie: None,
            seen: Vec::new(),
        }
    }

    /// GETs `url`; returns the redirect target, or the page's text when there is none.
    async fn get(&mut self, url: &str) -> Result<String, String> {
        let mut request = self.http.get(url);
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        if let Some(set) = response.headers().get("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookie = Some(pair);
        }
        match response.headers().get("location") {
            Some(location) => {
                let location = location.to_str().unwrap().to_owned();
                self.seen.push(location.clone());
                Ok(location)
            }
            None => Err(response.text().await.unwrap()),
        }
    }

    /// Logs in through the sample site's button `button`, as `user` answering `answer` on
    /// the simulator's authorize page; returns the page the site finally shows.
    async fn login(&mut self, demo: &Demo, button: usize, user: &str, answer: &str) -> String {
        let authorize = self
            .get(&format!("{}login?client={button}", demo.site))
            .await
            .unwrap();
        let wechat = self
            .get(&authorize)
            .await
            .expect("wxhub sends the browser to WeChat");
        let wechat = wechat.split('#').next().unwrap();
        assert!(wechat.starts_with(&demo.sim), "{wechat}");
        let callback = self
            .get(&format!("{wechat}&sim_user={user}&sim_answer={answer}"))
            .await
            .expect("WeChat redirects back");
        let mut next = self.get(&callback).await;
        // Follow redirects until a page: the site's callback, or a page of wxhub's.
        while let Ok(location) = next {
            next = self.get(&location).await;
        }
        next.unwrap_err()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_logs_people_in_with_both_modes() {
    // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let demo = start_demo();

    // Follow-required: alice follows the first account, so she is let straight in.
    let mut alice = Browser::new();
    let page = alice.login(&demo, 0, "alice", "allow").await;
    assert!(page.contains("已登录 Logged in"), "{page}");
    assert!(page.contains("&quot;follows_account&quot;: true"), "{page}");

    // Follow-required: bob does not follow, so wxhub asks him to.
    let page = Browser::new().login(&demo, 0, "bob", "allow").await;
    assert!(page.contains("Follow to continue"), "{page}");

    // Userinfo: carol's nickname comes from WeChat; refusing leaves her logged out.
    let page = Browser::new().login(&demo, 1, "carol", "allow").await;
    assert!(page.contains("已登录 Logged in"), "{page}");
    assert!(page.contains("Carol"), "{page}");
    let page = Browser::new().login(&demo, 1, "carol", "deny").await;
    assert!(page.contains("You declined"), "{page}");

    // Alice writes to the first account from the simulated phone: the owner's sample bot
    // answers her through wxhub (its reply route), and the phone's chat shows it.
    let http = reqwest::Client::new();
    let sent: serde_json::Value = http
        .post(format!(
            "{}__sim/accounts/wx5a1e0d3c0ffee001/users/alice/text",
            demo.sim
        ))
        .json(&serde_json::json!({"content": "ni hao"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reply = &sent["delivery"]["attempts"][0]["reply"];
    assert_eq!(reply["valid"], true, "{sent}");
    assert!(
        reply["content"]
            .as_str()
            .unwrap()
            .contains("示例机器人收到：ni hao"),
        "{sent}"
    );
    let phone = http
        .get(format!("{}__sim/phone", demo.sim))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        phone.contains("<p class=\"bot\">示例机器人收到：ni hao"),
        "{phone}"
    );
}

/// The values of `code=` query parameters in `urls`.
fn codes(urls: &[String]) -> Vec<String> {
    urls.iter()
        .filter_map(|u| url::Url::parse(u).ok())
        .flat_map(|u| {
            u.query_pairs()
                .filter(|(k, _)| k == "code")
                .map(|(_, v)| v.into_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_a_working_dashboard_link_for_its_owner_and_operator() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let demo = start_demo();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let [owner, operator] = <[String; 2]>::try_from(demo.dashboard_links.clone()).unwrap();
    assert!(owner.contains("/dashboard/invitation/"), "{owner}");
    assert!(operator.contains("/dashboard/setup/"), "{operator}");
    for link in [&owner, &operator] {
        let page = http.get(link).send().await.unwrap();
        assert_eq!(page.status(), 200, "{link}");
        assert!(page.text().await.unwrap().contains("wxhub"));
    }
    // The hub's root leads to the dashboard, and from there to sign-in.
    let hub = owner.split("/dashboard/").next().unwrap();
    let root = http.get(format!("{hub}/")).send().await.unwrap();
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/dashboard/");
    let start = http.get(format!("{hub}/dashboard/")).send().await.unwrap();
    assert_eq!(start.headers()["location"], "/dashboard/sign-in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_logs_no_secret_token_or_code_even_at_debug_level() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let demo = start_demo();
    let mut browser = Browser::new();
    let page = browser.login(&demo, 0, "alice", "allow").await;
    assert!(page.contains("已登录 Logged in"), "{page}");
    let mut carol = Browser::new();
    carol.login(&demo, 1, "carol", "allow").await;

    let mut secrets: Vec<String> = [
        // The demo's sample AppSecrets, push Tokens and EncodingAESKeys (crates/wxhub/src/demo.rs).
        "0d1e2a3d4b5e6e7f8a9b0c1d2e3f4a5b",
        "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d",
        "democoffee",
        "demobooks",
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut",
    ]
    .map(str::to_owned)
    .into();
    // Every core token the simulator minted for the sample accounts.
    let http = reqwest::Client::new();
    for appid in ["wx5a1e0d3c0ffee001", "wx5a1e0d3cb00c5002"] {
        let tokens: serde_json::Value = http
            .get(format!("{}__sim/accounts/{appid}/tokens", demo.sim))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for token in tokens.as_array().expect("a token list") {
            secrets.push(token["access_token"].as_str().unwrap().to_owned());
        }
    }
    // The OAuth codes of both sides: WeChat's and wxhub's.
    let seen: Vec<String> = browser.seen.iter().chain(&carol.seen).cloned().collect();
    let codes = codes(&seen);
    assert!(
        codes.len() >= 4,
        "expected WeChat's and wxhub's codes: {seen:?}"
    );
    secrets.extend(codes);
    // The dashboard's one-time links, opened and refused once (a form without its token).
    for link in &demo.dashboard_links {
        http.get(link).send().await.unwrap();
        http.post(link)
            .form(&[("password", "x")])
            .send()
            .await
            .unwrap();
        secrets.push(link.rsplit('/').next().unwrap().to_owned());
    }

    let log = std::fs::read_to_string(&demo.log).unwrap();
    assert!(
        log.contains("core token refreshed"),
        "the log is not at debug level: {log}"
    );
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the log contains a secret, token or code"
        );
    }
}
