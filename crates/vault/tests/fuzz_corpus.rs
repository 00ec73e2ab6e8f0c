//! Runs the fuzz target's body (`vault::fuzzing::decode_untrusted`) over the seed corpus,
//! mutations of valid records and random bytes, so the normal test
//! suite catches a decoder panic without a nightly toolchain.

use proptest::prelude::*;
use vault::fuzzing::{decode_untrusted, seed_corpus};

#[test]
fn decoders_survive_the_seed_corpus() {
    let seeds = seed_corpus();
    assert!(seeds.len() > 10);
    for seed in &seeds {
        decode_untrusted(seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoders_never_panic_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..128)) {
        decode_untrusted(&data);
    }

    #[test]
    fn decoders_never_panic_on_mutated_valid_records(
        seed in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut data = seed_corpus().swap_remove(seed);
        for (at, value) in edits {
            let i = at.index(data.len().max(1));
            if let Some(byte) = data.get_mut(i) {
                *byte = value;
            }
        }
        let keep = cut.index(data.len() + 1);
        data.truncate(keep.max(data.len() / 2));
        decode_untrusted(&data);
    }
}
