//! Reading statistics: an account's counters for its owner (and operators), the platform's
//! daily totals and the busiest and most failing accounts for operators. The counters are
//! written by the `stats` crate; this is only their authorized read side.

use store::datacube::{UserCumulateDay, UserSummaryDay};
use store::stats::{Granularity, RankBy, RankPeriod, RankedAccount, SeriesPoint, Total};

use crate::policy::{self, Operation};
use crate::{Principal, Tenancy, TenancyError};

/// Longest range one read may cover: a chart of a year and a bit, never the whole history.
const MAX_RANGE_MS: i64 = 400 * 86_400_000;

fn checked_range(from: i64, to: i64) -> Result<(), TenancyError> {
    if to <= from || to - from > MAX_RANGE_MS {
        return Err(TenancyError::invalid(
            "range",
            "a statistics range runs forward and covers at most 400 days",
        ));
    }
    Ok(())
}

impl Tenancy {
    /// The account's counters of `metrics` (all when empty) per hour or day in
    /// `[from, to)` (Unix ms).
    pub async fn account_series(
        &self,
        principal: &Principal,
        appid: &str,
        granularity: Granularity,
        from: i64,
        to: i64,
        metrics: &[&str],
    ) -> Result<Vec<SeriesPoint>, TenancyError> {
        checked_range(from, to)?;
        let account = self
            .authorized_account(principal, Operation::StatsView, appid)
            .await?;
        Ok(self
            .store()
            .account_series(&account.id, granularity, from, to, metrics)
            .await?)
    }

    /// The account's totals of `metrics` per label over the days in `[from, to)`.
    pub async fn account_totals(
        &self,
        principal: &Principal,
        appid: &str,
        from: i64,
        to: i64,
        metrics: &[&str],
    ) -> Result<Vec<Total>, TenancyError> {
        checked_range(from, to)?;
        let account = self
            .authorized_account(principal, Operation::StatsView, appid)
            .await?;
        Ok(self
            .store()
            .account_totals(&account.id, from, to, metrics)
            .await?)
    }

    /// WeChat's own follower statistics of the account as synced (datacube): new and lost
    /// followers per day and channel, and the total at the end of each day, in `[from, to)`.
    pub async fn account_followers(
        &self,
        principal: &Principal,
        appid: &str,
        from: i64,
        to: i64,
    ) -> Result<(Vec<UserSummaryDay>, Vec<UserCumulateDay>), TenancyError> {
        checked_range(from, to)?;
        let account = self
            .authorized_account(principal, Operation::StatsView, appid)
            .await?;
        let store = self.store();
        Ok((
            store.datacube_user_summary(&account.id, from, to).await?,
            store.datacube_user_cumulate(&account.id, from, to).await?,
        ))
    }

    /// The platform's totals of `metrics` in `[from, to)` per day, week or month (operators).
    pub async fn platform_series(
        &self,
        principal: &Principal,
        granularity: Granularity,
        from: i64,
        to: i64,
        metrics: &[&str],
    ) -> Result<Vec<SeriesPoint>, TenancyError> {
        policy::authorize(principal, Operation::PlatformStats, None)?;
        checked_range(from, to)?;
        Ok(self
            .store()
            .platform_series(granularity, from, to, metrics)
            .await?)
    }

    /// The busiest or most failing accounts of the period starting at `start` (operators).
    pub async fn top_accounts(
        &self,
        principal: &Principal,
        period: RankPeriod,
        start: i64,
        by: RankBy,
        limit: u32,
    ) -> Result<Vec<RankedAccount>, TenancyError> {
        policy::authorize(principal, Operation::PlatformStats, None)?;
        Ok(self
            .store()
            .top_accounts(period, start, by, limit.min(100))
            .await?)
    }
}
