//! SECURITY.md, "What it logs, and what it never logs": the real binary, its JSON logs
//! captured while it admits and refuses objects that carry a unique marker in every
//! place a user's data sits (label and annotation values, the tracer variables' names
//! and values, an existing env entry, an image, `proxy.istio.io/config`, a request
//! header, the body of a refused request). The marker must appear in no log line, and
//! neither must the serving key; the admissions themselves must be logged (uid, kind,
//! rules, patch size), so that a silent logger cannot pass. At the default level, at
//! `RUST_LOG=debug` and at `RUST_LOG=trace`.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use support::{KillOnDrop, TestCerts, tls_connect};

/// In every value of the objects and requests below; in no log line.
const MARK: &str = "ZQ7MARK";

/// The binary on ephemeral loopback ports with JSON logs; the admission address and the
/// readers of its standard output and error.
struct Server {
    child: KillOnDrop,
    addr: SocketAddr,
    stdout: std::thread::JoinHandle<Vec<String>>,
    stderr: std::thread::JoinHandle<String>,
}

fn start(certs: &TestCerts, rust_log: Option<&str>) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracepatch"));
    cmd.args([
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--health-addr",
        "127.0.0.1:0",
    ])
    .args(["--tls-cert", certs.cert.to_str().unwrap()])
    .args(["--tls-key", certs.key.to_str().unwrap()])
    .args(["--log-format", "json"])
    .env_remove("RUST_LOG")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(level) = rust_log {
        cmd.env("RUST_LOG", level);
    }
    let mut child = cmd.spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server exited before listening")
            .unwrap();
        let addr = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()));
        seen.push(line);
        if let Some(a) = addr {
            break a;
        }
    };
    let stdout = std::thread::spawn(move || {
        seen.extend(lines.map_while(Result::ok));
        seen
    });
    Server {
        child: KillOnDrop(child),
        addr,
        stdout,
        stderr,
    }
}

impl Server {
    /// SIGTERM (the log writer flushes on a graceful exit), then everything it printed.
    fn stop(mut self) -> (Vec<String>, String) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = self.child.0.wait().unwrap();
        assert!(status.success(), "tracepatch exited with {status}");
        (self.stdout.join().unwrap(), self.stderr.join().unwrap())
    }
}

/// `POST /mutate` over HTTP/1.1 and TLS with an `authorization` and a custom header
/// carrying the marker; the status.
async fn post(addr: SocketAddr, certs: &TestCerts, body: Vec<u8>) -> u16 {
    let tls = tls_connect(addr, certs.ca_der(), &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri("/mutate")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {MARK}-token"))
        .header("x-request-note", format!("{MARK}-header"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

fn review(uid: &str, kind: (&str, &str), object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": kind.0, "version": "v1", "kind": kind.1},
            "resource": {"group": kind.0, "version": "v1", "resource": "x"},
            "operation": "CREATE",
            "namespace": "shop",
            "name": "web-0",
            "userInfo": {"username": "tester"},
            "object": object,
        }
    }))
    .unwrap()
}

/// The requests: admitted with a patch, admitted without one, refused.
fn requests() -> Vec<(&'static str, Vec<u8>, u16)> {
    let m = MARK;
    let meshed = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "web-0", "namespace": "shop",
            "labels": {"app": "web", "team": format!("{m}-label"), "tags.datadoghq.com/env": format!("{m}-ust")},
            "annotations": {
                "note": format!("{m}-annotation"),
                "apm.datadoghq.com/env": json!({format!("DD_{m}_NAME"): format!("{m}-value"), "DD_TAGS": format!("a:{m}\"quoted\"")}).to_string(),
                "proxy.istio.io/config": format!("proxyMetadata:\n  OTHER: {m}-proxy\n"),
            }
        },
        "spec": {"containers": [
            {"name": "web", "image": format!("shop/{m}-image:1"), "env": [{"name": "SECRET", "value": format!("{m}-secret")}]},
            {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.22.0",
             "env": [{"name": "DD_ENV", "value": format!("{m}-old")}]}
        ]}
    });
    let agent = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "datadog-agent-x", "labels": {"app": "datadog-agent", "x": format!("{m}-agent")}},
        "spec": {"containers": [{"name": "agent", "image": "gcr.io/datadoghq/agent:7", "args": [format!("--{m}")]}]}
    });
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "datadog-agent", "annotations": {"n": format!("{m}-svc")}},
        "spec": {"ports": [{"name": "traceport", "port": 8126, "targetPort": 8126}], "selector": {"app": format!("{m}-sel")}}
    });
    let plain = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cm"}, "data": {"k": format!("{m}-data")}
    });
    vec![
        (
            "meshed pod, patched",
            review("uid-meshed", ("", "Pod"), meshed),
            200,
        ),
        (
            "agent pod, patched",
            review("uid-agent", ("", "Pod"), agent),
            200,
        ),
        (
            "service, patched",
            review("uid-svc", ("", "Service"), service),
            200,
        ),
        (
            "configmap, not handled",
            review("uid-cm", ("", "ConfigMap"), plain),
            200,
        ),
        (
            "object a list, refused",
            review("uid-list", ("", "Pod"), json!([format!("{m}-list")])),
            400,
        ),
        (
            "invalid JSON, refused",
            format!(r#"{{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {{"object": {{"a": "{m}-json" }}"#).into_bytes(),
            400,
        ),
    ]
}

async fn check_logs(rust_log: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new(dir.path(), "serving");
    let server = start(&certs, rust_log);
    for (what, body, want) in requests() {
        assert!(
            body.windows(MARK.len()).any(|w| w == MARK.as_bytes()),
            "{what}: no marker sent"
        );
        assert_eq!(post(server.addr, &certs, body).await, want, "{what}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (stdout, stderr) = server.stop();
    let level = rust_log.unwrap_or("the default level");

    // The admissions are logged, one line each, with what SECURITY.md says a line holds.
    let admitted: Vec<Value> = stdout
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "admitted")
        .collect();
    let uids: Vec<&str> = admitted.iter().filter_map(|v| v["uid"].as_str()).collect();
    assert_eq!(
        uids,
        ["uid-meshed", "uid-agent", "uid-svc", "uid-cm"],
        "{level}: admission lines {stdout:#?}"
    );
    let meshed = &admitted[0];
    assert_eq!(meshed["kind"], "Pod", "{meshed}");
    assert_eq!(meshed["rules"], "tracer-env", "{meshed}");
    assert!(meshed["patch_ops"].as_u64().unwrap() > 0, "{meshed}");
    let refused = stdout.iter().filter(|l| l.contains("refused")).count();
    assert_eq!(refused, 2, "{level}: refusal lines {stdout:#?}");

    // Nothing a user sent, and not the serving key.
    let key = std::fs::read_to_string(&certs.key).unwrap();
    let key_lines: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for (i, line) in stdout
        .iter()
        .map(String::as_str)
        .chain(stderr.lines())
        .enumerate()
    {
        assert!(
            !line.contains(MARK),
            "{level}: log line {i} holds what a client sent: {line}"
        );
        for k in &key_lines {
            assert!(
                !line.contains(k),
                "{level}: log line {i} holds the key: {line}"
            );
        }
    }
}

#[tokio::test]
async fn logs_at_the_default_level_never_hold_object_contents_headers_or_keys() {
    check_logs(None).await;
}

#[tokio::test]
async fn logs_at_debug_never_hold_object_contents_headers_or_keys() {
    check_logs(Some("debug")).await;
}

#[tokio::test]
async fn logs_at_trace_never_hold_object_contents_headers_or_keys() {
    check_logs(Some("trace")).await;
}
