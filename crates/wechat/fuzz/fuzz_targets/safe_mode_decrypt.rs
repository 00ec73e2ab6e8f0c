//! Safe-mode decryption of arbitrary input with a fixed key: must never panic
//! (see `wechat::fuzzing::safe_mode_decrypt`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wechat::fuzzing::safe_mode_decrypt(data);
});
