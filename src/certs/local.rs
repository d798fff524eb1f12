//! Certificates on the local disk: `tracepatch certs generate` and the development
//! certificate `serve` makes for itself when given none.
//!
//! Both write the same four files into a directory: `ca.crt`, `ca.key`, `tls.crt`,
//! `tls.key` (the names of a `kubernetes.io/tls` Secret's keys, so the directory can be
//! turned into one with `kubectl create secret generic --from-file`). Private keys are
//! written with mode 0600. A file is written to a temporary name and renamed into
//! place, so a certificate watcher never reads half a file.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;

use crate::certs::ServingCert;
use crate::certs::issue::{self, CertInfo, IssueError, Issued, PemPair, ServingSpec};

/// File name of the CA certificate.
pub const CA_CERT: &str = "ca.crt";
/// File name of the CA private key.
pub const CA_KEY: &str = "ca.key";
/// File name of the serving certificate.
pub const TLS_CERT: &str = "tls.crt";
/// File name of the serving private key.
pub const TLS_KEY: &str = "tls.key";

const DAY: Duration = Duration::from_secs(86_400);
/// The development serving certificate lasts a year...
const DEV_SERVING_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// ...and its CA ten, so a CA a developer chose to trust keeps working.
const DEV_CA_VALIDITY: Duration = Duration::from_secs(3650 * 86_400);
/// A development certificate with less than this left is replaced.
const DEV_MIN_REMAINING: Duration = DAY;
/// The names the development certificate must cover to be reused.
const DEV_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// The development certificate `serve` uses when given none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevCert {
    /// The development CA certificate, for a client's trust store (`curl --cacert`).
    pub ca_cert: PathBuf,
    /// The serving certificate.
    pub cert: PathBuf,
    /// The serving private key.
    pub key: PathBuf,
    /// True when the files already there were good and were kept.
    pub reused: bool,
}

/// Why certificate files could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The output directory could not be created.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is already there and overwriting was not asked for.
    #[error("{path} already exists (use --force to overwrite)")]
    Exists { path: PathBuf },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The certificates could not be issued.
    #[error("cannot issue certificates: {0}")]
    Issue(#[from] IssueError),
    /// A validity of zero days.
    #[error("--days must be at least 1")]
    ZeroDays,
}

/// What `tracepatch certs generate` makes (its flags, without the command line).
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Service name of the webhook.
    pub service: String,
    /// Namespace of the Service.
    pub namespace: String,
    /// Cluster DNS domain.
    pub cluster_domain: String,
    /// Output directory for ca.crt, ca.key, tls.crt, tls.key.
    pub out: PathBuf,
    /// Validity of the serving certificate in days (the CA gets ten times as long).
    pub days: u32,
    /// Extra DNS names for the serving certificate.
    pub dns: Vec<String>,
    /// Extra IP addresses for the serving certificate.
    pub ip: Vec<std::net::IpAddr>,
    /// Overwrite existing files.
    pub force: bool,
    /// Print the base64 caBundle for a MutatingWebhookConfiguration on stdout.
    pub print_ca_bundle: bool,
}

/// The four file paths in a directory.
#[derive(Clone, Debug)]
struct Paths {
    ca_cert: PathBuf,
    ca_key: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

// === impl Paths ===

impl Paths {
    fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join(CA_CERT),
            ca_key: dir.join(CA_KEY),
            cert: dir.join(TLS_CERT),
            key: dir.join(TLS_KEY),
        }
    }

    fn all(&self) -> [&Path; 4] {
        [&self.ca_cert, &self.ca_key, &self.cert, &self.key]
    }
}

// === certs generate ===

/// `tracepatch certs generate`: a new CA and a serving certificate for the Service
/// `--service` in `--namespace` (plus `--dns` and `--ip` names), written into `--out`.
/// Refuses to overwrite any of the four files without `--force`. Lists what it wrote on
/// standard error; with `--print-ca-bundle`, prints the base64 `caBundle` alone on
/// standard output, so `CA_BUNDLE=$(tracepatch certs generate ... --print-ca-bundle)`
/// works.
pub fn run_generate(args: &GenerateOptions) -> Result<(), CertError> {
    if args.days == 0 {
        return Err(CertError::ZeroDays);
    }
    let paths = Paths::in_dir(&args.out);
    if !args.force {
        refuse_existing(&paths)?;
    }
    let validity = DAY * args.days;
    let ca_validity = validity * 10;
    let mut spec = ServingSpec::for_service(
        &args.service,
        &args.namespace,
        &args.cluster_domain,
        validity,
    );
    for name in &args.dns {
        if !spec.dns_names.contains(name) {
            spec.dns_names.push(name.clone());
        }
    }
    for ip in &args.ip {
        if !spec.ips.contains(ip) {
            spec.ips.push(*ip);
        }
    }
    let issued = issue::generate(&issue::ca_common_name("tracepatch CA"), ca_validity, &spec)?;
    write_all(&paths, &issued, args.force)?;

    let ca_until = until(&issued.ca.cert);
    let tls_until = until(&issued.serving.cert);
    eprintln!(
        "wrote {} (CA, valid until {ca_until})",
        paths.ca_cert.display()
    );
    eprintln!(
        "wrote {} (CA private key, mode 0600)",
        paths.ca_key.display()
    );
    eprintln!(
        "wrote {} (serving certificate for {}, valid until {tls_until})",
        paths.cert.display(),
        spec.names().join(", ")
    );
    eprintln!(
        "wrote {} (serving private key, mode 0600)",
        paths.key.display()
    );
    if args.print_ca_bundle {
        println!("{}", ca_bundle_base64(&issued.ca.cert));
    }
    Ok(())
}

/// The `caBundle` value of a webhook configuration for a PEM CA: its base64.
pub fn ca_bundle_base64(ca_pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes())
}

// === development certificate ===

/// The development certificate in `dir`: reuses `ca.crt`, `tls.crt` and `tls.key` when
/// they load, chain to `ca.crt`, cover `localhost` and `127.0.0.1` and stay valid for
/// at least another day; otherwise issues a new serving certificate for `localhost`,
/// `127.0.0.1` and `::1` — from the CA already there when `ca.crt` and `ca.key` are
/// still good (so a CA the developer trusts keeps working), else from a new CA.
pub fn ensure_dev_cert(dir: &Path) -> Result<DevCert, CertError> {
    let paths = Paths::in_dir(dir);
    let dev = |reused| DevCert {
        ca_cert: paths.ca_cert.clone(),
        cert: paths.cert.clone(),
        key: paths.key.clone(),
        reused,
    };
    let reason = match check_dev(&paths) {
        Ok(()) => return Ok(dev(true)),
        Err(reason) => reason,
    };
    let spec = ServingSpec::localhost(DEV_SERVING_VALIDITY);
    let issued = match reusable_ca(&paths) {
        Some(ca) => {
            tracing::info!(dir = %dir.display(), %reason, "issuing a new development certificate from the existing development CA");
            let serving = issue::issue_serving(&ca, &spec)?;
            Issued { ca, serving }
        }
        None => {
            tracing::info!(dir = %dir.display(), %reason, "generating a development CA and certificate");
            issue::generate(
                &issue::ca_common_name("tracepatch development CA"),
                DEV_CA_VALIDITY,
                &spec,
            )?
        }
    };
    write_all(&paths, &issued, true)?;
    Ok(dev(false))
}

/// `Ok` when the development files can be served as they are, else why not.
fn check_dev(paths: &Paths) -> Result<(), String> {
    let served = ServingCert::from_files(&paths.cert, &paths.key).map_err(|e| e.to_string())?;
    if served.remaining() < DEV_MIN_REMAINING {
        return Err(format!("{} expires within a day", paths.cert.display()));
    }
    let ca_pem = fs::read(&paths.ca_cert)
        .map_err(|e| format!("cannot read {}: {e}", paths.ca_cert.display()))?;
    let roots = issue::parse_certs(&ca_pem, &paths.ca_cert.display().to_string())
        .map_err(|e| e.to_string())?;
    for name in DEV_NAMES {
        issue::verify_server_cert(&roots, served.leaf(), name).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The CA in `ca.crt`/`ca.key` when it is a CA, the key is its key, and it is valid
/// for longer than a new development certificate.
fn reusable_ca(paths: &Paths) -> Option<PemPair> {
    let cert = fs::read_to_string(&paths.ca_cert).ok()?;
    let key = fs::read_to_string(&paths.ca_key).ok()?;
    let der = issue::first_cert(cert.as_bytes(), "ca.crt").ok()?;
    let info = CertInfo::parse(&der, "ca.crt").ok()?;
    info.can_issue(&key, DEV_SERVING_VALIDITY)
        .then_some(PemPair { cert, key })
}

// === files ===

fn refuse_existing(paths: &Paths) -> Result<(), CertError> {
    for path in paths.all() {
        if fs::symlink_metadata(path).is_ok() {
            return Err(CertError::Exists {
                path: path.to_owned(),
            });
        }
    }
    Ok(())
}

fn write_all(paths: &Paths, issued: &Issued, overwrite: bool) -> Result<(), CertError> {
    if let Some(dir) = paths.ca_cert.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|source| CertError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    // Keys first: a reader that sees the new certificate also finds its key.
    write_file(&paths.ca_key, &issued.ca.key, true, overwrite)?;
    write_file(&paths.ca_cert, &issued.ca.cert, false, overwrite)?;
    write_file(&paths.key, &issued.serving.key, true, overwrite)?;
    write_file(&paths.cert, &issued.serving.cert, false, overwrite)?;
    Ok(())
}

/// Writes `contents` to `path` (mode 0600 when `private`). Without `overwrite` the file
/// must not exist (checked by the kernel, `O_EXCL`); with it, the contents go to a
/// temporary file in the same directory that is then renamed over `path`.
fn write_file(
    path: &Path,
    contents: &str,
    private: bool,
    overwrite: bool,
) -> Result<(), CertError> {
    let write_err = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    if !overwrite {
        let mut file = open_options(private)
            .create_new(true)
            .open(path)
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    CertError::Exists {
                        path: path.to_owned(),
                    }
                } else {
                    write_err(source)
                }
            })?;
        return file
            .write_all(contents.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(write_err);
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let _ = fs::remove_file(&tmp);
        let mut file = open_options(private).create_new(true).open(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(write_err)
}

fn open_options(private: bool) -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    options
}

fn until(cert_pem: &str) -> String {
    issue::first_cert(cert_pem.as_bytes(), "certificate")
        .ok()
        .and_then(|der| CertInfo::parse(&der, "certificate").ok())
        .map(|info| super::fmt_time(info.not_after))
        .unwrap_or_else(|| "?".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(unix)]
    use std::os::unix::fs::PermissionsExt as _;

    fn args(out: &Path) -> GenerateOptions {
        GenerateOptions {
            service: "tracepatch".into(),
            namespace: "tracepatch".into(),
            cluster_domain: "cluster.local".into(),
            out: out.to_owned(),
            days: 30,
            dns: vec!["webhook.example.com".into()],
            ip: vec!["10.1.2.3".parse().unwrap()],
            force: false,
            print_ca_bundle: false,
        }
    }

    fn read_certs(path: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        issue::parse_certs(&fs::read(path).unwrap(), "test").unwrap()
    }

    #[test]
    fn generate_writes_a_chain_valid_for_every_service_name() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new/sub");
        run_generate(&args(&out)).unwrap();
        let roots = read_certs(&out.join(CA_CERT));
        let leaf = read_certs(&out.join(TLS_CERT)).remove(0);
        for name in [
            "tracepatch",
            "tracepatch.tracepatch",
            "tracepatch.tracepatch.svc",
            "tracepatch.tracepatch.svc.cluster.local",
            "webhook.example.com",
            "10.1.2.3",
        ] {
            issue::verify_server_cert(&roots, &leaf, name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        ServingCert::from_files(&out.join(TLS_CERT), &out.join(TLS_KEY)).unwrap();
        let ca = PemPair {
            cert: fs::read_to_string(out.join(CA_CERT)).unwrap(),
            key: fs::read_to_string(out.join(CA_KEY)).unwrap(),
        };
        // ca.key is the key of ca.crt: renewal from the written files works.
        issue::issue_serving(&ca, &ServingSpec::localhost(DAY)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn generate_writes_keys_readable_by_the_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        run_generate(&args(dir.path())).unwrap();
        for (file, mode) in [
            (CA_KEY, 0o600),
            (TLS_KEY, 0o600),
            (CA_CERT, 0o644),
            (TLS_CERT, 0o644),
        ] {
            let meta = fs::metadata(dir.path().join(file)).unwrap();
            // The umask may only take bits away from the certificates, never add.
            let actual = meta.permissions().mode() & 0o777;
            if mode == 0o600 {
                assert_eq!(actual, 0o600, "{file}");
            } else {
                assert_eq!(actual & !0o644, 0, "{file}: {actual:o}");
            }
        }
    }

    #[test]
    fn generate_refuses_to_overwrite_without_force_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(TLS_KEY), "keep me").unwrap();
        let err = run_generate(&args(dir.path())).unwrap_err();
        let message = err.to_string();
        assert_eq!(
            message,
            format!(
                "{} already exists (use --force to overwrite)",
                dir.path().join(TLS_KEY).display()
            )
        );
        assert_eq!(
            fs::read_to_string(dir.path().join(TLS_KEY)).unwrap(),
            "keep me"
        );
        assert!(!dir.path().join(CA_CERT).exists(), "nothing written");

        let mut forced = args(dir.path());
        forced.force = true;
        run_generate(&forced).unwrap();
        ServingCert::from_files(&dir.path().join(TLS_CERT), &dir.path().join(TLS_KEY)).unwrap();
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn zero_days_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path());
        a.days = 0;
        assert!(run_generate(&a).is_err());
        assert!(!dir.path().join(CA_CERT).exists());
    }

    #[test]
    fn ca_bundle_is_the_base64_of_the_pem() {
        let bundle = ca_bundle_base64("-----BEGIN CERTIFICATE-----\n");
        assert_eq!(bundle, "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==");
    }

    #[test]
    fn dev_cert_is_generated_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_cert(&dir.path().join("certs")).unwrap();
        assert!(!first.reused);
        let leaf = read_certs(&first.cert).remove(0);
        let roots = read_certs(&first.ca_cert);
        for name in ["localhost", "127.0.0.1", "::1"] {
            issue::verify_server_cert(&roots, &leaf, name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let cert_before = fs::read(&first.cert).unwrap();

        let second = ensure_dev_cert(&dir.path().join("certs")).unwrap();
        assert!(second.reused);
        assert_eq!(second.cert, first.cert);
        assert_eq!(fs::read(&second.cert).unwrap(), cert_before);
    }

    #[test]
    fn dev_cert_for_other_names_is_replaced_keeping_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_cert(dir.path()).unwrap();
        let ca_before = fs::read(&first.ca_cert).unwrap();
        // Someone put a certificate for another name in place, from the same CA.
        let ca = PemPair {
            cert: fs::read_to_string(&first.ca_cert).unwrap(),
            key: fs::read_to_string(dir.path().join(CA_KEY)).unwrap(),
        };
        let other = issue::issue_serving(
            &ca,
            &ServingSpec::for_service("svc", "ns", "cluster.local", 30 * DAY),
        )
        .unwrap();
        fs::write(&first.cert, &other.cert).unwrap();
        fs::write(&first.key, &other.key).unwrap();

        let again = ensure_dev_cert(dir.path()).unwrap();
        assert!(!again.reused);
        assert_eq!(fs::read(&again.ca_cert).unwrap(), ca_before, "CA kept");
        let leaf = read_certs(&again.cert).remove(0);
        issue::verify_server_cert(&read_certs(&again.ca_cert), &leaf, "localhost").unwrap();
    }

    #[test]
    fn dev_cert_expiring_within_a_day_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_cert(dir.path()).unwrap();
        let ca = PemPair {
            cert: fs::read_to_string(&first.ca_cert).unwrap(),
            key: fs::read_to_string(dir.path().join(CA_KEY)).unwrap(),
        };
        let short =
            issue::issue_serving(&ca, &ServingSpec::localhost(Duration::from_secs(3600))).unwrap();
        fs::write(&first.cert, &short.cert).unwrap();
        fs::write(&first.key, &short.key).unwrap();

        let again = ensure_dev_cert(dir.path()).unwrap();
        assert!(!again.reused);
        let served = ServingCert::from_files(&again.cert, &again.key).unwrap();
        assert!(served.remaining() > 300 * DAY);
    }

    #[test]
    fn dev_cert_with_garbage_files_is_regenerated_with_a_new_ca() {
        let dir = tempfile::tempdir().unwrap();
        for file in [CA_CERT, CA_KEY, TLS_CERT, TLS_KEY] {
            fs::write(dir.path().join(file), "garbage").unwrap();
        }
        let dev = ensure_dev_cert(dir.path()).unwrap();
        assert!(!dev.reused);
        let leaf = read_certs(&dev.cert).remove(0);
        issue::verify_server_cert(&read_certs(&dev.ca_cert), &leaf, "127.0.0.1").unwrap();
    }
}
