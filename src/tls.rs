//! The serving certificate: parsed and checked once, swapped atomically.
//!
//! A [`CertStore`] is the rustls certificate resolver of the admission listener. Whoever
//! owns the certificate (the file watcher, the self-managed Secret loop) calls
//! [`CertStore::set`]; every new TLS handshake picks up the current certificate, while
//! connections already open keep the one they negotiated. Nothing is restarted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A serving certificate chain and key, checked to belong together and to be valid now.
#[derive(Clone, Debug)]
pub struct ServingCert {
    key: Arc<CertifiedKey>,
    not_after: SystemTime,
    /// SHA-less identity of the leaf for logs and change detection: its DER bytes.
    leaf: CertificateDer<'static>,
}

/// Why a certificate or key was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The certificate PEM holds no certificate, or a malformed one.
    #[error("{what}: no valid PEM certificate ({reason})")]
    BadCert { what: String, reason: String },
    /// The key PEM holds no private key, or one rustls cannot use.
    #[error("{what}: no usable PEM private key ({reason})")]
    BadKey { what: String, reason: String },
    /// The key is not the certificate's key.
    #[error("{what}: the private key does not match the certificate")]
    Mismatch { what: String },
    /// The certificate is outside its validity period.
    #[error("{what}: certificate is not valid now (valid from {not_before} to {not_after})")]
    NotValidNow {
        what: String,
        not_before: String,
        not_after: String,
    },
}

/// The certificate resolver shared by the listener and whoever rotates the certificate.
#[derive(Debug, Default)]
pub struct CertStore {
    current: RwLock<Option<ServingCert>>,
}

// === impl ServingCert ===

impl ServingCert {
    /// Parses a PEM chain (leaf first) and PEM private key (PKCS#8, PKCS#1 or SEC1),
    /// refusing a key that does not match or a certificate not valid now. `what` names
    /// the source in errors (file names, or `secret ns/name`).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<Self, TlsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::BadCert {
                what: what.to_owned(),
                reason: e.to_string(),
            })?;
        let Some(leaf) = chain.first().cloned() else {
            return Err(TlsError::BadCert {
                what: what.to_owned(),
                reason: "no CERTIFICATE block".into(),
            });
        };
        let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
        let signing_key = any_supported_type(&key_der).map_err(|e| TlsError::BadKey {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(TlsError::Mismatch {
                    what: what.to_owned(),
                });
            }
            Err(e) => {
                return Err(TlsError::BadCert {
                    what: what.to_owned(),
                    reason: e.to_string(),
                });
            }
        }
        let (not_before, not_after) = validity(&leaf).map_err(|reason| TlsError::BadCert {
            what: what.to_owned(),
            reason,
        })?;
        let now = SystemTime::now();
        if now < not_before || now > not_after {
            return Err(TlsError::NotValidNow {
                what: what.to_owned(),
                not_before: fmt_time(not_before),
                not_after: fmt_time(not_after),
            });
        }
        Ok(Self {
            key: Arc::new(certified),
            not_after,
            leaf,
        })
    }

    /// Reads and parses a certificate file and a key file.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let what = format!("{} + {}", cert.display(), key.display());
        Self::from_pem(&read(cert)?, &read(key)?, &what)
    }

    /// When the leaf certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The leaf certificate, DER.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.leaf
    }

    /// Time left before expiry (zero when expired).
    pub fn remaining(&self) -> Duration {
        self.not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }
}

// === impl CertStore ===

impl CertStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Serves `cert` on every new handshake from now on.
    pub fn set(&self, cert: ServingCert) {
        // A poisoned lock only means a writer panicked mid-assignment of an Option,
        // which cannot leave it torn; keep serving.
        let mut slot = self.current.write().unwrap_or_else(|p| p.into_inner());
        *slot = Some(cert);
    }

    /// The certificate being served, if any.
    pub fn current(&self) -> Option<ServingCert> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// A rustls server configuration serving from this store: TLS 1.2 and 1.3 (the
    /// rustls defaults), ALPN `h2` then `http/1.1`, no client authentication.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions();
        // The ring provider always supports the safe defaults; should that ever change,
        // fall back to the process default rather than panic.
        let builder = match builder {
            Ok(b) => b,
            Err(_) => rustls::ServerConfig::builder(),
        };
        let mut config = builder
            .with_no_client_auth()
            .with_cert_resolver(self.clone() as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.key.clone())
    }
}

// === helpers ===

/// The validity period of a DER certificate.
pub fn validity(der: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let v = cert.validity();
    let to_system = |t: &x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    };
    Ok((to_system(&v.not_before), to_system(&v.not_after)))
}

/// RFC 3339 UTC rendering of a time, for messages.
pub fn fmt_time(t: SystemTime) -> String {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{secs}"))
}
