//! What the scheduler counts: refreshes by result, token reads per API key, proxy calls by
//! endpoint and errcode with their retries and latency.

use reqwest::StatusCode;
use store::accounts::TokenMode;
use store::stats::Granularity;
use wechat_sim::{FaultAction, FaultSpec};

use crate::common::Hub;

/// An account's totals of the day, as `(metric, label, value)`.
async fn totals(hub: &Hub, account_id: &str) -> Vec<(String, String, i64)> {
    hub.store
        .account_series(account_id, Granularity::Hour, 0, i64::MAX, &[])
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.metric != "proxy.latency_ms")
        .map(|p| (p.metric, p.label, p.value))
        .collect()
}

fn row(metric: &str, label: &str, value: i64) -> (String, String, i64) {
    (metric.to_owned(), label.to_owned(), value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_token_reads_per_key_and_proxy_calls_are_counted() {
    let hub = Hub::sqlite().await;
    let mut accounts = hub.accounts(0, 2, TokenMode::Token).await;
    let b = accounts.pop().unwrap();
    let a = accounts.pop().unwrap();
    // b's AppSecret is refused by WeChat: its refresh fails with 40125.
    hub.sim()
        .add_fault(FaultSpec {
            endpoint: Some("/cgi-bin/token".into()),
            appid: Some(b.appid.clone()),
            action: FaultAction::Errcode {
                code: 40125,
                errmsg: None,
            },
            next: None,
            rate: Some(1.0),
        })
        .unwrap();
    let stats = stats::Stats::new(
        hub.store.clone(),
        std::sync::Arc::new(hub.clock.clone()),
        stats::StatsConfig::default(),
    );
    let service = hub
        .service(scheduler::SchedulerConfig {
            stats: stats.clone(),
            ..Hub::config(7)
        })
        .await;
    service.run_due().await.unwrap();
    let mut keys = Vec::new();
    for label in ["backend-1", "backend-2"] {
        let key = crate::common::api_key();
        let record = hub
            .store
            .create_api_key(
                &store::api_keys::NewApiKey::with_all_scopes(&a.id, &key.hash, label),
                hub.now(),
                &store::audit::AuditRecord::new("test", "api_key.create"),
            )
            .await
            .unwrap();
        keys.push((key.secret.expose().to_owned(), record.id));
    }
    let base = crate::common::serve(service.clone()).await;
    let http = reqwest::Client::new();
    let url = |rest: &str| format!("{base}/api/v1/accounts/{}/{rest}", a.appid);
    for (i, (key, _)) in keys.iter().enumerate() {
        for _ in 0..=i {
            let r = http
                .get(url("access_token"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
    }
    // A refused read is not a read.
    let refused = http
        .get(url("access_token"))
        .bearer_auth("wxk_nonsense")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    // Proxy: one plain call, one answered 45009, one retried after a rejected token.
    let ips = "/cgi-bin/getcallbackip";
    let proxy = || {
        http.get(url("wechat/cgi-bin/getcallbackip"))
            .bearer_auth(&keys[0].0)
            .send()
    };
    assert_eq!(proxy().await.unwrap().status(), StatusCode::OK);
    for code in [45009, 40001] {
        hub.sim()
            .add_fault(FaultSpec {
                endpoint: Some(ips.into()),
                appid: Some(a.appid.clone()),
                action: FaultAction::Errcode { code, errmsg: None },
                next: Some(1),
                rate: None,
            })
            .unwrap();
        hub.advance(120);
        assert_eq!(proxy().await.unwrap().status(), StatusCode::OK);
    }
    stats.flush().await.unwrap();
    let (key_1, key_2) = (&keys[0].1, &keys[1].1);
    let mut expected = vec![
        row("proxy.calls", "cgi-bin/getcallbackip", 3),
        row("proxy.errors", "45009", 1),
        row("proxy.latency", "le_50", 3),
        row("proxy.retries", "", 1),
        row("token.reads", key_1, 1),
        row("token.reads", key_2, 2),
        // The first refresh, and the one the rejected token caused.
        row("token.refresh.ok", "", 2),
    ];
    expected.sort();
    let mut got = totals(&hub, &a.id).await;
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(
        totals(&hub, &b.id).await,
        [row("token.refresh.failed", "40125", 1)]
    );
}
