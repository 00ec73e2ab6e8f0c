//! The store's error type.
//!
//! Messages name what went wrong in the store's terms and never carry secrets: no bound values,
//! no ciphertext, and database URLs only in redacted form (see [`crate::redact_url`]).

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row the caller named does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `"account"`.
        what: &'static str,
    },

    /// A uniqueness rule was violated, e.g. a second account with the same appid.
    #[error("{what} already exists")]
    Duplicate {
        /// What must be unique, e.g. `"account appid"`.
        what: &'static str,
    },

    /// The row is still referenced by others and cannot be removed, e.g. a user who owns
    /// accounts.
    #[error("{what} is still in use by {by}")]
    InUse {
        /// What was to be removed.
        what: &'static str,
        /// What still refers to it.
        by: &'static str,
    },

    /// A fenced write lost: the lease was claimed again since `generation` was handed out, so
    /// another holder owns the refresh now and this result must be dropped.
    #[error("stale fence for account {account_id}: generation {generation} is no longer current")]
    StaleFence {
        /// The account whose token row was to be written.
        account_id: String,
        /// The generation the writer held.
        generation: i64,
    },

    /// The database has a migration applied that this binary does not know: it was migrated by
    /// a newer wxhub. Running an older binary against it could corrupt data.
    #[error(
        "the database schema is newer than this wxhub: it has migration {db} applied, this \
         binary knows migrations up to {binary}; run the newer wxhub (or restore a backup)"
    )]
    SchemaTooNew {
        /// The highest applied migration version the binary does not know.
        db: i64,
        /// The highest migration version the binary knows.
        binary: i64,
    },

    /// The database could not be reached or opened.
    #[error("cannot connect to the database at {url}: {cause}")]
    Unavailable {
        /// The database URL with any password removed.
        url: String,
        /// Why, with any password removed.
        cause: String,
    },

    /// The database URL could not be understood.
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl {
        /// The database URL with any password removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Applying migrations failed.
    #[error("applying database migrations failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),

    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Database(error)
    }
}

/// Maps constraint violations of one statement to the store's terms.
///
/// `duplicate` names what a unique violation means for this statement; `missing` names what
/// a foreign-key violation means (the referenced row does not exist).
pub(crate) fn on_constraint(
    error: sqlx::Error,
    duplicate: &'static str,
    missing: &'static str,
) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation => {
                return StoreError::Duplicate { what: duplicate };
            }
            sqlx::error::ErrorKind::ForeignKeyViolation => {
                return StoreError::NotFound { what: missing };
            }
            _ => {}
        }
    }
    StoreError::Database(error)
}

/// Maps a foreign-key violation on delete to [`StoreError::InUse`].
pub(crate) fn on_delete_restricted(
    error: sqlx::Error,
    what: &'static str,
    by: &'static str,
) -> StoreError {
    if let sqlx::Error::Database(db) = &error
        && db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation
    {
        return StoreError::InUse { what, by };
    }
    StoreError::Database(error)
}
