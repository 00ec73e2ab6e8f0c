//! The topology of `docker-compose.yml` without a container engine: `wxhub serve` replicas on
//! one PostgreSQL database and one keyring file, and `wxhub sim --manual-clock` as WeChat,
//! each a real process of the `wxhub` binary on a free loopback port, driven only over HTTP
//! and the command line.
//!
//! The binary is the one cargo built in this target directory (`cargo test --workspace`
//! builds it for the `wxhub` package's own tests); `WXHUB_BIN` names another. The database
//! is a fresh one on the PostgreSQL server of `WXHUB_TEST_POSTGRES_URL`; without it the
//! scenarios say `did not run` and pass, like every PostgreSQL test of the workspace.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The account every scenario runs on (values valid only in the simulator).
pub const APPID: &str = "wx00e2e0000000a001";
const SECRET: &str = "ca9a27ca9a270e2e0e2e0e2e0e2e0e2e";
const PUSH_TOKEN: &str = "ca9a27ca9a27e2e";
const AES_KEY: &str = "ca9a27ca9a27e2e000000000000000000000000000A";
/// Where logins return to; nothing listens there, the code is read from the address.
pub const REDIRECT: &str = "http://127.0.0.1:9/callback";
/// Logins come from WeChat's browser (outside it, the hub offers scan-to-log-in instead).
const WECHAT_UA: &str = "Mozilla/5.0 (iPhone) MicroMessenger/8.0.50";

/// How long any start, answer or exit may take before a scenario fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The `wxhub` binary to run.
pub fn wxhub_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("WXHUB_BIN") {
        return PathBuf::from(path);
    }
    // target/debug/deps/rotation-… → target/debug/wxhub
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a target directory")
        .join(format!("wxhub{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p wxhub`; `cargo test --workspace` does)",
        bin.display()
    );
    bin
}

/// An HTTP client that follows no redirect (each step of a login is looked at).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// A running process, killed when dropped; its output lines arrive on a channel and are kept
/// in a log file beside the data.
pub struct Process {
    child: Child,
    // In a mutex so a topology can be shared between tasks (only the test reads it).
    lines: std::sync::Mutex<Receiver<String>>,
    pub log: PathBuf,
}

impl Process {
    /// Starts `command`, keeping its output in `log`.
    pub fn spawn(mut command: Command, log: PathBuf) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wxhub");
        let (send, lines) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let send = send.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("the process log");
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = writeln!(file, "{line}");
                    let _ = send.send(line);
                }
            });
        }
        Process {
            child,
            lines: std::sync::Mutex::new(lines),
            log,
        }
    }

    /// Waits for an output line containing `needle`; returns it.
    pub fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no line with {needle:?} within {PATIENCE:?}; see {}",
                        self.log.display()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the process ended before saying {needle:?}; see {}",
                        self.log.display()
                    )
                }
            }
        }
    }

    /// Sends SIGTERM, as a service manager or a container engine stops a process.
    pub fn terminate(&self) {
        let pid = i32::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with a pid of our own child and a valid signal number.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to {pid}");
    }

    /// Waits for the process to exit; its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child's status") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `wxhub serve` replica.
pub struct Replica {
    pub process: Process,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Replica {
    pub fn issuer(&self) -> String {
        format!("{}/t/{APPID}", self.base)
    }
}

/// PostgreSQL, the simulator and replicas, sharing one data directory and keyring file.
pub struct Topology {
    pub dir: testkit::TempDir,
    db: Option<testkit::TestDatabase>,
    database_url: String,
    pub sim: Process,
    /// `http://127.0.0.1:PORT`
    pub sim_base: String,
    pub replicas: Vec<Replica>,
    /// An API key of [`APPID`] for the token API.
    pub api_key: String,
    /// A confidential website of [`APPID`] (userinfo mode).
    pub client_id: String,
    client_secret: String,
    pub http: reqwest::Client,
    started_replicas: usize,
}

/// What a `wxhub` command printed.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Topology {
    /// Starts the simulator, prepares the database (keyring, schema, the account, an API
    /// key, a website) and starts `replicas` replicas; `None` without PostgreSQL.
    pub async fn start(replicas: usize) -> Option<Topology> {
        let db = testkit::TestDatabase::postgres().await?;
        let dir = testkit::TempDir::new();
        let mut sim_command = Command::new(wxhub_bin());
        clean_env(&mut sim_command);
        sim_command.args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--empty",
            "--manual-clock",
        ]);
        let sim = Process::spawn(sim_command, dir.path().join("sim.log"));
        let first = sim.wait_for_line("WeChat simulator at ");
        let sim_base = first
            .trim()
            .trim_start_matches("WeChat simulator at ")
            .trim_end_matches('/')
            .to_owned();
        let mut topology = Topology {
            database_url: db.url().to_owned(),
            db: Some(db),
            dir,
            sim,
            sim_base,
            replicas: Vec::new(),
            api_key: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            http: http(),
            started_replicas: 0,
        };
        topology
            .sim_post(
                "/__sim/accounts",
                json!({
                    "appid": APPID, "secret": SECRET, "push_token": PUSH_TOKEN,
                    "encoding_aes_key": AES_KEY, "push_mode": "safe",
                    "oauth_domain": "127.0.0.1",
                }),
            )
            .await;
        for user in ["alice", "bob"] {
            topology
                .sim_post("/__sim/users", json!({"id": user, "nickname": user}))
                .await;
        }
        topology.ok(&["vault", "init"], "");
        topology.ok(&["migrate"], "");
        topology.ok(
            &[
                "account",
                "add",
                APPID,
                "--name",
                "E2E",
                "--owner",
                "e2e@example.com",
            ],
            &format!("{SECRET}\n{PUSH_TOKEN}\n{AES_KEY}\n"),
        );
        topology.ok(&["account", "configure", APPID, "--push-mode", "safe"], "");
        let key = topology.ok(&["apikey", "create", APPID, "--label", "e2e"], "");
        topology.api_key = key
            .stdout
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let client = topology.ok(
            &[
                "client",
                "create",
                "--appid",
                APPID,
                "--name",
                "e2e site",
                "--redirect-uri",
                REDIRECT,
                "--mode",
                "userinfo",
            ],
            "",
        );
        let field = |name: &str| {
            client
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim_start_matches(':').trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} in {}", client.stdout))
        };
        topology.client_id = field("client_id");
        topology.client_secret = field("client_secret");
        for _ in 0..replicas {
            topology.start_replica().await;
        }
        Some(topology)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(wxhub_bin());
        clean_env(&mut command);
        command
            .env("WXHUB_DATABASE_URL", &self.database_url)
            .env("WXHUB_DATA_DIR", self.dir.path())
            .env("WXHUB_KEYRING_FILE", self.dir.path().join("keyring.toml"))
            .env("WXHUB_WECHAT_API_URL", &self.sim_base)
            .env("WXHUB_WECHAT_OPEN_URL", &self.sim_base)
            .env("WXHUB_LOG", "info");
        command
    }

    /// Runs a `wxhub` command with `stdin`; what it printed.
    pub fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run wxhub");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let output = child.wait_with_output().expect("wxhub's output");
        Output {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed.
    pub fn ok(&self, args: &[&str], stdin: &str) -> Output {
        let output = self.run(args, stdin);
        assert!(
            output.status.success(),
            "wxhub {args:?} failed: {}\n{}",
            output.stdout,
            output.stderr
        );
        output
    }

    /// Starts one more replica on a free port, waits until it is ready and adds it to
    /// [`Topology::replicas`]; WeChat pushes to the first one, as to one public address.
    pub async fn start_replica(&mut self) -> usize {
        self.start_replica_with(&[]).await
    }

    /// [`Topology::start_replica`] with more environment variables (`WXHUB_*` settings).
    pub async fn start_replica_with(&mut self, env: &[(&str, &str)]) -> usize {
        let n = self.started_replicas;
        self.started_replicas += 1;
        let replica = self.spawn_replica_with(n, env).await;
        if self.replicas.is_empty() {
            let push_url = format!("{}/t/{APPID}/wechat/push", replica.base);
            let patched = self
                .http
                .patch(format!("{}/__sim/accounts/{APPID}", self.sim_base))
                .json(&json!({ "push_url": push_url }))
                .send()
                .await
                .expect("the simulator answers");
            assert!(patched.status().is_success(), "{patched:?}");
        }
        self.replicas.push(replica);
        self.replicas.len() - 1
    }

    /// Starts a replica named `n` (its log file) and waits until it is ready, without adding
    /// it to [`Topology::replicas`].
    pub async fn spawn_replica(&self, n: usize) -> Replica {
        self.spawn_replica_with(n, &[]).await
    }

    async fn spawn_replica_with(&self, n: usize, env: &[(&str, &str)]) -> Replica {
        let mut command = self.command();
        command.envs(env.iter().copied());
        command.args(["--listen", "127.0.0.1:0", "serve"]);
        let process = Process::spawn(command, self.dir.path().join(format!("replica-{n}.log")));
        let line = process.wait_for_line("wxhub is serving");
        let listen = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("listen="))
            .unwrap_or_else(|| panic!("no listen= in {line:?}"));
        let replica = Replica {
            process,
            base: format!("http://{listen}"),
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ready = self
                .http
                .get(format!("{}/readyz", replica.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "replica {n} not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        replica
    }

    pub async fn sim_post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.sim_base))
            .json(&body)
            .send()
            .await
            .expect("the simulator answers");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "{path}: {status} {body}");
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    pub async fn sim_get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.sim_base))
            .send()
            .await
            .expect("the simulator answers")
            .json()
            .await
            .expect("JSON from the simulator")
    }

    /// The core tokens the simulator has minted for [`APPID`].
    pub async fn core_tokens_minted(&self) -> Vec<Value> {
        let tokens = self
            .sim_get(&format!("/__sim/accounts/{APPID}/tokens"))
            .await;
        tokens
            .as_array()
            .expect("a list of tokens")
            .iter()
            .filter(|t| t["kind"] == "core")
            .cloned()
            .collect()
    }

    /// The token API on `replica`: `Ok((access_token, generation))` or the failure.
    pub async fn read_token(&self, replica: usize) -> Result<(String, i64), String> {
        self.read_token_on(&self.replicas[replica]).await
    }

    /// The token API on `replica` (one outside [`Topology::replicas`] too).
    pub async fn read_token_on(&self, replica: &Replica) -> Result<(String, i64), String> {
        let response = self
            .http
            .get(format!(
                "{}/api/v1/accounts/{APPID}/access_token",
                replica.base
            ))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .map_err(|e| format!("token read: {e}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("token read body: {e}"))?;
        if status != 200 {
            return Err(format!("token read: {status} {body}"));
        }
        Ok((
            body["access_token"].as_str().unwrap_or_default().to_owned(),
            body["generation"].as_i64().unwrap_or_default(),
        ))
    }

    /// A login up to WeChat's answer: the callback URL on `replica` the browser would open
    /// next, with its login cookie and PKCE verifier.
    pub async fn begin_login(&self, replica: usize, user: &str) -> Result<PendingLogin, String> {
        self.begin_login_on(&self.replicas[replica], user).await
    }

    /// [`Topology::begin_login`] on any replica.
    pub async fn begin_login_on(
        &self,
        replica: &Replica,
        user: &str,
    ) -> Result<PendingLogin, String> {
        let verifier = format!("{:0>43}", rand_token());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let state = rand_token();
        let mut authorize = url::Url::parse(&format!("{}/authorize", replica.issuer()))
            .map_err(|e| e.to_string())?;
        authorize
            .query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("scope", "openid profile")
            .append_pair("state", &state)
            .append_pair("nonce", &rand_token())
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let to_wechat = self
            .http
            .get(authorize.as_str())
            .header("user-agent", WECHAT_UA)
            .send()
            .await
            .map_err(|e| format!("authorize: {e}"))?;
        if to_wechat.status() != 302 {
            return Err(format!("authorize: {}", to_wechat.status()));
        }
        let cookie = to_wechat
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .collect::<Vec<_>>()
            .join("; ");
        let wechat = location(&to_wechat)?;
        // The simulator answers the authorize page as `user`, allowing.
        let mut as_user = url::Url::parse(&wechat).map_err(|e| e.to_string())?;
        as_user
            .query_pairs_mut()
            .append_pair("sim_user", user)
            .append_pair("sim_answer", "allow");
        let back = self
            .http
            .get(as_user.as_str())
            .header("user-agent", WECHAT_UA)
            .send()
            .await
            .map_err(|e| format!("WeChat's page: {e}"))?;
        let callback = location(&back)?;
        Ok(PendingLogin {
            callback,
            cookie,
            verifier,
            state,
        })
    }

    /// Finishes `login` on `replica` (the browser's callback, then the site's code exchange
    /// and userinfo); the openid it logged in as.
    pub async fn finish_login(
        &self,
        replica: usize,
        login: PendingLogin,
    ) -> Result<String, String> {
        self.finish_login_on(&self.replicas[replica], login).await
    }

    /// [`Topology::finish_login`] on any replica.
    pub async fn finish_login_on(
        &self,
        replica: &Replica,
        login: PendingLogin,
    ) -> Result<String, String> {
        // The browser returns to the replica now serving the address (after a restart it has
        // another port): every step's state is in the database.
        let mut callback = url::Url::parse(&login.callback).map_err(|e| e.to_string())?;
        let base = url::Url::parse(&replica.base).map_err(|e| e.to_string())?;
        callback
            .set_port(base.port())
            .map_err(|()| "callback port".to_owned())?;
        let to_site = self
            .http
            .get(callback.as_str())
            .header("user-agent", WECHAT_UA)
            .header("cookie", &login.cookie)
            .send()
            .await
            .map_err(|e| format!("callback: {e}"))?;
        let site = url::Url::parse(&location(&to_site)?).map_err(|e| e.to_string())?;
        let param = |name: &str| {
            site.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        if param("state").as_deref() != Some(login.state.as_str()) {
            return Err(format!("back at the site without our state: {site}"));
        }
        let code = param("code").ok_or_else(|| format!("no code: {site}"))?;
        let tokens = self
            .http
            .post(format!("{}/token", replica.issuer()))
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", login.verifier.as_str()),
            ])
            .send()
            .await
            .map_err(|e| format!("token: {e}"))?;
        if tokens.status() != 200 {
            return Err(format!("token: {}", tokens.status()));
        }
        let tokens: Value = tokens
            .json()
            .await
            .map_err(|e| format!("token body: {e}"))?;
        let userinfo = self
            .http
            .get(format!("{}/userinfo", replica.issuer()))
            .bearer_auth(tokens["access_token"].as_str().unwrap_or_default())
            .send()
            .await
            .map_err(|e| format!("userinfo: {e}"))?;
        if userinfo.status() != 200 {
            return Err(format!("userinfo: {}", userinfo.status()));
        }
        let claims: Value = userinfo
            .json()
            .await
            .map_err(|e| format!("userinfo body: {e}"))?;
        claims["sub"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no sub in {claims}"))
    }

    /// A whole login on `replica`.
    pub async fn login(&self, replica: usize, user: &str) -> Result<String, String> {
        let pending = self.begin_login(replica, user).await?;
        self.finish_login(replica, pending).await
    }

    /// `user` follows (or unfollows) the account: the simulator signs, encrypts and pushes
    /// the event to the first replica. Whether the hub acknowledged it.
    pub async fn push_follow(&self, user: &str, follow: bool) -> Result<(), String> {
        let path = format!(
            "{}/__sim/accounts/{APPID}/users/{user}/{}",
            self.sim_base,
            if follow { "follow" } else { "unfollow" }
        );
        let response = self
            .http
            .post(path)
            .send()
            .await
            .map_err(|e| format!("push: {e}"))?;
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("push body: {e}"))?;
        if body["delivery"]["acknowledged"] == true {
            Ok(())
        } else {
            Err(format!("push not acknowledged: {}", body["delivery"]))
        }
    }

    /// Drops the database after the processes are gone.
    pub async fn finish(mut self) {
        self.replicas.clear();
        if let Some(db) = self.db.take() {
            db.finish().await;
        }
    }
}

/// A login waiting for the browser to come back from WeChat.
pub struct PendingLogin {
    callback: String,
    cookie: String,
    verifier: String,
    state: String,
}

fn location(response: &reqwest::Response) -> Result<String, String> {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| format!("expected a redirect, got {}", response.status()))
}

fn rand_token() -> String {
    let mut bytes = [0u8; 24];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let digest = Sha256::digest(format!("{now}-{count}-{}", std::process::id()));
    bytes.copy_from_slice(&digest[..24]);
    URL_SAFE_NO_PAD.encode(bytes)
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// No `WXHUB_*` of the surrounding environment reaches the processes.
pub fn clean_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WXHUB_") {
            command.env_remove(name);
        }
    }
    command.env("NO_COLOR", "1");
}
