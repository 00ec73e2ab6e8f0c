//! How a SQLite connection waits for another's write lock.
//!
//! SQLite has one writer at a time; the pool's other connections that want to write wait. The
//! wait `busy_timeout` installs sleeps 1, 2, 5, 10, 15, 20, 25 … ms between attempts
//! (`sqliteDefaultBusyCallback`), so a write that finds the lock taken for 0.2 ms is answered
//! 1–3 ms later. With pushes arriving at once that was most of their p99: 4 senders got 1.14×
//! the acknowledgements and a third to a seventh of the p99 with this handler instead
//! (docs/performance.md, push routes). This handler
//! tries again every 50 µs for the first 10 ms, then every millisecond, and gives up after the
//! same 5 s as [`crate::SQLITE_BUSY_TIMEOUT`] (the statement then fails with `SQLITE_BUSY`, as
//! before).
//!
//! It runs on the driver's own thread for the connection, which blocks in SQLite anyway while
//! it waits, so sleeping there holds up nothing else.

use std::os::raw::{c_int, c_void};
use std::time::Duration;

use sqlx::sqlite::LockedSqliteHandle;

const FAST: Duration = Duration::from_micros(50);
/// Attempts at [`FAST`] spacing: 10 ms.
const FAST_ATTEMPTS: c_int = 200;
const SLOW: Duration = Duration::from_millis(1);

/// Attempts in all: 10 ms of fast ones, then [`SLOW`] ones up to the busy timeout.
fn attempts_allowed() -> c_int {
    let slow = crate::SQLITE_BUSY_TIMEOUT.saturating_sub(FAST * FAST_ATTEMPTS as u32);
    FAST_ATTEMPTS + c_int::try_from(slow.as_millis()).unwrap_or(c_int::MAX)
}

/// Whether to try again after `attempts` failed ones, sleeping first if so.
fn wait(attempts: c_int) -> bool {
    if attempts >= attempts_allowed() {
        return false;
    }
    std::thread::sleep(if attempts < FAST_ATTEMPTS { FAST } else { SLOW });
    true
}

extern "C" fn busy(_: *mut c_void, attempts: c_int) -> c_int {
    c_int::from(wait(attempts))
}

/// Replaces the connection's busy handler (and so its `busy_timeout`) with [`busy`].
pub(crate) fn install(handle: &mut LockedSqliteHandle<'_>) {
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is the connection's open handle, locked away from the driver's thread for the
    // duration of this call (`LockedSqliteHandle`); `busy` is a plain function that never
    // unwinds and uses no argument, so the null pointer is never read.
    unsafe {
        libsqlite3_sys::sqlite3_busy_handler(db, Some(busy), std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_short_at_first_and_ends_with_the_busy_timeout() {
        assert!(wait(0));
        assert!(wait(FAST_ATTEMPTS - 1));
        let allowed = attempts_allowed();
        // 10 ms at 50 µs, then 1 ms each: 200 + 4,990 attempts for 5 s.
        assert_eq!(allowed, 200 + 4_990);
        assert!(!wait(allowed));
        assert!(!wait(allowed + 1));
    }
}
