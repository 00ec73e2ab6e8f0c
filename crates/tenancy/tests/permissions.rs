//! Every operation of the tenancy layer × {the owner of the account, another owner, an
//! operator}: allowed or refused exactly as [`EXPECTED`] says, on SQLite and PostgreSQL.
//!
//! The operation list comes from `Operation::ALL` and the dispatcher below matches on it
//! exhaustively, so a new operation fails to compile here until it is given a call, and fails
//! the test until it is given a row in `EXPECTED`.

mod common;

use store::accounts::{AccountKind, TokenMode};
use store::api_keys::KeyScopes;
use store::oidc::LoginMode;
use store::people::Role;
use tenancy::keys::KeyRequest;
use tenancy::people::AuditQuery;
use tenancy::settings::SettingsChange;
use tenancy::tenants::{LiveCheck, NewOwner, Registration};
use tenancy::websites::{NewWebsite, WebsiteChanges};
use tenancy::{Operation, Principal, Tenancy, TenancyError};
use testkit::TestDatabase;
use vault::SecretString;
use wechat_sim::{AccountSpec, RunningSim};

/// (operation, the account's owner, another owner, an operator): allowed?
const EXPECTED: &[(Operation, bool, bool, bool)] = &[
    (Operation::AccountRegister, true, true, false),
    (Operation::AccountImport, false, false, false),
    (Operation::AccountList, true, false, true),
    (Operation::AccountView, true, false, true),
    (Operation::AccountRename, true, false, false),
    (Operation::AccountReplaceSecret, true, false, false),
    (Operation::AccountSetPushCredentials, true, false, false),
    (Operation::AccountDisable, true, false, true),
    (Operation::AccountEnable, true, false, true),
    (Operation::AccountDelete, true, false, false),
    (Operation::AccountRefreshNow, true, false, false),
    (Operation::AccountClearQuota, true, false, false),
    (Operation::ApiKeyCreate, true, false, false),
    (Operation::ApiKeyList, true, false, true),
    (Operation::ApiKeyRevoke, true, false, true),
    (Operation::WebsiteCreate, true, false, false),
    (Operation::WebsiteList, true, false, true),
    (Operation::WebsiteView, true, false, true),
    (Operation::WebsiteEdit, true, false, false),
    (Operation::WebsiteRotateSecret, true, false, false),
    (Operation::WebsiteDelete, true, false, false),
    (Operation::SettingsView, true, false, true),
    (Operation::SettingsUpdate, true, false, false),
    (Operation::EndUserList, true, false, false),
    (Operation::AuditList, true, false, true),
    (Operation::PersonCreate, false, false, true),
    (Operation::PersonInvite, false, false, true),
    (Operation::PersonDisable, false, false, true),
    (Operation::PersonEnable, false, false, true),
    (Operation::PersonList, false, false, true),
    (Operation::PlatformHealth, false, false, true),
    (Operation::StatsView, true, false, true),
    (Operation::PlatformStats, false, false, true),
    (Operation::PersonResetTotp, false, false, true),
    (Operation::SettingsProbe, true, false, false),
    (Operation::PushRouteCreate, true, false, false),
    (Operation::PushRouteList, true, false, true),
    (Operation::PushRouteEdit, true, false, false),
    (Operation::PushRouteDelete, true, false, false),
    (Operation::PushRouteFailures, true, false, true),
    (Operation::PushRouteResend, true, false, false),
];

struct World {
    tenancy: Tenancy,
    sim: RunningSim,
    owner_a: Principal,
    owner_b: Principal,
    operator: Principal,
    next: std::sync::atomic::AtomicU32,
}

/// What one trial works on: a fresh account of owner A with a key, a website and a person.
struct Target {
    appid: String,
    key_id: String,
    client_id: String,
    person_id: String,
}

fn secret_of(appid: &str) -> String {
    testkit::canary::app_secret_for(appid)
}

impl World {
    async fn new(db: &TestDatabase) -> World {
        let (tenancy, sim) = common::tenancy_with_sim(db, None).await;
        let cli = Principal::cli();
        let mut principals = Vec::new();
        for (email, role) in [
            ("a@owners.example", Role::Owner),
            ("b@owners.example", Role::Owner),
            ("ops@hub.example", Role::Operator),
        ] {
            let user = tenancy.create_person(&cli, email, role).await.unwrap();
            principals.push(tenancy.principal_for_user(&user.id).await.unwrap());
        }
        let operator = principals.pop().unwrap();
        let owner_b = principals.pop().unwrap();
        let owner_a = principals.pop().unwrap();
        World {
            tenancy,
            sim,
            owner_a,
            owner_b,
            operator,
            next: Default::default(),
        }
    }

    fn fresh_appid(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let appid = format!("wx{n:016x}");
        self.sim
            .sim
            .create_account(AccountSpec::new(appid.clone(), secret_of(&appid)))
            .unwrap();
        appid
    }

    fn registration(&self, appid: &str, owner: NewOwner) -> Registration {
        Registration {
            appid: appid.to_owned(),
            name: "Permission test".to_owned(),
            kind: AccountKind::Service,
            verified: true,
            token_mode: TokenMode::Token,
            appsecret: SecretString::new(secret_of(appid)),
            push_token: None,
            encoding_aes_key: None,
            owner,
            check: LiveCheck::Check,
        }
    }

    /// A fresh account of owner A, with a key, a website, and a person to disable.
    async fn target(&self) -> Target {
        let cli = Principal::cli();
        let appid = self.fresh_appid();
        let owner_a = self.owner_a.owner_id().unwrap().to_owned();
        let email = self
            .tenancy
            .store()
            .get_user(&owner_a)
            .await
            .unwrap()
            .unwrap()
            .email;
        self.tenancy
            .register_account(&cli, self.registration(&appid, NewOwner::Email(email)))
            .await
            .unwrap();
        let key = self
            .tenancy
            .create_api_key(&cli, &appid, &key_request())
            .await
            .unwrap();
        let site = self
            .tenancy
            .create_website(&cli, &appid, &website())
            .await
            .unwrap();
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let person = self
            .tenancy
            .create_person(&cli, &format!("p{n}@people.example"), Role::Owner)
            .await
            .unwrap();
        Target {
            appid,
            key_id: key.record.id,
            client_id: site.client.client_id,
            person_id: person.id,
        }
    }

    /// Performs `operation` on `target` as `principal`.
    async fn run(
        &self,
        operation: Operation,
        principal: &Principal,
        t: &Target,
    ) -> Result<(), TenancyError> {
        let tn = &self.tenancy;
        let p = principal;
        let appid = t.appid.as_str();
        match operation {
            Operation::AccountRegister => {
                let appid = self.fresh_appid();
                let owner = match p {
                    Principal::Owner { .. } => NewOwner::Caller,
                    _ => NewOwner::Email("new-owner@owners.example".to_owned()),
                };
                tn.register_account(p, self.registration(&appid, owner))
                    .await
                    .map(drop)
            }
            Operation::AccountImport => tn
                .import_accounts(p, "new-owner@owners.example", Vec::new(), &mut |_| {})
                .await
                .map(drop),
            Operation::AccountList => {
                let listed = tn
                    .list_accounts(p, &tenancy::tenants::AccountQuery::default(), None, 1000)
                    .await?;
                // Listing is open to all; seeing this account is what is allowed or not.
                if listed.iter().any(|v| v.account.appid == appid) {
                    Ok(())
                } else {
                    Err(TenancyError::NotFound { what: "account" })
                }
            }
            Operation::AccountView => tn.account(p, appid).await.map(drop),
            Operation::AccountRename => tn.rename_account(p, appid, "Renamed").await.map(drop),
            Operation::AccountReplaceSecret => {
                tn.replace_appsecret(
                    p,
                    appid,
                    SecretString::new(secret_of(appid)),
                    LiveCheck::Check,
                )
                .await
            }
            Operation::AccountSetPushCredentials => {
                tn.rotate_push_credentials(p, appid).await.map(drop)
            }
            Operation::AccountDisable => tn.disable_account(p, appid).await.map(drop),
            Operation::AccountEnable => tn.enable_account(p, appid).await.map(drop),
            Operation::AccountDelete => tn.delete_account(p, appid).await,
            Operation::AccountRefreshNow => tn.refresh_now(p, appid).await,
            Operation::AccountClearQuota => tn.clear_quota(p, appid).await,
            Operation::ApiKeyCreate => tn.create_api_key(p, appid, &key_request()).await.map(drop),
            Operation::ApiKeyList => tn.list_api_keys(p, appid).await.map(drop),
            Operation::ApiKeyRevoke => tn.revoke_api_key(p, appid, &t.key_id).await,
            Operation::WebsiteCreate => tn.create_website(p, appid, &website()).await.map(drop),
            Operation::WebsiteList => tn.list_websites(p, appid).await.map(drop),
            Operation::WebsiteView => tn.website(p, appid, &t.client_id).await.map(drop),
            Operation::WebsiteEdit => tn
                .edit_website(
                    p,
                    appid,
                    &t.client_id,
                    &WebsiteChanges {
                        name: Some("Edited".into()),
                        ..WebsiteChanges::default()
                    },
                )
                .await
                .map(drop),
            Operation::WebsiteRotateSecret => tn
                .rotate_website_secret(p, appid, &t.client_id)
                .await
                .map(drop),
            Operation::WebsiteDelete => tn.delete_website(p, appid, &t.client_id).await,
            Operation::SettingsView => tn.gateway_settings(p, appid).await.map(drop),
            Operation::SettingsUpdate => {
                let change = SettingsChange {
                    original_id: Some(Some("gh_0123456789ab".to_owned())),
                    ..SettingsChange::default()
                };
                tn.update_gateway_settings(p, appid, change).await.map(drop)
            }
            // Allowed is getting past the permission check to the account's token, which
            // this world never fetches; the probe itself is tested in `console.rs`.
            Operation::SettingsProbe => match tn.probe_push_url(p, appid).await {
                Err(TenancyError::Invalid { field: "token", .. }) => Ok(()),
                other => other.map(drop),
            },
            Operation::EndUserList => tn.list_end_users(p, appid, None, None, 10).await.map(drop),
            Operation::AuditList => {
                let query = AuditQuery {
                    appid: Some(appid.to_owned()),
                    ..AuditQuery::default()
                };
                tn.list_audit(p, &query, None, 10).await.map(drop)
            }
            Operation::PersonCreate => {
                let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tn.create_person(p, &format!("new{n}@people.example"), Role::Owner)
                    .await
                    .map(drop)
            }
            Operation::PersonInvite => {
                let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tn.invite_person(p, &format!("invited{n}@people.example"), Role::Owner)
                    .await
                    .map(drop)
            }
            Operation::PersonDisable => tn.set_person_disabled(p, &t.person_id, true).await,
            Operation::PersonEnable => tn.set_person_disabled(p, &t.person_id, false).await,
            Operation::PersonList => tn.list_people(p, None, 10).await.map(drop),
            Operation::StatsView => tn
                .account_series(p, appid, store::stats::Granularity::Day, 0, 86_400_000, &[])
                .await
                .map(drop),
            Operation::PlatformStats => tn
                .platform_series(p, store::stats::Granularity::Day, 0, 86_400_000, &[])
                .await
                .map(drop),
            // Allowed is getting past the permission check to the person, who has no
            // second factor in this world; resetting one is tested in the dashboard's flows.
            Operation::PersonResetTotp => match tn.reset_person_totp(p, &t.person_id).await {
                Err(TenancyError::Invalid { field: "user", .. }) => Ok(()),
                other => other.map(drop),
            },
            Operation::PlatformHealth => tn.platform_health(p).await.map(drop),
            Operation::PushRouteCreate => tn.create_push_route(p, appid, route()).await.map(drop),
            Operation::PushRouteList => tn.list_push_routes(p, appid).await.map(drop),
            Operation::PushRouteEdit => {
                let id = tn
                    .create_push_route(&Principal::cli(), appid, route())
                    .await?
                    .id;
                let change = tenancy::push_routes::RouteChange {
                    enabled: Some(false),
                    ..Default::default()
                };
                tn.edit_push_route(p, appid, &id, change).await.map(drop)
            }
            Operation::PushRouteDelete => {
                let id = tn
                    .create_push_route(&Principal::cli(), appid, route())
                    .await?
                    .id;
                tn.delete_push_route(p, appid, &id).await
            }
            Operation::PushRouteFailures => tn.push_route_problems(p, appid).await.map(drop),
            // Allowed is getting past the permission check to the dead letter, which this
            // world has none of; re-sending is tested with the gateway's queue.
            Operation::PushRouteResend => match tn.resend_dead_letter(p, appid, "none").await {
                Err(TenancyError::NotFound {
                    what: "dead letter",
                }) => Ok(()),
                other => other,
            },
        }
    }
}

fn route() -> tenancy::push_routes::NewRoute {
    tenancy::push_routes::NewRoute {
        target_url: "https://owner.example/wechat".to_owned(),
        match_msg_type: Some("text".to_owned()),
        match_event: None,
        match_event_key_prefix: None,
        delivery: store::push_routes::Delivery::Reply,
        push_mode: None,
        credentials: tenancy::push_routes::RouteCredentials {
            token: SecretString::new("ca9a27ca9a27route1".to_owned()),
            encoding_aes_key: None,
        },
        position: None,
        enabled: true,
    }
}

fn key_request() -> KeyRequest {
    KeyRequest {
        label: "backend".to_owned(),
        scopes: KeyScopes::ALL,
        proxy_paths: None,
    }
}

fn website() -> NewWebsite {
    NewWebsite {
        name: "Site".to_owned(),
        redirect_uris: vec!["https://site.example/cb".to_owned()],
        login_mode: LoginMode::Userinfo,
        public: false,
    }
}

async fn every_operation_is_allowed_or_refused_as_the_table_says(db: TestDatabase) {
    for operation in Operation::ALL {
        assert!(
            EXPECTED.iter().any(|(op, ..)| op == operation),
            "{} has no row in EXPECTED: decide who may do it",
            operation.name()
        );
    }
    let world = World::new(&db).await;
    let mut mismatches = Vec::new();
    for &(operation, owner, other_owner, operator) in EXPECTED {
        for (who, principal, allowed) in [
            ("its owner", &world.owner_a, owner),
            ("another owner", &world.owner_b, other_owner),
            ("an operator", &world.operator, operator),
        ] {
            let target = world.target().await;
            let result = world.run(operation, principal, &target).await;
            let ok = match (&result, allowed) {
                (Ok(()), true) => true,
                (Err(error), false) => error.is_refusal(),
                _ => false,
            };
            if !ok {
                mismatches.push(format!(
                    "{} by {who}: expected {}, got {result:?}",
                    operation.name(),
                    if allowed { "allowed" } else { "refused" }
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // The CLI may do everything.
    for &(operation, ..) in EXPECTED {
        let target = world.target().await;
        world
            .run(operation, &Principal::cli(), &target)
            .await
            .unwrap_or_else(|e| panic!("{} by the CLI: {e}", operation.name()));
    }
    db.finish().await;
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_operation_is_allowed_or_refused_as_the_table_says() {
        super::every_operation_is_allowed_or_refused_as_the_table_says(
            testkit::TestDatabase::sqlite(),
        )
        .await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_operation_is_allowed_or_refused_as_the_table_says() {
        if let Some(db) = testkit::TestDatabase::postgres().await {
            super::every_operation_is_allowed_or_refused_as_the_table_says(db).await;
        }
    }
}
