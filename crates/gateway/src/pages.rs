//! Server-rendered pages (zh-CN first, English below) and redirects.
//!
//! Pages are small and few, so they are `format!` with one escape function rather than a
//! template engine. Every dynamic value goes through [`escape`]. Every page and redirect is
//! sent with `Cache-Control: no-store` and `Referrer-Policy: no-referrer`: redirects and the
//! pages behind them can carry codes and states, which must not leak through `Referer` or a
//! shared cache. Framing is refused (clickjacking of the "I've followed" button).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// HTML-escapes text for element content and quoted attributes.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A value as a JSON string literal safe inside `<script>`: `<`, `>` and `&` are `\u`-escaped
/// so no value can close the script element or open a comment, and U+2028/U+2029 so old
/// parsers do not end the line.
pub(crate) fn script_string(s: &str) -> String {
    serde_json::Value::from(s)
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// Query-component escaping: everything but RFC 3986 unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Appends `params` to a registered redirect URI without re-serialising what is already
/// there (it must stay byte-identical to the registered one), with `&` if it has a query.
pub(crate) fn append_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = uri.to_owned();
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        out.push_str(k);
        out.push('=');
        out.extend(utf8_percent_encode(v, COMPONENT));
        sep = '&';
    }
    out
}

fn secure_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// A `302 Found` to `location` (which may carry a code or state).
pub(crate) fn redirect_to(location: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    match HeaderValue::from_str(location) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
        }
        Err(_) => {
            return Page::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ("系统错误", "Something went wrong"),
                ("跳转地址无效。", "The redirect address is invalid."),
                ("请重新登录。", "Please start the login again."),
            )
            .into_response();
        }
    }
    secure_headers(&mut response);
    response
}

/// A bilingual page.
pub(crate) struct Page {
    status: StatusCode,
    title: (&'static str, &'static str),
    body: String,
}

type Both = (&'static str, &'static str);

impl Page {
    /// An error page: what went wrong and what to do, in both languages.
    pub(crate) fn error(status: StatusCode, title: Both, what: Both, todo: Both) -> Page {
        Page {
            status,
            title,
            body: format!(
                "<section lang=\"zh-CN\"><h1>{}</h1><p class=\"what\">{}</p><p class=\"todo\">{}</p></section>\
                 <section lang=\"en\"><h2>{}</h2><p class=\"what\">{}</p><p class=\"todo\">{}</p></section>",
                title.0, what.0, todo.0, title.1, what.1, todo.1
            ),
        }
    }

    /// A page with prepared (already escaped) HTML content.
    pub(crate) fn raw(status: StatusCode, title: Both, body: String) -> Page {
        Page {
            status,
            title,
            body,
        }
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let html = format!(
            "<!DOCTYPE html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
             <meta name=\"referrer\" content=\"no-referrer\">\
             <title>{} · {}</title><style>body{{font-family:sans-serif;max-width:32rem;\
             margin:2rem auto;padding:0 1rem;line-height:1.5}}section[lang=en]{{color:#555;\
             border-top:1px solid #ddd;margin-top:1.5rem}}.button{{display:inline-block;\
             padding:.6rem 1.2rem;background:#07c160;color:#fff;border:0;border-radius:4px;\
             text-decoration:none;font-size:1rem}}</style></head><body>{}</body></html>",
            self.title.0, self.title.1, self.body
        );
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response();
        secure_headers(&mut response);
        response
    }
}

/// The page shown when the user refused WeChat's authorization: explains, and offers the
/// way back to the website with `error=access_denied` (RFC 6749 §4.1.2.1).
pub(crate) fn denied_page(back_to_client: &str) -> Page {
    let href = escape(back_to_client);
    Page::raw(
        StatusCode::OK,
        ("你已拒绝授权", "You declined"),
        format!(
            "<section lang=\"zh-CN\"><h1>你已拒绝授权</h1><p class=\"what\">你没有同意公众号获取你的微信头像和昵称，所以没有登录。</p>\
             <p class=\"todo\">如需登录，请回到网站重新点击登录并选择“允许”。</p>\
             <p><a class=\"button\" id=\"back\" href=\"{href}\">返回网站</a></p></section>\
             <section lang=\"en\"><h2>You declined</h2><p class=\"what\">You did not allow the account to read your WeChat nickname and avatar, so you are not logged in.</p>\
             <p class=\"todo\">To log in, go back to the website, start again and choose “Allow”.</p>\
             <p><a href=\"{href}\">Back to the website</a></p></section>"
        ),
    )
}

/// What the follow page shows about the account.
pub(crate) struct FollowPage<'a> {
    pub account_name: &'a str,
    /// The account's QR code image (https), as downloaded from WeChat's console.
    pub qr_url: Option<&'a str>,
    /// A link to the account's profile (https).
    pub follow_link: Option<&'a str>,
    pub status_url: &'a str,
    pub continue_url: &'a str,
    pub notice: FollowNotice,
}

/// What the follow page says after "I've followed".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FollowNotice {
    /// Nothing (the first visit).
    None,
    /// WeChat does not see the follow yet.
    NotYet,
    /// Checked too often: the next check in this many seconds.
    Wait(u64),
    /// This login has used all its checks; only the follow itself (its push) can finish it.
    NoMoreChecks,
}

/// The "follow to continue" page: the account's name and QR code image (or, without one, how
/// to find the account by searching its name), a script that polls `status_url` and goes on
/// by itself when the subscribe push has arrived, and an "I've followed" button that posts to
/// `continue_url` (which re-checks with WeChat). When the poll answers that the login expired
/// or belongs to another browser, the script stops and shows the poll's own message (what to
/// do, in both languages); after five failures in a row (network or wxhub), it stops and says
/// to reload.
pub(crate) fn follow_page(view: &FollowPage<'_>, status: StatusCode) -> Page {
    let name = escape(view.account_name);
    let notice = match view.notice {
        FollowNotice::None => String::new(),
        FollowNotice::NotYet => "<p class=\"notice\" id=\"not-yet\">还没有检测到关注，请关注后再试。 / We could not see your follow yet — follow the account, then try again.</p>".to_owned(),
        FollowNotice::Wait(seconds) => format!(
            "<p class=\"notice\" id=\"too-soon\">检查太频繁，请在 {seconds} 秒后再点“我已关注”；关注后本页也会自动继续。 / Checked too often — tap “I've followed” again in {seconds} s; once you follow, this page also continues by itself.</p>"
        ),
        FollowNotice::NoMoreChecks => "<p class=\"notice\" id=\"no-more\">这个登录已检查太多次。关注公众号后本页会自动继续；如果没有继续，请回到网站重新登录。 / This login was checked too many times. Once you follow, this page continues by itself; if it does not, go back to the website and start again.</p>".to_owned(),
    };
    let (how_zh, how_en, figure) = match view.qr_url {
        Some(qr) => (
            "请长按或扫描下面的二维码关注公众号",
            "Long-press or scan the QR code below to follow the account",
            format!(
                "<figure><img id=\"qr\" src=\"{}\" width=\"200\" height=\"200\" alt=\"{name} 二维码 / QR code\">\
                 <figcaption>{name}</figcaption></figure>",
                escape(qr)
            ),
        ),
        None => (
            "请在微信顶部搜索框中搜索公众号名称“",
            "In WeChat, tap the search box at the top, search for the account's name “",
            String::new(),
        ),
    };
    let (how_zh, how_en) = if view.qr_url.is_some() {
        (how_zh.to_owned(), how_en.to_owned())
    } else {
        (
            format!("{how_zh}{name}”，打开后点击“关注公众号”"),
            format!("{how_en}{name}”, open it and tap “Follow”"),
        )
    };
    let link = view
        .follow_link
        .map(|l| {
            format!(
                "<p><a id=\"profile\" href=\"{}\">打开公众号主页 / Open the account's profile</a></p>",
                escape(l)
            )
        })
        .unwrap_or_default();
    Page::raw(
        status,
        ("关注公众号以继续", "Follow to continue"),
        format!(
            "<section lang=\"zh-CN\"><h1>关注“{name}”以继续登录</h1>\
             <p class=\"what\">这个网站要求先关注公众号“{name}”才能登录。</p>\
             <p class=\"todo\" id=\"how\">{how_zh}；关注后本页会自动继续，也可以关注后点击“我已关注”。</p></section>\
             {figure}{link}{notice}\
             <form method=\"post\" action=\"{continue_attr}\"><button class=\"button\" type=\"submit\">我已关注 / I've followed</button></form>\
             <section lang=\"en\"><h2>Follow “{name}” to continue</h2>\
             <p class=\"what\">This website asks you to follow the Official Account “{name}” before logging in.</p>\
             <p class=\"todo\">{how_en}; this page continues by itself once you follow, or tap “I've followed”.</p></section>\
             <p class=\"notice\" id=\"status-msg\" role=\"status\" hidden></p>\
             <script>(function(){{var s={status_js},m=document.getElementById(\"status-msg\"),fails=0;\
             function show(t){{m.textContent=t;m.hidden=false}}\
             function failed(){{fails++;if(fails>=5){{show(\"无法连接登录服务，请检查网络后刷新本页。 / The login service cannot be reached; check your connection and reload this page.\")}}else{{setTimeout(poll,5000*fails)}}}}\
             function poll(){{fetch(s,{{cache:\"no-store\",credentials:\"same-origin\"}}).then(function(r){{return r.json()}}).then(function(j){{\
             if(j.state===\"followed\"){{document.forms[0].submit()}}else if(j.state===\"waiting\"){{fails=0;setTimeout(poll,2000)}}\
             else if(j.state===\"error\"){{failed()}}else{{show(j.message[\"zh-CN\"]+\" / \"+j.message.en)}}}},failed)}}\
             setTimeout(poll,2000);}})();</script>",
            continue_attr = escape(view.continue_url),
            status_js = script_string(view.status_url),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn append_query_keeps_the_registered_uri_intact() {
        assert_eq!(
            append_query(
                "https://a.example/cb?x=1",
                &[("code", "a b"), ("state", "s&t")]
            ),
            "https://a.example/cb?x=1&code=a%20b&state=s%26t"
        );
        assert_eq!(
            append_query("https://a.example/cb", &[("code", "c")]),
            "https://a.example/cb?code=c"
        );
    }

    #[test]
    fn script_string_cannot_close_the_script_element() {
        let out = script_string("</script><script>alert(1)</script>&\u{2028}\"");
        assert!(!out.contains('<') && !out.contains('>') && !out.contains('&'));
        assert_eq!(
            serde_json::from_str::<String>(&out).unwrap(),
            "</script><script>alert(1)</script>&\u{2028}\""
        );
    }
}
