//! Statistics (docs/wechat-2.md §5–§7): `getusersummary`, `getusercumulate`,
//! `getinterfacesummary` and `getinterfacesummaryhour`, derived from what happened in the
//! simulator.
//!
//! Each account keeps its figures per day and per hour of the datacube zone (UTC+8), as they
//! happen: every follow and unfollow with its channel (`user_source`, mapped from the
//! follower's `subscribe_scene`, §6.3) and the follower count after it, and every push
//! delivery attempt to the push URL with its outcome and latency (§7.3). Aggregating at once
//! keeps the state bounded by days rather than events; at most `SimLimits::stats_days` days
//! are kept, and the follower count of the latest dropped day carries the running total.
//!
//! The answers apply the rules of §5.2 on the simulator clock: spans of 7/7/30/1 days with
//! both ends counted, `end_date` at most yesterday, nothing before `datacube_first_date`, and a
//! day's figures only from `datacube_ready_hour` of the next day on — before that the day is
//! silently left out.

use std::collections::BTreeMap;

use serde_json::json;
use wechat::api::{
    DatacubeEndpoint, InterfaceSummaryHourRow, InterfaceSummaryRow, UserCumulateRow, UserSource,
    UserSummaryRow, parse_ref_date,
};
use wechat::clock::{date_of_day, day_index, day_of_date};
use wechat::errcode::ErrCode;

use crate::config::{InterfaceCounting, SimConfig, ms};
use crate::push::{Delivery, DeliveryAttempt};
use crate::quota;
use crate::state::State;
use crate::tokens;
use crate::wire::{ApiError, Reply, WireRequest, json_str};

const MS_PER_DAY: i64 = 86_400_000;
const MS_PER_HOUR: i64 = 3_600_000;

/// Follows and unfollows of one day.
#[derive(Debug, Clone, Default)]
struct FollowDay {
    /// `user_source` → (new_user, cancel_user).
    sources: BTreeMap<UserSource, (i64, i64)>,
    /// Followers after the day's last change.
    followers: i64,
}

/// Push callbacks of one hour.
#[derive(Debug, Clone, Copy, Default)]
struct Callbacks {
    count: i64,
    fails: i64,
    total_ms: i64,
    max_ms: i64,
}

impl Callbacks {
    fn add(&mut self, other: Callbacks) {
        self.count = self.count.saturating_add(other.count);
        self.fails = self.fails.saturating_add(other.fails);
        self.total_ms = self.total_ms.saturating_add(other.total_ms);
        self.max_ms = self.max_ms.max(other.max_ms);
    }
}

/// One account's figures.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stats {
    follow_days: BTreeMap<i64, FollowDay>,
    /// Followers at the end of the latest day dropped from `follow_days`.
    baseline_followers: i64,
    /// (day, hour 0–23) → callbacks.
    hours: BTreeMap<(i64, u32), Callbacks>,
    /// Days before this one were dropped (`SimLimits::stats_days`).
    kept_from: i64,
}

/// The day and hour (0–23) of an instant in the datacube zone.
fn day_hour(cfg: &SimConfig, at_ms: i64) -> (i64, u32) {
    let offset = cfg.datacube_utc_offset_secs;
    let in_day = (at_ms + offset * 1000).rem_euclid(MS_PER_DAY);
    (
        day_index(at_ms, offset),
        u32::try_from(in_day / MS_PER_HOUR).unwrap_or(0),
    )
}

impl Stats {
    pub fn new() -> Self {
        Self {
            kept_from: i64::MIN,
            ..Self::default()
        }
    }

    /// Drops the days that fell out of `SimLimits::stats_days` before `today`; from then on
    /// days up to the last one dropped are left out of the answers.
    fn prune(&mut self, cfg: &SimConfig, today: i64) {
        let keep = i64::try_from(cfg.limits.stats_days.max(1)).unwrap_or(i64::MAX);
        let from = today.saturating_sub(keep - 1);
        let stale = self
            .follow_days
            .first_key_value()
            .is_some_and(|(d, _)| *d < from)
            || self
                .hours
                .first_key_value()
                .is_some_and(|((d, _), _)| *d < from);
        if !stale {
            return;
        }
        self.kept_from = self.kept_from.max(from);
        let kept = self.follow_days.split_off(&from);
        if let Some((_, last)) = self.follow_days.last_key_value() {
            self.baseline_followers = last.followers;
        }
        self.follow_days = kept;
        self.hours = self.hours.split_off(&(from, 0));
    }

    /// A follow (`cancel: false`) or unfollow through `source` at `at_ms`, leaving
    /// `followers` followers.
    pub fn record_follow(
        &mut self,
        cfg: &SimConfig,
        at_ms: i64,
        source: UserSource,
        cancel: bool,
        followers: usize,
    ) {
        let (day, _) = day_hour(cfg, at_ms);
        self.prune(cfg, day);
        if day < self.kept_from {
            return;
        }
        let entry = self.follow_days.entry(day).or_default();
        let counts = entry.sources.entry(source).or_default();
        if cancel {
            counts.1 = counts.1.saturating_add(1);
        } else {
            counts.0 = counts.0.saturating_add(1);
        }
        entry.followers = i64::try_from(followers).unwrap_or(i64::MAX);
    }

    fn record_callback(&mut self, cfg: &SimConfig, at_ms: i64, ok: bool, cost_ms: i64) {
        let (day, hour) = day_hour(cfg, at_ms);
        self.prune(cfg, day);
        if day < self.kept_from {
            return;
        }
        self.hours.entry((day, hour)).or_default().add(Callbacks {
            count: 1,
            fails: i64::from(!ok),
            total_ms: cost_ms,
            max_ms: cost_ms,
        });
    }

    /// Folds one push's delivery into the interface figures (§7.3): a callback fails on a
    /// timeout, a failed connection, a non-2xx status or an invalid reply; its cost is the
    /// measured latency capped at the push timeout.
    pub fn record_delivery(&mut self, cfg: &SimConfig, delivery: &Delivery) {
        let cap = ms(cfg.push_timeout);
        let cost = |a: &DeliveryAttempt| i64::try_from(a.elapsed_ms).unwrap_or(i64::MAX).min(cap);
        let ok = |a: &DeliveryAttempt| a.reply.as_ref().is_some_and(|r| r.valid);
        match cfg.interface_counting {
            InterfaceCounting::Attempts => {
                for a in &delivery.attempts {
                    self.record_callback(cfg, a.timestamp.saturating_mul(1000), ok(a), cost(a));
                }
            }
            InterfaceCounting::Pushes => {
                if let (Some(first), Some(last)) =
                    (delivery.attempts.first(), delivery.attempts.last())
                {
                    let at = first.timestamp.saturating_mul(1000);
                    self.record_callback(cfg, at, ok(last), cost(last));
                }
            }
        }
    }

    /// Followers at the end of `day`.
    fn followers_at(&self, day: i64) -> i64 {
        self.follow_days
            .range(..=day)
            .next_back()
            .map_or(self.baseline_followers, |(_, d)| d.followers)
    }
}

/// 61501 with what is wrong.
fn range_error(why: &str) -> ApiError {
    ApiError::with_msg(
        ErrCode::DATE_RANGE_ERROR,
        format!("{} hint: [{why}]", ErrCode::DATE_RANGE_ERROR.message()),
    )
}

/// One statistics call. Checks, the first failing one answers (docs/wechat-2.md §5.3): token
/// → 48001 unverified account → daily quota / minute limit when configured → 44002 empty body
/// / 47001 not a JSON object → 61500 a date missing, not `YYYY-MM-DD` or not a real date →
/// 61501 `begin_date` after `end_date`, `end_date` today or later, more days than the span,
/// `begin_date` before `datacube_first_date` → the rows of the days that have figures.
pub(crate) fn query(
    st: &mut State,
    cfg: &SimConfig,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
    ep: DatacubeEndpoint,
) -> Result<Reply, ApiError> {
    let appid = tokens::authenticate(st, now, req)?;
    *appid_out = Some(appid.clone());
    let acct = st
        .accounts
        .get_mut(&appid)
        .ok_or(ApiError::new(ErrCode::INVALID_CREDENTIAL))?;
    // §5.2: "open to all verified official accounts".
    if !acct.spec.verified {
        return Err(ApiError::new(ErrCode::API_UNAUTHORIZED));
    }
    quota::check(acct, ep.path(), cfg, now)?;
    quota::check_minute(acct, ep.path(), cfg, now)?;
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(ErrCode::EMPTY_POST_DATA));
    }
    let body = req.json_body()?;
    let date = |k: &str| {
        json_str(&body, k)
            .and_then(parse_ref_date)
            .map(day_of_date)
            .ok_or(ApiError::new(ErrCode::DATE_FORMAT_ERROR))
    };
    let begin = date("begin_date")?;
    let end = date("end_date")?;
    let offset = cfg.datacube_utc_offset_secs;
    let today = day_index(now, offset);
    if begin > end {
        return Err(range_error("begin_date is after end_date"));
    }
    if end >= today {
        return Err(range_error("end_date must be yesterday or earlier"));
    }
    if end - begin + 1 > ep.max_days() {
        return Err(range_error(&format!(
            "at most {} days, both ends counted",
            ep.max_days()
        )));
    }
    let first_date = day_of_date(cfg.datacube_first_date);
    if begin < first_date {
        return Err(range_error(&format!(
            "no data before {}",
            cfg.datacube_first_date
        )));
    }
    let history_from = if cfg.datacube_history_from_creation {
        day_index(acct.created_at, offset).max(first_date)
    } else {
        first_date
    };
    let stats = &acct.stats;
    let ready_ms = i64::from(cfg.datacube_ready_hour) * MS_PER_HOUR;
    // §5.2: day d is ready at `ready_hour` on d + 1 (zone time).
    let ready = |d: i64| now >= (d + 1) * MS_PER_DAY - offset * 1000 + ready_ms;
    let days = (begin..=end)
        .filter(|d| *d >= history_from && *d >= stats.kept_from && ready(*d))
        .filter_map(|d| date_of_day(d).map(|date| (d, date)));
    let list =
        match ep {
            DatacubeEndpoint::UserSummary => {
                let mut rows = Vec::new();
                for (d, ref_date) in days {
                    let sources = stats.follow_days.get(&d).map(|f| &f.sources);
                    match sources {
                        Some(sources) if !sources.is_empty() => {
                            rows.extend(sources.iter().map(|(source, (new, cancel))| {
                                UserSummaryRow {
                                    ref_date,
                                    user_source: *source,
                                    new_user: *new,
                                    cancel_user: *cancel,
                                }
                            }));
                        }
                        _ if cfg.datacube_quiet_day_row => rows.push(UserSummaryRow {
                            ref_date,
                            user_source: UserSource::OTHER,
                            new_user: 0,
                            cancel_user: 0,
                        }),
                        _ => {}
                    }
                }
                serde_json::to_value(rows)
            }
            DatacubeEndpoint::UserCumulate => serde_json::to_value(
                days.map(|(d, ref_date)| UserCumulateRow {
                    ref_date,
                    cumulate_user: stats.followers_at(d),
                })
                .collect::<Vec<_>>(),
            ),
            DatacubeEndpoint::InterfaceSummary => {
                let mut rows = Vec::new();
                for (d, ref_date) in days {
                    let mut total = Callbacks::default();
                    for (_, c) in stats.hours.range((d, 0)..(d + 1, 0)) {
                        total.add(*c);
                    }
                    if total.count > 0 {
                        rows.push(InterfaceSummaryRow {
                            ref_date,
                            callback_count: total.count,
                            fail_count: total.fails,
                            total_time_cost: total.total_ms,
                            max_time_cost: total.max_ms,
                        });
                    }
                }
                serde_json::to_value(rows)
            }
            DatacubeEndpoint::InterfaceSummaryHour => {
                let mut rows = Vec::new();
                for (d, ref_date) in days {
                    for ((_, hour), c) in stats.hours.range((d, 0)..(d + 1, 0)) {
                        rows.push(InterfaceSummaryHourRow {
                            ref_date,
                            // §7.2: HHMM, `100` is [01:00, 02:00).
                            ref_hour: hour * 100,
                            callback_count: c.count,
                            fail_count: c.fails,
                            total_time_cost: c.total_ms,
                            max_time_cost: c.max_ms,
                        });
                    }
                }
                serde_json::to_value(rows)
            }
        }
        .unwrap_or_default();
    Ok(Reply::Json(json!({ "list": list })))
}
