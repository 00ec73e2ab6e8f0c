//! CPU of a replica waiting on another holder's lease (`harness = false`).
//!
//! ```sh
//! cargo bench -p scheduler --bench lease_wait -- [--waiters 32] [--accounts 4] [--seconds 5]
//! ```
//!
//! A process that stopped while refreshing leaves its lease for 60 s. This starts a replica
//! on the same database, with `--waiters` requests asking (`TokenService::current`) for the
//! first token of `--accounts` accounts whose leases such a process holds, and measures for
//! `--seconds` of wall time: the process's CPU (getrusage; the simulator and the database
//! client included, all in this process) as a share of one core, and the database operations
//! the waits ran (`Store::operations`). Goal: ≤ 1 % of a core. Runs on SQLite, and on
//! PostgreSQL too when `WXHUB_TEST_POSTGRES_URL` is set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use accounts::{AccountInput, VaultHandle};
use scheduler::{RefreshPolicy, SchedulerConfig, TokenError, TokenService};
use store::Store;
use store::accounts::{AccountKind, TokenMode};
use store::people::{NewUser, Role};
use testkit::TestDatabase;
use vault::{KeyId, Keyring, SecretString, Vault};
use wechat::{Clock, SystemClock};
use wechat_sim::{AccountSpec, SimConfig, Simulator};

struct Args {
    waiters: usize,
    accounts: usize,
    seconds: u64,
}

fn args() -> Args {
    let raw: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: u64| {
        raw.iter()
            .position(|a| a == name)
            .and_then(|i| raw.get(i + 1))
            .map_or(default, |v| {
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name} takes a number"))
            })
    };
    Args {
        waiters: value("--waiters", 32) as usize,
        accounts: value("--accounts", 4).max(1) as usize,
        seconds: value("--seconds", 5).max(1),
    }
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

fn appid(i: usize) -> String {
    format!("wx{i:016x}")
}

fn secret(i: usize) -> String {
    format!("{i:032x}")
}

async fn measure(label: &str, db: &TestDatabase, args: &Args) {
    let sim = Simulator::new(SimConfig::default());
    sim.create_accounts((0..args.accounts).map(|i| AccountSpec::new(appid(i), secret(i))))
        .unwrap();
    let running = wechat_sim::spawn(sim, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let store = Store::connect(db.url()).await.unwrap();
    let vault = Arc::new(VaultHandle::fixed(Vault::new(Keyring::generate(
        KeyId::new("k1").unwrap(),
    ))));
    let now = SystemClock.now_ms();
    let owner = store
        .create_user(
            &NewUser {
                id: store::new_id(),
                email: "bench@example.com".into(),
                password_hash: "!".into(),
                role: Role::Owner,
            },
            now,
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..args.accounts {
        let input = AccountInput {
            owner_user_id: owner.id.clone(),
            appid: appid(i),
            name: format!("Bench {i}"),
            kind: AccountKind::Service,
            verified: true,
            token_mode: TokenMode::Token,
            appsecret: SecretString::new(secret(i)),
            push_token: None,
            encoding_aes_key: None,
        };
        let account = accounts::register_account(&store, &vault.current(), &input, now)
            .await
            .unwrap();
        // The process that stopped: its lease outlives the measurement.
        let day = RefreshPolicy::default().quota_day(now);
        store
            .claim_token_refresh(&account.id, "stopped-replica", now, now + 60_000, day, 200)
            .await
            .unwrap()
            .unwrap();
        ids.push(account.id);
    }
    let service = TokenService::open(
        store.clone(),
        vault,
        wechat::Client::new(wechat::ClientConfig::for_base(running.base_url())).unwrap(),
        Arc::new(SystemClock),
        SchedulerConfig {
            first_token_wait: Duration::from_secs(args.seconds),
            ..SchedulerConfig::default()
        },
    )
    .await
    .unwrap();
    let tasks = service.listen().await.unwrap();

    let ops0 = store.operations();
    let cpu0 = cpu_time();
    let started = Instant::now();
    let mut waiters = Vec::new();
    for w in 0..args.waiters {
        let service = service.clone();
        let id = ids[w % ids.len()].clone();
        waiters.push(tokio::spawn(async move { service.current(&id).await }));
    }
    for waiter in waiters {
        match waiter.await.unwrap() {
            Err(TokenError::Pending) => {}
            other => panic!("expected the wait to end with Pending, got {other:?}"),
        }
    }
    let wall = started.elapsed();
    let cpu = cpu_time() - cpu0;
    let ops = store.operations() - ops0;
    println!(
        "{label}: {} requests waiting on {} held leases for {:.2} s: CPU {:.3} % of a core \
         ({:.1} ms), {ops} database operations ({:.1}/s) (goal ≤ 1 %)",
        args.waiters,
        args.accounts,
        wall.as_secs_f64(),
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        cpu.as_secs_f64() * 1e3,
        ops as f64 / wall.as_secs_f64(),
    );
    // The listener's connection goes back to the pool with its task, so the pool can close.
    drop(tasks);
    drop(service);
    store.close().await;
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = TestDatabase::sqlite();
        measure("SQLite", &db, &args).await;
        db.finish().await;
        if let Some(admin) = testkit::postgres_admin_url() {
            let db = TestDatabase::postgres_on(&admin).await;
            measure("PostgreSQL", &db, &args).await;
            db.finish().await;
        }
    });
}
