//! A generated stream of manifests (`generate::Manifests`: objects, Lists,
//! AdmissionReviews and odd documents, as YAML or JSON), checked as the raw-bytes
//! `mutate` target checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracepatch_fuzz::{checks, dump_rendered, generate};

fuzz_target!(|manifests: generate::Manifests| {
    let text = manifests.text();
    dump_rendered(manifests.config, text.as_bytes());
    checks::check_mutate(checks::engine_for(manifests.config), text.as_bytes());
});
