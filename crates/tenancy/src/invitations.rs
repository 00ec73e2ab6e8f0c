//! One-time links that let a person set their password: the only way a password is ever set
//! on a person created without one.
//!
//! Three kinds exist, all single use: the first operator's setup link (issued while no
//! operator exists, valid 1 hour, naming nobody: the page asks for the email), an operator's
//! setup link from `wxhub operator create` (1 hour), and an operator's invitation of an owner
//! (7 days). Issuing a new link for a person retires their unused ones, so only the newest
//! works. The token is returned once; only its SHA-256 is stored.

use std::time::Duration;

use serde_json::json;
use store::people::{NewUser, Role, User};
use store::sign_in::{LinkPurpose, LinkUse, NO_PASSWORD, NewPasswordLink, PasswordLink};
use vault::SecretString;

use crate::credentials;
use crate::policy::{self, Operation};
use crate::{Principal, Tenancy, TenancyError};

/// How long an owner's invitation works.
pub const INVITATION_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long an operator's setup link works: an operator sees every account, so the window
/// in which a forwarded or leaked link can be used is short.
pub const SETUP_VALIDITY: Duration = Duration::from_secs(3600);

/// The audit action of using a link.
pub const LINK_USED: &str = "person.set_password";

/// A freshly issued link: its token (shown once), what it is for, and until when it works.
#[derive(Debug)]
pub struct OneTimeLink {
    pub token: SecretString,
    pub purpose: LinkPurpose,
    pub role: Role,
    /// Unix ms.
    pub expires_at: i64,
}

/// An invitation: the person (created without a password if new) and their link.
#[derive(Debug)]
pub struct Invitation {
    pub person: User,
    pub link: OneTimeLink,
}

fn validity(role: Role) -> (LinkPurpose, Duration) {
    match role {
        Role::Owner => (LinkPurpose::Invitation, INVITATION_VALIDITY),
        Role::Operator => (LinkPurpose::Setup, SETUP_VALIDITY),
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Tenancy {
    /// Invites a person with `role`: creates them without a password when they are new (a
    /// person invited before who never set a password gets a new link, and the old one stops
    /// working) and returns their one-time link. Refused for someone who already has a
    /// password or is disabled.
    pub async fn invite_person(
        &self,
        principal: &Principal,
        email: &str,
        role: Role,
    ) -> Result<Invitation, TenancyError> {
        policy::authorize(principal, Operation::PersonInvite, None)?;
        let email = crate::people::checked_email(email)?;
        let existing = self.store().find_user_by_email(&email).await?;
        let new_user = match &existing {
            Some(user) if user.role != role => {
                return Err(TenancyError::invalid(
                    "email",
                    format!("{email} is already registered as an {}", user.role),
                ));
            }
            Some(user) if user.disabled => {
                return Err(TenancyError::invalid(
                    "email",
                    format!("{email} is disabled; enable them before inviting them again"),
                ));
            }
            Some(user) if user.password_hash != NO_PASSWORD => {
                return Err(TenancyError::invalid(
                    "email",
                    format!("{email} has set a password already and can sign in"),
                ));
            }
            Some(_) => None,
            None => Some(NewUser {
                id: store::new_id(),
                email: email.clone(),
                password_hash: NO_PASSWORD.to_owned(),
                role,
            }),
        };
        let user_id = match (&existing, &new_user) {
            (Some(user), _) => user.id.clone(),
            (None, Some(user)) => user.id.clone(),
            (None, None) => unreachable!("a person is either found or new"),
        };
        let (purpose, valid_for) = validity(role);
        let token = credentials::generate_link_token()?;
        let expires_at = self.now().saturating_add(millis(valid_for));
        let link = NewPasswordLink {
            id: token.hash,
            purpose,
            user_id: Some(user_id.clone()),
            role,
            created_by: principal.actor().to_owned(),
            expires_at,
        };
        let record = self
            .record(principal, Operation::PersonInvite, None)
            .target(user_id)
            .details(json!({
                "email": email,
                "role": role.as_str(),
                "new_person": new_user.is_some(),
                "expires_at": expires_at,
            }));
        let created = self
            .store()
            .issue_password_link(new_user.as_ref(), &link, self.now(), &record)
            .await
            .map_err(|error| match error {
                store::StoreError::Duplicate { .. } => TenancyError::Conflict {
                    what: "person email",
                },
                other => other.into(),
            })?;
        let person = match (created, existing) {
            (Some(person), _) | (None, Some(person)) => person,
            (None, None) => return Err(TenancyError::NotFound { what: "person" }),
        };
        Ok(Invitation {
            person,
            link: OneTimeLink {
                token: token.secret,
                purpose,
                role,
                expires_at,
            },
        })
    }

    /// The setup link for the first operator, while no operator exists (`None` once one
    /// does). It names nobody: whoever opens it first chooses the operator's email and
    /// password. Each call retires the previous unused one.
    pub async fn first_operator_setup_link(
        &self,
        principal: &Principal,
    ) -> Result<Option<OneTimeLink>, TenancyError> {
        policy::authorize(principal, Operation::PersonInvite, None)?;
        if self.store().count_users_with_role(Role::Operator).await? > 0 {
            return Ok(None);
        }
        let token = credentials::generate_link_token()?;
        let expires_at = self.now().saturating_add(millis(SETUP_VALIDITY));
        let link = NewPasswordLink {
            id: token.hash,
            purpose: LinkPurpose::Setup,
            user_id: None,
            role: Role::Operator,
            created_by: principal.actor().to_owned(),
            expires_at,
        };
        let record = self
            .record(principal, Operation::PersonInvite, None)
            .details(
                json!({ "role": "operator", "first_operator": true, "expires_at": expires_at }),
            );
        self.store()
            .issue_password_link(None, &link, self.now(), &record)
            .await?;
        Ok(Some(OneTimeLink {
            token: token.secret,
            purpose: LinkPurpose::Setup,
            role: Role::Operator,
            expires_at,
        }))
    }

    /// The link with `token`, if it still works (unused, not expired, its person enabled
    /// and without a password). Anyone holding the token may ask.
    pub async fn password_link(&self, token: &str) -> Result<PasswordLink, TenancyError> {
        self.store()
            .find_password_link(&credentials::hash_secret(token), self.now())
            .await?
            .ok_or(TenancyError::NotFound { what: "link" })
    }

    /// Uses the link with `token` once: sets the password of the person it names to
    /// `password_hash` (an argon2id PHC string), or, for the first operator's setup link,
    /// creates the operator with `email`. Audited as the person. Returns the person.
    pub async fn use_password_link(
        &self,
        token: &str,
        email: Option<&str>,
        password_hash: &str,
    ) -> Result<User, TenancyError> {
        if !password_hash.starts_with("$argon2id$") {
            return Err(TenancyError::invalid(
                "password",
                "passwords are stored as argon2id hashes only",
            ));
        }
        let link = self.password_link(token).await?;
        let new_user = match (&link.user_id, email) {
            (Some(_), _) => None,
            (None, Some(email)) => Some((store::new_id(), crate::people::checked_email(email)?)),
            (None, None) => {
                return Err(TenancyError::invalid(
                    "email",
                    "enter the email address you will sign in with",
                ));
            }
        };
        let record = store::audit::AuditRecord::new("", LINK_USED).details(json!({
            "purpose": link.purpose.as_str(),
            "role": link.role.as_str(),
            "email": link.email.clone().or_else(|| new_user.as_ref().map(|(_, e)| e.clone())),
        }));
        let link_use = LinkUse {
            password_hash: password_hash.to_owned(),
            new_user,
        };
        self.store()
            .use_password_link(&link.id, self.now(), &link_use, &record)
            .await
            .map_err(|error| match error {
                store::StoreError::Duplicate { .. } => TenancyError::Conflict {
                    what: "person email",
                },
                store::StoreError::NotFound { .. } => TenancyError::NotFound { what: "link" },
                other => other.into(),
            })
    }

    /// People with `role` ordered by id after `after_id`, at most `limit`.
    pub async fn list_people_with_role(
        &self,
        principal: &Principal,
        role: Role,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<User>, TenancyError> {
        policy::authorize(principal, Operation::PersonList, None)?;
        Ok(self
            .store()
            .list_users_with_role_page(role, after_id, limit)
            .await?)
    }
}
