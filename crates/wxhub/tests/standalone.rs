//! Commands that run one piece alone, as a person testing a client or a container's health
//! check runs them: `wxhub sim --manual-clock` and `wxhub healthcheck`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// A `wxhub` command with no `WXHUB_*` variable of the surrounding environment.
fn wxhub() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wxhub"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WXHUB_") {
            command.env_remove(name);
        }
    }
    command
}

/// `wxhub sim` on a free port, killed when dropped.
struct Sim {
    child: Child,
    base: String,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sim(args: &[&str]) -> Sim {
    let mut child = wxhub()
        .args(["sim", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wxhub sim");
    let stdout = child.stdout.take().expect("piped stdout");
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keeps reading after the test stopped listening: a closed pipe would make the
        // simulator's next line fail to print, and end it.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    let first = receive
        .recv_timeout(Duration::from_secs(30))
        .expect("the simulator prints its address");
    let base = first
        .strip_prefix("WeChat simulator at ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .trim_end_matches('/')
        .to_owned();
    Sim { child, base }
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

#[tokio::test]
async fn a_manual_clock_moves_only_through_the_control_api_and_kills_superseded_tokens() {
    let sim = start_sim(&["--empty", "--manual-clock"]);
    let http = http();
    let base = &sim.base;
    let (_, clock) = json_of(
        http.get(format!("{base}/__sim/clock"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(clock["manual"], true);
    let start = clock["now_ms"].as_i64().unwrap();

    let appid = "wx0123456789abcdef";
    let secret = "0123456789abcdef0123456789abcdef";
    let created = http
        .post(format!("{base}/__sim/accounts"))
        .json(&json!({ "appid": appid, "secret": secret }))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{created:?}");
    let token_url =
        format!("{base}/cgi-bin/token?grant_type=client_credential&appid={appid}&secret={secret}");
    let fetch = async || {
        let (_, body) = json_of(http.get(&token_url).send().await.unwrap()).await;
        body["access_token"].as_str().expect("a token").to_owned()
    };
    let use_token = async |token: &str| {
        let (_, body) = json_of(
            http.get(format!("{base}/cgi-bin/getcallbackip?access_token={token}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        body["errcode"].as_i64().unwrap_or(0)
    };
    let first = fetch().await;
    let second = fetch().await;
    assert_ne!(first, second);
    // docs/wechat.md §1: the superseded token keeps working for 300 s.
    assert_eq!(use_token(&first).await, 0, "within its grace");

    let (status, moved) = json_of(
        http.post(format!("{base}/__sim/clock/advance"))
            .json(&json!({ "secs": 301 }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["now_ms"].as_i64(), Some(start + 301_000));
    assert_ne!(use_token(&first).await, 0, "dead once the grace is over");
    assert_eq!(use_token(&second).await, 0, "the current token lives on");
    // It stands still between moves: no real time passes on it.
    let (_, clock) = json_of(
        http.get(format!("{base}/__sim/clock"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(clock["now_ms"].as_i64(), Some(start + 301_000));

    let (status, set) = json_of(
        http.post(format!("{base}/__sim/clock/set"))
            .json(&json!({ "now_ms": start + 7_200_000 }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert_ne!(use_token(&second).await, 0, "expired after its 7200 s");
}

#[tokio::test]
async fn without_manual_clock_the_control_api_cannot_move_time() {
    let sim = start_sim(&["--empty"]);
    let http = http();
    let (status, body) = json_of(
        http.post(format!("{}/__sim/clock/advance", sim.base))
            .json(&json!({ "secs": 60 }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["kind"], "clock_not_manual");
}

/// Serves `/readyz` answering `status` on a loopback port; returns the URL.
async fn readyz_answering(status: u16) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/readyz",
        axum::routing::get(move || async move {
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                if status == 200 {
                    "ready"
                } else {
                    "database unavailable"
                },
            )
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/readyz")
}

async fn healthcheck(url: &str) -> std::process::Output {
    let mut command = wxhub();
    command.args(["healthcheck", "--url", url]);
    tokio::task::spawn_blocking(move || command.output().expect("run wxhub healthcheck"))
        .await
        .unwrap()
}

#[tokio::test]
async fn healthcheck_passes_only_when_readyz_answers_200() {
    let ready = healthcheck(&readyz_answering(200).await).await;
    assert!(ready.status.success(), "{ready:?}");
    assert!(String::from_utf8_lossy(&ready.stdout).contains("ready"));

    let unready = healthcheck(&readyz_answering(503).await).await;
    assert_eq!(unready.status.code(), Some(1), "{unready:?}");
    let said = String::from_utf8_lossy(&unready.stderr);
    assert!(
        said.contains("503") && said.contains("database unavailable"),
        "{said}"
    );

    // Nothing listens on a port just released.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let down = healthcheck(&format!("http://{closed}/readyz")).await;
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    assert!(String::from_utf8_lossy(&down.stderr).contains("does not answer"));
}
