//! A page that stands in for the WeChat app in a person's hand: it lists the simulated people
//! and, for each account, lets them follow or unfollow with one click. The simulator then
//! sends the signed push exactly as the control API's follow/unfollow would, so a person
//! clicking through a demo can answer a "follow to continue" page.
//!
//! It also scans parametric QR codes (docs/wechat-2.md §3.1, §4.4): paste a ticket, the
//! code's `url` or a `showqrcode` image address, or pick one of the newest live codes, and
//! scan it as any simulated person — what a person does with the camera when a website shows
//! a "scan to sign in" code.
//!
//! And it chats: a follower sends a text message or clicks a menu button (`CLICK` with a key),
//! and the page shows the conversation — what the person sent and what the account answered
//! with a passive reply (docs/wechat.md §6.4), from the simulator's delivery records — so a
//! demo shows a bot answering through wxhub.
//!
//! Like the rest of the control API it is unauthenticated and for loopback only.

use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::Simulator;
use crate::html::escape;
use crate::model::{FollowOptions, QrScan};
use crate::qr::QrCodeView;

/// Live codes offered for one-click scanning.
const RECENT_CODES: usize = 8;

/// Messages shown per conversation.
const CHAT_LINES: usize = 12;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:30rem;\
padding:0.75rem;line-height:1.4}h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.5rem}\
li{margin:0.4rem 0}button{font-size:1rem;padding:0.45rem 0.8rem;margin:0.2rem 0.3rem 0.2rem 0}\
input[type=text]{width:100%;box-sizing:border-box;font-size:1rem;padding:0.5rem}\
fieldset{border:1px solid #ccc;margin:0.5rem 0}#done{background:#eef7ee;padding:0.5rem;\
border-radius:4px;overflow-wrap:anywhere}.code{display:flex;gap:0.6rem;align-items:flex-start;\
border-top:1px solid #ddd;padding:0.5rem 0}.code img{width:6rem;height:6rem;flex:none}\
.code small{overflow-wrap:anywhere;color:#555}.code form{margin-top:0.3rem}.code button{padding:0.35rem 0.55rem}\
.chat{border:1px solid #ddd;border-radius:6px;padding:0.5rem;margin:0.4rem 0 0.8rem}\
.me,.bot,.note{margin:0.25rem 0;padding:0.35rem 0.6rem;border-radius:10px;max-width:85%;overflow-wrap:anywhere}\
.me{background:#95ec69;margin-left:auto;width:fit-content}.bot{background:#f0f0f0;width:fit-content}\
.note{color:#777;font-size:0.85rem}.chat form{display:flex;gap:0.3rem;margin-top:0.3rem}\
.chat input[type=text]{flex:1}";

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
                 <button type=\"submit\">{label}</button></form>",
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
            if follows {
                rows.push_str(&chat(&sim, &appid, &user.id));
            }
            rows.push_str("</li>");
        }
        rows.push_str("</ul>");
    }
    let done = q
        .done
        .map(|d| format!("<p id=\"done\"><b>{}</b></p>", escape(&d)))
        .unwrap_or_default();
    let scan = scan_section(&sim, &users);
    Html(format!(
        "<!DOCTYPE html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>wechat-sim phone</title><style>{STYLE}</style></head><body>\
         <h1>模拟微信 Simulated WeChat</h1>{done}{scan}{rows}</body></html>"
    ))
    .into_response()
}

/// A follower's conversation with the account: what they sent and what it answered, with
/// forms to send a text message or click a menu button.
fn chat(sim: &Simulator, appid: &str, user: &str) -> String {
    let mut lines = Vec::new();
    for d in sim
        .deliveries(Some(appid))
        .iter()
        .filter(|d| d.user == user && (d.event == "text" || d.event == "CLICK"))
    {
        let sent = wechat::xml::parse_message(d.message_xml.as_bytes()).ok();
        let said = match (d.event.as_str(), &sent) {
            ("text", Some(m)) => m.fields.get("Content").unwrap_or_default().to_owned(),
            (_, Some(m)) => format!("[菜单 menu] {}", m.event_key().unwrap_or_default()),
            _ => String::new(),
        };
        lines.push(format!("<p class=\"me\">{}</p>", escape(&said)));
        let answer = d.attempts.last().and_then(|a| a.reply.as_ref());
        match answer {
            Some(r) if r.valid && r.content.is_some() => lines.push(format!(
                "<p class=\"bot\">{}</p>",
                escape(r.content.as_deref().unwrap_or_default())
            )),
            Some(r) if r.valid && r.msg_type.is_some() => lines.push(format!(
                "<p class=\"bot\">[{}]</p>",
                escape(r.msg_type.as_deref().unwrap_or_default())
            )),
            Some(r) if !r.valid => lines.push(
                "<p class=\"note\">该公众号暂时无法提供服务，请稍后再试 (the answer was invalid)</p>"
                    .to_owned(),
            ),
            Some(_) => {}
            None => lines.push("<p class=\"note\">(no answer)</p>".to_owned()),
        }
    }
    let skip = lines.len().saturating_sub(CHAT_LINES * 2);
    let hidden = |name: &str, value: &str| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            escape(value)
        )
    };
    format!(
        "<div class=\"chat\">{}\
         <form method=\"post\" action=\"phone/text\">{}{}\
         <input type=\"text\" name=\"content\" required placeholder=\"发消息 Send a message\" \
         aria-label=\"message\"><button type=\"submit\">发送 Send</button></form>\
         <form method=\"post\" action=\"phone/click\">{}{}\
         <input type=\"text\" name=\"key\" required placeholder=\"菜单 key, e.g. menu_help\" \
         aria-label=\"menu key\"><button type=\"submit\">点菜单 Click menu</button></form></div>",
        lines[skip..].concat(),
        hidden("appid", appid),
        hidden("user", user),
        hidden("appid", appid),
        hidden("user", user),
    )
}

#[derive(Deserialize)]
pub(crate) struct TextForm {
    appid: String,
    user: String,
    content: String,
}

/// `POST /__sim/phone/text`: the person sends a text message to the account.
pub(crate) async fn text(State(sim): State<Simulator>, Form(f): Form<TextForm>) -> Response {
    let outcome = sim.send_text(&f.appid, &f.user, &f.content, None).await;
    back(describe(
        &format!("{} sent a message", f.user),
        outcome.map(|o| o.delivery),
    ))
}

#[derive(Deserialize)]
pub(crate) struct ClickForm {
    appid: String,
    user: String,
    key: String,
}

/// `POST /__sim/phone/click`: the person clicks a menu button with this key.
pub(crate) async fn click(State(sim): State<Simulator>, Form(f): Form<ClickForm>) -> Response {
    let outcome = sim.click_menu(&f.appid, &f.user, f.key.trim()).await;
    back(describe(
        &format!("{} clicked the menu {}", f.user, f.key.trim()),
        outcome.map(|o| o.delivery),
    ))
}

/// The "scan with WeChat" form and the newest live codes, each with one button per person.
fn scan_section(sim: &Simulator, users: &[crate::model::UserSpec]) -> String {
    let mut out = String::from(
        "<section id=\"scan\"><h2>扫一扫 Scan with WeChat</h2>\
         <form method=\"post\" action=\"phone/scan\">\
         <label for=\"code\">二维码 The code: its ticket, its url, or the image address</label>\
         <input type=\"text\" id=\"code\" name=\"code\" required autocomplete=\"off\" \
         placeholder=\"http://weixin.qq.com/q/…\"><fieldset><legend>扫码的人 Who scans</legend>",
    );
    for (i, user) in users.iter().enumerate() {
        out.push_str(&format!(
            "<label><input type=\"radio\" name=\"user\" value=\"{}\"{}> {}</label> ",
            escape(&user.id),
            if i == 0 { " checked" } else { "" },
            escape(&user.id),
        ));
    }
    out.push_str(
        "</fieldset><label><input type=\"checkbox\" name=\"follow\" value=\"1\" checked> \
         未关注就关注 Follow the account if not following yet</label><br>\
         <button type=\"submit\">扫描 Scan</button></form>",
    );
    let now = sim.now_ms();
    let mut live: Vec<QrCodeView> = sim
        .appids()
        .iter()
        .filter_map(|a| sim.qrcodes(a).ok())
        .flatten()
        .filter(|c| c.status == "live")
        .collect();
    live.sort_by_key(|c| std::cmp::Reverse(c.created_at_ms));
    live.truncate(RECENT_CODES);
    if !live.is_empty() {
        out.push_str("<h2>最新的二维码 Newest live codes</h2>");
    }
    for code in &live {
        let scene = code
            .scene_str
            .clone()
            .or_else(|| code.scene_id.map(|n| n.to_string()))
            .unwrap_or_default();
        let life = code.expires_at_ms.map_or("permanent".to_owned(), |end| {
            format!("expires in {} s", (end - now).div_euclid(1000).max(0))
        });
        let img = format!(
            "../mp/cgi-bin/showqrcode?ticket={}",
            url::form_urlencoded::byte_serialize(code.ticket.as_bytes()).collect::<String>()
        );
        out.push_str(&format!(
            "<div class=\"code\"><img src=\"{}\" alt=\"QR code\"><div>\
             <b>{}</b> {} · scene <code>{}</code> · {}<br><small>{}</small>\
             <form method=\"post\" action=\"phone/scan\">\
             <input type=\"hidden\" name=\"code\" value=\"{}\">\
             <input type=\"hidden\" name=\"follow\" value=\"1\">扫码 Scan as<br>",
            escape(&img),
            escape(&code.appid),
            code.action_name.name(),
            escape(&scene),
            life,
            escape(&code.url),
            escape(&code.ticket),
        ));
        for user in users {
            out.push_str(&format!(
                "<button type=\"submit\" name=\"user\" value=\"{}\">{}</button>",
                escape(&user.id),
                escape(&user.id),
            ));
        }
        out.push_str("</form></div></div>");
    }
    out.push_str("</section>");
    out
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

#[derive(Deserialize)]
pub(crate) struct ScanForm {
    code: String,
    user: String,
    #[serde(default)]
    follow: Option<String>,
}

/// The ticket or url in what a person pasted: an image address `…showqrcode?ticket=T` gives
/// `T`; anything else is taken as it is.
fn code_of(pasted: &str) -> String {
    let pasted = pasted.trim();
    url::Url::parse(pasted)
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "ticket")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_else(|| pasted.to_owned())
}

/// `POST /__sim/phone/scan`: the person scans the code, then the page shows what happened.
pub(crate) async fn scan(State(sim): State<Simulator>, Form(f): Form<ScanForm>) -> Response {
    let scan = QrScan {
        ticket: Some(code_of(&f.code)),
        user: Some(f.user.clone()),
        follow: Some(f.follow.is_some()),
        ..QrScan::default()
    };
    let done = match sim.scan_qrcode(scan).await {
        Err(err) => format!("{} could not scan: {err}", f.user),
        Ok(o) => match o.event {
            None => format!(
                "{} scanned a code of {} and left without following: WeChat pushes nothing",
                o.user, o.appid
            ),
            Some(event) => {
                let what = if event == "SCAN" {
                    format!(
                        "{} (a follower) scanned a code of {}: SCAN",
                        o.user, o.appid
                    )
                } else {
                    format!(
                        "{} scanned a code of {} and followed: subscribe",
                        o.user, o.appid
                    )
                };
                describe(&what, Ok::<_, std::convert::Infallible>(o.delivery))
            }
        },
    };
    back(done)
}

fn describe<E: std::fmt::Display>(
    what: &str,
    delivery: Result<Option<crate::push::Delivery>, E>,
) -> String {
    match delivery {
        Err(err) => format!("failed: {err}"),
        Ok(None) => format!("{what}; the account has no push URL, so nothing was pushed"),
        Ok(Some(d)) => match d.attempts.last() {
            Some(last) => {
                let mut s = format!(
                    "{what}; push delivered in {} attempt(s), last answer HTTP {}",
                    d.attempts.len(),
                    last.status.map_or("none".to_owned(), |s| s.to_string())
                );
                // What the person would read in the chat (a passive text reply, §6.4).
                if let Some(reply) = &last.reply
                    && reply.valid
                    && let Some(content) = &reply.content
                {
                    s.push_str(&format!("; the account replied: “{content}”"));
                } else if let Some(reply) = &last.reply
                    && !reply.valid
                {
                    s.push_str("; the reply was invalid (WeChat would show an error)");
                }
                s
            }
            None => format!("{what}; the push was not attempted"),
        },
    }
}

fn back(done: String) -> Response {
    let mut url = url::Url::parse("http://sim/__sim/phone").expect("constant URL");
    url.query_pairs_mut().append_pair("done", &done);
    // Relative to the form's `…/phone/follow` (or `/scan`): back to `…/phone`, wherever the
    // control API is mounted.
    let location = format!("../phone?{}", url.query().unwrap_or_default());
    (StatusCode::SEE_OTHER, Redirect::to(&location)).into_response()
}
