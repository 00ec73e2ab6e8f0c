//! The Authorization header (Basic client credentials, Bearer tokens): what is accepted is exactly what was sent (see `gateway::fuzzing::authorization_header`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gateway::fuzzing::authorization_header(data);
});
