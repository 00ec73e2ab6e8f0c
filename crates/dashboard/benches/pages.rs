//! The dashboard's account pages with many accounts: the operator's list (first page, a late
//! page, a search by name, a rare token state, one owner's accounts), an owner's list and the
//! account page, each asked over HTTP on loopback as a signed-in person, on an SQLite file
//! and (with `WXHUB_TEST_POSTGRES_URL`) on PostgreSQL.
//!
//! Run with `cargo bench -p dashboard --bench pages` (`WXHUB_BENCH_ACCOUNTS=N` to change the
//! default of 100,000 accounts; `WXHUB_BENCH_REQUESTS=N` the requests per page, default 300).
//! Prints p50 and p99 per page; the goal is p99 ≤ 25 ms.

#[path = "../tests/dashboard/common.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Browser, Env, OPERATOR, PASSWORD};
use store::accounts::{AccountKind, AccountSecrets, NewAccount, TokenMode};
use store::people::Role;
use store::tokens::{RefreshFailure, TokenState};
use testkit::TestDatabase;

/// Owners the accounts are spread over; the first owns the account page's account.
const OWNERS: usize = 200;
/// One account in this many needs attention (the rare state the filter looks for).
const FAILING_EVERY: usize = 1_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn appid(n: usize) -> String {
    format!("wx{n:016x}")
}

async fn fill(env: &Env, accounts: usize) -> Vec<String> {
    let store = env.tenancy.store();
    let mut owners = Vec::with_capacity(OWNERS);
    for n in 0..OWNERS {
        owners.push(
            env.person(&format!("owner-{n}@bench.example"), Role::Owner)
                .await,
        );
    }
    let started = Instant::now();
    for n in 0..accounts {
        let owner = &owners[n % OWNERS];
        let account = store
            .create_account(
                &NewAccount {
                    id: store::new_id(),
                    owner_user_id: owner.id.clone(),
                    appid: appid(n),
                    // Names to search in: a word shared by one account in 5,000.
                    name: if n % 5_000 == 7 {
                        format!("Teahouse {n}")
                    } else {
                        format!("Account {n}")
                    },
                    kind: if n % 10 == 0 {
                        AccountKind::Subscription
                    } else {
                        AccountKind::Service
                    },
                    verified: true,
                    token_mode: TokenMode::Token,
                    // The pages read no secret: opaque bytes under the bench's key id.
                    secrets: AccountSecrets {
                        wrapped_dek: vec![1; 60],
                        dek_kek_id: "k1".to_owned(),
                        appsecret: vec![2; 60],
                        push_token: None,
                        encoding_aes_key: None,
                    },
                    appsecret_hint: Some("ab12".to_owned()),
                },
                common::START,
            )
            .await
            .unwrap();
        if n % FAILING_EVERY == FAILING_EVERY / 2 {
            let claimed = store
                .claim_token_refresh(
                    &account.id,
                    "bench",
                    common::START,
                    common::START + 1,
                    0,
                    i64::MAX,
                )
                .await
                .unwrap()
                .unwrap();
            store
                .record_refresh_failure(
                    &account.id,
                    claimed.generation,
                    &RefreshFailure {
                        state: TokenState::NeedsAttention,
                        error_code: Some(40164),
                        error_message: "not whitelisted".to_owned(),
                        error_ip: Some("203.0.113.7".to_owned()),
                        next_refresh_at: common::START + 600_000,
                    },
                    common::START,
                )
                .await
                .unwrap();
        }
    }
    // As a database that has been running a while: the planner knows the tables.
    store.analyze().await.unwrap();
    eprintln!(
        "  filled {accounts} accounts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    owners.into_iter().map(|o| o.email).collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn measure(browser: &mut Browser, label: &str, path: &str, requests: usize) {
    // Warm the connection, the statement caches and the page's rows.
    for _ in 0..5 {
        let page = browser.get(path).await;
        assert_eq!(
            page.status,
            reqwest::StatusCode::OK,
            "{path}: {}",
            page.body
        );
    }
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        let start = Instant::now();
        let page = browser.get(path).await;
        times.push(start.elapsed());
        assert_eq!(page.status, reqwest::StatusCode::OK);
    }
    times.sort();
    println!(
        "  {label:<34} p50 {:>6.2} ms   p99 {:>6.2} ms",
        percentile(&times, 0.50).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
    );
}

async fn run(db: TestDatabase, backend: &str, accounts: usize, requests: usize) {
    let env = Env::start(db, |_| {}).await;
    println!("{backend}, {accounts} accounts:");
    let owners = fill(&env, accounts).await;
    env.person(OPERATOR, Role::Operator).await;
    let mut operator = env.signed_in(OPERATOR).await;
    let mut owner = Browser::new(&env.base);
    owner.sign_in(&owners[0], PASSWORD).await;
    // A late page: the `after` of an account four fifths of the way through.
    let page = env
        .tenancy
        .store()
        .find_account_by_appid(&appid(accounts * 4 / 5))
        .await
        .unwrap()
        .unwrap();
    measure(
        &mut operator,
        "all accounts, first page",
        "/dashboard/operator/accounts",
        requests,
    )
    .await;
    measure(
        &mut operator,
        "all accounts, a late page",
        &format!("/dashboard/operator/accounts?after={}", page.id),
        requests,
    )
    .await;
    measure(
        &mut operator,
        "search by part of the name",
        "/dashboard/operator/accounts?q=teahouse",
        requests,
    )
    .await;
    measure(
        &mut operator,
        "search by AppID",
        &format!("/dashboard/operator/accounts?q={}", appid(accounts / 3)),
        requests,
    )
    .await;
    measure(
        &mut operator,
        "needing attention (rare state)",
        "/dashboard/operator/accounts?state=needs_attention",
        requests,
    )
    .await;
    measure(
        &mut operator,
        "one owner's accounts",
        &format!(
            "/dashboard/operator/accounts?owner={}",
            owners[OWNERS / 2].replace('@', "%40")
        ),
        requests,
    )
    .await;
    measure(
        &mut operator,
        "platform health",
        "/dashboard/operator/health",
        requests,
    )
    .await;
    measure(
        &mut owner,
        "an owner's accounts",
        "/dashboard/accounts",
        requests,
    )
    .await;
    measure(
        &mut owner,
        "the account page",
        &format!("/dashboard/accounts/{}", appid(0)),
        requests,
    )
    .await;
    env.finish().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let accounts = env_usize("WXHUB_BENCH_ACCOUNTS", 100_000);
    let requests = env_usize("WXHUB_BENCH_REQUESTS", 300);
    run(TestDatabase::sqlite(), "SQLite", accounts, requests).await;
    match TestDatabase::postgres().await {
        Some(db) => run(db, "PostgreSQL", accounts, requests).await,
        None => println!("PostgreSQL: not run (set WXHUB_TEST_POSTGRES_URL)"),
    }
}
