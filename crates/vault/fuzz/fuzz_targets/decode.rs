//! Feeds arbitrary bytes to the vault's decoders (wrapped DEK and field ciphertext).
//!
//! Run with `cargo +nightly fuzz run decode` from `crates/vault`. The body lives in
//! `vault::fuzzing` so the normal test suite runs it too.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vault::fuzzing::decode_untrusted(data);
});
