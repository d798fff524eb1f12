//! The Secret: read it, judge whether its certificate can be served as it is, and
//! otherwise issue a new one and write it with optimistic concurrency.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rustls::pki_types::CertificateDer;

use super::{
    CA_CRT, CA_KEY, MAX_WRITE_ATTEMPTS, Reconciler, SecretAction, SelfManagedError, TLS_CRT,
    TLS_KEY, post_params,
};
use crate::certs::issue::{self, CertInfo, PemPair};
use crate::certs::{ServingCert, fmt_time};

/// A usable certificate read from the Secret.
pub(super) struct Material {
    pub(super) serving: ServingCert,
    /// The CA that signed the serving certificate.
    pub(super) signing_ca: CertificateDer<'static>,
    /// `ca.crt`, without expired certificates: what the caBundle must be.
    pub(super) bundle: Vec<CertificateDer<'static>>,
}

/// Why the Secret cannot be used, and what a renewal can start from.
struct Renewal {
    reason: String,
    /// The CA in the Secret, when it can go on issuing.
    reusable_ca: Option<PemPair>,
    /// The CA to keep trusting during a CA change.
    previous_ca: Option<CertificateDer<'static>>,
}

// === impl Reconciler: the Secret ===

impl Reconciler {
    /// Reads the Secret and, when it is not usable, writes a new certificate into it,
    /// taking another replica's when it wins the race.
    pub(super) async fn ensure_secret(&self) -> Result<(Material, SecretAction), SelfManagedError> {
        let object = self.secret_object();
        let mut lost_race = false;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let current = self
                .secrets
                .get_opt(&self.secret_name)
                .await
                .map_err(|source| SelfManagedError::Api {
                    action: "read",
                    object: object.clone(),
                    source,
                })?;
            let renewal = match &current {
                None => Renewal {
                    reason: "the secret does not exist".into(),
                    reusable_ca: None,
                    previous_ca: None,
                },
                Some(secret) => match self.assess(secret) {
                    Ok(material) => {
                        let action = if lost_race {
                            SecretAction::TookOthers
                        } else {
                            SecretAction::Kept
                        };
                        return Ok((material, action));
                    }
                    Err(renewal) => renewal,
                },
            };
            let new_ca = renewal.reusable_ca.is_none();
            tracing::info!(
                secret = %object,
                reason = %renewal.reason,
                new_ca,
                "issuing a serving certificate"
            );
            let data = self.issue(renewal)?;
            let written = match current {
                None => {
                    let secret = Secret {
                        metadata: ObjectMeta {
                            name: Some(self.secret_name.clone()),
                            namespace: Some(self.namespace.clone()),
                            labels: Some(BTreeMap::from([(
                                "app.kubernetes.io/managed-by".to_owned(),
                                "tracepatch".to_owned(),
                            )])),
                            ..ObjectMeta::default()
                        },
                        type_: Some("kubernetes.io/tls".into()),
                        data: Some(data),
                        ..Secret::default()
                    };
                    match self.secrets.create(&post_params(), &secret).await {
                        Ok(created) => (created, SecretAction::Created),
                        Err(kube::Error::Api(status))
                            if status.code == 409 || status.is_already_exists() =>
                        {
                            tracing::info!(secret = %object, "another replica created the secret first; using its certificate");
                            lost_race = true;
                            continue;
                        }
                        Err(source) => {
                            return Err(SelfManagedError::Api {
                                action: "create",
                                object,
                                source,
                            });
                        }
                    }
                }
                Some(mut secret) => {
                    // Keep whatever else the Secret holds; `type` is immutable, keep it.
                    secret.data.get_or_insert_with(BTreeMap::new).extend(data);
                    secret.string_data = None;
                    match self
                        .secrets
                        .replace(&self.secret_name, &post_params(), &secret)
                        .await
                    {
                        Ok(updated) => (updated, SecretAction::Renewed { new_ca }),
                        Err(kube::Error::Api(status)) if status.is_conflict() => {
                            tracing::info!(secret = %object, "another replica updated the secret first; using its certificate");
                            lost_race = true;
                            continue;
                        }
                        Err(source) => {
                            return Err(SelfManagedError::Api {
                                action: "update",
                                object,
                                source,
                            });
                        }
                    }
                }
            };
            let (secret, action) = written;
            return self
                .assess(&secret)
                .map(|material| (material, action))
                .map_err(|renewal| SelfManagedError::Unusable {
                    object,
                    reason: renewal.reason,
                });
        }
        Err(SelfManagedError::Contended {
            object,
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }

    /// The Secret's certificate when it can be served as it is, else why not and what a
    /// renewal can reuse.
    fn assess(&self, secret: &Secret) -> Result<Material, Renewal> {
        let empty = BTreeMap::new();
        let data = secret.data.as_ref().unwrap_or(&empty);
        let get = |key: &str| data.get(key).map(|b| b.0.as_slice()).unwrap_or_default();
        let what = self.secret_object();

        let ca_ders =
            issue::parse_certs(get(CA_CRT), &format!("{what} {CA_CRT}")).unwrap_or_default();
        // Each CA certificate parsed once; `None` for one that is PEM but not X.509.
        let ca_certs: Vec<(CertificateDer<'static>, Option<CertInfo>)> = ca_ders
            .into_iter()
            .map(|der| {
                let info = CertInfo::parse(&der, CA_CRT).ok();
                (der, info)
            })
            .collect();
        let ca_key = std::str::from_utf8(get(CA_KEY)).unwrap_or_default();
        let min_ca_left = self.renew_before.saturating_mul(2);
        let reusable_ca = ca_certs.iter().find_map(|(der, info)| {
            info.as_ref()?
                .can_issue(ca_key, min_ca_left)
                .then(|| PemPair {
                    cert: issue::encode_pem(std::slice::from_ref(der)),
                    key: ca_key.to_owned(),
                })
        });
        let previous_ca = ca_certs
            .iter()
            .find(|(_, info)| info.as_ref().is_some_and(|i| i.is_ca && i.unexpired()))
            .map(|(der, _)| der.clone());
        let renew = |reason: String| Renewal {
            reason,
            reusable_ca: reusable_ca.clone(),
            previous_ca: previous_ca.clone(),
        };

        if ca_certs.is_empty() {
            return Err(renew(format!(
                "{CA_CRT} is missing or not a PEM certificate"
            )));
        }
        let serving = ServingCert::from_pem(get(TLS_CRT), get(TLS_KEY), &what)
            .map_err(|e| renew(e.to_string()))?;
        if serving.remaining() <= self.renew_before {
            return Err(renew(format!(
                "the certificate expires at {}, within the renewal window",
                fmt_time(serving.not_after())
            )));
        }
        let leaf = serving.leaf().clone();
        let names = self.spec.names();
        let primary = names.first().map(String::as_str).unwrap_or("localhost");
        let signing_ca = ca_certs
            .iter()
            .map(|(der, _)| der)
            .find(|ca| issue::verify_server_cert(std::slice::from_ref(*ca), &leaf, primary).is_ok())
            .cloned()
            .ok_or_else(|| {
                renew(format!(
                    "{TLS_CRT} is not valid for {primary} under a CA of {CA_CRT}"
                ))
            })?;
        for name in &names {
            issue::verify_server_cert(std::slice::from_ref(&signing_ca), &leaf, name)
                .map_err(|e| renew(e.to_string()))?;
        }
        let bundle = ca_certs
            .into_iter()
            .filter(|(_, info)| info.as_ref().is_some_and(CertInfo::unexpired))
            .map(|(der, _)| der)
            .collect();
        Ok(Material {
            serving,
            signing_ca,
            bundle,
        })
    }

    /// The Secret data of a new serving certificate.
    fn issue(&self, renewal: Renewal) -> Result<BTreeMap<String, ByteString>, SelfManagedError> {
        let issue_err = |source| SelfManagedError::Issue {
            object: self.secret_object(),
            source,
        };
        let (ca, new_ca) = match renewal.reusable_ca {
            Some(ca) => (ca, false),
            None => {
                let name = issue::ca_common_name("tracepatch CA");
                (
                    issue::generate_ca(&name, self.ca_validity).map_err(issue_err)?,
                    true,
                )
            }
        };
        let serving = issue::issue_serving(&ca, &self.spec).map_err(issue_err)?;
        let ca_der = issue::first_cert(ca.cert.as_bytes(), CA_CRT).map_err(issue_err)?;
        let mut bundle = vec![ca_der.clone()];
        if new_ca {
            let served_ca = self
                .served_ca
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(previous) = renewal.previous_ca.or(served_ca).filter(|der| {
                *der != ca_der && CertInfo::parse(der, CA_CRT).is_ok_and(|info| info.unexpired())
            }) {
                bundle.push(previous);
            }
        }
        let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
        Ok(BTreeMap::from([
            (TLS_CRT.to_owned(), bytes(&serving.cert)),
            (TLS_KEY.to_owned(), bytes(&serving.key)),
            (CA_CRT.to_owned(), bytes(&issue::encode_pem(&bundle))),
            (CA_KEY.to_owned(), bytes(&ca.key)),
        ]))
    }
}
