//! Prometheus metrics, served as text on the health port's `/metrics`.
//!
//! Label values are static strings, so recording an admission allocates nothing.

use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::admission::Reviewed;
use crate::certs::CertStore;
use crate::engine::Kind;

/// All of tracepatch's metrics.
pub struct Metrics {
    registry: Registry,
    admissions: Family<AdmissionLabels, Counter>,
    duration: Histogram,
    rules_applied: Family<RuleLabels, Counter>,
    warnings: Family<RuleLabels, Counter>,
    cert_expiry: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    kind: &'static str,
    operation: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: &'static str,
}

/// How an admission request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdmissionResult {
    /// Allowed with a patch.
    Patched,
    /// Allowed, nothing to change.
    Unchanged,
    /// Not a valid AdmissionReview (HTTP 4xx).
    Invalid,
}

// === impl Metrics ===

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tracepatch");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "AdmissionReview requests answered, by object kind, operation and result",
            admissions.clone(),
        );
        // 10 µs to ~160 ms: a review takes tens of microseconds; the tail is what matters.
        let duration = Histogram::new(exponential_buckets(10e-6, 2.0, 15));
        registry.register_with_unit(
            "admission_duration",
            "Time from the request body being read to the response being ready",
            prometheus_client::registry::Unit::Seconds,
            duration.clone(),
        );
        let rules_applied = Family::<RuleLabels, Counter>::default();
        registry.register(
            "rules_applied",
            "Objects changed, by rule",
            rules_applied.clone(),
        );
        let warnings = Family::<RuleLabels, Counter>::default();
        registry.register(
            "warnings",
            "Warnings returned to clients (skipped input), by rule",
            warnings.clone(),
        );
        let cert_expiry = Gauge::default();
        registry.register(
            "serving_certificate_expiry_timestamp_seconds",
            "Expiry of the served TLS certificate, in seconds since the Unix epoch (0 when none is loaded)",
            cert_expiry.clone(),
        );
        Self {
            registry,
            admissions,
            duration,
            rules_applied,
            warnings,
            cert_expiry,
        }
    }

    /// Records one answered review.
    pub fn admission(&self, reviewed: &Reviewed, elapsed: Duration) {
        let out = &reviewed.outcome;
        let result = if out.patch.is_empty() {
            AdmissionResult::Unchanged
        } else {
            AdmissionResult::Patched
        };
        let kind = Kind::from_group_kind(&reviewed.kind.group, &reviewed.kind.kind);
        self.count(
            kind_label(kind),
            operation_label(&reviewed.operation),
            result,
        );
        self.duration.observe(elapsed.as_secs_f64());
        for rule in out.applied.iter() {
            self.rules_applied
                .get_or_create(&RuleLabels {
                    rule: rule.as_str(),
                })
                .inc();
        }
        for w in &out.warnings {
            self.warnings
                .get_or_create(&RuleLabels {
                    rule: w.rule.as_str(),
                })
                .inc();
        }
    }

    /// Records a request that was not a valid review.
    pub fn invalid(&self) {
        self.count("unknown", "unknown", AdmissionResult::Invalid);
    }

    fn count(&self, kind: &'static str, operation: &'static str, result: AdmissionResult) {
        let result = match result {
            AdmissionResult::Patched => "patched",
            AdmissionResult::Unchanged => "unchanged",
            AdmissionResult::Invalid => "invalid",
        };
        self.admissions
            .get_or_create(&AdmissionLabels {
                kind,
                operation,
                result,
            })
            .inc();
    }

    /// The Prometheus text exposition, with the certificate expiry read now.
    pub fn encode(&self, certs: &CertStore) -> String {
        let expiry = certs
            .current()
            .and_then(|c| c.not_after().duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.cert_expiry.set(expiry);
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Pod => "Pod",
        Kind::Service => "Service",
        Kind::CronJob => "CronJob",
        _ => "other",
    }
}

/// The wire name of an operation (`CREATE`, ...).
pub fn operation_label(op: &kube::core::admission::Operation) -> &'static str {
    use kube::core::admission::Operation;
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}
