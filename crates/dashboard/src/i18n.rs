//! Languages: zh-CN first, English second; every string a person reads comes from
//! `web/i18n/zh-CN.toml` and `web/i18n/en.toml`, embedded in the binary.
//!
//! The language is the one chosen with the switch (a cookie), else the first supported one in
//! `Accept-Language`, else zh-CN. A key missing from either file fails a test; at run time a
//! missing key shows the key itself rather than an empty page.

use std::collections::HashMap;
use std::sync::Arc;

/// The cookie the language switch sets.
pub const LANG_COOKIE: &str = "wxhub_lang";

const ZH_CN: &str = include_str!("../../../web/i18n/zh-CN.toml");
const EN: &str = include_str!("../../../web/i18n/en.toml");

/// A language the dashboard speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lang {
    #[default]
    ZhCn,
    En,
}

impl Lang {
    /// Every language, in the order the switch shows them.
    pub const ALL: [Lang; 2] = [Lang::ZhCn, Lang::En];

    /// The BCP 47 tag (`<html lang>`, the cookie's value).
    pub fn code(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh-CN",
            Lang::En => "en",
        }
    }

    /// The language's own name, for the switch.
    pub fn own_name(self) -> &'static str {
        match self {
            Lang::ZhCn => "中文",
            Lang::En => "English",
        }
    }

    /// The language with this tag, exactly as [`Lang::code`] writes it.
    pub fn from_code(code: &str) -> Option<Lang> {
        Lang::ALL.into_iter().find(|lang| lang.code() == code)
    }

    /// The language of a request: the switch's cookie, else `Accept-Language`, else zh-CN.
    pub fn negotiate(cookie: Option<&str>, accept_language: Option<&str>) -> Lang {
        if let Some(lang) = cookie.and_then(Lang::from_code) {
            return lang;
        }
        accept_language.and_then(best_accepted).unwrap_or_default()
    }
}

/// The supported language with the highest `q` in an `Accept-Language` value (RFC 9110
/// §12.5.4); ties go to the one listed first.
fn best_accepted(header: &str) -> Option<Lang> {
    let mut best: Option<(f32, Lang)> = None;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let lang = if tag == "zh" || tag.starts_with("zh-") {
            Lang::ZhCn
        } else if tag == "en" || tag.starts_with("en-") {
            Lang::En
        } else {
            continue;
        };
        if q > 0.0 && best.is_none_or(|(best_q, _)| q > best_q) {
            best = Some((q, lang));
        }
    }
    best.map(|(_, lang)| lang)
}

/// Both translation files, flattened to `section.key → text`.
#[derive(Debug)]
pub struct Translations {
    tables: HashMap<Lang, HashMap<String, String>>,
}

/// Why a translation file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("translation file {file}: {reason}")]
pub struct TranslationError {
    pub file: &'static str,
    pub reason: String,
}

impl Translations {
    /// The embedded files.
    pub fn embedded() -> Result<Arc<Translations>, TranslationError> {
        let mut tables = HashMap::new();
        for (lang, file, text) in [
            (Lang::ZhCn, "web/i18n/zh-CN.toml", ZH_CN),
            (Lang::En, "web/i18n/en.toml", EN),
        ] {
            tables.insert(lang, parse(file, text)?);
        }
        Ok(Arc::new(Translations { tables }))
    }

    /// The text of `key` in `lang`, or the key itself when it is missing.
    pub fn get<'a>(&'a self, lang: Lang, key: &'a str) -> &'a str {
        match self.tables.get(&lang).and_then(|t| t.get(key)) {
            Some(text) => text,
            None => {
                tracing::warn!(key, lang = lang.code(), "missing translation");
                key
            }
        }
    }

    /// The keys of `lang`, sorted.
    pub fn keys(&self, lang: Lang) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .tables
            .get(&lang)
            .map(|t| t.keys().map(String::as_str).collect())
            .unwrap_or_default();
        keys.sort_unstable();
        keys
    }

    /// Whether `key` exists in `lang`.
    pub fn has(&self, lang: Lang, key: &str) -> bool {
        self.tables.get(&lang).is_some_and(|t| t.contains_key(key))
    }
}

fn parse(file: &'static str, text: &str) -> Result<HashMap<String, String>, TranslationError> {
    let value: toml::Table = toml::from_str(text).map_err(|e| TranslationError {
        file,
        reason: e.to_string(),
    })?;
    let mut out = HashMap::new();
    flatten(file, "", &value, &mut out)?;
    Ok(out)
}

fn flatten(
    file: &'static str,
    prefix: &str,
    table: &toml::Table,
    out: &mut HashMap<String, String>,
) -> Result<(), TranslationError> {
    for (key, value) in table {
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::String(text) => {
                out.insert(full, text.clone());
            }
            toml::Value::Table(inner) => flatten(file, &full, inner, out)?,
            _ => {
                return Err(TranslationError {
                    file,
                    reason: format!("{full} must be a string"),
                });
            }
        }
    }
    Ok(())
}

/// Replaces each `{name}` in `text` with its value.
pub fn fill(text: &str, values: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_wins_then_accept_language_then_chinese() {
        assert_eq!(Lang::negotiate(Some("en"), Some("zh-CN")), Lang::En);
        assert_eq!(Lang::negotiate(None, Some("en-US,en;q=0.9")), Lang::En);
        assert_eq!(
            Lang::negotiate(None, Some("fr, en;q=0.5, zh-TW;q=0.8")),
            Lang::ZhCn
        );
        assert_eq!(Lang::negotiate(Some("klingon"), Some("de")), Lang::ZhCn);
        assert_eq!(Lang::negotiate(None, Some("en;q=0")), Lang::ZhCn);
        assert_eq!(Lang::negotiate(None, None), Lang::ZhCn);
    }

    #[test]
    fn both_languages_have_the_same_keys() {
        let translations = Translations::embedded().unwrap();
        let zh = translations.keys(Lang::ZhCn);
        let en = translations.keys(Lang::En);
        let only_zh: Vec<_> = zh.iter().filter(|k| !en.contains(k)).collect();
        let only_en: Vec<_> = en.iter().filter(|k| !zh.contains(k)).collect();
        assert!(
            only_zh.is_empty() && only_en.is_empty(),
            "missing from en.toml: {only_zh:?}; missing from zh-CN.toml: {only_en:?}"
        );
    }

    /// Keys the code and the templates ask for: `t("…")` and `tf("…"` calls in
    /// `crates/dashboard/src` and `web/templates`, and the keys of every flash, password
    /// problem, error page and token state.
    fn used_keys() -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in [root.join("src"), root.join("../../web/templates")] {
            let mut stack = vec![dir];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        stack.push(path);
                    } else {
                        files.push(path);
                    }
                }
            }
        }
        let mut keys = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for call in [".t(\"", ".tf(\""] {
                for (at, _) in text.match_indices(call) {
                    let rest = &text[at + call.len()..];
                    let key = &rest[..rest.find('"').unwrap()];
                    keys.push(key.to_owned());
                }
            }
        }
        keys.extend(crate::layout::Flash::ALL.map(|f| f.key().to_owned()));
        keys.extend(crate::password::Problem::ALL.map(|p| p.key().to_owned()));
        keys.extend(crate::accounts::STATE_KEYS.map(str::to_owned));
        keys.extend(crate::fields::keys().into_iter().map(str::to_owned));
        for page in crate::error::ErrorPage::all() {
            keys.push(page.title.to_owned());
            keys.push(page.text.to_owned());
        }
        keys.sort();
        keys.dedup();
        keys
    }

    #[test]
    fn every_key_in_use_exists_in_both_languages() {
        let translations = Translations::embedded().unwrap();
        let keys = used_keys();
        assert!(keys.len() > 50, "the scan found too few keys: {keys:?}");
        let missing: Vec<String> = keys
            .iter()
            .flat_map(|key| {
                Lang::ALL
                    .into_iter()
                    .filter(|lang| !translations.has(*lang, key))
                    .map(move |lang| format!("{key} ({})", lang.code()))
            })
            .collect();
        assert!(missing.is_empty(), "missing translations: {missing:?}");
    }

    #[test]
    fn placeholders_are_filled() {
        assert_eq!(fill("{n} of {m}", &[("n", "3"), ("m", "200")]), "3 of 200");
    }
}
