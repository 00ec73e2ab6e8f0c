//! The control API (`/__sim/...`): JSON in, JSON out, for tests in any language and for the
//! demo. Every handler parses its input and calls one [`Simulator`] method — the Rust API is
//! the source of truth; this is its HTTP face. Routes are documented in the crate README.
//!
//! There is no authentication: whoever reaches these routes can read secrets and move the
//! clock, so the simulator must only listen on loopback (see [`crate::serve`]).
//!
//! Errors are [`SimError`] (`{"error","kind"}` with a 4xx status). Bodies are parsed by hand
//! so malformed JSON gets that same shape instead of axum's plain-text rejection.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::Simulator;
use crate::error::SimError;
use crate::faults::FaultSpec;
use crate::model::{AccountSpec, FollowOptions, NextAuthorization, QrScan, UserSpec};

type Res = Result<Response, SimError>;

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, SimError> {
    serde_json::from_slice(body).map_err(|e| SimError::invalid(format!("JSON body: {e}")))
}

/// Like [`parse`], but an empty body means the type's default.
fn parse_or_default<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, SimError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse(body)
    }
}

fn ok<T: serde::Serialize>(v: T) -> Res {
    Ok(axum::Json(v).into_response())
}

pub(crate) fn routes() -> Router<Simulator> {
    Router::new()
        .route("/health", get(|| async { axum::Json(json!({"ok": true})) }))
        .route("/accounts", get(list_accounts).post(create_account))
        .route("/accounts/bulk", post(create_accounts))
        .route(
            "/accounts/{appid}",
            get(get_account).patch(patch_account).delete(delete_account),
        )
        .route("/accounts/{appid}/tokens", get(tokens))
        .route("/accounts/{appid}/quota", get(quota))
        .route("/accounts/{appid}/followers", get(followers))
        .route("/accounts/{appid}/qrcodes", get(qrcodes))
        .route("/scan", post(scan_qrcode))
        .route(
            "/accounts/{appid}/next-authorization",
            post(next_authorization),
        )
        .route("/accounts/{appid}/users/{user}/openid", get(openid))
        .route("/accounts/{appid}/users/{user}/follow", post(follow))
        .route("/accounts/{appid}/users/{user}/unfollow", post(unfollow))
        .route("/accounts/{appid}/users/{user}/scan", post(scan))
        .route("/accounts/{appid}/users/{user}/text", post(text))
        .route("/accounts/{appid}/users/{user}/click", post(click))
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", get(get_user).delete(delete_user))
        .route(
            "/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/faults/seed", post(seed_faults))
        .route("/faults/{id}", delete(remove_fault))
        .route("/clock", get(clock))
        .route("/clock/advance", post(advance_clock))
        .route("/clock/set", post(set_clock))
        .route("/counters", get(counters))
        .route("/calls", get(calls).delete(clear_calls))
        .route("/deliveries", get(deliveries))
        .route("/deliveries/{id}", get(delivery))
        .route("/probes", get(probes))
        .route("/reset", post(reset))
        .route("/callback", get(callback))
        .route("/phone", get(crate::phone::page))
        .route("/phone/follow", post(crate::phone::follow))
        .route("/phone/unfollow", post(crate::phone::unfollow))
        .route("/phone/scan", post(crate::phone::scan))
        .route("/phone/text", post(crate::phone::text))
        .route("/phone/click", post(crate::phone::click))
        .fallback(|| async { SimError::not_found("control route") })
}

async fn list_accounts(State(sim): State<Simulator>) -> Res {
    ok(json!({ "appids": sim.appids() }))
}

async fn create_account(State(sim): State<Simulator>, body: Bytes) -> Res {
    let spec: AccountSpec = parse(&body)?;
    sim.create_account(spec.clone())?;
    Ok((StatusCode::CREATED, axum::Json(spec)).into_response())
}

async fn create_accounts(State(sim): State<Simulator>, body: Bytes) -> Res {
    let specs: Vec<AccountSpec> = parse(&body)?;
    let created = sim.create_accounts(specs)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "created": created })),
    )
        .into_response())
}

async fn get_account(State(sim): State<Simulator>, Path(appid): Path<String>) -> Res {
    ok(sim
        .account(&appid)
        .ok_or_else(|| SimError::not_found(format!("account {appid}")))?)
}

async fn patch_account(
    State(sim): State<Simulator>,
    Path(appid): Path<String>,
    body: Bytes,
) -> Res {
    ok(sim.patch_account(&appid, parse(&body)?)?)
}

async fn delete_account(State(sim): State<Simulator>, Path(appid): Path<String>) -> Res {
    sim.delete_account(&appid)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn tokens(State(sim): State<Simulator>, Path(appid): Path<String>) -> Res {
    ok(sim.tokens(&appid)?)
}

async fn quota(State(sim): State<Simulator>, Path(appid): Path<String>) -> Res {
    ok(sim.quota(&appid)?)
}

async fn followers(State(sim): State<Simulator>, Path(appid): Path<String>) -> Res {
    ok(sim.followers(&appid)?)
}

async fn qrcodes(State(sim): State<Simulator>, Path(appid): Path<String>) -> Res {
    ok(sim.qrcodes(&appid)?)
}

async fn scan_qrcode(State(sim): State<Simulator>, body: Bytes) -> Res {
    let scan: QrScan = parse(&body)?;
    ok(sim.scan_qrcode(scan).await?)
}

async fn next_authorization(
    State(sim): State<Simulator>,
    Path(appid): Path<String>,
    body: Bytes,
) -> Res {
    let next: NextAuthorization = parse(&body)?;
    sim.queue_authorization(&appid, next)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn openid(State(sim): State<Simulator>, Path((appid, user)): Path<(String, String)>) -> Res {
    ok(json!({ "openid": sim.openid(&appid, &user)? }))
}

async fn follow(
    State(sim): State<Simulator>,
    Path((appid, user)): Path<(String, String)>,
    body: Bytes,
) -> Res {
    let opts: FollowOptions = parse_or_default(&body)?;
    ok(sim.follow(&appid, &user, opts).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnfollowBody {
    #[serde(default = "yes")]
    push: bool,
}

impl Default for UnfollowBody {
    fn default() -> Self {
        Self { push: true }
    }
}

fn yes() -> bool {
    true
}

async fn unfollow(
    State(sim): State<Simulator>,
    Path((appid, user)): Path<(String, String)>,
    body: Bytes,
) -> Res {
    let b: UnfollowBody = parse_or_default(&body)?;
    ok(sim.unfollow(&appid, &user, b.push).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanBody {
    scene: String,
    #[serde(default)]
    ticket: Option<String>,
}

async fn scan(
    State(sim): State<Simulator>,
    Path((appid, user)): Path<(String, String)>,
    body: Bytes,
) -> Res {
    let b: ScanBody = parse(&body)?;
    ok(sim.scan(&appid, &user, &b.scene, b.ticket).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextBody {
    content: String,
    #[serde(default)]
    msg_id: Option<u64>,
}

async fn text(
    State(sim): State<Simulator>,
    Path((appid, user)): Path<(String, String)>,
    body: Bytes,
) -> Res {
    let b: TextBody = parse(&body)?;
    ok(sim.send_text(&appid, &user, &b.content, b.msg_id).await?)
}

#[derive(Deserialize)]
struct ClickBody {
    key: String,
}

async fn click(
    State(sim): State<Simulator>,
    Path((appid, user)): Path<(String, String)>,
    body: Bytes,
) -> Res {
    let b: ClickBody = parse(&body)?;
    ok(sim.click_menu(&appid, &user, &b.key).await?)
}

async fn list_users(State(sim): State<Simulator>) -> Res {
    ok(sim.users())
}

async fn create_user(State(sim): State<Simulator>, body: Bytes) -> Res {
    let spec: UserSpec = parse(&body)?;
    sim.create_user(spec.clone())?;
    Ok((StatusCode::CREATED, axum::Json(spec)).into_response())
}

async fn get_user(State(sim): State<Simulator>, Path(id): Path<String>) -> Res {
    ok(sim
        .user(&id)
        .ok_or_else(|| SimError::not_found(format!("user {id}")))?)
}

async fn delete_user(State(sim): State<Simulator>, Path(id): Path<String>) -> Res {
    sim.delete_user(&id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_faults(State(sim): State<Simulator>) -> Res {
    ok(sim.faults())
}

async fn add_fault(State(sim): State<Simulator>, body: Bytes) -> Res {
    let spec: FaultSpec = parse(&body)?;
    let id = sim.add_fault(spec)?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "id": id }))).into_response())
}

async fn clear_faults(State(sim): State<Simulator>) -> Res {
    sim.clear_faults();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_fault(State(sim): State<Simulator>, Path(id): Path<String>) -> Res {
    let id: u64 = id
        .parse()
        .map_err(|_| SimError::not_found(format!("fault {id}")))?;
    sim.remove_fault(id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedBody {
    seed: u64,
}

async fn seed_faults(State(sim): State<Simulator>, body: Bytes) -> Res {
    let b: SeedBody = parse(&body)?;
    sim.reseed_faults(b.seed);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn clock(State(sim): State<Simulator>) -> Res {
    ok(json!({
        "now_ms": sim.now_ms(),
        "manual": sim.config().manual_clock.is_some(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceBody {
    #[serde(default)]
    secs: u64,
    #[serde(default)]
    ms: u64,
}

async fn advance_clock(State(sim): State<Simulator>, body: Bytes) -> Res {
    let b: AdvanceBody = parse(&body)?;
    let by = Duration::from_secs(b.secs).saturating_add(Duration::from_millis(b.ms));
    ok(json!({ "now_ms": sim.advance_clock(by)? }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    now_ms: i64,
}

async fn set_clock(State(sim): State<Simulator>, body: Bytes) -> Res {
    let b: SetBody = parse(&body)?;
    ok(json!({ "now_ms": sim.set_clock(b.now_ms)? }))
}

#[derive(Deserialize)]
struct Filter {
    appid: Option<String>,
    endpoint: Option<String>,
    limit: Option<usize>,
}

async fn counters(State(sim): State<Simulator>, Query(f): Query<Filter>) -> Res {
    ok(sim.counters(f.appid.as_deref(), f.endpoint.as_deref()))
}

async fn calls(State(sim): State<Simulator>, Query(f): Query<Filter>) -> Res {
    ok(sim.calls(
        f.appid.as_deref(),
        f.endpoint.as_deref(),
        f.limit.unwrap_or(100),
    ))
}

async fn clear_calls(State(sim): State<Simulator>) -> Res {
    sim.clear_calls();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn deliveries(State(sim): State<Simulator>, Query(f): Query<Filter>) -> Res {
    ok(sim.deliveries(f.appid.as_deref()))
}

async fn delivery(State(sim): State<Simulator>, Path(id): Path<String>) -> Res {
    id.parse::<u64>()
        .ok()
        .and_then(|id| sim.delivery(id))
        .ok_or_else(|| SimError::not_found(format!("delivery {id}")))
        .and_then(ok)
}

async fn probes(State(sim): State<Simulator>, Query(f): Query<Filter>) -> Res {
    ok(sim.probes(f.appid.as_deref()))
}

async fn reset(State(sim): State<Simulator>) -> Res {
    sim.reset();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A landing page for hand-driven authorizations (see `html::landing_page`).
async fn callback(Query(query): Query<Vec<(String, String)>>) -> Response {
    crate::html::landing_page(&query)
}
