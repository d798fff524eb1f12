//! Shared by the server tests: start a real server on loopback with certificates in a
//! temporary directory, and talk to it over real TLS with HTTP/1.1 or HTTP/2.

#![allow(dead_code)]

pub mod hostile;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;
use tracepatch::certs::issue::{self, ServingSpec};
use tracepatch::server::Server;

/// The binary's command line (not part of the library), so that these tests start the
/// server from the same flags a user gives.
#[path = "../../src/cli.rs"]
pub mod cli;

use clap::Parser;
use cli::{Cli, Command};

/// A CA and a serving certificate for `localhost`/`127.0.0.1`, written to `dir`.
pub struct TestCerts {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCerts {
    pub fn new(dir: &Path, name: &str) -> Self {
        let issued = issue::generate(
            &format!("{name} test CA"),
            Duration::from_secs(86_400),
            &ServingSpec::localhost(Duration::from_secs(3_600)),
        )
        .unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &issued.serving.cert).unwrap();
        std::fs::write(&key, &issued.serving.key).unwrap();
        Self {
            dir: dir.to_owned(),
            ca_pem: issued.ca.cert.clone(),
            cert,
            key,
        }
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap()
    }
}

/// A running server and the token that shuts it down.
pub struct Running {
    pub addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub done: tokio::task::JoinHandle<()>,
}

/// Starts `tracepatch serve` with these extra flags, on ephemeral loopback ports.
pub async fn start(extra: &[&str]) -> Running {
    let mut argv = vec![
        "tracepatch",
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--health-addr",
        "127.0.0.1:0",
        "--cert-reload-interval",
        "100ms",
    ];
    argv.extend_from_slice(extra);
    let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    let shutdown = CancellationToken::new();
    let server = Server::start(args.options(), shutdown.clone())
        .await
        .unwrap();
    let (addr, health_addr) = (server.addr, server.health_addr);
    let done = tokio::spawn(server.wait());
    Running {
        addr,
        health_addr,
        shutdown,
        done,
    }
}

/// `tracepatch serve` with a fresh certificate in `dir` and these extra flags.
pub async fn serving(dir: &Path, extra: &[&str]) -> (Running, TestCerts) {
    let certs = TestCerts::new(dir, "serving");
    let mut argv = vec![
        "--tls-cert",
        certs.cert.to_str().unwrap(),
        "--tls-key",
        certs.key.to_str().unwrap(),
    ];
    argv.extend_from_slice(extra);
    (start(&argv).await, certs)
}

/// A new HTTP/2 connection to `addr` is made and a pod review answered, each within
/// 5 s; the status.
pub async fn served_within_5s(addr: SocketAddr, ca: CertificateDer<'static>) -> u16 {
    let mut client = tokio::time::timeout(Duration::from_secs(5), Client::connect(addr, ca, true))
        .await
        .expect("a new connection is served within 5 s");
    tokio::time::timeout(
        Duration::from_secs(5),
        client.send("POST", "/mutate", pod_review()),
    )
    .await
    .expect("a review is answered within 5 s")
    .0
}

/// A TLS connection to `addr` trusting `ca`, offering these ALPN protocols.
pub async fn tls_connect(
    addr: SocketAddr,
    ca: CertificateDer<'static>,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// An HTTP/1.1 or HTTP/2 client connection over TLS.
pub enum Client {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Client {
    pub async fn connect(addr: SocketAddr, ca: CertificateDer<'static>, http2: bool) -> Self {
        let alpn: &[&[u8]] = if http2 { &[b"h2"] } else { &[b"http/1.1"] };
        let tls = tls_connect(addr, ca, alpn).await;
        let io = hyper_util::rt::TokioIo::new(tls);
        if http2 {
            let (send, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            Client::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Client::H1(send)
        }
    }

    /// Sends a request; the status and the body.
    pub async fn send(&mut self, method: &str, path: &str, body: Vec<u8>) -> (u16, Bytes) {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .header("content-type", "application/json")
            .header("host", "localhost")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = match self {
            Client::H1(s) => {
                s.ready().await.unwrap();
                s.send_request(req).await.unwrap()
            }
            Client::H2(s) => {
                s.ready().await.unwrap();
                s.send_request(req).await.unwrap()
            }
        };
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }
}

/// A plain-HTTP GET on the health port: status and body.
pub async fn health_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The fixture AdmissionReview of a pod with the Datadog annotation and istio-proxy.
pub fn pod_review() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/admission/pod-review/input.json"
    ))
    .unwrap()
}

/// A child process that is killed when dropped, so that a failing test does not leave
/// a server running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
