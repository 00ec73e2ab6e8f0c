//! Bodies of the cargo-fuzz targets in `fuzz/`, as plain functions so the normal test suite
//! runs the same checks over the seed corpus. Not part of the supported API.
//!
//! Each body checks what the parser accepted against a plain reference reading of the same
//! bytes, not only that it did not panic.

use std::collections::HashMap;

use axum::http::HeaderValue;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::credentials;
use crate::oidc::{
    AuthorizeParams, TokenParams, is_pkce_value, prompting, registered_redirect_uri,
};
use crate::params::{ParamProblem, Params, decode_form_value};

/// The redirect URIs registered for the client of the `authorize_query` target.
pub const REGISTERED_REDIRECT_URIS: [&str; 3] = [
    "https://rp.example/cb",
    "https://rp.example/cb?tenant=1",
    "http://127.0.0.1:9/callback",
];

/// What a parameter is in `raw`, read the plain way: every `&`-separated piece, split at its
/// first `=`, the name and value form-decoded; a name read twice is repeated.
fn reference(raw: &[u8]) -> HashMap<String, Vec<Result<String, ParamProblem>>> {
    let mut seen: HashMap<String, Vec<Result<String, ParamProblem>>> = HashMap::new();
    for piece in raw.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match piece.iter().position(|&b| b == b'=') {
            Some(at) => (&piece[..at], &piece[at + 1..]),
            None => (piece, &b""[..]),
        };
        if let Ok(name) = decode_form_value(name) {
            seen.entry(name).or_default().push(decode_form_value(value));
        }
    }
    seen
}

/// What [`Params::get`] must answer for `name`, by the reference reading.
fn expected(
    seen: &HashMap<String, Vec<Result<String, ParamProblem>>>,
    name: &str,
) -> Result<Option<String>, ParamProblem> {
    match seen.get(name).map(Vec::as_slice) {
        None | Some([]) => Ok(None),
        Some([one]) => one.clone().map(Some),
        Some(_) => Err(ParamProblem::Repeated),
    }
}

/// Form-encodes `pairs` the way a client would.
fn encode(pairs: &[(&str, &str)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        out.append_pair(name, value);
    }
    out.finish()
}

/// An authorization request's query (or form body): each field the parameters hold is the
/// request's one well-formed value of it; a repeated or non-UTF-8 `client_id`/`redirect_uri`
/// is a page-level problem, any other a redirect-level one; an accepted `redirect_uri` is a
/// registered one byte for byte; and what was read, sent again, reads the same.
pub fn authorize_query(data: &[u8]) {
    let seen = reference(data);
    let params = Params::parse(data);
    let read = AuthorizeParams::from_params(&params);
    let fields: [(&str, &Option<String>); 11] = [
        ("client_id", &read.client_id),
        ("redirect_uri", &read.redirect_uri),
        ("response_type", &read.response_type),
        ("scope", &read.scope),
        ("state", &read.state),
        ("nonce", &read.nonce),
        ("code_challenge", &read.code_challenge),
        ("code_challenge_method", &read.code_challenge_method),
        ("prompt", &read.prompt),
        ("max_age", &read.max_age),
        ("response_mode", &read.response_mode),
    ];
    let mut first_client_problem = None;
    let mut first_problem = None;
    for (i, (name, value)) in fields.iter().enumerate() {
        let want = expected(&seen, name);
        assert_eq!(
            params.get(name).map(|v| v.map(str::to_owned)),
            want,
            "{name}"
        );
        match want {
            Ok(v) => assert_eq!(**value, v, "{name}"),
            Err(problem) => {
                assert_eq!(**value, None, "{name} is unusable, so it is not read");
                let first = if i < 2 {
                    &mut first_client_problem
                } else {
                    &mut first_problem
                };
                first.get_or_insert((*name, problem));
            }
        }
    }
    fn named(m: &Option<crate::params::Malformed>) -> Option<(&str, ParamProblem)> {
        m.as_ref().map(|m| (m.name.as_str(), m.problem))
    }
    assert_eq!(named(&read.client_malformed), first_client_problem);
    assert_eq!(named(&read.malformed), first_problem);
    let unsupported = ["request", "request_uri", "registration"]
        .into_iter()
        .find(|n| seen.contains_key(*n));
    assert_eq!(read.unsupported, unsupported);

    let registered: Vec<String> = REGISTERED_REDIRECT_URIS.map(str::to_owned).to_vec();
    match registered_redirect_uri(read.redirect_uri.as_deref(), &registered) {
        Some(accepted) => {
            assert_eq!(
                Some(accepted.as_bytes()),
                read.redirect_uri.as_deref().map(str::as_bytes)
            );
            assert!(REGISTERED_REDIRECT_URIS.contains(&accepted.as_str()));
        }
        None => assert!(
            read.redirect_uri
                .as_deref()
                .is_none_or(|uri| !REGISTERED_REDIRECT_URIS.contains(&uri))
        ),
    }
    if let Some(challenge) = read.code_challenge.as_deref()
        && is_pkce_value(challenge)
    {
        // Stored and compared as is: only RFC 3986 unreserved characters, which no URL or
        // form decoding changes (a form encoder may still escape `~`, which decodes back).
        assert!((43..=128).contains(&challenge.len()));
        assert!(
            challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        );
        assert_eq!(
            decode_form_value(challenge.as_bytes()).as_deref(),
            Ok(challenge)
        );
    }
    if let Ok(prompting) = prompting(&read) {
        if prompting.none {
            let prompt = read.prompt.as_deref().unwrap_or_default();
            assert!(
                prompt
                    .split(' ')
                    .filter(|v| !v.is_empty())
                    .all(|v| v == "none")
            );
        }
        if let Some(max_age) = read.max_age.as_deref() {
            assert!(max_age.parse::<u64>().is_ok());
        }
    }

    // Sent again, cleanly encoded, the well-formed fields read the same.
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .filter_map(|(name, value)| value.as_deref().map(|v| (*name, v)))
        .collect();
    let again = AuthorizeParams::from_params(&Params::parse(encode(&pairs).as_bytes()));
    assert_eq!(again.client_id, read.client_id);
    assert_eq!(again.redirect_uri, read.redirect_uri);
    assert_eq!(again.state, read.state);
    assert_eq!(again.nonce, read.nonce);
    assert_eq!(again.scope, read.scope);
    assert_eq!(again.code_challenge, read.code_challenge);
    assert!(again.client_malformed.is_none() && again.malformed.is_none());
}

/// A token request's form body: accepted only when none of its parameters is repeated or
/// non-UTF-8, and then each field is the body's one value of it; sent again, it reads the same.
pub fn token_form(data: &[u8]) {
    let seen = reference(data);
    let names = [
        "grant_type",
        "code",
        "redirect_uri",
        "code_verifier",
        "client_id",
        "client_secret",
    ];
    let wanted: Vec<_> = names.iter().map(|n| expected(&seen, n)).collect();
    match TokenParams::from_params(&Params::parse(data)) {
        Ok(read) => {
            let fields = [
                &read.grant_type,
                &read.code,
                &read.redirect_uri,
                &read.code_verifier,
                &read.client_id,
                &read.client_secret,
            ];
            for ((name, want), got) in names.iter().zip(&wanted).zip(fields) {
                assert_eq!(want.as_ref(), Ok(got), "{name}");
            }
            let pairs: Vec<(&str, &str)> = names
                .iter()
                .zip(fields)
                .filter_map(|(n, v)| v.as_deref().map(|v| (*n, v)))
                .collect();
            let again = TokenParams::from_params(&Params::parse(encode(&pairs).as_bytes()))
                .expect("a cleanly encoded request is accepted");
            assert_eq!(again.code, read.code);
            assert_eq!(again.redirect_uri, read.redirect_uri);
            assert_eq!(again.code_verifier, read.code_verifier);
            assert_eq!(again.client_secret, read.client_secret);
        }
        Err(_) => assert!(
            wanted.iter().any(Result::is_err),
            "refused although every parameter was well-formed"
        ),
    }
}

/// Checks one `Authorization` value with the Basic and Bearer parsers.
fn one_authorization_value(value: &[u8]) {
    // The byte rule must be the one `HeaderValue::to_str` applies (the handlers used it).
    if let Ok(header) = HeaderValue::from_bytes(value)
        && header.to_str().is_err()
    {
        assert!(credentials::scheme_credentials(value, "Basic").is_err());
        assert!(credentials::scheme_credentials(value, "Bearer").is_err());
    }
    let basic = credentials::basic(value);
    let bearer = credentials::bearer(value);
    assert!(
        !(basic.is_ok() && bearer.is_some()),
        "one value, two schemes"
    );
    if let Ok(creds) = &basic {
        assert!(value.len() >= 6 && value[..6].eq_ignore_ascii_case(b"basic "));
        // What was accepted, encoded as RFC 6749 §2.3.1 says, is accepted as the same.
        let part = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let again = format!(
            "Basic {}",
            STANDARD.encode(format!(
                "{}:{}",
                part(&creds.client_id),
                part(&creds.client_secret)
            ))
        );
        let back = credentials::basic(again.as_bytes()).expect("a clean Basic value is accepted");
        assert_eq!(back.client_id, creds.client_id);
        assert_eq!(back.client_secret, creds.client_secret);
        // No part of the value was dropped: the raw parts decode to what was accepted.
        let decoded = STANDARD
            .decode(std::str::from_utf8(&value[6..]).unwrap().trim())
            .unwrap();
        let decoded = String::from_utf8(decoded).unwrap();
        let (id, secret) = decoded.split_once(':').unwrap();
        assert_eq!(
            decode_form_value(id.as_bytes()).as_ref(),
            Ok(&creds.client_id)
        );
        assert_eq!(
            decode_form_value(secret.as_bytes()).as_ref(),
            Ok(&creds.client_secret)
        );
    }
    if let Some(token) = bearer {
        assert!(!token.is_empty());
        assert_eq!(token, token.trim());
        assert!(value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer "));
        assert_eq!(std::str::from_utf8(&value[7..]).unwrap().trim(), token);
    }
}

/// The `Authorization` header: the bytes as a whole value, as the credentials of a Basic
/// value (base64 of the bytes) and as a Bearer token.
pub fn authorization_header(data: &[u8]) {
    one_authorization_value(data);
    let mut basic = b"Basic ".to_vec();
    basic.extend_from_slice(STANDARD.encode(data).as_bytes());
    one_authorization_value(&basic);
    let mut bearer = b"Bearer ".to_vec();
    bearer.extend_from_slice(data);
    one_authorization_value(&bearer);
}

/// Inputs every target starts from (also the seed corpora in `fuzz/seeds`).
pub fn seed_corpus() -> Vec<Vec<u8>> {
    [
        &b"response_type=code&client_id=c1&redirect_uri=https%3A%2F%2Frp.example%2Fcb&scope=openid+profile&state=s&nonce=n&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"[..],
        b"client_id=c1&client_id=c1&redirect_uri=https://rp.example/cb?tenant=1",
        b"state=%FF%FE&prompt=none+login&max_age=0&request_uri=x",
        b"grant_type=authorization_code&code=abc&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk&client_id=c1&client_secret=s3%26cr%2Bt",
        b"Basic YzE6czNjcmV0",
        b"Bearer abc.def-ghi",
        b"c1%3Ax:s%FF&y",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_targets_hold_on_their_seeds() {
        for seed in seed_corpus() {
            authorize_query(&seed);
            token_form(&seed);
            authorization_header(&seed);
        }
    }

    #[test]
    fn the_targets_hold_on_the_committed_corpora() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (target, body) in [
            ("authorize_query", authorize_query as fn(&[u8])),
            ("token_form", token_form),
            ("authorization_header", authorization_header),
        ] {
            let entries = std::fs::read_dir(dir.join(target)).expect("the committed corpus");
            for entry in entries {
                body(&std::fs::read(entry.unwrap().path()).unwrap());
            }
        }
    }

    #[test]
    fn a_near_miss_redirect_uri_is_not_accepted() {
        let registered: Vec<String> = REGISTERED_REDIRECT_URIS.map(str::to_owned).to_vec();
        for near in [
            "https://rp.example/cb/",
            "https://RP.example/cb",
            "https://rp.example/cb?tenant=2",
            "https://rp.example/c%62",
            "https://rp.example/cb#x",
            "https://rp.example/cb?tenant=1&x=1",
        ] {
            assert_eq!(
                registered_redirect_uri(Some(near), &registered),
                None,
                "{near}"
            );
        }
        assert_eq!(
            registered_redirect_uri(Some("https://rp.example/cb"), &registered).as_deref(),
            Some("https://rp.example/cb")
        );
        assert_eq!(registered_redirect_uri(None, &registered), None);
    }
}
