//! Runs one test body against a fresh database of either kind.
//!
//! SQLite: a new file in a temporary directory removed afterwards. PostgreSQL: when
//! `WXHUB_TEST_POSTGRES_URL` names a server where the user may create databases, a new
//! database `test_<uuid>` created for the test and dropped after it (also when it fails);
//! otherwise the test says so on stderr and passes. The databases come from `testkit`.

use std::future::Future;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Executor, Row};
use store::accounts::{Account, AccountKind, AccountSecrets, NewAccount, TokenMode};
use store::people::{NewUser, Role, User};
use store::{DatabaseKind, Store};
pub use testkit::TempDir;
use testkit::TestDatabase;

/// Fixed test time: 2025-01-01T00:00:00Z. Tests move time by adding to it.
pub const NOW: i64 = 1_735_689_600_000;

/// A fresh, migrated database.
pub struct TestDb {
    pub store: Store,
    /// The URL the store was opened with (to open it again).
    pub url: String,
    /// A separate pool to look under the store's API in assertions.
    pub raw: Raw,
}

/// Direct access for assertions.
pub enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl TestDb {
    pub fn kind(&self) -> DatabaseKind {
        self.store.kind()
    }

    /// Rows in `table` (a fixed name from the test, not input).
    pub async fn count_rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) AS n FROM {table}");
        match &self.raw {
            Raw::Sqlite(pool) => sqlx::query(AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
                .unwrap()
                .get("n"),
            Raw::Postgres(pool) => sqlx::query(AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
                .unwrap()
                .get("n"),
        }
    }

    /// Runs a statement given per dialect; whether the database accepted it.
    pub async fn try_execute(&self, sqlite: &str, postgres: &str) -> bool {
        match &self.raw {
            Raw::Sqlite(pool) => pool.execute(AssertSqlSafe(sqlite.to_owned())).await.is_ok(),
            Raw::Postgres(pool) => pool
                .execute(AssertSqlSafe(postgres.to_owned()))
                .await
                .is_ok(),
        }
    }

    /// Runs a statement given per dialect.
    pub async fn execute(&self, sqlite: &str, postgres: &str) {
        match &self.raw {
            Raw::Sqlite(pool) => {
                pool.execute(AssertSqlSafe(sqlite.to_owned()))
                    .await
                    .unwrap();
            }
            Raw::Postgres(pool) => {
                pool.execute(AssertSqlSafe(postgres.to_owned()))
                    .await
                    .unwrap();
            }
        }
    }
}

/// Runs `test` against a fresh SQLite file.
pub async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = TestDatabase::sqlite();
    let file = db.sqlite_file().expect("an SQLite file").to_owned();
    let url = db.url().to_owned();
    let store = Store::connect(&url)
        .await
        .expect("open the SQLite test database");
    let raw = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(SqliteConnectOptions::new().filename(&file))
        .await
        .unwrap();
    let outcome = tokio::spawn(test(TestDb {
        store,
        url,
        raw: Raw::Sqlite(raw),
    }))
    .await;
    db.finish().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// Runs `test` against a fresh PostgreSQL database, or reports that it did not run.
pub async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let url = db.url().to_owned();
    let outcome = async {
        let store = Store::connect(&url)
            .await
            .expect("open the PostgreSQL test database");
        let raw = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap();
        let handle = tokio::spawn(test(TestDb {
            store: store.clone(),
            url: url.clone(),
            raw: Raw::Postgres(raw.clone()),
        }));
        let outcome = handle.await;
        store.close().await;
        raw.close().await;
        outcome
    }
    .await;
    db.finish().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// Creates an owner with a unique email.
pub async fn owner(store: &Store) -> User {
    let id = store::new_id();
    store
        .create_user(
            &NewUser {
                email: format!("owner-{id}@example.com"),
                id,
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
                role: Role::Owner,
            },
            NOW,
        )
        .await
        .unwrap()
}

/// Stand-in vault output: recognisable bytes, not real ciphertext (the store treats them as
/// opaque).
pub fn secrets(kek_id: &str) -> AccountSecrets {
    AccountSecrets {
        wrapped_dek: format!("wrapped-dek-under-{kek_id}-{}", uuid::Uuid::now_v7()).into_bytes(),
        dek_kek_id: kek_id.to_owned(),
        appsecret: b"appsecret-ciphertext".to_vec(),
        push_token: Some(b"push-token-ciphertext".to_vec()),
        encoding_aes_key: None,
    }
}

/// A new account description for `owner` with `appid`.
pub fn new_account(owner: &User, appid: &str) -> NewAccount {
    NewAccount {
        id: store::new_id(),
        owner_user_id: owner.id.clone(),
        appid: appid.to_owned(),
        name: format!("Account {appid}"),
        kind: AccountKind::Service,
        verified: true,
        token_mode: TokenMode::Token,
        secrets: secrets("kek-1"),
        appsecret_hint: Some("cret".to_owned()),
    }
}

/// Creates an owner and one account.
pub async fn account(store: &Store, appid: &str) -> Account {
    let owner = owner(store).await;
    store
        .create_account(&new_account(&owner, appid), NOW)
        .await
        .unwrap()
}
