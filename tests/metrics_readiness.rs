//! `tracepatch_ready` on the real server's `/metrics`: 1 while `/readyz` answers 200, 0 as
//! soon as shutdown begins (draining, still serving during the shutdown delay); and no
//! `tracepatch_ca_bundle_trusted` outside self-managed mode. The states this cannot reach
//! without a cluster (caBundle not trusted) are unit-tested in `src/server/metrics.rs`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{health_get, serving};

/// The value of an unlabelled series on `/metrics`.
async fn sample(health: SocketAddr, name: &str) -> Option<String> {
    let (status, text) = health_get(health, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(str::to_owned)
        .next()
}

#[tokio::test]
async fn ready_follows_readyz_through_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _certs) = serving(dir.path(), &["--shutdown-delay", "1s"]).await;
    let health = server.health_addr;

    assert_eq!(health_get(health, "/readyz").await.0, 200);
    assert_eq!(
        sample(health, "tracepatch_ready").await.as_deref(),
        Some("1")
    );
    assert_eq!(sample(health, "tracepatch_ca_bundle_trusted").await, None);
    let (_, text) = health_get(health, "/metrics").await;
    assert!(!text.contains("tracepatch_ca_bundle_trusted"), "{text}");

    server.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        health_get(health, "/readyz").await,
        (503, "draining\n".into())
    );
    assert_eq!(
        sample(health, "tracepatch_ready").await.as_deref(),
        Some("0")
    );

    tokio::time::timeout(Duration::from_secs(10), server.done)
        .await
        .unwrap()
        .unwrap();
}
