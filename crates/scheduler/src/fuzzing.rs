//! Body of the cargo-fuzz target in `fuzz/`, as a plain function so the normal test suite runs
//! the same checks over the seed corpus. Not part of the supported API.

use crate::proxy::{check_path, query_has_token, upstream_url};

/// API bases the target joins accepted paths to: WeChat's own, and one with a path of its own
/// (a relay or the simulator under a prefix).
pub const API_BASES: [&str; 2] = ["https://api.weixin.qq.com", "http://127.0.0.1:8080/wechat/"];

/// The token the target adds to accepted calls.
const TOKEN: &str = "ACCESS_TOKEN_OF_THE_ACCOUNT";

/// The proxy's path check and URL building on `path?query` (the path as the router hands it
/// over, already percent-decoded). An accepted path stays under `cgi-bin/` of the configured
/// base, on its host, unchanged by URL parsing (no `..`, no encoded separator, nothing
/// normalised away); an accepted query ends with exactly one `access_token`, the account's.
pub fn proxy_path(data: &[u8]) {
    let (path, query) = match data.iter().position(|&b| b == b'?') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    // The router hands over `String`s: a path that is not UTF-8 never reaches the check.
    let (Ok(path), Ok(query)) = (std::str::from_utf8(path), std::str::from_utf8(query)) else {
        return;
    };
    if check_path(path).is_err() {
        return;
    }
    let rest = path
        .strip_prefix("cgi-bin/")
        .expect("an accepted path is under cgi-bin/");
    let segments: Vec<&str> = rest.split('/').collect();
    assert!(!segments.is_empty());
    for segment in &segments {
        assert!(!segment.is_empty() && *segment != "." && *segment != "..");
        assert!(
            segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        );
    }
    assert!(!matches!(segments[0], "token" | "stable_token"));
    assert!(!path.contains(['%', '\\', ':', '?', '#', '@', ' ']));

    for base in API_BASES {
        let base = url::Url::parse(base).unwrap();
        let url = upstream_url(&base, path, query);
        assert_eq!(url.scheme(), base.scheme());
        assert_eq!(url.host_str(), base.host_str());
        assert_eq!(url.port_or_known_default(), base.port_or_known_default());
        assert!(url.username().is_empty() && url.password().is_none());
        assert_eq!(url.fragment(), None);
        let prefix = format!("{}/cgi-bin/", base.path().trim_end_matches('/'));
        assert!(
            url.path().starts_with(&prefix),
            "{} escapes {prefix}",
            url.path()
        );
        // Nothing was normalised or escaped: WeChat sees the very path that was checked.
        assert_eq!(
            url.path(),
            format!("{}/{path}", base.path().trim_end_matches('/'))
        );

        // As the handler does: the query is checked on the URL it will be sent with.
        if !query_has_token(url.query().unwrap_or("")) {
            let mut url = url;
            url.query_pairs_mut().append_pair("access_token", TOKEN);
            let tokens: Vec<String> = url
                .query_pairs()
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("access_token"))
                .map(|(_, v)| v.into_owned())
                .collect();
            assert_eq!(tokens, [TOKEN], "one access_token, the account's");
        }
    }
}

/// Inputs the target starts from (also its seed corpus in `fuzz/seeds`).
pub fn seed_corpus() -> Vec<Vec<u8>> {
    [
        &b"cgi-bin/user/info?openid=o1&lang=zh_CN"[..],
        b"cgi-bin/message/custom/send",
        b"cgi-bin/media/get.jpg?media_id=m-1",
        b"cgi-bin/../sns/userinfo",
        b"cgi-bin/token?grant_type=client_credential",
        b"cgi-bin/user/info?ACCESS_TOKEN=x&access%5Ftoken=y",
        b"cgi-bin/a?x=%26access_token%3D1&y=#frag",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_holds_on_its_seeds_and_committed_corpus() {
        for seed in seed_corpus() {
            proxy_path(&seed);
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/proxy_path");
        for entry in std::fs::read_dir(dir).expect("the committed corpus") {
            proxy_path(&std::fs::read(entry.unwrap().path()).unwrap());
        }
    }

    #[test]
    fn accepted_paths_join_under_the_base_unchanged() {
        let base = url::Url::parse(API_BASES[1]).unwrap();
        let url = upstream_url(&base, "cgi-bin/user/info", "openid=o1");
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/wechat/cgi-bin/user/info?openid=o1"
        );
        let url = upstream_url(&base, "cgi-bin/getcallbackip", "");
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/wechat/cgi-bin/getcallbackip"
        );
    }
}
