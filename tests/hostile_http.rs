//! Hostile input (issue 6) over the wire: bodies far over the 7 MiB limit, announced or
//! chunked, sent fast and slowly, a small body that never finishes, 16 MiB over HTTP/2;
//! each refused (413, or 408 by the body timeout) without being read, and the server
//! still serving after. Against a real server over TLS on loopback.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::hostile::MIB;
use support::{Client, TestCerts, pod_review, serving, tls_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Writes `head`, then `body_chunks` with `pause` between them, over HTTP/1.1 and TLS,
/// until the server answers; the status line and how long it took. A write error after
/// the answer (the server closed the connection) is expected and ignored.
async fn raw_http1(
    addr: SocketAddr,
    certs: &TestCerts,
    head: String,
    body_chunks: impl Iterator<Item = Vec<u8>>,
    pause: Duration,
) -> (String, Duration) {
    let tls = tls_connect(addr, certs.ca_der(), &[b"http/1.1"]).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.windows(2).any(|w| w == b"\r\n") {
                break;
            }
        }
        (
            String::from_utf8_lossy(&got)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
            started.elapsed(),
        )
    });
    let writer = async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for chunk in body_chunks {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            if wr.write_all(&chunk).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        got = reader => got.unwrap(),
        () = async { writer.await; std::future::pending::<()>().await } => unreachable!(),
    }
}

#[tokio::test]
async fn bodies_far_over_the_limit_fast_and_slow_are_refused_without_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let (server, certs) = serving(dir.path(), &["--header-timeout", "1s"]).await;
    let head = |extra: &str| {
        format!(
            "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n{extra}\r\n"
        )
    };
    let mib = |n: usize| (0..n).map(|_| vec![b' '; MIB]);
    let chunked = |n: usize| {
        (0..n).map(|_| {
            let mut c = format!("{:x}\r\n", MIB).into_bytes();
            c.extend(std::iter::repeat_n(b' ', MIB));
            c.extend_from_slice(b"\r\n");
            c
        })
    };

    // 1 GiB announced, sent fast: refused on the announcement.
    let (status, took) = raw_http1(
        server.addr,
        &certs,
        head("content-length: 1073741824\r\n"),
        mib(1024),
        Duration::ZERO,
    )
    .await;
    assert!(
        status.contains(" 413 "),
        "1 GiB announced, fast: {status:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "1 GiB announced, fast: {took:?}"
    );

    // 1 GiB announced, sent slowly (1 MiB every 200 ms): refused before the body.
    let (status, _) = raw_http1(
        server.addr,
        &certs,
        head("content-length: 1073741824\r\n"),
        mib(1024),
        Duration::from_millis(200),
    )
    .await;
    assert!(
        status.contains(" 413 "),
        "1 GiB announced, slow: {status:?}"
    );

    // Chunked, no length announced, 64 MiB sent fast: refused once 7 MiB have come.
    let (status, took) = raw_http1(
        server.addr,
        &certs,
        head("transfer-encoding: chunked\r\n"),
        chunked(64),
        Duration::ZERO,
    )
    .await;
    assert!(status.contains(" 413 "), "64 MiB chunked, fast: {status:?}");
    assert!(
        took < Duration::from_secs(5),
        "64 MiB chunked, fast: {took:?}"
    );

    // Chunked, sent slowly: cut off by the body timeout (the header timeout, 1 s).
    let (status, took) = raw_http1(
        server.addr,
        &certs,
        head("transfer-encoding: chunked\r\n"),
        chunked(64),
        Duration::from_millis(400),
    )
    .await;
    assert!(status.contains(" 408 "), "64 MiB chunked, slow: {status:?}");
    assert!(
        took < Duration::from_secs(5),
        "64 MiB chunked, slow: {took:?}"
    );

    // A small body that never finishes arriving: the same.
    let (status, _) = raw_http1(
        server.addr,
        &certs,
        head("content-length: 1000\r\n"),
        (0..1000).map(|_| vec![b' ']),
        Duration::from_millis(100),
    )
    .await;
    assert!(status.contains(" 408 "), "slow small body: {status:?}");

    // HTTP/2: 16 MiB in one request.
    let mut h2 = Client::connect(server.addr, certs.ca_der(), true).await;
    let (status, body) = h2.send("POST", "/mutate", vec![b' '; 16 * MIB]).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));

    // And the server still serves.
    let (status, _) = h2.send("POST", "/mutate", pod_review()).await;
    assert_eq!(status, 200);
    server.shutdown.cancel();
    server.done.await.unwrap();
}
