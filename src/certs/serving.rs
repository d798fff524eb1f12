//! The served certificate: parsed and checked once, swapped atomically.
//!
//! A [`CertStore`] is the rustls certificate resolver of the admission listener. Whoever
//! owns the certificate (the file watcher in [`super::reload`], the self-managed Secret
//! loop, the development certificate at start) calls [`CertStore::set`]; every new TLS
//! handshake picks up the current certificate, while connections already open keep the
//! one they negotiated. Nothing is restarted.
//!
//! The store also says whether the apiserver can verify what it serves: in self-managed
//! mode the webhook configuration's caBundle must trust it first, and `/readyz` waits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::fmt_time;
use super::issue::CertInfo;

/// A serving certificate chain and key, checked to belong together and to be valid now.
#[derive(Clone, Debug)]
pub struct ServingCert {
    key: Arc<CertifiedKey>,
    not_after: SystemTime,
    /// The leaf certificate, DER: what tells two certificates apart (a reload that
    /// finds the same certificate, the Secret loop asking whether it serves the
    /// Secret's).
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
    current: ArcSwapOption<ServingCert>,
    /// Self-managed mode: the caBundle must trust the served certificate.
    ca_bundle_required: AtomicBool,
    /// Self-managed mode: the caBundle trusts the served certificate.
    ca_bundle_ok: AtomicBool,
}

// === impl ServingCert ===

impl ServingCert {
    /// Parses a PEM chain (leaf first) and PEM private key (PKCS#8, PKCS#1 or SEC1),
    /// refusing a key that does not match or a certificate not valid now. `what` names
    /// the source in errors (file names, or `secret ns/name`).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<Self, TlsError> {
        let bad_cert = |reason: String| TlsError::BadCert {
            what: what.to_owned(),
            reason,
        };
        let bad_key = |reason: String| TlsError::BadKey {
            what: what.to_owned(),
            reason,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| bad_cert(e.to_string()))?;
        let Some(leaf) = chain.first().cloned() else {
            return Err(bad_cert("no CERTIFICATE block".into()));
        };
        let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad_key(e.to_string()))?;
        let signing_key = any_supported_type(&key_der).map_err(|e| bad_key(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(TlsError::Mismatch {
                    what: what.to_owned(),
                });
            }
            Err(e) => return Err(bad_cert(e.to_string())),
        }
        let info = CertInfo::parse(&leaf, what).map_err(|e| bad_cert(e.to_string()))?;
        let now = SystemTime::now();
        if now < info.not_before || now > info.not_after {
            return Err(TlsError::NotValidNow {
                what: what.to_owned(),
                not_before: fmt_time(info.not_before),
                not_after: fmt_time(info.not_after),
            });
        }
        Ok(Self {
            key: Arc::new(certified),
            not_after: info.not_after,
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
        super::remaining_until(self.not_after)
    }
}

// === impl CertStore ===

impl CertStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Serves `cert` on every new handshake from now on.
    pub fn set(&self, cert: ServingCert) {
        self.current.store(Some(Arc::new(cert)));
    }

    /// The certificate being served, if any.
    pub fn current(&self) -> Option<Arc<ServingCert>> {
        self.current.load_full()
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// Self-managed mode: the apiserver trusts what is served only once the webhook
    /// configuration's caBundle does; until [`CertStore::set_ca_bundle_ok`] says so,
    /// [`CertStore::is_trusted`] is false.
    pub fn require_ca_bundle(&self) {
        self.ca_bundle_required.store(true, Ordering::Release);
    }

    /// Self-managed mode: whether the webhook configuration trusts the served CA.
    pub fn set_ca_bundle_ok(&self, ok: bool) {
        self.ca_bundle_ok.store(ok, Ordering::Release);
    }

    /// Whether the apiserver can verify the served certificate, as far as we know: true
    /// unless self-managed mode is waiting for the caBundle.
    pub fn is_trusted(&self) -> bool {
        !self.ca_bundle_required.load(Ordering::Acquire)
            || self.ca_bundle_ok.load(Ordering::Acquire)
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
        self.current.load().as_ref().map(|c| c.key.clone())
    }
}
