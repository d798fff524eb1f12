//! Issuing certificates with rcgen: a CA, and serving certificates signed by it.
//!
//! Pure functions (apart from the clock and the key generator): PEM in, PEM out. The
//! CLI, the development certificate and the in-cluster Secret all issue through here,
//! so a certificate looks the same wherever it was made: ECDSA P-256 keys (PKCS#8 PEM),
//! a CA constrained to sign end-entity certificates only, a serving certificate with
//! the `serverAuth` extended key usage and its names as subject alternative names.
//!
//! It also holds the checks the callers share: whether a CA can still be used to issue,
//! and a real chain verification (rustls' webpki verifier, the same code a TLS client
//! runs) of a serving certificate for a given name.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct PemPair {
    /// The certificate (one `CERTIFICATE` block).
    pub cert: String,
    /// The private key (PKCS#8 `PRIVATE KEY` block).
    pub key: String,
}

/// A freshly issued CA and a serving certificate signed by it.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The CA certificate and key.
    pub ca: PemPair,
    /// The serving certificate and key.
    pub serving: PemPair,
}

/// What a serving certificate is for: its names and how long it lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingSpec {
    /// Subject common name (informational; clients check the SANs).
    pub common_name: String,
    /// DNS subject alternative names, in order.
    pub dns_names: Vec<String>,
    /// IP address subject alternative names, in order.
    pub ips: Vec<IpAddr>,
    /// Validity from now (capped at the CA's own expiry).
    pub validity: Duration,
}

/// Why a certificate could not be issued or checked.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// A name cannot go into a certificate (not an IA5 string, or empty).
    #[error("invalid certificate name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// The validity period cannot be represented in a certificate (past year 9999).
    #[error("validity of {days} days is too long for a certificate")]
    Validity { days: u64 },
    /// rcgen refused to generate a key or sign a certificate.
    #[error("cannot {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// The CA certificate or key given for issuing is not usable.
    #[error("unusable CA: {reason}")]
    BadCa { reason: String },
    /// A PEM certificate (or bundle) could not be parsed.
    #[error("{what}: not a PEM certificate ({reason})")]
    BadPem { what: String, reason: String },
    /// The serving certificate does not verify against the CA for a name.
    #[error("certificate is not valid for {name} under the given CA: {reason}")]
    NotTrusted { name: String, reason: String },
}

/// Validity of a serving certificate when nobody says otherwise.
pub(crate) const DEFAULT_SERVING_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

/// How far back `notBefore` is set, so a peer whose clock is a little behind ours
/// does not reject a certificate issued a second ago.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

// === impl PemPair ===

impl std::fmt::Debug for PemPair {
    // Never print a private key, not even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemPair")
            .field("cert", &self.cert)
            .field("key", &"<redacted>")
            .finish()
    }
}

// === impl ServingSpec ===

impl ServingSpec {
    /// The names a Service is reached by inside the cluster: `NAME`, `NAME.NS`,
    /// `NAME.NS.svc`, `NAME.NS.svc.<cluster-domain>`; common name `NAME.NS.svc`, which
    /// is the name the apiserver dials for a webhook `service` reference.
    pub fn for_service(
        service: &str,
        namespace: &str,
        cluster_domain: &str,
        validity: Duration,
    ) -> Self {
        let dns_names = service_dns_names(service, namespace, cluster_domain);
        Self {
            common_name: format!("{service}.{namespace}.svc"),
            dns_names,
            ips: Vec::new(),
            validity,
        }
    }

    /// A certificate for a laptop: `localhost`, `127.0.0.1` and `::1`.
    pub fn localhost(validity: Duration) -> Self {
        Self {
            common_name: "localhost".to_owned(),
            dns_names: vec!["localhost".to_owned()],
            ips: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
            ],
            validity,
        }
    }

    /// Every name of the certificate as a client would dial it (DNS names, then IPs).
    pub fn names(&self) -> Vec<String> {
        self.dns_names
            .iter()
            .cloned()
            .chain(self.ips.iter().map(IpAddr::to_string))
            .collect()
    }
}

// === issuing ===

/// The in-cluster DNS names of a Service, shortest first.
pub(crate) fn service_dns_names(
    service: &str,
    namespace: &str,
    cluster_domain: &str,
) -> Vec<String> {
    let domain = cluster_domain.trim_matches('.');
    let mut names = vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
    ];
    if !domain.is_empty() {
        names.push(format!("{service}.{namespace}.svc.{domain}"));
    }
    names
}

/// A new self-signed CA: ECDSA P-256, `CA:TRUE` with path length 0 (it signs serving
/// certificates, never other CAs), key usages keyCertSign, cRLSign and
/// digitalSignature, valid for `validity` from now.
pub fn generate_ca(common_name: &str, validity: Duration) -> Result<PemPair, IssueError> {
    let key = KeyPair::generate().map_err(|source| IssueError::Generate {
        what: "generate the CA key",
        source,
    })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = window(validity)?;
    let cert = params
        .self_signed(&key)
        .map_err(|source| IssueError::Generate {
            what: "self-sign the CA certificate",
            source,
        })?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A new serving certificate (fresh ECDSA P-256 key) signed by `ca`: the SANs of
/// `spec`, key usage digitalSignature, extended key usage serverAuth, `CA:FALSE`.
/// It never outlives the CA: `notAfter` is capped at the CA's `notAfter`. This is
/// also how a certificate is renewed without changing the CA.
pub fn issue_serving(ca: &PemPair, spec: &ServingSpec) -> Result<PemPair, IssueError> {
    let ca_key = KeyPair::from_pem(&ca.key).map_err(|e| IssueError::BadCa {
        reason: format!("cannot parse the CA key: {e}"),
    })?;
    let ca_der = first_cert(ca.cert.as_bytes(), "CA certificate")?;
    let ca_info = CertInfo::parse(&ca_der, "CA certificate")?;
    if !ca_info.is_ca {
        return Err(IssueError::BadCa {
            reason: "the certificate is not a CA (basicConstraints CA:FALSE or absent)".into(),
        });
    }
    if ca_info.spki != ca_key.subject_public_key_info() {
        return Err(IssueError::BadCa {
            reason: "the CA key does not belong to the CA certificate".into(),
        });
    }
    let issuer =
        Issuer::from_ca_cert_der(&ca_der, ca_key).map_err(|source| IssueError::Generate {
            what: "read the CA certificate for signing",
            source,
        })?;

    let key = KeyPair::generate().map_err(|source| IssueError::Generate {
        what: "generate the serving key",
        source,
    })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&spec.common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.subject_alt_names = sans(spec)?;
    let (not_before, not_after) = window(spec.validity)?;
    params.not_before = not_before.max(time::OffsetDateTime::from(ca_info.not_before));
    params.not_after = not_after.min(time::OffsetDateTime::from(ca_info.not_after));
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| IssueError::Generate {
            what: "sign the serving certificate",
            source,
        })?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A new CA (valid `ca_validity`, named `ca_common_name`) and a serving certificate
/// for `spec` signed by it.
pub fn generate(
    ca_common_name: &str,
    ca_validity: Duration,
    spec: &ServingSpec,
) -> Result<Issued, IssueError> {
    let ca = generate_ca(ca_common_name, ca_validity)?;
    let serving = issue_serving(&ca, spec)?;
    Ok(Issued { ca, serving })
}

/// A CA common name that tells CAs apart in a bundle: `PREFIX <UTC time of issue>`.
pub(crate) fn ca_common_name(prefix: &str) -> String {
    format!("{prefix} {}", super::fmt_time(SystemTime::now()))
}

// === checks ===

/// What callers need to know about a certificate.
#[derive(Clone, Debug)]
pub(crate) struct CertInfo {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// The DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
}

// === impl CertInfo ===

impl CertInfo {
    /// Parses a DER certificate, once; `what` names it in errors.
    pub fn parse(der: &CertificateDer<'_>, what: &str) -> Result<Self, IssueError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| IssueError::BadPem {
                what: what.to_owned(),
                reason: e.to_string(),
            })?;
        let validity = cert.validity();
        let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        Ok(Self {
            not_before: system_time(&validity.not_before),
            not_after: system_time(&validity.not_after),
            is_ca,
            spki: cert.tbs_certificate.subject_pki.raw.to_vec(),
        })
    }

    /// Time left before expiry (zero when expired).
    pub fn remaining(&self) -> Duration {
        super::remaining_until(self.not_after)
    }

    /// Not expired yet.
    pub fn unexpired(&self) -> bool {
        self.remaining() > Duration::ZERO
    }

    /// Whether `key_pem` is the private key of this certificate.
    pub fn is_key(&self, key_pem: &str) -> bool {
        KeyPair::from_pem(key_pem).is_ok_and(|key| self.spki == key.subject_public_key_info())
    }

    /// Whether this CA, with `key_pem`, can go on issuing certificates that last
    /// `min_remaining`: a CA, its key, and valid for longer than that.
    pub fn can_issue(&self, key_pem: &str, min_remaining: Duration) -> bool {
        self.is_ca && self.remaining() > min_remaining && self.is_key(key_pem)
    }
}

/// Whether `key_pem` is the private key of the certificate `cert`.
#[cfg(test)]
fn key_matches(cert: &CertificateDer<'_>, key_pem: &str) -> bool {
    CertInfo::parse(cert, "certificate").is_ok_and(|info| info.is_key(key_pem))
}

/// Checks with rustls' webpki verifier, at the current time, that `leaf` chains to one
/// of `roots` and is valid for the server name `name` (a DNS name or an IP address),
/// as a TLS client dialling `name` would.
pub fn verify_server_cert(
    roots: &[CertificateDer<'static>],
    leaf: &CertificateDer<'_>,
    name: &str,
) -> Result<(), IssueError> {
    let not_trusted = |reason: String| IssueError::NotTrusted {
        name: name.to_owned(),
        reason,
    };
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(root.clone())
            .map_err(|e| not_trusted(format!("unusable CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
        .build()
        .map_err(|e| not_trusted(e.to_string()))?;
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|e| not_trusted(format!("not a server name: {e}")))?;
    verifier
        .verify_server_cert(leaf, &[], &server_name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| not_trusted(e.to_string()))
}

// === PEM helpers ===

/// Every certificate of a PEM bundle, in order; `what` names the bundle in errors.
/// A bundle without any certificate is an error.
pub fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, IssueError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| IssueError::BadPem {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(IssueError::BadPem {
            what: what.to_owned(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The first certificate of a PEM bundle.
pub(crate) fn first_cert(pem: &[u8], what: &str) -> Result<CertificateDer<'static>, IssueError> {
    let mut certs = parse_certs(pem, what)?;
    Ok(certs.swap_remove(0))
}

/// PEM text of DER certificates, one block after another, 64-column base64 (RFC 7468)
/// and `\n` line ends: the `pem` crate's encoder, which rcgen uses for every
/// certificate we issue, so all the PEM we write has one form.
pub fn encode_pem(certs: &[CertificateDer<'_>]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    certs
        .iter()
        .map(|c| pem::encode_config(&pem::Pem::new("CERTIFICATE", c.as_ref()), config))
        .collect()
}

// === helpers ===

fn system_time(t: &x509_parser::time::ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn sans(spec: &ServingSpec) -> Result<Vec<SanType>, IssueError> {
    let mut sans = Vec::with_capacity(spec.dns_names.len() + spec.ips.len());
    for name in &spec.dns_names {
        if name.is_empty() {
            return Err(IssueError::InvalidName {
                name: name.clone(),
                reason: "empty".into(),
            });
        }
        let ia5 = name
            .as_str()
            .try_into()
            .map_err(|e: rcgen::Error| IssueError::InvalidName {
                name: name.clone(),
                reason: e.to_string(),
            })?;
        sans.push(SanType::DnsName(ia5));
    }
    sans.extend(spec.ips.iter().copied().map(SanType::IpAddress));
    Ok(sans)
}

/// `notBefore` (backdated) and `notAfter` of a certificate valid `validity` from now.
fn window(validity: Duration) -> Result<(time::OffsetDateTime, time::OffsetDateTime), IssueError> {
    let now = time::OffsetDateTime::now_utc();
    let not_after = time::Duration::try_from(validity)
        .ok()
        .and_then(|d| now.checked_add(d))
        .filter(|t| t.year() <= 9999)
        .ok_or(IssueError::Validity {
            days: validity.as_secs() / 86_400,
        })?;
    let backdate = time::Duration::try_from(BACKDATE).unwrap_or(time::Duration::ZERO);
    Ok((now - backdate, not_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn service_spec() -> ServingSpec {
        let mut spec =
            ServingSpec::for_service("tracepatch", "tracepatch", "cluster.local", 30 * DAY);
        spec.dns_names.push("webhook.example.com".into());
        spec.ips.push("10.0.0.7".parse().unwrap());
        spec
    }

    fn ca_roots(ca: &PemPair) -> Vec<CertificateDer<'static>> {
        parse_certs(ca.cert.as_bytes(), "ca").unwrap()
    }

    #[test]
    fn service_names_are_the_four_in_cluster_forms() {
        assert_eq!(
            service_dns_names("tp", "ns", "cluster.local."),
            ["tp", "tp.ns", "tp.ns.svc", "tp.ns.svc.cluster.local"]
        );
    }

    #[test]
    fn serving_cert_verifies_for_every_san_and_no_other_name() {
        let spec = service_spec();
        let issued = generate("test CA", 300 * DAY, &spec).unwrap();
        let leaf = first_cert(issued.serving.cert.as_bytes(), "tls").unwrap();
        let roots = ca_roots(&issued.ca);
        let names = spec.names();
        assert_eq!(names.len(), 6);
        for name in &names {
            verify_server_cert(&roots, &leaf, name)
                .unwrap_or_else(|e| panic!("{name} should verify: {e}"));
        }
        let err = verify_server_cert(&roots, &leaf, "other.tracepatch.svc").unwrap_err();
        assert!(
            matches!(err, IssueError::NotTrusted { ref name, .. } if name == "other.tracepatch.svc")
        );
    }

    #[test]
    fn serving_cert_does_not_verify_under_another_ca() {
        let spec = service_spec();
        let issued = generate("test CA", 300 * DAY, &spec).unwrap();
        let other = generate_ca("other CA", 300 * DAY).unwrap();
        let leaf = first_cert(issued.serving.cert.as_bytes(), "tls").unwrap();
        assert!(verify_server_cert(&ca_roots(&other), &leaf, "tracepatch.tracepatch.svc").is_err());
    }

    #[test]
    fn ca_is_a_ca_and_serving_cert_is_not_one() {
        let issued = generate("test CA", 300 * DAY, &service_spec()).unwrap();
        let ca =
            CertInfo::parse(&first_cert(issued.ca.cert.as_bytes(), "ca").unwrap(), "ca").unwrap();
        let leaf = first_cert(issued.serving.cert.as_bytes(), "tls").unwrap();
        assert!(ca.is_ca);
        assert!(!CertInfo::parse(&leaf, "tls").unwrap().is_ca);
        // The leaf cannot act as a CA for another certificate.
        let fake_ca = PemPair {
            cert: issued.serving.cert.clone(),
            key: issued.serving.key.clone(),
        };
        assert!(matches!(
            issue_serving(&fake_ca, &service_spec()),
            Err(IssueError::BadCa { .. })
        ));
    }

    #[test]
    fn validity_is_the_requested_length_and_never_beyond_the_ca() {
        let spec = service_spec();
        let ca = generate_ca("short CA", 10 * DAY).unwrap();
        let serving = issue_serving(&ca, &spec).unwrap();
        let ca_info =
            CertInfo::parse(&first_cert(ca.cert.as_bytes(), "ca").unwrap(), "ca").unwrap();
        let leaf_info =
            CertInfo::parse(&first_cert(serving.cert.as_bytes(), "tls").unwrap(), "tls").unwrap();
        // Asked for 30 days, capped at the CA's 10.
        assert_eq!(leaf_info.not_after, ca_info.not_after);

        let long_ca = generate_ca("long CA", 300 * DAY).unwrap();
        let serving = issue_serving(&long_ca, &spec).unwrap();
        let leaf_info =
            CertInfo::parse(&first_cert(serving.cert.as_bytes(), "tls").unwrap(), "tls").unwrap();
        let remaining = leaf_info.remaining();
        assert!(
            remaining > 30 * DAY - Duration::from_secs(60) && remaining <= 30 * DAY,
            "{remaining:?}"
        );
    }

    #[test]
    fn renewal_from_the_same_ca_gives_a_new_key_that_still_verifies() {
        let spec = service_spec();
        let issued = generate("test CA", 300 * DAY, &spec).unwrap();
        let renewed = issue_serving(&issued.ca, &spec).unwrap();
        assert_ne!(renewed.key, issued.serving.key);
        assert_ne!(renewed.cert, issued.serving.cert);
        let leaf = first_cert(renewed.cert.as_bytes(), "tls").unwrap();
        verify_server_cert(&ca_roots(&issued.ca), &leaf, "tracepatch.tracepatch.svc").unwrap();
        assert!(key_matches(&leaf, &renewed.key));
        assert!(!key_matches(&leaf, &issued.serving.key));
    }

    #[test]
    fn a_ca_key_of_another_ca_is_refused() {
        let a = generate_ca("a", 300 * DAY).unwrap();
        let b = generate_ca("b", 300 * DAY).unwrap();
        let mixed = PemPair {
            cert: a.cert,
            key: b.key,
        };
        let err = issue_serving(&mixed, &service_spec()).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn served_by_rustls_from_the_issued_pem() {
        let issued = generate("test CA", 300 * DAY, &ServingSpec::localhost(DAY)).unwrap();
        let served = super::super::ServingCert::from_pem(
            issued.serving.cert.as_bytes(),
            issued.serving.key.as_bytes(),
            "test",
        )
        .unwrap();
        assert!(served.remaining() > DAY - Duration::from_secs(60));
    }

    #[test]
    fn pem_encoding_round_trips_a_bundle() {
        let a = generate_ca("a", DAY).unwrap();
        let b = generate_ca("b", DAY).unwrap();
        let ders = [
            first_cert(a.cert.as_bytes(), "a").unwrap(),
            first_cert(b.cert.as_bytes(), "b").unwrap(),
        ];
        let pem = encode_pem(&ders);
        assert_eq!(parse_certs(pem.as_bytes(), "bundle").unwrap(), ders);
        assert!(pem.lines().all(|l| l.len() <= 64));
    }

    #[test]
    fn debug_output_hides_the_private_key() {
        let ca = generate_ca("a", DAY).unwrap();
        let shown = format!("{ca:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }

    #[test]
    fn an_absurd_validity_is_an_error_not_a_panic() {
        let err = generate_ca("a", Duration::from_secs(u64::MAX)).unwrap_err();
        assert!(matches!(err, IssueError::Validity { .. }), "{err}");
        let err = generate_ca("a", 3_000_000 * DAY).unwrap_err();
        assert!(matches!(err, IssueError::Validity { .. }), "{err}");
    }

    #[test]
    fn a_name_that_is_not_ia5_is_refused() {
        let ca = generate_ca("a", DAY).unwrap();
        let mut spec = ServingSpec::localhost(DAY);
        spec.dns_names.push("bücher.example".into());
        assert!(matches!(
            issue_serving(&ca, &spec),
            Err(IssueError::InvalidName { .. })
        ));
    }
}
