//! tracepatch: a Kubernetes mutating admission webhook that applies the manual steps of
//! a tracer vendor's Istio guide at admission time.
//!
//! The rules ([`rules`]) are pure functions from a raw JSON object to JSON Patch
//! operations and warnings; [`engine`] decides which rules apply to which object;
//! everything else is I/O around them: the admission server, the offline `mutate`
//! command, certificate management.

#![forbid(unsafe_code)]

pub mod admission;
pub mod certs;
pub mod cli;
pub mod config;
pub mod engine;
pub mod mutate;
pub mod names;
pub mod rules;
pub mod server;
pub mod text;

mod audit;
pub use audit::{
    Error as AuditError, Format as AuditFormat, Options as AuditOptions, Scope as AuditScope,
    Verdict as AuditVerdict, run as run_audit,
};

// The old paths of what moved, until the public surface is narrowed.
pub mod tls {
    pub use crate::certs::{CertStore, ServingCert, fmt_time};
}
pub mod health {
    pub use crate::server::health::Readiness;
}
pub mod metrics {
    pub use crate::server::metrics::Metrics;
}
