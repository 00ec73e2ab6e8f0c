//! Serving HTTP with the limits an open port needs: how long a client may take to send a
//! request's headers (and may sit idle on a kept-alive connection), how long a request may
//! take to be answered, and how many connections are open at once.
//!
//! `axum::serve` sets none of these: hyper's header timeout needs a timer, which it does not
//! give hyper, and it accepts every connection. A few thousand connections that never finish
//! their headers (slowloris) would then hold file descriptors and tasks forever and starve
//! the token write-backs and push handling of every tenant. This accept loop gives hyper a
//! timer and holds a permit per connection; it is used for every listener of `wxhub serve`.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// The limits of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// From a connection's start, or from the end of its previous response, until a request's
    /// headers are complete. hyper starts this timer when a kept-alive connection goes idle,
    /// so it is the idle timeout as well.
    pub header_timeout: Duration,
    /// From a request's headers until its response starts (the body included, as the handler
    /// reads it). A streamed response (the scan page's events) is not cut once it started.
    pub request_timeout: Duration,
    /// Connections open at once; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Reverse proxies whose `X-Forwarded-For` names the client: a request from one of these
    /// addresses is seen (by every per-IP limit) as coming from the last address in that
    /// header that is not itself a trusted proxy.
    pub trusted_proxies: Arc<[IpNet]>,
}

/// An address block, `203.0.113.0/24` or `2001:db8::/32` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or block (a.b.c.d/n, x:y::/n)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

/// The client a request is from: `peer`, or, when `peer` is a trusted proxy, the last
/// address of `X-Forwarded-For` that is not a trusted proxy (each proxy appends the address
/// it was reached from, so the ones before that could have been written by the client).
fn client_address(
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[IpNet],
) -> SocketAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if trusted.is_empty() || !is_trusted(peer.ip()) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip) => continue,
            Ok(ip) => return SocketAddr::new(ip, 0),
            // Something the proxies did not write: trust nothing before it.
            Err(_) => break,
        }
    }
    peer
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            trusted_proxies: Arc::from([]),
        }
    }
}

/// A person's browser sends its headers in one packet; 10 s leaves room for a slow mobile
/// network and keeps a kept-alive connection long enough for the next click.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Far above the slowest handler (a push relayed to the owner's server waits 5 s; a WeChat
/// call through the proxy about as long).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Well below the default limit of 65 536 open files of a service, with room for the
/// database pool and WeChat calls; a few KiB of memory each while idle.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The most a request's line and headers may take (larger: 431), and so the most a
/// connection that never finishes its headers holds in memory. nginx allows 4 × 8 KiB; a
/// browser's request with the hub's cookies takes about 1 KiB.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// How long a stopping server waits for open connections to finish their requests.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` with `limits` until `shutdown` completes, then lets requests
/// in flight finish (for at most 10 s) and returns. Handlers see the peer's address as
/// `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max));
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // The permit first: over the limit, connections stay in the kernel's queue rather
        // than costing a task and a buffer here.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: the error passes, the listener
                    // stays; a short pause keeps the loop from spinning meanwhile.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Small writes go out at once: a login page's Server-Sent Event would otherwise wait
        // for the browser's delayed ACK (Nagle's algorithm, about 40 ms on Linux).
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        let app = app.clone();
        let mut stopping = stopping.clone();
        let trusted = limits.trusted_proxies.clone();
        let (header_timeout, request_timeout) = (limits.header_timeout, limits.request_timeout);
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |mut request: Request<_>| {
                let client = client_address(peer, request.headers(), &trusted);
                request.extensions_mut().insert(ConnectInfo(client));
                let answer = app.clone().oneshot(request);
                async move {
                    Ok::<_, Infallible>(match tokio::time::timeout(request_timeout, answer).await {
                        Ok(Ok(response)) => response,
                        Ok(Err(never)) => match never {},
                        Err(_) => timed_out(),
                    })
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_header_size(MAX_HEADER_BYTES)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(tcp), service);
            let mut connection = std::pin::pin!(connection);
            let finished = tokio::select! {
                finished = connection.as_mut() => finished,
                () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                    // The request in flight finishes; the connection closes after it.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = finished {
                // Timeouts and clients going away: routine on an open port.
                tracing::debug!(%error, %peer, "connection ended");
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every permit back means every connection has ended.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_DRAIN, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = max - permits.available_permits(),
            "connections still open after the shutdown drain; closing them"
        );
    }
    Ok(())
}

fn timed_out() -> Response {
    let mut response = (
        StatusCode::REQUEST_TIMEOUT,
        "the request took too long and was abandoned",
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Upper bound of every wait below; none is expected to come near it.
    const PATIENCE: Duration = Duration::from_secs(20);

    async fn start(limits: HttpLimits) -> (SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            )
            .route("/never", get(std::future::pending::<&'static str>));
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(serve(listener, app, limits, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        (addr, stop)
    }

    /// Sends one request and reads until the server closes the connection.
    async fn exchange(tcp: &mut TcpStream, request: &str) -> String {
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
            .await
            .expect("the server answers and closes")
            .unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    const GET_AND_CLOSE: &str = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

    #[tokio::test]
    async fn a_connection_that_never_finishes_its_headers_is_closed_after_the_header_timeout() {
        let limits = HttpLimits {
            header_timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        };
        let (addr, _stop) = start(limits.clone()).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        // Half a request line, then nothing: the slowloris pattern.
        slow.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .await
            .unwrap();
        let mut rest = Vec::new();
        // Ends with EOF or a reset, either way the server's doing.
        let _ = tokio::time::timeout(PATIENCE, slow.read_to_end(&mut rest))
            .await
            .expect("closed by the server, not by the test's patience");
        assert!(
            !String::from_utf8_lossy(&rest).contains(" 200 "),
            "an unfinished request was answered"
        );
        assert!(
            started.elapsed() >= limits.header_timeout,
            "not closed before the timeout"
        );
        // An idle kept-alive connection is closed the same way after its response.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(PATIENCE, idle.read_to_end(&mut answer))
            .await
            .expect("the idle connection is closed")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // And the server still answers others.
        let mut other = TcpStream::connect(addr).await.unwrap();
        assert!(
            exchange(&mut other, GET_AND_CLOSE)
                .await
                .starts_with("HTTP/1.1 200")
        );
    }

    #[tokio::test]
    async fn a_request_not_answered_in_time_gets_408_and_the_connection_closes() {
        let limits = HttpLimits {
            request_timeout: Duration::from_millis(200),
            ..HttpLimits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let answer = exchange(&mut tcp, "GET /never HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }

    #[test]
    fn a_trusted_proxy_s_forwarded_for_names_the_client() {
        let trusted: Vec<IpNet> = ["10.0.0.0/8", "2001:db8::/32"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let proxy: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let mut headers = axum::http::HeaderMap::new();
        // The client wrote the first one; the proxy appended the address it saw.
        headers.insert(
            "x-forwarded-for",
            "198.51.100.9, 203.0.113.7, 10.9.9.9".parse().unwrap(),
        );
        let client = client_address(proxy, &headers, &trusted);
        assert_eq!(client.ip(), "203.0.113.7".parse::<IpAddr>().unwrap());
        // From anyone else the header means nothing.
        let direct: SocketAddr = "192.0.2.1:4444".parse().unwrap();
        assert_eq!(client_address(direct, &headers, &trusted), direct);
        // Nothing trusted configured: the peer, whatever the header says.
        assert_eq!(client_address(proxy, &headers, &[]), proxy);
        // A proxy that sent no header, or garbage: the proxy itself.
        assert_eq!(
            client_address(proxy, &axum::http::HeaderMap::new(), &trusted),
            proxy
        );
        headers.insert("x-forwarded-for", "not-an-address".parse().unwrap());
        assert_eq!(client_address(proxy, &headers, &trusted), proxy);
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!(
            "::ffff:10.0.0.1"
                .parse::<IpAddr>()
                .is_ok_and(|ip| trusted[0].contains(ip))
        );
    }

    #[tokio::test]
    async fn behind_a_trusted_proxy_handlers_see_the_forwarded_client() {
        let (addr, _stop) = start(HttpLimits {
            trusted_proxies: Arc::from(["127.0.0.0/8".parse::<IpNet>().unwrap()]),
            ..HttpLimits::default()
        })
        .await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let answer = exchange(
            &mut tcp,
            "GET /peer HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.5\r\n\
             Connection: close\r\n\r\n",
        )
        .await;
        assert!(answer.ends_with("203.0.113.5:0"), "{answer}");
    }

    #[tokio::test]
    async fn headers_beyond_the_bound_are_refused_with_431() {
        let (addr, _stop) = start(HttpLimits::default()).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let big = "a".repeat(MAX_HEADER_BYTES);
        let answer = exchange(
            &mut tcp,
            &format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }

    #[tokio::test]
    async fn connections_over_the_limit_wait_until_one_closes() {
        let limits = HttpLimits {
            max_connections: 2,
            ..HttpLimits::default()
        };
        let (addr, _stop) = start(limits).await;
        // Two connections hold both permits: each has been answered once, so both are
        // accepted and kept alive.
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            held.push(tcp);
        }
        // A third connects (the kernel queues it) but is not served while both are held.
        let third = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            exchange(&mut tcp, GET_AND_CLOSE).await
        });
        let mut third = std::pin::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_millis(500), third.as_mut())
                .await
                .is_err(),
            "served beyond the connection limit"
        );
        drop(held.pop());
        let answer = tokio::time::timeout(PATIENCE, third)
            .await
            .expect("served once a connection closed")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test]
    async fn handlers_see_the_peer_address_and_a_stopped_server_takes_no_more_requests() {
        let (addr, stop) = start(HttpLimits::default()).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let answer = exchange(
            &mut tcp,
            "GET /peer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.ends_with(&local.to_string()), "{answer}");
        let _ = stop.send(true);
        // Stopped: new connections are refused or closed unanswered.
        let refused = match TcpStream::connect(addr).await {
            Err(_) => true,
            Ok(mut tcp) => {
                let _ = tcp.write_all(GET_AND_CLOSE.as_bytes()).await;
                let mut answer = Vec::new();
                let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer)).await;
                answer.is_empty()
            }
        };
        assert!(refused, "a stopped server accepted a request");
    }
}
