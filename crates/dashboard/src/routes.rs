//! The route table: every route of the dashboard, who it is for, and its handler. The router
//! is built from this table and nothing else, so the tests that walk it (the route × role
//! matrix, the CSRF check of every state-changing route) see every route there is.

use axum::http::Method;
use axum::routing::{MethodRouter, get, post};

use crate::{Dashboard, accounts, assets, operator, security, setup, sign_in};

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
    GET "/dashboard/setup/{token}", Public, "an operator's setup link: choose a password" => setup::setup_form;
    POST "/dashboard/setup/{token}", Public, "setting an operator's password" => setup::setup_submit;
    GET "/dashboard/invitation/{token}", Public, "an owner's invitation: choose a password" => setup::invitation_form;
    POST "/dashboard/invitation/{token}", Public, "setting an invited owner's password" => setup::invitation_submit;
    GET "/dashboard/security", Enrolling, "two-factor sign-in and sessions" => security::page;
    POST "/dashboard/security/totp", Enrolling, "starting a TOTP enrolment" => security::totp_start;
    POST "/dashboard/security/totp/confirm", Enrolling, "confirming a TOTP enrolment with a code" => security::totp_confirm;
    GET "/dashboard/accounts", Owner, "the owner's accounts with their health" => accounts::list;
    GET "/dashboard/operator/accounts", Operator, "every account with its health, in pages" => operator::accounts;
    GET "/dashboard/operator/owners", Operator, "every owner, in pages, and the invitation form" => operator::owners;
    POST "/dashboard/operator/owners", Operator, "inviting an owner" => operator::invite;
}
