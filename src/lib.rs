//! tracepatch: a Kubernetes mutating admission webhook that applies the manual steps of
//! a tracer vendor's Istio guide at admission time.
//!
//! The rules are pure functions from a raw JSON object to JSON Patch operations and
//! warnings ([`Outcome`]); [`engine`] decides which rules apply to which object;
//! everything else is I/O around them: the admission server, the offline `mutate`
//! command, certificate management.
//!
//! The surface is what the binary, the tests, the benchmarks, the fuzz targets and the
//! examples use; the rest is private, so the compiler reports what nothing uses.

#![forbid(unsafe_code)]

pub mod admission;
pub mod certs;
pub mod config;
pub mod engine;
pub mod mutate;
pub mod names;
pub mod policies;
pub mod server;

mod rules;
mod text;
pub mod webhook_config;

mod audit;
pub use audit::{
    Error as AuditError, Format as AuditFormat, Options as AuditOptions, Scope as AuditScope,
    Verdict as AuditVerdict, run as run_audit,
};

pub use rules::tracer_env::proxy_config::Node as ProxyConfigNode;
pub use rules::{Outcome, RuleId, RuleSet, Warning};
