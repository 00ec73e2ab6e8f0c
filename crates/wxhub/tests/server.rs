//! The real server on a loopback port: health, readiness, and a keyring rotated while it runs.

use std::sync::Arc;

use wechat::SystemClock;
use wxhub::config::{Config, ConfigArgs};
use wxhub::server::{AppState, serve_on};

/// A configuration whose data directory (not yet created) lies in a fresh temporary
/// directory, removed on drop.
fn dev_config() -> (testkit::TempDir, Config) {
    let dir = testkit::TempDir::new();
    let config = Config::load(&ConfigArgs {
        data_dir: Some(dir.path().join("data")),
        dev_keyring: true,
        ..ConfigArgs::default()
    })
    .unwrap();
    (dir, config)
}

#[tokio::test]
async fn health_and_readiness_answer_on_a_random_port() {
    let (_dir, config) = dev_config();
    let state = AppState::open(config, Arc::new(SystemClock)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(listener, state, async {
        let _ = stopped.await;
    }));
    // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let health = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");
    let ready = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_running_server_picks_up_a_rotated_keyring_file() {
    let (dir, config) = dev_config();
    let keyring_path = dir.path().join("data").join("keyring.toml");
    let state = AppState::open(config, Arc::new(SystemClock)).await.unwrap();
    let before = state.vault.current().keyring().active_id().to_string();
    assert!(
        !state.vault.reload_if_changed(&state.store).await.unwrap(),
        "nothing changed yet"
    );

    let rotated = vault::Keyring::load(&keyring_path)
        .unwrap()
        .add_key(vault::KeyId::new("rotated").unwrap())
        .unwrap();
    rotated.save(&keyring_path).unwrap();
    assert!(state.vault.reload_if_changed(&state.store).await.unwrap());
    let vault = state.vault.current();
    assert_eq!(vault.keyring().active_id().as_str(), "rotated");
    assert!(
        vault.keyring().contains(&before),
        "the old key must stay usable"
    );

    // A broken edit is reported and the working keyring kept.
    std::fs::write(&keyring_path, "not a keyring").unwrap();
    assert!(state.vault.reload_if_changed(&state.store).await.is_err());
    assert_eq!(
        state.vault.current().keyring().active_id().as_str(),
        "rotated"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_data_directory_and_its_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let (dir, config) = dev_config();
    let state = AppState::open(config, Arc::new(SystemClock)).await.unwrap();
    let data = dir.path().join("data");
    assert_eq!(mode(&data), 0o700, "the data directory");
    for name in ["wxhub.db", "wxhub.db-wal", "wxhub.db-shm"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    state.store.close().await;
}

/// Serves `state` on a loopback port until the returned sender is used or dropped.
async fn serve(state: AppState) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_on(listener, state, async {
        let _ = stopped.await;
    }));
    let _ = rustls::crypto::ring::default_provider().install_default();
    (addr, stop)
}

/// Waits (at most 10 s) until `done` holds.
async fn until(mut done: impl AsyncFnMut() -> bool) {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !done().await {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the condition did not hold within 10 s");
}

const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef0123456789";

#[tokio::test]
async fn metrics_are_never_open_by_default_and_need_the_token_on_the_main_listener() {
    let (_dir, config) = dev_config();
    let state = AppState::open(config, Arc::new(SystemClock)).await.unwrap();
    let (addr, _stop) = serve(state).await;
    let http = reqwest::Client::new();
    let response = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "not served without configuration");

    let (_dir, mut config) = dev_config();
    config.metrics_token = Config::load(&ConfigArgs {
        metrics_token: Some(METRICS_TOKEN.to_owned()),
        ..ConfigArgs::default()
    })
    .unwrap()
    .metrics_token;
    let state = AppState::open(config, Arc::new(SystemClock)).await.unwrap();
    let (addr, _stop) = serve(state).await;
    let url = format!("http://{addr}/metrics");
    for token in [None, Some("wrong"), Some(&METRICS_TOKEN[1..])] {
        let mut request = http.get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{token:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    // A request to count, by its route's pattern.
    http.get(format!("http://{addr}/t/wxnosuchaccount/jwks"))
        .send()
        .await
        .unwrap();
    let response = http
        .get(&url)
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains(
            r#"wxhub_http_requests_total{route="/t/{appid}/jwks",method="GET",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(!text.contains("wxnosuchaccount"), "no path in a label");
    for series in [
        "wxhub_http_request_duration_seconds_bucket",
        "wxhub_db_connections{state=\"idle\"}",
        "wxhub_datacube_sync_accounts 0",
        "wxhub_scheduler_last_pass_age_seconds",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn metrics_listen_serves_them_apart_from_the_public_listener() {
    let (_dir, mut config) = dev_config();
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = probe.local_addr().unwrap();
    drop(probe);
    config.metrics_listen = Some(metrics_addr);
    let state = AppState::open(config, Arc::new(SystemClock)).await.unwrap();
    let (addr, _stop) = serve(state).await;
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "the public listener does not serve them"
    );
    let mut text = String::new();
    until(async || {
        match http
            .get(format!("http://{metrics_addr}/metrics"))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => {
                text = r.text().await.unwrap();
                true
            }
            _ => false,
        }
    })
    .await;
    assert!(
        text.contains("wxhub_accounts{state=\"healthy\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("wxhub_accounts{state=\"disabled\"} 0"),
        "{text}"
    );
}

#[tokio::test]
async fn readiness_reports_a_scheduler_that_stopped_making_progress() {
    let (_dir, config) = dev_config();
    let clock = wechat::ManualClock::starting_now();
    let state = AppState::open(config, Arc::new(clock.clone()))
        .await
        .unwrap();
    let tokens = state.tokens.clone();
    let (addr, _stop) = serve(state).await;
    let http = reqwest::Client::new();
    let ready = async || {
        let r = http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    until(async || tokens.last_progress().is_some()).await;
    assert_eq!(ready().await.0, 200);
    // Time passes and the scheduler's loop has not come round (it sleeps on real time).
    clock.advance(wxhub::server::SCHEDULER_STALL + std::time::Duration::from_secs(1));
    let (status, text) = ready().await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("scheduler stalled"), "{text}");
    // Once it runs again, the replica is ready again.
    tokens.wake();
    until(async || ready().await.0 == 200).await;
}
