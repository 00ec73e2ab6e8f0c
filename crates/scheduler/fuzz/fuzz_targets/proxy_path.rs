//! The proxy's path check: an accepted path stays under cgi-bin/ of the API base, unchanged, and the call carries one access_token (see `scheduler::fuzzing::proxy_path`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    scheduler::fuzzing::proxy_path(data);
});
