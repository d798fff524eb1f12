//! The TLS accept loop of the admission port: tokio-rustls in front of hyper-util's
//! automatic HTTP/1.1 / HTTP/2 server, with the axum router behind it.
//!
//! Connections are bounded three ways, so that neither slow clients nor a flood of idle
//! connections can keep the apiserver from being served:
//! - the TLS handshake must finish within the header timeout, and an HTTP/1.1 request's
//!   headers must arrive within it;
//! - a connection with no request in flight for the idle timeout is closed (the
//!   apiserver simply opens a new one);
//! - at most `max_connections` are served; when a new connection finds the limit
//!   reached, every connection that is idle at that moment is closed to make room.
//!
//! On shutdown the loop stops accepting, every connection is told to finish (HTTP/1.1:
//! after the response in progress; HTTP/2: GOAWAY, open streams complete), and the
//! caller waits on the [`TaskTracker`] for them, up to its drain timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

/// Limits and timeouts of admission connections.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    /// TLS handshake and HTTP/1.1 request headers must complete within this.
    pub header_timeout: Duration,
    /// A connection with nothing in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// HTTP/2 streams per connection.
    pub max_streams: u32,
}

/// Activity of one connection: requests in flight, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` at the last request end (or the connection start).
    last_ms: AtomicU64,
    epoch: Instant,
}

/// Ends a request's activity when dropped (also when the client goes away mid-way).
struct InFlight(Arc<Activity>);

/// Accepts TLS connections on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    limits: ConnLimits,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let shed_idle = Arc::new(Notify::new());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        // Detect dead peers without traffic of our own on healthy ones.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and the like: back off briefly instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // At the limit: idle connections make room for this one.
                shed_idle.notify_waiters();
                let wait = tokio::select! {
                    () = shutdown.cancelled() => break,
                    p = slots.clone().acquire_owned() => p,
                };
                match wait {
                    Ok(p) => p,
                    Err(_) => break,
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let shed_idle = shed_idle.clone();
        let limits = limits.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let activity = Arc::new(Activity::new());
            let service = {
                let activity = activity.clone();
                hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let guard = activity.begin();
                    let call = router.clone().oneshot(req.map(axum::body::Body::new));
                    async move {
                        let response = call.await;
                        drop(guard);
                        response
                    }
                })
            };
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(conn);
            let mut closing = false;
            let tick = (limits.idle_timeout / 4).max(Duration::from_millis(100));
            let mut ticker = tokio::time::interval(tick);
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = shutdown.cancelled(), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    () = shed_idle.notified(), if !closing => {
                        if activity.is_idle() {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                    _ = ticker.tick(), if !closing => {
                        if activity.idle_for() >= limits.idle_timeout {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                }
            }
        });
    }
}

// === impl Activity ===

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// How long nothing has been in flight (zero while something is).
    fn idle_for(&self) -> Duration {
        if !self.is_idle() {
            return Duration::ZERO;
        }
        let last = self.last_ms.load(Ordering::Acquire);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
