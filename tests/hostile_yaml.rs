//! Hostile input (issue 6) in `proxy.istio.io/config`, the one annotation read as YAML:
//! alias bombs (plain and through merge keys), recursive aliases, tags, directives,
//! documents, 100,000 keys, anchors and aliases. Each within 10 s, answered as stated.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::hostile::*;

#[tokio::test]
async fn proxy_config_yaml_bombs_tags_and_anchors() {
    let base = pod();
    let proxy = "/request/object/metadata/annotations/proxy.istio.io~1config";
    // "Billion laughs": nine levels of ten aliases each, 10^9 strings if expanded.
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let (prev, next) = (w[0], w[1]);
        bomb.push_str(&format!(
            "{next}: &{next} [{}]\n",
            vec![format!("*{prev}"); 9].join(",")
        ));
    }
    bomb.push_str("proxyMetadata: {X: *i}\n");
    let merge_bomb = format!("{bomb}base: &base {{k: *i}}\nproxyMetadata:\n  <<: *base\n");
    let cases: Vec<(&str, String, Want)> = vec![
        ("billion laughs", bomb.clone(), Want::Patched("")),
        (
            "billion laughs through a merge key",
            merge_bomb,
            Want::Patched(""),
        ),
        (
            "billion laughs as the whole config",
            format!("{bomb}x: *i\n"),
            Want::Patched(""),
        ),
        (
            "anchors and aliases to a map",
            "base: &m {DD_A: x}\nproxyMetadata: *m\n".into(),
            Want::Patched(""),
        ),
        (
            "alias to an undefined anchor",
            "proxyMetadata: *nope\n".into(),
            Want::Patched("cannot be read"),
        ),
        ("recursive alias", "a: &a [*a]\n".into(), Want::Patched("")),
        (
            "tags: !!binary",
            "proxyMetadata: !!binary aGVsbG8=\n".into(),
            Want::Patched(""),
        ),
        (
            "tags: !!str and !!int",
            "proxyMetadata: {A: !!str 1, B: !!int \"2\"}\nconcurrency: !!int 2\n".into(),
            Want::Patched(""),
        ),
        (
            "tags: custom local tag",
            "proxyMetadata: !custom {A: b}\n".into(),
            Want::Patched(""),
        ),
        (
            "tags: !!set and !!omap",
            "s: !!set {a, b}\no: !!omap [a: 1]\n".into(),
            Want::Patched(""),
        ),
        (
            "tags: verbatim",
            "proxyMetadata: !<tag:yaml.org,2002:map> {A: b}\n".into(),
            Want::Patched(""),
        ),
        (
            "directive and documents",
            "%YAML 1.2\n---\nproxyMetadata: {}\n...\n---\nx: 1\n".into(),
            Want::Patched(""),
        ),
        (
            "duplicate keys",
            "proxyMetadata: {A: 1}\nproxyMetadata: {B: 2}\n".into(),
            Want::Patched(""),
        ),
        ("complex key", "? [a, b]\n: c\n".into(), Want::Patched("")),
        (
            "tab indentation",
            "proxyMetadata:\n\tA: b\n".into(),
            Want::Patched(""),
        ),
        (
            "unterminated flow",
            "proxyMetadata: {A: [b\n".into(),
            Want::Patched("cannot be read"),
        ),
        (
            "invalid escape",
            "x: \"\\q\"\n".into(),
            Want::Patched("cannot be read"),
        ),
        ("NUL in YAML", "x: a\u{0}b\n".into(), Want::Patched("")),
        (
            "BOM in YAML",
            "\u{feff}proxyMetadata: {}\n".into(),
            Want::Patched(""),
        ),
        (
            "huge YAML, 100,000 keys",
            (0..100_000).map(|i| format!("k{i}: v{i}\n")).collect(),
            Want::Patched("over the 256 KiB Kubernetes allows"),
        ),
        (
            "large YAML under 256 KiB, 15,000 keys",
            (0..15_000).map(|i| format!("k{i}: v{i}\n")).collect(),
            Want::Patched(""),
        ),
        (
            "huge YAML, 100,000 proxyMetadata entries",
            format!(
                "proxyMetadata:\n{}",
                (0..100_000)
                    .map(|i| format!("  K{i}: v\n"))
                    .collect::<String>()
            ),
            Want::Patched("over the 256 KiB Kubernetes allows"),
        ),
        (
            "large YAML under 256 KiB, 20,000 proxyMetadata entries",
            format!(
                "proxyMetadata:\n{}",
                (0..20_000)
                    .map(|i| format!("  K{i}: v\n"))
                    .collect::<String>()
            ),
            Want::Patched(""),
        ),
        (
            "huge YAML, one 2 MB scalar",
            format!("x: {}\n", "y".repeat(2 * MIB)),
            Want::Patched("over the 256 KiB Kubernetes allows"),
        ),
        (
            "100,000 anchors",
            (0..100_000).map(|i| format!("k{i}: &a{i} v\n")).collect(),
            Want::Patched("over the 256 KiB Kubernetes allows"),
        ),
        (
            "15,000 anchors",
            (0..15_000).map(|i| format!("k{i}: &a{i} v\n")).collect(),
            Want::Patched(""),
        ),
        (
            "100,000 aliases to one anchor",
            format!("a: &a v\nl: [{}]\n", vec!["*a"; 100_000].join(",")),
            Want::Patched("over the 256 KiB Kubernetes allows"),
        ),
        (
            "60,000 aliases to one anchor",
            format!("a: &a v\nl: [{}]\n", vec!["*a"; 60_000].join(",")),
            Want::Patched(""),
        ),
        (
            "JSON with duplicate keys",
            r#"{"proxyMetadata": {"A": "1"}, "proxyMetadata": {"B": "2"}}"#.into(),
            Want::Patched(""),
        ),
        (
            "JSON with a lone surrogate",
            r#"{"proxyMetadata": {"A": "\ud800"}}"#.into(),
            Want::Patched(""),
        ),
    ];
    for (name, yaml, want) in cases {
        let started = Instant::now();
        run_case(
            &format!("proxy.istio.io/config: {name}"),
            set(&base, proxy, json!(yaml)),
            want,
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "proxy.istio.io/config: {name}: took {:?}",
            started.elapsed()
        );
    }
}
