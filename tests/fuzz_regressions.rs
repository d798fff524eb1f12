//! Replays the fuzz seeds (`fuzz/corpus/{review,mutate}/`) and every saved fuzz finding
//! (`fuzz/regressions/{review,mutate}/`) through the invariants the fuzz targets check,
//! so a defect the fuzzer found stays fixed under the normal `cargo test`.
//!
//! The invariants are `fuzz/src/checks.rs` itself, included here by path: the same code,
//! without libFuzzer. Each file is a raw-target input: its first byte picks the
//! configuration, the rest is an AdmissionReview body (`review`) or `tracepatch mutate`
//! input (`mutate`). Findings of the structure-aware targets are saved in this rendered
//! form (see `fuzz/README.md`).

#[allow(dead_code)]
#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn inputs(target: &str) -> (Vec<PathBuf>, usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    let mut seeds = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() && !path.file_name().unwrap().to_string_lossy().starts_with('.') {
                files.push(path);
                if dir == "corpus" {
                    seeds += 1;
                }
            }
        }
    }
    files.sort();
    (files, seeds)
}

type Check = fn(&tracepatch::engine::Engine, &[u8]);

fn message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(non-string panic)")
}

fn replay(target: &str, check: Check) {
    let (files, seeds) = inputs(target);
    assert!(seeds >= 3, "fuzz/corpus/{target}/ has {seeds} seeds");
    let mut failures = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let Some((engine, input)) = checks::split_input(&data) else {
            continue;
        };
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(engine, input))) {
            failures.push(format!("{}: {}", path.display(), message(&*panic)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {target} inputs break an invariant:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn review_seeds_and_regressions() {
    replay("review", checks::check_review);
}

#[test]
fn mutate_seeds_and_regressions() {
    replay("mutate", checks::check_mutate);
}
