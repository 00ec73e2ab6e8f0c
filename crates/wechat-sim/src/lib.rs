//! `wechat-sim`: an in-memory WeChat Official Account platform for tests, demos and
//! benchmarks, following the project's WeChat reference `docs/wechat.md`. Section numbers
//! (§N) in this crate, its tests and its README refer to that document.
//!
//! No machine here reaches WeChat, so every WeChat behaviour wxhub depends on is reproduced:
//! token lifetimes and the 300 s grace of the previous token (§1), stable tokens (§2), daily
//! quotas and their reset tools (§3), OAuth web authorization with an HTML authorize page
//! (§4), user management (§5), signed — optionally encrypted — pushes (§6, §7), the push-URL
//! probe `callback/check` (§3.7, a real signed verification GET per address), and the
//! parametric QR codes of part 2 (`docs/wechat-2.md` §1–§4: `qrcode/create`, `showqrcode`
//! under [`MP_PREFIX`], and scans that push `subscribe`/`SCAN` with the `Ticket`), and the
//! statistics of part 2 §5–§7 (`/datacube/...`: follower growth and push-reply performance,
//! derived from the simulator's own follows and deliveries, on its clock). A control
//! API under [`CONTROL_PREFIX`] (and the same operations as methods on [`Simulator`]) creates
//! accounts and users, drives pushes, injects faults, moves the clock and reads counters.
//!
//! The simulator reuses the `wechat` crate for every wire detail (types, error codes,
//! signatures, crypto, XML), so it cannot disagree with the client on the format. It must
//! never panic on any input, never answer 5xx unless a fault says so, keep all state bounded,
//! and never log a secret.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use wechat::ManualClock;
//! use wechat_sim::{AccountSpec, SimConfig, Simulator};
//!
//! let clock = ManualClock::new(1_700_000_000_000);
//! let sim = Simulator::new(SimConfig::with_manual_clock(clock.clone()));
//! sim.create_account(AccountSpec::new("wx1234", "secret")).unwrap();
//! let running = wechat_sim::spawn(sim, "127.0.0.1:0".parse().unwrap()).await?;
//! println!("simulator at {}", running.base_url());
//! # Ok(()) }
//! ```

mod api;
mod calls;
mod config;
mod control;
mod datacube;
mod error;
mod faults;
mod html;
pub mod issued;
mod model;
mod oauth;
mod phone;
mod probe;
mod push;
mod qr;
mod quota;
mod sim;
mod state;
mod tokens;
mod users;
mod wire;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use calls::{CallRecord, Counter, CounterRow};
pub use config::{
    CancelUserSource, DEFAULT_MINUTE_LIMITS, ExpireSecondsEcho, InterfaceCounting, MAX_CLOCK_MS,
    MIN_CLOCK_MS, PermanentSameScene, QrInputMode, QrOverMax, SimConfig, SimLimits,
};
pub use error::SimError;
pub use faults::{FaultAction, FaultRule, FaultSpec};
pub use model::{
    AccountKind, AccountSpec, AuthorizeAnswer, FollowOptions, NextAuthorization, PushMode, QrScan,
    UserSpec, WhitelistMode,
};
pub use probe::{Probe, ProbeAttempt};
pub use push::{Delivery, DeliveryAttempt, ReplyCheck};
pub use qr::{QrAction, QrCodeView};
pub use quota::{DEFAULT_DAILY_LIMITS, QuotaRow};
pub use sim::{PushOutcome, QrScanOutcome, Simulator};
pub use state::{Follower, TokenKind, TokenView};
pub use wire::{Endpoint, JSON_CONTENT_TYPE};

/// Path prefix of the control API.
pub const CONTROL_PREFIX: &str = "/__sim";

/// Path prefix standing for WeChat's second host, `https://mp.weixin.qq.com`, which serves
/// `showqrcode` (docs/wechat-2.md §2). Point `wechat::ClientConfig::mp_base` at
/// `http://ADDR/mp/` ([`RunningSim::mp_base_url`]; `ClientConfig::for_base` does it). The API
/// host does not serve these paths, so a client that builds the image URL on the API base
/// gets a 404, as it would from WeChat.
pub const MP_PREFIX: &str = "/mp";

/// The whole app: WeChat API endpoints, the authorize page and the control API.
///
/// The control API (`/__sim/...`) is **unauthenticated**: anyone who reaches it can read
/// every account's secrets, mint tokens and move the clock. Serve this router on a loopback
/// address only (`127.0.0.1` / `::1`).
///
/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so the IP whitelist
/// sees the TCP peer (as [`serve`] does); without it the caller IP falls back to
/// `X-Forwarded-For`, then 127.0.0.1.
pub fn router(sim: Simulator) -> Router {
    api::routes()
        .nest(CONTROL_PREFIX, control::routes())
        .fallback(api::not_found)
        .with_state(sim)
}

/// Serves the simulator on `listener` until the returned future is dropped.
///
/// The control API under [`CONTROL_PREFIX`] is **unauthenticated** (it reads secrets, mints
/// tokens, moves the clock, injects faults): `listener` must be bound to a loopback address
/// (`127.0.0.1` / `::1`), never to a public or wildcard interface.
pub async fn serve(listener: TcpListener, sim: Simulator) -> io::Result<()> {
    axum::serve(
        listener,
        router(sim).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

/// Serves the simulator on `listener` until `shutdown` completes (then finishes in-flight
/// requests).
///
/// As with [`serve`], the control API is unauthenticated: bind `listener` to loopback only.
pub async fn serve_with_shutdown(
    listener: TcpListener,
    sim: Simulator,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(
        listener,
        router(sim).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// A simulator serving in a background task; dropping it stops the server.
#[derive(Debug)]
pub struct RunningSim {
    /// The bound address.
    pub addr: SocketAddr,
    /// The simulator handle (shares state with the server).
    pub sim: Simulator,
    task: JoinHandle<io::Result<()>>,
}

impl RunningSim {
    /// `http://ADDR/` — give it to `wechat::ClientConfig::for_base`.
    pub fn base_url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}/", self.addr))
            .expect("a socket address is a valid host")
    }

    /// `http://ADDR/mp/` — the simulator's stand-in for `https://mp.weixin.qq.com`
    /// ([`MP_PREFIX`]).
    pub fn mp_base_url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}{MP_PREFIX}/", self.addr))
            .expect("a socket address is a valid host")
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` (e.g. `127.0.0.1:0`) and serves the simulator in a background task. The
/// control API is unauthenticated: give a loopback address only.
pub async fn spawn(sim: Simulator, addr: SocketAddr) -> io::Result<RunningSim> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(serve(listener, sim.clone()));
    Ok(RunningSim { addr, sim, task })
}
