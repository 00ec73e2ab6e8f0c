//! A fresh database per test, with accounts to count for.

use std::future::Future;
use std::sync::Arc;

use sqlx::{AssertSqlSafe, Executor};
use store::Store;
use store::accounts::{AccountKind, AccountSecrets, NewAccount, TokenMode};
use store::people::{NewUser, Role};
use testkit::TestDatabase;
use wechat::ManualClock;

/// 2026-03-02 00:00 China time (2026-03-01T16:00:00Z), a Monday.
pub const START: i64 = 1_772_380_800_000;
pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 24 * HOUR;

pub struct Env {
    pub url: String,
    pub store: Store,
    pub clock: ManualClock,
    /// Two accounts' ids.
    pub accounts: [String; 2],
}

impl Env {
    pub fn shared_clock(&self) -> wechat::SharedClock {
        Arc::new(self.clock.clone())
    }

    /// Runs one statement under the store's API (to break the schema for a while).
    pub async fn raw(&self, sql: &str) {
        if self.url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
            pool.execute(AssertSqlSafe(sql.to_owned())).await.unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            pool.execute(AssertSqlSafe(sql.to_owned())).await.unwrap();
            pool.close().await;
        }
    }
}

async fn env(url: &str) -> Env {
    let store = Store::connect(url).await.unwrap();
    let owner = store
        .create_user(
            &NewUser {
                id: store::new_id(),
                email: "owner@example.com".into(),
                password_hash: "!".into(),
                role: Role::Owner,
            },
            START,
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for appid in ["wxstats1", "wxstats2"] {
        let account = store
            .create_account(
                &NewAccount {
                    id: store::new_id(),
                    owner_user_id: owner.id.clone(),
                    appid: appid.to_owned(),
                    name: format!("Account {appid}"),
                    kind: AccountKind::Service,
                    verified: true,
                    token_mode: TokenMode::Token,
                    secrets: AccountSecrets {
                        wrapped_dek: b"wrapped".to_vec(),
                        dek_kek_id: "k1".into(),
                        appsecret: b"sealed".to_vec(),
                        push_token: None,
                        encoding_aes_key: None,
                    },
                    appsecret_hint: None,
                },
                START,
            )
            .await
            .unwrap();
        ids.push(account.id);
    }
    Env {
        url: url.to_owned(),
        store,
        clock: ManualClock::new(START),
        accounts: [ids[0].clone(), ids[1].clone()],
    }
}

pub async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = TestDatabase::sqlite();
    let env = env(db.url()).await;
    let store = env.store.clone();
    test(env).await;
    store.close().await;
    db.finish().await;
}

pub async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Env) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let env = env(db.url()).await;
    let store = env.store.clone();
    let outcome = tokio::spawn(test(env)).await;
    store.close().await;
    db.finish().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}
