//! Readiness state shared by the listener, the certificate owners and `/readyz`.
//!
//! Ready means: a certificate is served, the listener accepts, the process is not
//! draining, and (in self-managed mode) the webhook configuration's caBundle matches
//! the served certificate, so the apiserver can actually reach us (the certificate
//! store knows the last two: [`CertStore::is_loaded`], [`CertStore::is_trusted`]).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::certs::CertStore;

/// Flags that together make `/readyz`.
#[derive(Debug, Default)]
pub struct Readiness {
    accepting: AtomicBool,
    draining: AtomicBool,
}

// === impl Readiness ===

impl Readiness {
    /// The admission listener is bound and accepting.
    pub fn set_accepting(&self, on: bool) {
        self.accepting.store(on, Ordering::Release);
    }

    /// SIGTERM received: report not ready so endpoints drop us, then drain.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// `Ok` when ready, else the reason `/readyz` reports.
    pub fn check(&self, certs: &CertStore) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Acquire) {
            return Err("draining");
        }
        if !certs.is_loaded() {
            return Err("no serving certificate loaded");
        }
        if !self.accepting.load(Ordering::Acquire) {
            return Err("admission listener not accepting");
        }
        if !certs.is_trusted() {
            return Err("webhook caBundle does not match the served certificate yet");
        }
        Ok(())
    }
}
