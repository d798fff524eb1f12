//! The one refusal type of both ports: a 4xx or 5xx with one line of text saying why.
//!
//! Every handler that refuses returns a [`Refusal`]; its [`IntoResponse`] is the only
//! place that chooses the status, makes the reason one bounded line and logs it. The
//! admission handler counts refused reviews in the metrics where it turns a refusal
//! into the answer, once.

use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::{debug, warn};

use crate::admission::{MAX_BODY_BYTES, ReviewError};
use crate::text::one_line;

/// The longest reason a refusal carries, in characters.
const MAX_REASON_CHARS: usize = 200;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No such path on this port.
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// The path exists for another method.
    #[error("{0}")]
    MethodNotAllowed(&'static str),
    /// The body is over [`MAX_BODY_BYTES`], announced or read.
    #[error(
        "request body exceeds {MAX_BODY_BYTES} bytes (7 MiB: the apiserver's 3 MiB object limit, twice, plus the envelope)"
    )]
    TooLarge,
    /// The body could not be read.
    #[error("cannot read the request body: {0}")]
    BodyUnreadable(#[source] axum::BoxError),
    /// The body did not arrive in time.
    #[error("request body not received within {0:?}")]
    BodyTimeout(Duration),
    /// The body is not an AdmissionReview we can answer.
    #[error(transparent)]
    Review(#[from] ReviewError),
    /// `/readyz` while not ready.
    #[error("{0}")]
    NotReady(&'static str),
}

// === impl Refusal ===

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::NotFound(_) => StatusCode::NOT_FOUND,
            Refusal::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyUnreadable(_) | Refusal::Review(_) => StatusCode::BAD_REQUEST,
            Refusal::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Refusal::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = self.status();
        let text = self.to_string();
        let reason = one_line(&text, MAX_REASON_CHARS);
        match &self {
            Refusal::Review(_) => {
                warn!(reason = %reason, "refused a request that is not a valid AdmissionReview");
            }
            _ => debug!(status = status.as_u16(), reason = %reason, "refused"),
        }
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{reason}\n"),
        )
            .into_response()
    }
}
