//! A fresh database per test, for the workspace's test suites (a dev-dependency only).
//!
//! SQLite: a new file in a temporary directory, removed when the [`TestDatabase`] is
//! finished or dropped. PostgreSQL: when [`POSTGRES_URL_VAR`] names a server where the user
//! may create databases, a new database `test_<uuid>` created on it and dropped by
//! [`TestDatabase::finish`]; when it is not set, [`TestDatabase::postgres`] prints
//! [`DID_NOT_RUN`] on stderr and returns `None`, and the test passes without running.
//!
//! This crate knows nothing of wxhub's own crates (the store's tests use it, so it must not
//! depend on the store): it hands out URLs, and each suite opens them its own way.

use std::path::{Path, PathBuf};

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// The environment variable naming the PostgreSQL server tests create databases on.
pub const POSTGRES_URL_VAR: &str = "WXHUB_TEST_POSTGRES_URL";

/// What a PostgreSQL test prints (on stderr) when it does not run. CI greps for it.
pub const DID_NOT_RUN: &str = "did not run: WXHUB_TEST_POSTGRES_URL is not set";

/// The PostgreSQL admin URL from [`POSTGRES_URL_VAR`], if set and not blank. Says nothing
/// either way (benchmarks use it to decide whether to measure PostgreSQL).
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => None,
    }
}

/// [`postgres_admin_url`], printing [`DID_NOT_RUN`] on stderr when there is none.
pub fn postgres_admin_url_or_skip() -> Option<String> {
    let url = postgres_admin_url();
    if url.is_none() {
        eprintln!("{DID_NOT_RUN}");
    }
    url
}

/// A new directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("wxhub-test-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty database: its URL, and what is needed to remove it.
pub struct TestDatabase {
    url: String,
    place: Place,
}

enum Place {
    Sqlite { dir: TempDir, file: PathBuf },
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    /// A new SQLite file `wxhub.db` (not yet created) in a new temporary directory; the URL
    /// is `sqlite://<file>`. The directory goes when this is finished or dropped.
    pub fn sqlite() -> TestDatabase {
        let dir = TempDir::new();
        let file = dir.path().join("wxhub.db");
        TestDatabase {
            url: format!("sqlite://{}", file.display()),
            place: Place::Sqlite { dir, file },
        }
    }

    /// A new PostgreSQL database on the server [`POSTGRES_URL_VAR`] names, or `None` after
    /// printing [`DID_NOT_RUN`] when it is not set. Panics when the server refuses.
    pub async fn postgres() -> Option<TestDatabase> {
        let admin_url = postgres_admin_url_or_skip()?;
        Some(TestDatabase::postgres_on(&admin_url).await)
    }

    /// A new database `test_<uuid>` on the server at `admin_url`. Panics when it refuses.
    pub async fn postgres_on(admin_url: &str) -> TestDatabase {
        let name = format!("test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(admin_url)
            .await
            .expect("connect to WXHUB_TEST_POSTGRES_URL");
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        TestDatabase {
            url: with_database(admin_url, &name),
            place: Place::Postgres {
                admin_url: admin_url.to_owned(),
                name,
            },
        }
    }

    /// The URL to open the database with.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.place, Place::Postgres { .. })
    }

    /// The SQLite file (SQLite only).
    pub fn sqlite_file(&self) -> Option<&Path> {
        match &self.place {
            Place::Sqlite { file, .. } => Some(file),
            Place::Postgres { .. } => None,
        }
    }

    /// The PostgreSQL database's name (PostgreSQL only).
    pub fn postgres_name(&self) -> Option<&str> {
        match &self.place {
            Place::Sqlite { .. } => None,
            Place::Postgres { name, .. } => Some(name),
        }
    }

    /// Removes the database: the SQLite directory, or `DROP DATABASE … WITH (FORCE)` (which
    /// also ends connections still open to it). Panics when PostgreSQL refuses.
    pub async fn finish(self) {
        match self.place {
            Place::Sqlite { dir, .. } => drop(dir),
            Place::Postgres { admin_url, name } => {
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .expect("connect to WXHUB_TEST_POSTGRES_URL");
                admin
                    .execute(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await
                    .expect("drop the test database");
                let _ = admin.close().await;
            }
        }
    }
}

/// `admin_url` with its database (path) replaced by `database`; user, host, port and query
/// (e.g. `?sslmode=…`) kept.
fn with_database(admin_url: &str, database: &str) -> String {
    let mut url = url::Url::parse(admin_url).expect("WXHUB_TEST_POSTGRES_URL is a URL");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_replaces_the_path_and_keeps_the_rest() {
        assert_eq!(
            with_database("postgres://wxhub@127.0.0.1:5432/postgres", "test_1"),
            "postgres://wxhub@127.0.0.1:5432/test_1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "test_2"),
            "postgres://u:p@h/test_2?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:1", "test_3"),
            "postgres://h:1/test_3"
        );
    }

    #[test]
    fn sqlite_directory_goes_on_drop() {
        let db = TestDatabase::sqlite();
        let file = db.sqlite_file().unwrap().to_owned();
        let dir = file.parent().unwrap().to_owned();
        assert!(dir.is_dir());
        assert_eq!(db.url(), format!("sqlite://{}", file.display()));
        drop(db);
        assert!(!dir.exists());
    }
}

/// What the suites above the store set up the same way: an owner, a keyring, a simulator.
#[cfg(feature = "fixtures")]
pub mod fixtures {
    use std::sync::Arc;

    use accounts::VaultHandle;
    use store::Store;
    use store::people::{NewUser, Role, User};
    use vault::{KeyId, Keyring, Vault};
    use wechat_sim::{RunningSim, SimConfig, Simulator};

    /// Creates an owner with a unique email and no password (`"!"` verifies nothing).
    pub async fn owner(store: &Store, now: i64) -> User {
        store
            .create_user(
                &NewUser {
                    id: store::new_id(),
                    email: format!("owner-{}@example.com", uuid::Uuid::now_v7()),
                    password_hash: "!".to_owned(),
                    role: Role::Owner,
                },
                now,
            )
            .await
            .expect("create an owner")
    }

    /// A vault with one fresh master key `k1`, fixed (never reloaded from a file).
    pub fn vault() -> Arc<VaultHandle> {
        Arc::new(VaultHandle::fixed(Vault::new(Keyring::generate(
            KeyId::new("k1").expect("a valid key id"),
        ))))
    }

    /// The simulator with `config`, serving on a free loopback port.
    pub async fn simulator(config: SimConfig) -> RunningSim {
        wechat_sim::spawn(
            Simulator::new(config),
            "127.0.0.1:0".parse().expect("an address"),
        )
        .await
        .expect("start the simulator")
    }
}
