//! Push XML parser on arbitrary bytes: must never panic (see `wechat::fuzzing::push_xml`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wechat::fuzzing::push_xml(data);
});
