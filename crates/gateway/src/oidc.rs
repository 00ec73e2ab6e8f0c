//! The OpenID Connect provider of one account: discovery, authorize, token and userinfo
//! (OpenID Connect Core 1.0, authorization code flow only; RFC 6749, RFC 7636 PKCE).
//!
//! Rules enforced here:
//! - the redirect_uri is compared byte for byte with the client's registered list; until it
//!   matches, every error is a page on wxhub's origin, never a redirect (RFC 6749 §4.1.2.1);
//! - PKCE S256 is required for every client, public or confidential (RFC 9700 §2.1.1); a
//!   verifier without a challenge, or a challenge without a verifier, is refused (RFC 7636
//!   §4.6);
//! - the login is bound to the browser that sent `/authorize` (its login cookie);
//! - codes are single use, live 60 s, and are bound to client, redirect_uri and PKCE; a
//!   second use of a code is `invalid_grant` and revokes what the code issued (RFC 6749
//!   §4.1.2) — the access token is written in the transaction that spends the code, so even a
//!   concurrent second use revokes it;
//! - access tokens are opaque and short-lived; only their hashes are stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use store::accounts::{Account, AccountKind};
use store::end_users::{EndUserLogin, UserClaims};
use store::oidc::{
    AuthCode, CodeRedemption, LoginMode, LoginSurface, NewAccessToken, OidcClient,
    PendingAuthorization,
};
use subtle::ConstantTimeEq;

use crate::error::{LoginRefusal, TokenErrorCode};
use crate::keys::SigningAlg;
use crate::params::{Malformed, Params};
use crate::{Gateway, GatewayError, random_alnum, random_token, token_hash};

/// How long the user may take at WeChat (and on the follow page) before the login expires.
pub const PENDING_LIFETIME_MS: i64 = 15 * 60 * 1000;
/// Authorization code lifetime (OIDC Core §3.1.2.5 suggests short; we use 60 s).
pub const CODE_LIFETIME_MS: i64 = 60 * 1000;
/// Access token and ID token lifetime.
pub const ACCESS_TOKEN_LIFETIME_SECS: i64 = 600;
/// Longest `state`/`nonce`/`scope` accepted from a client (they are stored and echoed).
const MAX_CLIENT_VALUE: usize = 1024;

/// The discovery document (OpenID Connect Discovery 1.0 §3).
pub fn discovery(gw: &Gateway, appid: &str) -> Value {
    let issuer = gw.issuer(appid);
    let algs: Vec<&str> = SigningAlg::ALL.iter().map(|a| a.as_str()).collect();
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        // RS256 first: Discovery §3 makes it mandatory, and libraries expect it by default.
        "id_token_signing_alg_values_supported": algs,
        "scopes_supported": ["openid", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce",
                             "nickname", "picture", "unionid", "follows_account"],
        // RFC 9207: every authorization response carries `iss`.
        "authorization_response_iss_parameter_supported": true,
        // OIDC Core §6: request objects are not supported (request_uri defaults to true).
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
    })
}

/// Authorization request parameters (OIDC Core §3.1.2.1), read with [`Params`] from the query
/// (GET) or the form body (POST). Parameters the provider does not use (`display`,
/// `ui_locales`, `claims_locales`, `acr_values`, `id_token_hint`, `login_hint` …) are
/// accepted and ignored; `login_hint` is never stored or echoed.
#[derive(Debug, Default)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    /// `none`, `login`, `consent`, `select_account`, space-separated.
    pub prompt: Option<String>,
    /// Seconds since the user's last authentication that the client accepts.
    pub max_age: Option<String>,
    pub response_mode: Option<String>,
    /// Which of `request`, `request_uri`, `registration` was sent (none are supported).
    pub unsupported: Option<&'static str>,
    /// A repeated or non-UTF-8 `client_id` or `redirect_uri`: the redirect URI cannot be
    /// verified, so the answer is a page.
    pub client_malformed: Option<Malformed>,
    /// The first repeated or non-UTF-8 other parameter: answered with `invalid_request` at the
    /// verified redirect URI.
    pub malformed: Option<Malformed>,
}

impl AuthorizeParams {
    /// Reads the parameters of an authorization request.
    pub fn from_params(p: &Params) -> AuthorizeParams {
        let mut client_malformed = None;
        let client_id = p.take("client_id", &mut client_malformed);
        let redirect_uri = p.take("redirect_uri", &mut client_malformed);
        let mut malformed = None;
        let mut take = |name: &str| p.take(name, &mut malformed);
        let params = AuthorizeParams {
            response_type: take("response_type"),
            scope: take("scope"),
            state: take("state"),
            nonce: take("nonce"),
            code_challenge: take("code_challenge"),
            code_challenge_method: take("code_challenge_method"),
            prompt: take("prompt"),
            max_age: take("max_age"),
            response_mode: take("response_mode"),
            client_id,
            redirect_uri,
            unsupported: ["request", "request_uri", "registration"]
                .into_iter()
                .find(|name| p.contains(name)),
            client_malformed,
            malformed: None,
        };
        AuthorizeParams {
            malformed,
            ..params
        }
    }
}

/// Where the authorization request came from: a browser inside WeChat or outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Browser {
    /// WeChat's own browser (`MicroMessenger` in the User-Agent): WeChat's authorize page
    /// opens there.
    InWechat,
    /// Any other browser, where WeChat's authorize page cannot open.
    Outside,
}

impl Browser {
    /// From the request's `User-Agent` (docs/wechat.md §4: WeChat's browser names itself
    /// `MicroMessenger`).
    pub fn from_user_agent(user_agent: Option<&str>) -> Browser {
        match user_agent {
            Some(ua) if ua.contains("MicroMessenger") => Browser::InWechat,
            _ => Browser::Outside,
        }
    }
}

/// Whether an account may use WeChat web login at all (docs/wechat.md §4: verified service accounts).
pub fn login_refusal(account: &Account) -> Option<LoginRefusal> {
    if account.kind == AccountKind::Subscription {
        Some(LoginRefusal::SubscriptionAccount)
    } else if !account.verified {
        Some(LoginRefusal::Unverified)
    } else {
        None
    }
}

/// PKCE `code_challenge`/`code_verifier` syntax: 43–128 unreserved characters (RFC 7636 §4.1).
pub(crate) fn is_pkce_value(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The request's `redirect_uri` if it is one of the client's registered URIs, compared byte for
/// byte (RFC 6749 §3.1.2.3, RFC 9700 §4.1.3: no normalisation, no prefix or pattern match).
pub(crate) fn registered_redirect_uri(
    given: Option<&str>,
    registered: &[String],
) -> Option<String> {
    let given = given?;
    registered
        .iter()
        .find(|r| r.as_bytes() == given.as_bytes())
        .cloned()
}

/// The client with public `client_id` if it belongs to `account`.
async fn account_client(
    gw: &Gateway,
    account: &Account,
    client_id: Option<&str>,
) -> Result<Option<OidcClient>, GatewayError> {
    let Some(client_id) = client_id.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    Ok(gw
        .store
        .find_oidc_client(client_id)
        .await?
        .filter(|c| c.account_id == account.id))
}

/// The active account with `appid` and its client `client_id`, in one query when both exist.
/// `Ok(Err(None))`: the account is served but the client is not one of its clients;
/// `Ok(Err(Some(e)))`: the account is not served (`e`).
async fn account_and_client(
    gw: &Gateway,
    appid: &str,
    client_id: Option<&str>,
) -> Result<Result<(Account, OidcClient), Option<GatewayError>>, GatewayError> {
    if let Some(client_id) = client_id.filter(|c| !c.is_empty())
        && let Some((account, client)) = gw.store.find_client_at_issuer(appid, client_id).await?
        && account.state == store::accounts::AccountState::Active
    {
        return Ok(Ok((account, client)));
    }
    // Something is missing: find out what, as the separate lookups would.
    let account = match gw.active_account(appid).await {
        Ok(account) => account,
        Err(e) => return Ok(Err(Some(e))),
    };
    Ok(match account_client(gw, &account, client_id).await? {
        Some(client) => Ok((account, client)),
        None => Err(None),
    })
}

/// An accepted authorization request.
pub struct Authorized {
    /// Where the browser goes next: WeChat's authorize page, or the scan page.
    pub location: String,
    /// Whether `location` is the scan page (answered with 303, as a page of wxhub's own).
    pub scan: bool,
    /// The `Set-Cookie` value binding the login to this browser.
    pub set_cookie: String,
}

/// How the request's `prompt` and `max_age` (OIDC Core §3.1.2.1) shape the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Prompting {
    /// `prompt=none`: show nothing; answer an error where a page would be needed.
    pub(crate) none: bool,
    /// `prompt=login` or `max_age=0`: the user must confirm anew. WeChat keeps its own
    /// session and cannot be made to re-authenticate; its strongest form is `forcePopup`,
    /// which shows the confirmation even where it would authorize silently
    /// (docs/wechat.md §4.1). wxhub keeps no session of its own, so every login is a fresh
    /// identification and `auth_time` is always its moment — which satisfies any `max_age`.
    pub(crate) reauthenticate: bool,
}

pub(crate) fn prompting(params: &AuthorizeParams) -> Result<Prompting, &'static str> {
    let mut out = Prompting::default();
    if let Some(prompt) = params.prompt.as_deref() {
        let values: Vec<&str> = prompt.split(' ').filter(|v| !v.is_empty()).collect();
        out.none = values.contains(&"none");
        if out.none && values.len() > 1 {
            return Err("prompt=none cannot be combined with other values");
        }
        // consent and select_account are WeChat's to decide; unknown values are ignored.
        out.reauthenticate = values.contains(&"login");
    }
    if let Some(max_age) = params.max_age.as_deref() {
        let seconds: u64 = max_age
            .parse()
            .map_err(|_| "max_age must be a non-negative integer")?;
        out.reauthenticate |= seconds == 0;
    }
    Ok(out)
}

/// Validates an authorization request, stores it bound to the browser (`browser`: the
/// login-cookie value it already has, if any), and returns WeChat's authorize URL to send the
/// user to with the cookie to set. `from` says whether the request came from WeChat's browser.
pub async fn authorize(
    gw: &Gateway,
    appid: &str,
    params: AuthorizeParams,
    browser: Option<String>,
    from: Browser,
) -> Result<Authorized, GatewayError> {
    if params.client_malformed.is_some() {
        return Err(GatewayError::MalformedLoginRequest);
    }
    let (account, client) = account_and_client(gw, appid, params.client_id.as_deref())
        .await?
        .map_err(|e| e.unwrap_or(GatewayError::UnknownClient))?;
    let failed = |why| {
        gw.stats
            .login_failed(&account.id, client.login_mode.as_str(), &client.id, why);
    };
    let redirect_uri =
        registered_redirect_uri(params.redirect_uri.as_deref(), &client.redirect_uris).ok_or_else(
            || {
                failed(stats::LoginFailure::RedirectUri);
                GatewayError::RedirectUriMismatch
            },
        )?;
    if let Some(refusal) = login_refusal(&account) {
        return Err(GatewayError::AccountCannotLogin(refusal));
    }
    // From here on the redirect_uri is verified: errors go back to the client. A state that
    // could not be read is not echoed (it would come back changed).
    let state = params.state.clone().filter(|s| !s.is_empty());
    let issuer = gw.issuer(appid);
    let back = |error: &'static str, description: &'static str| GatewayError::AuthorizeRedirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone(),
        issuer: issuer.clone(),
        error,
        description,
    };
    if let Some(malformed) = &params.malformed {
        return Err(back("invalid_request", malformed.problem.description()));
    }
    if let Some(unsupported) = params.unsupported {
        return Err(match unsupported {
            "request" => back("request_not_supported", "request objects are not supported"),
            "request_uri" => back("request_uri_not_supported", "request_uri is not supported"),
            _ => back(
                "registration_not_supported",
                "the registration parameter is not supported",
            ),
        });
    }
    let too_long = |v: &Option<String>| v.as_ref().is_some_and(|v| v.len() > MAX_CLIENT_VALUE);
    if too_long(&state) || too_long(&params.nonce) || too_long(&params.scope) {
        return Err(back("invalid_request", "state, nonce or scope too long"));
    }
    match params.response_type.as_deref() {
        Some("code") => {}
        None => return Err(back("invalid_request", "response_type is required")),
        Some(_) => {
            return Err(back(
                "unsupported_response_type",
                "only the authorization code flow (response_type=code) is supported",
            ));
        }
    }
    if params
        .response_mode
        .as_deref()
        .is_some_and(|m| m != "query")
    {
        return Err(back(
            "invalid_request",
            "only response_mode=query is supported",
        ));
    }
    let prompting = prompting(&params).map_err(|d| back("invalid_request", d))?;
    let scope = params.scope.unwrap_or_default();
    if !scope.split(' ').any(|s| s == "openid") {
        return Err(back("invalid_scope", "the openid scope is required"));
    }
    let challenge = params.code_challenge.filter(|c| !c.is_empty());
    let back = |error, description| {
        failed(stats::LoginFailure::Pkce);
        back(error, description)
    };
    match (&challenge, params.code_challenge_method.as_deref()) {
        (Some(c), Some("S256")) if is_pkce_value(c) => {}
        (Some(_), Some("S256")) => return Err(back("invalid_request", "malformed code_challenge")),
        // RFC 7636 §4.3: no method means plain, which is not accepted.
        (Some(_), _) => {
            return Err(back(
                "invalid_request",
                "code_challenge_method must be S256",
            ));
        }
        (None, Some(_)) => {
            return Err(back(
                "invalid_request",
                "code_challenge_method without code_challenge",
            ));
        }
        // RFC 9700 §2.1.1: PKCE for every client, confidential ones included.
        (None, None) => {
            return Err(back(
                "invalid_request",
                "PKCE (code_challenge with S256) is required",
            ));
        }
    }
    // Outside WeChat's browser its authorize page cannot open: the scan page instead
    // (docs/wechat-2.md §4.2), unless the website says otherwise.
    let scan = match client.login_surface {
        LoginSurface::Auto => from == Browser::Outside,
        LoginSurface::Wechat => false,
        LoginSurface::Scan => true,
    };
    if prompting.none {
        // Outside WeChat the user must scan or open WeChat; in userinfo mode WeChat may show
        // its consent popup. Neither can happen without a page.
        match (scan, client.login_mode) {
            (true, _) => {
                return Err(back(
                    "login_required",
                    "the user must sign in with WeChat, which needs a page",
                ));
            }
            (false, LoginMode::Userinfo) => {
                return Err(back(
                    "interaction_required",
                    "WeChat may ask the user to consent, which needs a page",
                ));
            }
            // snsapi_base is silent (docs/wechat.md §4.1): go on; a follow page, if needed,
            // becomes interaction_required at the callback.
            (false, LoginMode::FollowRequired) => {}
        }
    }
    let now = gw.now();
    let binding = gw.binding_for_new_login(browser);
    // The state WeChat carries back: ours, random, and within WeChat's rule (§4.1).
    let wechat_state = random_alnum(32);
    let pending = PendingAuthorization {
        id: store::new_id(),
        oidc_client_id: client.id.clone(),
        redirect_uri,
        state,
        nonce: params.nonce.filter(|n| !n.is_empty()),
        code_challenge_method: challenge.as_ref().map(|_| "S256".to_owned()),
        code_challenge: challenge,
        scope,
        wechat_state: wechat_state.clone(),
        status: store::oidc::PendingStatus::Pending,
        openid: None,
        created_at: now,
        expires_at: now + PENDING_LIFETIME_MS,
        browser_binding_hash: Some(token_hash(&binding)),
        prompt_none: prompting.none,
    };
    gw.store.create_pending_authorization(&pending).await?;
    gw.stats.login(
        &account.id,
        client.login_mode.as_str(),
        &client.id,
        stats::LoginStage::Started,
    );
    if scan {
        let token = crate::scan::start(gw, &account, &client, &pending).await?;
        return Ok(Authorized {
            location: format!("{}/login/scan/{token}", gw.issuer(appid)),
            scan: true,
            set_cookie: gw.binding_set_cookie(appid, &binding),
        });
    }
    let scope = match client.login_mode {
        LoginMode::FollowRequired => wechat::Scope::SnsapiBase,
        LoginMode::Userinfo => wechat::Scope::SnsapiUserinfo,
    };
    let callback = format!("{}/wechat/callback", gw.issuer(appid));
    let wechat_url = gw.wechat.authorize_url(
        appid,
        &callback,
        scope,
        &wechat_state,
        prompting.reauthenticate,
    )?;
    Ok(Authorized {
        location: wechat_url,
        scan: false,
        set_cookie: gw.binding_set_cookie(appid, &binding),
    })
}

/// The redirect that ends a login with an error at the client's verified redirect URI, with
/// its `state` and the issuer (RFC 6749 §4.1.2.1, RFC 9207).
pub(crate) fn error_to_client(
    gw: &Gateway,
    appid: &str,
    pending: &PendingAuthorization,
    error: &str,
    description: &str,
) -> String {
    let issuer = gw.issuer(appid);
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(state) = pending.state.as_deref() {
        params.push(("state", state));
    }
    params.push(("iss", issuer.as_str()));
    crate::pages::append_query(&pending.redirect_uri, &params)
}

/// Issues the authorization code that finishes `pending` for `login.openid` and returns the
/// redirect to the client. Atomic with closing the pending authorization (and the follow
/// wait) and recording the end user, so a replayed step cannot issue a second code and a
/// login that issues none records nothing.
pub(crate) async fn issue_code(
    gw: &Gateway,
    account: &Account,
    pending: &PendingAuthorization,
    login: &EndUserLogin,
    follow_wait_id: Option<&str>,
) -> Result<String, GatewayError> {
    let openid = login.openid.as_str();
    let now = gw.now();
    let code = random_token();
    let record = AuthCode {
        code_hash: token_hash(&code),
        oidc_client_id: pending.oidc_client_id.clone(),
        account_id: account.id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        openid: openid.to_owned(),
        nonce: pending.nonce.clone(),
        code_challenge: pending.code_challenge.clone(),
        code_challenge_method: pending.code_challenge_method.clone(),
        scope: pending.scope.clone(),
        created_at: now,
        expires_at: now + CODE_LIFETIME_MS,
        used_at: None,
    };
    let Some(completed) = gw
        .store
        .complete_login(&pending.id, &record, follow_wait_id, login, now)
        .await?
    else {
        return Err(GatewayError::StateUnknown);
    };
    let mode = login_mode_of(login.via);
    gw.stats.login(
        &account.id,
        mode,
        &pending.oidc_client_id,
        stats::LoginStage::Completed,
    );
    if completed.user_created {
        gw.stats.user_created(&account.id, login.via.as_str());
    }
    let issuer = gw.issuer(&account.appid);
    let mut params = vec![("code", code.as_str())];
    if let Some(state) = pending.state.as_deref() {
        params.push(("state", state));
    }
    // RFC 9207: the client checks it is the issuer it sent the user to (mix-up attacks).
    params.push(("iss", issuer.as_str()));
    Ok(crate::pages::append_query(&pending.redirect_uri, &params))
}

/// The login mode a login's end-user record names (for statistics).
fn login_mode_of(via: store::end_users::CreatedVia) -> &'static str {
    use store::end_users::CreatedVia;
    match via {
        CreatedVia::LoginBase => LoginMode::FollowRequired.as_str(),
        CreatedVia::LoginUserinfo => LoginMode::Userinfo.as_str(),
        CreatedVia::Push => "push",
    }
}

/// Token request parameters (RFC 6749 §4.1.3, §2.3.1).
#[derive(Debug, Default)]
pub struct TokenParams {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

impl TokenParams {
    /// Reads a token request's form body; a repeated or non-UTF-8 parameter is
    /// `invalid_request` (RFC 6749 §3.1, §5.2).
    pub fn from_params(p: &Params) -> Result<TokenParams, GatewayError> {
        let mut malformed = None;
        let mut take = |name: &str| p.take(name, &mut malformed);
        let params = TokenParams {
            grant_type: take("grant_type"),
            code: take("code"),
            redirect_uri: take("redirect_uri"),
            code_verifier: take("code_verifier"),
            client_id: take("client_id"),
            client_secret: take("client_secret"),
        };
        match malformed {
            Some(m) => Err(GatewayError::token(
                TokenErrorCode::InvalidRequest,
                m.problem.description(),
            )),
            None => Ok(params),
        }
    }
}

/// Client credentials from an `Authorization: Basic` header (already decoded).
pub struct BasicCredentials {
    pub client_id: String,
    pub client_secret: String,
}

/// A successful token response (RFC 6749 §5.1, OIDC Core §3.1.3.3).
#[derive(Debug, serde::Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub id_token: String,
    pub scope: String,
}

/// Authenticates the client (client_secret_basic, client_secret_post, or none for public
/// clients; RFC 6749 §2.3.1 forbids using two methods at once).
async fn authenticate_client(
    gw: &Gateway,
    appid: &str,
    basic: Option<BasicCredentials>,
    params: &TokenParams,
) -> Result<(Account, OidcClient), GatewayError> {
    use TokenErrorCode::{InvalidClient, InvalidRequest};
    let (client_id, secret) = match basic {
        Some(_) if params.client_secret.is_some() => {
            return Err(GatewayError::token(
                InvalidRequest,
                "use one client authentication method, not two",
            ));
        }
        Some(basic) => {
            if params
                .client_id
                .as_ref()
                .is_some_and(|c| *c != basic.client_id)
            {
                return Err(GatewayError::token(InvalidRequest, "client_id mismatch"));
            }
            (basic.client_id, Some(basic.client_secret))
        }
        None => (
            params.client_id.clone().unwrap_or_default(),
            params.client_secret.clone(),
        ),
    };
    let (account, client) = account_and_client(gw, appid, Some(&client_id))
        .await?
        .map_err(|e| match e {
            Some(_) => GatewayError::token(InvalidClient, "unknown issuer"),
            None => GatewayError::token(InvalidClient, "unknown client"),
        })?;
    match (&client.client_secret_hash, secret) {
        (Some(stored), Some(given)) => {
            let ok: bool = token_hash(&given)
                .as_bytes()
                .ct_eq(stored.as_bytes())
                .into();
            if !ok {
                return Err(GatewayError::token(
                    InvalidClient,
                    "client authentication failed",
                ));
            }
        }
        (Some(_), None) => {
            return Err(GatewayError::token(
                InvalidClient,
                "client authentication required",
            ));
        }
        (None, Some(_)) => {
            return Err(GatewayError::token(
                InvalidClient,
                "this is a public client; it has no secret",
            ));
        }
        (None, None) => {}
    }
    Ok((account, client))
}

/// Claims about the end user shared by the ID token and userinfo.
fn user_claims(
    claims: &mut serde_json::Map<String, Value>,
    scope: &str,
    user: Option<&UserClaims>,
) {
    let Some(user) = user else {
        claims.insert("follows_account".into(), Value::Bool(false));
        return;
    };
    if scope.split(' ').any(|s| s == "profile") {
        if let Some(n) = &user.nickname {
            claims.insert("nickname".into(), Value::from(n.clone()));
        }
        if let Some(p) = &user.avatar_url {
            claims.insert("picture".into(), Value::from(p.clone()));
        }
    }
    if let Some(u) = &user.unionid {
        claims.insert("unionid".into(), Value::from(u.clone()));
    }
    claims.insert("follows_account".into(), Value::Bool(user.subscribed));
}

/// The token endpoint: redeems a code for an access token and a signed ID token.
pub async fn token(
    gw: &Gateway,
    appid: &str,
    basic: Option<BasicCredentials>,
    params: TokenParams,
) -> Result<TokenResponse, GatewayError> {
    use TokenErrorCode::{InvalidGrant, InvalidRequest, UnsupportedGrantType};
    let (account, client) = authenticate_client(gw, appid, basic, &params).await?;
    let failed = |why| {
        gw.stats
            .login_failed(&account.id, client.login_mode.as_str(), &client.id, why);
    };
    if params.grant_type.as_deref() != Some("authorization_code") {
        return Err(GatewayError::token(
            UnsupportedGrantType,
            "only authorization_code is supported",
        ));
    }
    let code = params
        .code
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or(GatewayError::token(InvalidRequest, "code is required"))?;
    let now = gw.now();
    let code_hash = token_hash(code);
    let access_token = random_token();
    let issued = NewAccessToken {
        token_hash: token_hash(&access_token),
        expires_at: now + ACCESS_TOKEN_LIFETIME_SECS * 1000,
    };
    let (redemption, context) = gw
        .store
        .redeem_auth_code_with_claims(&code_hash, &client.id, &issued, now)
        .await?;
    let record = match redemption {
        CodeRedemption::Redeemed(record) => record,
        CodeRedemption::AlreadyUsed { revoked_tokens } => {
            failed(stats::LoginFailure::Expired);
            tracing::warn!(client = %client.client_id, revoked_tokens, "authorization code reused; its tokens are revoked");
            return Err(GatewayError::token(
                InvalidGrant,
                "the code was already used",
            ));
        }
        CodeRedemption::Expired => {
            failed(stats::LoginFailure::Expired);
            return Err(GatewayError::token(InvalidGrant, "the code has expired"));
        }
        CodeRedemption::NotFound => {
            return Err(GatewayError::token(InvalidGrant, "unknown code"));
        }
    };
    // The code is spent; if the request does not match it, the token issued with the spend
    // (never shown to anyone) is revoked.
    if let Err(refused) = check_code_binding(&record, &params) {
        failed(match &refused {
            GatewayError::Token { description, .. } if description.contains("redirect_uri") => {
                stats::LoginFailure::RedirectUri
            }
            _ => stats::LoginFailure::Pkce,
        });
        gw.store
            .revoke_access_token(&issued.token_hash, now)
            .await?;
        return Err(refused);
    }
    let iat = now.div_euclid(1000);
    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), Value::from(gw.issuer(appid)));
    claims.insert("sub".into(), Value::from(record.openid.clone()));
    claims.insert("aud".into(), Value::from(client.client_id.clone()));
    claims.insert("iat".into(), Value::from(iat));
    claims.insert("exp".into(), Value::from(iat + ACCESS_TOKEN_LIFETIME_SECS));
    claims.insert(
        "auth_time".into(),
        Value::from(record.created_at.div_euclid(1000)),
    );
    if let Some(nonce) = &record.nonce {
        claims.insert("nonce".into(), Value::from(nonce.clone()));
    }
    user_claims(&mut claims, &record.scope, context.user.as_ref());
    let key = gw
        .keys
        .for_active_kid(
            &gw.store,
            &gw.vault,
            client.id_token_signed_response_alg,
            context.active_signing_kid.as_deref(),
            now,
        )
        .await?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: ACCESS_TOKEN_LIFETIME_SECS,
        id_token: key.sign_jwt(&Value::Object(claims))?,
        scope: record.scope,
    })
}

/// The redirect_uri and PKCE binding of a redeemed code (RFC 6749 §4.1.3, RFC 7636 §4.6).
fn check_code_binding(record: &AuthCode, params: &TokenParams) -> Result<(), GatewayError> {
    use TokenErrorCode::InvalidGrant;
    if params.redirect_uri.as_deref() != Some(record.redirect_uri.as_str()) {
        return Err(GatewayError::token(
            InvalidGrant,
            "redirect_uri differs from the authorization request",
        ));
    }
    match (&record.code_challenge, params.code_verifier.as_deref()) {
        (Some(challenge), Some(verifier)) => {
            let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            let ok: bool = computed.as_bytes().ct_eq(challenge.as_bytes()).into();
            if !is_pkce_value(verifier) || !ok {
                return Err(GatewayError::token(
                    InvalidGrant,
                    "PKCE verification failed",
                ));
            }
            Ok(())
        }
        (Some(_), None) => Err(GatewayError::token(
            InvalidGrant,
            "code_verifier is required",
        )),
        (None, Some(_)) => Err(GatewayError::token(
            InvalidGrant,
            "code_verifier given but the authorization request had no code_challenge",
        )),
        (None, None) => Ok(()),
    }
}

/// The userinfo endpoint (OIDC Core §5.3) for a bearer access token.
pub async fn userinfo(
    gw: &Gateway,
    appid: &str,
    bearer: Option<&str>,
) -> Result<Value, GatewayError> {
    let bearer = bearer.ok_or(GatewayError::InvalidAccessToken)?;
    // One query: a live token issued at this (active) account, with its user's claims.
    let grant = gw
        .store
        .find_userinfo_grant(appid, &token_hash(bearer), gw.now())
        .await?
        .ok_or(GatewayError::InvalidAccessToken)?;
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), Value::from(grant.openid));
    user_claims(&mut claims, &grant.scope, grant.user.as_ref());
    Ok(Value::Object(claims))
}
