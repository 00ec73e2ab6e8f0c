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
//!
//! For the canary check ([`canary`]), when [`canary::ARTIFACTS_VAR`] names a directory the
//! temporary directories (and so the SQLite files) are made under it and kept, and the first
//! database or directory a test process asks for installs a tracing subscriber writing to
//! `logs/` there, so whatever the code under test logs can be scanned afterwards.

pub mod canary;

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

/// Installs, once per process, a tracing subscriber writing everything the code under test
/// logs (at `debug`, or as [`TEST_LOG_VAR`] says) to `logs/<test binary>-<pid>.log` under
/// [`canary::ARTIFACTS_VAR`], each line naming its thread (libtest names threads after
/// tests). Does nothing when the variable is not set, or when a subscriber is already set.
pub fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Some(dir) = canary::artifacts_dir() else {
            return;
        };
        let dir = dir.join("logs");
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        let exe = std::env::current_exe().ok();
        let name = exe
            .as_deref()
            .and_then(Path::file_stem)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "test".to_owned());
        let path = dir.join(format!("{name}-{}.log", std::process::id()));
        let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        else {
            return;
        };
        let filter = std::env::var(TEST_LOG_VAR).unwrap_or_else(|_| DEFAULT_TEST_LOG.to_owned());
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .with_thread_names(true)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// The tracing filter of [`capture_logs`] (`tracing_subscriber::EnvFilter` syntax).
pub const TEST_LOG_VAR: &str = "WXHUB_TEST_LOG";

/// Everything wxhub logs; the HTTP and TLS libraries' own chatter and sqlx's per-statement
/// lines (SQL text without bound values) only from `info`.
const DEFAULT_TEST_LOG: &str = "debug,sqlx=info,hyper=info,hyper_util=info,h2=info,rustls=info,tungstenite=info,tokio_tungstenite=info";

/// A new directory under the system temp dir, removed (with its contents) on drop — or, when
/// [`canary::ARTIFACTS_VAR`] is set, under `tmp/` there and kept for the canary check.
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    pub fn new() -> Self {
        capture_logs();
        let name = format!("wxhub-test-{}", uuid::Uuid::now_v7());
        let (path, keep) = match canary::artifacts_dir() {
            Some(dir) => (dir.join("tmp").join(name), true),
            None => (std::env::temp_dir().join(name), false),
        };
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self { path, keep }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the directory is kept for the canary check instead of removed on drop.
    pub fn is_kept(&self) -> bool {
        self.keep
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
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
        capture_logs();
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
        let kept = match &db.place {
            Place::Sqlite { dir, .. } => dir.is_kept(),
            Place::Postgres { .. } => unreachable!(),
        };
        drop(db);
        // Under the canary check the directory stays for the scan; otherwise it goes.
        assert_eq!(dir.exists(), kept);
        assert_eq!(kept, canary::artifacts_dir().is_some());
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

    /// A vault with one master key `k1`, fixed (never reloaded from a file). The key is a
    /// canary ([`crate::canary::master_key_bytes`]), a different one for each call.
    pub fn vault() -> Arc<VaultHandle> {
        Arc::new(VaultHandle::fixed(Vault::new(keyring("k1"))))
    }

    /// A keyring with one canary master key `id`, active, a different key for each call.
    pub fn keyring(id: &str) -> Keyring {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let keyring =
            Keyring::from_toml_str(&crate::canary::keyring_toml(id, n), "a canary keyring")
                .expect("a valid canary keyring");
        debug_assert_eq!(
            keyring.active_id().as_str(),
            KeyId::new(id).expect("a key id").as_str()
        );
        keyring
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
