//! Hostile input (issue 6), by size: megabyte values in every field the rules read or
//! echo, 100,000 variables, the bound on copies of the tracer variables, a review just
//! under the 7 MiB limit and a body just over it
//! (through the router; bodies far over the limit, over the wire, are in
//! `hostile_http.rs`).

mod support;

use serde_json::json;
use support::hostile::*;

#[tokio::test]
async fn megabyte_strings_within_the_limit_are_handled() {
    let big = |n: usize| "x".repeat(n);
    let base = pod();
    let env = "/request/object/metadata/annotations/apm.datadoghq.com~1env";
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "3 MB annotation variable value",
            set(
                &base,
                env,
                json!(format!(r#"{{"DD_TAGS": "{}"}}"#, big(3 * MIB))),
            ),
            Want::Unchanged("over the 256 KiB Kubernetes allows"),
        ),
        (
            "200 KB annotation variable value",
            set(
                &base,
                env,
                json!(format!(r#"{{"DD_TAGS": "{}"}}"#, big(200 * 1024))),
            ),
            Want::Patched(""),
        ),
        (
            "3 MB annotation value that is not JSON",
            set(&base, env, json!(big(3 * MIB))),
            Want::Unchanged("over the 256 KiB Kubernetes allows"),
        ),
        (
            "200 KB annotation value that is not JSON",
            set(&base, env, json!(big(200 * 1024))),
            Want::Unchanged("invalid JSON"),
        ),
        (
            "3 MB variable name",
            set(&base, env, json!(format!(r#"{{"{}": "x"}}"#, big(3 * MIB)))),
            Want::Unchanged("over the 256 KiB Kubernetes allows"),
        ),
        (
            // Kubernetes sets no length limit on a variable name.
            "200 KB variable name",
            set(
                &base,
                env,
                json!(format!(r#"{{"{}": "x"}}"#, big(200 * 1024))),
            ),
            Want::Patched(""),
        ),
        (
            "100,000 variables in the annotation",
            set(
                &base,
                env,
                json!(
                    serde_json::to_string(
                        &(0..100_000)
                            .map(|i| (format!("V{i}"), json!("x")))
                            .collect::<serde_json::Map<_, _>>()
                    )
                    .unwrap()
                ),
            ),
            Want::Unchanged("over the 256 KiB Kubernetes allows"),
        ),
        (
            "15,000 variables in the annotation (under 256 KiB)",
            set(
                &base,
                env,
                json!(
                    serde_json::to_string(
                        &(0..15_000)
                            .map(|i| (format!("V{i}"), json!("x")))
                            .collect::<serde_json::Map<_, _>>()
                    )
                    .unwrap()
                ),
            ),
            Want::Patched(""),
        ),
        (
            "3 MB label value feeding DD_ENV",
            set(
                &base,
                "/request/object/metadata/labels/tags.datadoghq.com~1env",
                json!(big(3 * MIB)),
            ),
            Want::Patched(""),
        ),
        (
            "3 MB agent label value",
            set(
                &agent_pod(),
                "/request/object/metadata/labels/app",
                json!(big(3 * MIB)),
            ),
            Want::Patched(""),
        ),
        (
            "3 MB container name",
            set(
                &base,
                "/request/object/spec/containers/1/name",
                json!(big(3 * MIB)),
            ),
            Want::Patched(""),
        ),
        (
            "3 MB image",
            set(
                &agent_pod(),
                "/request/object/spec/containers/0/image",
                json!(big(3 * MIB)),
            ),
            Want::Patched(""),
        ),
        (
            "3 MB uid",
            set(&base, "/request/uid", json!(big(3 * MIB))),
            Want::Patched(""),
        ),
        (
            "3 MB namespace",
            set(&base, "/request/namespace", json!(big(3 * MIB))),
            Want::Patched(""),
        ),
        (
            "3 MB name",
            set(&base, "/request/name", json!(big(3 * MIB))),
            Want::Patched(""),
        ),
        (
            "3 MB kind",
            set(&base, "/request/kind/kind", json!(big(3 * MIB))),
            Want::Unchanged(""),
        ),
        (
            "3 MB apiVersion",
            set(&base, "/apiVersion", json!(big(3 * MIB))),
            Want::Refused(400, "unsupported apiVersion"),
        ),
        (
            "3 MB operation",
            set(&base, "/request/operation", json!(big(3 * MIB))),
            Want::Refused(400, "request.operation is"),
        ),
        (
            "3 MB CronJob name",
            set(
                &cronjob(),
                "/request/object/metadata/name",
                json!(big(3 * MIB)),
            ),
            Want::Unchanged("not a valid label value"),
        ),
        (
            "3 MB service port name",
            set(
                &service(),
                "/request/object/spec/ports/1/name",
                json!(big(3 * MIB)),
            ),
            Want::Patched(""),
        ),
        (
            "1 MB proxy.istio.io/config YAML",
            set(
                &base,
                "/request/object/metadata/annotations/proxy.istio.io~1config",
                json!(
                    (0..50_000)
                        .map(|i| format!("k{i}: v{i}\n"))
                        .collect::<String>()
                ),
            ),
            Want::Patched("over the 256 KiB Kubernetes allows"),
        ),
        (
            "a review just under the limit",
            {
                let mut body = to_vec(&pod());
                let pad = LIMIT - body.len() - 64;
                body = with(&pod(), |v| {
                    v["request"]["object"]["metadata"]["labels"]["pad"] = json!(big(pad))
                });
                assert!(body.len() <= LIMIT);
                body
            },
            Want::Patched(""),
        ),
        (
            "just over the limit",
            vec![b' '; LIMIT + 1],
            Want::Refused(413, "request body exceeds 7340032 bytes"),
        ),
    ];
    for (name, body, want) in cases {
        assert!(body.len() <= LIMIT + 1, "{name}: {} bytes", body.len());
        run_case(name, body, want).await;
    }
}

/// Every tracer variable is copied into every target container: the one step whose
/// output grows as a product. A pod whose copies would make more than 3 MiB of patch
/// (1,000 variables of 100 bytes into 30 containers named `istio-proxy`) gets no copies
/// and a warning saying why (proxyMetadata still gets them); 20 such containers, under
/// the bound, get every copy.
#[tokio::test]
async fn copies_of_the_tracer_variables_are_bounded_at_3_mib_of_patch() {
    let vars: serde_json::Map<String, serde_json::Value> = (0..1000)
        .map(|i| (format!("V{i:04}"), json!("x".repeat(100))))
        .collect();
    let with_sidecars = |n: usize| {
        with(&pod(), |v| {
            let object = &mut v["request"]["object"];
            object["metadata"]["annotations"]["apm.datadoghq.com/env"] =
                json!(serde_json::Value::Object(vars.clone()).to_string());
            object["spec"]["containers"] = (0..n)
                .map(|_| json!({"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.22.0"}))
                .collect();
        })
    };
    run_case(
        "1,000 variables into 30 sidecars",
        with_sidecars(30),
        Want::AdmittedWith {
            ops: 1,
            warnings: &[
                "tracepatch tracer-env: 1000 variables into 30 containers would make a patch over 3 MiB; containers left alone",
            ],
        },
    )
    .await;
    // Under the bound: the annotation, then for each container its env list and the
    // 1,000 variables.
    run_case(
        "1,000 variables into 20 sidecars",
        with_sidecars(20),
        Want::AdmittedWith {
            ops: 1 + 20 * 1001,
            warnings: &[],
        },
    )
    .await;
}
