//! Importing accounts from an operator's file: every bad line reported with its number and
//! nothing stored; a good file stored in batches, each with its audit entry, as single
//! registration would store each account.

mod common;

use store::accounts::{AccountKind, TokenMode};
use store::audit::AuditFilter;
use tenancy::tenants::{IMPORT_BATCH, ImportLine};
use tenancy::{Principal, TenancyError};
use testkit::TestDatabase;
use vault::SecretString;

fn line(line: u64, appid: &str, secret: &str, name: &str) -> ImportLine {
    ImportLine {
        line,
        appid: appid.to_owned(),
        name: name.to_owned(),
        kind: AccountKind::Service,
        verified: true,
        token_mode: TokenMode::Token,
        appsecret: SecretString::new(secret.to_owned()),
        push_token: None,
        encoding_aes_key: None,
    }
}

fn good(i: u64) -> ImportLine {
    line(
        i + 1,
        &format!("wx{i:016x}"),
        &format!("{i:032x}"),
        "Imported",
    )
}

async fn bad_lines_are_all_reported_and_nothing_is_stored(db: TestDatabase) {
    let (tenancy, _sim) = common::tenancy_with_sim(&db, None).await;
    let cli = Principal::cli();
    let imported = tenancy
        .import_accounts(&cli, "owner@import.example", vec![good(0)], &mut |_| {})
        .await
        .unwrap();
    assert_eq!(imported, 1);
    let lines = vec![
        good(1),
        line(3, "wx12", &format!("{:032x}", 2), "Short appid"),
        line(4, "wx0000000000000004", "not-a-secret", "Bad secret"),
        line(5, "wx0000000000000005", &format!("{:032x}", 5), "  "),
        // Twice in the file, and one registered already.
        line(6, "wx0000000000000001", &format!("{:032x}", 6), "Again"),
        line(
            7,
            "wx0000000000000000",
            &format!("{:032x}", 7),
            "Registered",
        ),
    ];
    let error = tenancy
        .import_accounts(&cli, "owner@import.example", lines, &mut |_| {})
        .await
        .unwrap_err();
    let TenancyError::Import { errors } = error else {
        panic!("expected the lines' errors, got {error:?}");
    };
    let faults: Vec<(u64, &str)> = errors.iter().map(|e| (e.line, e.field)).collect();
    assert_eq!(
        faults,
        [
            (3, "appid"),
            (4, "appsecret"),
            (5, "name"),
            (6, "appid"),
            (7, "appid")
        ]
    );
    assert!(errors[3].to_string().contains("line 2"), "{}", errors[3]);
    assert!(errors[4].message.contains("registered already"));
    // The secret is never echoed.
    assert!(errors.iter().all(|e| !e.message.contains("not-a-secret")));
    assert_eq!(tenancy.store().count_accounts().await.unwrap(), 1);
    db.finish().await;
}

async fn a_good_file_is_stored_in_audited_batches(db: TestDatabase) {
    let (tenancy, _sim) = common::tenancy_with_sim(&db, None).await;
    let count = IMPORT_BATCH as u64 + 3;
    let mut seen = Vec::new();
    let imported = tenancy
        .import_accounts(
            &Principal::cli(),
            "owner@import.example",
            (0..count).map(good).collect(),
            &mut |stored| seen.push(stored),
        )
        .await
        .unwrap();
    assert_eq!(imported as u64, count);
    assert_eq!(seen, [IMPORT_BATCH, IMPORT_BATCH + 3]);
    assert_eq!(
        tenancy.store().count_accounts().await.unwrap() as u64,
        count
    );
    // Stored like a single registration: its sealed secrets, its first token due at once.
    let account = tenancy
        .store()
        .find_account_by_appid("wx0000000000000007")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.name, "Imported");
    let secrets = tenancy
        .store()
        .load_account_secrets(&account.id)
        .await
        .unwrap();
    assert!(secrets.is_some_and(|s| s.appsecret != format!("{:032x}", 7).into_bytes()));
    let token = tenancy
        .store()
        .get_core_token(&account.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token.state, store::tokens::TokenState::Pending);
    let audit = tenancy
        .store()
        .list_audit_page(&AuditFilter::default(), None, 100)
        .await
        .unwrap();
    let imports: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "account.import")
        .collect();
    assert_eq!(imports.len(), 2);
    assert!(imports.iter().all(|e| e.actor == "cli"));
    db.finish().await;
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(testkit::TestDatabase::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = testkit::TestDatabase::postgres().await {
                        super::$name(db).await;
                    }
                }
            )*
        }
    };
}

on_both! {
    bad_lines_are_all_reported_and_nothing_is_stored,
    a_good_file_is_stored_in_audited_batches,
}
