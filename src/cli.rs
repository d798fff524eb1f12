//! Command-line interface of the `tracepatch` binary (not part of the library: the
//! library takes plain option structs, which the `options` methods here build).
//!
//! The doc comments are the `--help` text. Every `serve` flag has an environment
//! variable override, so the manifests can set them from a ConfigMap or the downward API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracepatch::certs::GenerateOptions;
use tracepatch::certs::self_managed::SelfManagedOptions;
use tracepatch::server::{Certificates, ServeOptions};

/// tracepatch: a Kubernetes mutating admission webhook that makes Istio-meshed
/// workloads trace correctly with Datadog APM.
#[derive(Debug, Parser)]
#[command(name = "tracepatch", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTPS admission endpoint and the plain-HTTP health and metrics port.
    Serve(Box<ServeArgs>),
    /// Apply the rules offline to manifests or a saved AdmissionReview.
    Mutate(MutateArgs),
    /// Audit a running cluster: what the rules would change, and what only a restart
    /// repairs. Exit status 0: nothing found, 1: findings remain, 2: error.
    Audit(AuditArgs),
    /// Generate certificates for the webhook.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Check or print the rules configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the MutatingWebhookConfiguration for a rules configuration, with the
    /// matchConditions that keep objects no rule could change from being sent.
    WebhookConfig(WebhookConfigArgs),
    /// Print rules 2-4 as MutatingAdmissionPolicies and their bindings (YAML), for the
    /// apiserver to apply itself, before any webhook.
    Policies(PoliciesArgs),
}

/// Flags of `tracepatch policies`.
#[derive(Debug, Args)]
pub struct PoliciesArgs {
    /// Rules configuration file (default: the built-in Datadog profile).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// admissionregistration.k8s.io version: v1 (Kubernetes 1.36+) or v1beta1 (1.34-1.35
    /// with the MutatingAdmissionPolicy feature enabled).
    #[arg(long, default_value = "v1", value_parser = ["v1", "v1beta1"])]
    pub api_version: String,
    /// Namespace tracepatch runs in (excluded, with kube-system, as by the webhook).
    #[arg(long, default_value = "tracepatch")]
    pub namespace: String,
}

/// Flags of `tracepatch webhook-config`.
#[derive(Debug, Args)]
pub struct WebhookConfigArgs {
    /// Rules configuration file (default: the built-in Datadog profile).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Name of the MutatingWebhookConfiguration; keep it sorting before `istio-`.
    #[arg(long, default_value = "00-tracepatch")]
    pub name: String,
    /// Namespace tracepatch runs in (excluded from its own webhooks).
    #[arg(long, default_value = "tracepatch")]
    pub namespace: String,
    /// Service in front of tracepatch.
    #[arg(long, default_value = "tracepatch")]
    pub service: String,
    /// Reach the webhook at this base URL instead of the Service (`/mutate` is appended).
    #[arg(long)]
    pub url: Option<String>,
    /// PEM file whose contents become the caBundle (default: none, written at run time
    /// by self-managed certificates).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Leave out matchConditions (Kubernetes older than 1.28).
    #[arg(long)]
    pub no_match_conditions: bool,
    /// Print only the matchConditions of each webhook (the Helm chart's file).
    #[arg(long, conflicts_with_all = ["url", "ca_file", "no_match_conditions"])]
    pub conditions_only: bool,
}

/// Flags of `tracepatch serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTPS admission endpoint.
    #[arg(long, env = "TRACEPATCH_ADDR", default_value = "127.0.0.1:8443")]
    pub addr: SocketAddr,

    /// Address of the plain-HTTP port serving /healthz, /readyz and /metrics.
    #[arg(long, env = "TRACEPATCH_HEALTH_ADDR", default_value = "127.0.0.1:8080")]
    pub health_addr: SocketAddr,

    /// Rules configuration file (YAML); the built-in Datadog profile when absent.
    #[arg(long, env = "TRACEPATCH_CONFIG")]
    pub config: Option<PathBuf>,

    /// Serving certificate chain (PEM). Without --tls-cert and --tls-key, a
    /// development CA and certificate are generated under --dev-cert-dir.
    #[arg(long, env = "TRACEPATCH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key of the serving certificate (PEM).
    #[arg(long, env = "TRACEPATCH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Where the development certificate is kept when no certificate is given.
    #[arg(long, env = "TRACEPATCH_DEV_CERT_DIR", default_value = "certs")]
    pub dev_cert_dir: PathBuf,

    /// How often the certificate files are checked for rotation.
    #[arg(long, env = "TRACEPATCH_CERT_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,

    /// Log format: text for a terminal, json in a cluster.
    #[arg(long, env = "TRACEPATCH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "TRACEPATCH_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// After SIGTERM, keep serving (while /readyz reports not ready) for this long before
    /// closing the listener, so that endpoint removal reaches the apiserver first.
    #[arg(long, env = "TRACEPATCH_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// Time allowed for a TLS handshake, for an HTTP/1.1 request's headers, and for a
    /// request's body. HTTP/2 request headers have no timeout of their own: an HTTP/2
    /// connection with no request in flight is closed after --idle-timeout.
    #[arg(long, env = "TRACEPATCH_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// A connection with no request in flight for this long is closed.
    #[arg(long, env = "TRACEPATCH_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Most connections served at once; when a new one finds the limit reached, idle
    /// connections are closed to make room.
    #[arg(long, env = "TRACEPATCH_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Async worker threads; 0 means one per available CPU (as the container's CPU
    /// limit allows, or the host's cores).
    #[arg(long, env = "TRACEPATCH_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,

    #[command(flatten)]
    pub self_managed: SelfManagedArgs,
}

/// In-cluster self-managed certificates (`serve --self-managed-certs`).
#[derive(Debug, Args, Clone)]
pub struct SelfManagedArgs {
    /// Keep the serving certificate in a Secret and the CA in the webhook
    /// configuration's caBundle, renewing both before expiry.
    #[arg(long, env = "TRACEPATCH_SELF_MANAGED_CERTS", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub self_managed_certs: bool,

    /// Secret holding the CA and serving certificate.
    #[arg(
        long = "cert-secret",
        env = "TRACEPATCH_CERT_SECRET",
        default_value = "tracepatch-tls"
    )]
    pub secret: String,

    /// MutatingWebhookConfiguration whose webhooks get the caBundle.
    #[arg(
        long,
        env = "TRACEPATCH_WEBHOOK_CONFIG",
        default_value = "00-tracepatch"
    )]
    pub webhook_config: String,

    /// Service in front of the webhook (the certificate's DNS names).
    #[arg(long, env = "TRACEPATCH_SERVICE", default_value = "tracepatch")]
    pub service: String,

    /// Namespace of the Secret and Service; defaults to the pod's own namespace.
    #[arg(long, env = "TRACEPATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Cluster DNS domain.
    #[arg(
        long,
        env = "TRACEPATCH_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,

    /// Renew the certificate when it expires within this window.
    #[arg(long, env = "TRACEPATCH_CERT_RENEW_BEFORE", default_value = "30d", value_parser = parse_duration)]
    pub renew_before: Duration,

    /// How often the Secret and caBundle are checked.
    #[arg(long, env = "TRACEPATCH_CERT_CHECK_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub check_interval: Duration,

    /// With the caBundle, also keep each webhook's matchConditions as this configuration
    /// needs them (what `tracepatch webhook-config --config ...` renders), so that a
    /// changed configuration never leaves conditions that skip objects it changes.
    #[arg(
        long,
        env = "TRACEPATCH_SYNC_MATCH_CONDITIONS",
        requires = "self_managed_certs"
    )]
    pub sync_match_conditions: bool,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags of `tracepatch mutate`.
#[derive(Debug, Args)]
pub struct MutateArgs {
    /// Input file (YAML or JSON, one or many documents); `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,

    /// Rules configuration file; the built-in Datadog profile when absent.
    #[arg(long, env = "TRACEPATCH_CONFIG")]
    pub config: Option<PathBuf>,

    /// Output format of the mutated documents.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Yaml)]
    pub output: OutputFormat,

    /// Print the RFC 6902 patch of each document (JSON) instead of the documents.
    #[arg(long)]
    pub patch: bool,
}

/// Output format of `mutate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
}

/// Flags of `tracepatch audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Namespace to audit (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,

    /// Audit every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// Label selector for the Pods, Services and CronJobs audited (`app=web,tier!=db`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,

    /// Namespace never audited (repeatable). Giving one replaces the defaults, the
    /// namespaces the webhook skips: kube-system and tracepatch.
    #[arg(long = "exclude-namespace", value_name = "NAMESPACE", default_values = ["kube-system", "tracepatch"])]
    pub exclude_namespace: Vec<String>,

    /// Rules configuration file; the built-in Datadog profile when absent.
    #[arg(long, env = "TRACEPATCH_CONFIG")]
    pub config: Option<PathBuf>,

    /// Output format: an aligned table, or a list of findings as JSON or YAML.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = AuditOutput::Table)]
    pub output: AuditOutput,

    /// Patch Services and CronJobs in place (a server-side dry run first, each patch
    /// conditional on the version read); pods are never changed: their restart
    /// commands are printed.
    #[arg(long)]
    pub fix: bool,

    /// With --fix: print the patches, send nothing.
    #[arg(long, requires = "fix")]
    pub dry_run: bool,

    /// Objects per list request (pages are read one at a time).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk_size: u32,
}

/// Output format of `audit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuditOutput {
    Table,
    Json,
    Yaml,
}

/// `tracepatch certs ...`
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Generate a CA and a serving certificate for the webhook's Service.
    Generate(GenerateArgs),
}

/// Flags of `tracepatch certs generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Service name of the webhook.
    #[arg(long)]
    pub service: String,

    /// Namespace of the Service.
    #[arg(long)]
    pub namespace: String,

    /// Cluster DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Output directory for ca.crt, ca.key, tls.crt, tls.key.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,

    /// Validity of the serving certificate in days (the CA gets ten times as long).
    #[arg(long, default_value_t = 365)]
    pub days: u32,

    /// Extra DNS name for the serving certificate (repeatable).
    #[arg(long = "dns")]
    pub dns: Vec<String>,

    /// Extra IP address for the serving certificate (repeatable).
    #[arg(long = "ip")]
    pub ip: Vec<std::net::IpAddr>,

    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,

    /// Print the base64 caBundle for a MutatingWebhookConfiguration.
    #[arg(long)]
    pub print_ca_bundle: bool,
}

/// `tracepatch config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file; exit 1 with the line and reason if it is bad.
    Check {
        /// The configuration file.
        file: PathBuf,
    },
    /// Print the documented default configuration (the Datadog profile).
    Default,
}

// === impl ServeArgs ===

impl ServeArgs {
    /// The server's options: where the certificate comes from decided here (the
    /// self-managed flag, else the files, else a development certificate).
    pub fn options(self) -> ServeOptions {
        let certificates = match (self.tls_cert, self.tls_key) {
            _ if self.self_managed.self_managed_certs => {
                Certificates::SelfManaged(self.self_managed.options())
            }
            (Some(cert), Some(key)) => Certificates::Files {
                cert,
                key,
                reload_interval: self.cert_reload_interval,
            },
            _ => Certificates::Development {
                dir: self.dev_cert_dir,
                reload_interval: self.cert_reload_interval,
            },
        };
        ServeOptions {
            addr: self.addr,
            health_addr: self.health_addr,
            config: self.config,
            certificates,
            drain_timeout: self.drain_timeout,
            shutdown_delay: self.shutdown_delay,
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
        }
    }
}

// === impl SelfManagedArgs ===

impl SelfManagedArgs {
    fn options(&self) -> SelfManagedOptions {
        SelfManagedOptions {
            secret: self.secret.clone(),
            webhook_config: self.webhook_config.clone(),
            service: self.service.clone(),
            namespace: self.namespace.clone(),
            cluster_domain: self.cluster_domain.clone(),
            renew_before: self.renew_before,
            check_interval: self.check_interval,
            sync_match_conditions: self.sync_match_conditions,
        }
    }
}

// === impl GenerateArgs ===

impl GenerateArgs {
    pub fn options(&self) -> GenerateOptions {
        GenerateOptions {
            service: self.service.clone(),
            namespace: self.namespace.clone(),
            cluster_domain: self.cluster_domain.clone(),
            out: self.out.clone(),
            days: self.days,
            dns: self.dns.clone(),
            ip: self.ip.clone(),
            force: self.force,
            print_ca_bundle: self.print_ca_bundle,
        }
    }
}

// === helpers ===

/// Parses `500ms`, `20s`, `5m`, `12h`, `30d`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 20s, 5m, 30d)"))?;
    let secs = |mult: u64| {
        n.checked_mul(mult)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => Err(format!(
            "{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("20").unwrap(), Duration::from_secs(20));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
