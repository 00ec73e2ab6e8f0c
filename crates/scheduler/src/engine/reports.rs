//! Rejected-token reports: before a backend's report spends a refresh, WeChat confirms that
//! it really rejects the token, and reports are capped per API key.
//!
//! A backend's "WeChat rejected this token" is a claim, and a buggy backend (or a leaked key)
//! can make it endlessly about a token that works. Each report of the current token therefore
//! first asks WeChat with that token, on the cheapest call there is,
//! `GET /cgi-bin/get_api_domain_ip` (docs/wechat.md §3.6):
//!
//! - WeChat answers the call: it accepts the token. The report is answered with that same
//!   token and [`ReportOutcome::StillAccepted`]; no refresh. The answer is remembered for
//!   [`crate::SchedulerConfig::accepted_report_memo`], so a burst of reports of one working
//!   token costs one call.
//! - 40001, 40014 or 42001: WeChat rejects it; the refresh goes ahead.
//! - Anything else (a timeout, a 5xx, -1, this call's own quota used up): unconfirmed; the
//!   refresh goes ahead as before confirmation existed — a confirmation that cannot be made
//!   must not keep a genuinely rejected token in service. What still bounds a key then is the
//!   per-key cap, the token's minimum age (`rejected_min_age`) and the daily budget.
//!
//! Each confirmation a key causes counts against [`crate::SchedulerConfig::reports_per_key_per_hour`]
//! (sliding hour, in memory, per replica); over it, [`crate::TokenError::ReportsCapped`].
//! Reports answered without a call — a stale token answered with the current one, a memo hit —
//! cost nothing and count nothing. wxhub's own calls that saw WeChat reject the token (the
//! proxy, the login gateway: [`crate::TokenService::rejected_by_wechat`]) are first-hand and
//! skip both.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use wechat::{AccessToken, ErrorClass};

use crate::cache::CurrentToken;
use crate::policy::ms;
use crate::{TokenError, TokenService};

/// How a report was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The reported token was current and WeChat rejects it: this is its replacement.
    Refreshed,
    /// The reported token had already been replaced: this is the current one (no refresh).
    AlreadyReplaced,
    /// WeChat accepts the reported token: it is returned as it is and nothing was refreshed.
    /// The backend's failure has another cause (or it used another token).
    StillAccepted,
}

/// The answer to a rejected-token report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// The token to use from now on.
    pub token: CurrentToken,
    /// How it came about.
    pub outcome: ReportOutcome,
}

/// Why wxhub believes a token is rejected.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Evidence<'a> {
    /// A backend says so (with its API key, if known): confirm with WeChat first.
    Report { caller: Option<&'a str> },
    /// wxhub's own call got the rejection from WeChat.
    Observed,
}

/// What WeChat said about a reported token.
pub(super) enum Confirmation {
    Accepted,
    Rejected,
    Unconfirmed,
}

/// Per-replica memory of reports: confirmations per key, and tokens WeChat just accepted.
#[derive(Default)]
pub(crate) struct ReportLedger {
    /// Per caller, when its confirmations happened (Unix ms), oldest first, within the hour.
    by_caller: Mutex<HashMap<String, VecDeque<i64>>>,
    /// Per account, a token WeChat accepted and when.
    accepted: Mutex<HashMap<String, (AccessToken, i64)>>,
}

const HOUR_MS: i64 = 3_600_000;

/// Callers remembered before the ledger forgets those idle for an hour.
const CALLERS_BEFORE_PRUNING: usize = 4096;

impl TokenService {
    /// Whether WeChat accepted `token` for `account_id` within the memo's time.
    pub(super) fn recently_accepted(&self, account_id: &str, token: &AccessToken) -> bool {
        let now = self.inner.clock.now_ms();
        let memo = ms(self.inner.config.accepted_report_memo);
        self.inner
            .reports
            .accepted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(account_id)
            .is_some_and(|(accepted, at)| accepted == token && now - at < memo)
    }

    /// Counts one confirmation against `caller`'s hourly cap, or refuses it.
    pub(super) fn take_report_allowance(&self, caller: Option<&str>) -> Result<(), TokenError> {
        let Some(caller) = caller else {
            return Ok(());
        };
        let now = self.inner.clock.now_ms();
        let cap = self.inner.config.reports_per_key_per_hour as usize;
        let mut by_caller = self
            .inner
            .reports
            .by_caller
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if by_caller.len() > CALLERS_BEFORE_PRUNING {
            by_caller.retain(|_, times| times.back().is_some_and(|t| now - t < HOUR_MS));
        }
        let times = by_caller.entry(caller.to_owned()).or_default();
        while times.front().is_some_and(|t| now - t >= HOUR_MS) {
            times.pop_front();
        }
        if times.len() >= cap {
            return Err(TokenError::ReportsCapped {
                limit: self.inner.config.reports_per_key_per_hour,
                retry_at: times.front().map_or(now + HOUR_MS, |t| t + HOUR_MS),
            });
        }
        times.push_back(now);
        Ok(())
    }

    /// Asks WeChat whether it accepts `token` (see the module doc).
    pub(super) async fn confirm_rejected(
        &self,
        account_id: &str,
        token: &AccessToken,
    ) -> Confirmation {
        match self.inner.client.api_domain_ips(token).await {
            Ok(_) => {
                tracing::info!(%account_id, "a reported token is accepted by WeChat; not refreshing");
                self.inner
                    .reports
                    .accepted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(
                        account_id.to_owned(),
                        (token.clone(), self.inner.clock.now_ms()),
                    );
                Confirmation::Accepted
            }
            Err(error) if error.class() == ErrorClass::TokenRejected => Confirmation::Rejected,
            Err(error) => {
                tracing::warn!(%account_id, %error, "cannot confirm a reported token with WeChat; refreshing as reported");
                Confirmation::Unconfirmed
            }
        }
    }
}
