//! Prometheus metrics, served as text on the health port's `/metrics`.
//!
//! Label values are static strings, so recording an admission allocates nothing.
//!
//! The gauges of state (certificate expiry, readiness, caBundle trust) are not kept up to
//! date by anyone: [`Metrics::encode`] reads them at scrape time from the same
//! [`CertStore`] and [`Readiness`] that `/readyz` reads, through the same
//! [`Readiness::check`], so `tracepatch_ready` is 1 exactly when `/readyz` would answer
//! 200. The admission path never touches them.

use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::health::Readiness;
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
    ready: Gauge,
    /// Registered in self-managed certificate mode only: elsewhere tracepatch never reads
    /// the webhook configuration, so it has nothing to say about its caBundle.
    ca_bundle_trusted: Option<Gauge>,
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
    /// The metrics of a server whose certificate comes from files (or the development
    /// certificate): no `tracepatch_ca_bundle_trusted`.
    pub fn new() -> Self {
        Self::build(false)
    }

    /// The metrics of a server in self-managed certificate mode, which checks that the
    /// webhook configuration's caBundle trusts the served certificate: also
    /// `tracepatch_ca_bundle_trusted`.
    pub fn with_ca_bundle_check() -> Self {
        Self::build(true)
    }

    fn build(ca_bundle_check: bool) -> Self {
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
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when /readyz answers 200 (a certificate served, the admission listener accepting, not draining, and in self-managed mode the caBundle trusting the certificate), else 0",
            ready.clone(),
        );
        let ca_bundle_trusted = ca_bundle_check.then(|| {
            let trusted = Gauge::default();
            registry.register(
                "ca_bundle_trusted",
                "Self-managed certificates: 1 when the last check found the CA of the served certificate in every webhook's caBundle, else 0 (also before the first check)",
                trusted.clone(),
            );
            trusted
        });
        Self {
            registry,
            admissions,
            duration,
            rules_applied,
            warnings,
            cert_expiry,
            ready,
            ca_bundle_trusted,
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

    /// The Prometheus text exposition, with the certificate expiry, readiness and caBundle
    /// trust read now (readiness exactly as `/readyz` computes it).
    pub fn encode(&self, readiness: &Readiness, certs: &CertStore) -> String {
        let expiry = certs
            .current()
            .and_then(|c| c.not_after().duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.cert_expiry.set(expiry);
        self.ready.set(i64::from(readiness.check(certs).is_ok()));
        if let Some(trusted) = &self.ca_bundle_trusted {
            trusted.set(i64::from(certs.is_trusted()));
        }
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

#[cfg(test)]
mod tests {
    //! The readiness gauges through the health router, as Prometheus scrapes them, next to
    //! what `/readyz` answers in the same state.

    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::Metrics;
    use crate::certs::issue::{self, ServingSpec};
    use crate::certs::{CertStore, ServingCert};
    use crate::server::health::Readiness;
    use crate::server::routes::{HealthState, health_router};

    struct Replica {
        state: Arc<HealthState>,
    }

    impl Replica {
        /// A replica whose metrics are those of self-managed mode or not.
        fn new(self_managed: bool) -> Self {
            let metrics = if self_managed {
                Metrics::with_ca_bundle_check()
            } else {
                Metrics::new()
            };
            let certs = CertStore::new();
            if self_managed {
                certs.require_ca_bundle();
            }
            Self {
                state: Arc::new(HealthState {
                    readiness: Arc::new(Readiness::default()),
                    certs,
                    metrics: Arc::new(metrics),
                }),
            }
        }

        /// A certificate served and the listener accepting: ready unless draining or
        /// (self-managed) untrusted.
        fn serving(self_managed: bool) -> Self {
            let r = Self::new(self_managed);
            let issued = issue::generate(
                "metrics test CA",
                Duration::from_secs(86_400),
                &ServingSpec::localhost(Duration::from_secs(3_600)),
            )
            .unwrap();
            let cert = ServingCert::from_pem(
                issued.serving.cert.as_bytes(),
                issued.serving.key.as_bytes(),
                "test",
            )
            .unwrap();
            r.state.certs.set(cert);
            r.state.readiness.set_accepting(true);
            r
        }

        async fn get(&self, path: &str) -> (u16, String) {
            let req = http::Request::builder()
                .uri(path)
                .body(Body::empty())
                .unwrap();
            let resp = health_router(self.state.clone())
                .oneshot(req)
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }

        /// The value of an unlabelled series on `/metrics`, `None` when it is not there.
        async fn sample(&self, name: &str) -> Option<String> {
            let (status, text) = self.get("/metrics").await;
            assert_eq!(status, 200, "{text}");
            text.lines()
                .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .map(str::to_owned)
                .next()
        }

        /// `(/readyz status, tracepatch_ready, tracepatch_ca_bundle_trusted)`.
        async fn observe(&self) -> (u16, Option<String>, Option<String>) {
            let (status, _) = self.get("/readyz").await;
            (
                status,
                self.sample("tracepatch_ready").await,
                self.sample("tracepatch_ca_bundle_trusted").await,
            )
        }
    }

    fn v(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[tokio::test]
    async fn ready_is_1_when_readyz_answers_200() {
        let r = Replica::serving(false);
        assert_eq!(r.observe().await, (200, v("1"), None));
        // The gauges are documented in the exposition.
        let (_, text) = r.get("/metrics").await;
        assert!(text.contains("# TYPE tracepatch_ready gauge\n"), "{text}");
        assert!(!text.contains("tracepatch_ca_bundle_trusted"), "{text}");
    }

    #[tokio::test]
    async fn draining_makes_ready_0() {
        let r = Replica::serving(false);
        assert_eq!(r.observe().await.1, v("1"));
        r.state.readiness.set_draining();
        assert_eq!(r.observe().await, (503, v("0"), None));
    }

    #[tokio::test]
    async fn no_certificate_or_listener_makes_ready_0() {
        let r = Replica::new(false);
        assert_eq!(r.observe().await, (503, v("0"), None));
        let r = Replica::serving(false);
        r.state.readiness.set_accepting(false);
        assert_eq!(r.observe().await, (503, v("0"), None));
    }

    #[tokio::test]
    async fn self_managed_untrusted_cabundle_makes_ready_and_trusted_0() {
        let r = Replica::serving(true);
        // Before the first check: not known to be trusted.
        assert_eq!(r.observe().await, (503, v("0"), v("0")));
        r.state.certs.set_ca_bundle_ok(true);
        assert_eq!(r.observe().await, (200, v("1"), v("1")));
        // A later check finds the caBundle no longer holds the served CA.
        r.state.certs.set_ca_bundle_ok(false);
        assert_eq!(r.observe().await, (503, v("0"), v("0")));
    }

    #[tokio::test]
    async fn self_managed_trusted_but_draining_is_not_ready() {
        let r = Replica::serving(true);
        r.state.certs.set_ca_bundle_ok(true);
        r.state.readiness.set_draining();
        assert_eq!(r.observe().await, (503, v("0"), v("1")));
    }
}
