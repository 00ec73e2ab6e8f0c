//! Rejected-token reports: WeChat confirms a reported token is rejected before a refresh is
//! spent, reports are capped per API key, and across replicas a report of a token that another
//! replica already replaced gets the new token, even when that replica's notification reaches
//! the cache between the claim and its re-check.

use std::sync::Arc;

use scheduler::{ReportOutcome, TokenError, TokenService};
use store::Store;
use store::accounts::TokenMode;
use wechat_sim::{FaultAction, FaultSpec};

use crate::common::{CONFIRM, Hub, on_postgres};

/// A replica with its own pool (like a separate process) and no listener: the tests deliver
/// notifications themselves, at the moment they choose.
async fn replica(hub: &Hub, seed: u64) -> TokenService {
    let store = Store::connect(&hub.url).await.unwrap();
    hub.service_on(store, Hub::config(seed)).await
}

async fn report_racing_the_other_replicas_notification_gets_the_new_token_body(hub: Hub) {
    let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
    let a = replica(&hub, 40).await;
    let b = replica(&hub, 41).await;
    let first = a.current(&acct.id).await.unwrap();
    b.reload_account(&acct.id).await.unwrap();
    assert_eq!(b.cached(&acct.id).unwrap().access_token, first.access_token);
    hub.supersede_outside(&acct).await;

    // A's backend reports the token WeChat now rejects: A refreshes.
    let second = a
        .report_rejected(&acct.id, &first.access_token, None)
        .await
        .unwrap();
    assert_eq!(second.outcome, ReportOutcome::Refreshed);
    let second = second.token;
    assert_ne!(second.access_token, first.access_token);
    // B's backend reports the same old token. B's cache still shows it, so B claims — and A's
    // notification reaches B's cache right after that claim, before B re-checks.
    let notified = b.clone();
    b.set_after_claim_hook(Some(Arc::new(move |account_id: &str| {
        let b = notified.clone();
        let account_id = account_id.to_owned();
        Box::pin(async move { b.reload_account(&account_id).await.unwrap() })
    })));
    let from_b = b.report_rejected(&acct.id, &first.access_token, None).await;
    b.set_after_claim_hook(None);
    // The documented contract: a report of a replaced token returns the current one at once.
    let from_b = from_b.unwrap();
    assert_eq!(from_b.outcome, ReportOutcome::AlreadyReplaced);
    assert_eq!(from_b.token.access_token, second.access_token);
    // No fetch for it (A's first, the outside one, A's refresh), and the claim gave back its
    // lease and its budget unit.
    assert_eq!(hub.fetches(&acct.appid), (3, 3));
    let row = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
    assert_eq!(row.lease_holder, None);
    assert_eq!(row.upstream_calls_today, 2);
}

async fn reports_are_capped_per_key_and_only_when_they_ask_wechat_body(hub: Hub) {
    let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
    let mut config = Hub::config(42);
    config.reports_per_key_per_hour = 3;
    let service = hub.service(config).await;
    let token = service.current(&acct.id).await.unwrap().access_token;
    hub.advance(60);
    let report = |caller: Option<&'static str>| {
        let service = service.clone();
        let id = acct.id.clone();
        let token = token.clone();
        async move { service.report_rejected(&id, &token, caller).await }
    };
    // A buggy backend keeps reporting a token that works: each report past the memo asks
    // WeChat, which accepts it; nothing is refreshed.
    for _ in 0..3 {
        let reported = report(Some("key-a")).await.unwrap();
        assert_eq!(reported.outcome, ReportOutcome::StillAccepted);
        // Within the memo a report costs no question and counts nothing.
        let reported = report(Some("key-a")).await.unwrap();
        assert_eq!(reported.outcome, ReportOutcome::StillAccepted);
        hub.advance(11);
    }
    assert_eq!(hub.confirmations(&acct.appid), 3);
    let first_question = hub.now() - 33_000;
    match report(Some("key-a")).await {
        Err(TokenError::ReportsCapped { limit, retry_at }) => {
            assert_eq!(limit, 3);
            assert_eq!(retry_at, first_question + 3_600_000);
        }
        other => panic!("expected ReportsCapped, got {other:?}"),
    }
    assert_eq!(hub.confirmations(&acct.appid), 3);
    // Other keys and wxhub's own observations are not capped by it.
    assert!(report(Some("key-b")).await.is_ok());
    assert!(report(None).await.is_ok());
    // A report of a replaced token costs nothing, so it is answered even when capped.
    let stale = service
        .report_rejected(&acct.id, &wechat::AccessToken::new("86_old"), Some("key-a"))
        .await
        .unwrap();
    assert_eq!(stale.outcome, ReportOutcome::AlreadyReplaced);
    // An hour after its first question, the key may ask again.
    hub.clock.set(first_question + 3_600_000);
    assert!(report(Some("key-a")).await.is_ok());
    assert_eq!(hub.fetches(&acct.appid), (1, 1));
}

async fn report_that_wechat_cannot_confirm_still_refreshes_body(hub: Hub) {
    let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
    let service = hub.service(Hub::config(43)).await;
    let first = service.current(&acct.id).await.unwrap();
    hub.advance(60);
    // The confirmation fails with a 502: a rejected token must not stay in service because
    // WeChat could not be asked.
    hub.sim()
        .add_fault(FaultSpec {
            endpoint: Some(CONFIRM.into()),
            appid: Some(acct.appid.clone()),
            action: FaultAction::HttpStatus { status: 502 },
            next: Some(1),
            rate: None,
        })
        .unwrap();
    let reported = service
        .report_rejected(&acct.id, &first.access_token, Some("key-a"))
        .await
        .unwrap();
    assert_eq!(reported.outcome, ReportOutcome::Refreshed);
    assert_ne!(reported.token.access_token, first.access_token);
    assert_eq!(hub.confirmations(&acct.appid), 1);
    assert_eq!(hub.fetches(&acct.appid), (2, 2));
    // wxhub's own observation of a rejection needs no confirmation at all.
    hub.advance(60);
    let observed = service
        .rejected_by_wechat(&acct.id, &reported.token.access_token)
        .await
        .unwrap();
    assert_eq!(observed.outcome, ReportOutcome::Refreshed);
    assert_eq!(hub.confirmations(&acct.appid), 1);
    assert_eq!(hub.fetches(&acct.appid), (3, 3));
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reports_are_capped_per_key_and_only_when_they_ask_wechat() {
        reports_are_capped_per_key_and_only_when_they_ask_wechat_body(Hub::sqlite().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn report_that_wechat_cannot_confirm_still_refreshes() {
        report_that_wechat_cannot_confirm_still_refreshes_body(Hub::sqlite().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn report_racing_the_other_replicas_notification_gets_the_new_token() {
        report_racing_the_other_replicas_notification_gets_the_new_token_body(Hub::sqlite().await)
            .await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reports_are_capped_per_key_and_only_when_they_ask_wechat() {
        on_postgres(reports_are_capped_per_key_and_only_when_they_ask_wechat_body).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn report_that_wechat_cannot_confirm_still_refreshes() {
        on_postgres(report_that_wechat_cannot_confirm_still_refreshes_body).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn report_racing_the_other_replicas_notification_gets_the_new_token() {
        on_postgres(report_racing_the_other_replicas_notification_gets_the_new_token_body).await;
    }
}
