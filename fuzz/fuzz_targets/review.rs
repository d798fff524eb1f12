//! Arbitrary bytes as an AdmissionReview body. The first byte picks the configuration
//! (`checks::CONFIGS`), the rest is the body; `checks::check_review` holds the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracepatch_fuzz::checks;

fuzz_target!(|data: &[u8]| {
    if let Some((engine, body)) = checks::split_input(data) {
        checks::check_review(engine, body);
    }
});
