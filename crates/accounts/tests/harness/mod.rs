//! A fresh database per test: an SQLite file in a temporary directory, or (when
//! `WXHUB_TEST_POSTGRES_URL` is set) a new PostgreSQL database dropped afterwards; both
//! from `testkit`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use store::Store;
use testkit::TestDatabase;

/// Fixed test time: 2025-01-01T00:00:00Z.
pub const NOW: i64 = 1_735_689_600_000;

/// A fresh, migrated database and what is needed to look under it.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    /// The SQLite file, for byte-level inspection.
    pub sqlite_file: Option<PathBuf>,
    db: TestDatabase,
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let db = TestDatabase::sqlite();
        let url = db.url().to_owned();
        let store = Store::connect(&url).await.expect("open SQLite");
        Self {
            store,
            url,
            sqlite_file: db.sqlite_file().map(Path::to_path_buf),
            db,
        }
    }

    /// `None` (after saying so on stderr) when no PostgreSQL server is configured.
    pub async fn postgres() -> Option<Self> {
        let db = TestDatabase::postgres().await?;
        let url = db.url().to_owned();
        let store = Store::connect(&url).await.expect("open PostgreSQL");
        Some(Self {
            store,
            url,
            sqlite_file: None,
            db,
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
        testkit::fixtures::owner(&self.store, NOW).await.id
    }

    pub async fn finish(self) {
        self.store.close().await;
        self.db.finish().await;
    }
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
