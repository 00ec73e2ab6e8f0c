//! Master-key rotation with the server in the loop: `wxhub vault rotate`, `rewrap` and
//! `drop-key` (in-process, as the CLI runs them), a server that keeps serving while the keyring
//! file changes under it, and a server restarted on a keyring without the old key — whose
//! tenants' `/token` must still sign ID tokens that verify. On SQLite and (when
//! `WXHUB_TEST_POSTGRES_URL` is set) PostgreSQL.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use store::accounts::{AccountKind, TokenMode};
use store::oidc::LoginMode;
use testkit::{TempDir, TestDatabase};
use vault::{Keyring, SecretString};
use wechat::SystemClock;
use wechat_sim::{AccountSpec, RunningSim, SimConfig, Simulator, UserSpec};
use wxhub::config::{Config, ConfigArgs};
use wxhub::ops;
use wxhub::server::{AppState, serve_on};

const APPID: &str = "wx0123456789abcdef";
const SECRET: &str = testkit::canary::APP_SECRET;
const REDIRECT: &str = "http://127.0.0.1:9/cb";

/// One running server.
struct Hub {
    public: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Hub {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// One database, the simulator, and one data directory (with its own keyring file) per
/// host.
struct Deployment {
    hosts: Vec<TempDir>,
    db_url: String,
    sim: RunningSim,
    http: reqwest::Client,
}

impl Deployment {
    /// The configuration of a server on `host` at `public` (each start gets a new port).
    fn config(&self, host: usize, public: &str) -> Config {
        Config::load(&ConfigArgs {
            data_dir: Some(self.hosts[host].path().to_owned()),
            database_url: Some(self.db_url.clone()),
            public_url: Some(public.parse().unwrap()),
            wechat_api_url: Some(self.sim.base_url()),
            wechat_open_url: Some(self.sim.base_url()),
            ..ConfigArgs::default()
        })
        .unwrap()
    }

    /// What the operator commands on `host` run with (no server address involved).
    fn cli_config(&self, host: usize) -> Config {
        self.config(host, "http://127.0.0.1:9")
    }

    fn keyring_file(&self, host: usize) -> std::path::PathBuf {
        self.hosts[host].path().join("keyring.toml")
    }

    /// Copies host 0's keyring file to `host`, as an operator distributes it.
    fn copy_keyring_to(&self, host: usize) {
        Keyring::load(self.keyring_file(0))
            .unwrap()
            .save(self.keyring_file(host))
            .unwrap();
    }

    /// Opens the application on `host` as `wxhub serve` does (start-up checks included) and
    /// serves it.
    async fn start(&self, host: usize) -> (Hub, AppState) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let public = format!("http://{addr}");
        let state = AppState::open(self.config(host, &public), Arc::new(SystemClock))
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_on(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        (Hub { public, stop, task }, state)
    }

    /// A full login of alice at `hub` through the simulated WeChat, and the code's redemption
    /// at `/token`: returns the ID token's kid after checking its signature against the JWKS.
    async fn login_and_verify(&self, hub: &Hub, client_id: &str, secret: &str) -> String {
        let issuer = format!("{}/t/{APPID}", hub.public);
        let verifier = format!("verifier-{}", store::new_id());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut cookies: HashMap<String, String> = HashMap::new();
        let authorize = self
            .get(
                &format!("{issuer}/authorize"),
                &[
                    ("response_type", "code"),
                    ("client_id", client_id),
                    ("redirect_uri", REDIRECT),
                    ("scope", "openid profile"),
                    ("state", "st-1"),
                    ("nonce", "n-1"),
                    ("code_challenge", &challenge),
                    ("code_challenge_method", "S256"),
                ],
                &mut cookies,
            )
            .await;
        let to_wechat = location(&authorize);
        let wechat = format!(
            "{}&sim_user=alice&sim_answer=allow",
            to_wechat.trim_end_matches("#wechat_redirect")
        );
        let back = location(&self.get(&wechat, &[], &mut cookies).await);
        let done = self.get(&back, &[], &mut cookies).await;
        let callback = url::Url::parse(&location(&done)).unwrap();
        assert!(callback.as_str().starts_with(REDIRECT), "{callback}");
        let code = callback
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no code in {callback}"));

        let response = self
            .http
            .post(format!("{issuer}/token"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("client_id", client_id),
                ("client_secret", secret),
                ("code_verifier", &verifier),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        let body: Value = response.json().await.unwrap();
        let id_token = body["id_token"].as_str().unwrap().to_owned();
        let jwks: Value = self
            .http
            .get(format!("{issuer}/jwks"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        verify_id_token(&id_token, &jwks)
    }

    async fn get(
        &self,
        url: &str,
        query: &[(&str, &str)],
        cookies: &mut HashMap<String, String>,
    ) -> reqwest::Response {
        let mut request = self.http.get(url).query(query);
        if !cookies.is_empty() {
            let header: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            request = request.header("cookie", header.join("; "));
        }
        let response = request.send().await.unwrap();
        if response.status().is_server_error() {
            // The error page says which step broke.
            panic!(
                "GET {url}: {} {}",
                response.status(),
                response.text().await.unwrap()
            );
        }
        for set in response.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            cookies.insert(name.trim().to_owned(), value.trim().to_owned());
        }
        response
    }
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location on a {} response", response.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Checks an RS256 or ES256 JWS against the JWKS key its header names; returns that kid.
fn verify_id_token(jwt: &str, jwks: &Value) -> String {
    let (signed, signature) = jwt.rsplit_once('.').unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(signed.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let kid = header["kid"].as_str().unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap_or_else(|| panic!("kid {kid} is not in the JWKS"));
    assert_eq!(header["alg"], jwk["alg"]);
    let field = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    match header["alg"].as_str() {
        Some("RS256") => ring::signature::RsaPublicKeyComponents {
            n: field("n"),
            e: field("e"),
        }
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            signed.as_bytes(),
            &signature,
        )
        .expect("the ID token verifies"),
        Some("ES256") => {
            let point = p256::EncodedPoint::from_affine_coordinates(
                field("x").as_slice().into(),
                field("y").as_slice().into(),
                false,
            );
            let key = VerifyingKey::from_encoded_point(&point).unwrap();
            let signature = Signature::from_slice(&signature).unwrap();
            key.verify(signed.as_bytes(), &signature)
                .expect("the ID token verifies");
        }
        other => panic!("unexpected algorithm {other:?}"),
    }
    kid.to_owned()
}

/// The counts `wxhub vault status` prints for `key`: (accounts, signing keys).
fn status_counts(status: &str, key: &str) -> (i64, i64) {
    let line = status
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key))
        .unwrap_or_else(|| panic!("no line for {key} in\n{status}"));
    let numbers: Vec<i64> = line
        .split_whitespace()
        .skip(1)
        .take(2)
        .map(|n| n.parse().unwrap())
        .collect();
    (numbers[0], numbers[1])
}

/// The simulator with one account and one user, and a deployment of `hosts` data
/// directories over `db`.
async fn deployment(db: &TestDatabase, hosts: usize) -> Deployment {
    let sim = Simulator::new(SimConfig::default());
    let mut spec = AccountSpec::new(APPID, SECRET);
    spec.oauth_domain = Some("127.0.0.1".into());
    sim.create_account(spec).unwrap();
    sim.create_user(UserSpec::new("alice", "Alice")).unwrap();
    let sim = wechat_sim::spawn(sim, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Deployment {
        hosts: (0..hosts).map(|_| TempDir::new()).collect(),
        db_url: db.url().to_owned(),
        sim,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A person in WeChat's own browser: the gateway shows any other browser its
            // scan-to-log-in page instead of WeChat's authorize page.
            .user_agent("Mozilla/5.0 (iPhone) AppleWebKit/605.1.15 Mobile MicroMessenger/8.0.50")
            .build()
            .unwrap(),
    }
}

/// Registers the account and a website; returns the website's client id and secret.
async fn tenant(state: &AppState) -> (String, String) {
    let owner = state
        .store
        .create_user(
            &store::people::NewUser {
                id: store::new_id(),
                email: "owner@example.com".into(),
                password_hash: "!".into(),
                role: store::people::Role::Owner,
            },
            0,
        )
        .await
        .unwrap();
    accounts::register_account(
        &state.store,
        &state.vault.current(),
        &accounts::AccountInput {
            owner_user_id: owner.id,
            appid: APPID.into(),
            name: "Rotation test".into(),
            kind: AccountKind::Service,
            verified: true,
            token_mode: TokenMode::Token,
            appsecret: SecretString::new(SECRET.into()),
            push_token: None,
            encoding_aes_key: None,
        },
        0,
    )
    .await
    .unwrap();
    let created = state
        .tenancy
        .create_website(
            &tenancy::Principal::cli(),
            APPID,
            &tenancy::websites::NewWebsite {
                name: "site".into(),
                redirect_uris: vec![REDIRECT.into()],
                login_mode: LoginMode::Userinfo,
                public: false,
            },
        )
        .await
        .unwrap();
    (
        created.client.client_id,
        created.secret.unwrap().expose().to_owned(),
    )
}

async fn rotate_drop_and_restart_keep_id_tokens_signing(db: TestDatabase) {
    let deployment = deployment(&db, 1).await;
    let cli = deployment.cli_config(0);
    ops::vault_init(&cli, Some("k1".into())).unwrap();

    // A tenant with a website, and a first login: it creates the signing keys (under k1),
    // RS256 for the website's tokens and ES256 beside it in the JWKS.
    let (hub, state) = deployment.start(0).await;
    let (client_id, secret) = tenant(&state).await;
    let kid = deployment.login_and_verify(&hub, &client_id, &secret).await;
    let status = ops::vault_status(&cli).await.unwrap();
    assert!(status.contains("signing keys"), "{status}");
    assert_eq!(status_counts(&status, "k1"), (1, 2), "{status}");

    // Rotation without the re-wrap: the old key still holds both, so it cannot go.
    ops::vault_rotate(&cli, Some("k2".into()), true, 500)
        .await
        .unwrap();
    let refused = ops::vault_drop_key(&cli, "k1").await.unwrap_err();
    assert!(
        format!("{refused:#}").contains("still wraps 1 account(s), 2 signing key(s)"),
        "{refused:#}"
    );
    let rewrapped = ops::vault_rewrap(&cli, 500).await.unwrap();
    assert!(
        rewrapped.contains("re-wrapped 3 data key(s) (1 account(s), 2 signing key(s))"),
        "{rewrapped}"
    );
    let status = ops::vault_status(&cli).await.unwrap();
    assert_eq!(status_counts(&status, "k1"), (0, 0), "{status}");
    assert_eq!(status_counts(&status, "k2"), (1, 2), "{status}");
    ops::vault_drop_key(&cli, "k1").await.unwrap();
    // The running server never restarted, and still logs people in.
    assert_eq!(
        deployment.login_and_verify(&hub, &client_id, &secret).await,
        kid
    );
    hub.stop().await;

    // Restarted with only k2: the same signing key opens and signs.
    let (hub, state) = deployment.start(0).await;
    assert_eq!(
        deployment.login_and_verify(&hub, &client_id, &secret).await,
        kid
    );

    // A rotation with the re-wrap while this server runs on the same keyring file: its next
    // login meets data keys under k3 before any periodic reload need have run.
    let out = ops::vault_rotate(&cli, Some("k3".into()), false, 500)
        .await
        .unwrap();
    assert!(out.contains("2 signing key(s)"), "{out}");
    assert_eq!(
        deployment.login_and_verify(&hub, &client_id, &secret).await,
        kid
    );
    assert!(state.vault.current().keyring().contains("k3"));
    ops::vault_drop_key(&cli, "k2").await.unwrap();
    hub.stop().await;
    let keyring = Keyring::load(deployment.keyring_file(0)).unwrap();
    assert_eq!(
        keyring.key_ids().map(|k| k.to_string()).collect::<Vec<_>>(),
        ["k3"]
    );
    let (hub, _state) = deployment.start(0).await;
    assert_eq!(
        deployment.login_and_verify(&hub, &client_id, &secret).await,
        kid
    );
    hub.stop().await;
    db.finish().await;
}

/// Two hosts, each with its own copy of the keyring, following the procedure of
/// `docs/operations.md`: add the key inactive and copy it everywhere, activate (and re-wrap)
/// on one host, copy, drop the old key, copy. Neither server fails at any step, although the
/// other host's copy lags one step behind each time.
async fn replicas_with_their_own_keyrings_rotate_without_failing(db: TestDatabase) {
    let deployment = deployment(&db, 2).await;
    let (one, two) = (deployment.cli_config(0), deployment.cli_config(1));
    ops::vault_init(&one, Some("k1".into())).unwrap();
    deployment.copy_keyring_to(1);
    let (hub_one, state_one) = deployment.start(0).await;
    let (hub_two, state_two) = deployment.start(1).await;
    let (client_id, secret) = tenant(&state_one).await;
    let kid = deployment
        .login_and_verify(&hub_one, &client_id, &secret)
        .await;
    let both_log_in = || async {
        for hub in [&hub_one, &hub_two] {
            assert_eq!(
                deployment.login_and_verify(hub, &client_id, &secret).await,
                kid
            );
        }
    };
    // What each server's periodic reload does (every 5 s), without waiting for it.
    let reload = || async {
        for state in [&state_one, &state_two] {
            state.vault.reload_if_changed(&state.store).await.unwrap();
        }
    };

    let out = ops::vault_add_inactive_key(&one, Some("k2".into()))
        .await
        .unwrap();
    assert!(out.contains("wxhub vault activate k2"), "{out}");
    assert_eq!(
        state_one.vault.current().keyring().active_id().as_str(),
        "k1"
    );
    deployment.copy_keyring_to(1);
    reload().await;
    both_log_in().await;

    // Host one activates and re-wraps; host two still has k1 active, but holds k2.
    let out = ops::vault_activate(&one, "k2", false, 500).await.unwrap();
    assert!(out.contains("re-wrapped 3 data key(s)"), "{out}");
    both_log_in().await;
    deployment.copy_keyring_to(1);
    reload().await;
    assert_eq!(
        state_two.vault.current().keyring().active_id().as_str(),
        "k2"
    );
    // Host two's status agrees: nothing is left under k1.
    let status = ops::vault_status(&two).await.unwrap();
    assert_eq!(status_counts(&status, "k1"), (0, 0), "{status}");

    ops::vault_drop_key(&one, "k1").await.unwrap();
    both_log_in().await;
    deployment.copy_keyring_to(1);
    reload().await;
    assert!(!state_two.vault.current().keyring().contains("k1"));
    both_log_in().await;
    hub_one.stop().await;
    hub_two.stop().await;

    // Host two restarts on its copy, which no longer has k1.
    let (hub_two, _state) = deployment.start(1).await;
    assert_eq!(
        deployment
            .login_and_verify(&hub_two, &client_id, &secret)
            .await,
        kid
    );
    hub_two.stop().await;
    db.finish().await;
}

macro_rules! both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(testkit::TestDatabase::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = testkit::TestDatabase::postgres().await else { return };
                    super::$name(db).await;
                }
            )*
        }
    };
}

both_databases!(
    rotate_drop_and_restart_keep_id_tokens_signing,
    replicas_with_their_own_keyrings_rotate_without_failing,
);
