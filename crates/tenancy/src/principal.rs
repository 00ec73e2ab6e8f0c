//! Who is asking: the principal every operation takes.

use store::people::{Role, User};

use crate::{Tenancy, TenancyError};

/// The one on whose behalf an operation runs. Built only by [`Principal::cli`] or by
/// [`Tenancy::principal_for_user`], which checks that the person exists and is not disabled,
/// so a handler cannot make up an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A platform operator (dashboard user with the operator role).
    Operator {
        /// Their user id.
        user_id: String,
    },
    /// An account owner (dashboard user with the owner role).
    Owner {
        /// Their user id.
        user_id: String,
    },
    /// The `wxhub` command on the server host, which holds the keyring: acts as an operator
    /// and as every owner.
    Cli,
}

impl Principal {
    /// The local command line.
    pub fn cli() -> Self {
        Principal::Cli
    }

    /// The principal of a person, by role.
    fn of(user: &User) -> Self {
        match user.role {
            Role::Operator => Principal::Operator {
                user_id: user.id.clone(),
            },
            Role::Owner => Principal::Owner {
                user_id: user.id.clone(),
            },
        }
    }

    /// What the audit log calls this principal: the user id, or `cli`.
    pub fn actor(&self) -> &str {
        match self {
            Principal::Operator { user_id } | Principal::Owner { user_id } => user_id,
            Principal::Cli => "cli",
        }
    }

    /// The owner's user id, when the principal is an owner.
    pub fn owner_id(&self) -> Option<&str> {
        match self {
            Principal::Owner { user_id } => Some(user_id),
            _ => None,
        }
    }
}

impl Tenancy {
    /// The principal of the person `user_id`. Refuses an unknown or disabled person (as not
    /// found: a disabled person's session must not learn more than an anonymous one).
    pub async fn principal_for_user(&self, user_id: &str) -> Result<Principal, TenancyError> {
        match self.store().get_user(user_id).await? {
            Some(user) if !user.disabled => Ok(Principal::of(&user)),
            _ => Err(TenancyError::NotFound { what: "person" }),
        }
    }
}
