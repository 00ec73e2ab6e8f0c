//! The SQLite database's files are readable by wxhub's user only (SQLite-only tests: a
//! PostgreSQL server keeps its own files).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use store::{SQLITE_FILE_MODE, Store};
use testkit::TestDatabase;

use crate::harness::owner;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{} should exist: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn companion(db: &Path, suffix: &str) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

/// Opens the store and writes through it, so SQLite has its -wal and -shm files open.
async fn open_and_write(url: &str) -> Store {
    let store = Store::connect(url).await.expect("open the SQLite store");
    owner(&store).await;
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_database_wal_and_shm_files_are_private() {
    let db = TestDatabase::sqlite();
    let file = db.sqlite_file().unwrap().to_owned();
    // The usual umask would leave SQLite's own files 0644.
    let store = open_and_write(db.url()).await;
    for path in [
        file.clone(),
        companion(&file, "-wal"),
        companion(&file, "-shm"),
    ] {
        assert_eq!(
            mode(&path),
            SQLITE_FILE_MODE,
            "{} has mode {:04o}",
            path.display(),
            mode(&path)
        );
    }
    store.close().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readable_database_file_is_made_private_when_opened() {
    let db = TestDatabase::sqlite();
    let file = db.sqlite_file().unwrap().to_owned();
    open_and_write(db.url()).await.close().await;
    // A database left group- and world-readable by an older version, with a -shm file that
    // outlived a crash.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let shm = companion(&file, "-shm");
    std::fs::write(&shm, b"").unwrap();
    std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o644)).unwrap();

    let store = Store::connect(db.url()).await.expect("reopen the store");
    assert_eq!(mode(&file), SQLITE_FILE_MODE);
    assert_eq!(mode(&shm), SQLITE_FILE_MODE);
    // The data is still there.
    assert_eq!(store.count_users().await.unwrap(), 1);
    store.close().await;
    db.finish().await;
}

/// The write-ahead log is copied into the database file by the store's own checkpointer
/// while the store is open and idle (its commits no longer do it themselves), and it stays
/// bounded while writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_ahead_log_is_checkpointed_in_the_background() {
    let db = TestDatabase::sqlite();
    let file = db.sqlite_file().unwrap().to_owned();
    let store = open_and_write(db.url()).await;
    let owner = owner(&store).await;
    let size = |path: &Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let before = size(&file);
    // Some 2,000 accounts in 20 commits: several thousand pages of log.
    for batch in 0..20 {
        let accounts: Vec<_> = (0..100)
            .map(|i| crate::harness::new_account(&owner, &format!("wx{:016x}", batch * 1000 + i)))
            .collect();
        store
            .create_accounts(&accounts, crate::harness::NOW, None)
            .await
            .unwrap();
    }
    let mut checkpoints = store
        .wal_checkpoints()
        .expect("a file database has a checkpointer");
    while size(&file) < before + 1_000_000 {
        // Each checkpoint copies what the log holds; the writes above woke the checkpointer.
        tokio::time::timeout(std::time::Duration::from_secs(10), checkpoints.changed())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no checkpoint for 10 s, and the database file is {} bytes ({before} before)",
                    size(&file)
                )
            })
            .unwrap();
    }
    let wal = size(&companion(&file, "-wal"));
    assert!(
        wal < 20_000 * 4096,
        "the log has grown to {wal} bytes, past the backstop"
    );
    store.close().await;
    db.finish().await;
}
