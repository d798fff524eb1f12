//! A generated AdmissionReview around a generated Pod, Service, CronJob, workload or
//! other object (`generate::Review`), checked as the raw-bytes `review` target checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracepatch_fuzz::{checks, dump_rendered, generate};

fuzz_target!(|review: generate::Review| {
    let body = review.body();
    dump_rendered(review.config, &body);
    checks::check_review(checks::engine_for(review.config), &body);
});
