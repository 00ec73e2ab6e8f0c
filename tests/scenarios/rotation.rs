//! Scenario 4 of the reliability plan: `wxhub vault rotate` while two replicas serve token
//! reads, logins and pushes. Every request succeeds, and afterwards everything stored is under
//! the new master key and both replicas read it (a refresh unseals the AppSecret under it, a
//! login signs with a key sealed under it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use e2e::{PATIENCE, Topology};

/// Logins before the rotation, and as many after.
const LOGINS_PER_PHASE: usize = 8;

#[derive(Default)]
struct Tally {
    reads: AtomicU64,
    logins: AtomicU64,
    pushes: AtomicU64,
    failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn count(&self, counter: &AtomicU64, outcome: Result<impl Sized, String>) {
        match outcome {
            Ok(_) => {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => self.failures.lock().unwrap().push(error),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_key_rotation_under_load_fails_no_request() {
    let Some(topology) = Topology::start(2).await else {
        eprintln!("{}", testkit::DID_NOT_RUN);
        return;
    };
    let topology = Arc::new(topology);
    let (_, generation_before) = topology.read_token(0).await.expect("a first token");
    let old_key = active_key(&topology);

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let login_permits = Arc::new(tokio::sync::Semaphore::new(0));
    let mut load = Vec::new();
    for replica in 0..2 {
        // Token reads, as owners' backends make them, on both replicas.
        let (t, counts, stopped) = (topology.clone(), tally.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stopped.load(Ordering::Relaxed) {
                counts.count(&counts.reads, t.read_token(replica).await);
            }
        }));
        // Logins, on both replicas, as many as the test hands out permits for: one address
        // starts them all, and the hub allows an address 30 at once, then one every 2 s.
        let (t, counts, permits) = (topology.clone(), tally.clone(), login_permits.clone());
        load.push(tokio::spawn(async move {
            while let Ok(permit) = permits.acquire().await {
                permit.forget();
                counts.count(&counts.logins, t.login(replica, "alice").await);
            }
        }));
    }
    // Pushes: bob follows and unfollows.
    let (t, pushes_tally, pushes_stop) = (topology.clone(), tally.clone(), stop.clone());
    load.push(tokio::spawn(async move {
        let mut follow = true;
        while !pushes_stop.load(Ordering::Relaxed) {
            pushes_tally.count(&pushes_tally.pushes, t.push_follow("bob", follow).await);
            follow = !follow;
        }
    }));

    // The rotation, while all of that runs, once some of each has happened.
    login_permits.add_permits(LOGINS_PER_PHASE);
    wait_until(|| {
        tally.reads.load(Ordering::Relaxed) >= 50
            && tally.logins.load(Ordering::Relaxed) >= 2
            && tally.pushes.load(Ordering::Relaxed) >= 2
    })
    .await;
    let rotating = Instant::now();
    let t = topology.clone();
    let rotated = tokio::task::spawn_blocking(move || {
        t.ok(&["vault", "rotate", "--key-id", "k-rotated-under-load"], "")
    })
    .await
    .unwrap();
    let rotation_ms = rotating.elapsed().as_millis();
    let new_key = active_key(&topology);
    assert_ne!(new_key, old_key, "{}", rotated.stdout);
    let after_rotation = (
        tally.reads.load(Ordering::Relaxed),
        tally.logins.load(Ordering::Relaxed),
        tally.pushes.load(Ordering::Relaxed),
    );

    // A replica started now opens the stored token, sealed under the new key, and serves it
    // and a login.
    let fresh = topology.spawn_replica(2).await;
    let (_, generation) = topology
        .read_token_on(&fresh)
        .await
        .expect("the new replica reads");
    assert!(generation >= generation_before);
    let pending = topology
        .begin_login_on(&fresh, "alice")
        .await
        .expect("a login starts");
    topology
        .finish_login_on(&fresh, pending)
        .await
        .expect("and completes on the new replica");
    // More of each after the rotation, still without a failure.
    login_permits.add_permits(LOGINS_PER_PHASE);
    let attempted =
        || tally.logins.load(Ordering::Relaxed) + tally.failures.lock().unwrap().len() as u64;
    wait_until(|| {
        tally.reads.load(Ordering::Relaxed) >= after_rotation.0 + 50
            && tally.pushes.load(Ordering::Relaxed) >= after_rotation.2 + 2
            && attempted() >= 2 * LOGINS_PER_PHASE as u64
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    login_permits.close();
    for task in load {
        task.await.unwrap();
    }

    let failures = tally.failures.lock().unwrap().clone();
    let (reads, logins, pushes) = (
        tally.reads.load(Ordering::Relaxed),
        tally.logins.load(Ordering::Relaxed),
        tally.pushes.load(Ordering::Relaxed),
    );
    println!(
        "rotation under load: {reads} token reads, {logins} logins, {pushes} pushes, \
         {} failed; the rotation took {rotation_ms} ms",
        failures.len()
    );
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(
        logins,
        2 * LOGINS_PER_PHASE as u64,
        "every login handed out ran"
    );
    assert!(
        logins - after_rotation.1 >= 1,
        "logins ran after the rotation too"
    );
    // Nothing is left under the old key: it can go.
    topology.ok(&["vault", "drop-key", &old_key], "");
    let status = topology.ok(&["vault", "status"], "");
    assert!(!status.stdout.contains(&old_key), "{}", status.stdout);
    assert!(topology.login(0, "alice").await.is_ok());
    assert!(topology.login(1, "alice").await.is_ok());
    if let Ok(topology) = Arc::try_unwrap(topology) {
        topology.finish().await;
    }
}

/// The id of the keyring's active key, from `wxhub vault status`.
fn active_key(topology: &Topology) -> String {
    let status = topology.ok(&["vault", "status"], "");
    status
        .stdout
        .lines()
        .find(|line| line.trim_end().ends_with(" active"))
        .and_then(|line| line.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| panic!("no active key in {}", status.stdout))
}

async fn wait_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "not reached within {PATIENCE:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
