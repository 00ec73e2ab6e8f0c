//! ID-token signing keys: per algorithm ([`SigningAlg`]) at most one `next` (published, not yet
//! signing), one `active`, and any number of `retired` (published until the tokens they signed
//! expire). A unique index on (algorithm, live status) keeps that true whatever replicas race.
//!
//! Private keys arrive sealed by the vault, each under a data key of its own whose wrapped
//! form and master-key id have their own columns (`wrapped_dek`, `dek_kek_id`), so master-key
//! rotation finds and re-wraps them like every other sealed row (see [`crate::sealed`]).
//! Nothing here changes those two columns after the insert except
//! [`Store::replace_sealed_dek`].

use std::fmt;

use crate::db::{BeginWrite, Sql, StoreRow};
use crate::error::on_constraint;
use crate::{Store, StoreError};

db_enum! {
    /// Whether a signing key signs new tokens.
    pub enum SigningKeyStatus {
        /// Published in the JWKS, not yet signing: relying parties pick it up before it is
        /// activated.
        Next = "next",
        /// Signs new ID tokens.
        Active = "active",
        /// Only published in the JWKS so tokens it signed still verify.
        Retired = "retired",
    }
}

db_enum! {
    /// A JOSE signature algorithm of ID tokens (RFC 7518 §3.1), chosen per client
    /// (`id_token_signed_response_alg`).
    pub enum SigningAlg {
        /// RSASSA-PKCS1-v1_5 with SHA-256: what OIDC Core §15.1 makes mandatory and every
        /// relying-party library accepts by default.
        Rs256 = "RS256",
        /// ECDSA P-256 with SHA-256: smaller tokens, for libraries configured to accept it.
        Es256 = "ES256",
    }
}

impl SigningAlg {
    /// Every algorithm the gateway signs with, in the order discovery lists them.
    pub const ALL: [SigningAlg; 2] = [SigningAlg::Rs256, SigningAlg::Es256];
}

impl Default for SigningAlg {
    /// New clients get RS256 (see the migration that introduced the setting).
    fn default() -> Self {
        SigningAlg::Rs256
    }
}

/// A signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    /// JOSE algorithm, e.g. `RS256` or `ES256`.
    pub algorithm: String,
    /// The key's data key, wrapped under a master key (vault record).
    pub wrapped_dek: Vec<u8>,
    /// The id of the master key that wrapped it.
    pub dek_kek_id: String,
    /// Vault ciphertext of the private key, under its data key.
    pub private_key: Vec<u8>,
    /// The public JWK as JSON text.
    pub public_jwk: String,
    pub status: SigningKeyStatus,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("wrapped_dek_len", &self.wrapped_dek.len())
            .field("dek_kek_id", &self.dek_kek_id)
            .field("private_key", &"<ciphertext>")
            .field("public_jwk", &self.public_jwk)
            .field("status", &self.status)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

macro_rules! signing_key_columns {
    () => {
        "kid, algorithm, wrapped_dek, dek_kek_id, private_key, public_jwk, status, created_at, \
         retired_at"
    };
}

fn signing_key_from_row(row: &impl StoreRow) -> Result<SigningKey, sqlx::Error> {
    Ok(SigningKey {
        kid: row.text("kid")?,
        algorithm: row.text("algorithm")?,
        wrapped_dek: row.bytes("wrapped_dek")?,
        dek_kek_id: row.text("dek_kek_id")?,
        private_key: row.bytes("private_key")?,
        public_jwk: row.text("public_jwk")?,
        status: row.enumerated("status")?,
        created_at: row.int("created_at")?,
        retired_at: row.opt_int("retired_at")?,
    })
}

impl Store {
    /// Stores the first signing key of `key.algorithm` as active, unless an active key of that
    /// algorithm exists (another replica may have created one at the same moment; the unique
    /// index on live statuses decides). Returns whether this key became the active one.
    pub async fn create_first_signing_key(&self, key: &SigningKey) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO oidc_signing_keys (kid, algorithm, wrapped_dek, dek_kek_id, \
                     private_key, public_jwk, status, created_at) \
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, 'active', ?7 \
                     WHERE NOT EXISTS (SELECT 1 FROM oidc_signing_keys \
                     WHERE status = 'active' AND algorithm = ?2)",
            postgres: "INSERT INTO oidc_signing_keys (kid, algorithm, wrapped_dek, dek_kek_id, \
                       private_key, public_jwk, status, created_at) \
                       SELECT $1, $2, $3, $4, $5, $6, 'active', $7 \
                       WHERE NOT EXISTS (SELECT 1 FROM oidc_signing_keys \
                       WHERE status = 'active' AND algorithm = $2)",
        };
        let inserted = on_backend!(self, |pool, d| {
            sqlx::query(SQL.get(d))
                .bind(&key.kid)
                .bind(&key.algorithm)
                .bind(&key.wrapped_dek)
                .bind(&key.dek_kek_id)
                .bind(&key.private_key)
                .bind(&key.public_jwk)
                .bind(key.created_at)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        });
        match inserted.map_err(|e| on_constraint(e, "active signing key", "signing key")) {
            Ok(rows) => Ok(rows == 1),
            Err(StoreError::Duplicate { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Publishes `key` as the next signing key of its algorithm (in the JWKS, not signing yet).
    /// Errors: [`StoreError::Duplicate`] when a next key of that algorithm is already published.
    pub async fn publish_next_signing_key(&self, key: &SigningKey) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO oidc_signing_keys (kid, algorithm, wrapped_dek, dek_kek_id, \
                     private_key, public_jwk, status, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?, 'next', ?)",
            postgres: "INSERT INTO oidc_signing_keys (kid, algorithm, wrapped_dek, dek_kek_id, \
                       private_key, public_jwk, status, created_at) \
                       VALUES ($1, $2, $3, $4, $5, $6, 'next', $7)",
        };
        on_backend!(self, |pool, d| {
            sqlx::query(SQL.get(d))
                .bind(&key.kid)
                .bind(&key.algorithm)
                .bind(&key.wrapped_dek)
                .bind(&key.dek_kek_id)
                .bind(&key.private_key)
                .bind(&key.public_jwk)
                .bind(key.created_at)
                .execute(pool)
                .await
                .map_err(|e| on_constraint(e, "next signing key", "signing key"))?;
            Ok(())
        })
    }

    /// The newest published next key of any algorithm, if any (see
    /// [`Store::next_signing_key_for`]).
    pub async fn next_signing_key(&self) -> Result<Option<SigningKey>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM oidc_signing_keys WHERE status = 'next' ORDER BY created_at DESC LIMIT 1"
            ),
            postgres: concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM oidc_signing_keys WHERE status = 'next' ORDER BY created_at DESC LIMIT 1"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d)).fetch_optional(pool).await?;
            Ok(row.map(|r| signing_key_from_row(&r)).transpose()?)
        })
    }

    /// The published next key of `alg`, if any.
    pub async fn next_signing_key_for(
        &self,
        alg: SigningAlg,
    ) -> Result<Option<SigningKey>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM oidc_signing_keys WHERE status = 'next' AND algorithm = ?"
            ),
            postgres: concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM oidc_signing_keys WHERE status = 'next' AND algorithm = $1"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(alg.as_str())
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| signing_key_from_row(&r)).transpose()?)
        })
    }

    /// Makes the next key `kid` the active one of its algorithm and retires that algorithm's
    /// active key, in one transaction. Returns whether `kid` was a next key (nothing changes
    /// otherwise).
    pub async fn promote_next_signing_key(&self, kid: &str, now: i64) -> Result<bool, StoreError> {
        const RETIRE: Sql = Sql {
            sqlite: "UPDATE oidc_signing_keys SET status = 'retired', retired_at = ?1 \
                     WHERE status = 'active' AND algorithm = (SELECT n.algorithm \
                     FROM oidc_signing_keys n WHERE n.kid = ?2 AND n.status = 'next')",
            postgres: "UPDATE oidc_signing_keys SET status = 'retired', retired_at = $1 \
                       WHERE status = 'active' AND algorithm = (SELECT n.algorithm \
                       FROM oidc_signing_keys n WHERE n.kid = $2 AND n.status = 'next')",
        };
        const PROMOTE: Sql = Sql {
            sqlite: "UPDATE oidc_signing_keys SET status = 'active' \
                     WHERE kid = ? AND status = 'next'",
            postgres: "UPDATE oidc_signing_keys SET status = 'active' \
                       WHERE kid = $1 AND status = 'next'",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(RETIRE.get(d))
                .bind(now)
                .bind(kid)
                .execute(&mut *tx)
                .await?;
            let promoted = sqlx::query(PROMOTE.get(d))
                .bind(kid)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "active signing key", "signing key"))?
                .rows_affected()
                == 1;
            if promoted {
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            Ok(promoted)
        })
    }

    /// The key of `alg` that signs new tokens, if any.
    pub async fn active_signing_key_for(
        &self,
        alg: SigningAlg,
    ) -> Result<Option<SigningKey>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM oidc_signing_keys WHERE status = 'active' AND algorithm = ? \
                 ORDER BY created_at DESC LIMIT 1"
            ),
            postgres: concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM oidc_signing_keys WHERE status = 'active' AND algorithm = $1 \
                 ORDER BY created_at DESC LIMIT 1"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(alg.as_str())
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| signing_key_from_row(&r)).transpose()?)
        })
    }

    /// The newest active key of any algorithm, if any (see [`Store::active_signing_key_for`]).
    pub async fn active_signing_key(&self) -> Result<Option<SigningKey>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM oidc_signing_keys WHERE status = 'active' ORDER BY created_at DESC LIMIT 1"
            ),
            postgres: concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM oidc_signing_keys WHERE status = 'active' ORDER BY created_at DESC LIMIT 1"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d)).fetch_optional(pool).await?;
            Ok(row.map(|r| signing_key_from_row(&r)).transpose()?)
        })
    }

    /// Every stored key, next, active and retired, newest first (for the JWKS).
    pub async fn list_signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM oidc_signing_keys ORDER BY created_at DESC, kid"
            ),
            postgres: concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM oidc_signing_keys ORDER BY created_at DESC, kid"
            ),
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d)).fetch_all(pool).await?;
            Ok(rows
                .iter()
                .map(signing_key_from_row)
                .collect::<Result<_, _>>()?)
        })
    }

    /// Deletes keys retired before `cutoff` (once no token they signed can still be valid);
    /// returns how many.
    pub async fn delete_signing_keys_retired_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM oidc_signing_keys WHERE status = 'retired' AND retired_at < ?",
            postgres: "DELETE FROM oidc_signing_keys WHERE status = 'retired' AND retired_at < $1",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(cutoff)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }

    /// Test fixture: adds a signing key as the active one of its algorithm and retires that
    /// algorithm's previously active keys, in one transaction (the gateway publishes a next key and promotes it instead).
    /// `key.status` and `key.retired_at` are ignored.
    #[cfg(feature = "test-fixtures")]
    #[doc(hidden)]
    pub async fn activate_new_signing_key(
        &self,
        key: &SigningKey,
        now: i64,
    ) -> Result<(), StoreError> {
        const RETIRE: Sql = Sql {
            sqlite: "UPDATE oidc_signing_keys SET status = 'retired', retired_at = ? \
                     WHERE status = 'active' AND algorithm = ?",
            postgres: "UPDATE oidc_signing_keys SET status = 'retired', retired_at = $1 \
                       WHERE status = 'active' AND algorithm = $2",
        };
        const INSERT: Sql = Sql {
            sqlite: "INSERT INTO oidc_signing_keys (kid, algorithm, wrapped_dek, dek_kek_id, \
                     private_key, public_jwk, status, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?, 'active', ?)",
            postgres: "INSERT INTO oidc_signing_keys (kid, algorithm, wrapped_dek, dek_kek_id, \
                       private_key, public_jwk, status, created_at) \
                       VALUES ($1, $2, $3, $4, $5, $6, 'active', $7)",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(RETIRE.get(d))
                .bind(now)
                .bind(&key.algorithm)
                .execute(&mut *tx)
                .await?;
            sqlx::query(INSERT.get(d))
                .bind(&key.kid)
                .bind(&key.algorithm)
                .bind(&key.wrapped_dek)
                .bind(&key.dek_kek_id)
                .bind(&key.private_key)
                .bind(&key.public_jwk)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "signing key kid", "signing key"))?;
            tx.commit().await?;
            Ok(())
        })
    }
}
