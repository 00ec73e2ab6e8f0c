//! Abuse that must not take the service down: 2,000 slow connections that never finish their
//! headers (slowloris) and floods of `/authorize`, secret-less `/token` and fake API keys from
//! one address, while legitimate clients on another address read tokens, log in and receive
//! pushes. Every legitimate request succeeds; the floods get 429 with `Retry-After`; the slow
//! connections are closed by the header timeout.
//!
//! Loopback has a whole /8: the attacker's sockets are bound to 127.0.0.66, the legitimate
//! clients use 127.0.0.1, so the hub tells them apart by address as it would on a network.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use e2e::{APPID, PATIENCE, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 66));
/// The replica's header timeout here (the default is 10 s), so the test ends sooner.
const HEADER_TIMEOUT_SECS: u64 = 3;
const SLOW_CONNECTIONS: usize = 2000;
/// Requests of each flood.
const FLOOD: usize = 300;

/// Lets this process (and the replica it starts) hold the slow connections' descriptors.
fn raise_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max.min(65_536);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

async fn slow_connection(to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(ATTACKER, 0))?;
    let mut tcp = socket.connect(to).await?;
    // Half a request, then nothing.
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\nX-Slow: ")
        .await?;
    Ok(tcp)
}

/// How many of `n` requests answered 429 with a `Retry-After`, and any other answer seen.
async fn flood(n: usize, send: impl Fn(usize) -> reqwest::RequestBuilder) -> (usize, Vec<u16>) {
    let mut limited = 0;
    let mut other = Vec::new();
    for i in 0..n {
        match send(i).send().await {
            Ok(r) if r.status() == 429 && r.headers().contains_key("retry-after") => limited += 1,
            Ok(r) => other.push(r.status().as_u16()),
            Err(_) => other.push(0),
        }
    }
    (limited, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_and_floods_do_not_stop_legitimate_clients() {
    let open_files = raise_open_files();
    let Some(mut topology) = Topology::start(0).await else {
        eprintln!("{}", testkit::DID_NOT_RUN);
        return;
    };
    assert!(
        open_files >= 2 * SLOW_CONNECTIONS as u64 + 500,
        "the open-files limit {open_files} is too low for {SLOW_CONNECTIONS} connections"
    );
    let timeout = HEADER_TIMEOUT_SECS.to_string();
    topology
        .start_replica_with(&[("WXHUB_HTTP_HEADER_TIMEOUT", timeout.as_str())])
        .await;
    topology.read_token(0).await.expect("a first token");
    let topology = Arc::new(topology);
    let hub: SocketAddr = topology.replicas[0]
        .base
        .trim_start_matches("http://")
        .parse()
        .unwrap();

    // The slow connections, all open before the legitimate traffic starts.
    let opened = Instant::now();
    let mut slow = Vec::with_capacity(SLOW_CONNECTIONS);
    for _ in 0..SLOW_CONNECTIONS {
        slow.push(slow_connection(hub).await.expect("a slow connection"));
    }
    let open_ms = opened.elapsed().as_millis();

    // Legitimate clients, from 127.0.0.1: token reads until the floods end, logins, pushes.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = {
        let (t, stop) = (topology.clone(), stop.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match t.read_token(0).await {
                    Ok(_) => latencies.push(started.elapsed()),
                    Err(error) => failures.push(error),
                }
            }
            (latencies, failures)
        })
    };
    let logins_and_pushes = {
        let t = topology.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..10 {
                if let Err(error) = t.login(0, "alice").await {
                    failures.push(error);
                }
                if let Err(error) = t.push_follow("bob", i % 2 == 0).await {
                    failures.push(error);
                }
            }
            failures
        })
    };

    // The floods, from the attacker's address.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let attacker = reqwest::Client::builder()
        .local_address(ATTACKER)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = topology.replicas[0].base.clone();
    let issuer = topology.replicas[0].issuer();
    let client_id = topology.client_id.clone();
    let (authorize, token, fake_keys) = tokio::join!(
        flood(FLOOD, |i| attacker.get(format!(
            "{issuer}/authorize?response_type=code&client_id={client_id}&redirect_uri={}\
             &scope=openid&state=s{i}&code_challenge={}&code_challenge_method=S256",
            e2e::REDIRECT,
            "c".repeat(43)
        ))),
        flood(FLOOD, |i| attacker.post(format!("{issuer}/token")).form(&[
            ("grant_type", "authorization_code".to_owned()),
            ("code", format!("guess-{i}")),
            ("redirect_uri", e2e::REDIRECT.to_owned()),
            ("client_id", client_id.clone()),
            ("code_verifier", "v".repeat(43)),
        ])),
        flood(FLOOD, |i| attacker
            .get(format!("{base}/api/v1/accounts/{APPID}/access_token"))
            .bearer_auth(format!("wxk_{:A>43}", i))),
    );
    let login_failures = logins_and_pushes.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let (mut latencies, read_failures) = reads.await.unwrap();

    // Each slow connection is closed by the server, none answered.
    let closing = Instant::now();
    let mut closed = tokio::task::JoinSet::new();
    for mut tcp in slow {
        closed.spawn(async move {
            let mut rest = Vec::new();
            let ended = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut rest)).await;
            ended.is_ok() && !String::from_utf8_lossy(&rest).contains(" 200 ")
        });
    }
    let mut closed_by_server = 0;
    while let Some(outcome) = closed.join_next().await {
        closed_by_server += usize::from(outcome.unwrap());
    }
    let closed_ms = closing.elapsed().as_millis();

    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{SLOW_CONNECTIONS} slow connections opened in {open_ms} ms, all closed by the server \
         {closed_ms} ms after the floods; floods of {FLOOD}: /authorize {} limited, /token {} \
         limited, fake keys {} limited; legitimate: {} token reads (p50 {:?}, p99 {:?}, max {:?}), \
         10 logins and 10 pushes, {} failed",
        authorize.0,
        token.0,
        fake_keys.0,
        latencies.len(),
        p(0.5),
        p(0.99),
        latencies.last().unwrap(),
        read_failures.len() + login_failures.len()
    );
    assert!(read_failures.is_empty(), "{read_failures:?}");
    assert!(login_failures.is_empty(), "{login_failures:?}");
    assert!(!latencies.is_empty());
    assert_eq!(closed_by_server, SLOW_CONNECTIONS);
    // Past each address allowance (30 login starts, 30 secret-less token requests, 20
    // unknown keys), everything is refused before touching the database.
    assert!(authorize.0 >= FLOOD - 30, "{authorize:?}");
    assert!(token.0 >= FLOOD - 30, "{token:?}");
    assert!(fake_keys.0 >= FLOOD - 20, "{fake_keys:?}");
    // The account's token is still WeChat's valid one.
    let (served, _) = topology.read_token(0).await.expect("a token");
    let minted = topology.core_tokens_minted().await;
    assert!(
        minted
            .iter()
            .any(|t| t["access_token"] == served.as_str() && t["status"] == "valid")
    );
    if let Ok(topology) = Arc::try_unwrap(topology) {
        topology.finish().await;
    }
}
