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
