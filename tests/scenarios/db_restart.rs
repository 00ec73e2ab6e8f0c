//! Scenario 5 of the reliability plan: the database stops for 30 s and starts again, under two
//! replicas serving token reads and receiving pushes. The scenario runs its own PostgreSQL (the
//! shared test server is never stopped).
//!
//! - Tokens keep being served from memory: no token read fails during the outage.
//! - `/readyz` says 503 while the database is away, and 200 again once it is back.
//! - Nothing is lost: a push that arrives during the outage is refused with a 5xx — never
//!   acknowledged without being stored — so WeChat retries it (docs/wechat.md §6.4: three
//!   attempts); once the database is back the retry is applied, and every push is stored
//!   exactly once. A login begun before the outage completes after it.
//!
//! The outage lasts 30 s of real time because that is the fault: connections, pools and
//! timeouts are real. The readiness transitions have no event to wait on, so they are polled
//! (every 100 ms, with a deadline).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::{OwnPostgres, PATIENCE, Topology};

const OUTAGE: Duration = Duration::from_secs(30);
/// MsgIds of the pushes before, during and after the outage.
const BEFORE: u64 = 51_000;
const DURING: u64 = 52_000;
const AFTER: u64 = 53_000;
const PUSHES_PER_PHASE: u64 = 3;

async fn ready(topology: &Topology, replica: usize) -> Option<u16> {
    topology
        .http
        .get(format!("{}/readyz", topology.replicas[replica].base))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Polls `/readyz` of every replica (no event to wait on) until each answers `status`.
async fn wait_ready_status(topology: &Topology, status: u16) -> Duration {
    let since = Instant::now();
    loop {
        let mut all = true;
        for replica in 0..topology.replicas.len() {
            all &= ready(topology, replica).await == Some(status);
        }
        if all {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < PATIENCE,
            "/readyz never answered {status} on every replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restart_loses_nothing_and_tokens_keep_being_served() {
    if testkit::postgres_admin_url().is_none() {
        // Like every PostgreSQL scenario: CI runs them with the shared server configured.
        eprintln!("{}", testkit::DID_NOT_RUN);
        return;
    }
    let postgres = OwnPostgres::start();
    let topology = Arc::new(Topology::start_on_url(2, &postgres.url()).await);
    for replica in 0..2 {
        topology.read_token(replica).await.expect("a first token");
    }
    topology
        .push_follow("bob", true)
        .await
        .expect("bob follows");
    for id in BEFORE..BEFORE + PUSHES_PER_PHASE {
        topology.push_text("bob", id).await.expect("a push");
    }
    let login = topology
        .begin_login(1, "alice")
        .await
        .expect("a login up to WeChat's answer");
    assert_eq!(ready(&topology, 0).await, Some(200));

    // Token reads on both replicas all through the outage.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let slowest_ms = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for replica in 0..2 {
        let (t, stop, reads, slowest_ms) = (
            topology.clone(),
            stop.clone(),
            reads.clone(),
            slowest_ms.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match t.read_token(replica).await {
                    Ok(_) => {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => failures.push(error),
                }
                let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                slowest_ms.fetch_max(took, Ordering::Relaxed);
            }
            failures
        }));
    }

    let stopping = Instant::now();
    postgres.stop();
    let reads_at_outage_start = reads.load(Ordering::Relaxed);
    let not_ready_after = wait_ready_status(&topology, 503).await;
    // At once: each of WeChat's attempts waits for the hub's database time-out (5 s).
    let refused: Vec<String> = futures_util::future::join_all(
        (DURING..DURING + PUSHES_PER_PHASE).map(|id| topology.push_text("bob", id)),
    )
    .await
    .into_iter()
    .map(|outcome| outcome.expect_err("a push acknowledged while the database is down"))
    .collect();
    // The fault's own duration (see the module doc), with the readers running.
    tokio::time::sleep(OUTAGE.saturating_sub(stopping.elapsed())).await;
    let reads_during = reads.load(Ordering::Relaxed) - reads_at_outage_start;
    postgres.start_again();
    let down_for = stopping.elapsed();
    let ready_after = wait_ready_status(&topology, 200).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for reader in readers {
        failures.extend(reader.await.unwrap());
    }

    // WeChat's retries of the refused pushes, and new ones.
    for id in DURING..DURING + PUSHES_PER_PHASE {
        topology
            .push_text("bob", id)
            .await
            .expect("the retry is applied");
    }
    for id in AFTER..AFTER + PUSHES_PER_PHASE {
        topology.push_text("bob", id).await.expect("a push after");
    }
    let openid = topology
        .finish_login(0, login)
        .await
        .expect("the login begun before the outage completes");
    for replica in 0..2 {
        topology.read_token(replica).await.expect("a token after");
    }
    let mut stored = topology.stored_pushes().await;
    stored.sort();
    let mut expected: Vec<String> = [BEFORE, DURING, AFTER]
        .iter()
        .flat_map(|from| (*from..*from + PUSHES_PER_PHASE).map(|id| id.to_string()))
        .collect();
    expected.sort();
    println!(
        "database down {} ms: {reads_during} token reads served from memory during it, {} \
         failed, the slowest {} ms; /readyz said 503 {} ms after the stop and 200 {} ms after the start; {} pushes \
         refused during it ({}), all applied once on WeChat's retry; {} pushes stored",
        down_for.as_millis(),
        failures.len(),
        slowest_ms.load(Ordering::Relaxed),
        not_ready_after.as_millis(),
        ready_after.as_millis(),
        refused.len(),
        refused.first().map_or("", String::as_str),
        stored.len()
    );
    assert!(failures.is_empty(), "token reads failed: {failures:?}");
    assert!(reads_during > 0);
    assert_eq!(stored, expected, "every push stored exactly once");
    assert!(openid.starts_with('o'), "{openid}");
    if let Ok(topology) = Arc::try_unwrap(topology) {
        topology.finish().await;
    }
    drop(postgres);
}
