//! Shared code of the fuzz targets: the invariants ([`checks`], also replayed by
//! `tests/fuzz_regressions.rs`) and the structure-aware input generators ([`generate`]).

pub mod checks;
pub mod generate;

use std::sync::OnceLock;

/// With `TRACEPATCH_FUZZ_DUMP=FILE` in the environment, a structure-aware target writes
/// each input it renders to `FILE` as the matching raw target reads it (the
/// configuration byte, then the body or manifest text) before checking it. Running the
/// target on a crash file with the variable set turns the finding into a file for
/// `fuzz/regressions/{review,mutate}/`, which `tests/fuzz_regressions.rs` replays.
pub fn dump_rendered(config: u8, rendered: &[u8]) {
    static PATH: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();
    if let Some(path) = PATH.get_or_init(|| std::env::var_os("TRACEPATCH_FUZZ_DUMP")) {
        let mut bytes = Vec::with_capacity(rendered.len() + 1);
        bytes.push(config);
        bytes.extend_from_slice(rendered);
        if let Err(e) = std::fs::write(path, bytes) {
            panic!("TRACEPATCH_FUZZ_DUMP: cannot write {path:?}: {e}");
        }
    }
}
