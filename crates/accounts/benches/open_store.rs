//! Start-up and secret-access costs at scale, on an SQLite file.
//!
//! Run with `cargo bench -p accounts --bench open_store` (`WXHUB_BENCH_ACCOUNTS=N` to change
//! the default of 100,000 accounts). Reports, in one run:
//! - opening the store and checking the keyring against it (what `wxhub serve` does before it
//!   listens) with N accounts, against the same on an empty database: start-up must not grow
//!   with the number of secrets, because it decrypts none;
//! - reading and decrypting every account's APPSECRET through the store, against decrypting
//!   the same ciphertexts already in memory (the vault's share of the cost).

use std::hint::black_box;
use std::time::{Duration, Instant};

use accounts::{AccountInput, read_secrets, register_account, rotation};
use store::Store;
use store::accounts::{AccountKind, TokenMode};
use store::people::{NewUser, Role};
use vault::{KeyId, Keyring, SecretString, Vault, WrappedDek};

fn per_op(elapsed: Duration, ops: usize) -> f64 {
    elapsed.as_nanos() as f64 / ops.max(1) as f64
}

async fn startup(url: &str, keyring: &Keyring) -> Duration {
    let start = Instant::now();
    let store = Store::connect(url).await.expect("open");
    rotation::check_keyring_matches(&store, keyring)
        .await
        .expect("keyring matches");
    let elapsed = start.elapsed();
    store.close().await;
    elapsed
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("WXHUB_BENCH_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("wxhub-bench-{}", store::new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let full_url = format!("sqlite://{}/full.db?mode=rwc", dir.display());
    let empty_url = format!("sqlite://{}/empty.db?mode=rwc", dir.display());
    let keyring = Keyring::generate(KeyId::new("bench").unwrap());
    let vault = Vault::new(keyring.clone());

    let store = Store::connect(&full_url).await.unwrap();
    let owner = store
        .create_user(
            &NewUser {
                id: store::new_id(),
                email: "bench@example.com".into(),
                password_hash: "!".into(),
                role: Role::Owner,
            },
            0,
        )
        .await
        .unwrap();
    let setup = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let input = AccountInput {
            owner_user_id: owner.id.clone(),
            appid: format!("wx{i:016x}"),
            name: format!("bench {i}"),
            kind: AccountKind::Service,
            verified: true,
            token_mode: TokenMode::Token,
            appsecret: SecretString::new(format!("{i:032x}")),
            push_token: Some(SecretString::new("benchtoken".into())),
            encoding_aes_key: None,
        };
        ids.push(
            register_account(&store, &vault, &input, 0)
                .await
                .unwrap()
                .id,
        );
    }
    let setup = setup.elapsed();
    println!(
        "register {n} accounts (setup): {:.1} s, {:.0} us/account",
        setup.as_secs_f64(),
        per_op(setup, n) / 1000.0
    );
    store.close().await;
    Store::connect(&empty_url).await.unwrap().close().await;

    // Start-up, best of five each, alternating so both see the same machine state.
    let (mut full, mut empty) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        full = full.min(startup(&full_url, &keyring).await);
        empty = empty.min(startup(&empty_url, &keyring).await);
    }
    println!(
        "start-up (open + keyring check): {n} accounts {:.1} ms, empty {:.1} ms, ratio {:.2}x",
        full.as_secs_f64() * 1e3,
        empty.as_secs_f64() * 1e3,
        full.as_secs_f64() / empty.as_secs_f64()
    );

    let store = Store::connect(&full_url).await.unwrap();
    let start = Instant::now();
    let mut sealed = Vec::with_capacity(n);
    for id in &ids {
        let secrets = read_secrets(&store, &vault, id).await.unwrap();
        black_box(secrets.appsecret.len());
    }
    let through_store = start.elapsed();
    for id in &ids {
        sealed.push(store.load_account_secrets(id).await.unwrap().unwrap());
    }
    let start = Instant::now();
    for (id, s) in ids.iter().zip(&sealed) {
        let dek = vault
            .unwrap_dek(id, &WrappedDek::from_bytes(s.wrapped_dek.clone()).unwrap())
            .unwrap();
        black_box(dek.decrypt(id, "appsecret", &s.appsecret).unwrap().len());
    }
    let in_memory = start.elapsed();
    println!(
        "decrypt every APPSECRET: through the store {:.2} s ({:.1} us each), vault alone {:.2} s ({:.1} us each), ratio {:.1}x",
        through_store.as_secs_f64(),
        per_op(through_store, n) / 1000.0,
        in_memory.as_secs_f64(),
        per_op(in_memory, n) / 1000.0,
        through_store.as_secs_f64() / in_memory.as_secs_f64()
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
