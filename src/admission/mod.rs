//! AdmissionReview in, AdmissionReview out: the one place that turns rule outcomes into
//! a response.
//!
//! The body is parsed once into a simd-json tape (strings borrowed from the body) and
//! the rules read the object through their raw `Json` view: no typed round trip
//! (which would drop fields from a newer Kubernetes) and no `serde_json::Value` tree,
//! which on a meshed pod costs several times everything else a request costs
//! (BENCHMARKS.md).
//! kube's `AdmissionRequest<T>` needs a typed `T: Resource`, and its
//! `AdmissionResponse` writes the patch as an array of numbers, so the envelopes are
//! read and written here; the wire format is `admission.k8s.io/v1`, the patch
//! base64-encoded as the API documents; kube's `Operation` and `GroupVersionKind` are
//! reused.
//!
//! Decoding is in `decode`, the response in `response`.
//!
//! A mutating tracing webhook never blocks a workload: every answer to a valid review
//! is `allowed: true`. A body that is not a valid review gets a [`ReviewError`], which
//! the server turns into HTTP 400 with a one-line reason; the apiserver then applies
//! the configuration's `failurePolicy` (`Ignore`).

use kube::core::GroupVersionKind;
use kube::core::admission::Operation;

use crate::rules::Outcome;

mod decode;
mod response;

pub use decode::{ReviewError, review};

/// Reviews for the unit tests of decoding and the response.
#[cfg(test)]
mod testing {
    use serde_json::{Value, json};

    use super::API_VERSION;

    /// The body of an AdmissionReview around `request`.
    pub(crate) fn review_of(request: Value) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request}),
        )
        .unwrap()
    }

    /// A pod CREATE request for `object`.
    pub(crate) fn pod_request(object: Value) -> Value {
        json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "default",
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": null,
            "dryRun": false
        })
    }
}

/// The only AdmissionReview version served (the apiserver sends what the webhook
/// configuration's `admissionReviewVersions` lists: `["v1"]`).
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// Largest request body accepted: 7 MiB. The apiserver accepts request bodies up to
/// 3 MiB (`--max-request-body-bytes`), and a review carries the object and, on UPDATE,
/// the old object, plus under 1 MiB of envelope — controller-runtime's webhook server
/// uses the same figure for the same reason.
pub(crate) const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

/// What was decided about one request, for the response, the log line and metrics.
#[derive(Debug)]
pub struct Reviewed {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub operation: Operation,
    pub namespace: String,
    pub name: String,
    pub dry_run: bool,
    pub outcome: Outcome,
}
