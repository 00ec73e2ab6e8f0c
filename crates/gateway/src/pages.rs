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
             text-decoration:none;font-size:1rem}}form{{margin:.75rem 0}}figure{{margin:1rem 0}}\
             button:not(.button){{padding:.4rem .9rem;font-size:.95rem}}:root{{color-scheme:light dark}}\
             @media (prefers-color-scheme:dark){{body{{background:#17181a;color:#e4e4e4}}\
             section[lang=en]{{color:#a8a8a8;border-top-color:#3a3a3a}}a{{color:#7cc4ff}}\
             figure img{{background:#fff;padding:8px;border-radius:4px}}}}\
             </style></head><body>{}</body></html>",
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
    /// This login's own code (WeChat's image of a temporary code), preferred to `qr_url`.
    pub login_qr: Option<&'a str>,
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
    let (how_zh, how_en, figure) = match (view.login_qr, view.qr_url) {
        (Some(qr), _) => (
            "请长按识别下面的二维码关注公众号（这个二维码只用于本次登录）",
            "Long-press the QR code below to follow the account (the code is for this login only)",
            format!(
                "<figure><img id=\"login-qr\" src=\"{}\" width=\"200\" height=\"200\" alt=\"{name} 二维码 / QR code\">\
                 <figcaption>{name}</figcaption></figure>",
                escape(qr)
            ),
        ),
        (None, Some(qr)) => (
            "请长按或扫描下面的二维码关注公众号",
            "Long-press or scan the QR code below to follow the account",
            format!(
                "<figure><img id=\"qr\" src=\"{}\" width=\"200\" height=\"200\" alt=\"{name} 二维码 / QR code\">\
                 <figcaption>{name}</figcaption></figure>",
                escape(qr)
            ),
        ),
        (None, None) => (
            "请在微信顶部搜索框中搜索公众号名称“",
            "In WeChat, tap the search box at the top, search for the account's name “",
            String::new(),
        ),
    };
    let (how_zh, how_en) = if view.qr_url.is_some() || view.login_qr.is_some() {
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

/// What the scan page shows.
pub(crate) struct ScanPage<'a> {
    pub account_name: &'a str,
    pub site_name: &'a str,
    /// The code's image, when there is a live code.
    pub qr_image: Option<&'a str>,
    /// What the code encodes (for the image's description).
    pub qr_url: Option<&'a str>,
    pub qr_expires_in: i64,
    pub state: crate::scan::ScanState,
    /// Too many codes: a new one in this many seconds.
    pub limited_secs: Option<u64>,
    pub page_url: &'a str,
}

/// The message for a scan state, in both languages (the page, its poll and its events).
pub(crate) fn scan_message(state: crate::scan::ScanState) -> (&'static str, &'static str) {
    use crate::scan::ScanState;
    match state {
        ScanState::Waiting => (
            "请用微信扫描二维码；如果还没关注公众号，扫码后关注即可登录。",
            "Scan the code with WeChat; if you do not follow the account yet, follow it after scanning.",
        ),
        ScanState::CodeExpired => (
            "二维码已过期，请点击“刷新二维码”。",
            "The code has expired: tap “Refresh code”.",
        ),
        ScanState::Confirm => (
            "已扫码。请在微信中点击公众号发来的确认链接。",
            "Scanned. In WeChat, tap the confirmation link the account sent you.",
        ),
        ScanState::Ready => ("已扫码，正在登录……", "Scanned; signing you in…"),
        ScanState::Over => (
            "这个登录已过期或已完成，请回到网站重新点击登录。",
            "This login has expired or was completed; go back to the website and start again.",
        ),
    }
}

/// The scan page: the code (or, without a live one, a refresh button), a status line, a
/// script that listens to `…/events` (Server-Sent Events) and falls back to polling
/// `…/status`, and goes on by itself when the scan arrives; without JavaScript, "I've
/// scanned" posts `…/continue`.
pub(crate) fn scan_page(view: &ScanPage<'_>, status: StatusCode) -> Page {
    let account = escape(view.account_name);
    let site = escape(view.site_name);
    let base = escape(view.page_url);
    let (zh, en) = scan_message(view.state);
    let figure = match (view.qr_image, view.limited_secs) {
        (Some(image), _) => format!(
            "<figure><img id=\"scan-qr\" src=\"{}\" data-url=\"{}\" data-expires-in=\"{}\" width=\"240\" height=\"240\" \
             alt=\"{account} 登录二维码 / sign-in QR code\"><figcaption>{account}</figcaption></figure>",
            escape(image),
            escape(view.qr_url.unwrap_or_default()),
            view.qr_expires_in,
        ),
        (None, Some(secs)) => format!(
            "<p class=\"notice\" id=\"too-many\">二维码刷新太频繁，请在 {secs} 秒后再刷新。 / Too many codes — refresh again in {secs} s.</p>"
        ),
        (None, None) => String::new(),
    };
    Page::raw(
        status,
        ("微信扫码登录", "Sign in with WeChat"),
        format!(
            "<section lang=\"zh-CN\"><h1>用微信扫码登录“{site}”</h1>\
             <p class=\"what\">请用手机微信扫描二维码，并关注公众号“{account}”，即可在这台电脑上登录。</p></section>\
             {figure}<p class=\"notice\" id=\"scan-status\" role=\"status\">{zh} / {en}</p>\
             <form method=\"post\" action=\"{base}/continue\"><button class=\"button\" type=\"submit\" id=\"scanned\">我已扫码 / I've scanned</button></form>\
             <form method=\"post\" action=\"{base}/refresh\"><button type=\"submit\" id=\"refresh\">刷新二维码 / Refresh code</button></form>\
             <section lang=\"en\"><h2>Sign in to {site} with WeChat</h2>\
             <p class=\"what\">Scan the code with WeChat on your phone and follow the Official Account “{account}” to sign in on this computer.</p></section>\
             <script>(function(){{var b={base_js},m=document.getElementById(\"scan-status\"),fails=0,polling=false;\
             function show(j){{m.textContent=j.message[\"zh-CN\"]+\" / \"+j.message.en}}\
             function on(j){{show(j);if(j.state===\"ready\"){{document.forms[0].submit();return true}}return j.state===\"expired\"}}\
             function poll(){{fetch(b+\"/status\",{{cache:\"no-store\",credentials:\"same-origin\"}}).then(function(r){{return r.json()}}).then(function(j){{fails=0;if(!on(j)){{setTimeout(poll,2000)}}}},\
             function(){{fails++;if(fails>=5){{m.textContent=\"无法连接登录服务，请检查网络后刷新本页。 / The login service cannot be reached; check your connection and reload this page.\"}}else{{setTimeout(poll,2000*fails)}}}})}}\
             function fallback(){{if(!polling){{polling=true;poll()}}}}\
             if(window.EventSource){{var es=new EventSource(b+\"/events\");es.onmessage=function(e){{if(on(JSON.parse(e.data))){{es.close()}}}};es.onerror=function(){{es.close();fallback()}}}}else{{fallback()}}}})();</script>",
            base_js = script_string(view.page_url),
        ),
    )
}

/// The page the confirmation link ends on, in the scanner's WeChat.
pub(crate) fn scan_confirmed_page(site_name: &str) -> Page {
    let site = escape(site_name);
    Page::raw(
        StatusCode::OK,
        ("已确认登录", "Sign-in confirmed"),
        format!(
            "<section lang=\"zh-CN\"><h1>已确认</h1><p class=\"what\" id=\"confirmed\">电脑上的“{site}”正在登录，可以关闭本页。</p></section>\
             <section lang=\"en\"><h2>Confirmed</h2><p class=\"what\">{site} is signing you in on your computer; you can close this page.</p></section>"
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
