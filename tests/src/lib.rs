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

/// [`http`] whose connections come from `ip` (a loopback address other than 127.0.0.1: another
/// backend, as far as per-address limits go).
pub fn http_from(ip: std::net::IpAddr) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .local_address(ip)
        .build()
        .expect("an HTTP client")
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

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL: the process dies at once, leases and all.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    /// Replicas run `serve --manual-clock`, on the simulator's time (see [`Topology::advance`]).
    manual_clock: bool,
    /// Where WeChat pushes; see [`Topology::use_balancer`].
    balancer: Option<Balancer>,
}

/// What one `POST /__test/run-due` pass did on a replica, or on several added up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DuePass {
    pub due: u64,
    pub refreshed: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl std::ops::AddAssign for DuePass {
    fn add_assign(&mut self, other: DuePass) {
        self.due += other.due;
        self.refreshed += other.refreshed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
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
        Topology::start_on(replicas, false).await
    }

    /// [`Topology::start`] with every replica on the simulator's manual clock
    /// (`wxhub serve --manual-clock`): time moves only through [`Topology::advance`].
    pub async fn start_manual(replicas: usize) -> Option<Topology> {
        Topology::start_on(replicas, true).await
    }

    async fn start_on(replicas: usize, manual_clock: bool) -> Option<Topology> {
        let db = testkit::TestDatabase::postgres().await?;
        Some(
            Topology::start_with_database(replicas, manual_clock, db.url().to_owned(), Some(db))
                .await,
        )
    }

    /// [`Topology::start`] on the database `database_url` (a server of the test's own), which
    /// the topology does not drop.
    pub async fn start_on_url(replicas: usize, database_url: &str) -> Topology {
        Topology::start_with_database(replicas, false, database_url.to_owned(), None).await
    }

    async fn start_with_database(
        replicas: usize,
        manual_clock: bool,
        database_url: String,
        db: Option<testkit::TestDatabase>,
    ) -> Topology {
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
            database_url,
            db,
            dir,
            sim,
            sim_base,
            replicas: Vec::new(),
            api_key: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            http: http(),
            started_replicas: 0,
            manual_clock,
            balancer: None,
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
        topology
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
        if self.replicas.is_empty() && self.balancer.is_none() {
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
        if self.manual_clock {
            // A replica (re)started later starts at the simulator's time, like the others.
            let now = self.sim_now().await.to_string();
            command.args(["--manual-clock", "--clock-start-ms", now.as_str()]);
        }
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
        self.begin_login_at(&replica.base, user).await
    }

    /// [`Topology::begin_login`] on the replica at `base` (`http://127.0.0.1:PORT`).
    pub async fn begin_login_at(&self, base: &str, user: &str) -> Result<PendingLogin, String> {
        let issuer = format!("{base}/t/{APPID}");
        let verifier = format!("{:0>43}", rand_token());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let state = rand_token();
        let mut authorize =
            url::Url::parse(&format!("{issuer}/authorize")).map_err(|e| e.to_string())?;
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
        self.finish_login_at(&replica.base, login).await
    }

    /// [`Topology::finish_login`] on the replica at `base`.
    pub async fn finish_login_at(&self, base: &str, login: PendingLogin) -> Result<String, String> {
        let issuer = format!("{base}/t/{APPID}");
        // The browser returns to the replica now serving the address (after a restart it has
        // another port): every step's state is in the database.
        let mut callback = url::Url::parse(&login.callback).map_err(|e| e.to_string())?;
        let base = url::Url::parse(base).map_err(|e| e.to_string())?;
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
            .post(format!("{issuer}/token"))
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
            .get(format!("{issuer}/userinfo"))
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

    /// The simulator's time (Unix ms).
    pub async fn sim_now(&self) -> i64 {
        self.sim_get("/__sim/clock").await["now_ms"]
            .as_i64()
            .expect("the simulator's clock")
    }

    /// Moves the simulator's clock by `by`, then every replica's to the simulator's new time
    /// (in that order: a replica that fetches in between computes an expiry earlier than the
    /// simulator's, never later). The replicas' schedulers wake; the new time (Unix ms).
    pub async fn advance(&self, by: Duration) -> i64 {
        let bases: Vec<&str> = self.replicas.iter().map(|r| r.base.as_str()).collect();
        self.advance_on(by, &bases).await
    }

    /// [`Topology::advance`] for the replicas at `bases` (replicas the test keeps itself).
    pub async fn advance_on(&self, by: Duration, bases: &[&str]) -> i64 {
        let now = self
            .sim_post(
                "/__sim/clock/advance",
                json!({ "ms": u64::try_from(by.as_millis()).expect("a short step") }),
            )
            .await["now_ms"]
            .as_i64()
            .expect("the simulator's new time");
        for base in bases {
            self.set_replica_clock(base, now).await;
        }
        now
    }

    /// Puts the manual clock of the replica at `base` at `now_ms`.
    pub async fn set_replica_clock(&self, base: &str, now_ms: i64) {
        let response = self
            .http
            .post(format!("{base}/__test/clock/set"))
            .json(&json!({ "now_ms": now_ms }))
            .send()
            .await
            .expect("the replica answers");
        assert!(response.status().is_success(), "{response:?}");
    }

    /// One pass over the refreshes due now on every replica at once (`POST /__test/run-due`),
    /// answered when each pass is over; what they did together.
    pub async fn run_due(&self) -> DuePass {
        let bases: Vec<&str> = self.replicas.iter().map(|r| r.base.as_str()).collect();
        self.run_due_on(&bases).await
    }

    /// [`Topology::run_due`] on the replicas at `bases`.
    pub async fn run_due_on(&self, bases: &[&str]) -> DuePass {
        let passes = bases.iter().map(|base| async move {
            let response = self
                .http
                .post(format!("{base}/__test/run-due"))
                .timeout(PATIENCE)
                .send()
                .await
                .expect("the replica answers");
            assert!(response.status().is_success(), "{response:?}");
            let body: Value = response.json().await.expect("a pass report");
            let n = |key: &str| body[key].as_u64().unwrap_or_default();
            DuePass {
                due: n("due"),
                refreshed: n("refreshed"),
                failed: n("failed"),
                skipped: n("skipped"),
            }
        });
        let mut total = DuePass::default();
        for pass in futures_util::future::join_all(passes).await {
            total += pass;
        }
        total
    }

    /// Registers more accounts, in the simulator and in the hub (one `wxhub account import`,
    /// without asking WeChat first); their appids.
    pub async fn add_accounts(&self, prefix: u32, n: u32) -> Vec<String> {
        let appids: Vec<String> = (0..n).map(|i| format!("wx{prefix:04x}{i:012x}")).collect();
        let specs: Vec<Value> = appids
            .iter()
            .map(|appid| json!({ "appid": appid, "secret": SECRET }))
            .collect();
        for chunk in specs.chunks(500) {
            self.sim_post("/__sim/accounts/bulk", Value::Array(chunk.to_vec()))
                .await;
        }
        let lines: String = appids
            .iter()
            .map(|appid| format!("{appid}\t{appid}\t{SECRET}\n"))
            .collect();
        self.ok(
            &[
                "account",
                "import",
                "--owner",
                "e2e@example.com",
                "--skip-check",
            ],
            &lines,
        );
        appids
    }

    /// An API key for `appid`'s token API.
    pub fn api_key_for(&self, appid: &str) -> String {
        let key = self.ok(&["apikey", "create", appid, "--label", "e2e"], "");
        key.stdout
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// The token API for `appid` with `api_key` on `replica`: `Ok((access_token, generation))`.
    pub async fn read_token_of(
        &self,
        replica: &Replica,
        appid: &str,
        api_key: &str,
    ) -> Result<(String, i64), String> {
        self.read_token_at(&replica.base, appid, api_key).await
    }

    /// [`Topology::read_token_of`] on the replica at `base`.
    pub async fn read_token_at(
        &self,
        base: &str,
        appid: &str,
        api_key: &str,
    ) -> Result<(String, i64), String> {
        read_token_with(&self.http, base, appid, api_key).await
    }

    /// The simulator's base URL.
    pub fn sim(&self) -> &str {
        &self.sim_base
    }
}

/// The token API for `appid` with `api_key` on the replica at `base`, through `client`.
pub async fn read_token_with(
    client: &reqwest::Client,
    base: &str,
    appid: &str,
    api_key: &str,
) -> Result<(String, i64), String> {
    let response = client
        .get(format!("{base}/api/v1/accounts/{appid}/access_token"))
        .bearer_auth(api_key)
        .send()
        .await
        .map_err(|e| format!("token read: {e:?}"))?;
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

impl Topology {
    /// The core tokens the simulator remembers for `appid` (its newest few), oldest first.
    pub async fn core_tokens_of(&self, appid: &str) -> Vec<Value> {
        let tokens = self
            .sim_get(&format!("/__sim/accounts/{appid}/tokens"))
            .await;
        tokens
            .as_array()
            .expect("a list of tokens")
            .iter()
            .filter(|t| t["kind"] == "core")
            .cloned()
            .collect()
    }

    /// Calls to `endpoint` the simulator counted, per appid: `(calls, ok)`.
    pub async fn sim_counters(
        &self,
        endpoint: &str,
    ) -> std::collections::HashMap<String, (u64, u64)> {
        let rows = self
            .sim_get(&format!("/__sim/counters?endpoint={endpoint}"))
            .await;
        rows.as_array()
            .expect("counter rows")
            .iter()
            .map(|row| {
                (
                    row["appid"].as_str().unwrap_or_default().to_owned(),
                    (
                        row["calls"].as_u64().unwrap_or_default(),
                        row["ok"].as_u64().unwrap_or_default(),
                    ),
                )
            })
            .collect()
    }

    /// From now on WeChat pushes [`APPID`]'s messages to one address in front of every live
    /// replica (as the compose file's proxy does), so a push survives a replica's death: the
    /// connection fails and WeChat's retry reaches another replica.
    pub async fn use_balancer(&mut self, backends: &[&str]) {
        let balancer = Balancer::start(backends.iter().map(|b| socket_of(b)).collect()).await;
        let push_url = format!("http://{}/t/{APPID}/wechat/push", balancer.addr);
        let patched = self
            .http
            .patch(format!("{}/__sim/accounts/{APPID}", self.sim_base))
            .json(&json!({ "push_url": push_url }))
            .send()
            .await
            .expect("the simulator answers");
        assert!(patched.status().is_success(), "{patched:?}");
        self.balancer = Some(balancer);
    }

    /// Tells the balancer which replicas are alive (their bases).
    pub fn balance_over(&self, backends: &[&str]) {
        if let Some(balancer) = &self.balancer {
            balancer.set_backends(backends.iter().map(|b| socket_of(b)).collect());
        }
    }

    /// `user` (a follower: see [`Topology::push_follow`]) sends [`APPID`] a text with `msg_id`
    /// (its dedup key): whether the hub acknowledged one of WeChat's attempts.
    pub async fn push_text(&self, user: &str, msg_id: u64) -> Result<(), String> {
        let response = self
            .http
            .post(format!(
                "{}/__sim/accounts/{APPID}/users/{user}/text",
                self.sim_base
            ))
            .json(&json!({ "content": format!("message {msg_id}"), "msg_id": msg_id }))
            .send()
            .await
            .map_err(|e| format!("push: {e}"))?;
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("push body: {e}"))?;
        if body["delivery"]["acknowledged"] == true {
            return Ok(());
        }
        let attempts: Vec<String> = body["delivery"]["attempts"]
            .as_array()
            .map(|attempts| {
                attempts
                    .iter()
                    .map(|a| match a["status"].as_u64() {
                        Some(status) => status.to_string(),
                        None => a["error"].as_str().unwrap_or("?").to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        match body["error"].as_str() {
            Some(error) => Err(format!("push refused by the simulator: {error}")),
            None => Err(format!("push not acknowledged: attempts {attempts:?}")),
        }
    }

    /// The `MsgId`s of the messages (not events) of [`APPID`] the hub stored, one per stored
    /// push, read from the database after the fact.
    pub async fn stored_pushes(&self) -> Vec<String> {
        let store = store::Store::connect(&self.database_url)
            .await
            .expect("the database");
        let account = store
            .find_account_by_appid(APPID)
            .await
            .expect("the account")
            .expect("registered");
        let pushes = store
            .list_recent_pushes(&account.id, 1000)
            .await
            .expect("the pushes");
        store.close().await;
        pushes
            .into_iter()
            .filter_map(|p| p.dedup_key.strip_prefix("msg:").map(str::to_owned))
            .collect()
    }

    /// The lease holder name of the replica at `base` (`GET /__test/clock`).
    pub async fn holder_of(&self, base: &str) -> String {
        let clock: Value = self
            .http
            .get(format!("{base}/__test/clock"))
            .send()
            .await
            .expect("the replica answers")
            .json()
            .await
            .expect("its clock");
        clock["holder"].as_str().expect("a holder").to_owned()
    }

    /// Waits until none of `holders` holds a token-refresh lease (the database's view): what a
    /// test on a manual clock waits for before moving the clock, so a refresh in flight never
    /// sees its lease lapse because simulated time ran ahead of its real call. There is no
    /// event for it over HTTP: polled every 5 ms, with a deadline.
    pub async fn wait_leases_released(&self, pool: &sqlx::PgPool, holders: &[String]) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let held: i64 =
                sqlx::query_scalar("SELECT count(*) FROM core_tokens WHERE lease_holder = ANY($1)")
                    .bind(holders)
                    .fetch_one(pool)
                    .await
                    .expect("the lease count");
            if held == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{held} leases still held after {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A small pool on the replicas' database, for what only the database shows.
    pub async fn database_pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.database_url)
            .await
            .expect("the database")
    }

    /// The database URL the replicas use.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// Drops the database after the processes are gone.
    pub async fn finish(mut self) {
        self.replicas.clear();
        if let Some(db) = self.db.take() {
            db.finish().await;
        }
    }
}

/// `127.0.0.1:PORT` of `http://127.0.0.1:PORT`.
pub fn socket_of(base: &str) -> std::net::SocketAddr {
    base.trim_start_matches("http://")
        .parse()
        .expect("a replica's address")
}

/// The CPU time (user + system, in clock ticks) process `pid` has used, from
/// `/proc/PID/stat`.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The command name (field 2) may hold spaces: fields count from after its ')'.
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Clock ticks per second of `/proc/PID/stat`'s times.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf with a valid name has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).unwrap_or(100).max(1)
}

/// A TCP forwarder on one loopback port in front of the replicas (the compose file's proxy):
/// each connection goes to the next live backend, round robin, trying the others if one
/// refuses.
pub struct Balancer {
    pub addr: std::net::SocketAddr,
    backends: std::sync::Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub async fn start(backends: Vec<std::net::SocketAddr>) -> Balancer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let backends = std::sync::Arc::new(std::sync::Mutex::new(backends));
        let shared = backends.clone();
        let task = tokio::spawn(async move {
            let mut turn = 0usize;
            while let Ok((mut inbound, _)) = listener.accept().await {
                turn = turn.wrapping_add(1);
                let candidates = shared.lock().unwrap().clone();
                tokio::spawn(async move {
                    for i in 0..candidates.len() {
                        let to = candidates[(turn + i) % candidates.len()];
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Balancer {
            addr,
            backends,
            task,
        }
    }

    pub fn set_backends(&self, backends: Vec<std::net::SocketAddr>) {
        *self.backends.lock().unwrap() = backends;
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A PostgreSQL server of the scenario's own (`initdb` and `pg_ctl` from `PG_BIN`, default
/// /usr/lib/postgresql/15/bin) on a free loopback port, so the scenario may stop and start it;
/// stopped and deleted when dropped, also when the test fails. As root, it runs as the
/// unprivileged user `wxhub-pg` (PostgreSQL refuses root), as scripts/test-postgres.sh does.
pub struct OwnPostgres {
    dir: PathBuf,
    data: PathBuf,
    port: u16,
}

impl OwnPostgres {
    /// A fresh server, started.
    pub fn start() -> OwnPostgres {
        let bin = pg_bin();
        let base = std::env::temp_dir();
        let dir = base.join(format!(
            "wxhub-e2e-postgres-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("the server's directory");
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        if as_root {
            let chown = Command::new("chown")
                .arg(format!("{PG_RUN_USER}:"))
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(chown.success(), "chown {}", dir.display());
        }
        let data = dir.join("data");
        let initdb = pg_command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "wxhub",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("initdb");
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let server = OwnPostgres { dir, data, port };
        server.start_again();
        server
    }

    /// `postgres://…` of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://wxhub@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the stopped server on the same port and data; returns once it accepts
    /// connections (`pg_ctl -w`).
    pub fn start_again(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let started = pg_command(&pg_bin().join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .expect("pg_ctl start");
        assert!(
            started.status.success(),
            "pg_ctl start: {}; see {}",
            String::from_utf8_lossy(&started.stderr),
            self.dir.join("postgres.log").display()
        );
    }

    /// Stops the server (`-m fast`: open connections are cut, as when a database host
    /// restarts); returns once it is down.
    pub fn stop(&self) {
        let stopped = pg_command(&pg_bin().join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .output()
            .expect("pg_ctl stop");
        assert!(
            stopped.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&stopped.stderr)
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = pg_command(&pg_bin().join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "60", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The user PostgreSQL runs as when the tests run as root (scripts/test-postgres.sh's).
const PG_RUN_USER: &str = "wxhub-pg";

fn pg_bin() -> PathBuf {
    std::env::var_os("PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// `tool`, as [`PG_RUN_USER`] when this process is root, from `/` (a directory that user may
/// enter).
fn pg_command(tool: &std::path::Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    let mut command = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_RUN_USER, "--"]).arg(tool);
        c
    } else {
        Command::new(tool)
    };
    command.current_dir("/");
    command
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
