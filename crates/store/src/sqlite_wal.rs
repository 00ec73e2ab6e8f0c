//! Where SQLite's WAL is checkpointed: on a background task, not in the commit that fills it.
//!
//! SQLite's automatic checkpoint runs inside the `COMMIT` that takes the write-ahead log past
//! 1000 pages: that commit copies the log's pages into the database file and, with
//! `synchronous = NORMAL`, waits for two `fsync`s. On a push every few milliseconds this is one
//! commit in a hundred or so, and it was the tail of the push callback: the pushes that took
//! 5–8 ms to record instead of 0.3 ms (docs/performance.md, push routes). Here each connection
//! gets a WAL hook instead (which replaces the automatic checkpoint): past
//! [`CHECKPOINT_PAGES`] it wakes the store's checkpointer, which runs a `PASSIVE` checkpoint on
//! its own connection. A passive checkpoint takes no lock a writer needs, so commits go on
//! while it copies and syncs; SQLite starts the log from its beginning again at the next write
//! once everything in it has been copied.
//!
//! Bounded: should the checkpointer fall behind (a long read keeps the log from being copied
//! past its snapshot, or the task is starved), a commit that finds more than
//! [`BACKSTOP_PAGES`] in the log checkpoints itself, as SQLite would have at 1000.

use std::os::raw::{c_char, c_int, c_void};
use std::time::Duration;

use sqlx::sqlite::{LockedSqliteHandle, SqliteConnection};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// Log size (pages) at which a commit wakes the checkpointer: SQLite's own default.
pub(crate) const CHECKPOINT_PAGES: c_int = 1000;
/// Log size (pages, 4 KiB each: 80 MiB) at which a commit checkpoints itself.
pub(crate) const BACKSTOP_PAGES: c_int = 20_000;
/// The shortest time between two checkpoints, so a log that cannot be copied past a long
/// read's snapshot is not retried on every commit.
const MIN_SPACING: Duration = Duration::from_millis(50);
/// A checkpoint at least this often while the store is open, in case a wake-up was missed
/// (one comes with every commit past [`CHECKPOINT_PAGES`], so this is a fallback).
const FALLBACK: Duration = Duration::from_secs(5);

/// Wakes the checkpointers. One for the whole process: the hook runs on the driver's threads
/// and needs no pointer into a store that its connections could outlive; a store whose log is
/// short just finds little to copy.
static WANTED: Notify = Notify::const_new();

/// The WAL hook: called by SQLite after each commit with the log's size in pages.
extern "C" fn committed(
    _: *mut c_void,
    db: *mut libsqlite3_sys::sqlite3,
    name: *const c_char,
    pages: c_int,
) -> c_int {
    if pages >= BACKSTOP_PAGES {
        // SAFETY: SQLite calls the hook on the committing connection's thread, outside any
        // statement, with its own `db` and schema name: what the checkpoint takes (the
        // default hook makes this same call).
        unsafe {
            libsqlite3_sys::sqlite3_wal_checkpoint_v2(
                db,
                name,
                libsqlite3_sys::SQLITE_CHECKPOINT_PASSIVE,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
    } else if pages >= CHECKPOINT_PAGES {
        WANTED.notify_waiters();
    }
    libsqlite3_sys::SQLITE_OK
}

/// Gives the connection the hook above, in place of SQLite's automatic checkpoint.
pub(crate) fn install(handle: &mut LockedSqliteHandle<'_>) {
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is the connection's open handle, locked away from the driver's thread for the
    // duration of this call (`LockedSqliteHandle`); `committed` is a plain function that never
    // unwinds and reads no argument, so the null pointer is never used.
    unsafe {
        libsqlite3_sys::sqlite3_wal_hook(db, Some(committed), std::ptr::null_mut());
    }
}

/// The store's checkpointer; stops when the last clone of the store is dropped.
pub(crate) struct Checkpointer {
    task: JoinHandle<()>,
    /// Checkpoints completed so far (for tests, which wait for one instead of sleeping).
    done: watch::Receiver<u64>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Checkpointer {
    /// Stops it (when the store is closed).
    pub(crate) fn stop(&self) {
        self.task.abort();
    }

    /// Follows the number of checkpoints completed.
    #[cfg_attr(not(feature = "test-fixtures"), allow(dead_code))]
    pub(crate) fn done(&self) -> watch::Receiver<u64> {
        self.done.clone()
    }
}

/// Starts the checkpointer on `connection`, its own: not one of the pool's, so a checkpoint
/// never makes a statement wait for a connection.
pub(crate) fn spawn(mut connection: SqliteConnection) -> Checkpointer {
    let (count, done) = watch::channel(0u64);
    let task = tokio::spawn(async move {
        loop {
            let wanted = WANTED.notified();
            // Whatever fills the log from here on wakes the next round.
            tokio::pin!(wanted);
            wanted.as_mut().enable();
            match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut connection)
                .await
            {
                Ok(_) => count.send_modify(|n| *n += 1),
                // The commit past the backstop checkpoints should this keep failing.
                Err(error) => tracing::warn!(%error, "WAL checkpoint failed"),
            }
            tokio::time::sleep(MIN_SPACING).await;
            let _ = tokio::time::timeout(FALLBACK, wanted).await;
        }
    });
    Checkpointer { task, done }
}
