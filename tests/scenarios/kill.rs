//! Scenario 1 of the reliability plan: SIGKILL ×100. Three replicas on the simulator's manual
//! clock; a random one is killed at a random moment, 100 times, and restarted each time, while
//! tokens refresh (WeChat answers `/cgi-bin/token` 0, 1, 2 or 3 s late, drawn by the
//! simulator's seeded fault RNG), backends read tokens, logins run and pushes arrive through one
//! address in front of the live replicas (the compose file's proxy). The seed is printed;
//! `E2E_KILL_SEED=N` repeats a run.
//!
//! Afterwards, in figures:
//! - 0 stale writes: no replica process ever serves a token older (a lower generation) than
//!   one it served before, and at the end every replica serves, for every account, the token
//!   WeChat minted last — valid;
//! - extra upstream token calls ≤ 1 per kill: a fetch is extra when WeChat minted the next
//!   token of the account sooner than the schedule allows (75 % of 7200 s), i.e. the hub never
//!   stored it (its replica died with the answer in flight);
//! - every push applied exactly once (stored under its MsgId, once);
//! - every login whose replica survived completed; the others complete when retried;
//! - a replica waiting for a dead replica's lease uses at most [`WAIT_CPU_LIMIT`] of a core
//!   (utime + stime from `/proc/PID/stat` over the wait).
//!
//! Each round waits until no live replica holds a lease (simulated time must not lap a lease
//! while the real call is out), moves the clock [`STEP`] (the schedulers wake and refresh what
//! is due), lets the load run for a random 0–1 s, then kills and restarts. Logins and pushes hold a read guard on the clock
//! so it never moves in the middle of one (codes live 60 s, push timestamps 300 s); the kills
//! ignore that guard.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::{
    APPID, PATIENCE, Replica, Topology, cpu_ticks, http_from, read_token_with, ticks_per_second,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use tokio::sync::{Mutex, RwLock};

const KILLS: usize = 100;
const REPLICAS: usize = 3;
/// Accounts besides [`APPID`].
const MORE_ACCOUNTS: u32 = 23;
/// Less than the 300 s a superseded token keeps working minus the 60 s lease, so a fetch lost
/// with a killed replica is taken over before the token the hub holds dies.
const STEP: Duration = Duration::from_secs(200);
const WINDOW_MS: i64 = 5_400_000;
const WAIT_CPU_LIMIT: f64 = 0.05;

/// The live replicas as the load sees them: base URL and incarnation per slot.
type Live = Arc<std::sync::Mutex<Vec<(String, u64)>>>;

/// A random live replica (a slot being restarted has no base).
fn pick(live: &Live, rng: &mut StdRng) -> (usize, String, u64) {
    let live = live.lock().unwrap();
    let up: Vec<usize> = (0..live.len()).filter(|n| !live[*n].0.is_empty()).collect();
    let slot = up[rng.random_range(0..up.len())];
    (slot, live[slot].0.clone(), live[slot].1)
}

fn incarnation(live: &Live, slot: usize) -> u64 {
    live.lock().unwrap()[slot].1
}

/// One HTTP client per account, each from its own loopback address: each account's backend
/// is another machine, as far as the hub's per-address limit on keys it has not verified yet
/// goes (a restarted replica has verified none; that limit refills by the hub's clock, which
/// stands still between rounds here).
fn backend_clients(n: usize) -> Vec<reqwest::Client> {
    (0..n)
        .map(|i| {
            let i = u8::try_from(i).expect("fewer than 200 accounts");
            http_from(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                127,
                0,
                1,
                10 + i,
            )))
        })
        .collect()
}

#[derive(Default)]
struct Observed {
    /// (slot, incarnation, appid) → generations served, in order.
    served: HashMap<(usize, u64, String), Vec<i64>>,
    reads: u64,
    read_failures: Vec<String>,
    logins: u64,
    logins_cut: u64,
    login_failures: Vec<String>,
    pushes: Vec<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_sigkills_lose_nothing_and_write_nothing_stale() {
    let started = Instant::now();
    let seed = std::env::var("E2E_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random::<u64>());
    println!("SIGKILL scenario seed {seed} (E2E_KILL_SEED={seed} repeats it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let Some(mut topology) = Topology::start_manual(0).await else {
        eprintln!("{}", testkit::DID_NOT_RUN);
        return;
    };
    let mut accounts: Vec<(String, String)> = vec![(APPID.to_owned(), topology.api_key.clone())];
    for appid in topology.add_accounts(0x0c1, MORE_ACCOUNTS).await {
        let key = topology.api_key_for(&appid);
        accounts.push((appid, key));
    }
    let mut replicas: Vec<Replica> = Vec::new();
    for n in 0..REPLICAS {
        replicas.push(topology.spawn_replica(n).await);
    }
    let mut next_name = REPLICAS;
    let bases =
        |replicas: &[Replica]| -> Vec<String> { replicas.iter().map(|r| r.base.clone()).collect() };
    {
        let b = bases(&replicas);
        let b: Vec<&str> = b.iter().map(String::as_str).collect();
        topology.use_balancer(&b).await;
        topology.run_due_on(&b).await;
    }
    topology
        .push_follow("bob", true)
        .await
        .expect("bob follows");
    // WeChat's token endpoint answers 0–3 s late, each a quarter of the calls.
    topology
        .sim_post("/__sim/faults/seed", json!({ "seed": seed }))
        .await;
    for (ms, rate) in [(3000, 0.25), (2000, 1.0 / 3.0), (1000, 0.5)] {
        topology
            .sim_post(
                "/__sim/faults",
                json!({"endpoint": "/cgi-bin/token", "rate": rate,
                       "action": {"kind": "latency", "ms": ms}}),
            )
            .await;
    }

    let topology = Arc::new(topology);
    let accounts = Arc::new(accounts);
    let live: Live = Arc::new(std::sync::Mutex::new(
        replicas.iter().map(|r| (r.base.clone(), 0)).collect(),
    ));
    let clock_gate = Arc::new(RwLock::new(()));
    let observed = Arc::new(Mutex::new(Observed::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    // Backends reading tokens, on random replicas.
    for reader in 0..2u64 {
        let (accounts, live, observed, stop) = (
            accounts.clone(),
            live.clone(),
            observed.clone(),
            stop.clone(),
        );
        let mut rng = StdRng::seed_from_u64(seed ^ (reader + 1));
        let clients = backend_clients(accounts.len());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (slot, base, inc) = pick(&live, &mut rng);
                let account = rng.random_range(0..accounts.len());
                let (appid, key) = &accounts[account];
                let read = read_token_with(&clients[account], &base, appid, key).await;
                let mut o = observed.lock().await;
                match read {
                    Ok((_, generation)) => {
                        o.reads += 1;
                        o.served
                            .entry((slot, inc, appid.clone()))
                            .or_default()
                            .push(generation);
                    }
                    // A read the kill cut is the backend's to retry.
                    Err(_) if incarnation(&live, slot) != inc => {}
                    Err(error) => o.read_failures.push(error),
                }
            }
        }));
    }
    // Logins: one a round (the hub allows an address 30 at once, then one every 2 s), each on
    // a random replica; one cut by a kill is retried.
    let login_permits = Arc::new(tokio::sync::Semaphore::new(0));
    let push_permits = Arc::new(tokio::sync::Semaphore::new(0));
    {
        let (t, live, observed, permits, gate) = (
            topology.clone(),
            live.clone(),
            observed.clone(),
            login_permits.clone(),
            clock_gate.clone(),
        );
        let mut rng = StdRng::seed_from_u64(seed ^ 0x1091);
        load.push(tokio::spawn(async move {
            while let Ok(permit) = permits.acquire().await {
                permit.forget();
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let _still = gate.read().await;
                    let (slot, base, inc) = pick(&live, &mut rng);
                    let outcome = match t.begin_login_at(&base, "alice").await {
                        Ok(pending) => t.finish_login_at(&base, pending).await,
                        Err(error) => Err(error),
                    };
                    let survived = incarnation(&live, slot) == inc;
                    let mut o = observed.lock().await;
                    match outcome {
                        Ok(_) => {
                            o.logins += 1;
                            break;
                        }
                        Err(_) if !survived && attempt < 5 => o.logins_cut += 1,
                        Err(error) => {
                            o.login_failures
                                .push(format!("attempt {attempt} survived={survived}: {error}"));
                            break;
                        }
                    }
                }
            }
        }));
    }
    // Pushes, two a round, each a new MsgId; WeChat's attempts that all failed are sent again
    // (its retry).
    {
        let (t, observed, permits, gate) = (
            topology.clone(),
            observed.clone(),
            push_permits.clone(),
            clock_gate.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut msg_id = 70_000u64;
            while let Ok(permit) = permits.acquire().await {
                permit.forget();
                msg_id += 1;
                let deadline = Instant::now() + PATIENCE;
                loop {
                    let _still = gate.read().await;
                    if t.push_text("bob", msg_id).await.is_ok() {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "push {msg_id} never acknowledged"
                    );
                }
                observed.lock().await.pushes.push(msg_id);
            }
        }));
    }

    let pool = topology.database_pool().await;
    let mut holders = Vec::new();
    for replica in &replicas {
        holders.push(topology.holder_of(&replica.base).await);
    }
    let mut kill_log: BTreeMap<usize, u64> = BTreeMap::new();
    // The replica being restarted (its slot and start), installed during the next round, so
    // a start overlaps the next round instead of adding to it.
    let mut restarting: Option<(usize, tokio::task::JoinHandle<Replica>)> = None;
    let others = |replicas: &[Replica], skip: Option<usize>| -> Vec<String> {
        replicas
            .iter()
            .enumerate()
            .filter(|(n, _)| Some(*n) != skip)
            .map(|(_, r)| r.base.clone())
            .collect()
    };
    for _ in 0..KILLS {
        let skip = restarting.as_ref().map(|(slot, _)| *slot);
        // A live replica's refresh still at WeChat finishes first: simulated time must not
        // lap its lease (60 s) while the real call is out. A dead replica's lease is left to
        // lapse, which is the point.
        let live_holders: Vec<String> = holders
            .iter()
            .enumerate()
            .filter(|(n, _)| Some(*n) != skip)
            .map(|(_, h)| h.clone())
            .collect();
        topology.wait_leases_released(&pool, &live_holders).await;
        {
            let _moving = clock_gate.write().await;
            let b = others(&replicas, skip);
            let b: Vec<&str> = b.iter().map(String::as_str).collect();
            topology.advance_on(STEP, &b).await;
        }
        login_permits.add_permits(1);
        push_permits.add_permits(2);
        // The load and the refreshes the move started run for a random moment (the point of
        // this wait is its randomness; nothing is waited for).
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
        if let Some((slot, start)) = restarting.take() {
            let fresh = start.await.unwrap();
            // It started at the simulator's time of its start; the clock moved since.
            let now = topology.sim_now().await;
            topology.set_replica_clock(&fresh.base, now).await;
            holders[slot] = topology.holder_of(&fresh.base).await;
            live.lock().unwrap()[slot].0 = fresh.base.clone();
            replicas[slot] = fresh;
        }
        let slot = rng.random_range(0..replicas.len());
        // The load learns of the death first, so a request the kill cuts is known as cut.
        {
            let mut live = live.lock().unwrap();
            let incarnation = live[slot].1 + 1;
            live[slot] = (String::new(), incarnation);
        }
        replicas[slot].process.kill();
        *kill_log.entry(slot).or_default() += 1;
        let b = others(&replicas, Some(slot));
        let b: Vec<&str> = b.iter().map(String::as_str).collect();
        topology.balance_over(&b);
        let (t, name) = (topology.clone(), next_name);
        next_name += 1;
        restarting = Some((
            slot,
            tokio::spawn(async move { t.spawn_replica(name).await }),
        ));
    }
    if let Some((slot, start)) = restarting.take() {
        let fresh = start.await.unwrap();
        let now = topology.sim_now().await;
        topology.set_replica_clock(&fresh.base, now).await;
        live.lock().unwrap()[slot].0 = fresh.base.clone();
        replicas[slot] = fresh;
    }
    let b = bases(&replicas);
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    topology.balance_over(&b);
    stop.store(true, Ordering::Relaxed);
    login_permits.close();
    push_permits.close();
    for task in load {
        task.await.unwrap();
    }
    let kills_done = started.elapsed();

    // A replica waiting for a dead replica's lease: an account whose first fetch WeChat holds,
    // every replica killed while one waits for it, a fresh replica asked for its token.
    topology
        .http
        .delete(format!("{}/__sim/faults", topology.sim_base))
        .send()
        .await
        .unwrap();
    topology
        .sim_post(
            "/__sim/faults",
            json!({"endpoint": "/cgi-bin/token", "appid": "wx0c10000000ffffff", "rate": 1.0,
                   "action": {"kind": "timeout", "ms": 30000}}),
        )
        .await;
    let waited_appid = "wx0c10000000ffffff";
    topology
        .sim_post(
            "/__sim/accounts",
            json!({"appid": waited_appid, "secret": "0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e"}),
        )
        .await;
    topology.ok(
        &[
            "account",
            "add",
            waited_appid,
            "--name",
            "waited",
            "--owner",
            "e2e@example.com",
            "--skip-check",
        ],
        "0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e\n",
    );
    let waited_key = topology.api_key_for(waited_appid);
    // The fetch is in flight once the simulator's rule has fired (no event to wait on: polled).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let faults = topology.sim_get("/__sim/faults").await;
        if faults
            .as_array()
            .is_some_and(|rules| rules.iter().any(|r| r["fired"].as_u64() > Some(0)))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first fetch never reached WeChat"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for replica in &mut replicas {
        replica.process.kill();
    }
    // The tokens' read path is done with: the load has stopped.
    let waiter = topology.spawn_replica(next_name).await;
    next_name += 1;
    let pid = waiter.process.pid();
    let waiting = {
        let (t, base, key) = (topology.clone(), waiter.base.clone(), waited_key.clone());
        tokio::spawn(async move { t.read_token_at(&base, waited_appid, &key).await })
    };
    // The wait for the dead lease is measured from when the read has reached the replica.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ticks_before, wall) = (cpu_ticks(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = (cpu_ticks(pid) - ticks_before) as f64
        / ticks_per_second() as f64
        / wall.elapsed().as_secs_f64();
    assert!(
        !waiting.is_finished(),
        "the read did not wait for the lease"
    );
    topology
        .http
        .delete(format!("{}/__sim/faults", topology.sim_base))
        .send()
        .await
        .unwrap();
    // The lease (60 s) lapses: the waiting read takes the fetch over.
    topology
        .advance_on(Duration::from_secs(61), &[waiter.base.as_str()])
        .await;
    let waited = waiting.await.unwrap();
    assert!(
        waited.is_ok(),
        "the read after the lease lapsed: {waited:?}"
    );

    // Everything settles: the other replicas back, the clock past every lease.
    let mut replicas = vec![waiter];
    for _ in 1..REPLICAS {
        replicas.push(topology.spawn_replica(next_name).await);
        next_name += 1;
    }
    let b = bases(&replicas);
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    topology.advance_on(Duration::from_secs(61), &b).await;
    topology.run_due_on(&b).await;

    let observed = observed.lock().await;
    let stale_served: Vec<_> = observed
        .served
        .iter()
        .filter(|(_, generations)| generations.windows(2).any(|w| w[1] < w[0]))
        .map(|(key, generations)| (key.clone(), generations.clone()))
        .collect();
    // The simulator's log of token calls: when each account's tokens were minted.
    let calls = topology
        .sim_get("/__sim/calls?endpoint=/cgi-bin/token&limit=10000")
        .await;
    let mut minted: HashMap<String, Vec<i64>> = HashMap::new();
    for call in calls.as_array().unwrap() {
        if call["errcode"] == 0 && call["http_status"] == 200 {
            minted
                .entry(call["appid"].as_str().unwrap().to_owned())
                .or_default()
                .push(call["at_ms"].as_i64().unwrap());
        }
    }
    let mut extra = 0usize;
    for times in minted.values_mut() {
        times.sort_unstable();
        extra += times.windows(2).filter(|w| w[1] - w[0] < WINDOW_MS).count();
    }
    // Every replica's cache takes the others' writes from PostgreSQL's notifications; there is
    // no event to wait on over HTTP, so each read is polled until it matches, with a deadline.
    let mut not_newest = Vec::new();
    let clients = backend_clients(accounts.len());
    for (account, (appid, key)) in accounts.iter().enumerate() {
        let tokens = topology.core_tokens_of(appid).await;
        let newest = tokens.last().expect("a token");
        let newest_token = newest["access_token"].as_str().unwrap();
        assert_eq!(newest["status"], "valid", "{appid}: WeChat's newest token");
        for replica in &replicas {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let served = read_token_with(&clients[account], &replica.base, appid, key).await;
                if served.as_ref().is_ok_and(|(t, _)| t == newest_token) {
                    break;
                }
                if Instant::now() > deadline {
                    not_newest.push((appid.clone(), served.map(|(_, g)| g)));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let refused_writes: usize = (0..next_name)
        .map(|n| {
            std::fs::read_to_string(topology.dir.path().join(format!("replica-{n}.log")))
                .unwrap_or_default()
                .matches("lost its lease; result dropped")
                .count()
        })
        .sum();
    let mut stored = topology.stored_pushes().await;
    stored.sort();
    let mut expected: Vec<String> = observed.pushes.iter().map(u64::to_string).collect();
    expected.sort();
    println!(
        "{KILLS} SIGKILLs ({kill_log:?} per slot) in {} s: {} token reads, {} stale served, {} \
         read failures; {} extra token calls (WeChat minted again within a window) for {} \
         accounts; {} late writes refused by the fence; {} logins completed, {} cut by a kill \
         and retried, {} failed; {} pushes, {} stored; a replica waiting on a dead lease used \
         {:.2} % of a core; {} s in all",
        kills_done.as_secs(),
        observed.reads,
        stale_served.len(),
        observed.read_failures.len(),
        extra,
        accounts.len(),
        refused_writes,
        observed.logins,
        observed.logins_cut,
        observed.login_failures.len(),
        observed.pushes.len(),
        stored.len(),
        cpu * 100.0,
        started.elapsed().as_secs()
    );
    assert!(
        observed.read_failures.is_empty(),
        "{} token reads on surviving replicas failed, e.g. {:?}",
        observed.read_failures.len(),
        &observed.read_failures[..observed.read_failures.len().min(5)]
    );
    assert!(
        stale_served.is_empty(),
        "older tokens served: {stale_served:?}"
    );
    assert!(
        not_newest.is_empty(),
        "not WeChat's newest valid token: {not_newest:?}"
    );

    assert!(
        extra <= KILLS,
        "{extra} extra token calls for {KILLS} kills"
    );
    assert!(
        observed.login_failures.is_empty(),
        "logins failed: {:?}",
        observed.login_failures
    );
    assert!(observed.logins > 0 && observed.pushes.len() > 1);
    assert_eq!(stored, expected, "every push stored exactly once");
    assert!(
        cpu <= WAIT_CPU_LIMIT,
        "{:.1} % of a core while waiting on a dead lease",
        cpu * 100.0
    );
    drop(observed);
    drop(replicas);
    if let Ok(topology) = Arc::try_unwrap(topology) {
        topology.finish().await;
    }
}
