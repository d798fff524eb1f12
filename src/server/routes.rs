//! The two routers: `POST /mutate` on the admission port, and `/healthz`, `/readyz`,
//! `/metrics` on the plain-HTTP health port.
//!
//! The admission handler is thin: bound and read the body, hand it to
//! [`admission::review`], answer. Every refusal is a [`Refusal`]: a 4xx with one line
//! of text naming the reason; nothing here panics or answers 5xx for bad input.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Limited};
use tracing::info;

use super::refusal::Refusal;

use super::health::Readiness;
use super::metrics::{self, Metrics};
use crate::admission::{self, MAX_BODY_BYTES};
use crate::certs::CertStore;
use crate::engine::Engine;

/// What the admission handler needs.
pub struct AdmissionState {
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    /// How long a client may take to send the whole body.
    pub body_timeout: Duration,
}

/// What the health handlers need.
pub(crate) struct HealthState {
    pub readiness: Arc<Readiness>,
    pub certs: Arc<CertStore>,
    pub metrics: Arc<Metrics>,
}

/// `POST /mutate`; anything else is a 404 or 405 with a one-line reason.
pub fn admission_router(state: Arc<AdmissionState>) -> Router {
    Router::new()
        .route(
            "/mutate",
            post(mutate)
                .fallback(|| async { Refusal::MethodNotAllowed("only POST is served on /mutate") }),
        )
        .fallback(|| async { Refusal::NotFound("the admission endpoint is POST /mutate") })
        .with_state(state)
}

/// `/healthz`, `/readyz`, `/metrics`.
pub(crate) fn health_router(state: Arc<HealthState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(serve_metrics))
        .fallback(|| async { Refusal::NotFound("/healthz, /readyz and /metrics are served here") })
        .with_state(state)
}

/// `POST /mutate`: a review answered, or a refusal counted as an invalid request.
async fn mutate(
    State(state): State<Arc<AdmissionState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match admit(&state, &headers, body).await {
        Ok(response) => response,
        Err(refusal) => {
            state.metrics.invalid();
            refusal.into_response()
        }
    }
}

async fn admit(
    state: &AdmissionState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    // Refuse an announced oversize body before reading a byte of it.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(Refusal::TooLarge);
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
            return Err(Refusal::TooLarge);
        }
        Ok(Err(e)) => return Err(Refusal::BodyUnreadable(e)),
        Err(_) => return Err(Refusal::BodyTimeout(state.body_timeout)),
    };
    let started = Instant::now();
    let reviewed = admission::review(&state.engine, &bytes)?;
    let json = reviewed.response_json();
    let elapsed = started.elapsed();
    state.metrics.admission(&reviewed, elapsed);
    let out = &reviewed.outcome;
    info!(
        uid = %reviewed.uid,
        kind = %reviewed.kind.kind,
        namespace = %reviewed.namespace,
        name = %reviewed.name,
        operation = metrics::operation_label(&reviewed.operation),
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
    Ok(response)
}

async fn readyz(State(state): State<Arc<HealthState>>) -> Response {
    match state.readiness.check(&state.certs) {
        Ok(()) => "ok\n".into_response(),
        Err(reason) => Refusal::NotReady(reason).into_response(),
    }
}

async fn serve_metrics(State(state): State<Arc<HealthState>>) -> Response {
    let text = state.metrics.encode(&state.readiness, &state.certs);
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
