//! The route table: every route of the dashboard, who it is for, and its handler. The router
//! is built from this table and nothing else, so the tests that walk it (the route × role
//! matrix, the CSRF check of every state-changing route) see every route there is.

use axum::http::Method;
use axum::routing::{MethodRouter, get, post};

use crate::{
    Dashboard, account, accounts, assets, audit, console, operator, push_routes, register,
    security, setup, sign_in, statistics,
};

/// Who a route is for. The handlers' extractors enforce it; the table says it for people and
/// for the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// A session whose password was right and whose TOTP code is still to come.
    SecondFactor,
    /// A signed-in person, also one who must enrol a second factor before anything else.
    Enrolling,
    /// A signed-in person.
    SignedIn,
    /// A signed-in owner.
    Owner,
    /// A signed-in operator.
    Operator,
}

/// One route.
pub struct Route {
    pub method: Method,
    /// The path as the router matches it (`{token}` for a parameter).
    pub path: &'static str,
    pub access: Access,
    /// What it does, for people.
    pub summary: &'static str,
    pub(crate) handler: fn() -> MethodRouter<Dashboard>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

macro_rules! routes {
    ($( $method:ident $path:literal, $access:ident, $summary:literal => $handler:path; )+) => {
        /// Every route of the dashboard.
        pub static ROUTES: &[Route] = &[
            $( Route {
                method: Method::$method,
                path: $path,
                access: Access::$access,
                summary: $summary,
                handler: || routes!(@method $method)($handler),
            } ),+
        ];
    };
    (@method GET) => { get };
    (@method POST) => { post };
}

routes! {
    GET "/", Public, "the hub's root: leads to the dashboard" => sign_in::hub_root;
    GET "/dashboard", Public, "the dashboard's start: sign-in, or the person's first page" => sign_in::start;
    GET "/dashboard/", Public, "the same, with a slash" => sign_in::start;
    GET "/dashboard/static/{file}", Public, "the stylesheet" => assets::file;
    GET "/dashboard/language/{lang}", Public, "the language switch (a cookie; no server state)" => sign_in::switch_language;
    GET "/dashboard/sign-in", Public, "the sign-in form" => sign_in::form;
    POST "/dashboard/sign-in", Public, "signing in with email and password" => sign_in::submit;
    GET "/dashboard/sign-in/code", SecondFactor, "the TOTP code form" => sign_in::code_form;
    POST "/dashboard/sign-in/code", SecondFactor, "the TOTP code" => sign_in::code_submit;
    POST "/dashboard/sign-out", Enrolling, "signing out" => sign_in::sign_out;
    POST "/dashboard/sign-out-everywhere", Enrolling, "ending every session of the person" => sign_in::sign_out_everywhere;
    GET "/dashboard/sign-up", Public, "open sign-up of owners, when the hub allows it" => setup::sign_up_form;
    POST "/dashboard/sign-up", Public, "signing up as an owner" => setup::sign_up_submit;
    GET "/dashboard/setup/{token}", Public, "an operator's setup link: choose a password" => setup::setup_form;
    POST "/dashboard/setup/{token}", Public, "setting an operator's password" => setup::setup_submit;
    GET "/dashboard/invitation/{token}", Public, "an owner's invitation: choose a password" => setup::invitation_form;
    POST "/dashboard/invitation/{token}", Public, "setting an invited owner's password" => setup::invitation_submit;
    GET "/dashboard/security", Enrolling, "two-factor sign-in and sessions" => security::page;
    POST "/dashboard/security/totp", Enrolling, "starting a TOTP enrolment" => security::totp_start;
    POST "/dashboard/security/totp/confirm", Enrolling, "confirming a TOTP enrolment with a code" => security::totp_confirm;
    GET "/dashboard/accounts", Owner, "the owner's accounts with their health" => accounts::list;
    GET "/dashboard/accounts/new", Owner, "the form to add an account" => register::form;
    POST "/dashboard/accounts/new", Owner, "adding an account after the live check" => register::submit;
    GET "/dashboard/accounts/{appid}", SignedIn, "one account: health, keys, websites, settings (operators: read, revoke keys, disable)" => account::show;
    GET "/dashboard/accounts/{appid}/console", SignedIn, "what to enter in WeChat's console, with copy buttons" => console::page;
    POST "/dashboard/accounts/{appid}/console/push-credentials", SignedIn, "new push Token and EncodingAESKey, shown once beside where they go" => console::push_credentials;
    POST "/dashboard/accounts/{appid}/console/probe", SignedIn, "asking WeChat to probe the server URL" => console::probe;
    POST "/dashboard/accounts/{appid}/refresh", SignedIn, "fetching a new core token now" => account::refresh;
    POST "/dashboard/accounts/{appid}/clear-quota", SignedIn, "resetting WeChat's API quota (AppID typed)" => account::clear_quota;
    POST "/dashboard/accounts/{appid}/appsecret", SignedIn, "replacing the AppSecret after the live check" => account::replace_secret;
    POST "/dashboard/accounts/{appid}/push-credentials", SignedIn, "new push Token and EncodingAESKey, shown once" => account::push_credentials;
    POST "/dashboard/accounts/{appid}/keys", SignedIn, "a new API key, shown once" => account::create_key;
    POST "/dashboard/accounts/{appid}/keys/{key}/revoke", SignedIn, "revoking an API key" => account::revoke_key;
    POST "/dashboard/accounts/{appid}/websites", SignedIn, "a new website (OIDC client), its secret shown once" => account::create_website;
    POST "/dashboard/accounts/{appid}/websites/{client}/edit", SignedIn, "changing a website" => account::edit_website;
    POST "/dashboard/accounts/{appid}/websites/{client}/rotate", SignedIn, "a website's new secret, shown once" => account::rotate_website;
    POST "/dashboard/accounts/{appid}/websites/{client}/delete", SignedIn, "deleting a website" => account::delete_website;
    POST "/dashboard/accounts/{appid}/settings", SignedIn, "the login gateway's settings" => account::settings;
    GET "/dashboard/accounts/{appid}/push-routes", SignedIn, "the owner's own servers that receive the pushes: routes, counts, failures, dead letters (operators: read)" => push_routes::page;
    POST "/dashboard/accounts/{appid}/push-routes", SignedIn, "adding a push route (its Token typed once)" => push_routes::create;
    POST "/dashboard/accounts/{appid}/push-routes/{route}/edit", SignedIn, "changing a push route" => push_routes::edit;
    POST "/dashboard/accounts/{appid}/push-routes/{route}/delete", SignedIn, "deleting a push route and its queued copies" => push_routes::delete;
    POST "/dashboard/accounts/{appid}/push-routes/dead/{copy}/resend", SignedIn, "sending a dead letter again" => push_routes::resend;
    GET "/dashboard/accounts/{appid}/end-users", SignedIn, "the account's end users: search, pages" => account::end_users;
    GET "/dashboard/accounts/{appid}/audit", SignedIn, "one account's audit log with filters, in pages" => audit::account_page;
    GET "/dashboard/accounts/{appid}/audit.csv", SignedIn, "one account's audit log as CSV, streamed" => audit::account_export;
    GET "/dashboard/accounts/{appid}/stats", SignedIn, "one account's statistics as charts, tables and CSV" => statistics::account;
    GET "/dashboard/accounts/{appid}/stats.csv", SignedIn, "one chart of an account's statistics as CSV" => statistics::account_csv;
    POST "/dashboard/accounts/{appid}/disable", SignedIn, "disabling an account" => account::disable;
    POST "/dashboard/accounts/{appid}/enable", SignedIn, "enabling an account" => account::enable;
    POST "/dashboard/accounts/{appid}/delete", SignedIn, "deleting an account (AppID typed; secrets crypto-shredded)" => account::delete;
    GET "/dashboard/operator/audit", Operator, "the audit log with filters, in pages" => audit::page;
    GET "/dashboard/operator/audit.csv", Operator, "the audit log's CSV export of the filters, streamed" => audit::export;
    GET "/dashboard/operator/accounts", Operator, "every account with its health, in pages" => operator::accounts;
    GET "/dashboard/operator/owners", Operator, "every owner, in pages, and the invitation form" => operator::owners;
    POST "/dashboard/operator/owners", Operator, "inviting an owner" => operator::invite;
    POST "/dashboard/operator/owners/{id}/disable", Operator, "disabling an owner (their sessions end)" => operator::disable_owner;
    POST "/dashboard/operator/owners/{id}/reset-totp", Operator, "removing an owner's lost second factor (their sessions end)" => operator::reset_owner_totp;
    POST "/dashboard/operator/owners/{id}/enable", Operator, "enabling an owner again" => operator::enable_owner;
    GET "/dashboard/operator/stats", Operator, "the platform's statistics: daily totals, busiest and most failing accounts" => statistics::platform;
    GET "/dashboard/operator/stats.csv", Operator, "one chart of the platform's statistics as CSV" => statistics::platform_csv;
    GET "/dashboard/operator/health", Operator, "the platform's health: accounts by state, those needing a person, key rotation" => operator::health;
}
