//! Registering OIDC clients (tenant websites). Until the dashboard exists, `wxhub client
//! create` calls [`create_client`].
//!
//! Redirect URIs are checked once here (absolute http(s), no fragment, RFC 6749 §3.1.2) and
//! then compared byte for byte at every authorize request. A confidential client's secret is
//! returned once and only its hash is stored.

use store::Store;
use store::oidc::{LoginMode, OidcClient};

use crate::oidc::login_refusal;
use crate::{new_client_secret, random_alnum};

/// What to register.
#[derive(Debug, Clone)]
pub struct NewClient {
    /// The account's appid.
    pub appid: String,
    /// A name for people (shown in logs and, later, the dashboard).
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub login_mode: LoginMode,
    /// A public client (a single-page or mobile app) has no secret and must use PKCE.
    pub public: bool,
}

/// Why a client cannot be registered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no account with appid {0}")]
    UnknownAccount(String),
    #[error(
        "account {appid} cannot offer WeChat login: {reason}; only verified service accounts can use WeChat web authorization"
    )]
    AccountCannotLogin { appid: String, reason: &'static str },
    #[error("redirect URI {uri:?} is not acceptable: {reason}")]
    BadRedirectUri { uri: String, reason: &'static str },
    #[error("at least one redirect URI is required")]
    NoRedirectUri,
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

fn check_redirect_uri(uri: &str) -> Result<(), ClientError> {
    let bad = |reason| ClientError::BadRedirectUri {
        uri: uri.to_owned(),
        reason,
    };
    let parsed = url::Url::parse(uri).map_err(|_| bad("not an absolute URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("must be http or https"));
    }
    if parsed.fragment().is_some() || uri.contains('#') {
        return Err(bad("must not contain a fragment (RFC 6749 §3.1.2)"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("must not contain user information"));
    }
    Ok(())
}

/// Registers a client; returns it and, for a confidential client, its secret (show it once).
pub async fn create_client(
    store: &Store,
    new: &NewClient,
    now: i64,
) -> Result<(OidcClient, Option<String>), ClientError> {
    if new.redirect_uris.is_empty() {
        return Err(ClientError::NoRedirectUri);
    }
    for uri in &new.redirect_uris {
        check_redirect_uri(uri)?;
    }
    let account = store
        .find_account_by_appid(&new.appid)
        .await?
        .ok_or_else(|| ClientError::UnknownAccount(new.appid.clone()))?;
    if let Some(refusal) = login_refusal(&account) {
        return Err(ClientError::AccountCannotLogin {
            appid: new.appid.clone(),
            reason: match refusal {
                crate::error::LoginRefusal::SubscriptionAccount => "it is a subscription account",
                crate::error::LoginRefusal::Unverified => "it is not verified",
            },
        });
    }
    let (secret, hash) = if new.public {
        (None, None)
    } else {
        let (secret, hash) = new_client_secret();
        (Some(secret), Some(hash))
    };
    let client = OidcClient {
        id: store::new_id(),
        account_id: account.id,
        client_id: format!("wxc_{}", random_alnum(24)),
        client_secret_hash: hash,
        redirect_uris: new.redirect_uris.clone(),
        login_mode: new.login_mode,
        name: new.name.clone(),
        created_at: now,
    };
    let client = store.create_oidc_client(&client, now).await?;
    Ok((client, secret))
}
