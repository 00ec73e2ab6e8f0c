//! Benchmarks of the token API and the refresh engine (`harness = false`).
//!
//! ```sh
//! cargo bench -p scheduler --bench token_api -- [--accounts 100000] [--concurrency 64]
//!     [--latency-ms 20] [--connections 32] [--seconds 5] [--rounds 3]
//!     [--token-api-only | --refresh-only]
//! ```
//!
//! 1. `GET /api/v1/accounts/{appid}/access_token` throughput and p99 over loopback with N
//!    keep-alive connections, against a bare axum route returning a same-shaped JSON body, in
//!    the same process and runtime (goal: ≥ 0.9× the bare route); and the same token API with
//!    statistics on (every read counted per API key, flushed to the database every 5 s)
//!    against statistics off (goal: ≥ 0.97×).
//! 2. Cold refresh of `--accounts` accounts against the simulator with `--latency-ms` added to
//!    every `/cgi-bin/token` call: wall time against the ideal accounts × latency ÷ concurrency
//!    (goal ≤ 1.3×), CPU time per refresh (getrusage of the process, less the CPU of the
//!    simulator, which runs on a runtime of its own whose threads are told apart by name in
//!    `/proc/self/task`) and resident memory (VmRSS) with every token cached. The accounts are
//!    registered through the bulk path (`accounts::prepare_account`, `Store::create_accounts`).
//!
//! Bounded: each of the six load phases runs `--seconds`; the refresh phase processes each
//! account once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use accounts::{AccountInput, VaultHandle};
use axum::Json;
use axum::routing::get;
use scheduler::{SchedulerConfig, TokenService};
use store::Store;
use store::accounts::{AccountKind, TokenMode};
use store::people::{NewUser, Role};
use vault::{KeyId, Keyring, SecretString, Vault};
use wechat::{Clock, SystemClock};
use wechat_sim::{AccountSpec, FaultAction, FaultSpec, SimConfig, Simulator};

struct Args {
    accounts: usize,
    concurrency: usize,
    latency_ms: u64,
    connections: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut args = Args {
        accounts: 100_000,
        concurrency: 64,
        latency_ms: 20,
        connections: 32,
        seconds: 5,
    };
    let raw: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        raw.iter()
            .position(|a| a == name)
            .and_then(|i| raw.get(i + 1))
            .map(|v| {
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name} takes a number"))
            })
    };
    if let Some(v) = value("--accounts") {
        args.accounts = v as usize;
    }
    if let Some(v) = value("--concurrency") {
        args.concurrency = v as usize;
    }
    if let Some(v) = value("--latency-ms") {
        args.latency_ms = v;
    }
    if let Some(v) = value("--connections") {
        args.connections = v as usize;
    }
    if let Some(v) = value("--seconds") {
        args.seconds = v;
    }
    args
}

/// CPU time (user + system) of the whole process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Latencies (µs) and elapsed seconds of one or more load phases.
#[derive(Default)]
struct Load {
    latencies: Vec<u64>,
    seconds: f64,
}

impl Load {
    fn add(&mut self, other: Load) {
        self.latencies.extend(other.latencies);
        self.seconds += other.seconds;
    }

    fn per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds
    }

    fn pct(&mut self, p: f64) -> u64 {
        self.latencies.sort_unstable();
        let n = self.latencies.len();
        self.latencies[((n as f64 * p) as usize).min(n - 1)]
    }
}

/// `connections` tasks sending GETs back to back for `seconds` over keep-alive connections.
async fn load(url: String, key: Option<String>, connections: usize, seconds: u64) -> Load {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let http = http.clone();
        let url = url.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let mut request = http.get(&url);
                if let Some(key) = &key {
                    request = request.bearer_auth(key);
                }
                let response = request.send().await.unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                let _ = response.bytes().await.unwrap();
                latencies.push(t.elapsed().as_micros() as u64);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Load {
        latencies,
        seconds: started.elapsed().as_secs_f64(),
    }
}

async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

struct Env {
    _dir: TempDir,
    store: Store,
    vault: Arc<VaultHandle>,
    owner: String,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn env() -> Env {
    let dir = TempDir(std::env::temp_dir().join(format!("wxhub-bench-{}", uuid::Uuid::now_v7())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.0.join("wxhub.db").display()))
        .await
        .unwrap();
    let vault = Arc::new(VaultHandle::fixed(Vault::new(Keyring::generate(
        KeyId::new("k1").unwrap(),
    ))));
    let owner = store
        .create_user(
            &NewUser {
                id: store::new_id(),
                email: "bench@example.com".into(),
                password_hash: "!".into(),
                role: Role::Owner,
            },
            SystemClock.now_ms(),
        )
        .await
        .unwrap();
    Env {
        _dir: dir,
        store,
        vault,
        owner: owner.id,
    }
}

fn appid(i: usize) -> String {
    format!("wx{i:016x}")
}

fn secret(i: usize) -> String {
    format!("{i:032x}")
}

/// Registers the accounts of `range` through the bulk path operators' imports use (each
/// account's checks and sealing, then one transaction per 10,000).
async fn register(env: &Env, range: std::ops::Range<usize>) {
    const BATCH: usize = 10_000;
    let vault = env.vault.current();
    let ids: Vec<usize> = range.collect();
    for chunk in ids.chunks(BATCH) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let input = AccountInput {
                    owner_user_id: env.owner.clone(),
                    appid: appid(i),
                    name: format!("Bench {i}"),
                    kind: AccountKind::Service,
                    verified: true,
                    token_mode: TokenMode::Token,
                    appsecret: SecretString::new(secret(i)),
                    push_token: None,
                    encoding_aes_key: None,
                };
                accounts::prepare_account(&vault, &input).unwrap()
            })
            .collect();
        env.store
            .create_accounts(&batch, SystemClock.now_ms(), None)
            .await
            .unwrap();
    }
}

/// CPU time (user + system) of this process's threads named `name`, from
/// `/proc/self/task/*/stat` (clock ticks of 10 ms; the cold refresh runs for tens of seconds).
fn threads_cpu_time(name: &str) -> Duration {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += field(11) + field(12);
    }
    Duration::from_millis(ticks * 10)
}

/// The name of the simulator's threads in the cold refresh, so its CPU can be told apart.
const SIM_THREADS: &str = "wechat-sim";

/// Serves `sim` from a runtime of its own (threads named [`SIM_THREADS`]) until the process
/// ends; returns its base URL.
fn spawn_simulator_apart(sim: Simulator) -> url::Url {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(SIM_THREADS.to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(SIM_THREADS)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let running = wechat_sim::spawn(sim, "127.0.0.1:0".parse().unwrap())
                    .await
                    .unwrap();
                tx.send(running.base_url()).unwrap();
                std::future::pending::<()>().await;
            });
        })
        .unwrap();
    rx.recv().unwrap()
}

fn client(base: url::Url) -> wechat::Client {
    wechat::Client::new(wechat::ClientConfig::for_base(base)).unwrap()
}

async fn token_api(args: &Args) {
    let env = env().await;
    let sim = Simulator::new(SimConfig::default());
    sim.create_account(AccountSpec::new(appid(0), secret(0)))
        .unwrap();
    let running = wechat_sim::spawn(sim, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    register(&env, 0..1).await;
    let service = TokenService::open(
        env.store.clone(),
        env.vault.clone(),
        client(running.base_url()),
        Arc::new(SystemClock),
        SchedulerConfig::default(),
    )
    .await
    .unwrap();
    service.run_due().await.unwrap();
    // The same API with statistics on: a second service over the same database (it adopts
    // the token the first one stored), counting and flushing as `wxhub serve` does.
    let stats = stats::Stats::new(
        env.store.clone(),
        Arc::new(SystemClock),
        stats::StatsConfig::default(),
    );
    let flusher = stats.spawn_flusher();
    let counted = TokenService::open(
        env.store.clone(),
        env.vault.clone(),
        client(running.base_url()),
        Arc::new(SystemClock),
        SchedulerConfig {
            stats: stats.clone(),
            ..SchedulerConfig::default()
        },
    )
    .await
    .unwrap();
    let key = scheduler::apikey::generate_api_key().unwrap();
    let account = env
        .store
        .find_account_by_appid(&appid(0))
        .await
        .unwrap()
        .unwrap();
    env.store
        .create_api_key(
            &store::api_keys::NewApiKey::with_all_scopes(&account.id, &key.hash, "bench"),
            SystemClock.now_ms(),
            &store::audit::AuditRecord::new("test", "api_key.create"),
        )
        .await
        .unwrap();
    let token_addr = serve(scheduler::router(service.clone())).await;
    let counted_addr = serve(scheduler::router(counted.clone())).await;
    let current = service.current(&account.id).await.unwrap();
    let body = serde_json::json!({
        "access_token": current.access_token.expose(),
        "expires_at": current.expires_at,
        "expires_in": 7200,
        "generation": current.generation,
    });
    let bare = axum::Router::new().route(
        "/bare",
        get(move || {
            let body = body.clone();
            async move { Json(body) }
        }),
    );
    let bare_addr = serve(bare).await;
    let token_url = format!(
        "http://{token_addr}/api/v1/accounts/{}/access_token",
        appid(0)
    );
    let bare_url = format!("http://{bare_addr}/bare");
    let counted_url = format!(
        "http://{counted_addr}/api/v1/accounts/{}/access_token",
        appid(0)
    );
    let key = key.secret.expose().to_owned();
    // Warm up both (connections, caches), then alternate three rounds so that a change in the
    // machine's load hits both sides alike.
    load(bare_url.clone(), None, args.connections, 1).await;
    load(token_url.clone(), Some(key.clone()), args.connections, 1).await;
    load(counted_url.clone(), Some(key.clone()), args.connections, 1).await;
    let reads_in_db = || async {
        env.store
            .account_series(
                &account.id,
                store::stats::Granularity::Hour,
                0,
                i64::MAX,
                &["token.reads"],
            )
            .await
            .unwrap()
            .iter()
            .map(|p| p.value)
            .sum::<i64>()
    };
    stats.flush().await.unwrap();
    let reads_before = reads_in_db().await;
    let (mut b, mut t, mut c) = (Load::default(), Load::default(), Load::default());
    // Statistics on ÷ off per round: on a shared machine the load moves between rounds, and
    // the median of the per-round ratios is the figure least moved by it.
    let mut round_ratios = Vec::new();
    let rounds = std::env::args()
        .position(|a| a == "--rounds")
        .and_then(|i| std::env::args().nth(i + 1))
        .map_or(3, |v| v.parse::<usize>().expect("--rounds takes a number"));
    for round in 0..rounds {
        b.add(load(bare_url.clone(), None, args.connections, args.seconds).await);
        // Alternate which of the two goes first.
        let (off, on) = if round % 2 == 0 {
            let off = load(
                token_url.clone(),
                Some(key.clone()),
                args.connections,
                args.seconds,
            )
            .await;
            let on = load(
                counted_url.clone(),
                Some(key.clone()),
                args.connections,
                args.seconds,
            )
            .await;
            (off, on)
        } else {
            let on = load(
                counted_url.clone(),
                Some(key.clone()),
                args.connections,
                args.seconds,
            )
            .await;
            let off = load(
                token_url.clone(),
                Some(key.clone()),
                args.connections,
                args.seconds,
            )
            .await;
            (off, on)
        };
        round_ratios.push(on.per_sec() / off.per_sec());
        t.add(off);
        c.add(on);
    }
    round_ratios.sort_by(f64::total_cmp);
    let median_ratio = round_ratios[round_ratios.len() / 2];
    flusher.shutdown().await;
    let counted_reads = reads_in_db().await - reads_before;
    assert_eq!(
        counted_reads,
        c.latencies.len() as i64,
        "every measured read is counted once in the database"
    );
    println!(
        "GET access_token, {} connections, {rounds} alternating rounds of {} s each:",
        args.connections, args.seconds
    );
    let (b50, b99, t50, t99) = (b.pct(0.50), b.pct(0.99), t.pct(0.50), t.pct(0.99));
    println!(
        "  bare axum route : {:>9.0} req/s  p50 {:>5} µs  p99 {:>5} µs  ({} requests)",
        b.per_sec(),
        b50,
        b99,
        b.latencies.len()
    );
    println!(
        "  token API       : {:>9.0} req/s  p50 {:>5} µs  p99 {:>5} µs  ({} requests)",
        t.per_sec(),
        t50,
        t99,
        t.latencies.len()
    );
    println!(
        "  ratio           : throughput {:.2}× (goal ≥ 0.9×), p99 {:.2}× the bare route",
        t.per_sec() / b.per_sec(),
        t99 as f64 / b99 as f64
    );
    let (c50, c99) = (c.pct(0.50), c.pct(0.99));
    println!(
        "  with statistics : {:>9.0} req/s  p50 {:>5} µs  p99 {:>5} µs  ({} requests, {} counted \
         in the database)",
        c.per_sec(),
        c50,
        c99,
        c.latencies.len(),
        counted_reads
    );
    println!(
        "  statistics on ÷ off: throughput {:.3}× over all rounds, median of the rounds {:.3}× \
         (goal ≥ 0.97×; rounds {}), p99 {:.2}×",
        c.per_sec() / t.per_sec(),
        median_ratio,
        round_ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(" "),
        c99 as f64 / t99 as f64
    );
}

async fn cold_refresh(args: &Args) {
    let env = env().await;
    let mut config = SimConfig::default();
    config.limits.max_accounts = args.accounts.max(1);
    let sim = Simulator::new(config);
    sim.create_accounts((0..args.accounts).map(|i| AccountSpec::new(appid(i), secret(i))))
        .unwrap();
    sim.add_fault(FaultSpec {
        endpoint: Some("/cgi-bin/token".into()),
        appid: None,
        action: FaultAction::Latency {
            ms: args.latency_ms,
        },
        next: None,
        rate: Some(1.0),
    })
    .unwrap();
    let sim_url = spawn_simulator_apart(sim);
    let registering = Instant::now();
    register(&env, 0..args.accounts).await;
    let registered = registering.elapsed();
    let rss_before = rss_mib();
    let service = TokenService::open(
        env.store.clone(),
        env.vault.clone(),
        client(sim_url),
        Arc::new(SystemClock),
        SchedulerConfig {
            concurrency: args.concurrency,
            ..SchedulerConfig::default()
        },
    )
    .await
    .unwrap();
    let (cpu0, sim0) = (cpu_time(), threads_cpu_time(SIM_THREADS));
    let started = Instant::now();
    let report = service.run_due().await.unwrap();
    let wall = started.elapsed();
    let cpu = cpu_time() - cpu0;
    let sim_cpu = threads_cpu_time(SIM_THREADS).saturating_sub(sim0);
    assert_eq!(report.refreshed, args.accounts, "{report:?}");
    // The ideal with the concurrency the engine really runs at (its permits), not the flag.
    let concurrency = service.config().concurrency.max(1);
    let ideal = Duration::from_secs_f64(
        args.accounts as f64 * args.latency_ms as f64 / 1000.0 / concurrency as f64,
    );
    let rss_after = rss_mib();
    println!(
        "cold refresh of {} accounts, {} ms latency, concurrency {} (registered in {:.1} s):",
        args.accounts,
        args.latency_ms,
        concurrency,
        registered.as_secs_f64()
    );
    println!(
        "  wall {:.2} s, ideal {:.2} s → {:.2}× the ideal (goal ≤ 1.3×), {:.0} refreshes/s",
        wall.as_secs_f64(),
        ideal.as_secs_f64(),
        wall.as_secs_f64() / ideal.as_secs_f64(),
        args.accounts as f64 / wall.as_secs_f64()
    );
    let per = |d: Duration| d.as_secs_f64() * 1e6 / args.accounts as f64;
    println!(
        "  CPU per refresh: hub {:.1} µs (engine, SQLite, HTTP client: the process less the \
         simulator's threads), simulator {:.1} µs, whole process {:.1} µs",
        per(cpu.saturating_sub(sim_cpu)),
        per(sim_cpu),
        per(cpu)
    );
    println!(
        "  VmRSS {:.1} MiB before loading the engine, {:.1} MiB with every token cached \
         ({:.2} KiB per account)",
        rss_before,
        rss_after,
        (rss_after - rss_before) * 1024.0 / args.accounts as f64
    );
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let flag = |name: &str| std::env::args().any(|a| a == name);
        // `--refresh-only`: the cold refresh without the request phases.
        if !flag("--refresh-only") {
            token_api(&args).await;
        }
        // `--token-api-only`: the request phases without the long cold refresh.
        if !flag("--token-api-only") {
            cold_refresh(&args).await;
        }
    });
}
