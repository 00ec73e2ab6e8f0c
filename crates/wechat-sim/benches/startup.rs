//! How long the simulator takes from nothing to answering a token call with 10,000 accounts.
//!
//! Run with `cargo bench -p wechat-sim --bench startup`. The figure that matters is the
//! start-up against the same with one account (the cost of the accounts themselves), and the
//! absolute time against the one-second goal.

use std::time::{Duration, Instant};

use wechat::{AppSecret, Client, ClientConfig};
use wechat_sim::{AccountSpec, SimConfig, Simulator};

async fn start_and_serve(accounts: usize) -> Duration {
    let start = Instant::now();
    let sim = Simulator::new(SimConfig::default());
    sim.create_accounts(
        (0..accounts).map(|i| AccountSpec::new(format!("wx{i:016x}"), format!("{i:032x}"))),
    )
    .expect("bulk create");
    let running = wechat_sim::spawn(sim, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("spawn");
    let client = Client::new(ClientConfig::for_base(running.base_url())).expect("client");
    let last = accounts - 1;
    client
        .get_token(
            &format!("wx{last:016x}"),
            &AppSecret::new(format!("{last:032x}")),
        )
        .await
        .expect("the last account gets a token");
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (mut big, mut small) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        big = big.min(start_and_serve(10_000).await);
        small = small.min(start_and_serve(1).await);
    }
    println!(
        "simulator start-up to first token: 10,000 accounts {:.1} ms, 1 account {:.1} ms \
         (best of 5; ratio {:.1}x; goal < 1000 ms)",
        big.as_secs_f64() * 1e3,
        small.as_secs_f64() * 1e3,
        big.as_secs_f64() / small.as_secs_f64()
    );
}
