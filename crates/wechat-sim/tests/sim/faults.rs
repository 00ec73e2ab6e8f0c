//! Fault injection (§11: −1, 45011, 5xx, slow responses, timeouts, drops, 40164).

use std::time::{Duration, Instant};

use wechat::ErrorClass;
use wechat_sim::{FaultAction, FaultSpec};

use crate::common::{Env, code, secret};

fn next(endpoint: &str, n: u32, action: FaultAction) -> FaultSpec {
    FaultSpec {
        endpoint: Some(endpoint.into()),
        appid: None,
        action,
        next: Some(n),
        rate: None,
    }
}

#[tokio::test]
async fn fault_next_n_calls_then_recovers() {
    let env = Env::new().await;
    env.account("wx1");
    env.sim()
        .add_fault(next(
            "/cgi-bin/token",
            2,
            FaultAction::Errcode {
                code: -1,
                errmsg: None,
            },
        ))
        .unwrap();
    for _ in 0..2 {
        let err = env
            .client
            .get_token("wx1", &secret("wx1"))
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::Transient);
        assert_eq!(code(err), -1);
    }
    env.token("wx1").await;
    assert!(env.sim().faults().is_empty(), "spent rules are removed");
    let c = env.sim().counter("wx1", "/cgi-bin/token");
    assert_eq!((c.calls, c.ok, c.errors), (3, 1, 2));
    let log = env.sim().calls(Some("wx1"), Some("/cgi-bin/token"), 10);
    assert_eq!(log[0].fault.as_deref(), Some("errcode"));
    assert_eq!(log[2].fault, None);
}

#[tokio::test]
async fn any_errcode_can_be_injected_with_its_message() {
    let env = Env::new().await;
    env.account("wx1");
    let t = env.token("wx1").await;
    env.sim()
        .add_fault(next(
            "/cgi-bin/getcallbackip",
            1,
            FaultAction::Errcode {
                code: 45011,
                errmsg: None,
            },
        ))
        .unwrap();
    env.sim()
        .add_fault(next(
            "/cgi-bin/getcallbackip",
            1,
            FaultAction::Errcode {
                code: 40164,
                errmsg: Some("invalid ip 9.9.9.9 ipv6 ::ffff:9.9.9.9, not in whitelist".into()),
            },
        ))
        .unwrap();
    assert_eq!(code(env.client.callback_ips(&t).await.unwrap_err()), 45011);
    let err = env.client.callback_ips(&t).await.unwrap_err();
    assert_eq!(err.caller_ip(), Some("9.9.9.9".parse().unwrap()));
}

#[tokio::test]
async fn probabilistic_fault_rate_is_seeded() {
    let env = Env::new().await;
    env.account("wx1");
    let spec = FaultSpec {
        endpoint: Some("/cgi-bin/token".into()),
        appid: Some("wx1".into()),
        action: FaultAction::Errcode {
            code: -1,
            errmsg: None,
        },
        next: None,
        rate: Some(0.5),
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        env.sim().clear_faults();
        env.sim().reseed_faults(42);
        env.sim().add_fault(spec.clone()).unwrap();
        let mut pattern = Vec::new();
        for _ in 0..24 {
            pattern.push(env.client.get_token("wx1", &secret("wx1")).await.is_err());
        }
        runs.push(pattern);
    }
    assert_eq!(runs[0], runs[1], "same seed, same sequence");
    let failures = runs[0].iter().filter(|f| **f).count();
    assert!((3..=21).contains(&failures), "rate 0.5 gave {failures}/24");
    env.sim().reseed_faults(7);
    let mut other = Vec::new();
    for _ in 0..24 {
        other.push(env.client.get_token("wx1", &secret("wx1")).await.is_err());
    }
    assert_ne!(other, runs[0], "another seed, another sequence");
}

#[tokio::test]
async fn http_5xx_fault_is_an_http_error() {
    let env = Env::new().await;
    env.account("wx1");
    env.sim()
        .add_fault(next(
            "/cgi-bin/token",
            1,
            FaultAction::HttpStatus { status: 502 },
        ))
        .unwrap();
    let err = env
        .client
        .get_token("wx1", &secret("wx1"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        wechat::WechatError::Http {
            endpoint: "/cgi-bin/token",
            status: 502
        }
    );
}

#[tokio::test]
async fn latency_fault_delays_then_succeeds() {
    let env = Env::new().await;
    env.account("wx1");
    env.sim()
        .add_fault(next("/cgi-bin/token", 1, FaultAction::Latency { ms: 300 }))
        .unwrap();
    let started = Instant::now();
    env.token("wx1").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn timeout_fault_makes_the_client_time_out() {
    let env = Env::new().await; // client timeout: 2 s
    env.account("wx1");
    env.sim()
        .add_fault(next("/cgi-bin/token", 1, FaultAction::Timeout { ms: 2500 }))
        .unwrap();
    let err = env
        .client
        .get_token("wx1", &secret("wx1"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        wechat::WechatError::Timeout {
            endpoint: "/cgi-bin/token"
        }
    );
}

#[tokio::test]
async fn drop_fault_closes_the_connection_without_a_response() {
    let env = Env::new().await;
    env.account("wx1");
    env.sim()
        .add_fault(next("/cgi-bin/token", 1, FaultAction::Drop))
        .unwrap();
    let err = env
        .client
        .get_token("wx1", &secret("wx1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, wechat::WechatError::Transport { .. }),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Transient);
    env.token("wx1").await;
}

#[tokio::test]
async fn fault_scoped_to_one_account_leaves_others_alone() {
    let env = Env::new().await;
    env.account("wx1");
    env.account("wx2");
    let mut spec = next(
        "/cgi-bin/token",
        1,
        FaultAction::Errcode {
            code: -1,
            errmsg: None,
        },
    );
    spec.appid = Some("wx1".into());
    env.sim().add_fault(spec).unwrap();
    env.token("wx2").await;
    assert_eq!(
        code(
            env.client
                .get_token("wx1", &secret("wx1"))
                .await
                .unwrap_err()
        ),
        -1
    );
}

#[tokio::test]
async fn fault_on_authorize_shows_an_error_page() {
    let env = Env::new().await;
    env.account("wx1");
    env.sim()
        .add_fault(next(
            "/connect/oauth2/authorize",
            1,
            FaultAction::Errcode {
                code: 10009,
                errmsg: None,
            },
        ))
        .unwrap();
    let resp = env.get("/connect/oauth2/authorize?appid=wx1").await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("data-errcode=\"10009\"")
    );
}

#[tokio::test]
async fn invalid_fault_specs_are_refused() {
    let env = Env::new().await;
    let mut spec = next("/cgi-bin/token", 1, FaultAction::Drop);
    spec.rate = Some(1.5);
    assert!(env.sim().add_fault(spec).is_err());
    let resp = env
        .post_json(
            "/__sim/faults",
            serde_json::json!({"action": {"kind": "drop"}}),
        )
        .await;
    assert_eq!(resp.status(), 422);
}

#[tokio::test]
async fn latency_delayed_success_counts_as_ok() {
    let env = Env::new().await;
    env.account("wx1");
    env.sim()
        .add_fault(next("/cgi-bin/token", 1, FaultAction::Latency { ms: 50 }))
        .unwrap();
    env.token("wx1").await;
    let c = env.sim().counter("wx1", "/cgi-bin/token");
    assert_eq!((c.calls, c.ok, c.errors), (1, 1, 0));
    let log = env.sim().calls(Some("wx1"), Some("/cgi-bin/token"), 1);
    assert_eq!(log[0].fault.as_deref(), Some("latency"));
    // A latency-delayed failure is still an error.
    env.sim()
        .add_fault(next("/cgi-bin/token", 1, FaultAction::Latency { ms: 50 }))
        .unwrap();
    env.client
        .get_token("wx1", &secret("bad"))
        .await
        .unwrap_err();
    let c = env.sim().counter("wx1", "/cgi-bin/token");
    assert_eq!((c.calls, c.ok, c.errors), (2, 1, 1));
}
