//! `POST /cgi-bin/callback/check` (docs/wechat.md §3.7): WeChat's connectivity probe of an
//! account's push URL.
//!
//! WeChat resolves the push URL's host and pings every address. The simulator resolves the
//! host for real, and instead of an ICMP ping sends each address the signed URL-verification
//! GET WeChat sends when the URL is configured (§6.2: `signature`, `timestamp`, `nonce`,
//! `echostr`), through the push driver's HTTP client, signature and timeout
//! ([`crate::push::exchange`]). An address counts as answered (`package_loss` `0%`) only when
//! it replies HTTP 200 with exactly the `echostr`; a refusal, a wrong body, a timeout or a
//! failed connection is `100%`. What each probe saw is kept as a [`Probe`] record for tests.
//!
//! The decision (token, arguments, push URL) is taken under the state lock; the probe runs
//! after it is released.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;
use wechat::api::{CallbackCheck, CallbackCheckAction, CallbackDns, CallbackPing, CheckOperator};
use wechat::errcode::ErrCode;

use crate::config::SimConfig;
use crate::push::{Signed, exchange};
use crate::quota;
use crate::state::{State, random_string};
use crate::tokens;
use crate::wire::{ApiError, WireRequest, json_str};

/// Path of the endpoint (its counter and quota key).
pub const PATH: &str = "/cgi-bin/callback/check";

/// A probe decided under the lock, to be run without it.
#[derive(Debug)]
pub(crate) struct ProbeJob {
    pub id: u64,
    pub appid: String,
    pub url: url::Url,
    /// The account's push Token (signs the probe; never recorded).
    pub token: String,
    pub action: CallbackCheckAction,
    pub operator: CheckOperator,
    pub at_ms: i64,
}

/// One signed verification GET to one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeAttempt {
    /// The address probed.
    pub ip: String,
    /// `timestamp` query parameter (simulator clock, seconds).
    pub timestamp: i64,
    /// `nonce` query parameter.
    pub nonce: String,
    /// `signature` query parameter: `sha1(sort(push_token, timestamp, nonce))`.
    pub signature: String,
    /// `echostr` query parameter: what the server must answer with.
    pub echostr: String,
    /// HTTP status, when an answer came.
    pub status: Option<u16>,
    /// Answer body (lossy UTF-8, capped at `limits.reply_body_bytes`).
    pub body: Option<String>,
    /// Real elapsed time, in microseconds (the answer's `time` has three decimals of ms).
    pub elapsed_us: u64,
    /// `timeout`, `connect`, or another transport failure.
    pub error: Option<String>,
    /// Whether the answer was HTTP 200 with exactly `echostr` (`package_loss` `0%`).
    pub echoed: bool,
}

/// What one `callback/check` call did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    /// Id, in call order.
    pub id: u64,
    /// The account.
    pub appid: String,
    /// The push URL probed.
    pub url: String,
    /// `all`, `dns` or `ping`.
    pub action: &'static str,
    /// `DEFAULT`, `CHINANET`, `UNICOM` or `CAP`.
    pub check_operator: &'static str,
    /// Simulator time of the call (Unix ms).
    pub at_ms: i64,
    /// What the host resolved to (also for `ping`, whose answer lists no `dns`).
    pub addresses: Vec<String>,
    /// Why the host could not be resolved.
    pub dns_error: Option<String>,
    /// One per address, for `all` and `ping`.
    pub attempts: Vec<ProbeAttempt>,
    /// The answer the call got.
    pub answer: CallbackCheck,
}

/// Decides a `callback/check` call. Checks, the first failing one answers: token
/// (41001/40014/40001/42001) → daily quota and minute limit when configured (45009/45011) →
/// 44002 empty body / 47001 not a JSON object → 40202 `action` → 40203 `check_operator` →
/// 40201 no push URL.
pub(crate) fn check(
    st: &mut State,
    cfg: &SimConfig,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
) -> Result<ProbeJob, ApiError> {
    let appid = tokens::authenticate(st, now, req)?;
    *appid_out = Some(appid.clone());
    let acct = st
        .accounts
        .get_mut(&appid)
        .ok_or(ApiError::new(ErrCode::INVALID_CREDENTIAL))?;
    quota::check(acct, PATH, cfg, now)?;
    quota::check_minute(acct, PATH, cfg, now)?;
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(ErrCode::EMPTY_POST_DATA));
    }
    let body = req.json_body()?;
    let action = json_str(&body, "action")
        .and_then(CallbackCheckAction::parse)
        .ok_or(ApiError::new(ErrCode::INVALID_CHECK_ACTION))?;
    let operator = json_str(&body, "check_operator")
        .and_then(CheckOperator::parse)
        .ok_or(ApiError::new(ErrCode::INVALID_CHECK_OPERATOR))?;
    // §3.7: 40201 "usually the developer has not set the push URL".
    let url = acct
        .spec
        .push_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .filter(|u| u.host().is_some())
        .ok_or(ApiError::new(ErrCode::INVALID_CALLBACK_URL))?;
    let token = acct.spec.push_token.clone();
    let id = st.next_probe_id;
    st.next_probe_id += 1;
    Ok(ProbeJob {
        id,
        appid,
        url,
        token,
        action,
        operator,
        at_ms: now,
    })
}

/// The addresses of the URL's host, in resolver order without repeats, bounded by the push
/// timeout.
async fn resolve(cfg: &SimConfig, url: &url::Url) -> Result<Vec<IpAddr>, String> {
    let port = url.port_or_known_default().unwrap_or(80);
    match url.host() {
        Some(url::Host::Ipv4(ip)) => Ok(vec![IpAddr::V4(ip)]),
        Some(url::Host::Ipv6(ip)) => Ok(vec![IpAddr::V6(ip)]),
        Some(url::Host::Domain(host)) => {
            let lookup = tokio::net::lookup_host((host, port));
            match tokio::time::timeout(cfg.push_timeout, lookup).await {
                Err(_) => Err("timeout".into()),
                Ok(Err(e)) => Err(format!("resolve: {e}")),
                Ok(Ok(addrs)) => {
                    let mut ips: Vec<IpAddr> = Vec::new();
                    for a in addrs {
                        if !ips.contains(&a.ip()) {
                            ips.push(a.ip());
                        }
                    }
                    Ok(ips)
                }
            }
        }
        None => Err("no host".into()),
    }
}

/// Sends the signed verification GET to one address of the push URL.
async fn probe_one(
    http: &reqwest::Client,
    cfg: &SimConfig,
    job: &ProbeJob,
    ip: IpAddr,
) -> ProbeAttempt {
    let signed = Signed::now(cfg, &job.token);
    // §6.2's example echostr is a 19-digit number.
    let echostr = random_string(b"0123456789", 19);
    let query = [
        ("signature", signed.signature.as_str()),
        ("timestamp", signed.ts.as_str()),
        ("nonce", signed.nonce.as_str()),
        ("echostr", echostr.as_str()),
    ];
    let mut attempt = ProbeAttempt {
        ip: ip.to_string(),
        timestamp: signed.timestamp,
        nonce: signed.nonce.clone(),
        signature: signed.signature.clone(),
        echostr: echostr.clone(),
        status: None,
        body: None,
        elapsed_us: 0,
        error: None,
        echoed: false,
    };
    // A host name is pinned to the address being probed (the Host header and TLS name stay
    // the URL's); an address literal needs no pinning.
    let pinned;
    let client = match job.url.host() {
        Some(url::Host::Domain(host)) => {
            let port = job.url.port_or_known_default().unwrap_or(80);
            match reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .resolve(host, SocketAddr::new(ip, port))
                .build()
            {
                Ok(c) => {
                    pinned = c;
                    &pinned
                }
                Err(e) => {
                    attempt.error = Some(format!("client: {}", e.without_url()));
                    return attempt;
                }
            }
        }
        _ => http,
    };
    let answer = exchange(cfg, client.get(job.url.clone()).query(&query)).await;
    attempt.status = answer.status.map(|s| s.as_u16());
    attempt.elapsed_us = u64::try_from(answer.elapsed.as_micros()).unwrap_or(u64::MAX);
    attempt.echoed = answer.error.is_none()
        && !answer.oversized
        && answer.status == Some(reqwest::StatusCode::OK)
        && answer.body.as_deref() == Some(echostr.as_bytes());
    attempt.body = answer
        .body
        .as_deref()
        .map(|b| String::from_utf8_lossy(b).into_owned());
    attempt.error = answer.error;
    // Never the URL's query: it carries the signature.
    tracing::debug!(
        appid = %job.appid,
        probe = job.id,
        ip = %ip,
        status = attempt.status,
        error = attempt.error.as_deref(),
        echoed = attempt.echoed,
        "push URL probe"
    );
    attempt
}

/// Runs the probe: resolves the host, probes every address when the action asks for it, and
/// builds the answer of §3.7.
pub(crate) async fn run(http: &reqwest::Client, cfg: &SimConfig, job: ProbeJob) -> Probe {
    let (addresses, dns_error) = match resolve(cfg, &job.url).await {
        Ok(ips) => (ips, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let real_operator = cfg.push_url_operator.clone();
    // §3.7: DEFAULT "chooses the carrier by the address"; the others name the egress.
    let from_operator = match job.operator {
        CheckOperator::Default => real_operator.clone(),
        other => other.as_str().to_owned(),
    };
    let mut attempts = Vec::new();
    if job.action.probes() {
        for ip in &addresses {
            attempts.push(probe_one(http, cfg, &job, *ip).await);
        }
    }
    let dns = if job.action.resolves() {
        addresses
            .iter()
            .map(|ip| CallbackDns {
                ip: ip.to_string(),
                real_operator: real_operator.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let ping = attempts
        .iter()
        .map(|a| CallbackPing {
            ip: a.ip.clone(),
            from_operator: from_operator.clone(),
            package_loss: if a.echoed { "0%" } else { "100%" }.into(),
            // A lost probe has no round trip; WeChat's `ping -q` prints none either.
            time: format!(
                "{:.3}ms",
                if a.echoed {
                    a.elapsed_us as f64 / 1000.0
                } else {
                    0.0
                }
            ),
        })
        .collect();
    Probe {
        id: job.id,
        appid: job.appid,
        url: job.url.to_string(),
        action: job.action.as_str(),
        check_operator: job.operator.as_str(),
        at_ms: job.at_ms,
        addresses: addresses.iter().map(IpAddr::to_string).collect(),
        dns_error,
        attempts,
        answer: CallbackCheck { dns, ping },
    }
}
