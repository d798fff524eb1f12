//! The caBundle: every webhook of the configuration must carry the Secret's CA
//! bundle, compared as a set of certificates and written with a strategic merge patch
//! that carries the `resourceVersion` it read.

use base64::Engine as _;
use kube::api::{Patch, PatchParams};
use rustls::pki_types::CertificateDer;
use serde_json::json;

use super::secret::Material;
use super::{FIELD_MANAGER, MAX_WRITE_ATTEMPTS, Reconciler, SelfManagedError};
use crate::certs::issue;

// === impl Reconciler: the caBundle ===

impl Reconciler {
    /// Makes every webhook's caBundle the Secret's CA bundle. Returns the webhooks it
    /// wrote, and whether all of them now trust the Secret's signing CA.
    pub(super) async fn ensure_ca_bundle(
        &self,
        material: &Material,
    ) -> Result<(Vec<String>, bool), SelfManagedError> {
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
            let stale: Vec<String> = webhooks
                .iter()
                .filter(|w| {
                    let actual = w
                        .client_config
                        .ca_bundle
                        .as_ref()
                        .and_then(|b| issue::parse_certs(&b.0, "caBundle").ok())
                        .unwrap_or_default();
                    !same_set(&actual, &material.bundle)
                })
                .map(|w| w.name.clone())
                .collect();
            if stale.is_empty() {
                return Ok((Vec::new(), true));
            }
            let Some(resource_version) = config.metadata.resource_version else {
                return Err(SelfManagedError::Unusable {
                    object,
                    reason: "the API returned it without a resourceVersion".into(),
                });
            };
            let patch = json!({
                "metadata": { "resourceVersion": resource_version },
                "webhooks": stale.iter().map(|name| json!({
                    "name": name,
                    "clientConfig": { "caBundle": desired_b64 },
                })).collect::<Vec<_>>(),
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
                    tracing::info!(webhook_config = %object, webhooks = ?stale, "wrote the caBundle");
                    return Ok((stale, true));
                }
                Err(kube::Error::Api(status)) if status.is_conflict() => {
                    tracing::info!(webhook_config = %object, "the webhook configuration changed while writing the caBundle; reading it again");
                }
                Err(source) => {
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
}

// === helpers ===

fn same_set(a: &[CertificateDer<'_>], b: &[CertificateDer<'_>]) -> bool {
    a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}
