//! Self-managed certificates in the cluster: the serving certificate lives in a Secret,
//! its CA in the `caBundle` of the MutatingWebhookConfiguration, and every replica
//! keeps both right.
//!
//! # What each replica does, every `--check-interval`
//!
//! 1. **The Secret** (`kubernetes.io/tls`, keys `tls.crt`, `tls.key`, `ca.crt`,
//!    `ca.key`). It is used as it is when `tls.crt`/`tls.key` load, chain to `ca.crt`,
//!    cover the Service's four DNS names and are not within `--renew-before` of
//!    expiry. Otherwise (missing, malformed, expiring, wrong names) the replica issues a
//!    new serving certificate, from the CA in the Secret when `ca.key` belongs to it and
//!    the CA has more than twice `renew-before` left, else from a new CA, and writes it
//!    with optimistic concurrency: `create` (409 AlreadyExists: another replica won) or
//!    `update` carrying the `resourceVersion` it read (409 Conflict: another replica
//!    won). A loser re-reads the Secret and takes the winner's certificate, so replicas
//!    starting together all end up serving the same one. `ca.key` is in the Secret so
//!    that any replica can renew from the same CA.
//! 2. **The caBundle.** Every webhook of the configuration must carry the Secret's
//!    `ca.crt`. It is compared as a set of certificates (not as bytes) and written only
//!    when it differs — after a `helm upgrade` or `kubectl apply` reset it, say — with a
//!    strategic merge patch keyed by webhook name that carries the `resourceVersion` it
//!    read (409 Conflict: re-read and try again). The patch touches nothing but
//!    `clientConfig.caBundle`, so fields this build does not know survive.
//!    With `--sync-match-conditions`, the same pass and the same patch also make each
//!    webhook's `matchConditions` entry `tracepatch-rules-may-apply` the one rendered
//!    from the configuration this replica loaded (`tracepatch webhook-config`), so that a
//!    changed configuration never leaves conditions that skip objects its rules change.
//! 3. **Serving.** The certificate goes into the [`CertStore`]; new handshakes use it at
//!    once, no restart. A new certificate is swapped in only once the caBundle trusts
//!    its CA (or its CA is the one already served, or nothing is served yet, or the old
//!    certificate is about to expire), so the apiserver never meets a certificate it
//!    cannot verify.
//! 4. **Readiness.** [`CertStore::require_ca_bundle`] at start;
//!    [`CertStore::set_ca_bundle_ok`] after each check (`/readyz` reads it): true when every webhook's
//!    caBundle holds the CA of the served certificate. When the API cannot be read the
//!    flag keeps its last value: a replica must not leave the Service because the
//!    apiserver hiccuped, or every replica would, and admission would silently stop.
//!
//! # Changing the CA without a moment of distrust
//!
//! When a new CA is made, the Secret's `ca.crt` holds the new CA first and the old CA
//! after it, and that pair is what goes into the caBundle. Replicas still serving the
//! old certificate stay trusted until they pick up the new Secret (within one check
//! interval). The old CA is dropped **at the next change of the Secret** (the next
//! renewal, normally months later, writes `ca.crt` with the signing CA alone) or
//! **when it expires** (expired certificates are left out of the caBundle). A time-based
//! rule ("drop after N intervals") would need the replicas to agree on a clock and on the
//! interval; these two rules need no coordination: every replica derives the same
//! caBundle from the same Secret. The first certificate of `ca.crt` is always the CA
//! that signed `tls.crt` and owns `ca.key`.
//!
//! # Errors
//!
//! API errors are returned by [`Reconciler::reconcile_once`] naming the object and the
//! API's answer (`cannot update secret tracepatch/tracepatch-tls: 403 Forbidden: ...`);
//! [`run`] logs them and retries with a capped, jittered exponential backoff. Nothing
//! here panics or ends the process.
//!
//! # Where
//!
//! This file: the loop ([`run`]) and one pass ([`Reconciler::reconcile_once`]), and
//! serving; `secret`: reading, judging and writing the Secret; `ca_bundle`: the
//! webhook configuration's caBundle; `backoff`: the retry delays.
//!
//! # RBAC
//!
//! Only named objects are touched, so the Role and ClusterRole can list them by
//! `resourceNames`: Secret get, create, update; MutatingWebhookConfiguration get, patch.
//! No list, no watch.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use rustls::pki_types::CertificateDer;

use super::issue::{DEFAULT_SERVING_VALIDITY, IssueError, ServingSpec};
use super::{CertStore, fmt_time};
use crate::webhook_config::Conditions;

mod backoff;
mod ca_bundle;
mod secret;

use backoff::Backoff;
use secret::Material;

/// Where a pod finds its own namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The `fieldManager` of our writes, shown in `managedFields`.
const FIELD_MANAGER: &str = "tracepatch";
/// Secret key of the serving certificate.
const TLS_CRT: &str = "tls.crt";
/// Secret key of the serving key.
const TLS_KEY: &str = "tls.key";
/// Secret key of the CA certificate(s): the signing CA first.
const CA_CRT: &str = "ca.crt";
/// Secret key of the CA key.
const CA_KEY: &str = "ca.key";
/// Reads and writes before a write that keeps losing races is reported as an error.
const MAX_WRITE_ATTEMPTS: usize = 4;
/// What the self-managed certificates are about (`serve --self-managed-certs` and the
/// flags beside it, without the command line).
#[derive(Clone, Debug)]
pub struct SelfManagedOptions {
    /// Secret holding the CA and serving certificate.
    pub secret: String,
    /// MutatingWebhookConfiguration whose webhooks get the caBundle.
    pub webhook_config: String,
    /// Service in front of the webhook (the certificate's DNS names).
    pub service: String,
    /// Namespace of the Secret and Service; the pod's own namespace when `None`.
    pub namespace: Option<String>,
    /// Cluster DNS domain.
    pub cluster_domain: String,
    /// Renew the certificate when it expires within this window.
    pub renew_before: Duration,
    /// How often the Secret and caBundle are checked.
    pub check_interval: Duration,
    /// Also keep each webhook's matchConditions in step with the loaded configuration.
    pub sync_match_conditions: bool,
}

/// Keeps the Secret, the caBundle and the served certificate in step; one per process.
pub struct Reconciler {
    secrets: Api<Secret>,
    webhooks: Api<MutatingWebhookConfiguration>,
    secret_name: String,
    webhook_config: String,
    namespace: String,
    spec: ServingSpec,
    ca_validity: Duration,
    renew_before: Duration,
    check_interval: Duration,
    store: Arc<CertStore>,
    /// The CA of the certificate this replica serves, offered as the "old" CA should the
    /// Secret vanish and be recreated with a new CA.
    served_ca: Mutex<Option<CertificateDer<'static>>>,
    /// The matchConditions each webhook must carry, when they are kept in step.
    match_conditions: Option<Conditions>,
}

/// What happened to the Secret in one reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretAction {
    /// It was good and used as it is.
    Kept,
    /// It was missing and this replica created it.
    Created,
    /// It was renewed by this replica.
    Renewed {
        /// A new CA was made too (else the Secret's CA signed the new certificate).
        new_ca: bool,
    },
    /// Another replica wrote it first; its certificate was taken.
    TookOthers,
}

/// What one reconcile did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What happened to the Secret.
    pub secret: SecretAction,
    /// Webhooks whose caBundle was written (empty when all were right).
    pub ca_bundle_written: Vec<String>,
    /// Webhooks whose matchConditions were written (empty when all were right, or when
    /// they are not kept in step).
    pub match_conditions_written: Vec<String>,
    /// Whether a different certificate is served since this reconcile.
    pub serving_changed: bool,
    /// Whether every webhook's caBundle trusts the served certificate (what
    /// readiness reports).
    pub ca_bundle_ok: bool,
}

/// Why the self-managed certificates could not be reconciled.
#[derive(Debug, thiserror::Error)]
pub enum SelfManagedError {
    /// The Kubernetes API refused or failed a request.
    #[error("cannot {action} {object}: {}", api_answer(.source))]
    Api {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    /// A write kept losing optimistic-concurrency races.
    #[error("cannot write {object}: still conflicting after {attempts} attempts")]
    Contended { object: String, attempts: usize },
    /// A certificate could not be issued.
    #[error("cannot issue a certificate for {object}: {source}")]
    Issue {
        object: String,
        #[source]
        source: IssueError,
    },
    /// The Secret as the API returned it after our write is not usable.
    #[error("{object} as written is not usable: {reason}")]
    Unusable { object: String, reason: String },
    /// No `--namespace` and the service account namespace file cannot be read.
    #[error("no --namespace given and cannot read {path}: {reason}")]
    Namespace { path: PathBuf, reason: String },
}

// === entry points ===

/// Runs the self-managed certificates until the task is aborted: reconciles at once,
/// then every `check_interval`, retrying failures with backoff. Never returns.
pub async fn run(
    client: kube::Client,
    args: SelfManagedOptions,
    namespace: String,
    store: Arc<CertStore>,
    match_conditions: Option<Conditions>,
) {
    store.require_ca_bundle();
    let reconciler = Reconciler::new(client, &args, &namespace, store);
    let reconciler = match match_conditions {
        Some(conditions) => reconciler.with_match_conditions(conditions),
        None => reconciler,
    };
    // A zero interval would poll the apiserver in a tight loop.
    let interval = args.check_interval.max(Duration::from_secs(1));
    let mut backoff = Backoff::new(interval);
    loop {
        let wait = match reconciler.reconcile_once().await {
            Ok(outcome) => {
                backoff.reset();
                outcome.log(&reconciler);
                interval
            }
            Err(error) => {
                let wait = backoff.next_delay();
                tracing::warn!(
                    error = %error,
                    failures = backoff.failures,
                    retry_in_ms = wait.as_millis() as u64,
                    "self-managed certificates: reconcile failed, will retry"
                );
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// The namespace of the Secret and Service: `flag`, else the pod's own namespace from
/// the service account mount.
pub(crate) fn resolve_namespace(flag: Option<&str>) -> Result<String, SelfManagedError> {
    resolve_namespace_from(flag, Path::new(SERVICE_ACCOUNT_NAMESPACE))
}

/// [`resolve_namespace`] reading the namespace file at `path`.
pub fn resolve_namespace_from(flag: Option<&str>, path: &Path) -> Result<String, SelfManagedError> {
    if let Some(ns) = flag.map(str::trim).filter(|ns| !ns.is_empty()) {
        return Ok(ns.to_owned());
    }
    let err = |reason: String| SelfManagedError::Namespace {
        path: path.to_owned(),
        reason,
    };
    let ns = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let ns = ns.trim();
    if ns.is_empty() {
        return Err(err("the file is empty".into()));
    }
    Ok(ns.to_owned())
}

// === impl Reconciler ===

impl Reconciler {
    /// A reconciler for the Secret `args.secret` in `namespace` and the webhook
    /// configuration `args.webhook_config`. The serving certificate lasts a year (or
    /// three times `renew_before`, if that is longer, so it is not renewed right after
    /// it is issued); a new CA lasts ten times as long.
    pub fn new(
        client: kube::Client,
        args: &SelfManagedOptions,
        namespace: &str,
        store: Arc<CertStore>,
    ) -> Self {
        let validity = DEFAULT_SERVING_VALIDITY.max(args.renew_before.saturating_mul(3));
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            webhooks: Api::all(client),
            secret_name: args.secret.clone(),
            webhook_config: args.webhook_config.clone(),
            namespace: namespace.to_owned(),
            spec: ServingSpec::for_service(
                &args.service,
                namespace,
                &args.cluster_domain,
                validity,
            ),
            ca_validity: validity.saturating_mul(10),
            renew_before: args.renew_before,
            check_interval: args.check_interval,
            store,
            served_ca: Mutex::new(None),
            match_conditions: None,
        }
    }

    /// Also keeps each webhook's `matchConditions` entry as `conditions` says.
    pub fn with_match_conditions(mut self, conditions: Conditions) -> Self {
        self.match_conditions = Some(conditions);
        self
    }

    /// One pass: make the Secret good, make the caBundle match it, serve its
    /// certificate, update readiness. See the module documentation.
    pub async fn reconcile_once(&self) -> Result<Outcome, SelfManagedError> {
        let (material, action) = self.ensure_secret().await?;
        let bundle = self.ensure_ca_bundle(&material).await;
        let trusted = bundle.as_ref().map(|(_, ok)| *ok).unwrap_or(false);
        let serving_changed = self.serve(&material, trusted);
        let (written, trusted) = bundle?;
        let ok = trusted && self.serves(&material);
        self.store.set_ca_bundle_ok(ok);
        Ok(Outcome {
            secret: action,
            ca_bundle_written: written.ca_bundle,
            match_conditions_written: written.match_conditions,
            serving_changed,
            ca_bundle_ok: ok,
        })
    }

    fn secret_object(&self) -> String {
        format!("secret {}/{}", self.namespace, self.secret_name)
    }

    fn webhook_object(&self) -> String {
        format!("mutatingwebhookconfiguration {}", self.webhook_config)
    }

    // --- serving ---

    /// Serves the Secret's certificate when the caBundle trusts it (or it comes from the
    /// CA of the certificate served now, which the apiserver already trusts), nothing is
    /// served yet, or the served one is about to expire. Returns whether it changed.
    fn serve(&self, material: &Material, trusted: bool) -> bool {
        if self.serves(material) {
            return false;
        }
        let same_ca = self
            .served_ca
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|ca| *ca == material.signing_ca);
        let trusted = trusted || same_ca;
        let current = self.store.current();
        let expiring = current
            .as_ref()
            .is_none_or(|c| c.remaining() <= self.check_interval.saturating_mul(2));
        if !trusted && !expiring {
            tracing::info!(secret = %self.secret_object(), "new certificate waits until the caBundle trusts its CA");
            return false;
        }
        let serving = material.serving.clone();
        tracing::info!(
            secret = %self.secret_object(),
            not_after = %fmt_time(serving.not_after()),
            "serving a new certificate"
        );
        self.store.set(serving);
        *self.served_ca.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(material.signing_ca.clone());
        if !trusted {
            self.store.set_ca_bundle_ok(false);
        }
        true
    }

    /// Whether the store serves the Secret's certificate.
    fn serves(&self, material: &Material) -> bool {
        self.store
            .current()
            .is_some_and(|c| c.leaf() == material.serving.leaf())
    }
}

// === impl Outcome ===

impl Outcome {
    fn log(&self, reconciler: &Reconciler) {
        let changed = self.secret != SecretAction::Kept
            || !self.ca_bundle_written.is_empty()
            || !self.match_conditions_written.is_empty()
            || self.serving_changed;
        if changed {
            tracing::info!(
                secret = %reconciler.secret_object(),
                action = ?self.secret,
                ca_bundle_written = ?self.ca_bundle_written,
                match_conditions_written = ?self.match_conditions_written,
                serving_changed = self.serving_changed,
                ca_bundle_ok = self.ca_bundle_ok,
                "self-managed certificates reconciled"
            );
        } else {
            tracing::debug!(secret = %reconciler.secret_object(), "self-managed certificates up to date");
        }
    }
}

// === helpers ===

fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    }
}

/// The API's answer in a message: `403 Forbidden: <message>` for an API status.
fn api_answer(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let reason = if status.reason.is_empty() {
                http::StatusCode::from_u16(status.code)
                    .ok()
                    .and_then(|c| c.canonical_reason())
                    .unwrap_or("")
            } else {
                status.reason.as_str()
            };
            let mut answer = format!("{} {reason}", status.code).trim_end().to_owned();
            if !status.message.is_empty() {
                answer.push_str(": ");
                answer.push_str(&status.message);
            }
            answer
        }
        other => other.to_string(),
    }
}
