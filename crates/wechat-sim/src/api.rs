//! The WeChat-facing router and the pipeline every API call goes through:
//! method check → fault injection → the endpoint's rule → quota charge → counters and call
//! log → response. Handlers are one line: they hand the request to [`Simulator::handle`].
//!
//! The state lock is taken for deciding and released before any wait: latency and timeout
//! faults, and the network probe of `callback/check` (§3.7), run without it.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use wechat::errcode::ErrCode;

use crate::Simulator;
use crate::calls::CallRecord;
use crate::faults::FaultAction;
use crate::html;
use crate::wire::{ApiError, CallerIp, Endpoint, Reply, WireRequest, error_response};
use crate::{datacube, oauth, probe, qr, quota, tokens, users};

/// Routes for every endpoint the client calls, plus the authorize page.
pub(crate) fn routes() -> Router<Simulator> {
    let mut router = Router::new();
    for ep in Endpoint::ALL {
        router = router.route(
            &ep.route(),
            any(
                move |State(sim): State<Simulator>,
                      CallerIp(caller): CallerIp,
                      method: Method,
                      uri: Uri,
                      body: Bytes| async move {
                    sim.handle(ep, WireRequest::new(method, uri.query(), body, caller))
                        .await
                },
            ),
        );
    }
    router
}

/// What an endpoint's rule decided under the lock.
enum Decision {
    /// The answer.
    Reply(Reply),
    /// `callback/check`: a probe of the push URL, run once the lock is released; its record
    /// is the answer.
    Probe(probe::ProbeJob),
}

/// Which account a request names, before any rule runs (faults may target one account).
fn appid_hint(st: &crate::state::State, req: &WireRequest) -> Option<String> {
    if let Some(a) = req.param("appid") {
        return Some(a.to_owned());
    }
    if let Some(code) = req.param("ticket").and_then(|t| st.qrcodes.get(t)) {
        return Some(code.appid.clone());
    }
    if let Some(t) = req.param("access_token") {
        if let Some(o) = st.tokens.get(t) {
            return Some(o.appid.clone());
        }
        if let Some(g) = st.user_tokens.get(t) {
            return Some(g.appid.clone());
        }
    }
    serde_json::from_slice::<serde_json::Value>(&req.body)
        .ok()
        .and_then(|v| v.get("appid").and_then(|a| a.as_str()).map(str::to_owned))
}

/// The appid a call is recorded under: a known account, else `""`. An appid taken from the
/// request that names no account must not become a counter key, or arbitrary requests would
/// grow the counters without bound; checked under the same lock as the record is written, so
/// a deleted account's counters are not recreated by a call in flight.
fn recorded_appid(st: &crate::state::State, appid: Option<String>) -> String {
    appid
        .filter(|a| st.accounts.contains_key(a))
        .unwrap_or_default()
}

impl Simulator {
    /// Runs one WeChat API call through the pipeline.
    pub(crate) async fn handle(&self, ep: Endpoint, req: WireRequest) -> Response {
        let cfg = &self.inner.config;
        let (hint, fault) = {
            let mut st = self.lock();
            let hint = appid_hint(&st, &req);
            let fault = st.faults.pick(ep.path(), hint.as_deref());
            (hint, fault)
        };
        // `appid` must already be filtered through `recorded_appid`.
        let record = |appid: String, errcode: i64, status: u16, fault: Option<&str>| CallRecord {
            seq: 0,
            at_ms: cfg.now_ms(),
            appid,
            endpoint: ep.path().to_owned(),
            method: req.method.to_string(),
            errcode,
            http_status: status,
            caller_ip: req.caller.to_string(),
            fault: fault.map(str::to_owned),
        };
        let mut fault_name = None;
        match fault {
            None => {}
            Some(FaultAction::Latency { ms }) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                fault_name = Some("latency");
            }
            Some(action @ (FaultAction::Timeout { .. } | FaultAction::Drop)) => {
                if let FaultAction::Timeout { ms } = action {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let mut st = self.lock();
                let rec = record(recorded_appid(&st, hint), 0, 0, Some(action.name()));
                st.calls.record(rec);
                drop(st);
                return crate::wire::dropped_connection();
            }
            Some(FaultAction::Errcode { code, errmsg }) => {
                let mut st = self.lock();
                let rec = record(recorded_appid(&st, hint), code, 200, Some("errcode"));
                st.calls.record(rec);
                drop(st);
                let err = ApiError {
                    code: ErrCode(code),
                    msg: errmsg,
                };
                return if ep == Endpoint::Authorize {
                    html::error_page(code, &err.message())
                } else {
                    error_response(&err)
                };
            }
            Some(FaultAction::HttpStatus { status }) => {
                let mut st = self.lock();
                let rec = record(recorded_appid(&st, hint), 0, status, Some("http_status"));
                st.calls.record(rec);
                drop(st);
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                return (status, format!("<html><body>{status}</body></html>")).into_response();
            }
        }

        let now = cfg.now_ms();
        let mut appid = None;
        // The guard lives in this block only: a probe is awaited after it.
        let (result, errcode) = {
            let mut st = self.lock();
            let result = if ep.post_only() && req.method != Method::POST {
                Err(ApiError::new(ErrCode(43002)))
            } else {
                let st = &mut *st;
                let reply = |r: Result<Reply, ApiError>| r.map(Decision::Reply);
                match ep {
                    Endpoint::Token => reply(tokens::core_token(st, cfg, now, &mut appid, &req)),
                    Endpoint::StableToken => {
                        reply(tokens::stable_token(st, cfg, now, &mut appid, &req))
                    }
                    Endpoint::QuotaGet => reply(quota::quota_get(st, cfg, now, &mut appid, &req)),
                    Endpoint::ClearQuota => {
                        reply(quota::clear_quota(st, cfg, now, &mut appid, &req))
                    }
                    Endpoint::ClearQuotaV2 => {
                        reply(quota::clear_quota_v2(st, cfg, now, &mut appid, &req))
                    }
                    Endpoint::CallbackIp => reply(tokens::ip_list(
                        st,
                        cfg,
                        now,
                        &mut appid,
                        &req,
                        ep.path(),
                        &cfg.callback_ips,
                    )),
                    Endpoint::ApiDomainIp => reply(tokens::ip_list(
                        st,
                        cfg,
                        now,
                        &mut appid,
                        &req,
                        ep.path(),
                        &cfg.api_domain_ips,
                    )),
                    Endpoint::CallbackCheck => {
                        probe::check(st, cfg, now, &mut appid, &req).map(Decision::Probe)
                    }
                    Endpoint::UserInfo => reply(users::user_info(st, cfg, now, &mut appid, &req)),
                    Endpoint::UserInfoBatch => {
                        reply(users::user_info_batch(st, cfg, now, &mut appid, &req))
                    }
                    Endpoint::UserGet => reply(users::user_get(st, cfg, now, &mut appid, &req)),
                    Endpoint::Authorize => reply(oauth::authorize(st, cfg, now, &mut appid, &req)),
                    Endpoint::SnsAccessToken => {
                        reply(oauth::exchange_code(st, cfg, now, &mut appid, &req))
                    }
                    Endpoint::SnsRefreshToken => {
                        reply(oauth::refresh(st, cfg, now, &mut appid, &req))
                    }
                    Endpoint::SnsAuth => reply(oauth::sns_auth(st, cfg, now, &mut appid, &req)),
                    Endpoint::SnsUserinfo => {
                        reply(oauth::sns_userinfo(st, cfg, now, &mut appid, &req))
                    }
                    Endpoint::QrcodeCreate => reply(qr::create(st, cfg, now, &mut appid, &req)),
                    Endpoint::ShowQrcode => reply(qr::show(st, now, &mut appid, &req)),
                    Endpoint::Datacube(d) => {
                        reply(datacube::query(st, cfg, now, &mut appid, &req, d))
                    }
                }
            };
            let errcode = match &result {
                Ok(Decision::Reply(reply)) => reply.errcode(),
                // A probe answers success whatever it finds (§3.7).
                Ok(Decision::Probe(_)) => 0,
                Err(e) => e.code.0,
            };
            // §1, §12 item 1: by default only successful calls consume quota.
            if let Some(a) = &appid
                && (errcode == 0 || cfg.count_failed_calls)
                && let Some(acct) = st.accounts.get_mut(a)
            {
                quota::charge(acct, ep.path(), cfg, now);
            }
            (result, errcode)
        };
        // Written without the lock: drawing a QR image takes milliseconds, a probe waits on
        // the network, and every other call would wait for them.
        let response = match result {
            Ok(Decision::Reply(reply)) => reply.into_response(),
            Ok(Decision::Probe(job)) => Reply::Json(self.run_probe(job).await).into_response(),
            Err(e) => error_response(&e),
        };
        let mut st = self.lock();
        let rec = record(
            recorded_appid(&st, appid.or(hint)),
            errcode,
            response.status().as_u16(),
            fault_name,
        );
        st.calls.record(rec);
        drop(st);
        response
    }
}

/// Unknown paths: HTTP 404 with a WeChat-style body.
pub(crate) async fn not_found() -> Response {
    let mut r = error_response(&ApiError::with_msg(ErrCode(-1), "no such api (simulator)"));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}
