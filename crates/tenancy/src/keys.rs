//! API keys for owners' backends: created with scopes (shown once), listed, revoked. A
//! revoke reaches every replica's key cache through the change feed within a second.

use serde_json::json;
use store::api_keys::{ApiKey, KeyScopes, NewApiKey};
use store::changes::ChangeKind;
use vault::SecretString;

use crate::credentials;
use crate::policy::Operation;
use crate::{Principal, Tenancy, TenancyError};

/// A key to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRequest {
    /// Which backend uses it (for people).
    pub label: String,
    pub scopes: KeyScopes,
    /// For the proxy: the only WeChat paths it may call (`/cgi-bin/…`); `None`: any.
    pub proxy_paths: Option<Vec<String>>,
}

/// A created key: its record, and the key itself, shown this once.
#[derive(Debug)]
pub struct CreatedKey {
    pub record: ApiKey,
    pub key: SecretString,
}

fn check_request(request: &KeyRequest) -> Result<(), TenancyError> {
    if request.label.chars().count() > 100 {
        return Err(TenancyError::invalid(
            "label",
            "a label has at most 100 characters",
        ));
    }
    if request.scopes.is_empty() {
        return Err(TenancyError::invalid(
            "scopes",
            "a key needs at least one scope: token, report or proxy",
        ));
    }
    if let Some(paths) = &request.proxy_paths {
        if !request.scopes.proxy {
            return Err(TenancyError::invalid(
                "proxy_paths",
                "proxy paths only apply to a key with the proxy scope",
            ));
        }
        if paths.is_empty() {
            return Err(TenancyError::invalid(
                "proxy_paths",
                "list at least one path, or allow every path",
            ));
        }
        for path in paths {
            let ok = path.starts_with("/cgi-bin/")
                && path.len() > "/cgi-bin/".len()
                && path
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.'))
                && !path.contains("..")
                && !path.ends_with('/');
            if !ok {
                return Err(TenancyError::invalid(
                    "proxy_paths",
                    format!(
                        "{path:?} is not a WeChat API path: write it as /cgi-bin/… without host, \
                         query or trailing slash, e.g. /cgi-bin/message/custom/send"
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl Tenancy {
    /// Creates an API key for the account's backends. The key is returned once; only its
    /// hash is stored.
    pub async fn create_api_key(
        &self,
        principal: &Principal,
        appid: &str,
        request: &KeyRequest,
    ) -> Result<CreatedKey, TenancyError> {
        let account = self
            .authorized_account(principal, Operation::ApiKeyCreate, appid)
            .await?;
        check_request(request)?;
        let generated = credentials::generate_api_key()?;
        let new = NewApiKey {
            id: store::new_id(),
            account_id: account.id.clone(),
            key_hash: generated.hash,
            label: request.label.trim().to_owned(),
            scopes: request.scopes,
            proxy_paths: request.proxy_paths.clone(),
        };
        let record = self
            .record(principal, Operation::ApiKeyCreate, Some(&account))
            .target(new.id.clone())
            .details(json!({
                "appid": account.appid,
                "label": new.label,
                "scopes": new.scopes.to_db(),
                "proxy_paths": new.proxy_paths,
            }))
            .announce(ChangeKind::ApiKeys);
        let created = self
            .store()
            .create_api_key(&new, self.now(), &record)
            .await?;
        Ok(CreatedKey {
            record: created,
            key: generated.secret,
        })
    }

    /// The account's keys (revoked ones included), never the keys themselves.
    pub async fn list_api_keys(
        &self,
        principal: &Principal,
        appid: &str,
    ) -> Result<Vec<ApiKey>, TenancyError> {
        let account = self
            .authorized_account(principal, Operation::ApiKeyList, appid)
            .await?;
        Ok(self.store().list_api_keys(&account.id).await?)
    }

    /// Revokes a key; every replica refuses it within a second.
    pub async fn revoke_api_key(
        &self,
        principal: &Principal,
        appid: &str,
        key_id: &str,
    ) -> Result<(), TenancyError> {
        let account = self
            .authorized_account(principal, Operation::ApiKeyRevoke, appid)
            .await?;
        let record = self
            .record(principal, Operation::ApiKeyRevoke, Some(&account))
            .target(key_id)
            .details(json!({ "appid": account.appid }))
            .announce(ChangeKind::ApiKeys);
        if self
            .store()
            .revoke_api_key(&account.id, key_id, self.now(), &record)
            .await?
        {
            Ok(())
        } else {
            Err(TenancyError::NotFound {
                what: "active API key",
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(paths: Option<Vec<&str>>) -> KeyRequest {
        KeyRequest {
            label: "billing".to_owned(),
            scopes: KeyScopes::ALL,
            proxy_paths: paths.map(|p| p.into_iter().map(str::to_owned).collect()),
        }
    }

    #[test]
    fn proxy_paths_must_be_bare_cgi_bin_paths() {
        assert!(check_request(&request(None)).is_ok());
        assert!(check_request(&request(Some(vec!["/cgi-bin/message/custom/send"]))).is_ok());
        for bad in [
            "/sns/userinfo",
            "/cgi-bin/",
            "/cgi-bin/../token",
            "https://api.weixin.qq.com/cgi-bin/menu/get",
            "/cgi-bin/menu/get?x=1",
        ] {
            assert!(check_request(&request(Some(vec![bad]))).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_key_needs_a_scope_and_paths_need_the_proxy_scope() {
        let mut none = request(None);
        none.scopes = KeyScopes::parse("").unwrap();
        assert!(check_request(&none).is_err());
        let mut token_only = request(Some(vec!["/cgi-bin/menu/get"]));
        token_only.scopes = KeyScopes::parse("token").unwrap();
        assert!(check_request(&token_only).is_err());
    }
}
