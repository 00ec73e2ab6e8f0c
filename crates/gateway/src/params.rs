//! Request parameters read the way OAuth wants them read: form-urlencoded (a query string or an
//! `application/x-www-form-urlencoded` body), each parameter at most once (RFC 6749 §3.1:
//! "parameters MUST NOT be included more than once"), and every value valid UTF-8.
//!
//! The framework's extractors decode lossily (a `state` that is not UTF-8 would come back
//! changed) and answer a repeated field with a plain-text rejection; here both are recorded, so
//! each endpoint answers them in its own documented shape (a page before the redirect URI is
//! verified, an `error=invalid_request` redirect after it, OAuth JSON at the token endpoint).

use std::borrow::Cow;
use std::collections::HashMap;

use percent_encoding::percent_decode;

/// What is wrong with one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamProblem {
    /// It appears more than once.
    Repeated,
    /// Its value (or name) is not valid UTF-8 once percent-decoded.
    NotUtf8,
}

impl ParamProblem {
    /// A short English description for `error_description` (RFC 6749 §5.2: ASCII only).
    pub fn description(self) -> &'static str {
        match self {
            ParamProblem::Repeated => "a request parameter is repeated (RFC 6749 section 3.1)",
            ParamProblem::NotUtf8 => "a request parameter is not valid UTF-8",
        }
    }
}

/// A parameter that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub name: String,
    pub problem: ParamProblem,
}

/// Decoded parameters.
#[derive(Debug, Default, Clone)]
pub struct Params {
    values: HashMap<String, Result<String, ParamProblem>>,
}

/// `+` is a space in form encoding; then percent-decoding, strictly UTF-8.
pub(crate) fn decode_form_value(raw: &[u8]) -> Result<String, ParamProblem> {
    let spaced: Cow<'_, [u8]> = if raw.contains(&b'+') {
        Cow::Owned(
            raw.iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect(),
        )
    } else {
        Cow::Borrowed(raw)
    };
    let bytes: Vec<u8> = percent_decode(&spaced).collect();
    String::from_utf8(bytes).map_err(|_| ParamProblem::NotUtf8)
}

impl Params {
    /// Parses `a=1&b=2` (a query string without `?`, or a form body). Empty pieces are skipped.
    pub fn parse(raw: &[u8]) -> Params {
        let mut values: HashMap<String, Result<String, ParamProblem>> = HashMap::new();
        for piece in raw.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match piece.iter().position(|&b| b == b'=') {
                Some(at) => (&piece[..at], &piece[at + 1..]),
                None => (piece, &b""[..]),
            };
            // A name that is not UTF-8 is nothing any endpoint reads: it is ignored like any
            // other unknown parameter.
            let Ok(name) = decode_form_value(name) else {
                continue;
            };
            let value = decode_form_value(value);
            match values.get_mut(&name) {
                Some(seen) => *seen = Err(ParamProblem::Repeated),
                None => {
                    values.insert(name, value);
                }
            }
        }
        Params { values }
    }

    /// Parses an optional query string.
    pub fn from_query(query: Option<&str>) -> Params {
        Params::parse(query.unwrap_or_default().as_bytes())
    }

    /// The parameter's value: `Ok(None)` when absent.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ParamProblem> {
        match self.values.get(name) {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v.as_str())),
            Some(Err(problem)) => Err(*problem),
        }
    }

    /// The parameter's value, with a problem turned into `None` and remembered in `first` (the
    /// first problem found, in the order the caller asks).
    pub fn take(&self, name: &str, first: &mut Option<Malformed>) -> Option<String> {
        match self.get(name) {
            Ok(v) => v.map(str::to_owned),
            Err(problem) => {
                if first.is_none() {
                    *first = Some(Malformed {
                        name: name.to_owned(),
                        problem,
                    });
                }
                None
            }
        }
    }

    /// Whether the parameter appears at all (well-formed or not).
    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_form_decoded_and_unknown_empty_pieces_skipped() {
        let p = Params::parse(b"a=x+y%20z&&b=%E4%B8%AD&c");
        assert_eq!(p.get("a"), Ok(Some("x y z")));
        assert_eq!(p.get("b"), Ok(Some("中")));
        assert_eq!(p.get("c"), Ok(Some("")));
        assert_eq!(p.get("d"), Ok(None));
    }

    #[test]
    fn a_repeated_parameter_is_refused_even_with_the_same_value() {
        let p = Params::parse(b"state=1&state=1&x=2");
        assert_eq!(p.get("state"), Err(ParamProblem::Repeated));
        assert_eq!(p.get("x"), Ok(Some("2")));
        let mut first = None;
        assert_eq!(p.take("state", &mut first), None);
        assert_eq!(first.unwrap().problem, ParamProblem::Repeated);
    }

    #[test]
    fn a_value_that_is_not_utf8_is_refused_not_replaced() {
        let p = Params::parse(b"state=%FF%FE&ok=1");
        assert_eq!(p.get("state"), Err(ParamProblem::NotUtf8));
        assert!(p.contains("state"));
        assert_eq!(p.get("ok"), Ok(Some("1")));
    }
}
