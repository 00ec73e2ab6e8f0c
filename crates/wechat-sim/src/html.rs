//! The HTML the simulator shows in place of WeChat's in-app pages: the authorize step's error
//! pages (§4.1, HTML not JSON) and the user-picker/consent page.
//!
//! Every interpolated value goes through [`escape`]: query parameters are attacker-controlled
//! even in a simulator, and a page that reflects them unescaped would teach bad habits.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title></head><body>{body}</body></html>",
        escape(title)
    )
}

/// WeChat's authorize error page: HTTP 200 (WeChat renders it in the in-app browser), the
/// code in a `data-errcode` attribute so tests can read it.
pub fn error_page(code: i64, message: &str) -> Response {
    let body = format!(
        "<div class=\"weui-msg\" id=\"error\" data-errcode=\"{code}\"><h2>授权失败 Authorization error</h2>\
         <p>错误码 errcode: <b>{code}</b></p><p>{}</p></div>",
        escape(message)
    );
    (StatusCode::OK, Html(page("微信网页授权", &body))).into_response()
}

/// One person in the picker.
pub struct PickerUser<'a> {
    /// Simulator user id.
    pub id: &'a str,
    /// Nickname.
    pub nickname: &'a str,
}

/// The picker: choose the simulated person; for `snsapi_userinfo`, allow/deny/snapshot.
/// The form GETs the same authorize URL with `sim_user` and `sim_answer` added.
pub fn picker_page(
    action: &str,
    params: &[(String, String)],
    users: &[PickerUser<'_>],
    userinfo_scope: bool,
) -> String {
    let mut body = String::from("<h2>模拟微信用户 Pick a simulated WeChat user</h2>");
    body.push_str(&format!(
        "<form method=\"get\" action=\"{}\">",
        escape(action)
    ));
    for (k, v) in params {
        body.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(k),
            escape(v)
        ));
    }
    if users.is_empty() {
        body.push_str("<p>No simulated users yet: create some with POST /__sim/users.</p>");
    }
    for (i, u) in users.iter().enumerate() {
        body.push_str(&format!(
            "<p><label><input type=\"radio\" name=\"sim_user\" value=\"{}\"{}> {} ({})</label></p>",
            escape(u.id),
            if i == 0 { " checked" } else { "" },
            escape(u.nickname),
            escape(u.id)
        ));
    }
    if userinfo_scope {
        body.push_str(
            "<p>该网页申请获取你的昵称、头像 — this page asks for your nickname and avatar.</p>\
             <button type=\"submit\" name=\"sim_answer\" value=\"allow\">允许 Allow</button> \
             <button type=\"submit\" name=\"sim_answer\" value=\"deny\">拒绝 Deny</button> \
             <button type=\"submit\" name=\"sim_answer\" value=\"snapshot\">快照页 Snapshot</button>",
        );
    } else {
        body.push_str(
            "<button type=\"submit\" name=\"sim_answer\" value=\"allow\">继续 Continue</button>",
        );
    }
    body.push_str("</form>");
    page("微信网页授权", &body)
}

/// Where a hand-driven authorization lands when no website is listening: shows what WeChat
/// sent back (the code and state, or only the state after a refusal) and how to redeem it.
pub fn landing_page(query: &[(String, String)]) -> Response {
    let rows: String = query
        .iter()
        .map(|(k, v)| {
            format!(
                "<tr><th>{}</th><td><code>{}</code></td></tr>",
                escape(k),
                escape(v)
            )
        })
        .collect();
    let has_code = query.iter().any(|(k, _)| k == "code");
    let outcome = if has_code {
        "已授权 The person authorized: the website would now exchange the code at \
         <code>/sns/oauth2/access_token</code> within 300 s, once."
    } else {
        "未授权 The person refused: WeChat sends back only the state, no code."
    };
    let body = format!(
        "<h2>回调 Redirect received</h2><p>{outcome}</p><table id=\"query\">{rows}</table>"
    );
    (StatusCode::OK, Html(page("wechat-sim callback", &body))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn escaped_text_never_contains_markup(s in any::<String>()) {
            let e = escape(&s);
            prop_assert!(!e.contains('<') && !e.contains('>') && !e.contains('"') && !e.contains('\''));
        }
    }

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
