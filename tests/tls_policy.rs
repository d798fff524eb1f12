//! SECURITY.md, "TLS": what the admission port negotiates, asked by the real `openssl
//! s_client` (as an operator's scanner would) of a server on loopback: TLS 1.3 with
//! AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305 and nothing else; TLS 1.2 with ECDHE
//! and AEAD ciphers only; no TLS 1.0 or 1.1 (offered by a client allowed every cipher),
//! no CBC, no RSA key exchange, no compression. Needs `openssl` (installed by .ci/run);
//! without it the test fails unless TRACEPATCH_TEST_SKIP_OPENSSL is set.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use support::serving;

/// What `openssl s_client` negotiated: `(protocol, cipher)`, `None` if the handshake
/// failed; and its whole output.
fn s_client(addr: SocketAddr, args: &[&str]) -> (Option<(String, String)>, String) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384", or "New, (NONE), Cipher is (NONE)".
    let negotiated = text
        .lines()
        .find_map(|l| l.strip_prefix("New, "))
        .and_then(|l| l.split_once(", Cipher is "))
        .filter(|(p, _)| *p != "(NONE)")
        .map(|(p, c)| (p.to_owned(), c.trim().to_owned()));
    (negotiated, text)
}

fn openssl_available() -> bool {
    if Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    let skip = "TRACEPATCH_TEST_SKIP_OPENSSL";
    if std::env::var_os(skip).is_some_and(|v| !v.is_empty()) {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED tls_policy: no working `openssl` on PATH; {skip} is set"
        );
        return false;
    }
    panic!(
        "no working `openssl` on PATH: install it (Debian: apt-get install openssl), or set {skip}=1 to skip"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admission_port_negotiates_only_tls_1_2_and_1_3_with_aead_ciphers() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, _certs) = serving(dir.path(), &[]).await;
    let addr = server.addr;
    let run = move |args: &'static [&'static str]| {
        tokio::task::spawn_blocking(move || s_client(addr, args))
    };

    let accepted: [(&[&str], &str, &str); 6] = [
        (
            &["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"],
            "TLSv1.3",
            "TLS_AES_128_GCM_SHA256",
        ),
        (
            &["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"],
            "TLSv1.3",
            "TLS_AES_256_GCM_SHA384",
        ),
        (
            &["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
            "TLSv1.3",
            "TLS_CHACHA20_POLY1305_SHA256",
        ),
        (
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
            "TLSv1.2",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        ),
        (
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"],
            "TLSv1.2",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
        ),
        (
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"],
            "TLSv1.2",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
        ),
    ];
    for (args, protocol, cipher) in accepted {
        let (got, text) = run(args).await.unwrap();
        assert_eq!(
            got,
            Some((protocol.to_owned(), cipher.to_owned())),
            "{args:?}:\n{text}"
        );
        assert!(text.contains("Compression: NONE"), "{args:?}:\n{text}");
    }

    let refused: [(&str, &[&str]); 8] = [
        (
            "TLS 1.1, any cipher",
            &["-tls1_1", "-cipher", "ALL:@SECLEVEL=0"],
        ),
        (
            "TLS 1.0, any cipher",
            &["-tls1", "-cipher", "ALL:@SECLEVEL=0"],
        ),
        (
            "TLS 1.3 AES-128-CCM",
            &["-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256"],
        ),
        (
            "TLS 1.3 AES-128-CCM-8",
            &["-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_8_SHA256"],
        ),
        (
            "TLS 1.2 CBC with SHA-1",
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"],
        ),
        (
            "TLS 1.2 CBC with SHA-384",
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA384"],
        ),
        (
            "TLS 1.2 RSA key exchange",
            &["-tls1_2", "-cipher", "AES128-GCM-SHA256:AES256-GCM-SHA384"],
        ),
        (
            "TLS 1.2 without forward secrecy or AEAD, at any security level",
            &["-tls1_2", "-cipher", "aRSA:aECDSA:!ECDHE:!DHE:@SECLEVEL=0"],
        ),
    ];
    for (what, args) in refused {
        let (got, text) = run(args).await.unwrap();
        assert_eq!(got, None, "{what} was negotiated:\n{text}");
        // Refused by the server (a handshake_failure or protocol_version alert), not by
        // the client before it offered anything.
        assert!(
            text.contains("alert handshake failure") || text.contains("alert protocol version"),
            "{what}: not refused by the server:\n{text}"
        );
    }
    server.shutdown.cancel();
    server.done.await.unwrap();
}
