//! Times as pages show them: Asia/Shanghai wall-clock time (the time zone WeChat's quota day
//! and the console use), and dates typed into filters.

/// Asia/Shanghai, UTC+8 (no daylight saving).
const OFFSET_MS: i64 = 8 * 3600 * 1000;

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-01-01 08:00` (Asia/Shanghai).
pub(crate) fn format(ms: i64) -> String {
    let local = ms + OFFSET_MS;
    let (year, month, day) = civil(local.div_euclid(86_400_000));
    let minutes = local.rem_euclid(86_400_000) / 60_000;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        minutes / 60,
        minutes % 60
    )
}

/// `2026-01-01T00:00:00.000Z` (UTC, for exports).
pub(crate) fn iso_utc(ms: i64) -> String {
    let (year, month, day) = civil(ms.div_euclid(86_400_000));
    let rest = ms.rem_euclid(86_400_000);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

/// The first millisecond of the Asia/Shanghai day `YYYY-MM-DD`, or `None` when it is not a
/// date.
pub(crate) fn day_start(date: &str) -> Option<i64> {
    let mut parts = date.trim().splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || !(1970..=9999).contains(&year) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    // 31 February is not a date.
    if civil(days) != (year, month, day) {
        return None;
    }
    Some(days * 86_400_000 - OFFSET_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_shanghai_and_dates_read_back() {
        // 2026-01-01T00:00:00Z is 08:00 in Shanghai.
        assert_eq!(format(1_767_225_600_000), "2026-01-01 08:00");
        assert_eq!(iso_utc(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        assert_eq!(day_start("2026-01-01"), Some(1_767_225_600_000 - OFFSET_MS));
        assert_eq!(format(day_start("2024-02-29").unwrap()), "2024-02-29 00:00");
        assert_eq!(day_start("2026-02-31"), None);
        assert_eq!(day_start("yesterday"), None);
    }
}
