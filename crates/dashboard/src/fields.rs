//! Field-level errors of forms the tenancy layer refused, in the page's language. The layer
//! names the field (`TenancyError::Invalid { field, .. }`) and says what is wrong in English;
//! an English page shows that message as it is (it names the exact value at fault), a Chinese
//! page the field's rule from the translations.

use tenancy::TenancyError;

use crate::i18n::Lang;
use crate::layout::Ctx;

/// The fields the tenancy layer names, with their rule's translation key.
const RULES: &[(&str, &str)] = &[
    ("appid", "field.appid"),
    ("appsecret", "field.appsecret"),
    ("name", "field.name"),
    ("label", "field.label"),
    ("scopes", "field.scopes"),
    ("proxy_paths", "field.proxy_paths"),
    ("redirect_uri", "field.redirect_uri"),
    ("original_id", "field.original_id"),
    ("push_relay_url", "field.push_relay_url"),
    ("follow_qr_url", "field.follow_qr_url"),
    ("follow_link", "field.follow_link"),
    ("account", "field.account"),
    ("client_id", "field.client_id"),
    ("token", "field.token"),
    ("route_token", "field.route_token"),
    ("target_url", "field.target_url"),
    ("match_msg_type", "field.match_word"),
    ("match_event", "field.match_word"),
    ("match_event_key_prefix", "field.match_word"),
    ("delivery", "field.delivery"),
    ("push_mode", "field.route_push_mode"),
    ("encoding_aes_key", "field.encoding_aes_key"),
    ("position", "field.position"),
    ("credentials", "field.credentials"),
];

/// Every rule's translation key (the translation test walks these).
#[cfg(test)]
pub(crate) fn keys() -> Vec<&'static str> {
    RULES.iter().map(|(_, key)| *key).collect()
}

/// The text to show beside `field` for `message`.
pub(crate) fn text(ctx: &Ctx, field: &str, message: &str) -> String {
    match ctx.lang {
        Lang::En => message.to_owned(),
        Lang::ZhCn => match RULES.iter().find(|(name, _)| *name == field) {
            Some((_, key)) => ctx.t(key).to_owned(),
            None => message.to_owned(),
        },
    }
}

/// A field error of `error`, when it is one: the field and the text to show.
pub(crate) fn of(ctx: &Ctx, error: &TenancyError) -> Option<(&'static str, String)> {
    match error {
        TenancyError::Invalid { field, message } => Some((field, text(ctx, field, message))),
        TenancyError::CredentialCheck(failure) => {
            let fix = failure.fix();
            // 40013 is about the AppID; everything else the check says concerns the secret
            // (or the server's IP, which the secret's field is where the owner looks).
            let field = if failure.code == Some(40013) {
                "appid"
            } else {
                "appsecret"
            };
            Some((
                field,
                match ctx.lang {
                    Lang::ZhCn => fix.zh,
                    Lang::En => fix.en,
                },
            ))
        }
        _ => None,
    }
}
