use std::time::{Duration, Instant};

use store::{DatabaseKind, Store, StoreError};

use crate::harness::{TempDir, TestDb};

pub async fn migrations_apply_and_are_idempotent(db: TestDb) {
    let status = db.store.schema_status().await.unwrap();
    assert!(!status.known.is_empty());
    assert_eq!(status.applied, status.known);
    assert!(status.pending().is_empty());
    // Running again applies nothing and changes nothing.
    assert_eq!(db.store.migrate().await.unwrap(), Vec::<i64>::new());
    let again = Store::connect(&db.url).await.unwrap();
    assert_eq!(again.schema_status().await.unwrap(), status);
    assert_eq!(again.migrate().await.unwrap(), Vec::<i64>::new());
    again.close().await;
    // The schema is really there.
    assert_eq!(db.count_rows("accounts").await, 0);
}

pub async fn newer_schema_is_refused(db: TestDb) {
    let known = db.store.schema_status().await.unwrap().known;
    let binary = *known.last().unwrap();
    let future = 99_990_101_000_000_i64;
    db.execute(
        &format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ({future}, 'from a newer wxhub', TRUE, X'00', 0)"
        ),
        &format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ({future}, 'from a newer wxhub', TRUE, '\\x00'::bytea, 0)"
        ),
    )
    .await;

    let error = Store::connect(&db.url).await.unwrap_err();
    match &error {
        StoreError::SchemaTooNew { db, binary: b } => {
            assert_eq!(*db, future);
            assert_eq!(*b, binary);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&future.to_string()) && message.contains(&binary.to_string()));
    // An explicit migrate on an open store refuses too.
    assert!(matches!(
        db.store.migrate().await,
        Err(StoreError::SchemaTooNew { .. })
    ));
}

pub async fn unreachable_database_fails_fast_without_leaking_the_password(db: TestDb) {
    let dir = TempDir::new();
    let url = match db.kind() {
        // Port 1 on loopback: nothing listens there.
        DatabaseKind::Postgres => {
            "postgres://wxhub:hunter2-db-password@127.0.0.1:1/wxhub".to_owned()
        }
        // A file in a directory that does not exist cannot be created.
        DatabaseKind::Sqlite => format!("sqlite://{}/missing-dir/wxhub.db", dir.path().display()),
    };
    let started = Instant::now();
    let error = Store::connect(&url).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    let shown = format!("{error} / {error:?}");
    assert!(!shown.contains("hunter2"), "leaked the password: {shown}");
    assert!(matches!(error, StoreError::Unavailable { .. }), "{shown}");
}

/// A server that accepts TCP connections but never says a word must not hang start-up.
pub async fn silent_database_server_times_out(db: TestDb) {
    // The kernel completes the handshake into the listener's backlog; nobody ever reads.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = match db.kind() {
        DatabaseKind::Postgres => {
            format!("postgres://wxhub:hunter2-db-password@127.0.0.1:{port}/wxhub")
        }
        // SQLite has no server; a file that is not a database is its closest failure.
        DatabaseKind::Sqlite => {
            let dir = TempDir::new();
            let file = dir.path().join("not-a-database.db");
            std::fs::write(&file, vec![0x5a; 8192]).unwrap();
            let url = format!("sqlite://{}", file.display());
            let error = Store::connect(&url).await.unwrap_err();
            assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
            return;
        }
    };
    let started = Instant::now();
    let error = Store::connect(&url).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    assert!(
        elapsed >= store::CONNECT_TIMEOUT,
        "gave up early: {elapsed:?}"
    );
    let shown = format!("{error} / {error:?}");
    assert!(!shown.contains("hunter2"), "leaked the password: {shown}");
    assert!(matches!(error, StoreError::Unavailable { .. }), "{shown}");
    drop(listener);
}

/// Migration 0015 turns a relay URL configured before push routes existed into the account's
/// relay route (and clears the old column), so nothing configured is lost.
pub async fn a_relay_url_becomes_the_accounts_relay_route(db: TestDb) {
    let account = crate::harness::account(&db.store, "wx0000000000000015").await;
    // The schema as before 0015: its tables gone and the migration not recorded, and a relay
    // URL in the settings column of the time.
    for table in [
        "push_route_failures",
        "push_replies",
        "push_copies",
        "push_routes",
    ] {
        let drop = format!("DROP TABLE {table}");
        db.execute(&drop, &drop).await;
    }
    let forget = "DELETE FROM _sqlx_migrations WHERE version = 15";
    db.execute(forget, forget).await;
    let insert = format!(
        "INSERT INTO gateway_account_settings (account_id, push_relay_url, updated_at) \
         VALUES ('{}', 'https://owner.example/wechat', 1000)",
        account.id
    );
    db.execute(&insert, &insert).await;

    let migrated = Store::connect(&db.url).await.unwrap();
    let routes = migrated.push_routes(&account.id).await.unwrap();
    assert_eq!(routes.len(), 1);
    let relay = &routes[0];
    assert!(relay.relay && relay.enabled && relay.token.is_none());
    assert_eq!(relay.delivery, store::push_routes::Delivery::Copy);
    assert_eq!(relay.target_url, "https://owner.example/wechat");
    assert!(relay.match_msg_type.is_none() && relay.match_event.is_none());
    // Read back as the relay setting, from the route; the old column is cleared.
    let settings = migrated.gateway_settings(&account.id).await.unwrap();
    assert_eq!(
        settings.push_relay_url.as_deref(),
        Some("https://owner.example/wechat")
    );
    let sql = "SELECT COUNT(*) AS n FROM gateway_account_settings WHERE push_relay_url IS NOT NULL";
    let left = match &db.raw {
        crate::harness::Raw::Sqlite(pool) => {
            sqlx::Row::get::<i64, _>(&sqlx::query(sql).fetch_one(pool).await.unwrap(), "n")
        }
        crate::harness::Raw::Postgres(pool) => {
            sqlx::Row::get::<i64, _>(&sqlx::query(sql).fetch_one(pool).await.unwrap(), "n")
        }
    };
    assert_eq!(left, 0);
    migrated.close().await;
}
