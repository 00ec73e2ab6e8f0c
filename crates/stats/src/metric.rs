//! What is counted: the metric names stored in the statistics tables, what their one label
//! means, and which of them are an account's activity or failures (its ranks).
//!
//! The names are stored, so they never change; a chart asks for them by name
//! ([`Metric::name`]). Labels are bounded by construction (errcodes WeChat sends, the
//! account's own API keys and websites, fixed sets) and, for the open ones (proxied endpoints,
//! errcodes), capped per account in memory (`StatsConfig::max_labels`).

use std::fmt;

/// A counted quantity. Each is counted per account and hour with one label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// A core token fetched and stored. Label: none.
    TokenRefreshOk,
    /// A core-token fetch that failed. Label: WeChat's errcode, or `transport` (timeout,
    /// connection, 5xx).
    TokenRefreshFailed,
    /// `GET …/access_token` answered with a token. Label: the API key's id.
    TokenReads,
    /// A call through the proxy. Label: the WeChat path (`cgi-bin/user/info`).
    ProxyCalls,
    /// A proxied call WeChat answered with an errcode other than 0, or that did not reach
    /// WeChat. Label: the errcode, or `upstream`.
    ProxyErrors,
    /// A proxied call retried once after a rejected token (40001/40014/42001). Label: none.
    ProxyRetries,
    /// Total latency of proxied calls in ms (divide by [`Metric::ProxyCalls`] for the mean).
    /// Label: the WeChat path.
    ProxyLatencyMs,
    /// Proxied calls by latency bucket. Label: the bucket's upper bound in ms (`le_100`, …,
    /// `le_inf`; see [`LATENCY_BUCKETS_MS`]).
    ProxyLatency,
    /// A step of the login funnel. Label: `mode/website` (the website's OIDC client id).
    Login(LoginStage),
    /// A login that ended without success. Label: `mode/website`.
    LoginFailed(LoginFailure),
    /// A push from WeChat processed (a retry of it is not counted again). Label: its kind
    /// ([`PushKind`]).
    PushReceived,
    /// A push WeChat delivered again after it was processed (a retry), acknowledged and
    /// dropped. Label: none.
    PushDuplicates,
    /// A push relayed to the owner's server. Label: `ok` or `failed`.
    PushRelayed,
    /// A push route's delivery. Label: `route_id/outcome` ([`RouteOutcome`]).
    PushRoute,
    /// Reply routes' answer times, summed in ms (divide by the `reply` count). Label: the
    /// route id.
    PushRouteReplyMs,
    /// Reply routes called. Label: the route id.
    PushRouteReplies,
    /// An end user created. Label: how (`push`: pre-registered by a subscribe,
    /// `login_base`/`login_userinfo`: at their first login).
    UsersCreated,
    /// An end user unfollowed the account. Label: none.
    UsersUnsubscribed,
}

/// The steps of a login, in funnel order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginStage {
    /// `/authorize` accepted; the user is sent to WeChat.
    Started,
    /// WeChat sent the user back to the callback (with a code or a refusal), or, on a PC,
    /// the person scanned the login's QR code.
    Returned,
    /// A follow-required login showed the follow page (the user does not follow yet).
    FollowPage,
    /// A user on the follow page followed and went on, or followed by scanning a PC login's
    /// code.
    Followed,
    /// A code was issued: the user is logged in at the website.
    Completed,
}

impl LoginStage {
    /// Every stage, in funnel order.
    pub const ALL: [LoginStage; 5] = [
        LoginStage::Started,
        LoginStage::Returned,
        LoginStage::FollowPage,
        LoginStage::Followed,
        LoginStage::Completed,
    ];
}

/// Why a login did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginFailure {
    /// The follow page was shown and the user left without following (its wait expired).
    NotFollowing,
    /// The user refused consent on WeChat's page.
    ConsentRefused,
    /// WeChat answered with a snapshot-page (virtual) user.
    SnapshotUser,
    /// The login, its state or its code expired (or was used already).
    Expired,
    /// The token request's PKCE verifier did not match, or was missing.
    Pkce,
    /// The authorize request's redirect_uri is not registered for the website.
    RedirectUri,
    /// Anything else (a WeChat error, no core token, another browser…).
    Other,
}

impl LoginFailure {
    /// Every reason.
    pub const ALL: [LoginFailure; 7] = [
        LoginFailure::NotFollowing,
        LoginFailure::ConsentRefused,
        LoginFailure::SnapshotUser,
        LoginFailure::Expired,
        LoginFailure::Pkce,
        LoginFailure::RedirectUri,
        LoginFailure::Other,
    ];
}

/// What kind of push arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushKind {
    /// A follow through a QR code (a scene in its `EventKey`).
    SubscribeWithScene,
    /// Any other follow.
    Subscribe,
    Unsubscribe,
    /// A follower scanned a QR code.
    Scan,
    /// Messages and other events.
    Other,
}

impl PushKind {
    /// The stored label.
    pub fn label(self) -> &'static str {
        match self {
            PushKind::SubscribeWithScene => "subscribe_scene",
            PushKind::Subscribe => "subscribe",
            PushKind::Unsubscribe => "unsubscribe",
            PushKind::Scan => "scan",
            PushKind::Other => "other",
        }
    }
}

/// Upper bounds (ms) of [`Metric::ProxyLatency`]'s buckets; a last bucket takes the rest.
pub const LATENCY_BUCKETS_MS: [u64; 6] = [50, 100, 250, 500, 1000, 5000];

/// The label of the latency bucket `ms` falls in.
pub fn latency_bucket(ms: u64) -> &'static str {
    const LABELS: [&str; 7] = [
        "le_50", "le_100", "le_250", "le_500", "le_1000", "le_5000", "le_inf",
    ];
    let i = LATENCY_BUCKETS_MS
        .iter()
        .position(|&bound| ms <= bound)
        .unwrap_or(LATENCY_BUCKETS_MS.len());
    LABELS[i]
}

impl Metric {
    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::TokenRefreshOk => "token.refresh.ok",
            Metric::TokenRefreshFailed => "token.refresh.failed",
            Metric::TokenReads => "token.reads",
            Metric::ProxyCalls => "proxy.calls",
            Metric::ProxyErrors => "proxy.errors",
            Metric::ProxyRetries => "proxy.retries",
            Metric::ProxyLatencyMs => "proxy.latency_ms",
            Metric::ProxyLatency => "proxy.latency",
            Metric::Login(LoginStage::Started) => "login.started",
            Metric::Login(LoginStage::Returned) => "login.returned",
            Metric::Login(LoginStage::FollowPage) => "login.follow_page",
            Metric::Login(LoginStage::Followed) => "login.followed",
            Metric::Login(LoginStage::Completed) => "login.completed",
            Metric::LoginFailed(LoginFailure::NotFollowing) => "login.failed.not_following",
            Metric::LoginFailed(LoginFailure::ConsentRefused) => "login.failed.consent_refused",
            Metric::LoginFailed(LoginFailure::SnapshotUser) => "login.failed.snapshot_user",
            Metric::LoginFailed(LoginFailure::Expired) => "login.failed.expired",
            Metric::LoginFailed(LoginFailure::Pkce) => "login.failed.pkce",
            Metric::LoginFailed(LoginFailure::RedirectUri) => "login.failed.redirect_uri",
            Metric::LoginFailed(LoginFailure::Other) => "login.failed.other",
            Metric::PushReceived => "push.received",
            Metric::PushDuplicates => "push.duplicates",
            Metric::PushRelayed => "push.relayed",
            Metric::PushRoute => "push.route",
            Metric::PushRouteReplyMs => "push.route.reply_ms",
            Metric::PushRouteReplies => "push.route.replies",
            Metric::UsersCreated => "users.created",
            Metric::UsersUnsubscribed => "users.unsubscribed",
        }
    }

    /// Every metric.
    pub fn all() -> Vec<Metric> {
        let mut all = vec![
            Metric::TokenRefreshOk,
            Metric::TokenRefreshFailed,
            Metric::TokenReads,
            Metric::ProxyCalls,
            Metric::ProxyErrors,
            Metric::ProxyRetries,
            Metric::ProxyLatencyMs,
            Metric::ProxyLatency,
        ];
        all.extend(LoginStage::ALL.map(Metric::Login));
        all.extend(LoginFailure::ALL.map(Metric::LoginFailed));
        all.extend([
            Metric::PushReceived,
            Metric::PushDuplicates,
            Metric::PushRelayed,
            Metric::PushRoute,
            Metric::PushRouteReplyMs,
            Metric::PushRouteReplies,
            Metric::UsersCreated,
            Metric::UsersUnsubscribed,
        ]);
        all
    }

    /// The metric stored under `name`.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::all().into_iter().find(|m| m.name() == name)
    }

    /// Whether a count is something the account served (its activity rank).
    pub fn is_activity(self) -> bool {
        matches!(
            self,
            Metric::TokenReads
                | Metric::ProxyCalls
                | Metric::Login(LoginStage::Completed)
                | Metric::PushReceived
        )
    }

    /// Whether a count under `label` is a failure (its failures rank).
    pub fn is_failure(self, label: &str) -> bool {
        match self {
            Metric::TokenRefreshFailed | Metric::ProxyErrors | Metric::LoginFailed(_) => true,
            Metric::PushRelayed => label == "failed",
            Metric::PushRoute => RouteOutcome::ALL
                .iter()
                .any(|o| o.is_failure() && label.ends_with(&format!("/{}", o.label()))),
            _ => false,
        }
    }

    /// Whether the label is open-ended (caller-chosen paths, WeChat's errcodes) and so capped
    /// per account.
    pub(crate) fn open_labels(self) -> bool {
        matches!(
            self,
            Metric::ProxyCalls
                | Metric::ProxyErrors
                | Metric::ProxyLatencyMs
                | Metric::TokenRefreshFailed
        )
    }

    /// The label this count has in the platform totals: labels naming an account's own
    /// things (API keys, websites) are folded away; a login keeps its mode.
    pub fn platform_label(self, label: &str) -> &str {
        match self {
            Metric::TokenReads => "",
            Metric::Login(_) | Metric::LoginFailed(_) => {
                label.split_once('/').map_or(label, |(mode, _)| mode)
            }
            // Route ids are the account's own things.
            Metric::PushRoute => label.rsplit_once('/').map_or(label, |(_, outcome)| outcome),
            Metric::PushRouteReplyMs | Metric::PushRouteReplies => "",
            _ => label,
        }
    }
}

/// What became of one delivery to a push route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteOutcome {
    /// A copy answered 2xx, or a reply route's answer was used.
    Delivered,
    /// An attempt failed (a copy will be retried; a reply became `success`).
    Failed,
    /// A copy's last attempt failed: kept as a dead letter.
    DeadLettered,
    /// The account's copy queue was full: no copy.
    Dropped,
    /// A reply route answered after the deadline: WeChat got `success`.
    Late,
    /// A reply route's answer was malformed, or for another user or account.
    Refused,
}

impl RouteOutcome {
    /// Every outcome.
    pub const ALL: [RouteOutcome; 6] = [
        RouteOutcome::Delivered,
        RouteOutcome::Failed,
        RouteOutcome::DeadLettered,
        RouteOutcome::Dropped,
        RouteOutcome::Late,
        RouteOutcome::Refused,
    ];

    /// The label's outcome part.
    pub fn label(self) -> &'static str {
        match self {
            RouteOutcome::Delivered => "delivered",
            RouteOutcome::Failed => "failed",
            RouteOutcome::DeadLettered => "dead_lettered",
            RouteOutcome::Dropped => "dropped",
            RouteOutcome::Late => "late",
            RouteOutcome::Refused => "refused",
        }
    }

    /// Whether it counts as a failure of the account.
    pub fn is_failure(self) -> bool {
        self != RouteOutcome::Delivered
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The label of a login count: `mode/website`.
pub fn login_label(mode: &str, website: &str) -> String {
    format!("{mode}/{website}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let all = Metric::all();
        let mut names: Vec<_> = all.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        for metric in all {
            assert_eq!(Metric::from_name(metric.name()), Some(metric));
        }
    }

    #[test]
    fn latency_falls_in_its_bucket() {
        assert_eq!(latency_bucket(0), "le_50");
        assert_eq!(latency_bucket(50), "le_50");
        assert_eq!(latency_bucket(51), "le_100");
        assert_eq!(latency_bucket(5000), "le_5000");
        assert_eq!(latency_bucket(5001), "le_inf");
    }

    #[test]
    fn platform_totals_fold_account_labels() {
        assert_eq!(Metric::TokenReads.platform_label("key-1"), "");
        assert_eq!(
            Metric::Login(LoginStage::Completed).platform_label("userinfo/client-9"),
            "userinfo"
        );
        assert_eq!(Metric::ProxyErrors.platform_label("45009"), "45009");
    }
}
