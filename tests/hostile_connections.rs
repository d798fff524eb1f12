//! Connection abuse (issue 6): a flood of idle TLS connections against the connection
//! limit of the `tracepatch` binary (the test build). Memory stays bounded by the limit
//! and a new client is still served.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{Client, KillOnDrop, TestCerts, pod_review, served_within_5s, tls_connect};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The `tracepatch` binary on ephemeral ports; its admission address once it listens.
fn spawn_binary(certs: &TestCerts, extra: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracepatch"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
        ])
        .args(["--tls-cert", certs.cert.to_str().unwrap()])
        .args(["--tls-key", certs.key.to_str().unwrap()])
        .args(["--log-format", "json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The start-up log line names the address it listens on.
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server exited before listening")
            .unwrap();
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(a) = v["addr"].as_str().and_then(|a| a.parse().ok()) {
            break a;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// The connection limit the server runs with.
const MAX_CONNECTIONS: usize = 256;
/// Idle connections in the flood.
const FLOOD: usize = 2000;

/// 2,000 TLS connections that finish the handshake and then say nothing, against
/// `--max-connections 256`: memory stays bounded by the limit (idle connections are
/// closed to make room for new ones), and a new client is still served.
///
/// This process holds every connection of the flood open, one file each, so it first
/// raises its open-file soft limit (Debian's default is 1,024) up to what the flood
/// needs; where the hard limit does not allow that, the test fails and says so. A
/// smaller flood is no substitute: with 896 connections and no connection limit at all
/// (`--max-connections 4096`), RSS grew by 9.2 MiB here, under the 10 MiB bound, so the
/// test could no longer fail.
#[tokio::test]
async fn a_flood_of_idle_connections_is_bounded_in_memory_and_does_not_stop_service() {
    // Raise the limit before the server starts: it inherits the limit, as a server in a pod has
    // one well above its connection limit.
    let need = FLOOD as u64 + 256;
    let limit = rlimit::increase_nofile_limit(need).expect("read and raise RLIMIT_NOFILE");
    assert!(
        limit >= need,
        "the open-file limit can only be raised to {limit}; the flood of {FLOOD} idle \
         connections needs {need} (raise the hard limit: ulimit -Hn {need})"
    );
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new(dir.path(), "serving");
    let max = MAX_CONNECTIONS.to_string();
    let (child, addr) = spawn_binary(&certs, &["--max-connections", &max]);
    let child = KillOnDrop(child);
    let pid = child.0.id();
    // Warm up: a few requests, so that the baseline includes the worker buffers.
    let mut client = Client::connect(addr, certs.ca_der(), true).await;
    for _ in 0..10 {
        assert_eq!(client.send("POST", "/mutate", pod_review()).await.0, 200);
    }
    drop(client);
    let before = rss_kib(pid);
    let mut idle = Vec::new();
    let mut peak = before;
    for i in 0..FLOOD {
        match tokio::time::timeout(
            Duration::from_secs(5),
            tls_connect(addr, certs.ca_der(), &[b"h2"]),
        )
        .await
        {
            Ok(conn) => idle.push(conn),
            Err(_) => panic!("connection {i} not accepted within 5 s"),
        }
        if i % 100 == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    assert_eq!(served_within_5s(addr, certs.ca_der()).await, 200);
    peak = peak.max(rss_kib(pid));
    eprintln!("RSS {before} KiB before the flood, {peak} KiB at its peak");
    // Measured here: +3 MiB with the limit at 256; +21 MiB with it at 4,096 (all 2,000
    // kept open). The bound sits between.
    assert!(
        peak - before < 10 * 1024,
        "RSS grew from {before} KiB to {peak} KiB under {FLOOD} idle connections"
    );
    drop(idle);
    drop(child);
}
