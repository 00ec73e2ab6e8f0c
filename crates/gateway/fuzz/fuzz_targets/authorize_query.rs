//! The authorization request's query: what is read is the request's one well-formed value of each parameter, and an accepted redirect_uri is a registered one byte for byte (see `gateway::fuzzing::authorize_query`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gateway::fuzzing::authorize_query(data);
});
