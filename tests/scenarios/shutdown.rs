//! Scenario 6 of the reliability plan: SIGTERM while a core-token refresh is in flight at
//! WeChat and a login waits for the browser to come back. The refresh finishes and its token
//! is stored (WeChat has already superseded the old one, so a cut refresh would waste the
//! fetch and leave the old token dying), the process exits 0, and after a restart the login
//! goes on where it was and no second fetch is made.

use std::time::{Duration, Instant};

use e2e::{APPID, PATIENCE, Topology};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_refresh_in_flight_finish_and_a_restart_continues_the_login() {
    let Some(mut topology) = Topology::start(0).await else {
        eprintln!("{}", testkit::DID_NOT_RUN);
        return;
    };
    // WeChat answers the first token call 3 s late; the fault is gone the moment the call
    // arrives, which is how the test knows the fetch is in flight.
    topology
        .sim_post(
            "/__sim/faults",
            json!({"endpoint": "/cgi-bin/token", "appid": APPID, "next": 1,
                   "action": {"kind": "latency", "ms": 3000}}),
        )
        .await;
    topology.start_replica().await;
    topology.start_replica().await;
    let login = topology
        .begin_login(0, "alice")
        .await
        .expect("a login up to WeChat's answer");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let faults = topology.sim_get("/__sim/faults").await;
        if faults.as_array().is_some_and(|rules| rules.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the fetch never reached WeChat");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let stopping = Instant::now();
    for replica in &topology.replicas {
        replica.process.terminate();
    }
    let mut exits = Vec::new();
    for replica in &mut topology.replicas {
        let status = replica.process.wait_exit();
        exits.push((status, stopping.elapsed()));
    }
    for (n, (status, took)) in exits.iter().enumerate() {
        println!(
            "replica {n} exited {status} {} ms after SIGTERM",
            took.as_millis()
        );
        assert!(status.success(), "replica {n}: {status}");
    }
    // The fetch WeChat answered was stored: the token WeChat holds valid is the one the hub
    // serves after a restart, without fetching again.
    let minted = topology.core_tokens_minted().await;
    assert_eq!(minted.len(), 1, "one fetch, finished during the shutdown");
    let current = minted[0]["access_token"].as_str().unwrap().to_owned();
    topology.replicas.clear();
    let restarted = topology.start_replica().await;
    let (served, _) = topology.read_token(restarted).await.expect("a token");
    assert_eq!(served, current);
    assert_eq!(
        topology.core_tokens_minted().await.len(),
        1,
        "the restart fetched nothing"
    );

    // The login the browser left at WeChat finishes on the restarted replica.
    let openid = topology
        .finish_login(restarted, login)
        .await
        .expect("the login goes on after the restart");
    assert!(openid.starts_with('o'), "{openid}");
    topology.finish().await;
}
