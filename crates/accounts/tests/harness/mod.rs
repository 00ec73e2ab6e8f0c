//! A fresh database per test: an SQLite file in a temporary directory, or (when
//! `WXHUB_TEST_POSTGRES_URL` is set) a new PostgreSQL database dropped afterwards.

#![allow(dead_code)]

use std::path::PathBuf;

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use store::Store;
use store::people::{NewUser, Role};

/// Fixed test time: 2025-01-01T00:00:00Z.
pub const NOW: i64 = 1_735_689_600_000;

/// A fresh, migrated database and what is needed to look under it.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    /// The SQLite file, for byte-level inspection.
    pub sqlite_file: Option<PathBuf>,
    /// The PostgreSQL database name and the admin URL it was created from.
    pg: Option<(String, String)>,
    dir: Option<PathBuf>,
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("wxhub-accounts-test-{}", store::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("wxhub.db");
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let store = Store::connect(&url).await.expect("open SQLite");
        Self {
            store,
            url,
            sqlite_file: Some(file),
            pg: None,
            dir: Some(dir),
        }
    }

    /// `None` (after saying so on stderr) when no PostgreSQL server is configured.
    pub async fn postgres() -> Option<Self> {
        let admin = match std::env::var("WXHUB_TEST_POSTGRES_URL") {
            Ok(url) if !url.trim().is_empty() => url,
            _ => {
                eprintln!("did not run: WXHUB_TEST_POSTGRES_URL is not set");
                return None;
            }
        };
        let name = format!("test_{}", store::new_id().replace('-', ""));
        let mut conn = PgConnection::connect(&admin).await.expect("connect admin");
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create test database");
        let url = with_database(&admin, &name);
        let store = Store::connect(&url).await.expect("open PostgreSQL");
        Some(Self {
            store,
            url,
            sqlite_file: None,
            pg: Some((name, admin)),
            dir: None,
        })
    }

    /// Every byte the database keeps: the SQLite file and its WAL, or a `pg_dump` of the
    /// PostgreSQL database.
    pub async fn all_bytes(&self) -> Vec<u8> {
        if let Some(file) = &self.sqlite_file {
            let mut bytes = std::fs::read(file).unwrap();
            let wal = PathBuf::from(format!("{}-wal", file.display()));
            if let Ok(more) = std::fs::read(wal) {
                bytes.extend(more);
            }
            return bytes;
        }
        let output = std::process::Command::new(pg_dump())
            .arg("--dbname")
            .arg(&self.url)
            .output()
            .expect("run pg_dump");
        assert!(
            output.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    pub async fn owner(&self) -> String {
        let user = self
            .store
            .create_user(
                &NewUser {
                    id: store::new_id(),
                    email: format!("{}@example.com", store::new_id()),
                    password_hash: "!".to_owned(),
                    role: Role::Owner,
                },
                NOW,
            )
            .await
            .unwrap();
        user.id
    }

    pub async fn finish(self) {
        self.store.close().await;
        if let Some((name, admin)) = &self.pg {
            let mut conn = PgConnection::connect(admin).await.expect("connect admin");
            conn.execute(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .await
            .expect("drop test database");
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn with_database(admin: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin).expect("WXHUB_TEST_POSTGRES_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// `pg_dump` from PATH, or from the PostgreSQL 15 install CI uses.
fn pg_dump() -> PathBuf {
    let packaged = PathBuf::from("/usr/lib/postgresql/15/bin/pg_dump");
    if packaged.exists() {
        packaged
    } else {
        PathBuf::from("pg_dump")
    }
}
