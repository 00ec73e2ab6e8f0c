//! Time as every time-dependent part of wxhub (and the simulator) sees it.
//!
//! Nothing in wxhub calls `SystemTime::now()` directly: it asks a [`Clock`]. Production uses
//! [`SystemClock`]; tests hand the same [`ManualClock`] to the hub and to the simulator and move
//! it forward, so a simulated day of token refreshes runs in seconds without sleeping.
//!
//! Times are integer Unix milliseconds (`i64`) everywhere in the project.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{Datelike, NaiveDate};

/// Milliseconds since the Unix epoch.
pub type UnixMillis = i64;

/// China Standard Time is UTC+8 all year (no daylight saving), and WeChat's daily quotas are
/// assumed to reset at 00:00 there (docs/wechat.md §1, §12 item 1).
pub const CHINA_UTC_OFFSET_SECS: i64 = 8 * 3600;

const MS_PER_DAY: i64 = 86_400_000;

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time in Unix milliseconds.
    fn now_ms(&self) -> UnixMillis;

    /// The current time in whole Unix seconds (WeChat's wire unit).
    fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// A shareable clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> UnixMillis {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: UnixMillis) -> Self {
        Self {
            now: Arc::new(AtomicI64::new(start_ms)),
        }
    }

    /// A clock standing at the current wall-clock time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_ms())
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    /// Puts the clock at an absolute time (it may move backwards; callers decide).
    pub fn set(&self, ms: UnixMillis) {
        self.now.store(ms, Ordering::SeqCst);
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now_ms", &self.now_ms())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> UnixMillis {
        self.now.load(Ordering::SeqCst)
    }
}

/// The number of the calendar day that `ms` falls in, in a time zone `utc_offset_secs` east of
/// UTC. Two instants share a quota day exactly when their day indexes are equal.
pub fn day_index(ms: UnixMillis, utc_offset_secs: i64) -> i64 {
    (ms + utc_offset_secs * 1000).div_euclid(MS_PER_DAY)
}

/// The first instant of the day after the one `ms` falls in (the next daily reset), in a time
/// zone `utc_offset_secs` east of UTC.
pub fn next_day_start(ms: UnixMillis, utc_offset_secs: i64) -> UnixMillis {
    (day_index(ms, utc_offset_secs) + 1) * MS_PER_DAY - utc_offset_secs * 1000
}

/// `(year, month)` of the instant in a time zone `utc_offset_secs` east of UTC; monthly budgets
/// such as WeChat's 10 `clear_quota` calls per month are keyed by it.
pub fn year_month(ms: UnixMillis, utc_offset_secs: i64) -> (i64, u32) {
    // Civil-from-days (H. Hinnant), valid for the whole i64 day range we can reach.
    let z = day_index(ms, utc_offset_secs) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01 (day 0 of [`day_index`]).
const CE_DAYS_AT_UNIX_EPOCH: i64 = 719_163;

/// The calendar date of day number `day` as [`day_index`] counts them (days since
/// 1970-01-01); `None` outside chrono's range (±262 000 years).
pub fn date_of_day(day: i64) -> Option<NaiveDate> {
    i32::try_from(day.checked_add(CE_DAYS_AT_UNIX_EPOCH)?)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
}

/// The day number of a calendar date, as [`day_index`] counts them.
pub fn day_of_date(date: NaiveDate) -> i64 {
    i64::from(date.num_days_from_ce()) - CE_DAYS_AT_UNIX_EPOCH
}

/// The calendar date the instant `ms` falls on in a time zone `utc_offset_secs` east of UTC
/// (WeChat's statistics days are China days, docs/wechat-2.md §5.2); `None` outside chrono's
/// range.
pub fn date_of(ms: UnixMillis, utc_offset_secs: i64) -> Option<NaiveDate> {
    date_of_day(day_index(ms, utc_offset_secs))
}

/// The first instant (Unix ms) of `date` in a time zone `utc_offset_secs` east of UTC.
pub fn day_start_ms(date: NaiveDate, utc_offset_secs: i64) -> UnixMillis {
    day_of_date(date) * MS_PER_DAY - utc_offset_secs * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn china_day_starts_at_1600_utc() {
        // 2026-11-24T15:59:59.999Z is 23:59:59.999 in Shanghai; one millisecond later is a new day.
        let before = 1_795_535_999_999;
        assert_eq!(
            day_index(before, CHINA_UTC_OFFSET_SECS) + 1,
            day_index(before + 1, CHINA_UTC_OFFSET_SECS)
        );
        assert_eq!(next_day_start(before, CHINA_UTC_OFFSET_SECS), before + 1);
        assert_eq!(
            next_day_start(before + 1, CHINA_UTC_OFFSET_SECS),
            before + 1 + MS_PER_DAY
        );
    }

    #[test]
    fn year_month_follows_the_calendar() {
        assert_eq!(year_month(0, 0), (1970, 1));
        // 2024-02-29T23:00:00Z is already March 1st in Shanghai.
        let leap_evening = 1_709_247_600_000;
        assert_eq!(year_month(leap_evening, 0), (2024, 2));
        assert_eq!(year_month(leap_evening, CHINA_UTC_OFFSET_SECS), (2024, 3));
    }

    #[test]
    fn dates_follow_china_days() {
        // 2026-11-24T15:59:59.999Z is 23:59:59.999 on the 24th in Shanghai.
        let before = 1_795_535_999_999;
        let d24 = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        assert_eq!(date_of(before, CHINA_UTC_OFFSET_SECS), Some(d24));
        assert_eq!(date_of(before + 1, CHINA_UTC_OFFSET_SECS), d24.succ_opt());
        assert_eq!(date_of(before, 0), Some(d24));
        assert_eq!(
            day_start_ms(d24.succ_opt().unwrap(), CHINA_UTC_OFFSET_SECS),
            before + 1
        );
        assert_eq!(date_of_day(0), NaiveDate::from_ymd_opt(1970, 1, 1));
        assert_eq!(day_of_date(d24), day_index(before, CHINA_UTC_OFFSET_SECS));
        assert_eq!(date_of_day(i64::MAX), None);
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new(1_000);
        let b = a.clone();
        a.advance(Duration::from_secs(7200));
        assert_eq!(b.now_ms(), 1_000 + 7_200_000);
        assert_eq!(b.now_secs(), 7201);
    }
}
