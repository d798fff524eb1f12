//! Self-managed certificates against kube's mocked API service (the `tower-test`
//! pattern kube-rs uses): each test scripts the requests the reconciler must make, in
//! order, with the answers an apiserver would give, and checks what ends up served,
//! written and reported.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use kube::client::Body;
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use tokio::time::Instant;

use tracepatch::certs::CertStore;
use tracepatch::certs::issue::{self, PemPair, ServingSpec};
use tracepatch::certs::self_managed::{
    self, Reconciler, SecretAction, SelfManagedError, SelfManagedOptions, resolve_namespace_from,
};
use tracepatch::server::Readiness;

const DAY: Duration = Duration::from_secs(86_400);
const NS: &str = "tracepatch";
const SECRET: &str = "/api/v1/namespaces/tracepatch/secrets/tracepatch-tls";
const SECRETS: &str = "/api/v1/namespaces/tracepatch/secrets";
const MWC: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/00-tracepatch";
const WEBHOOKS: [&str; 2] = ["pods.tracepatch.io", "services.tracepatch.io"];
const SERVICE_NAMES: [&str; 4] = [
    "tracepatch",
    "tracepatch.tracepatch",
    "tracepatch.tracepatch.svc",
    "tracepatch.tracepatch.svc.cluster.local",
];
const CHECK_INTERVAL: Duration = Duration::from_secs(60);

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

// === the scripted API ===

/// A request as the script sees it.
struct Req {
    headers: HeaderMap,
    body: Value,
}

type Reply = Box<dyn FnOnce(Req) -> (StatusCode, Value) + Send>;

/// One expected request and its answer.
struct Step {
    method: Method,
    path: &'static str,
    reply: Reply,
}

fn step(
    method: Method,
    path: &'static str,
    reply: impl FnOnce(Req) -> (StatusCode, Value) + Send + 'static,
) -> Step {
    Step {
        method,
        path,
        reply: Box::new(reply),
    }
}

/// Answers `steps` in order, asserting each request's method and path. Returns the
/// (paused-clock) time each request arrived.
async fn serve_script(mut handle: Handle, steps: Vec<Step>) -> Vec<Instant> {
    let mut arrivals = Vec::new();
    for (i, step) in steps.into_iter().enumerate() {
        let Some((request, send)) = handle.next_request().await else {
            panic!(
                "step {i}: the client went away; expected {} {}",
                step.method, step.path
            );
        };
        arrivals.push(Instant::now());
        assert_eq!(
            (request.method(), request.uri().path()),
            (&step.method, step.path),
            "step {i}: unexpected request {} {}",
            request.method(),
            request.uri()
        );
        let headers = request.headers().clone();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let (status, reply) = (step.reply)(Req { headers, body });
        send.send_response(
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
    }
    arrivals
}

// === fixtures ===

struct Replica {
    store: Arc<CertStore>,
    readiness: Arc<Readiness>,
}

fn args() -> SelfManagedOptions {
    SelfManagedOptions {
        secret: "tracepatch-tls".into(),
        webhook_config: "00-tracepatch".into(),
        service: "tracepatch".into(),
        namespace: None,
        cluster_domain: "cluster.local".into(),
        renew_before: 30 * DAY,
        check_interval: CHECK_INTERVAL,
        sync_match_conditions: false,
    }
}

fn replica() -> Replica {
    let readiness = Arc::new(Readiness::default());
    // Isolate the caBundle condition of readiness.
    readiness.set_accepting(true);
    Replica {
        store: CertStore::new(),
        readiness,
    }
}

fn mock() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, NS), handle)
}

fn reconciler(client: kube::Client, r: &Replica) -> Reconciler {
    r.store.require_ca_bundle();
    Reconciler::new(client, &args(), NS, r.store.clone())
}

fn service_spec(validity: Duration) -> ServingSpec {
    ServingSpec::for_service("tracepatch", NS, "cluster.local", validity)
}

/// A CA valid `ca_days` and a serving certificate for the Service valid `days`.
fn material(ca_days: u32, days: u32) -> (PemPair, PemPair) {
    let ca = issue::generate_ca("test CA", ca_days * DAY).unwrap();
    let serving = issue::issue_serving(&ca, &service_spec(days * DAY)).unwrap();
    (ca, serving)
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(value: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().unwrap())
        .unwrap()
}

fn secret_json(data: &[(&str, &str)], rv: &str) -> Value {
    let data: BTreeMap<&str, String> = data.iter().map(|(k, v)| (*k, b64(v))).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": "tracepatch-tls", "namespace": NS, "resourceVersion": rv },
        "type": "kubernetes.io/tls",
        "data": data,
    })
}

fn tls_secret(ca_crt: &str, ca_key: &str, serving: &PemPair, rv: &str) -> Value {
    secret_json(
        &[
            ("ca.crt", ca_crt),
            ("ca.key", ca_key),
            ("tls.crt", &serving.cert),
            ("tls.key", &serving.key),
        ],
        rv,
    )
}

fn with_rv(mut object: Value, rv: &str) -> Value {
    object["metadata"]["resourceVersion"] = json!(rv);
    object
}

fn mwc_json(ca_bundle: Option<&str>, rv: &str) -> Value {
    let webhooks: Vec<Value> = WEBHOOKS
        .iter()
        .map(|name| {
            let mut client_config = json!({
                "service": { "namespace": NS, "name": "tracepatch", "path": "/mutate", "port": 443 },
            });
            if let Some(pem) = ca_bundle {
                client_config["caBundle"] = json!(b64(pem));
            }
            json!({
                "name": name,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Ignore",
                "clientConfig": client_config,
                // A field this build does not model: the patch must not need it.
                "futureField": { "keep": true },
            })
        })
        .collect();
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": "00-tracepatch", "resourceVersion": rv },
        "webhooks": webhooks,
    })
}

fn status(code: u16, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        StatusCode::from_u16(code).unwrap(),
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }),
    )
}

fn secret_not_found() -> (StatusCode, Value) {
    status(404, "NotFound", "secrets \"tracepatch-tls\" not found")
}

fn ok(value: Value) -> (StatusCode, Value) {
    (StatusCode::OK, value)
}

fn der(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    issue::parse_certs(pem, "test").unwrap()
}

fn leaf(pem: &str) -> CertificateDer<'static> {
    der(pem.as_bytes()).remove(0)
}

fn served(store: &CertStore) -> CertificateDer<'static> {
    store
        .current()
        .expect("a certificate is served")
        .leaf()
        .clone()
}

fn assert_valid_for_service(ca_pem: &[u8], leaf: &CertificateDer<'_>) {
    for name in SERVICE_NAMES {
        issue::verify_server_cert(&der(ca_pem), leaf, name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Asserts a strategic merge patch of the caBundle of `webhooks`, guarded by `rv`, and
/// returns the certificates it writes.
fn assert_ca_bundle_patch(req: &Req, rv: &str, webhooks: &[&str]) -> Vec<CertificateDer<'static>> {
    assert_eq!(
        req.headers["content-type"],
        "application/strategic-merge-patch+json"
    );
    assert_eq!(req.body["metadata"]["resourceVersion"], rv, "{}", req.body);
    let patched = req.body["webhooks"].as_array().unwrap();
    let names: Vec<&str> = patched
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, webhooks);
    let bundles: Vec<Vec<u8>> = patched
        .iter()
        .map(|w| {
            // Only the caBundle: nothing else of the webhook is sent (or dropped).
            assert_eq!(w.as_object().unwrap().len(), 2, "{w}");
            assert_eq!(w["clientConfig"].as_object().unwrap().len(), 1, "{w}");
            unb64(&w["clientConfig"]["caBundle"])
        })
        .collect();
    assert!(bundles.windows(2).all(|w| w[0] == w[1]));
    der(&bundles[0])
}

// === tests: one reconcile ===

#[tokio::test]
async fn missing_secret_is_created_then_ca_bundle_patched_and_ready() {
    let (client, handle) = mock();
    let r = replica();
    let rec = reconciler(client, &r);
    assert!(r.readiness.check(&r.store).is_err());

    let posted: Arc<Mutex<Value>> = Arc::default();
    let posted_in = posted.clone();
    let posted_at_patch = posted.clone();
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, |_| secret_not_found()),
            step(Method::POST, SECRETS, move |req| {
                assert_eq!(req.body["type"], "kubernetes.io/tls");
                assert_eq!(req.body["metadata"]["name"], "tracepatch-tls");
                let keys: Vec<&String> = req.body["data"].as_object().unwrap().keys().collect();
                assert_eq!(keys, ["ca.crt", "ca.key", "tls.crt", "tls.key"]);
                *posted_in.lock().unwrap() = req.body.clone();
                (StatusCode::CREATED, with_rv(req.body, "1"))
            }),
            step(Method::GET, MWC, |_| ok(mwc_json(None, "5"))),
            step(Method::PATCH, MWC, move |req| {
                let written = assert_ca_bundle_patch(&req, "5", &WEBHOOKS);
                let ca = unb64(&posted_at_patch.lock().unwrap()["data"]["ca.crt"]);
                assert_eq!(written, der(&ca));
                ok(mwc_json(Some(std::str::from_utf8(&ca).unwrap()), "6"))
            }),
        ],
    ));

    let outcome = rec.reconcile_once().await.unwrap();
    // Without a client, a script still waiting for a request fails instead of hanging.
    drop(rec);
    script.await.unwrap();

    assert_eq!(outcome.secret, SecretAction::Created);
    assert_eq!(outcome.ca_bundle_written, WEBHOOKS);
    assert!(outcome.serving_changed && outcome.ca_bundle_ok);
    let posted = posted.lock().unwrap();
    let tls = unb64(&posted["data"]["tls.crt"]);
    assert_eq!(served(&r.store), leaf(std::str::from_utf8(&tls).unwrap()));
    assert_valid_for_service(&unb64(&posted["data"]["ca.crt"]), &served(&r.store));
    assert_eq!(r.readiness.check(&r.store), Ok(()));
}

#[tokio::test]
async fn valid_secret_and_right_ca_bundle_are_used_without_any_write() {
    let (client, handle) = mock();
    let r = replica();
    let rec = reconciler(client, &r);
    let (ca, serving) = material(3650, 365);
    let secret = tls_secret(&ca.cert, &ca.key, &serving, "3");
    let (s1, s2) = (secret.clone(), secret);
    let ca_pem = ca.cert.clone();
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, move |_| ok(s1)),
            step(Method::GET, MWC, {
                let ca = ca_pem.clone();
                move |_| ok(mwc_json(Some(&ca), "5"))
            }),
            // The next check finds everything as it was and still writes nothing.
            step(Method::GET, SECRET, move |_| ok(s2)),
            step(Method::GET, MWC, move |_| ok(mwc_json(Some(&ca_pem), "5"))),
        ],
    ));

    let first = rec.reconcile_once().await.unwrap();
    let second = rec.reconcile_once().await.unwrap();
    // Without a client, a script still waiting for a request fails instead of hanging.
    drop(rec);
    script.await.unwrap();

    assert_eq!(first.secret, SecretAction::Kept);
    assert!(first.ca_bundle_written.is_empty());
    assert!(first.serving_changed, "first served certificate");
    assert_eq!(second.secret, SecretAction::Kept);
    assert!(second.ca_bundle_written.is_empty());
    assert!(!second.serving_changed);
    assert_eq!(served(&r.store), leaf(&serving.cert));
    assert_eq!(r.readiness.check(&r.store), Ok(()));
}

#[tokio::test]
async fn expiring_secret_is_renewed_from_the_same_ca() {
    let (client, handle) = mock();
    let r = replica();
    let rec = reconciler(client, &r);
    let (ca, old) = material(3650, 10);
    let secret = tls_secret(&ca.cert, &ca.key, &old, "7");
    let renewed: Arc<Mutex<Value>> = Arc::default();
    let renewed_in = renewed.clone();
    let (ca_in, old_in) = (ca.clone(), old.clone());
    let ca_pem = ca.cert.clone();
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, move |_| ok(secret)),
            step(Method::PUT, SECRET, move |req| {
                assert_eq!(req.body["metadata"]["resourceVersion"], "7");
                let data = &req.body["data"];
                assert_eq!(der(&unb64(&data["ca.crt"])), der(ca_in.cert.as_bytes()));
                assert_eq!(unb64(&data["ca.key"]), ca_in.key.as_bytes());
                assert_ne!(unb64(&data["tls.crt"]), old_in.cert.as_bytes());
                assert_ne!(unb64(&data["tls.key"]), old_in.key.as_bytes());
                *renewed_in.lock().unwrap() = req.body.clone();
                ok(with_rv(req.body, "8"))
            }),
            step(Method::GET, MWC, move |_| ok(mwc_json(Some(&ca_pem), "5"))),
        ],
    ));

    let outcome = rec.reconcile_once().await.unwrap();
    // Without a client, a script still waiting for a request fails instead of hanging.
    drop(rec);
    script.await.unwrap();

    assert_eq!(outcome.secret, SecretAction::Renewed { new_ca: false });
    assert!(
        outcome.ca_bundle_written.is_empty(),
        "same CA: caBundle untouched"
    );
    let new_leaf = served(&r.store);
    assert_ne!(new_leaf, leaf(&old.cert));
    let tls = unb64(&renewed.lock().unwrap()["data"]["tls.crt"]);
    assert_eq!(new_leaf, leaf(std::str::from_utf8(&tls).unwrap()));
    assert_valid_for_service(ca.cert.as_bytes(), &new_leaf);
    assert!(r.store.current().unwrap().remaining() > 300 * DAY);
}

#[tokio::test]
async fn create_conflict_serves_the_winners_certificate() {
    let (client, handle) = mock();
    let r = replica();
    let rec = reconciler(client, &r);
    let (ca, winner) = material(3650, 365);
    let theirs = tls_secret(&ca.cert, &ca.key, &winner, "2");
    let ca_pem = ca.cert.clone();
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, |_| secret_not_found()),
            step(Method::POST, SECRETS, |_| {
                status(
                    409,
                    "AlreadyExists",
                    "secrets \"tracepatch-tls\" already exists",
                )
            }),
            step(Method::GET, SECRET, move |_| ok(theirs)),
            step(Method::GET, MWC, move |_| ok(mwc_json(Some(&ca_pem), "5"))),
        ],
    ));

    let outcome = rec.reconcile_once().await.unwrap();
    // Without a client, a script still waiting for a request fails instead of hanging.
    drop(rec);
    script.await.unwrap();

    assert_eq!(outcome.secret, SecretAction::TookOthers);
    assert!(outcome.ca_bundle_written.is_empty());
    assert_eq!(served(&r.store), leaf(&winner.cert));
    assert_eq!(r.readiness.check(&r.store), Ok(()));
}

#[tokio::test]
async fn update_conflict_serves_the_winners_certificate() {
    let (client, handle) = mock();
    let r = replica();
    let rec = reconciler(client, &r);
    let (ca, old) = material(3650, 10);
    let winner = issue::issue_serving(&ca, &service_spec(365 * DAY)).unwrap();
    let before = tls_secret(&ca.cert, &ca.key, &old, "7");
    let after = tls_secret(&ca.cert, &ca.key, &winner, "8");
    let ca_pem = ca.cert.clone();
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, move |_| ok(before)),
            step(Method::PUT, SECRET, |_| {
                status(
                    409,
                    "Conflict",
                    "Operation cannot be fulfilled on secrets \"tracepatch-tls\": the object has been modified",
                )
            }),
            step(Method::GET, SECRET, move |_| ok(after)),
            step(Method::GET, MWC, move |_| ok(mwc_json(Some(&ca_pem), "5"))),
        ],
    ));

    let outcome = rec.reconcile_once().await.unwrap();
    // Without a client, a script still waiting for a request fails instead of hanging.
    drop(rec);
    script.await.unwrap();

    assert_eq!(outcome.secret, SecretAction::TookOthers);
    assert_eq!(served(&r.store), leaf(&winner.cert));
}

#[tokio::test]
async fn secret_precreated_empty_by_a_chart_is_filled_in() {
    let (client, handle) = mock();
    let r = replica();
    let rec = reconciler(client, &r);
    let empty = secret_json(&[("tls.crt", ""), ("tls.key", "")], "1");
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, move |_| ok(empty)),
            step(Method::PUT, SECRET, |req| {
                assert_eq!(req.body["metadata"]["resourceVersion"], "1");
                assert_eq!(req.body["type"], "kubernetes.io/tls");
                ok(with_rv(req.body, "2"))
            }),
            step(Method::GET, MWC, |_| ok(mwc_json(None, "5"))),
            step(Method::PATCH, MWC, |req| {
                assert_ca_bundle_patch(&req, "5", &WEBHOOKS);
                ok(mwc_json(None, "6"))
            }),
        ],
    ));

    let outcome = rec.reconcile_once().await.unwrap();
    // Without a client, a script still waiting for a request fails instead of hanging.
    drop(rec);
    script.await.unwrap();

    assert_eq!(outcome.secret, SecretAction::Renewed { new_ca: true });
    assert_eq!(outcome.ca_bundle_written, WEBHOOKS);
    assert!(r.store.is_loaded());
}

#[tokio::test]
async fn certificate_without_the_service_names_is_reissued_from_the_same_ca() {
    let (client, handle) = mock();
    let r = replica();
    let rec = reconciler(client, &r);
    let ca = issue::generate_ca("test CA", 3650 * DAY).unwrap();
    let other = issue::issue_serving(
        &ca,
        &ServingSpec::for_service("renamed", NS, "cluster.local", 365 * DAY),
    )
    .unwrap();
    let secret = tls_secret(&ca.cert, &ca.key, &other, "4");
    let ca_in = ca.clone();
    let ca_pem = ca.cert.clone();
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, move |_| ok(secret)),
            step(Method::PUT, SECRET, move |req| {
                assert_eq!(
                    der(&unb64(&req.body["data"]["ca.crt"])),
                    der(ca_in.cert.as_bytes())
                );
                ok(with_rv(req.body, "5"))
            }),
            step(Method::GET, MWC, move |_| ok(mwc_json(Some(&ca_pem), "5"))),
        ],
    ));

    let outcome = rec.reconcile_once().await.unwrap();
    // Without a client, a script still waiting for a request fails instead of hanging.
    drop(rec);
    script.await.unwrap();

    assert_eq!(outcome.secret, SecretAction::Renewed { new_ca: false });
    assert_valid_for_service(ca.cert.as_bytes(), &served(&r.store));
}

#[tokio::test]
async fn new_ca_is_trusted_alongside_the_old_before_it_is_served() {
    let (client, handle) = mock();
    let r = replica();
    let rec = reconciler(client, &r);
    // The CA has 40 days left (less than twice renew-before): it must be replaced;
    // the serving certificate has 20 (within renew-before).
    let old_ca = issue::generate_ca("old CA", 40 * DAY).unwrap();
    let old = issue::issue_serving(&old_ca, &service_spec(20 * DAY)).unwrap();
    r.store.set(
        tracepatch::certs::ServingCert::from_pem(old.cert.as_bytes(), old.key.as_bytes(), "old")
            .unwrap(),
    );
    let secret = tls_secret(&old_ca.cert, &old_ca.key, &old, "7");
    let written: Arc<Mutex<Value>> = Arc::default();
    let written_in = written.clone();
    let written_at_patch = written.clone();
    let (old_ca_in, old_ca_at_patch) = (old_ca.clone(), old_ca.clone());
    let store_at_patch = r.store.clone();
    let old_leaf = leaf(&old.cert);
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, move |_| ok(secret)),
            step(Method::PUT, SECRET, move |req| {
                let bundle = der(&unb64(&req.body["data"]["ca.crt"]));
                assert_eq!(bundle.len(), 2, "new CA, then the old one");
                assert_ne!(bundle[0], der(old_ca_in.cert.as_bytes())[0]);
                assert_eq!(bundle[1], der(old_ca_in.cert.as_bytes())[0]);
                assert_ne!(unb64(&req.body["data"]["ca.key"]), old_ca_in.key.as_bytes());
                *written_in.lock().unwrap() = req.body.clone();
                ok(with_rv(req.body, "8"))
            }),
            step(Method::GET, MWC, move |_| {
                ok(mwc_json(Some(&old_ca_at_patch.cert), "5"))
            }),
            step(Method::PATCH, MWC, move |req| {
                let bundle = assert_ca_bundle_patch(&req, "5", &WEBHOOKS);
                let ca_crt = unb64(&written_at_patch.lock().unwrap()["data"]["ca.crt"]);
                assert_eq!(
                    bundle,
                    der(&ca_crt),
                    "caBundle carries the new and the old CA"
                );
                // The old certificate is still the one served while the apiserver
                // does not yet trust the new CA.
                assert_eq!(served(&store_at_patch), old_leaf);
                ok(mwc_json(None, "6"))
            }),
        ],
    ));

    let outcome = rec.reconcile_once().await.unwrap();
    // Without a client, a script still waiting for a request fails instead of hanging.
    drop(rec);
    script.await.unwrap();

    assert_eq!(outcome.secret, SecretAction::Renewed { new_ca: true });
    assert!(outcome.serving_changed);
    let ca_crt = unb64(&written.lock().unwrap()["data"]["ca.crt"]);
    assert_valid_for_service(&ca_crt, &served(&r.store));
    // Served under the new CA alone, not the old one.
    let new_ca_only = issue::encode_pem(&der(&ca_crt)[..1]);
    assert_valid_for_service(new_ca_only.as_bytes(), &served(&r.store));
}

#[tokio::test]
async fn new_certificate_waits_while_the_ca_bundle_cannot_be_written() {
    let (client, handle) = mock();
    let r = replica();
    let rec = reconciler(client, &r);
    let old_ca = issue::generate_ca("old CA", 40 * DAY).unwrap();
    let old = issue::issue_serving(&old_ca, &service_spec(20 * DAY)).unwrap();
    r.store.set(
        tracepatch::certs::ServingCert::from_pem(old.cert.as_bytes(), old.key.as_bytes(), "old")
            .unwrap(),
    );
    r.store.set_ca_bundle_ok(true);
    let secret = tls_secret(&old_ca.cert, &old_ca.key, &old, "7");
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, move |_| ok(secret)),
            step(Method::PUT, SECRET, |req| ok(with_rv(req.body, "8"))),
            step(Method::GET, MWC, move |_| {
                ok(mwc_json(Some(&old_ca.cert), "5"))
            }),
            step(Method::PATCH, MWC, |_| {
                status(403, "Forbidden", "cannot patch")
            }),
        ],
    ));

    let err = rec.reconcile_once().await.unwrap_err();
    drop(rec);
    script.await.unwrap();

    assert!(
        matches!(
            err,
            SelfManagedError::Api {
                action: "patch",
                ..
            }
        ),
        "{err}"
    );
    // The apiserver trusts only the old CA: keep serving the old certificate, which
    // still has 20 days, and stay ready.
    assert_eq!(served(&r.store), leaf(&old.cert));
    assert_eq!(r.readiness.check(&r.store), Ok(()));
}

#[tokio::test]
async fn old_ca_is_dropped_at_the_next_renewal() {
    let (client, handle) = mock();
    let r = replica();
    let rec = reconciler(client, &r);
    let (ca, expiring) = material(3650, 10);
    let older = issue::generate_ca("older CA", 100 * DAY).unwrap();
    let bundle = format!("{}{}", ca.cert, older.cert);
    let secret = tls_secret(&bundle, &ca.key, &expiring, "7");
    let ca_in = ca.clone();
    let ca_pem = ca.cert.clone();
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, move |_| ok(secret)),
            step(Method::PUT, SECRET, move |req| {
                assert_eq!(
                    der(&unb64(&req.body["data"]["ca.crt"])),
                    der(ca_in.cert.as_bytes())
                );
                ok(with_rv(req.body, "8"))
            }),
            step(Method::GET, MWC, move |_| {
                ok(mwc_json(Some(&bundle_of(&ca_pem, &older.cert)), "5"))
            }),
            step(Method::PATCH, MWC, move |req| {
                let written = assert_ca_bundle_patch(&req, "5", &WEBHOOKS);
                assert_eq!(written.len(), 1, "the older CA is gone");
                ok(mwc_json(None, "6"))
            }),
        ],
    ));

    let outcome = rec.reconcile_once().await.unwrap();
    // Without a client, a script still waiting for a request fails instead of hanging.
    drop(rec);
    script.await.unwrap();
    assert_eq!(outcome.secret, SecretAction::Renewed { new_ca: false });
}

fn bundle_of(a: &str, b: &str) -> String {
    format!("{a}{b}")
}

#[tokio::test]
async fn expired_ca_is_left_out_of_the_ca_bundle() {
    let (client, handle) = mock();
    let r = replica();
    let rec = reconciler(client, &r);
    let (ca, serving) = material(3650, 365);
    // Expires the moment it is made.
    let expired = issue::generate_ca("expired CA", Duration::ZERO).unwrap();
    let bundle = bundle_of(&ca.cert, &expired.cert);
    let secret = tls_secret(&bundle, &ca.key, &serving, "7");
    let ca_der = der(ca.cert.as_bytes());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, move |_| ok(secret)),
            step(Method::GET, MWC, move |_| ok(mwc_json(Some(&bundle), "5"))),
            step(Method::PATCH, MWC, move |req| {
                assert_eq!(assert_ca_bundle_patch(&req, "5", &WEBHOOKS), ca_der);
                ok(mwc_json(None, "6"))
            }),
        ],
    ));

    let outcome = rec.reconcile_once().await.unwrap();
    // Without a client, a script still waiting for a request fails instead of hanging.
    drop(rec);
    script.await.unwrap();
    assert_eq!(
        outcome.secret,
        SecretAction::Kept,
        "no write to the Secret for that"
    );
}

#[tokio::test]
async fn ca_bundle_patch_conflict_is_retried_on_the_new_version() {
    let (client, handle) = mock();
    let r = replica();
    let rec = reconciler(client, &r);
    let (ca, serving) = material(3650, 365);
    let secret = tls_secret(&ca.cert, &ca.key, &serving, "3");
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, move |_| ok(secret)),
            step(Method::GET, MWC, |_| ok(mwc_json(None, "5"))),
            step(Method::PATCH, MWC, |req| {
                assert_ca_bundle_patch(&req, "5", &WEBHOOKS);
                status(409, "Conflict", "the object has been modified")
            }),
            step(Method::GET, MWC, |_| ok(mwc_json(None, "9"))),
            step(Method::PATCH, MWC, |req| {
                assert_ca_bundle_patch(&req, "9", &WEBHOOKS);
                ok(mwc_json(None, "10"))
            }),
        ],
    ));

    let outcome = rec.reconcile_once().await.unwrap();
    // Without a client, a script still waiting for a request fails instead of hanging.
    drop(rec);
    script.await.unwrap();
    assert_eq!(outcome.ca_bundle_written, WEBHOOKS);
    assert_eq!(r.readiness.check(&r.store), Ok(()));
}

#[tokio::test]
async fn only_the_webhook_that_lost_its_ca_bundle_is_patched() {
    let (client, handle) = mock();
    let r = replica();
    let rec = reconciler(client, &r);
    let (ca, serving) = material(3650, 365);
    let secret = tls_secret(&ca.cert, &ca.key, &serving, "3");
    let mut config = mwc_json(Some(&ca.cert), "5");
    config["webhooks"][1]["clientConfig"]["caBundle"] = json!(b64("not a certificate"));
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, move |_| ok(secret)),
            step(Method::GET, MWC, move |_| ok(config)),
            step(Method::PATCH, MWC, |req| {
                assert_ca_bundle_patch(&req, "5", &WEBHOOKS[1..]);
                ok(mwc_json(None, "6"))
            }),
        ],
    ));
    let outcome = rec.reconcile_once().await.unwrap();
    // Without a client, a script still waiting for a request fails instead of hanging.
    drop(rec);
    script.await.unwrap();
    assert_eq!(outcome.ca_bundle_written, &WEBHOOKS[1..]);
}

#[tokio::test]
async fn api_error_names_the_object_and_the_answer() {
    let (client, handle) = mock();
    let r = replica();
    let rec = reconciler(client, &r);
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, |_| secret_not_found()),
            step(Method::POST, SECRETS, |_| {
                status(
                    403,
                    "Forbidden",
                    "secrets is forbidden: User \"system:serviceaccount:tracepatch:tracepatch\" cannot create resource \"secrets\"",
                )
            }),
        ],
    ));
    let err = rec.reconcile_once().await.unwrap_err();
    // Without a client, a script still waiting for a request fails instead of hanging.
    drop(rec);
    script.await.unwrap();
    assert!(matches!(
        err,
        SelfManagedError::Api {
            action: "create",
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "cannot create secret tracepatch/tracepatch-tls: 403 Forbidden: secrets is forbidden: \
         User \"system:serviceaccount:tracepatch:tracepatch\" cannot create resource \"secrets\""
    );
    assert!(!r.store.is_loaded());
    assert!(r.readiness.check(&r.store).is_err());
}

#[tokio::test]
async fn missing_webhook_configuration_is_an_error_but_the_certificate_is_served() {
    let (client, handle) = mock();
    let r = replica();
    let rec = reconciler(client, &r);
    let (ca, serving) = material(3650, 365);
    let secret = tls_secret(&ca.cert, &ca.key, &serving, "3");
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, move |_| ok(secret)),
            step(Method::GET, MWC, |_| {
                status(
                    404,
                    "NotFound",
                    "mutatingwebhookconfigurations.admissionregistration.k8s.io \"00-tracepatch\" not found",
                )
            }),
        ],
    ));
    let err = rec.reconcile_once().await.unwrap_err();
    // Without a client, a script still waiting for a request fails instead of hanging.
    drop(rec);
    script.await.unwrap();
    assert!(
        err.to_string()
            .starts_with("cannot read mutatingwebhookconfiguration 00-tracepatch: 404 NotFound"),
        "{err}"
    );
    assert_eq!(served(&r.store), leaf(&serving.cert));
    assert_eq!(
        r.readiness.check(&r.store),
        Err("webhook caBundle does not match the served certificate yet")
    );
}

// === tests: the loop ===

/// Awaits a script driven by `run`, failing (in paused time) instead of hanging when
/// the loop stops making the expected requests.
async fn finish(script: tokio::task::JoinHandle<Vec<Instant>>) -> Vec<Instant> {
    tokio::time::timeout(Duration::from_secs(24 * 3600), script)
        .await
        .expect("the loop made the scripted requests within a day")
        .unwrap()
}

/// Log lines written while the guard lives (current-thread runtime).
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
    let sink = Sink(buf.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || sink.clone())
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(start_paused = true)]
async fn api_errors_are_retried_with_growing_backoff_and_logged() {
    let (logs, _guard) = capture_logs();
    let (client, handle) = mock();
    let r = replica();
    let (ca, serving) = material(3650, 365);
    let secret = tls_secret(&ca.cert, &ca.key, &serving, "3");
    let (s1, s2) = (secret.clone(), secret);
    let (store, readiness) = (r.store.clone(), r.readiness.clone());
    let ca_pem = ca.cert.clone();
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, |_| {
                status(
                    403,
                    "Forbidden",
                    "secrets \"tracepatch-tls\" is forbidden: User \"system:serviceaccount:tracepatch:tracepatch\" cannot get resource \"secrets\"",
                )
            }),
            step(Method::GET, SECRET, |_| {
                status(500, "InternalError", "etcdserver: request timed out")
            }),
            step(Method::GET, SECRET, move |_| ok(s1)),
            step(Method::GET, MWC, |_| ok(mwc_json(None, "5"))),
            step(Method::PATCH, MWC, |_| {
                status(403, "Forbidden", "cannot patch resource")
            }),
            step(Method::GET, SECRET, move |_| {
                // Served, but not ready: the caBundle could not be written.
                assert!(store.is_loaded());
                assert_eq!(
                    readiness.check(&store),
                    Err("webhook caBundle does not match the served certificate yet")
                );
                ok(s2)
            }),
            step(Method::GET, MWC, |_| ok(mwc_json(None, "6"))),
            step(Method::PATCH, MWC, move |req| {
                assert_ca_bundle_patch(&req, "6", &WEBHOOKS);
                ok(mwc_json(Some(&ca_pem), "7"))
            }),
        ],
    ));
    let task = tokio::spawn(self_managed::run(
        client,
        args(),
        NS.into(),
        r.store.clone(),
        None,
    ));
    let t = finish(script).await;
    // Give the loop the moment it needs to record the last answer.
    tokio::time::sleep(Duration::from_millis(10)).await;
    task.abort();

    let gaps: Vec<Duration> = t.windows(2).map(|w| w[1] - w[0]).collect();
    // Failures 1, 2, 3: base 1 s doubling, each scaled into [0.5, 1).
    let in_range = |gap: Duration, lo: u64, hi: u64| {
        gap >= Duration::from_millis(lo) && gap < Duration::from_millis(hi)
    };
    assert!(
        in_range(gaps[0], 500, 1000),
        "first retry after {:?}",
        gaps[0]
    );
    assert!(
        in_range(gaps[1], 1000, 2000),
        "second retry after {:?}",
        gaps[1]
    );
    assert!(
        in_range(gaps[4], 2000, 4000),
        "third retry after {:?}",
        gaps[4]
    );
    assert_eq!(r.readiness.check(&r.store), Ok(()));

    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    for expected in [
        "cannot read secret tracepatch/tracepatch-tls: 403 Forbidden: secrets \\\"tracepatch-tls\\\" is forbidden",
        "cannot read secret tracepatch/tracepatch-tls: 500 InternalError: etcdserver: request timed out",
        "cannot patch mutatingwebhookconfiguration 00-tracepatch: 403 Forbidden",
    ] {
        assert!(
            logs.contains(expected) || logs.contains(&expected.replace("\\\"", "\"")),
            "log lacks {expected:?}:\n{logs}"
        );
    }
    assert!(logs.contains("retry_in_ms="), "{logs}");
    assert!(logs.contains("WARN"), "{logs}");
}

#[tokio::test(start_paused = true)]
async fn ca_bundle_reset_by_someone_else_is_put_back_at_the_next_check() {
    let (client, handle) = mock();
    let r = replica();
    let (ca, serving) = material(3650, 365);
    let secret = tls_secret(&ca.cert, &ca.key, &serving, "3");
    let (s1, s2) = (secret.clone(), secret);
    let (ca1, ca2) = (ca.cert.clone(), ca.cert.clone());
    let ca_der = der(ca.cert.as_bytes());
    let (store, readiness) = (r.store.clone(), r.readiness.clone());
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, move |_| ok(s1)),
            step(Method::GET, MWC, move |_| ok(mwc_json(Some(&ca1), "5"))),
            step(Method::GET, SECRET, move |_| {
                assert_eq!(
                    readiness.check(&store),
                    Ok(()),
                    "ready after the first check"
                );
                ok(s2)
            }),
            // `helm upgrade` put the chart's empty caBundle back.
            step(Method::GET, MWC, |_| ok(mwc_json(None, "8"))),
            step(Method::PATCH, MWC, move |req| {
                assert_eq!(assert_ca_bundle_patch(&req, "8", &WEBHOOKS), ca_der);
                ok(mwc_json(Some(&ca2), "9"))
            }),
        ],
    ));
    let task = tokio::spawn(self_managed::run(
        client,
        args(),
        NS.into(),
        r.store.clone(),
        None,
    ));
    let t = finish(script).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    task.abort();

    assert_eq!(
        t[2] - t[1],
        CHECK_INTERVAL,
        "checked again after the interval"
    );
    assert_eq!(served(&r.store), leaf(&serving.cert));
    assert_eq!(r.readiness.check(&r.store), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn certificate_written_by_another_replica_is_picked_up_without_restart() {
    let (client, handle) = mock();
    let r = replica();
    let (ca, first) = material(3650, 365);
    let second = issue::issue_serving(&ca, &service_spec(365 * DAY)).unwrap();
    let s1 = tls_secret(&ca.cert, &ca.key, &first, "3");
    let s2 = tls_secret(&ca.cert, &ca.key, &second, "4");
    let (ca1, ca2) = (ca.cert.clone(), ca.cert.clone());
    let store = r.store.clone();
    let first_leaf = leaf(&first.cert);
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, move |_| ok(s1)),
            step(Method::GET, MWC, move |_| ok(mwc_json(Some(&ca1), "5"))),
            step(Method::GET, SECRET, move |_| {
                assert_eq!(served(&store), first_leaf);
                ok(s2)
            }),
            step(Method::GET, MWC, move |_| ok(mwc_json(Some(&ca2), "5"))),
        ],
    ));
    let task = tokio::spawn(self_managed::run(
        client,
        args(),
        NS.into(),
        r.store.clone(),
        None,
    ));
    finish(script).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    task.abort();
    assert_eq!(served(&r.store), leaf(&second.cert));
}

// === tests: several replicas at once, against a fake apiserver ===

/// The objects of a fake apiserver with resourceVersion semantics.
struct FakeCluster {
    secret: Option<Value>,
    config: Value,
    next_rv: u64,
    creates: usize,
}

impl FakeCluster {
    fn rv(&mut self) -> String {
        self.next_rv += 1;
        self.next_rv.to_string()
    }

    fn handle(&mut self, method: &Method, path: &str, body: Value) -> (StatusCode, Value) {
        match (method.as_str(), path) {
            ("GET", SECRET) => match &self.secret {
                Some(s) => ok(s.clone()),
                None => secret_not_found(),
            },
            ("POST", SECRETS) => {
                if self.secret.is_some() {
                    return status(
                        409,
                        "AlreadyExists",
                        "secrets \"tracepatch-tls\" already exists",
                    );
                }
                self.creates += 1;
                let rv = self.rv();
                let s = with_rv(body, &rv);
                self.secret = Some(s.clone());
                (StatusCode::CREATED, s)
            }
            ("PUT", SECRET) => {
                let current = self
                    .secret
                    .as_ref()
                    .map(|s| s["metadata"]["resourceVersion"].clone());
                if current != Some(body["metadata"]["resourceVersion"].clone()) {
                    return status(409, "Conflict", "the object has been modified");
                }
                let rv = self.rv();
                let s = with_rv(body, &rv);
                self.secret = Some(s.clone());
                ok(s)
            }
            ("GET", MWC) => ok(self.config.clone()),
            ("PATCH", MWC) => {
                if body["metadata"]["resourceVersion"] != self.config["metadata"]["resourceVersion"]
                {
                    return status(409, "Conflict", "the object has been modified");
                }
                for patch in body["webhooks"].as_array().unwrap() {
                    for webhook in self.config["webhooks"].as_array_mut().unwrap() {
                        if webhook["name"] == patch["name"] {
                            webhook["clientConfig"]["caBundle"] =
                                patch["clientConfig"]["caBundle"].clone();
                        }
                    }
                }
                let rv = self.rv();
                self.config["metadata"]["resourceVersion"] = json!(rv);
                ok(self.config.clone())
            }
            _ => panic!("unexpected request {method} {path}"),
        }
    }
}

/// Serves one replica's requests from the shared fake; its first Secret read is held
/// until every replica has made one, so they all start from "no Secret".
async fn serve_fake(
    mut handle: Handle,
    cluster: Arc<Mutex<FakeCluster>>,
    start: Arc<tokio::sync::Barrier>,
) {
    let mut first = true;
    while let Some((request, send)) = handle.next_request().await {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let (code, reply) = cluster.lock().unwrap().handle(&method, &path, body);
        if first {
            first = false;
            start.wait().await;
        }
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
    }
}

#[tokio::test]
async fn replicas_starting_together_serve_the_same_certificate() {
    const REPLICAS: usize = 3;
    let cluster = Arc::new(Mutex::new(FakeCluster {
        secret: None,
        config: mwc_json(None, "1"),
        next_rv: 1,
        creates: 0,
    }));
    let start = Arc::new(tokio::sync::Barrier::new(REPLICAS));
    let mut replicas = Vec::new();
    let mut passes = Vec::new();
    for _ in 0..REPLICAS {
        let (client, handle) = mock();
        tokio::spawn(serve_fake(handle, cluster.clone(), start.clone()));
        let r = replica();
        let rec = reconciler(client, &r);
        passes.push(tokio::spawn(async move { rec.reconcile_once().await }));
        replicas.push(r);
    }
    let mut actions = Vec::new();
    for pass in passes {
        actions.push(pass.await.unwrap().unwrap().secret);
    }

    let cluster = cluster.lock().unwrap();
    assert_eq!(cluster.creates, 1, "exactly one replica created the Secret");
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == SecretAction::Created)
            .count(),
        1
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == SecretAction::TookOthers)
            .count(),
        REPLICAS - 1
    );
    let secret = cluster.secret.as_ref().unwrap();
    let tls = unb64(&secret["data"]["tls.crt"]);
    let ca = unb64(&secret["data"]["ca.crt"]);
    let expected = leaf(std::str::from_utf8(&tls).unwrap());
    for r in &replicas {
        assert_eq!(served(&r.store), expected);
        assert_eq!(r.readiness.check(&r.store), Ok(()));
    }
    for webhook in cluster.config["webhooks"].as_array().unwrap() {
        assert_eq!(unb64(&webhook["clientConfig"]["caBundle"]), ca);
        assert_eq!(webhook["futureField"], json!({ "keep": true }));
    }
}

// === tests: namespace ===

#[test]
fn namespace_comes_from_the_flag_else_the_service_account_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("namespace");
    std::fs::File::create(&file)
        .unwrap()
        .write_all(b"webhooks\n")
        .unwrap();
    assert_eq!(
        resolve_namespace_from(Some("flagged"), &file).unwrap(),
        "flagged"
    );
    assert_eq!(resolve_namespace_from(None, &file).unwrap(), "webhooks");
    let missing = dir.path().join("absent");
    let err = resolve_namespace_from(None, &missing).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "no --namespace given and cannot read {}",
            missing.display()
        )),
        "{err}"
    );
}

// === tests: matchConditions kept in step ===

#[tokio::test]
async fn match_conditions_follow_the_loaded_configuration() {
    use tracepatch::config::Config;
    use tracepatch::webhook_config::{CONDITION_NAME, render_conditions};

    let (client, handle) = mock();
    let r = replica();
    let conditions = render_conditions(&Config::default());
    let rec = reconciler(client, &r).with_match_conditions(conditions.clone());
    let (ca, serving) = material(3650, 365);
    let secret = tls_secret(&ca.cert, &ca.key, &serving, "3");
    let (s1, s2) = (secret.clone(), secret);
    // As a `helm upgrade` with another configuration left it: an old condition on the
    // pods webhook (beside a user's own, which stays), none on the services webhook.
    let mut stale = mwc_json(Some(&ca.cert), "5");
    stale["webhooks"][0]["matchConditions"] = json!([
        {"name": CONDITION_NAME, "expression": "object != null && false"},
        {"name": "team-filter", "expression": "true"},
    ]);
    let mut in_step = mwc_json(Some(&ca.cert), "6");
    for (i, name) in WEBHOOKS.iter().enumerate() {
        in_step["webhooks"][i]["matchConditions"] = json!([
            {"name": CONDITION_NAME, "expression": conditions.for_webhook(name).unwrap()},
        ]);
    }
    let want = conditions.clone();
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, move |_| ok(s1)),
            step(Method::GET, MWC, move |_| ok(stale)),
            step(Method::PATCH, MWC, move |req| {
                assert_eq!(req.body["metadata"]["resourceVersion"], "5");
                let patched = req.body["webhooks"].as_array().unwrap();
                assert_eq!(patched.len(), WEBHOOKS.len(), "{}", req.body);
                for (w, name) in patched.iter().zip(WEBHOOKS) {
                    assert_eq!(w["name"], name);
                    // The caBundle was right: only the condition is written.
                    assert!(w.get("clientConfig").is_none(), "{w}");
                    assert_eq!(
                        w["matchConditions"],
                        json!([{"name": CONDITION_NAME, "expression": want.for_webhook(name).unwrap()}])
                    );
                }
                ok(json!({}))
            }),
            // The next check finds them in step and writes nothing.
            step(Method::GET, SECRET, move |_| ok(s2)),
            step(Method::GET, MWC, move |_| ok(in_step)),
        ],
    ));

    let first = rec.reconcile_once().await.unwrap();
    let second = rec.reconcile_once().await.unwrap();
    drop(rec);
    script.await.unwrap();

    assert!(first.ca_bundle_written.is_empty());
    assert_eq!(first.match_conditions_written, WEBHOOKS);
    assert!(second.match_conditions_written.is_empty());
    assert_eq!(r.readiness.check(&r.store), Ok(()));
}

#[tokio::test]
async fn a_ca_bundle_that_no_longer_trusts_us_and_cannot_be_fixed_makes_the_replica_unready() {
    let (client, handle) = mock();
    let r = replica();
    let rec = reconciler(client, &r);
    let (ca, serving) = material(3650, 365);
    let other = issue::generate_ca("someone else's CA", 3650 * DAY).unwrap();
    let secret = tls_secret(&ca.cert, &ca.key, &serving, "3");
    let (s1, s2) = (secret.clone(), secret);
    let ca_pem = ca.cert.clone();
    let script = tokio::spawn(serve_script(
        handle,
        vec![
            step(Method::GET, SECRET, move |_| ok(s1)),
            step(Method::GET, MWC, move |_| ok(mwc_json(Some(&ca_pem), "5"))),
            // Someone replaced the caBundle, and our patch is refused (RBAC taken away).
            step(Method::GET, SECRET, move |_| ok(s2)),
            step(Method::GET, MWC, move |_| {
                ok(mwc_json(Some(&other.cert), "6"))
            }),
            step(Method::PATCH, MWC, |_| {
                status(403, "Forbidden", "cannot patch")
            }),
        ],
    ));

    rec.reconcile_once().await.unwrap();
    assert_eq!(r.readiness.check(&r.store), Ok(()));
    let err = rec.reconcile_once().await.unwrap_err();
    drop(rec);
    script.await.unwrap();

    assert!(
        matches!(
            err,
            SelfManagedError::Api {
                action: "patch",
                ..
            }
        ),
        "{err}"
    );
    // The read showed the apiserver cannot verify what we serve: not ready.
    assert!(r.readiness.check(&r.store).is_err());
}
