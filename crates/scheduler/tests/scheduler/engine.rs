//! The refresh engine against the simulator on SQLite.

use std::collections::HashMap;
use std::sync::Arc;

use scheduler::{ReportOutcome, TokenError};
use store::accounts::TokenMode;
use store::tokens::TokenState;
use tokio::sync::Barrier;
use wechat::AccessToken;
use wechat_sim::{FaultAction, FaultSpec, WhitelistMode};

use crate::common::{Hub, TOKEN, secret};

const LIFETIME_S: i64 = 7200;

/// Runs `accounts` through `hours` of simulated time in `step_s` steps. At every step, after
/// processing what is due, every account's served token must be one the simulator accepts.
/// Returns, per account, the issue times of the distinct tokens served, in order.
async fn run_day(
    hub: &Hub,
    service: &scheduler::TokenService,
    accounts: &[crate::common::Acct],
    hours: u64,
    step_s: u64,
) -> HashMap<String, Vec<i64>> {
    let mut served: HashMap<String, Vec<i64>> = HashMap::new();
    let steps = hours * 3600 / step_s;
    for step in 0..=steps {
        if step > 0 {
            hub.advance(step_s);
        }
        service.run_due().await.unwrap();
        for acct in accounts {
            let seen = served.entry(acct.id.clone()).or_default();
            let Some(token) = service.cached(&acct.id) else {
                // Only an account whose very first fetch keeps failing may have no token,
                // and not for long.
                assert!(
                    seen.is_empty() && step * step_s < 1800,
                    "{} has no valid token at step {step}",
                    acct.appid
                );
                continue;
            };
            assert!(token.expires_at > hub.now());
            assert!(
                hub.accepted(&acct.appid, token.access_token.expose()),
                "{}: the served token is not accepted at step {step}",
                acct.appid
            );
            if seen.last() != Some(&token.issued_at) {
                seen.push(token.issued_at);
            }
        }
    }
    served
}

/// Each consecutive pair of fetches is one policy window apart: 75–85 % of the lifetime
/// (plus the step granularity, plus `slack_s` for retries).
fn assert_policy_spacing(issued: &[i64], step_s: i64, slack_s: i64) {
    for pair in issued.windows(2) {
        let gap = (pair[1] - pair[0]) / 1000;
        let from = LIFETIME_S * 75 / 100;
        let to = LIFETIME_S * 85 / 100 + step_s + slack_s;
        assert!(
            (from..=to).contains(&gap),
            "refresh gap {gap} s outside [{from}, {to}]"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_accounts_stay_valid_for_a_day_with_policy_implied_fetches() {
    let hub = Hub::sqlite().await;
    let accounts = hub.accounts(0, 1000, TokenMode::Token).await;
    let service = hub.service(Hub::config(1)).await;
    let step = 120;
    let served = run_day(&hub, &service, &accounts, 24, step).await;
    let end = hub.now();
    let mut total = 0;
    for acct in &accounts {
        let issued = &served[&acct.id];
        let (ok, calls) = hub.fetches(&acct.appid);
        // Every fetch became the served token and nothing else called WeChat.
        assert_eq!(ok, calls);
        assert_eq!(ok as usize, issued.len(), "{}", acct.appid);
        assert_policy_spacing(issued, step as i64, 0);
        // No refresh was skipped at the end either.
        let last = *issued.last().unwrap();
        assert!((end - last) / 1000 <= LIFETIME_S * 85 / 100 + step as i64);
        // 24 h / 1.5–1.7 h per window: 14 to 17 fetches, nowhere near WeChat's 2000.
        assert!((14..=17).contains(&issued.len()), "{}", issued.len());
        total += issued.len();
    }
    // Jitter spreads the accounts: their next refreshes are scheduled at distinct instants,
    // and the second fetches fall into every step of the 75–85 % window.
    let mut scheduled = std::collections::HashSet::new();
    for acct in &accounts {
        let row = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
        scheduled.insert(row.next_refresh_at);
    }
    assert!(
        scheduled.len() > 990,
        "{} distinct schedules",
        scheduled.len()
    );
    let mut per_step: HashMap<i64, usize> = HashMap::new();
    for acct in &accounts {
        *per_step.entry(served[&acct.id][1]).or_default() += 1;
    }
    assert!(per_step.len() >= 6, "{per_step:?}");
    assert!(per_step.values().all(|&n| n < 400), "{per_step:?}");
    eprintln!("1000 accounts, 24 h: {total} token fetches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_transient_failures_never_serve_an_expired_token() {
    let mut hub = Hub::sqlite().await;
    // Timeouts cost real time: keep them short.
    hub.client_timeout = std::time::Duration::from_millis(200);
    let accounts = hub.accounts(0, 1000, TokenMode::Token).await;
    let sim = hub.sim();
    sim.reseed_faults(42);
    let fault = |action, rate| FaultSpec {
        endpoint: Some(TOKEN.into()),
        appid: None,
        action,
        next: None,
        rate: Some(rate),
    };
    // Rules are tried in order, first firing wins: 1-(.88*.9*.94*.95*.99) ≈ 30 % fail.
    sim.add_fault(fault(
        FaultAction::Errcode {
            code: -1,
            errmsg: None,
        },
        0.12,
    ))
    .unwrap();
    sim.add_fault(fault(FaultAction::HttpStatus { status: 502 }, 0.10))
        .unwrap();
    sim.add_fault(fault(
        FaultAction::Errcode {
            code: 45011,
            errmsg: None,
        },
        0.06,
    ))
    .unwrap();
    sim.add_fault(fault(FaultAction::Drop, 0.05)).unwrap();
    sim.add_fault(fault(FaultAction::Timeout { ms: 400 }, 0.01))
        .unwrap();
    sim.add_fault(fault(FaultAction::Latency { ms: 20 }, 0.5))
        .unwrap();
    let service = hub.service(Hub::config(2)).await;
    let step = 60;
    let served = run_day(&hub, &service, &accounts, 24, step).await;
    let (mut failed, mut answered, mut unheard) = (0, 0, 0);
    for acct in &accounts {
        let (ok, calls) = hub.fetches(&acct.appid);
        assert!(calls <= 100, "{}: {calls} token calls in a day", acct.appid);
        // Every token served was one WeChat issued. The simulator counts an answer it sent
        // as issued even when the hub had stopped waiting for it (its 200 ms timeout, on a
        // machine busy enough to be late): such a token is never stored nor served.
        let served = served[&acct.id].len() as u64;
        assert!(
            served <= ok,
            "{}: {served} served of {ok} issued",
            acct.appid
        );
        answered += ok;
        unheard += ok - served;
        failed += calls - ok;
    }
    assert!(failed > 1000, "the faults fired only {failed} times");
    assert!(
        unheard * 100 <= answered,
        "{unheard} of {answered} issued tokens never reached the hub"
    );
    eprintln!("1000 accounts, 24 h, ~30 % failures: {failed} failed token calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_errors_need_attention_with_the_fix_and_no_retry_storm() {
    let hub = Hub::sqlite().await;
    let sim = hub.sim();
    // 40125: the hub holds a wrong secret.
    sim.create_account(wechat_sim::AccountSpec::new(
        crate::common::appid(1),
        secret(1),
    ))
    .unwrap();
    let wrong_secret = hub.register(1, &secret(999), TokenMode::Token).await;
    // 40013: WeChat does not know the appid.
    let unknown = hub.register(2, &secret(2), TokenMode::Token).await;
    // 40243: the secret is frozen.
    let mut spec = wechat_sim::AccountSpec::new(crate::common::appid(3), secret(3));
    spec.secret_frozen = true;
    sim.create_account(spec).unwrap();
    let frozen = hub.register(3, &secret(3), TokenMode::Token).await;
    // 40164: this server's IP is not whitelisted.
    let mut spec = wechat_sim::AccountSpec::new(crate::common::appid(4), secret(4));
    spec.whitelist_mode = WhitelistMode::Enforce;
    spec.ip_whitelist = vec!["203.0.113.7".into()];
    sim.create_account(spec).unwrap();
    let ip = hub.register(4, &secret(4), TokenMode::Token).await;
    // 89503: the administrator must confirm this IP.
    let mut spec = wechat_sim::AccountSpec::new(crate::common::appid(5), secret(5));
    spec.whitelist_mode = WhitelistMode::Confirm;
    sim.create_account(spec).unwrap();
    let confirm = hub.register(5, &secret(5), TokenMode::Token).await;

    let service = hub.service(Hub::config(3)).await;
    service.run_due().await.unwrap();
    let cases = [
        (&wrong_secret, 40125, "AppSecret"),
        (&unknown, 40013, "AppID"),
        (&frozen, 40243, "unfreeze"),
        (&ip, 40164, "add 127.0.0.1 to the IP whitelist"),
        (&confirm, 89503, "confirm"),
    ];
    for (acct, code, fix) in cases {
        let (state, errcode, reason) = service.status(&acct.id).unwrap();
        assert_eq!(state, TokenState::NeedsAttention, "{code}");
        assert_eq!(errcode, Some(code));
        let reason = reason.unwrap();
        assert!(reason.contains(fix), "{code}: {reason}");
        match service.current(&acct.id).await {
            Err(TokenError::Unavailable { state, code: c, .. }) => {
                assert_eq!(state, TokenState::NeedsAttention);
                assert_eq!(c, Some(code));
            }
            other => panic!("{code}: expected Unavailable, got {other:?}"),
        }
        let row = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
        assert_eq!(row.last_error_code, Some(code));
        if code == 40164 {
            assert_eq!(row.last_error_ip.as_deref(), Some("127.0.0.1"));
        }
    }
    // No retry storm: nothing for 59 minutes (asking for the token does not retry either)…
    for _ in 0..59 {
        hub.advance(60);
        service.run_due().await.unwrap();
        for (acct, _, _) in cases {
            assert!(service.current(&acct.id).await.is_err());
        }
    }
    for (acct, code, _) in cases {
        // wxhub's own count of upstream attempts, and the simulator's (which does not count
        // calls for an appid it does not know).
        let row = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
        assert_eq!(row.upstream_calls_today, 1, "{code}");
        assert_eq!(
            hub.fetches(&acct.appid).1,
            u64::from(code != 40013),
            "{code}"
        );
    }
    // …then one slow retry each after the hour.
    hub.advance(60);
    service.run_due().await.unwrap();
    for (acct, code, _) in cases {
        // wxhub's own count of upstream attempts, and the simulator's (which does not count
        // calls for an appid it does not know).
        let row = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
        assert_eq!(row.upstream_calls_today, 2, "{code}");
        assert_eq!(
            hub.fetches(&acct.appid).1,
            2 * u64::from(code != 40013),
            "{code}"
        );
    }
    // The owner fixes the whitelist: retried at once, not in an hour.
    sim.modify_account(&ip.appid, |spec| {
        spec.ip_whitelist = vec!["127.0.0.1".into()]
    })
    .unwrap();
    hub.advance(60);
    service.credentials_changed(&ip.id).await.unwrap();
    service.run_due().await.unwrap();
    let token = service.current(&ip.id).await.unwrap();
    assert!(hub.accepted(&ip.appid, token.access_token.expose()));
    assert_eq!(service.status(&ip.id).unwrap().0, TokenState::Healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_error_on_refresh_keeps_serving_the_valid_token() {
    let hub = Hub::sqlite().await;
    let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
    let service = hub.service(Hub::config(4)).await;
    service.run_due().await.unwrap();
    let first = service.current(&acct.id).await.unwrap();
    // The secret is reset in the WeChat console; wxhub still has the old one.
    hub.sim()
        .modify_account(&acct.appid, |spec| spec.secret = secret(77))
        .unwrap();
    hub.advance(6200);
    service.run_due().await.unwrap();
    assert_eq!(
        service.status(&acct.id).unwrap().0,
        TokenState::NeedsAttention
    );
    let still = service.current(&acct.id).await.unwrap();
    assert_eq!(still.access_token, first.access_token);
    assert!(hub.accepted(&acct.appid, still.access_token.expose()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_quota_exhausted_pauses_until_midnight_in_shanghai() {
    let hub = Hub::sqlite().await;
    let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
    let service = hub.service(Hub::config(5)).await;
    service.run_due().await.unwrap();
    hub.sim()
        .add_fault(FaultSpec {
            endpoint: Some(TOKEN.into()),
            appid: Some(acct.appid.clone()),
            action: FaultAction::Errcode {
                code: 45009,
                errmsg: None,
            },
            next: None,
            rate: Some(1.0),
        })
        .unwrap();
    // The first refresh (13:30–13:42) hits 45009.
    hub.advance(6200);
    service.run_due().await.unwrap();
    assert_eq!(hub.fetches(&acct.appid), (1, 2));
    let (state, code, reason) = service.status(&acct.id).unwrap();
    assert_eq!(state, TokenState::QuotaExhausted);
    assert_eq!(code, Some(45009));
    assert!(reason.unwrap().contains("00:00 Asia/Shanghai"));
    // No calls until midnight in Shanghai (START is noon there): check every 10 minutes.
    let midnight = crate::common::START + 12 * 3_600_000;
    while hub.now() + 600_000 < midnight {
        hub.advance(600);
        service.run_due().await.unwrap();
    }
    assert_eq!(hub.fetches(&acct.appid), (1, 2));
    // The old token ran out meanwhile: the API says why instead of serving it.
    match service.current(&acct.id).await {
        Err(TokenError::Unavailable { state, .. }) => assert_eq!(state, TokenState::QuotaExhausted),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    hub.sim().clear_faults();
    hub.clock.set(midnight);
    service.run_due().await.unwrap();
    assert_eq!(hub.fetches(&acct.appid), (2, 3));
    assert!(service.current(&acct.id).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_daily_budget_is_never_exceeded() {
    let hub = Hub::sqlite().await;
    let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
    hub.sim()
        .add_fault(FaultSpec {
            endpoint: Some(TOKEN.into()),
            appid: None,
            action: FaultAction::Errcode {
                code: -1,
                errmsg: None,
            },
            next: None,
            rate: Some(1.0),
        })
        .unwrap();
    let mut config = Hub::config(6);
    config.policy.daily_budget = 5;
    let service = hub.service(config).await;
    // Until midnight in Shanghai, retrying every time a retry is due.
    for _ in 0..(11 * 60) {
        service.run_due().await.unwrap();
        hub.advance(60);
    }
    assert_eq!(hub.fetches(&acct.appid).1, 5);
    let (state, code, _) = service.status(&acct.id).unwrap();
    assert_eq!((state, code), (TokenState::QuotaExhausted, None));
    // A new day brings a new budget.
    hub.advance(3600);
    hub.sim().clear_faults();
    service.run_due().await.unwrap();
    assert_eq!(hub.fetches(&acct.appid), (1, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_reports_of_the_current_token_cause_one_fetch() {
    let hub = Hub::sqlite().await;
    let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
    let service = hub.service(Hub::config(7)).await;
    let old = service.current(&acct.id).await.unwrap();
    assert_eq!(hub.fetches(&acct.appid), (1, 1));
    hub.advance(600);
    // Something outside wxhub fetched a token: WeChat rejects wxhub's from now on.
    hub.supersede_outside(&acct).await;
    assert_eq!(hub.fetches(&acct.appid), (2, 2));
    let barrier = Arc::new(Barrier::new(100));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let service = service.clone();
        let barrier = barrier.clone();
        let id = acct.id.clone();
        let rejected = old.access_token.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            service.report_rejected(&id, &rejected, None).await
        }));
    }
    let mut new_tokens = std::collections::HashSet::new();
    let mut refreshed = 0;
    for task in tasks {
        let reported = task.await.unwrap().unwrap();
        assert_ne!(reported.token.access_token, old.access_token);
        refreshed += usize::from(reported.outcome == ReportOutcome::Refreshed);
        new_tokens.insert(reported.token.access_token.expose().to_owned());
    }
    assert_eq!(new_tokens.len(), 1);
    assert_eq!(refreshed, 1);
    // One question to WeChat, one fetch.
    assert_eq!(hub.confirmations(&acct.appid), 1);
    assert_eq!(hub.fetches(&acct.appid), (3, 3));
    // A late report of the old token is answered with the current one, without a call.
    let late = service
        .report_rejected(&acct.id, &old.access_token, None)
        .await
        .unwrap();
    assert_eq!(late.outcome, ReportOutcome::AlreadyReplaced);
    assert!(new_tokens.contains(late.token.access_token.expose()));
    // The new token itself, reported although it works: WeChat accepts it, so it comes back
    // as it is, and a burst of such reports asks WeChat once.
    for _ in 0..5 {
        let accepted = service
            .report_rejected(&acct.id, &late.token.access_token, None)
            .await
            .unwrap();
        assert_eq!(accepted.outcome, ReportOutcome::StillAccepted);
        assert_eq!(accepted.token.access_token, late.token.access_token);
    }
    assert_eq!(hub.confirmations(&acct.appid), 2);
    // Were WeChat to reject it, it is still not refreshed again so soon.
    hub.advance(11);
    hub.confirmations_reject(&acct.appid, Some(1));
    match service
        .report_rejected(&acct.id, &late.token.access_token, None)
        .await
    {
        Err(TokenError::RateLimited { .. }) => {}
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(hub.fetches(&acct.appid), (3, 3));
    // A garbage report changes nothing.
    let current = service
        .report_rejected(&acct.id, &AccessToken::new("not-a-token"), None)
        .await
        .unwrap();
    assert_eq!(current.outcome, ReportOutcome::AlreadyReplaced);
    assert_eq!(current.token.access_token, late.token.access_token);
    assert_eq!(hub.fetches(&acct.appid), (3, 3));
    assert_eq!(hub.confirmations(&acct.appid), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_valid_tokens_in_the_database_makes_no_upstream_call() {
    let hub = Hub::sqlite().await;
    let accounts = hub.accounts(0, 50, TokenMode::Token).await;
    let before: Vec<_> = {
        let service = hub.service(Hub::config(8)).await;
        service.run_due().await.unwrap();
        accounts
            .iter()
            .map(|a| service.cached(&a.id).unwrap())
            .collect()
    };
    hub.advance(1800);
    let restarted = hub.service(Hub::config(9)).await;
    let report = restarted.run_due().await.unwrap();
    assert_eq!(report.due, 0);
    for (acct, token) in accounts.iter().zip(&before) {
        let now = restarted.current(&acct.id).await.unwrap();
        assert_eq!(now.access_token, token.access_token);
        assert_eq!(hub.fetches(&acct.appid), (1, 1));
    }
    // The token is sealed in the database: its text appears nowhere in the row.
    let row = hub
        .store
        .get_core_token(&accounts[0].id)
        .await
        .unwrap()
        .unwrap();
    let ciphertext = row.token.unwrap();
    let plain = before[0].access_token.expose().as_bytes();
    assert!(!ciphertext.windows(plain.len()).any(|w| w == plain));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stable_token_mode_renews_in_the_last_minutes_and_forces_within_limits() {
    let hub = Hub::sqlite().await;
    let acct = hub.accounts(0, 1, TokenMode::StableToken).await.remove(0);
    let service = hub.service(Hub::config(10)).await;
    service.run_due().await.unwrap();
    let first = service.current(&acct.id).await.unwrap();
    let stable = "/cgi-bin/stable_token";
    assert_eq!(hub.sim().counter(&acct.appid, stable).ok, 1);
    assert_eq!(hub.fetches(&acct.appid).1, 0);
    // Nothing until the last five minutes, then a new token while the old one still works.
    for _ in 0..(6900 / 60 - 1) {
        hub.advance(60);
        service.run_due().await.unwrap();
    }
    assert_eq!(hub.sim().counter(&acct.appid, stable).calls, 1);
    for _ in 0..2 {
        hub.advance(60);
        service.run_due().await.unwrap();
    }
    let second = service.current(&acct.id).await.unwrap();
    assert_ne!(second.access_token, first.access_token);
    assert_eq!(hub.sim().counter(&acct.appid, stable).calls, 2);
    assert!(hub.accepted(&acct.appid, second.access_token.expose()));
    // A report that WeChat confirms forces a refresh (force_refresh=true)…
    hub.advance(60);
    hub.confirmations_reject(&acct.appid, Some(1));
    let forced = service
        .report_rejected(&acct.id, &second.access_token, None)
        .await
        .unwrap()
        .token;
    assert_ne!(forced.access_token, second.access_token);
    assert!(hub.accepted(&acct.appid, forced.access_token.expose()));
    let row = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
    assert_eq!(row.state, TokenState::Healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_counts_calls_made_so_a_refused_report_costs_nothing() {
    let hub = Hub::sqlite().await;
    let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
    let service = hub.service(Hub::config(11)).await;
    let first = service.current(&acct.id).await.unwrap();
    let calls_today = |hub: &Hub| {
        let store = hub.store.clone();
        let id = acct.id.clone();
        async move {
            store
                .get_core_token(&id)
                .await
                .unwrap()
                .unwrap()
                .upstream_calls_today
        }
    };
    assert_eq!(calls_today(&hub).await, 1);
    // WeChat rejects the token, but it is too young to replace: the claim took a unit; the
    // report was refused before any call, so the unit came back.
    hub.confirmations_reject(&acct.appid, None);
    for _ in 0..5 {
        match service
            .report_rejected(&acct.id, &first.access_token, None)
            .await
        {
            Err(TokenError::RateLimited { .. }) => {}
            other => panic!("expected RateLimited, got {other:?}"),
        }
    }
    assert_eq!(hub.fetches(&acct.appid).1, 1);
    assert_eq!(calls_today(&hub).await, 1);
    // Old enough now: one call, one unit.
    hub.advance(60);
    let second = service
        .report_rejected(&acct.id, &first.access_token, None)
        .await
        .unwrap()
        .token;
    assert_ne!(second.access_token, first.access_token);
    assert_eq!(hub.fetches(&acct.appid), (2, 2));
    assert_eq!(calls_today(&hub).await, 2);
}

/// WeChat's token endpoint answers 503 to every account for two hours, then recovers. The
/// accounts' own backoff (up to 5 min, full jitter) keeps the traffic low; the outage rules
/// (crates/scheduler/src/engine/outage.rs) make the recovery short: an expired account is
/// probed at least every 45 s, and the first success retries the others within 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_of_every_account_all_recover_within_a_probe_and_a_spread() {
    for n in [1, 6] {
        let hub = Hub::sqlite().await;
        let accounts = hub.accounts(0, n, TokenMode::Token).await;
        let service = hub.service(Hub::config(9)).await;
        service.run_due().await.unwrap();
        // Into the refresh window (75–85 % of 7200 s), then the outage.
        hub.advance(5300);
        hub.sim()
            .add_fault(FaultSpec {
                endpoint: Some(TOKEN.into()),
                appid: None,
                action: FaultAction::HttpStatus { status: 503 },
                next: None,
                rate: Some(1.0),
            })
            .unwrap();
        let calls_before: u64 = accounts.iter().map(|a| hub.fetches(&a.appid).1).sum();
        let step = 5;
        for _ in 0..(2 * 3600 / step) {
            hub.advance(step);
            service.run_due().await.unwrap();
        }
        for acct in &accounts {
            assert!(service.cached(&acct.id).is_none(), "every token expired");
        }
        let calls: u64 = accounts
            .iter()
            .map(|a| hub.fetches(&a.appid).1)
            .sum::<u64>()
            - calls_before;
        hub.sim().clear_faults();
        let recovered_after = 'recovery: {
            for i in 1..=60 {
                hub.advance(step);
                service.run_due().await.unwrap();
                if accounts.iter().all(|a| service.cached(&a.id).is_some()) {
                    break 'recovery i * step;
                }
            }
            panic!("{n} accounts: not recovered 300 s after the outage");
        };
        eprintln!(
            "{n} accounts, 2 h outage: {calls} token calls ({:.1} per account-hour), \
             recovered {recovered_after} s after WeChat answered again",
            calls as f64 / n as f64 / 2.0
        );
        // A probe within 45 s, the others within 30 s of its success, and one step.
        assert!(
            recovered_after <= 45 + 30 + step,
            "{n}: {recovered_after} s"
        );
        // The backoff alone makes ~25 calls an account-hour; the probe adds at most 80 an
        // hour for the whole engine, and never takes an account past half its budget.
        let per_hour = calls / 2;
        assert!(
            per_hour <= 25 * n as u64 + 80,
            "{n} accounts: {per_hour} calls an hour"
        );
        for acct in &accounts {
            assert!(hub.fetches(&acct.appid).1 <= 200, "the daily budget holds");
        }
    }
}
