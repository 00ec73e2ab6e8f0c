//! Online rotation under load: worker threads read and write account secrets while another
//! thread re-wraps every DEK under the new master key. Nothing may be lost or fail.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};

use common::key_id;
use vault::{Keyring, Vault, WrappedDek};

const ACCOUNTS: usize = 64; // a multiple of WORKERS
const WORKERS: usize = 4;
const MIN_ROUNDS_PER_WORKER: usize = 400;

/// One account's stored row, as the store would keep it.
#[derive(Clone)]
struct Row {
    wrapped: WrappedDek,
    appsecret: Vec<u8>,
    /// The plaintext last written, to check nothing was lost.
    expected: String,
}

#[test]
fn rewrapping_all_deks_while_threads_use_them_loses_nothing() {
    let keyring = Keyring::generate(key_id("k1"));
    let setup = Vault::new(keyring.clone());
    let mut rows = HashMap::new();
    for i in 0..ACCOUNTS {
        let account = format!("acct-{i}");
        let (dek, wrapped) = setup.create_dek(&account);
        let expected = format!("secret-{i}-initial");
        let appsecret = dek.encrypt(&account, "appsecret", expected.as_bytes());
        rows.insert(
            account,
            Row {
                wrapped,
                appsecret,
                expected,
            },
        );
    }
    let store = Mutex::new(rows);
    // Every replica has both keys, k2 active: reads of k1-wrapped DEKs keep working while
    // they are re-wrapped.
    let vault = Vault::new(keyring.add_key(key_id("k2")).expect("add k2"));
    let rewrap_done = AtomicBool::new(false);
    let rewrapped = AtomicUsize::new(0);
    let barrier = Barrier::new(WORKERS + 1);

    std::thread::scope(|scope| {
        for worker in 0..WORKERS {
            let (vault, store, barrier, rewrap_done) = (&vault, &store, &barrier, &rewrap_done);
            scope.spawn(move || {
                barrier.wait();
                let mut round = 0;
                while round < MIN_ROUNDS_PER_WORKER || !rewrap_done.load(Ordering::Acquire) {
                    let account = format!("acct-{}", (round * WORKERS + worker) % ACCOUNTS);
                    let row = store.lock().unwrap()[&account].clone();
                    let dek = vault.unwrap_dek(&account, &row.wrapped).expect("unwrap");
                    let secret = dek
                        .decrypt_string(&account, "appsecret", &row.appsecret)
                        .expect("decrypt");
                    assert_eq!(secret.expose(), row.expected);

                    // Account indexes visited by this worker are all ≡ worker (mod WORKERS),
                    // so each account has one writer of its fields, and the re-wrapping
                    // thread is the only other writer of the row.
                    let expected = format!("secret-{account}-w{worker}-r{round}");
                    let appsecret = dek.encrypt(&account, "appsecret", expected.as_bytes());
                    {
                        let mut rows = store.lock().unwrap();
                        let row = rows.get_mut(&account).expect("row");
                        row.appsecret = appsecret;
                        row.expected = expected;
                    }
                    round += 1;
                }
            });
        }

        let (vault, store, barrier) = (&vault, &store, &barrier);
        let (rewrap_done, rewrapped) = (&rewrap_done, &rewrapped);
        scope.spawn(move || {
            barrier.wait();
            for i in 0..ACCOUNTS {
                let account = format!("acct-{i}");
                let current = store.lock().unwrap()[&account].wrapped.clone();
                if let Some(new) = vault.rewrap(&account, &current).expect("rewrap") {
                    // Compare-and-set, as the store's UPDATE ... WHERE wrapped_dek = $old does.
                    let mut rows = store.lock().unwrap();
                    let row = rows.get_mut(&account).expect("row");
                    if row.wrapped == current {
                        row.wrapped = new;
                        rewrapped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            rewrap_done.store(true, Ordering::Release);
        });
    });

    assert_eq!(rewrapped.load(Ordering::Relaxed), ACCOUNTS);
    // Without k1, every account must still be fully readable.
    let final_keyring = vault
        .keyring()
        .remove_key(&key_id("k1"), &[key_id("k2")])
        .expect("k1 no longer in use");
    let final_vault = Vault::new(final_keyring);
    for (account, row) in store.into_inner().unwrap() {
        assert_eq!(row.wrapped.kek_id(), "k2", "{account}");
        let dek = final_vault
            .unwrap_dek(&account, &row.wrapped)
            .expect("unwrap");
        let secret = dek
            .decrypt_string(&account, "appsecret", &row.appsecret)
            .expect("decrypt");
        assert_eq!(secret.expose(), row.expected, "{account}");
    }
}
