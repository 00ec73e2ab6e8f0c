//! The real server on a loopback port: health, readiness, and a keyring rotated while it runs.

use std::sync::Arc;

use wechat::SystemClock;
use wxhub::config::{Config, ConfigArgs};
use wxhub::server::{AppState, serve_on};

struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dev_config() -> (Dir, Config) {
    let dir = Dir(std::env::temp_dir().join(format!("wxhub-server-test-{}", store::new_id())));
    let config = Config::load(&ConfigArgs {
        data_dir: Some(dir.0.clone()),
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
    let keyring_path = dir.0.join("keyring.toml");
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
