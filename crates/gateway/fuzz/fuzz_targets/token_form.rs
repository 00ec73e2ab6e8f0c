//! The token request's form body: accepted only without a repeated or non-UTF-8 parameter, and then read as sent (see `gateway::fuzzing::token_form`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gateway::fuzzing::token_form(data);
});
