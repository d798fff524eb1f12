//! `tracepatch certs generate` end to end: the real binary writes the files, the real
//! `openssl` checks them as an operator would.

use std::path::Path;
use std::process::Command;

const SERVICE_NAMES: [&str; 4] = [
    "tracepatch",
    "tracepatch.tracepatch",
    "tracepatch.tracepatch.svc",
    "tracepatch.tracepatch.svc.cluster.local",
];

fn generate(out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tracepatch"))
        .args([
            "certs",
            "generate",
            "--service",
            "tracepatch",
            "--namespace",
            "tracepatch",
        ])
        .arg("--out")
        .arg(out)
        .args(extra)
        // A one-line error is what a user sees; a backtrace only when they ask for one.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("run tracepatch")
}

/// The environment variable that lets a machine without `openssl` skip the test that
/// needs it; without it, a missing `openssl` fails that test.
const SKIP_VAR: &str = "TRACEPATCH_TEST_SKIP_OPENSSL";

/// Whether the real `openssl` runs here. When it does not: a failure, unless
/// [`SKIP_VAR`] is set, and then a skip line on the real standard error (not the test
/// harness's captured output), so that the skip is seen in every run.
fn openssl_available() -> bool {
    let found = match Command::new("openssl").arg("version").output() {
        Ok(out) if out.status.success() => return true,
        Ok(out) => format!(
            "`openssl version` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("no `openssl` on PATH ({e})"),
    };
    if std::env::var_os(SKIP_VAR).is_some_and(|v| !v.is_empty()) {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED openssl_verifies_the_generated_chain_with_the_service_names: {found}; \
             {SKIP_VAR} is set"
        );
        return false;
    }
    panic!(
        "{found}: this test checks the generated certificates with the real openssl; \
         install it (Debian: apt-get install openssl), or set {SKIP_VAR}=1 to skip it"
    );
}

#[test]
fn openssl_verifies_the_generated_chain_with_the_service_names() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = generate(&out, &[]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let verify = Command::new("openssl")
        .args(["verify", "-purpose", "sslserver", "-CAfile"])
        .arg(out.join("ca.crt"))
        .arg(out.join("tls.crt"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && stdout.trim_end().ends_with(": OK"),
        "openssl verify: {stdout}{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    for name in SERVICE_NAMES {
        let check = Command::new("openssl")
            .args(["verify", "-verify_hostname", name, "-CAfile"])
            .arg(out.join("ca.crt"))
            .arg(out.join("tls.crt"))
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let wrong = Command::new("openssl")
        .args([
            "verify",
            "-verify_hostname",
            "evil.tracepatch.svc",
            "-CAfile",
        ])
        .arg(out.join("ca.crt"))
        .arg(out.join("tls.crt"))
        .output()
        .unwrap();
    assert!(
        !wrong.status.success(),
        "a name outside the SANs must not verify"
    );

    let text = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-ext",
            "subjectAltName,extendedKeyUsage,basicConstraints",
            "-in",
        ])
        .arg(out.join("tls.crt"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    for name in SERVICE_NAMES {
        assert!(
            text.contains(&format!("DNS:{name},")) || text.contains(&format!("DNS:{name}\n")),
            "{name} in {text}"
        );
    }
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");

    let ca = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "basicConstraints,keyUsage", "-in"])
        .arg(out.join("ca.crt"))
        .output()
        .unwrap();
    let ca = String::from_utf8_lossy(&ca.stdout);
    assert!(ca.contains("CA:TRUE"), "{ca}");
    assert!(ca.contains("Certificate Sign"), "{ca}");

    // ECDSA P-256, as SECURITY.md says, for the CA and the serving certificate.
    for cert in ["ca.crt", "tls.crt"] {
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(out.join(cert))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains("Public Key Algorithm: id-ecPublicKey")
                && text.contains("ASN1 OID: prime256v1")
                && text.contains("Signature Algorithm: ecdsa-with-SHA256"),
            "{cert} is not ECDSA P-256 signed with ECDSA-SHA256:\n{text}"
        );
    }

    // The keys are what the certificates say they are.
    for (cert, key) in [("ca.crt", "ca.key"), ("tls.crt", "tls.key")] {
        let from_cert = Command::new("openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(out.join(cert))
            .output()
            .unwrap();
        let from_key = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(out.join(key))
            .output()
            .unwrap();
        assert!(from_key.status.success(), "{key}");
        assert_eq!(from_cert.stdout, from_key.stdout, "{key} belongs to {cert}");
    }
}

#[test]
fn print_ca_bundle_prints_only_the_base64_ca_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let run = generate(dir.path(), &["--print-ca-bundle"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8(run.stdout).unwrap();
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
    use base64::Engine as _;
    assert_eq!(
        stdout,
        format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(&ca)
        )
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    for file in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(
            stderr.contains(&format!("wrote {}", dir.path().join(file).display())),
            "{stderr}"
        );
    }
}

#[test]
fn existing_files_are_refused_with_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    assert!(generate(dir.path(), &[]).status.success());
    let before = std::fs::read(dir.path().join("ca.key")).unwrap();
    let again = generate(dir.path(), &[]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    let expected = format!(
        "{} already exists (use --force to overwrite)",
        dir.path().join("ca.crt").display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert_eq!(std::fs::read(dir.path().join("ca.key")).unwrap(), before);

    let forced = generate(dir.path(), &["--force"]);
    assert!(forced.status.success());
    assert_ne!(std::fs::read(dir.path().join("ca.key")).unwrap(), before);
}
