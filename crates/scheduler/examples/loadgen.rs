//! The load generator of `scripts/bench-token-vs-redis.sh`: one client, the same for both
//! sides, so the comparison of wxhub's token API with a Redis `GET` measures the servers and
//! not two different tools.
//!
//! It fetches the token API's answer once, stores the same bytes in Redis under a key, then runs
//! rounds: in each, both sides in turn (the order swapped every round, so neither always runs on
//! a machine warmed by the other), each for the same time with the same number of connections,
//! every connection a closed loop of one request and its whole answer. Each side's figures
//! come from its own connections only; the client is one thread (like `redis-benchmark`), and
//! its CPU time per request is reported for each side, to show that the client's share is
//! comparable.
//!
//! ```text
//! loadgen --http http://127.0.0.1:PORT/api/v1/accounts/APPID/access_token \
//!         --bearer KEY --redis 127.0.0.1:PORT [--connections 32] [--seconds 5] [--rounds 7] \
//!         [--hub-pid PID] [--redis-pid PID]
//! ```

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    http: String,
    bearer: String,
    redis: String,
    connections: usize,
    seconds: f64,
    rounds: usize,
    /// The servers' processes, to report their CPU time per request.
    hub_pid: Option<u32>,
    redis_pid: Option<u32>,
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "loadgen: {problem}\nusage: loadgen --http URL --bearer KEY --redis HOST:PORT \
         [--connections N] [--seconds S] [--rounds R] [--hub-pid PID] [--redis-pid PID]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        http: String::new(),
        bearer: String::new(),
        redis: String::new(),
        connections: 32,
        seconds: 5.0,
        rounds: 7,
        hub_pid: None,
        redis_pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--http" => args.http = value(),
            "--bearer" => args.bearer = value(),
            "--redis" => args.redis = value(),
            "--connections" => {
                args.connections = value()
                    .parse()
                    .unwrap_or_else(|_| usage("bad --connections"))
            }
            "--seconds" => {
                args.seconds = value().parse().unwrap_or_else(|_| usage("bad --seconds"))
            }
            "--rounds" => args.rounds = value().parse().unwrap_or_else(|_| usage("bad --rounds")),
            "--hub-pid" => {
                args.hub_pid = Some(value().parse().unwrap_or_else(|_| usage("bad --hub-pid")))
            }
            "--redis-pid" => {
                args.redis_pid = Some(value().parse().unwrap_or_else(|_| usage("bad --redis-pid")))
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if args.http.is_empty() || args.bearer.is_empty() || args.redis.is_empty() {
        usage("--http, --bearer and --redis are required");
    }
    if args.connections == 0 || args.rounds == 0 || args.seconds <= 0.0 {
        usage("--connections, --seconds and --rounds must be positive");
    }
    args
}

/// One side of the comparison: where to connect, the request's bytes, and how to tell where
/// an answer ends.
#[derive(Clone)]
struct Side {
    name: &'static str,
    addr: String,
    request: Vec<u8>,
    protocol: Protocol,
}

#[derive(Clone, Copy)]
enum Protocol {
    Http,
    Resp,
}

/// The length of the complete answer at the start of `buf`, once it is all there; its body
/// (for the set-up request).
fn answer_len(
    protocol: Protocol,
    buf: &[u8],
) -> Result<Option<(usize, std::ops::Range<usize>)>, String> {
    match protocol {
        Protocol::Http => {
            let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(None);
            };
            let head =
                std::str::from_utf8(&buf[..head_end]).map_err(|_| "a non-UTF-8 HTTP head")?;
            if !head.starts_with("HTTP/1.1 200") {
                return Err(format!("the token API answered {head:?}"));
            }
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                })
                .ok_or("an answer without Content-Length")?;
            let body = head_end + 4..head_end + 4 + length;
            Ok((buf.len() >= body.end).then_some((body.end, body)))
        }
        Protocol::Resp => {
            let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
                return Ok(None);
            };
            let line =
                std::str::from_utf8(&buf[..line_end]).map_err(|_| "a non-UTF-8 RESP line")?;
            let length: usize = line
                .strip_prefix('$')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("Redis answered {line:?}"))?;
            let body = line_end + 2..line_end + 2 + length;
            Ok((buf.len() >= body.end + 2).then_some((body.end + 2, body)))
        }
    }
}

/// Sends `request` on `stream` and reads one whole answer into `buf` (cleared first).
async fn exchange(
    stream: &mut TcpStream,
    side: &Side,
    buf: &mut Vec<u8>,
) -> Result<std::ops::Range<usize>, String> {
    stream
        .write_all(&side.request)
        .await
        .map_err(|e| e.to_string())?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((_, body)) = answer_len(side.protocol, buf)? {
            return Ok(body);
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("{} closed the connection", side.name));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| usage(&format!("cannot connect to {addr}: {e}")));
    stream.set_nodelay(true).unwrap();
    stream
}

/// CPU time so far (user + system) of this process (`self`) or another, from `/proc/…/stat`.
fn cpu_time(process: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 Hz.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

struct Figures {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    client_us_per_request: f64,
    /// The server's CPU time per request, when its process is known.
    server_us_per_request: Option<f64>,
}

/// Runs `side` on `connections` closed loops: `warm` untimed, then `timed`.
async fn run(
    side: &Side,
    server: Option<u32>,
    connections: usize,
    warm: Duration,
    timed: Duration,
) -> Figures {
    let start = Instant::now() + warm;
    let end = start + timed;
    let server = server.map(|pid| pid.to_string());
    let server_process = server.clone();
    let cpu_at_start = tokio::spawn(async move {
        tokio::time::sleep_until(start.into()).await;
        (cpu_time("self"), server_process.as_deref().map(cpu_time))
    });
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let side = side.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = connect(&side.addr).await;
            let mut buf = Vec::with_capacity(1024);
            let mut latencies = Vec::new();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    return latencies;
                }
                if let Err(e) = exchange(&mut stream, &side, &mut buf).await {
                    usage(&e);
                }
                if sent >= start {
                    latencies.push(sent.elapsed());
                }
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let (client_at_start, server_at_start) = cpu_at_start.await.unwrap();
    let cpu = cpu_time("self").saturating_sub(client_at_start);
    let server_cpu = server
        .as_deref()
        .zip(server_at_start)
        .map(|(pid, at_start)| cpu_time(pid).saturating_sub(at_start));
    all.sort();
    let at = |p: usize| all[(all.len() * p / 100).min(all.len() - 1)].as_secs_f64() * 1000.0;
    Figures {
        per_second: all.len() as f64 / timed.as_secs_f64(),
        p50_ms: at(50),
        p99_ms: at(99),
        client_us_per_request: cpu.as_secs_f64() * 1e6 / all.len() as f64,
        server_us_per_request: server_cpu.map(|c| c.as_secs_f64() * 1e6 / all.len() as f64),
    }
}

fn us(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = args.http.strip_prefix("http://").unwrap_or_else(|| usage("--http must be http://"));
        let (host, path) = url.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((url, "/".to_owned()));
        let hub = Side {
            name: "wxhub",
            addr: host.to_owned(),
            request: format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\r\n",
                args.bearer
            )
            .into_bytes(),
            protocol: Protocol::Http,
        };
        // The answer Redis will serve: the token API's own, byte for byte.
        let mut stream = connect(&hub.addr).await;
        let mut buf = Vec::new();
        let body = exchange(&mut stream, &hub, &mut buf).await.unwrap_or_else(|e| usage(&e));
        let answer = buf[body].to_vec();
        drop(stream);
        let key = "wxhub-token-answer";
        let mut set = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n", key.len(), answer.len()).into_bytes();
        set.extend_from_slice(&answer);
        set.extend_from_slice(b"\r\n");
        let mut redis = connect(&args.redis).await;
        redis.write_all(&set).await.unwrap();
        let mut ok = [0u8; 5];
        redis.read_exact(&mut ok).await.unwrap();
        if &ok != b"+OK\r\n" {
            usage("Redis did not accept SET");
        }
        drop(redis);
        let redis = Side {
            name: "redis",
            addr: args.redis.clone(),
            request: format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).into_bytes(),
            protocol: Protocol::Resp,
        };
        println!(
            "{} rounds, {} connections, {} s a side a round, answer {} bytes, one client thread",
            args.rounds, args.connections, args.seconds, answer.len()
        );
        println!(
            "| round | order | wxhub req/s | Redis req/s | ratio | wxhub p50 / p99 | Redis p50 / p99 | \
             client CPU µs/request, wxhub / Redis | server CPU µs/request, wxhub / Redis |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        let timed = Duration::from_secs_f64(args.seconds);
        let warm = Duration::from_millis(500);
        let (mut ratios, mut p99_ratios) = (Vec::new(), Vec::new());
        let (mut hub_p99s, mut redis_p99s) = (Vec::new(), Vec::new());
        for round in 1..=args.rounds {
            let hub_first = round % 2 == 1;
            let (h, r) = if hub_first {
                let h = run(&hub, args.hub_pid, args.connections, warm, timed).await;
                (h, run(&redis, args.redis_pid, args.connections, warm, timed).await)
            } else {
                let r = run(&redis, args.redis_pid, args.connections, warm, timed).await;
                (run(&hub, args.hub_pid, args.connections, warm, timed).await, r)
            };
            ratios.push(h.per_second / r.per_second);
            p99_ratios.push(h.p99_ms / r.p99_ms);
            hub_p99s.push(h.p99_ms);
            redis_p99s.push(r.p99_ms);
            println!(
                "| {round} | {} | {:.0} | {:.0} | {:.2}× | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.1} / {:.1} | {} / {} |",
                if hub_first { "wxhub, Redis" } else { "Redis, wxhub" },
                h.per_second,
                r.per_second,
                h.per_second / r.per_second,
                h.p50_ms,
                h.p99_ms,
                r.p50_ms,
                r.p99_ms,
                h.client_us_per_request,
                r.client_us_per_request,
                us(h.server_us_per_request),
                us(r.server_us_per_request),
            );
        }
        let spread = |v: &[f64]| {
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (min, max)
        };
        let (lo, hi) = spread(&ratios);
        let (plo, phi) = spread(&p99_ratios);
        println!(
            "\nthroughput wxhub ÷ Redis: median {:.2}× (rounds {lo:.2}–{hi:.2}×); p99 wxhub ÷ Redis: median {:.2}× ({plo:.2}–{phi:.2}×); median p99 wxhub {:.2} ms, Redis {:.2} ms",
            median(&mut ratios.clone()),
            median(&mut p99_ratios.clone()),
            median(&mut hub_p99s),
            median(&mut redis_p99s),
        );
    });
}
