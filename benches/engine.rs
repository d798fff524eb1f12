//! decode → rules → patch → encode, as the server does it for every request, on the
//! realistic Istio-injected pod of `tests/fixtures/tracer-env/istio-injected-pod`
//! (istio-proxy with 43 environment variables as Istio writes them, three application
//! containers, a dozen annotations, the Datadog annotation with four variables).
//!
//! Run: `cargo bench --bench engine`. Figures go to BENCHMARKS.md.

use std::hint::black_box;

/// The binary's allocator, so the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use tracepatch::admission;
use tracepatch::engine::Engine;

fn review_body(object: &Value, group: &str, kind: &str, resource: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0c9a8d74-9cb7-44dd-b98e-09fd62def2f4",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "requestKind": {"group": group, "version": "v1", "kind": kind},
            "requestResource": {"group": group, "version": "v1", "resource": resource},
            "name": object["metadata"]["name"],
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": "7b1e5c8d-0000-4000-8000-000000000001",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    }))
    .expect("serializable")
}

fn fixture(path: &str) -> Value {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/{path}/input.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    serde_saphyr::from_str(&text).expect("fixture parses")
}

fn bench(c: &mut Criterion) {
    let engine = Engine::default();
    let pod = fixture("tracer-env/istio-injected-pod");
    let mut plain = pod.clone();
    plain["metadata"]["annotations"]
        .as_object_mut()
        .expect("annotations")
        .remove("apm.datadoghq.com/env");
    plain["metadata"]["labels"]
        .as_object_mut()
        .expect("labels")
        .remove("tags.datadoghq.com/service");
    let svc = fixture("trace-port/datadog-agent-headless-service");

    let cases = [
        (
            "istio_injected_pod_annotated",
            review_body(&pod, "", "Pod", "pods"),
        ),
        (
            "istio_injected_pod_nothing_to_do",
            review_body(&plain, "", "Pod", "pods"),
        ),
        (
            "agent_service",
            review_body(&svc, "", "Service", "services"),
        ),
    ];
    let mut group = c.benchmark_group("admission_review");
    // The floor: the one parse of the body that every review needs, nothing else.
    let (_, annotated) = &cases[0];
    group.throughput(Throughput::Bytes(annotated.len() as u64));
    group.bench_function("parse_only_floor", |b| {
        b.iter(|| {
            let mut buf = black_box(annotated).clone();
            let tape = simd_json::to_tape(&mut buf).expect("valid JSON");
            black_box(tape.as_value().get("request").is_some())
        })
    });
    for (name, body) in &cases {
        // The realistic body must actually be patched, or the benchmark measures nothing.
        let r = admission::review(&engine, body).expect("valid review");
        assert_eq!(
            r.outcome.patch.is_empty(),
            name.contains("nothing"),
            "{name}"
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| {
                let reviewed = admission::review(&engine, black_box(body)).expect("valid review");
                black_box(reviewed.response_json())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
