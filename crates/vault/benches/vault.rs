//! Throughput of the vault's hot paths, measured with `std::time::Instant`.
//!
//! Run with `cargo bench -p vault`. Measures encrypting and decrypting one secret, and the
//! cold path the token scheduler takes at start-up for every account — unwrap the account's
//! DEK, then decrypt its APPSECRET — for 100,000 accounts, sequentially and on 2 threads.

use std::hint::black_box;
use std::time::{Duration, Instant};

use vault::{DataKey, KeyId, Keyring, Vault, WrappedDek};

const ACCOUNTS: usize = 100_000;
const SINGLE_OPS: usize = 200_000;
const FIELD: &str = "appsecret";
const APPSECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn report(name: &str, ops: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{name:<48} {ops:>8} ops in {:>8.3} s  {:>12.0} ops/s  {:>8.0} ns/op",
        secs,
        ops as f64 / secs,
        elapsed.as_nanos() as f64 / ops as f64
    );
}

struct Account {
    id: String,
    wrapped: WrappedDek,
    secret: Vec<u8>,
}

fn unwrap_and_decrypt(vault: &Vault, accounts: &[Account]) -> usize {
    let mut total = 0;
    for account in accounts {
        let dek = vault
            .unwrap_dek(&account.id, &account.wrapped)
            .expect("bench DEK unwraps");
        let secret = dek
            .decrypt(&account.id, FIELD, &account.secret)
            .expect("bench secret decrypts");
        total += black_box(secret.len());
    }
    total
}

fn main() {
    let keyring = Keyring::generate(KeyId::new("bench").expect("valid id"));
    let vault = Vault::new(keyring);
    let (dek, _): (DataKey, _) = vault.create_dek("acct-bench");

    // Warm-up, then one encrypt per iteration.
    for _ in 0..1_000 {
        black_box(dek.encrypt("acct-bench", FIELD, APPSECRET));
    }
    let start = Instant::now();
    for _ in 0..SINGLE_OPS {
        black_box(dek.encrypt(black_box("acct-bench"), FIELD, black_box(APPSECRET)));
    }
    report("encrypt one 32-byte secret", SINGLE_OPS, start.elapsed());

    let ciphertext = dek.encrypt("acct-bench", FIELD, APPSECRET);
    let start = Instant::now();
    for _ in 0..SINGLE_OPS {
        let secret = dek
            .decrypt(black_box("acct-bench"), FIELD, black_box(&ciphertext))
            .expect("bench secret decrypts");
        black_box(secret.len());
    }
    report("decrypt one 32-byte secret", SINGLE_OPS, start.elapsed());

    let setup = Instant::now();
    let accounts: Vec<Account> = (0..ACCOUNTS)
        .map(|i| {
            let id = format!("acct-{i:06}");
            let (dek, wrapped) = vault.create_dek(&id);
            let secret = dek.encrypt(&id, FIELD, APPSECRET);
            Account {
                id,
                wrapped,
                secret,
            }
        })
        .collect();
    report(
        "create DEK + encrypt (setup), 100k accounts",
        ACCOUNTS,
        setup.elapsed(),
    );

    let start = Instant::now();
    let total = unwrap_and_decrypt(&vault, &accounts);
    report(
        "unwrap DEK + decrypt, 100k accounts, 1 thread",
        ACCOUNTS,
        start.elapsed(),
    );
    assert_eq!(total, ACCOUNTS * APPSECRET.len());

    let start = Instant::now();
    let (left, right) = accounts.split_at(ACCOUNTS / 2);
    let total = std::thread::scope(|scope| {
        let a = scope.spawn(|| unwrap_and_decrypt(&vault, left));
        let b = scope.spawn(|| unwrap_and_decrypt(&vault, right));
        a.join().expect("worker") + b.join().expect("worker")
    });
    report(
        "unwrap DEK + decrypt, 100k accounts, 2 threads",
        ACCOUNTS,
        start.elapsed(),
    );
    assert_eq!(total, ACCOUNTS * APPSECRET.len());
}
