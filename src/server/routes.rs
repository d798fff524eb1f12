//! The two routers: `POST /mutate` on the admission port, and `/healthz`, `/readyz`,
//! `/metrics` on the plain-HTTP health port.
//!
//! The admission handler is thin: bound and read the body, hand it to
//! [`admission::review`], answer. Every refusal is a 4xx with one line of text naming
//! the reason; nothing here panics or answers 5xx for bad input.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Limited};
use tracing::{info, warn};

use crate::admission::{self, MAX_BODY_BYTES};
use crate::engine::Engine;
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::tls::CertStore;

/// What the admission handler needs.
pub struct AdmissionState {
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    /// How long a client may take to send the whole body.
    pub body_timeout: Duration,
}

/// What the health handlers need.
pub struct HealthState {
    pub readiness: Arc<Readiness>,
    pub certs: Arc<CertStore>,
    pub metrics: Arc<Metrics>,
}

/// `POST /mutate`; anything else is a 404 or 405 with a one-line reason.
pub fn admission_router(state: Arc<AdmissionState>) -> Router {
    Router::new()
        .route(
            "/mutate",
            post(mutate).fallback(|| async {
                refuse(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "only POST is served on /mutate",
                )
            }),
        )
        .fallback(|| async {
            refuse(
                StatusCode::NOT_FOUND,
                "not found: the admission endpoint is POST /mutate",
            )
        })
        .with_state(state)
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn health_router(state: Arc<HealthState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            refuse(
                StatusCode::NOT_FOUND,
                "not found: /healthz, /readyz and /metrics are served here",
            )
        })
        .with_state(state)
}

async fn mutate(
    State(state): State<Arc<AdmissionState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Refuse an announced oversize body before reading a byte of it.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return too_large(&state);
    }
    let read = tokio::time::timeout(
        state.body_timeout,
        Limited::new(body, MAX_BODY_BYTES).collect(),
    )
    .await;
    let bytes: Bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large(&state);
        }
        Ok(Err(e)) => {
            state.metrics.invalid();
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body: {e}"),
            );
        }
        Err(_) => {
            state.metrics.invalid();
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                &format!("request body not received within {:?}", state.body_timeout),
            );
        }
    };
    let started = Instant::now();
    match admission::review(&state.engine, &bytes) {
        Ok(reviewed) => {
            let json = reviewed.response_json();
            let elapsed = started.elapsed();
            state.metrics.admission(&reviewed, elapsed);
            let out = &reviewed.outcome;
            info!(
                uid = %reviewed.uid,
                kind = %reviewed.kind.kind,
                namespace = %reviewed.namespace,
                name = %reviewed.name,
                operation = crate::metrics::operation_label(&reviewed.operation),
                dry_run = reviewed.dry_run,
                rules = %out.applied,
                patch_ops = out.patch.len(),
                warnings = out.warnings.len(),
                latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                "admitted"
            );
            let mut response = Response::new(Body::from(json));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => {
            state.metrics.invalid();
            let reason = e.to_string();
            warn!(reason = %reason, "refused a request that is not a valid AdmissionReview");
            refuse(StatusCode::BAD_REQUEST, &reason)
        }
    }
}

fn too_large(state: &AdmissionState) -> Response {
    state.metrics.invalid();
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!(
            "request body exceeds {} bytes (7 MiB: the apiserver's 3 MiB object limit, twice, plus the envelope)",
            MAX_BODY_BYTES
        ),
    )
}

async fn readyz(State(state): State<Arc<HealthState>>) -> Response {
    match state.readiness.check(&state.certs) {
        Ok(()) => "ok\n".into_response(),
        Err(reason) => refuse(StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

async fn metrics(State(state): State<Arc<HealthState>>) -> Response {
    let text = state.metrics.encode(&state.certs);
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// A refusal: the status and one line of text.
fn refuse(status: StatusCode, reason: &str) -> Response {
    let line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{line}\n"),
    )
        .into_response()
}
