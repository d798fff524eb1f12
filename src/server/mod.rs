//! `tracepatch serve`: the HTTPS admission endpoint and the plain-HTTP health port.
//!
//! Start-up refuses what would make the webhook wrong (a bad configuration file, an
//! unreadable, mismatched or expired certificate) with one line and exit status 1.
//! Then: certificates (files watched for rotation, a generated development pair, or
//! self-managed in the cluster), the health port, the admission port, and a wait for
//! SIGTERM or SIGINT. Shutdown: `/readyz` turns false, the optional shutdown delay lets
//! endpoint removal propagate while requests are still served, the listener stops
//! accepting, in-flight requests finish (up to the drain timeout), exit 0.

mod health;
mod listener;
mod metrics;
mod refusal;
mod routes;

pub use health::Readiness;
pub use listener::{ConnLimits, serve as serve_tls};
pub use metrics::Metrics;
pub use routes::{AdmissionState, admission_router};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::certs;
use crate::certs::self_managed::SelfManagedOptions;
use crate::certs::{CertStore, ServingCert, fmt_time};
use crate::config::Config;
use crate::engine::Engine;

/// What `tracepatch serve` needs: its flags, without the command line.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address of the HTTPS admission endpoint.
    pub addr: SocketAddr,
    /// Address of the plain-HTTP port serving /healthz, /readyz and /metrics.
    pub health_addr: SocketAddr,
    /// Rules configuration file; the built-in Datadog profile when `None`.
    pub config: Option<PathBuf>,
    /// Where the served certificate comes from.
    pub certificates: Certificates,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub drain_timeout: Duration,
    /// After shutdown begins, keep serving (not ready) this long before closing the
    /// listener.
    pub shutdown_delay: Duration,
    /// Time allowed for a TLS handshake, an HTTP/1.1 request's headers, and a body.
    pub header_timeout: Duration,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
}

/// Where the served certificate comes from.
#[derive(Clone, Debug)]
pub enum Certificates {
    /// Certificate and key files, polled every `reload_interval` and reloaded when
    /// they change.
    Files {
        cert: PathBuf,
        key: PathBuf,
        reload_interval: Duration,
    },
    /// A development CA and certificate generated (or reused) in `dir`, then watched
    /// like files.
    Development {
        dir: PathBuf,
        reload_interval: Duration,
    },
    /// Kept in a Secret, its CA in the webhook configuration's caBundle.
    SelfManaged(SelfManagedOptions),
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(options: ServeOptions) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signal = {
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            shutdown.cancel();
        }
    };
    let server = Server::start(options, shutdown.clone()).await?;
    tokio::spawn(signal);
    server.wait().await;
    Ok(())
}

/// A started server: both ports bound, certificates in place.
pub struct Server {
    /// The admission port's actual address (useful when asked for port 0).
    pub addr: SocketAddr,
    /// The health port's actual address.
    pub health_addr: SocketAddr,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
    /// Stops the accept loop, which then tells every connection to finish.
    stop_accepting: CancellationToken,
    /// Stops the health port and the certificate tasks, last.
    stop_background: CancellationToken,
    connections: TaskTracker,
    background: TaskTracker,
    drain_timeout: Duration,
    shutdown_delay: Duration,
}

impl Server {
    /// Loads the configuration and certificates, binds both ports and starts serving.
    /// Cancelling `shutdown` starts the shutdown; [`Server::wait`] carries it out.
    pub async fn start(args: ServeOptions, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let config = match &args.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let readiness = Arc::new(Readiness::default());
        let certs = CertStore::new();
        let metrics = Arc::new(match &args.certificates {
            Certificates::SelfManaged(_) => Metrics::with_ca_bundle_check(),
            _ => Metrics::new(),
        });
        let background = TaskTracker::new();
        let stop_background = CancellationToken::new();

        // Certificates first: refuse to start with a certificate that cannot be served.
        let files = match &args.certificates {
            Certificates::SelfManaged(options) => {
                let namespace =
                    certs::self_managed::resolve_namespace(options.namespace.as_deref())?;
                // Before the health port opens: /readyz and /metrics must not report the
                // caBundle as trusted until the first check says so.
                certs.require_ca_bundle();
                let client = kube::Client::try_default()
                    .await
                    .context("cannot build a Kubernetes client for self-managed certificates")?;
                info!(
                    namespace = %namespace,
                    secret = %options.secret,
                    webhook_config = %options.webhook_config,
                    "self-managed certificates"
                );
                let conditions = options
                    .sync_match_conditions
                    .then(|| crate::webhook_config::render_conditions(&config));
                let task = certs::self_managed::run(
                    client,
                    options.clone(),
                    namespace,
                    certs.clone(),
                    conditions,
                );
                let stop = stop_background.clone();
                background.spawn(async move {
                    tokio::select! {
                        () = task => {}
                        () = stop.cancelled() => {}
                    }
                });
                None
            }
            Certificates::Files {
                cert,
                key,
                reload_interval,
            } => Some((cert.clone(), key.clone(), *reload_interval)),
            Certificates::Development {
                dir,
                reload_interval,
            } => {
                let (cert, key) = dev_certificate(dir, args.addr)?;
                Some((cert, key, *reload_interval))
            }
        };
        if let Some((cert, key, reload_interval)) = files {
            let serving = ServingCert::from_files(&cert, &key)?;
            info!(
                cert = %cert.display(),
                not_after = %fmt_time(serving.not_after()),
                "serving certificate loaded"
            );
            certs.set(serving);
            background.spawn(certs::reload::watch_files(
                cert,
                key,
                certs.clone(),
                reload_interval,
                stop_background.clone(),
            ));
        }

        let health_listener = TcpListener::bind(args.health_addr)
            .await
            .with_context(|| format!("cannot listen on --health-addr {}", args.health_addr))?;
        let listener = TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on --addr {}", args.addr))?;
        let addr = listener.local_addr()?;
        let health_addr = health_listener.local_addr()?;

        let health = routes::health_router(Arc::new(routes::HealthState {
            readiness: readiness.clone(),
            certs: certs.clone(),
            metrics: metrics.clone(),
        }));
        {
            let stop = stop_background.clone();
            background.spawn(async move {
                let served = axum::serve(health_listener, health)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    warn!(error = %e, "health port stopped");
                }
            });
        }

        let router = routes::admission_router(Arc::new(routes::AdmissionState {
            engine: Engine::new(config),
            metrics,
            body_timeout: args.header_timeout,
        }));
        let limits = listener::ConnLimits {
            header_timeout: args.header_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections.max(1),
            max_streams: 256,
        };
        let connections = TaskTracker::new();
        let stop_accepting = CancellationToken::new();
        background.spawn(listener::serve(
            listener,
            TlsAcceptor::from(certs.server_config()),
            router,
            limits,
            stop_accepting.clone(),
            connections.clone(),
        ));
        background.close();
        readiness.set_accepting(true);
        info!(addr = %addr, health_addr = %health_addr, "serving admission reviews on POST /mutate");
        Ok(Self {
            addr,
            health_addr,
            readiness,
            shutdown,
            stop_accepting,
            stop_background,
            connections,
            background,
            drain_timeout: args.drain_timeout,
            shutdown_delay: args.shutdown_delay,
        })
    }

    /// Waits for shutdown to be requested, then: not ready, the shutdown delay (still
    /// serving), stop accepting, drain in-flight requests up to the drain timeout.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.readiness.set_draining();
        if !self.shutdown_delay.is_zero() {
            info!(
                delay_s = self.shutdown_delay.as_secs_f64(),
                "shutting down: not ready; serving until the shutdown delay ends"
            );
            tokio::time::sleep(self.shutdown_delay).await;
        }
        info!("no longer accepting; draining in-flight requests");
        self.stop_accepting.cancel();
        self.connections.close();
        if tokio::time::timeout(self.drain_timeout, self.connections.wait())
            .await
            .is_err()
        {
            warn!(
                remaining = self.connections.len(),
                drain_timeout_s = self.drain_timeout.as_secs_f64(),
                "drain timeout reached with connections still open; exiting"
            );
        } else {
            info!("all connections drained");
        }
        self.stop_background.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.background.wait()).await;
    }
}

/// Generates (or reuses) the development certificate and says how to call the server.
fn dev_certificate(dir: &Path, addr: SocketAddr) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dev = certs::ensure_dev_cert(dir)?;
    let how = if dev.reused { "reusing" } else { "generated" };
    info!(
        ca = %dev.ca_cert.display(),
        cert = %dev.cert.display(),
        key = %dev.key.display(),
        "{how} a development certificate for localhost and 127.0.0.1 (no --tls-cert/--tls-key given)"
    );
    let port = addr.port();
    info!(
        "try: curl --cacert {} -H 'Content-Type: application/json' --data @tests/fixtures/admission/pod-review/input.json https://localhost:{port}/mutate",
        dev.ca_cert.display()
    );
    Ok((dev.cert, dev.key))
}

/// SIGTERM or SIGINT.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM received"),
                    _ = int.recv() => info!("SIGINT received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
