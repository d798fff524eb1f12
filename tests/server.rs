//! `tracepatch serve`: the router without a socket, then the real server over TLS on
//! loopback: HTTP/1.1 and HTTP/2 round trips, certificate rotation, graceful shutdown,
//! readiness, connection limits, and refusal of bad certificates and configuration.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use base64::Engine as _;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::{
    Client, TestCerts, health_get, pod_review, served_within_5s, serving, start, tls_connect,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use tracepatch::engine::Engine;
use tracepatch::server::{AdmissionState, Metrics, admission_router};

fn router() -> axum::Router {
    admission_router(Arc::new(AdmissionState {
        engine: Engine::default(),
        metrics: Arc::new(Metrics::new()),
        body_timeout: Duration::from_secs(5),
    }))
}

async fn oneshot(method: &str, path: &str, body: Vec<u8>) -> (u16, String) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = router().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The object of the fixture review with the response's patch applied.
fn patched_object(review: &[u8], response: &[u8]) -> Value {
    let review: Value = serde_json::from_slice(review).unwrap();
    let response: Value = serde_json::from_slice(response).unwrap();
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(response["response"]["uid"], review["request"]["uid"]);
    assert_eq!(response["response"]["allowed"], true);
    assert_eq!(response["response"]["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap();
    object
}

fn assert_expected_pod(pod: &Value) {
    let env = pod["spec"]["containers"][1]["env"].as_array().unwrap();
    let names: Vec<&str> = env.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "PILOT_CERT_PROVIDER",
            "DD_ENV",
            "DD_TRACE_ANALYTICS_ENABLED"
        ]
    );
    assert_eq!(env[1]["value"], "prod");
    assert_eq!(env[2]["value"], "true");
    let cfg = pod["metadata"]["annotations"]["proxy.istio.io/config"]
        .as_str()
        .unwrap();
    let cfg: Value = serde_json::from_str(cfg).unwrap();
    assert_eq!(
        cfg,
        json!({"proxyMetadata": {"DD_ENV": "prod", "DD_TRACE_ANALYTICS_ENABLED": "true"}})
    );
}

#[tokio::test]
async fn router_patches_a_fixture_review_without_a_socket() {
    let review = pod_review();
    let (status, body) = oneshot("POST", "/mutate", review.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_expected_pod(&patched_object(&review, body.as_bytes()));
}

#[tokio::test]
async fn bad_requests_get_a_status_and_one_line() {
    let review: Value = serde_json::from_slice(&pod_review()).unwrap();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut r = review.clone();
        f(&mut r);
        serde_json::to_vec(&r).unwrap()
    };
    // (case, method, path, body, status, reason the one-line answer must contain)
    type Case<'a> = (&'a str, &'a str, &'a str, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "not JSON",
            "POST",
            "/mutate",
            b"hello".to_vec(),
            400,
            "not valid JSON: expected value at line 1 column 1",
        ),
        (
            "truncated JSON",
            "POST",
            "/mutate",
            pod_review()[..200].to_vec(),
            400,
            "not valid JSON",
        ),
        (
            "invalid UTF-8",
            "POST",
            "/mutate",
            b"{\"apiVersion\": \"\xff\"}".to_vec(),
            400,
            "not valid JSON",
        ),
        (
            "empty body",
            "POST",
            "/mutate",
            Vec::new(),
            400,
            "not valid JSON",
        ),
        (
            "a JSON array",
            "POST",
            "/mutate",
            b"[1,2]".to_vec(),
            400,
            "expected a JSON object, found a list",
        ),
        (
            "v1beta1",
            "POST",
            "/mutate",
            with(&|r| r["apiVersion"] = json!("admission.k8s.io/v1beta1")),
            400,
            "unsupported apiVersion \"admission.k8s.io/v1beta1\"",
        ),
        (
            "no apiVersion",
            "POST",
            "/mutate",
            with(&|r| {
                r.as_object_mut().unwrap().remove("apiVersion");
            }),
            400,
            "unsupported apiVersion \"\"",
        ),
        (
            "wrong kind",
            "POST",
            "/mutate",
            with(&|r| r["kind"] = json!("Pod")),
            400,
            "kind is \"Pod\", expected AdmissionReview",
        ),
        (
            "no request",
            "POST",
            "/mutate",
            with(&|r| {
                r.as_object_mut().unwrap().remove("request");
            }),
            400,
            "AdmissionReview has no request",
        ),
        (
            "request not an object",
            "POST",
            "/mutate",
            with(&|r| r["request"] = json!("x")),
            400,
            "request is a string, expected an object",
        ),
        (
            "no uid",
            "POST",
            "/mutate",
            with(&|r| {
                r["request"].as_object_mut().unwrap().remove("uid");
            }),
            400,
            "request.uid is missing or empty",
        ),
        (
            "empty uid",
            "POST",
            "/mutate",
            with(&|r| r["request"]["uid"] = json!("")),
            400,
            "request.uid is missing or empty",
        ),
        (
            "uid not a string",
            "POST",
            "/mutate",
            with(&|r| r["request"]["uid"] = json!(7)),
            400,
            "request.uid is missing or empty",
        ),
        (
            "no request.kind",
            "POST",
            "/mutate",
            with(&|r| {
                r["request"].as_object_mut().unwrap().remove("kind");
            }),
            400,
            "request.kind must be an object",
        ),
        (
            "bad operation",
            "POST",
            "/mutate",
            with(&|r| r["request"]["operation"] = json!("PATCH")),
            400,
            "request.operation is \"PATCH\"",
        ),
        (
            "object null",
            "POST",
            "/mutate",
            with(&|r| r["request"]["object"] = Value::Null),
            400,
            "request.object is null, expected a JSON object",
        ),
        (
            "object an array",
            "POST",
            "/mutate",
            with(&|r| r["request"]["object"] = json!([1])),
            400,
            "request.object is a list, expected a JSON object",
        ),
        (
            "object missing",
            "POST",
            "/mutate",
            with(&|r| {
                r["request"].as_object_mut().unwrap().remove("object");
            }),
            400,
            "request.object is missing",
        ),
        (
            "over the size limit",
            "POST",
            "/mutate",
            vec![b' '; 7 * 1024 * 1024 + 1],
            413,
            "request body exceeds 7340032 bytes",
        ),
        (
            "wrong method",
            "GET",
            "/mutate",
            Vec::new(),
            405,
            "only POST is served on /mutate",
        ),
        (
            "wrong path",
            "POST",
            "/validate",
            pod_review(),
            404,
            "not found: the admission endpoint is POST /mutate",
        ),
    ];
    for (name, method, path, body, want_status, want_reason) in cases {
        let (status, text) = oneshot(method, path, body).await;
        assert_eq!(status, want_status, "{name}: {text}");
        assert!(
            text.contains(want_reason),
            "{name}: {text:?} lacks {want_reason:?}"
        );
        assert!(
            text.ends_with('\n') && text.trim_end().lines().count() == 1,
            "{name}: not one line: {text:?}"
        );
    }
}

#[tokio::test]
async fn deletes_other_kinds_and_subresources_are_allowed_unchanged() {
    let review: Value = serde_json::from_slice(&pod_review()).unwrap();
    let variants = [
        ("DELETE", "Pod", "", Value::Null),
        (
            "CREATE",
            "ConfigMap",
            "",
            json!({"metadata": {"name": "x"}}),
        ),
        ("UPDATE", "Pod", "", review["request"]["object"].clone()),
        (
            "CREATE",
            "Pod",
            "ephemeralcontainers",
            review["request"]["object"].clone(),
        ),
    ];
    for (op, kind, sub, object) in variants {
        let mut r = review.clone();
        r["request"]["operation"] = json!(op);
        r["request"]["kind"]["kind"] = json!(kind);
        r["request"]["subResource"] = json!(sub);
        r["request"]["object"] = object;
        let (status, body) = oneshot("POST", "/mutate", serde_json::to_vec(&r).unwrap()).await;
        assert_eq!(status, 200, "{op} {kind} {sub}: {body}");
        let resp: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            resp["response"],
            json!({"uid": review["request"]["uid"], "allowed": true}),
            "{op} {kind} {sub}"
        );
    }
}

#[tokio::test]
async fn real_tls_round_trip_over_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let (server, certs) = serving(dir.path(), &[]).await;
    for http2 in [false, true] {
        let mut client = Client::connect(server.addr, certs.ca_der(), http2).await;
        let review = pod_review();
        let (status, body) = client.send("POST", "/mutate", review.clone()).await;
        assert_eq!(status, 200, "http2={http2}");
        assert_expected_pod(&patched_object(&review, &body));
        // Several requests on one connection.
        let (status, _) = client.send("POST", "/mutate", review).await;
        assert_eq!(status, 200);
    }
    // The negotiated protocol follows ALPN.
    let tls = tls_connect(server.addr, certs.ca_der(), &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, metrics) = health_get(server.health_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"tracepatch_admission_requests_total{kind="Pod",operation="CREATE",result="patched"} 4"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tracepatch_rules_applied_total{rule="tracer-env"} 4"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("tracepatch_admission_duration_seconds_count 4"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("tracepatch_serving_certificate_expiry_timestamp_seconds 0\n"),
        "{metrics}"
    );
    server.shutdown.cancel();
    server.done.await.unwrap();
}

/// The certificate a fresh connection is served.
async fn served_leaf(
    addr: std::net::SocketAddr,
    ca: rustls::pki_types::CertificateDer<'static>,
) -> Option<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).ok()?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").ok()?,
            tcp,
        )
        .await
        .ok()?;
    Some(tls.get_ref().1.peer_certificates()?[0].to_vec())
}

#[tokio::test]
async fn rotated_certificate_files_are_served_to_new_connections_without_dropping_open_ones() {
    // A Secret volume: data in a timestamped directory, `..data` a symlink to it, and the
    // files symlinks through `..data`. Rotation writes a new directory and swaps `..data`.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let old = TestCerts::new(root, "old");
    let new = TestCerts::new(root, "new");
    for (generation, certs) in [("..2026_11_23_a", &old), ("..2026_11_23_b", &new)] {
        std::fs::create_dir(root.join(generation)).unwrap();
        std::fs::copy(&certs.cert, root.join(generation).join("tls.crt")).unwrap();
        std::fs::copy(&certs.key, root.join(generation).join("tls.key")).unwrap();
    }
    std::os::unix::fs::symlink("..2026_11_23_a", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/tls.crt", root.join("tls.crt")).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", root.join("tls.key")).unwrap();
    let cert = root.join("tls.crt");
    let key = root.join("tls.key");
    let server = start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;

    let old_leaf = served_leaf(server.addr, old.ca_der())
        .await
        .expect("old certificate served");
    let mut open = Client::connect(server.addr, old.ca_der(), true).await;
    assert_eq!(open.send("POST", "/mutate", pod_review()).await.0, 200);

    // Swap atomically, as the kubelet does: a new symlink renamed over `..data`.
    std::os::unix::fs::symlink("..2026_11_23_b", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_11_23_a")).unwrap();

    let mut new_leaf = None;
    for _ in 0..50 {
        if let Some(leaf) = served_leaf(server.addr, new.ca_der()).await {
            new_leaf = Some(leaf);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_leaf = new_leaf.expect("a new connection is served the rotated certificate within 5 s");
    assert_ne!(old_leaf, new_leaf);
    // The connection opened before the rotation keeps working.
    assert_eq!(open.send("POST", "/mutate", pod_review()).await.0, 200);

    // In-place rewrite (cert-manager style): back to the old pair, key then certificate.
    // A half-written pair (new key, old certificate) is skipped, never served.
    std::fs::write(
        root.join("..2026_11_23_b/tls.key"),
        std::fs::read(&old.key).unwrap(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        served_leaf(server.addr, new.ca_der()).await,
        Some(new_leaf.clone())
    );
    std::fs::write(
        root.join("..2026_11_23_b/tls.crt"),
        std::fs::read(&old.cert).unwrap(),
    )
    .unwrap();
    let mut back = false;
    for _ in 0..50 {
        if served_leaf(server.addr, old.ca_der()).await.as_ref() == Some(&old_leaf) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the rewritten files are served");
    assert_eq!(open.send("POST", "/mutate", pod_review()).await.0, 200);
    server.shutdown.cancel();
    server.done.await.unwrap();
}

#[tokio::test]
async fn a_request_in_flight_at_shutdown_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (server, certs) = serving(dir.path(), &["--shutdown-delay", "300ms"]).await;
    assert_eq!(
        health_get(server.health_addr, "/readyz").await,
        (200, "ok\n".into())
    );

    // Headers and half the body, then shutdown, then the rest.
    let body = pod_review();
    let mut tls = tls_connect(server.addr, certs.ca_der(), &[b"http/1.1"]).await;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body[..body.len() / 2]).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown.cancel();

    // Not ready at once; still serving new connections until the shutdown delay ends.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, reason) = health_get(server.health_addr, "/readyz").await;
    assert_eq!((status, reason.as_str()), (503, "draining\n"));
    let mut during_delay = Client::connect(server.addr, certs.ca_der(), true).await;
    assert_eq!(
        during_delay.send("POST", "/mutate", pod_review()).await.0,
        200
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    tls.write_all(&body[body.len() / 2..]).await.unwrap();
    tls.flush().await.unwrap();
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    let json_start = text.find("{\"apiVersion\"").unwrap();
    assert_expected_pod(&patched_object(&body, text[json_start..].as_bytes()));

    tokio::time::timeout(Duration::from_secs(5), server.done)
        .await
        .unwrap()
        .unwrap();
    // The listener is closed once the server is done.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn slow_handshakes_and_slow_headers_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (server, certs) = serving(dir.path(), &["--header-timeout", "500ms"]).await;
    // A TCP connection that never starts TLS.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // A TLS connection that sends half a request line and stops.
    let mut slow = tls_connect(server.addr, certs.ca_der(), &[b"http/1.1"]).await;
    slow.write_all(b"POST /mutate HTTP/1.1\r\nhost: loc")
        .await
        .unwrap();
    slow.flush().await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    let silent_read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(
        matches!(silent_read, Ok(Ok(0)) | Ok(Err(_))),
        "silent TCP connection not closed: {silent_read:?}"
    );
    let slow_read =
        tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut Vec::new())).await;
    assert!(slow_read.is_ok(), "slow-header connection not closed");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut off after {:?}",
        started.elapsed()
    );
    server.shutdown.cancel();
    server.done.await.unwrap();
}

#[tokio::test]
async fn a_flood_of_idle_connections_does_not_stop_new_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (server, certs) = serving(dir.path(), &["--max-connections", "16"]).await;
    // Twice the limit of connections that complete TLS and then say nothing.
    let mut idle = Vec::new();
    for _ in 0..32 {
        idle.push(tls_connect(server.addr, certs.ca_der(), &[b"h2"]).await);
    }
    assert_eq!(served_within_5s(server.addr, certs.ca_der()).await, 200);
    drop(idle);
    server.shutdown.cancel();
    server.done.await.unwrap();
}

#[tokio::test]
async fn bad_certificates_and_configuration_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestCerts::new(dir.path(), "a");
    let b = TestCerts::new(dir.path(), "b");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let bad_config = dir.path().join("config.yaml");
    std::fs::write(&bad_config, "tracePort:\n  mode: udp\n").unwrap();
    let expired = tracepatch::certs::issue::generate(
        "expired CA",
        Duration::from_secs(86_400),
        &tracepatch::certs::issue::ServingSpec::localhost(Duration::from_secs(1)),
    )
    .unwrap();
    let (expired_cert, expired_key) = (
        dir.path().join("expired.crt"),
        dir.path().join("expired.key"),
    );
    std::fs::write(&expired_cert, &expired.serving.cert).unwrap();
    std::fs::write(&expired_key, &expired.serving.key).unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![
                "--tls-cert".into(),
                s(&dir.path().join("missing.crt")),
                "--tls-key".into(),
                s(&a.key),
            ],
            format!("cannot read {}", s(&dir.path().join("missing.crt"))),
        ),
        (
            vec![
                "--tls-cert".into(),
                s(&garbage),
                "--tls-key".into(),
                s(&a.key),
            ],
            "no valid PEM certificate".into(),
        ),
        (
            vec![
                "--tls-cert".into(),
                s(&a.cert),
                "--tls-key".into(),
                s(&b.key),
            ],
            "the private key does not match the certificate".into(),
        ),
        (
            vec![
                "--tls-cert".into(),
                s(&expired_cert),
                "--tls-key".into(),
                s(&expired_key),
            ],
            "certificate is not valid now".into(),
        ),
        (
            vec![
                "--tls-cert".into(),
                s(&a.cert),
                "--tls-key".into(),
                s(&a.key),
                "--config".into(),
                s(&bad_config),
            ],
            format!("invalid config {}:2:9", s(&bad_config)),
        ),
    ];
    for (flags, want) in cases {
        let mut argv = vec![
            "tracepatch",
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
        ];
        argv.extend(flags.iter().map(String::as_str));
        let support::cli::Command::Serve(args) =
            <support::cli::Cli as clap::Parser>::try_parse_from(argv)
                .unwrap()
                .command
        else {
            unreachable!()
        };
        let err = match tracepatch::server::Server::start(args.options(), Default::default()).await
        {
            Ok(_) => panic!("started with {flags:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(&want), "{flags:?}: {err:?} lacks {want:?}");
        assert!(!err.contains('\n'), "{err}");
    }
}
