//! The webhook configuration: every webhook must carry the Secret's CA bundle (and, when
//! they are kept in step, the matchConditions rendered from the loaded configuration),
//! compared as a set of certificates (and by condition name and expression) and written
//! with one strategic merge patch that carries the `resourceVersion` it read.

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhook;
use kube::api::{Patch, PatchParams};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};

use super::secret::Material;
use super::{FIELD_MANAGER, MAX_WRITE_ATTEMPTS, Reconciler, SelfManagedError};
use crate::certs::issue;
use crate::webhook_config::{CONDITION_NAME, Conditions};

/// The webhooks one pass wrote, by what it wrote.
#[derive(Debug, Default)]
pub(super) struct Written {
    pub(super) ca_bundle: Vec<String>,
    pub(super) match_conditions: Vec<String>,
}

// === impl Reconciler: the webhook configuration ===

impl Reconciler {
    /// Makes every webhook's caBundle the Secret's CA bundle, and its matchConditions
    /// the rendered ones when they are kept in step. Returns the webhooks it wrote, and
    /// whether all of them now trust the Secret's signing CA.
    pub(super) async fn ensure_ca_bundle(
        &self,
        material: &Material,
    ) -> Result<(Written, bool), SelfManagedError> {
        let object = self.webhook_object();
        let desired_pem = issue::encode_pem(&material.bundle);
        let desired_b64 = base64::engine::general_purpose::STANDARD.encode(desired_pem.as_bytes());
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let config = self
                .webhooks
                .get(&self.webhook_config)
                .await
                .map_err(|source| SelfManagedError::Api {
                    action: "read",
                    object: object.clone(),
                    source,
                })?;
            let webhooks = config.webhooks.unwrap_or_default();
            if webhooks.is_empty() {
                tracing::warn!(webhook_config = %object, "the webhook configuration has no webhooks; nothing to trust us");
            }
            let mut written = Written::default();
            let mut patches = Vec::new();
            // Whether every webhook, as read, trusts the CA of what this replica serves.
            let served = self
                .served_ca
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let mut serving_trusted = true;
            for w in &webhooks {
                let mut patch = json!({ "name": w.name });
                let actual = w
                    .client_config
                    .ca_bundle
                    .as_ref()
                    .and_then(|b| issue::parse_certs(&b.0, "caBundle").ok())
                    .unwrap_or_default();
                if served.as_ref().is_some_and(|ca| !actual.contains(ca)) {
                    serving_trusted = false;
                }
                if !same_set(&actual, &material.bundle) {
                    patch["clientConfig"] = json!({ "caBundle": desired_b64 });
                    written.ca_bundle.push(w.name.clone());
                }
                if let Some(expression) = self.stale_condition(w) {
                    // Strategic merge by condition name: ours is set, others stay.
                    patch["matchConditions"] =
                        json!([{ "name": CONDITION_NAME, "expression": expression }]);
                    written.match_conditions.push(w.name.clone());
                }
                if patch.as_object().is_some_and(|p| p.len() > 1) {
                    patches.push(patch);
                }
            }
            if patches.is_empty() {
                return Ok((written, true));
            }
            let Some(resource_version) = config.metadata.resource_version else {
                return Err(SelfManagedError::Unusable {
                    object,
                    reason: "the API returned it without a resourceVersion".into(),
                });
            };
            let patch = json!({
                "metadata": { "resourceVersion": resource_version },
                "webhooks": Value::Array(patches),
            });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            match self
                .webhooks
                .patch(&self.webhook_config, &params, &Patch::Strategic(patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        webhook_config = %object,
                        ca_bundle = ?written.ca_bundle,
                        match_conditions = ?written.match_conditions,
                        "wrote the webhook configuration"
                    );
                    return Ok((written, true));
                }
                Err(kube::Error::Api(status)) if status.is_conflict() => {
                    tracing::info!(webhook_config = %object, "the webhook configuration changed while writing it; reading it again");
                }
                Err(source) => {
                    // The read worked, so this is known, not an API hiccup: if the
                    // caBundle as read does not trust what we serve, the apiserver's
                    // calls fail TLS, and /readyz must say so.
                    if !serving_trusted {
                        self.store.set_ca_bundle_ok(false);
                    }
                    return Err(SelfManagedError::Api {
                        action: "patch",
                        object,
                        source,
                    });
                }
            }
        }
        Err(SelfManagedError::Contended {
            object,
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }

    /// The expression a webhook's condition must have, when it has another (or none)
    /// and conditions are kept in step; `None` for a webhook that is not tracepatch's.
    fn stale_condition<'c>(&'c self, w: &MutatingWebhook) -> Option<&'c str> {
        let desired = self
            .match_conditions
            .as_ref()
            .and_then(|c: &Conditions| c.for_webhook(&w.name))?;
        let actual = w
            .match_conditions
            .iter()
            .flatten()
            .find(|c| c.name == CONDITION_NAME)
            .map(|c| c.expression.as_str());
        (actual != Some(desired)).then_some(desired)
    }
}

// === helpers ===

fn same_set(a: &[CertificateDer<'_>], b: &[CertificateDer<'_>]) -> bool {
    a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}
