//! A million accounts on one replica: memory per cached account, and start-up (`harness = false`).
//!
//! ```sh
//! cargo bench -p scheduler --bench scale -- [--accounts 10000,100000,1000000] [--postgres]
//! ```
//!
//! For each count N: a fresh database (SQLite; PostgreSQL too with `--postgres` and
//! `WXHUB_TEST_POSTGRES_URL`) is filled with N accounts through the bulk registration path
//! (`accounts::prepare_account` — the single registration's checks and sealing — and
//! `Store::create_accounts`), each then given a valid sealed token (`Store::fill_core_tokens`,
//! a fixture). Then this binary starts itself again as a child process, as a replica would
//! restart, and the child measures:
//!
//! - start-up: from the child's `main` to `TokenService::open` returning with every valid
//!   token in memory (no upstream call: the WeChat client points at a closed port), and from
//!   the parent's spawn to the child saying so (process start included);
//! - memory: whole-process VmRSS just before `TokenService::open` and after it, the delta ÷ N,
//!   and the peak (VmHWM) over the whole start-up;
//! - that every account's token is served from memory (`TokenService::cached`);
//! - where the start-up time goes: the same rows read again page by page without decrypting,
//!   and decrypted again without the cache.
//!
//! The database is removed after each N.

use std::io::BufRead as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use accounts::{AccountInput, VaultHandle};
use scheduler::{SchedulerConfig, TokenService};
use store::Store;
use store::accounts::{AccountKind, TokenMode};
use store::people::{NewUser, Role};
use store::token_fixtures::FilledToken;
use testkit::TestDatabase;
use vault::{KeyId, Keyring, SecretString, Vault};
use wechat::{AccessToken, Clock, SystemClock};

/// Accounts registered per batch (one transaction each).
const BATCH: usize = 10_000;

fn flag(name: &str) -> Option<String> {
    let raw: Vec<String> = std::env::args().collect();
    raw.iter()
        .position(|a| a == name)
        .and_then(|i| raw.get(i + 1))
        .cloned()
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) of the whole process, all threads.
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

fn appid(i: usize) -> String {
    format!("wx{i:016x}")
}

/// Shaped like WeChat's (and the simulator's): `86_` and 150 URL-safe characters.
fn token(i: usize) -> AccessToken {
    let mut value = format!("86_{i:016x}");
    while value.len() < 153 {
        value.push_str("Ab9-_xYz");
    }
    value.truncate(153);
    AccessToken::new(value)
}

async fn fill(url: &str, keyring: &Keyring, n: usize) -> (Duration, Duration) {
    let store = Store::connect(url).await.unwrap();
    let vault = Vault::new(keyring.clone());
    let now = SystemClock.now_ms();
    let owner = store
        .create_user(
            &NewUser {
                id: store::new_id(),
                email: "scale@example.com".into(),
                password_hash: "!".into(),
                role: Role::Owner,
            },
            now,
        )
        .await
        .unwrap();
    let mut registering = Duration::ZERO;
    let mut tokens = Duration::ZERO;
    for start in (0..n).step_by(BATCH) {
        let started = Instant::now();
        let batch: Vec<_> = (start..(start + BATCH).min(n))
            .map(|i| {
                let input = AccountInput {
                    owner_user_id: owner.id.clone(),
                    appid: appid(i),
                    name: format!("Scale {i}"),
                    kind: AccountKind::Service,
                    verified: true,
                    token_mode: TokenMode::Token,
                    appsecret: SecretString::new(format!("{i:032x}")),
                    push_token: None,
                    encoding_aes_key: None,
                };
                accounts::prepare_account(&vault, &input).unwrap()
            })
            .collect();
        store.create_accounts(&batch, now, None).await.unwrap();
        registering += started.elapsed();
        let started = Instant::now();
        let sealed: Vec<Vec<u8>> = batch
            .iter()
            .enumerate()
            .map(|(k, a)| {
                accounts::seal_core_token(&vault, &a.id, &a.secrets.wrapped_dek, &token(start + k))
                    .unwrap()
            })
            .collect();
        let rows: Vec<FilledToken<'_>> = batch
            .iter()
            .zip(&sealed)
            .map(|(a, ct)| FilledToken {
                account_id: &a.id,
                token: ct,
                issued_at: now,
                expires_at: now + 7_200_000,
                next_refresh_at: now + 6_000_000,
            })
            .collect();
        let filled = store.fill_core_tokens(&rows, now).await.unwrap();
        assert_eq!(filled as usize, rows.len());
        tokens += started.elapsed();
    }
    store.close().await;
    (registering, tokens)
}

/// The restarted replica (this binary with `--child`).
fn child() {
    let started = Instant::now();
    let url = flag("--url").unwrap();
    let keyring = Keyring::load(flag("--keyring").unwrap()).unwrap();
    let n: usize = flag("--accounts").unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Store::connect(&url).await.unwrap();
        let vault = Arc::new(VaultHandle::fixed(Vault::new(keyring)));
        // A closed port: a start-up that called WeChat would fail loudly.
        let client = wechat::Client::new(wechat::ClientConfig::for_base(
            "http://127.0.0.1:9/".parse().unwrap(),
        ))
        .unwrap();
        let rss_before = status_kib("VmRSS:");
        let opening = Instant::now();
        let cpu_before = cpu_time();
        let service = TokenService::open(
            store.clone(),
            vault.clone(),
            client,
            Arc::new(SystemClock),
            SchedulerConfig::default(),
        )
        .await
        .unwrap();
        let open = opening.elapsed();
        let open_cpu = cpu_time() - cpu_before;
        let total = started.elapsed();
        let rss_after = status_kib("VmRSS:");
        let peak = status_kib("VmHWM:");
        println!("ready");

        // Every account's token is served from memory; and where the time went.
        let mut after: Option<String> = None;
        let mut served = 0;
        let mut ids = Vec::with_capacity(n);
        let reading = Instant::now();
        let read_cpu_before = cpu_time();
        let mut rows = 0;
        loop {
            let page = store
                .list_token_cache_rows(after.as_deref(), 1000)
                .await
                .unwrap();
            rows += page.len();
            for row in &page {
                ids.push(row.account_id.clone());
            }
            if page.len() < 1000 {
                break;
            }
            after = page.last().map(|r| r.account_id.clone());
        }
        let read = reading.elapsed();
        let read_cpu = cpu_time() - read_cpu_before;
        for id in &ids {
            served += usize::from(service.cached(id).is_some());
        }
        assert_eq!(rows, n);
        assert_eq!(served, n, "every token served from memory");
        // Decrypting alone: one page's rows, decrypted as often as there are pages.
        let page = store.list_token_cache_rows(None, 1000).await.unwrap();
        let vault = vault.current();
        let decrypting = Instant::now();
        let mut opened = 0;
        while opened < n {
            for row in page.iter().take(n - opened) {
                let ct = row.token.as_ref().unwrap();
                accounts::open_core_token(&vault, &row.account_id, &row.wrapped_dek, ct).unwrap();
                opened += 1;
            }
        }
        let decrypt = decrypting.elapsed();
        println!(
            "result open_ms={:.1} open_cpu_ms={:.1} main_to_ready_ms={:.1} \
             rss_before_kib={rss_before} rss_after_kib={rss_after} peak_kib={peak} \
             read_ms={:.1} read_cpu_ms={:.1} decrypt_ms={:.1} served={served}",
            open.as_secs_f64() * 1e3,
            open_cpu.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            read.as_secs_f64() * 1e3,
            read_cpu.as_secs_f64() * 1e3,
            decrypt.as_secs_f64() * 1e3,
        );
        drop(service);
        store.close().await;
    });
}

struct Measured {
    spawn_to_ready: Duration,
    fields: std::collections::HashMap<String, f64>,
}

fn restart(url: &str, keyring: &std::path::Path, n: usize) -> Measured {
    let spawned = Instant::now();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--child",
            "--url",
            url,
            "--accounts",
            &n.to_string(),
            "--keyring",
        ])
        .arg(keyring)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut spawn_to_ready = None;
    let mut fields = std::collections::HashMap::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "ready" {
            spawn_to_ready = Some(spawned.elapsed());
        } else if let Some(rest) = line.strip_prefix("result ") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair.split_once('=').unwrap();
                fields.insert(k.to_owned(), v.parse().unwrap());
            }
        }
    }
    assert!(
        child.wait().unwrap().success(),
        "the restarted replica failed"
    );
    Measured {
        spawn_to_ready: spawn_to_ready.expect("the child said ready"),
        fields,
    }
}

async fn run(backend: &str, db: TestDatabase, keyring_dir: &std::path::Path, n: usize) {
    let keyring = Keyring::generate(KeyId::new("k1").unwrap());
    let keyring_path = keyring_dir.join("keyring.toml");
    keyring.save(&keyring_path).unwrap();
    let (registering, tokens) = fill(db.url(), &keyring, n).await;
    let m = restart(db.url(), &keyring_path, n);
    let f = |k: &str| m.fields[k];
    let per_account = (f("rss_after_kib") - f("rss_before_kib")) * 1024.0 / n as f64;
    println!(
        "{backend}, {n} accounts: registered in {:.1} s ({:.0}/s, batches of {BATCH}), tokens \
         sealed and stored in {:.1} s",
        registering.as_secs_f64(),
        n as f64 / registering.as_secs_f64(),
        tokens.as_secs_f64(),
    );
    println!(
        "  restart → every token served: {:.2} s from spawn ({:.2} s from main, of which \
         TokenService::open {:.2} s = {:.2} µs per account; CPU of the whole process during \
         open {:.2} s = {:.2} µs per account)",
        m.spawn_to_ready.as_secs_f64(),
        f("main_to_ready_ms") / 1e3,
        f("open_ms") / 1e3,
        f("open_ms") * 1e3 / n as f64,
        f("open_cpu_ms") / 1e3,
        f("open_cpu_ms") * 1e3 / n as f64,
    );
    println!(
        "  VmRSS {:.1} MiB before open, {:.1} MiB after ({per_account:.0} bytes per account), \
         peak VmHWM {:.1} MiB",
        f("rss_before_kib") / 1024.0,
        f("rss_after_kib") / 1024.0,
        f("peak_kib") / 1024.0,
    );
    println!(
        "  where open's time goes: reading the rows alone {:.2} s ({:.2} µs/account; CPU {:.2} \
         µs/account), decrypting alone {:.2} s ({:.2} µs/account)",
        f("read_ms") / 1e3,
        f("read_ms") * 1e3 / n as f64,
        f("read_cpu_ms") * 1e3 / n as f64,
        f("decrypt_ms") / 1e3,
        f("decrypt_ms") * 1e3 / n as f64,
    );
    db.finish().await;
}

fn main() {
    if std::env::args().any(|a| a == "--child") {
        child();
        return;
    }
    let counts: Vec<usize> = flag("--accounts")
        .unwrap_or_else(|| "10000,100000,1000000".to_owned())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .expect("--accounts takes numbers, comma separated")
        })
        .collect();
    let postgres = std::env::args().any(|a| a == "--postgres");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let keyring_dir = testkit::TempDir::new();
        for &n in &counts {
            run("SQLite", TestDatabase::sqlite(), keyring_dir.path(), n).await;
            if postgres && let Some(admin) = testkit::postgres_admin_url_or_skip() {
                let db = TestDatabase::postgres_on(&admin).await;
                run("PostgreSQL", db, keyring_dir.path(), n).await;
            }
        }
    });
}
