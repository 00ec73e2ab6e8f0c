//! Websites: the OpenID Connect clients through which an account's tenant sites log their
//! users in with WeChat. Registered with checked redirect URIs, edited, their secrets rotated
//! (shown once, stored as a hash), deleted.
//!
//! Redirect URIs are checked once here and then compared byte for byte at every authorize
//! request (RFC 6749 §3.1.2): https, or http to a loopback host only; no wildcard, no
//! fragment, no user information; the scheme and host lower-cased before storing, because
//! OIDC libraries send the URI in its normalised form and `HTTPS://RP.example/cb` as typed
//! would then never match.

use serde_json::json;
use store::accounts::{Account, AccountKind};
use store::changes::ChangeKind;
use store::oidc::{ClientEdit, LoginMode, LoginSurface, OidcClient, SigningAlg};
use vault::SecretString;

use crate::credentials;
use crate::policy::Operation;
use crate::settings::https_or_loopback_http;
use crate::{Principal, Tenancy, TenancyError};

/// How many redirect URIs a website may register.
pub const MAX_REDIRECT_URIS: usize = 20;

/// A website to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebsite {
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub login_mode: LoginMode,
    /// A public client (single-page or mobile app): no secret, PKCE required.
    pub public: bool,
}

/// What an edit of a website changes; `None` keeps a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebsiteChanges {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub login_mode: Option<LoginMode>,
    /// The algorithm of its ID tokens: RS256 for every relying-party library, ES256 for those
    /// configured to accept it.
    pub id_token_signed_response_alg: Option<SigningAlg>,
    /// Where its logins happen: by browser (`auto`), always WeChat's authorize page, or always
    /// the scan page.
    pub login_surface: Option<LoginSurface>,
    /// Whether a PC scan must be confirmed in WeChat: `Some(None)` returns to the default (on
    /// when the account's pushes are in plain mode, whose bodies nobody signs).
    pub scan_confirmation: Option<Option<bool>>,
}

/// A registered website, with its secret when one was just made (shown once).
#[derive(Debug)]
pub struct WebsiteWithSecret {
    pub client: OidcClient,
    /// The issuer URL the website's OIDC library is configured with.
    pub issuer: String,
    pub secret: Option<SecretString>,
}

/// Checks and normalises one redirect URI.
pub fn normalize_redirect_uri(uri: &str) -> Result<String, TenancyError> {
    let uri = uri.trim();
    let bad = |reason: &str| {
        TenancyError::invalid(
            "redirect_uri",
            format!("{uri:?} is not acceptable: {reason}"),
        )
    };
    if uri.contains('*') {
        return Err(bad("wildcards are not allowed; register each exact URI"));
    }
    if uri.contains('#') {
        return Err(bad("it must not contain a fragment (RFC 6749 §3.1.2)"));
    }
    let parsed = url::Url::parse(uri).map_err(|_| bad("it is not an absolute URL"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("it must not contain user information"));
    }
    if !https_or_loopback_http(&parsed) {
        return Err(bad(
            "it must be https (http is allowed only to 127.0.0.1, [::1] or localhost)",
        ));
    }
    // Lower-case the scheme and host as typed, and keep the rest exactly: the URI is
    // compared byte for byte later, and re-serialising the path could change what the
    // website sends.
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| bad("it has no scheme"))?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    Ok(format!(
        "{}://{}{}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase(),
        tail
    ))
}

fn checked_uris(uris: &[String]) -> Result<Vec<String>, TenancyError> {
    if uris.is_empty() {
        return Err(TenancyError::invalid(
            "redirect_uri",
            "at least one redirect URI is required",
        ));
    }
    if uris.len() > MAX_REDIRECT_URIS {
        return Err(TenancyError::invalid(
            "redirect_uri",
            format!("at most {MAX_REDIRECT_URIS} redirect URIs"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(uris.len());
    for uri in uris {
        let normal = normalize_redirect_uri(uri)?;
        if !out.contains(&normal) {
            out.push(normal);
        }
    }
    Ok(out)
}

fn checked_name(name: &str) -> Result<String, TenancyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(TenancyError::invalid(
            "name",
            "a website needs a name of 1 to 100 characters",
        ));
    }
    Ok(name.to_owned())
}

fn edit_details(edit: &ClientEdit) -> serde_json::Value {
    json!({
        "name": edit.name,
        "redirect_uris": edit.redirect_uris,
        "login_mode": edit.login_mode.as_str(),
        "id_token_signed_response_alg": edit.id_token_signed_response_alg.as_str(),
        "login_surface": edit.login_surface.as_str(),
        "scan_confirmation": edit.scan_confirmation,
    })
}

/// Why an account cannot offer WeChat web login (docs/wechat.md §4: verified service
/// accounts only), in words; `None` when it can.
pub fn web_login_refusal(account: &Account) -> Option<&'static str> {
    if account.kind == AccountKind::Subscription {
        Some("it is a subscription account")
    } else if !account.verified {
        Some("it is not verified")
    } else {
        None
    }
}

impl Tenancy {
    fn issuer(&self, appid: &str) -> String {
        format!(
            "{}/t/{appid}",
            self.config().public_url.as_str().trim_end_matches('/')
        )
    }

    /// Registers a website for the account. Returns its client_id, issuer and, for a
    /// confidential client, the secret (shown once).
    pub async fn create_website(
        &self,
        principal: &Principal,
        appid: &str,
        new: &NewWebsite,
    ) -> Result<WebsiteWithSecret, TenancyError> {
        let account = self
            .authorized_account(principal, Operation::WebsiteCreate, appid)
            .await?;
        if let Some(reason) = web_login_refusal(&account) {
            return Err(TenancyError::invalid(
                "account",
                format!(
                    "{appid} cannot offer WeChat login: {reason}; only verified service accounts \
                     can use WeChat web authorization"
                ),
            ));
        }
        let name = checked_name(&new.name)?;
        let redirect_uris = checked_uris(&new.redirect_uris)?;
        let secret = if new.public {
            None
        } else {
            Some(credentials::generate_client_secret()?)
        };
        let client = OidcClient {
            id: store::new_id(),
            account_id: account.id.clone(),
            client_id: credentials::generate_client_id()?,
            client_secret_hash: secret.as_ref().map(|s| s.hash.clone()),
            redirect_uris,
            login_mode: new.login_mode,
            name,
            created_at: self.now(),
            id_token_signed_response_alg: store::oidc::SigningAlg::default(),
            login_surface: store::oidc::LoginSurface::Auto,
            scan_confirmation: None,
        };
        let record = self
            .record(principal, Operation::WebsiteCreate, Some(&account))
            .target(client.client_id.clone())
            .details(json!({
                "appid": account.appid,
                "name": client.name,
                "redirect_uris": client.redirect_uris,
                "login_mode": client.login_mode.as_str(),
                "public": new.public,
            }))
            .announce(ChangeKind::Websites);
        let client = self
            .store()
            .create_oidc_client(&client, self.now(), &record)
            .await?;
        Ok(WebsiteWithSecret {
            client,
            issuer: self.issuer(&account.appid),
            secret: secret.map(|s| s.secret),
        })
    }

    /// The account's websites.
    pub async fn list_websites(
        &self,
        principal: &Principal,
        appid: &str,
    ) -> Result<Vec<OidcClient>, TenancyError> {
        let account = self
            .authorized_account(principal, Operation::WebsiteList, appid)
            .await?;
        Ok(self.store().list_oidc_clients(&account.id).await?)
    }

    async fn website_of(
        &self,
        principal: &Principal,
        operation: Operation,
        appid: &str,
        client_id: &str,
    ) -> Result<(Account, OidcClient), TenancyError> {
        let account = self.authorized_account(principal, operation, appid).await?;
        match self.store().find_oidc_client(client_id).await? {
            Some(client) if client.account_id == account.id => Ok((account, client)),
            _ => Err(TenancyError::NotFound { what: "website" }),
        }
    }

    /// One website with its issuer.
    pub async fn website(
        &self,
        principal: &Principal,
        appid: &str,
        client_id: &str,
    ) -> Result<WebsiteWithSecret, TenancyError> {
        let (account, client) = self
            .website_of(principal, Operation::WebsiteView, appid, client_id)
            .await?;
        Ok(WebsiteWithSecret {
            client,
            issuer: self.issuer(&account.appid),
            secret: None,
        })
    }

    /// Changes a website's settings (see [`WebsiteChanges`]), as one audited edit whose entry
    /// shows every field before and after.
    pub async fn edit_website(
        &self,
        principal: &Principal,
        appid: &str,
        client_id: &str,
        changes: &WebsiteChanges,
    ) -> Result<OidcClient, TenancyError> {
        let (account, client) = self
            .website_of(principal, Operation::WebsiteEdit, appid, client_id)
            .await?;
        let kept = ClientEdit::from(&client);
        let edit = ClientEdit {
            name: match &changes.name {
                Some(name) => checked_name(name)?,
                None => kept.name.clone(),
            },
            redirect_uris: match &changes.redirect_uris {
                Some(uris) => checked_uris(uris)?,
                None => kept.redirect_uris.clone(),
            },
            login_mode: changes.login_mode.unwrap_or(kept.login_mode),
            id_token_signed_response_alg: changes
                .id_token_signed_response_alg
                .unwrap_or(kept.id_token_signed_response_alg),
            login_surface: changes.login_surface.unwrap_or(kept.login_surface),
            scan_confirmation: changes.scan_confirmation.unwrap_or(kept.scan_confirmation),
        };
        let record = self
            .record(principal, Operation::WebsiteEdit, Some(&account))
            .target(client.client_id.clone())
            .details(json!({
                "appid": account.appid,
                "before": edit_details(&kept),
                "after": edit_details(&edit),
            }))
            .announce(ChangeKind::Websites);
        self.store()
            .update_oidc_client(&account.id, &client.id, &edit, self.now(), &record)
            .await?
            .ok_or(TenancyError::NotFound { what: "website" })
    }

    /// Replaces a confidential website's client secret; the new one is returned once and the
    /// old one stops working at once.
    pub async fn rotate_website_secret(
        &self,
        principal: &Principal,
        appid: &str,
        client_id: &str,
    ) -> Result<SecretString, TenancyError> {
        let (account, client) = self
            .website_of(principal, Operation::WebsiteRotateSecret, appid, client_id)
            .await?;
        if client.client_secret_hash.is_none() {
            return Err(TenancyError::invalid(
                "client_id",
                "a public client has no secret to rotate (it authenticates with PKCE alone)",
            ));
        }
        let secret = credentials::generate_client_secret()?;
        let record = self
            .record(principal, Operation::WebsiteRotateSecret, Some(&account))
            .target(client.client_id.clone())
            .details(json!({ "appid": account.appid, "client_secret": "rotated" }))
            .announce(ChangeKind::Websites);
        if !self
            .store()
            .set_oidc_client_secret(&account.id, &client.id, &secret.hash, self.now(), &record)
            .await?
        {
            return Err(TenancyError::NotFound { what: "website" });
        }
        Ok(secret.secret)
    }

    /// Deletes a website with its pending logins, codes and tokens.
    pub async fn delete_website(
        &self,
        principal: &Principal,
        appid: &str,
        client_id: &str,
    ) -> Result<(), TenancyError> {
        let (account, client) = self
            .website_of(principal, Operation::WebsiteDelete, appid, client_id)
            .await?;
        let record = self
            .record(principal, Operation::WebsiteDelete, Some(&account))
            .target(client.client_id.clone())
            .details(json!({ "appid": account.appid, "name": client.name }))
            .announce(ChangeKind::Websites);
        if !self
            .store()
            .delete_oidc_client(&account.id, &client.id, self.now(), &record)
            .await?
        {
            return Err(TenancyError::NotFound { what: "website" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_and_host_are_lower_cased_and_the_rest_kept() {
        assert_eq!(
            normalize_redirect_uri("HTTPS://RP.Example/Cb?x=Y").unwrap(),
            "https://rp.example/Cb?x=Y"
        );
        assert_eq!(
            normalize_redirect_uri("http://LOCALHOST:8080/cb").unwrap(),
            "http://localhost:8080/cb"
        );
        assert_eq!(
            normalize_redirect_uri("http://127.0.0.1:9/cb").unwrap(),
            "http://127.0.0.1:9/cb"
        );
    }

    #[test]
    fn unsafe_redirect_uris_are_refused_with_the_reason() {
        for (uri, reason) in [
            ("https://*.rp.example/cb", "wildcard"),
            ("https://rp.example/cb#frag", "fragment"),
            ("https://user:pw@rp.example/cb", "user information"),
            ("http://rp.example/cb", "https"),
            ("http://10.0.0.1/cb", "https"),
            ("ftp://rp.example/cb", "https"),
            ("/cb", "absolute"),
        ] {
            let error = normalize_redirect_uri(uri).unwrap_err().to_string();
            assert!(error.contains(reason), "{uri}: {error}");
        }
    }

    #[test]
    fn duplicate_uris_collapse_after_normalising() {
        let uris =
            checked_uris(&["https://A.example/cb".into(), "https://a.example/cb".into()]).unwrap();
        assert_eq!(uris, vec!["https://a.example/cb".to_owned()]);
        assert!(checked_uris(&[]).is_err());
    }
}
