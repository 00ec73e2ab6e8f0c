//! The calendar statistics are kept in: UTC hours, and China-time (UTC+8) days, Monday-based
//! weeks and months — the days of WeChat's own statistics (docs/wechat-2.md §5.2) and of its
//! daily quotas, so a chart's day and a datacube day are the same day. China has no daylight
//! saving time, so the offset is a constant.

use chrono::{Datelike, Days, NaiveDate};

/// UTC+8, in ms.
pub const OFFSET_MS: i64 = 8 * HOUR_MS;
/// One hour, in ms.
pub const HOUR_MS: i64 = 3_600_000;
/// One day, in ms.
pub const DAY_MS: i64 = 24 * HOUR_MS;

const EPOCH: NaiveDate = match NaiveDate::from_ymd_opt(1970, 1, 1) {
    Some(d) => d,
    None => NaiveDate::MIN,
};

/// The start of the UTC hour containing `at` (Unix ms). China-time hours start at the same
/// instants (the offset is whole hours).
pub fn hour_start(at: i64) -> i64 {
    at.div_euclid(HOUR_MS) * HOUR_MS
}

/// Days since 1970-01-01 of the China-time day containing `at`.
fn day_number(at: i64) -> i64 {
    (at + OFFSET_MS).div_euclid(DAY_MS)
}

fn from_day_number(n: i64) -> i64 {
    n * DAY_MS - OFFSET_MS
}

/// The start of the China-time day containing `at` (Unix ms).
pub fn day_start(at: i64) -> i64 {
    from_day_number(day_number(at))
}

/// The start of the China-time week (Monday 00:00) containing `at`.
pub fn week_start(at: i64) -> i64 {
    let n = day_number(at);
    // 1970-01-01 was a Thursday: day 0 is weekday 3 counted from Monday.
    from_day_number(n - (n + 3).rem_euclid(7))
}

/// The start of the China-time month containing `at`.
pub fn month_start(at: i64) -> i64 {
    let date = date_of(at);
    let first = date.with_day(1).unwrap_or(date);
    start_of_date(first)
}

/// The start of the next China-time month after the one containing `at`.
pub fn next_month_start(at: i64) -> i64 {
    let first = date_of(month_start(at));
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(first);
    start_of_date(next)
}

/// The China-time calendar date of `at`.
pub fn date_of(at: i64) -> NaiveDate {
    let n = day_number(at);
    if n >= 0 {
        EPOCH.checked_add_days(Days::new(n.unsigned_abs()))
    } else {
        EPOCH.checked_sub_days(Days::new(n.unsigned_abs()))
    }
    .unwrap_or(EPOCH)
}

/// The start (Unix ms) of a China-time calendar date.
pub fn start_of_date(date: NaiveDate) -> i64 {
    from_day_number((date - EPOCH).num_days())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i32, m: u32, d: u32, h: u32) -> i64 {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    }

    #[test]
    fn days_weeks_and_months_are_china_time() {
        // 2026-03-01 16:30 UTC is 2026-03-02 00:30 in China: a Monday.
        let at = ms(2026, 3, 1, 16) + 30 * 60_000;
        assert_eq!(day_start(at), ms(2026, 3, 1, 16));
        assert_eq!(week_start(at), ms(2026, 3, 1, 16));
        assert_eq!(date_of(at), NaiveDate::from_ymd_opt(2026, 3, 2).unwrap());
        assert_eq!(month_start(at), ms(2026, 2, 28, 16));
        assert_eq!(next_month_start(at), ms(2026, 3, 31, 16));
        // 15:59 UTC is still the 1st in China (23:59), a Sunday of the week before.
        let before = ms(2026, 3, 1, 15) + 59 * 60_000;
        assert_eq!(day_start(before), ms(2026, 2, 28, 16));
        assert_eq!(week_start(before), ms(2026, 2, 22, 16));
        assert_eq!(hour_start(at), ms(2026, 3, 1, 16));
        let date = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        assert_eq!(date_of(start_of_date(date)), date);
        assert_eq!(start_of_date(date), day_start(at));
    }
}
