//! The transport ceiling of tracepatch's own stack: the same TLS accept loop, HTTP/2
//! server and axum router as `tracepatch serve`, answering every `POST /mutate` with a
//! fixed AdmissionReview response after reading the whole body, without decoding it or
//! running any rule (and to `GET /mutate`, for comparison with nginx). The difference between this and `tracepatch serve` under the same
//! load is what decoding and the rules cost; the difference between this and nginx
//! answering a fixed body is what the stack costs. Used by `bench/load.sh ceiling`.
//!
//! `cargo run --release --example ceiling -- ADDR CERT KEY`

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracepatch::certs::{CertStore, ServingCert};
use tracepatch::server::{ConnLimits, serve_tls};

/// tracepatch's response to the benchmark review (bench/meshed-pod-review.json).
const RESPONSE: &str = include_str!("../bench/ceiling-response.json");

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, cert, key] = args.as_slice() else {
        anyhow::bail!("usage: ceiling ADDR CERT KEY");
    };
    let store = CertStore::new();
    store.set(ServingCert::from_files(cert.as_ref(), key.as_ref())?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr.as_str()).await?;
        let router = Router::new().route(
            "/mutate",
            post(|body: Bytes| async move {
                std::hint::black_box(body);
                ([("content-type", "application/json")], RESPONSE)
            })
            // GET without a body, to compare with nginx answering the same way.
            .get(|| async { ([("content-type", "application/json")], RESPONSE) }),
        );
        let limits = ConnLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 1024,
            max_streams: 256,
        };
        serve_tls(
            listener,
            TlsAcceptor::from(store.server_config()),
            router,
            limits,
            CancellationToken::new(),
            TaskTracker::new(),
        )
        .await;
        Ok(())
    })
}
