//! Certificates: `tracepatch certs generate`, the development certificate, and
//! in-cluster self-managed certificates.
//!
//! - [`issue`]: rcgen issuing (a CA, serving certificates signed by it) and the checks
//!   shared by the rest (chain verification, CA reuse).
//! - [`local`]: the four PEM files on disk: `certs generate` and the development
//!   certificate of `serve`.
//! - [`self_managed`]: the certificate kept in a Secret and the CA kept in the
//!   MutatingWebhookConfiguration's caBundle, by every replica, safely.

pub mod issue;
pub mod local;
pub mod self_managed;

pub use local::{CertError, DevCert, ensure_dev_cert, run_generate};
