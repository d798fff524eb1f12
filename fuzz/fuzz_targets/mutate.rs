//! Arbitrary bytes as `tracepatch mutate` input. The first byte picks the configuration
//! (`checks::CONFIGS`), the rest is the input; `checks::check_mutate` holds the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracepatch_fuzz::checks;

fuzz_target!(|data: &[u8]| {
    if let Some((engine, input)) = checks::split_input(data) {
        checks::check_mutate(engine, input);
    }
});
