//! People: dashboard users (owners and operators), the end users of an account, and the
//! audit log they leave.

use serde_json::json;
use store::audit::{AuditEntry, AuditFilter};
use store::end_users::EndUser;
use store::people::{NewUser, Role, User};

use crate::policy::{self, Operation};
use crate::{Principal, Tenancy, TenancyError};

/// `email`, trimmed, if it looks like an address (one `@`, something on both sides, no
/// spaces). Deliverability is the invitation's business.
pub(crate) fn checked_email(email: &str) -> Result<String, TenancyError> {
    let email = email.trim();
    let ok = email.len() <= 254
        && !email.contains(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        });
    if ok {
        Ok(email.to_owned())
    } else {
        Err(TenancyError::invalid(
            "email",
            format!("{email:?} is not an email address"),
        ))
    }
}

/// What to look for in the audit log. Owners must name one of their accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub appid: Option<String>,
    /// A person's email or user id, or `cli`, `system`, `scheduler`.
    pub actor: Option<String>,
    /// An operation name (`api_key.revoke`).
    pub action: Option<String>,
    pub from: Option<i64>,
    pub until: Option<i64>,
}

impl Tenancy {
    /// Creates an owner or an operator, without a password (the dashboard's invitation sets
    /// one; until then nothing verifies).
    pub async fn create_person(
        &self,
        principal: &Principal,
        email: &str,
        role: Role,
    ) -> Result<User, TenancyError> {
        policy::authorize(principal, Operation::PersonCreate, None)?;
        let email = checked_email(email)?;
        let user = NewUser {
            id: store::new_id(),
            email: email.clone(),
            password_hash: "!".to_owned(),
            role,
        };
        let record = self
            .record(principal, Operation::PersonCreate, None)
            .target(user.id.clone())
            .details(json!({ "email": email, "role": role.as_str() }));
        self.store()
            .create_user_audited(&user, self.now(), &record)
            .await
            .map_err(|error| match error {
                store::StoreError::Duplicate { .. } => TenancyError::Conflict {
                    what: "person email",
                },
                other => other.into(),
            })
    }

    /// Disables a person (their sessions end) or enables them again. An operator cannot
    /// disable themselves (someone must be left to undo it).
    pub async fn set_person_disabled(
        &self,
        principal: &Principal,
        user_id: &str,
        disabled: bool,
    ) -> Result<(), TenancyError> {
        let operation = if disabled {
            Operation::PersonDisable
        } else {
            Operation::PersonEnable
        };
        policy::authorize(principal, operation, None)?;
        if disabled && principal.actor() == user_id {
            return Err(TenancyError::invalid(
                "user",
                "you cannot disable yourself; ask another operator",
            ));
        }
        let user = self
            .store()
            .get_user(user_id)
            .await?
            .ok_or(TenancyError::NotFound { what: "person" })?;
        let record = self
            .record(principal, operation, None)
            .target(user.id.clone())
            .details(json!({ "email": user.email, "before": user.disabled, "after": disabled }));
        self.store()
            .set_user_disabled(&user.id, disabled, self.now(), &record)
            .await?;
        Ok(())
    }

    /// Removes a person's second factor and ends their sessions (they lost their
    /// authenticator): they sign in with their password and enrol again. Operators only, and
    /// not their own (another operator must, so a stolen session cannot drop the factor).
    pub async fn reset_person_totp(
        &self,
        principal: &Principal,
        user_id: &str,
    ) -> Result<(), TenancyError> {
        policy::authorize(principal, Operation::PersonResetTotp, None)?;
        if principal.actor() == user_id {
            return Err(TenancyError::invalid(
                "user",
                "you cannot reset your own two-step sign-in; ask another operator",
            ));
        }
        let user = self
            .store()
            .get_user(user_id)
            .await?
            .ok_or(TenancyError::NotFound { what: "person" })?;
        let record = self
            .record(principal, Operation::PersonResetTotp, None)
            .target(user.id.clone())
            .details(json!({ "email": user.email }));
        if !self
            .store()
            .reset_totp(&user.id, self.now(), &record)
            .await?
        {
            return Err(TenancyError::invalid(
                "user",
                format!("{} has no two-step sign-in to reset", user.email),
            ));
        }
        Ok(())
    }

    /// People ordered by id after `after_id`, at most `limit`.
    pub async fn list_people(
        &self,
        principal: &Principal,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<User>, TenancyError> {
        policy::authorize(principal, Operation::PersonList, None)?;
        Ok(self.store().list_users_page(after_id, limit).await?)
    }

    /// An account's end users whose openid or nickname contains `query`, ordered by openid
    /// after `after_openid` (pass the last openid of the previous page), at most `limit`.
    pub async fn list_end_users(
        &self,
        principal: &Principal,
        appid: &str,
        query: Option<&str>,
        after_openid: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EndUser>, TenancyError> {
        let account = self
            .authorized_account(principal, Operation::EndUserList, appid)
            .await?;
        Ok(self
            .store()
            .search_end_users_page(&account.id, query, after_openid, limit)
            .await?)
    }

    /// Open sign-up: creates an owner with `password_hash` (already hashed by the caller),
    /// when the hub allows it ([`crate::TenancyConfig::open_sign_up`]); refused otherwise. The
    /// entry's actor is the new person.
    pub async fn sign_up_owner(
        &self,
        email: &str,
        password_hash: &str,
    ) -> Result<User, TenancyError> {
        if !self.config().open_sign_up {
            return Err(TenancyError::Denied {
                operation: "person.sign_up",
            });
        }
        let email = checked_email(email)?;
        let user = NewUser {
            id: store::new_id(),
            email: email.clone(),
            password_hash: password_hash.to_owned(),
            role: Role::Owner,
        };
        let record = store::audit::AuditRecord::new(user.id.clone(), "person.sign_up")
            .target(user.id.clone())
            .details(json!({ "email": email, "role": "owner" }));
        Ok(self
            .store()
            .create_user_audited(&user, self.now(), &record)
            .await?)
    }

    /// Audit entries matching `query`, newest first, older than the entry `before_id`, at
    /// most `limit`. An owner sees the entries of one of their accounts at a time.
    pub async fn list_audit(
        &self,
        principal: &Principal,
        query: &AuditQuery,
        before_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, TenancyError> {
        let account_id = match &query.appid {
            Some(appid) => Some(
                self.authorized_account(principal, Operation::AuditList, appid)
                    .await?
                    .id,
            ),
            None => {
                policy::authorize(principal, Operation::AuditList, None)?;
                if principal.owner_id().is_some() {
                    return Err(TenancyError::invalid(
                        "appid",
                        "name one of your accounts to see its audit log",
                    ));
                }
                None
            }
        };
        let actor = match query.actor.as_deref().map(str::trim) {
            Some(email) if email.contains('@') => {
                match self.store().find_user_by_email(email).await? {
                    Some(user) => Some(user.id),
                    None => {
                        return Err(TenancyError::invalid(
                            "actor",
                            format!("no one has the email {email:?}"),
                        ));
                    }
                }
            }
            other => other.map(str::to_owned),
        };
        let filter = AuditFilter {
            account_id,
            actor,
            action: query.action.clone(),
            from: query.from,
            until: query.until,
        };
        Ok(self
            .store()
            .list_audit_page(&filter, before_id, limit)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert_eq!(checked_email(" me@example.com ").unwrap(), "me@example.com");
        for bad in [
            "me",
            "@example.com",
            "me@localhost",
            "me @example.com",
            "a@b@c.d",
        ] {
            assert!(checked_email(bad).is_err(), "{bad}");
        }
    }
}
