//! Where the served certificate comes from, and the certificate itself.
//!
//! - `serving`: the certificate the admission port serves ([`ServingCert`]) and the
//!   store the TLS listener resolves it from ([`CertStore`]), swapped atomically.
//! - `reload`: certificate files (`--tls-cert`/`--tls-key`), polled and reloaded when
//!   they change.
//! - `local`: the four PEM files on disk: `tracepatch certs generate` and the
//!   development certificate `serve` makes for itself.
//! - [`self_managed`]: the certificate kept in a Secret and the CA kept in the
//!   MutatingWebhookConfiguration's caBundle, by every replica, safely.
//! - [`issue`]: rcgen issuing (a CA, serving certificates signed by it) and the checks
//!   the others share (a certificate parsed once, chain verification, whether a CA can
//!   still issue).

use std::time::{Duration, SystemTime};

pub mod issue;
mod local;
pub(crate) mod reload;
pub mod self_managed;
mod serving;

pub(crate) use local::ensure_dev_cert;
pub use local::{CertError, GenerateOptions, run_generate};
pub use serving::{CertStore, ServingCert, TlsError};

/// RFC 3339 UTC rendering of a time, for messages.
pub(crate) fn fmt_time(t: SystemTime) -> String {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{secs}"))
}

/// Time left until `t` (zero when past).
fn remaining_until(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::now()).unwrap_or_default()
}
