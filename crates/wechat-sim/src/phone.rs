//! A page that stands in for the WeChat app in a person's hand: it lists the simulated people
//! and, for each account, lets them follow or unfollow with one click. The simulator then
//! sends the signed push exactly as the control API's follow/unfollow would, so a person
//! clicking through a demo can answer a "follow to continue" page.
//!
//! Like the rest of the control API it is unauthenticated and for loopback only.

use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::Simulator;
use crate::html::escape;
use crate::model::FollowOptions;

#[derive(Deserialize)]
pub(crate) struct PhoneQuery {
    /// What the last click did, shown at the top.
    #[serde(default)]
    done: Option<String>,
}

/// `GET /__sim/phone`.
pub(crate) async fn page(State(sim): State<Simulator>, Query(q): Query<PhoneQuery>) -> Response {
    let users = sim.users();
    let mut rows = String::new();
    for appid in sim.appids() {
        let following: Vec<String> = sim
            .followers(&appid)
            .map(|f| f.into_iter().map(|f| f.user).collect())
            .unwrap_or_default();
        rows.push_str(&format!("<h2>{}</h2><ul>", escape(&appid)));
        for user in &users {
            let follows = following.contains(&user.id);
            let (action, label) = if follows {
                ("unfollow", "取消关注 Unfollow")
            } else {
                ("follow", "关注 Follow")
            };
            rows.push_str(&format!(
                "<li>{} ({}) — {} \
                 <form method=\"post\" action=\"phone/{action}\" style=\"display:inline\">\
                 <input type=\"hidden\" name=\"appid\" value=\"{}\">\
                 <input type=\"hidden\" name=\"user\" value=\"{}\">\
                 <button type=\"submit\">{label}</button></form></li>",
                escape(&user.nickname),
                escape(&user.id),
                if follows {
                    "已关注 following"
                } else {
                    "未关注 not following"
                },
                escape(&appid),
                escape(&user.id),
            ));
        }
        rows.push_str("</ul>");
    }
    let done = q
        .done
        .map(|d| format!("<p id=\"done\"><b>{}</b></p>", escape(&d)))
        .unwrap_or_default();
    Html(format!(
        "<!DOCTYPE html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>wechat-sim phone</title></head><body>\
         <h1>模拟微信 Simulated WeChat</h1>{done}{rows}</body></html>"
    ))
    .into_response()
}

#[derive(Deserialize)]
pub(crate) struct FollowForm {
    appid: String,
    user: String,
}

/// `POST /__sim/phone/follow` and `/__sim/phone/unfollow`: acts, then shows the page again
/// with what happened to the push.
pub(crate) async fn follow(State(sim): State<Simulator>, Form(f): Form<FollowForm>) -> Response {
    let outcome = sim
        .follow(&f.appid, &f.user, FollowOptions::default())
        .await;
    back(describe("followed", outcome.map(|o| o.delivery)))
}

pub(crate) async fn unfollow(State(sim): State<Simulator>, Form(f): Form<FollowForm>) -> Response {
    let outcome = sim.unfollow(&f.appid, &f.user, true).await;
    back(describe("unfollowed", outcome.map(|o| o.delivery)))
}

fn describe<E: std::fmt::Display>(
    what: &str,
    delivery: Result<Option<crate::push::Delivery>, E>,
) -> String {
    match delivery {
        Err(err) => format!("failed: {err}"),
        Ok(None) => format!("{what}; the account has no push URL, so nothing was pushed"),
        Ok(Some(d)) => match d.attempts.last() {
            Some(last) => format!(
                "{what}; push delivered in {} attempt(s), last answer HTTP {}",
                d.attempts.len(),
                last.status.map_or("none".to_owned(), |s| s.to_string())
            ),
            None => format!("{what}; the push was not attempted"),
        },
    }
}

fn back(done: String) -> Response {
    let mut url = url::Url::parse("http://sim/__sim/phone").expect("constant URL");
    url.query_pairs_mut().append_pair("done", &done);
    let location = format!("phone?{}", url.query().unwrap_or_default());
    (StatusCode::SEE_OTHER, Redirect::to(&location)).into_response()
}
