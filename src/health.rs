//! Readiness state shared by the listener, the certificate owners and `/readyz`.
//!
//! Ready means: a certificate is served, the listener accepts, the process is not
//! draining, and (in self-managed mode) the webhook configuration's caBundle matches
//! the served certificate, so the apiserver can actually reach us.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::tls::CertStore;

/// Flags that together make `/readyz`.
#[derive(Debug, Default)]
pub struct Readiness {
    accepting: AtomicBool,
    draining: AtomicBool,
    ca_bundle_required: AtomicBool,
    ca_bundle_ok: AtomicBool,
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

    /// Self-managed mode: readiness also waits for the caBundle.
    pub fn require_ca_bundle(&self) {
        self.ca_bundle_required.store(true, Ordering::Release);
    }

    /// Self-managed mode: whether the webhook configuration trusts the served CA.
    pub fn set_ca_bundle_ok(&self, ok: bool) {
        self.ca_bundle_ok.store(ok, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
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
        if self.ca_bundle_required.load(Ordering::Acquire)
            && !self.ca_bundle_ok.load(Ordering::Acquire)
        {
            return Err("webhook caBundle does not match the served certificate yet");
        }
        Ok(())
    }
}
