#!/usr/bin/env python3
"""Unit tests of the Istio stand-in (istio_standin.py), no cluster needed:

    tests/e2e/python.sh tests/e2e/test_istio_standin.py

(python.sh runs it with the pinned PyYAML of tests/e2e/requirements.txt; any python3 with
PyYAML works too.) The cases pin the behaviour of Istio's injector that tracepatch's e2e
checks rely on: which values survive the template's `value: "{{ $value }}"` line byte for
byte, which make it refuse the pod, and where the sidecar goes.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import istio_standin as standin  # noqa: E402

CLASSIC = standin.Settings()
NATIVE = standin.Settings(native_sidecars=True)
DATADOG = standin.Settings(tracer="datadog")

REFUSAL = "failed to run injection template: failed applying injection overlay: strategic merge: invalid JSON document"


def pod(annotations=None, labels=None, containers=("app",), init=(), namespace="shop", **spec):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": namespace, "labels": dict(labels or {"app": "web"}),
                     "annotations": dict(annotations or {})},
        "spec": {"containers": [{"name": n, "image": "shop/web:1"} for n in containers],
                 **({"initContainers": [{"name": n, "image": "shop/init:1"} for n in init]} if init else {}),
                 **spec},
    }


def with_metadata(meta: dict, **kw) -> dict:
    return pod({"proxy.istio.io/config": json.dumps({"proxyMetadata": meta})}, **kw)


def review(obj: dict) -> dict:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "0b7f-uid", "namespace": obj["metadata"]["namespace"], "operation": "CREATE",
                        "object": obj}}


def find(items, name):
    return [c for c in items or [] if c.get("name") == name]


def proxy(p: dict) -> dict:
    got = find(p["spec"].get("containers"), "istio-proxy") + find(p["spec"].get("initContainers"), "istio-proxy")
    assert len(got) == 1, f"{len(got)} istio-proxy containers"
    return got[0]


def env_values(container: dict, name: str) -> list[str]:
    return [e.get("value", "") for e in container.get("env") or [] if e.get("name") == name]


def apply_patch(obj: dict, patch: list) -> dict:
    """Enough of RFC 6902 for the stand-in's patches (add at an object member)."""
    out = copy.deepcopy(obj)
    for op in patch:
        assert op["op"] == "add", op
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target = out
        for p in parts[:-1]:
            target = target[p]
        target[parts[-1]] = op["value"]
    return out


# Values the template's line carries unchanged (go-yaml v2 and libyaml agree on these).
SAFE = {
    "plain": "prod",
    "leading and trailing spaces": "  padded  ",
    "hash": "v1 # not a comment",
    "colon space": "key: value",
    "non-ASCII": "café ☕ 東京",
    "empty": "",
    "tab": "a\tb",
    "single quote": "it's",
    "braces": "{not json}",
}
# Values that make Istio refuse the pod.
REFUSED = {
    "JSON array": '[{"sample_rate":0.5}]',
    "JSON object": '{"team":"shop"}',
    "quote": 'say "hi"',
    "lone backslash": "\\",
    "control character": "a\x01b",
    "DEL": "a\x7fb",
    "U+2028": "a\u2028b",  # a line break in PROXY_CONFIG's literal block
    "U+0085": "a\u0085b",
}
# Values Istio admits but changes: the sidecar would get something else.
CHANGED = {
    "newline": ("line1\nline2", "line1 line2"),
    "CRLF": ("a\r\nb", "a b"),
    "backslash escape": ("team:a\\nb", "team:a\nb"),
    "backslash b": ("a\\b", "a\x08"),
    "quote then comment": ('x" # y', "x"),
}


class ProxyMetadataRendering(unittest.TestCase):
    def test_a_safe_value_comes_through_byte_for_byte(self):
        for what, value in SAFE.items():
            with self.subTest(what):
                injected = standin.inject(with_metadata({"DD_VALUE": value}), CLASSIC)
                self.assertEqual(env_values(proxy(injected), "DD_VALUE"), [value])
                init = find(injected["spec"]["initContainers"], "istio-init")[0]
                self.assertEqual(env_values(init, "DD_VALUE"), [value])

    def test_a_quote_makes_istio_refuse_the_pod(self):
        answer, _ = standin.admit(review(with_metadata({"DD_TAGS": 'say "hi"'})), CLASSIC)
        self.assertEqual(answer["response"]["uid"], "0b7f-uid")
        self.assertIs(answer["response"]["allowed"], False)
        self.assertEqual(answer["response"]["status"]["message"], REFUSAL)
        self.assertNotIn("patch", answer["response"])

    def test_values_that_break_the_template_refuse_the_pod(self):
        for what, value in REFUSED.items():
            with self.subTest(what), self.assertRaises(standin.InjectionError):
                standin.inject(with_metadata({"DD_VALUE": value}), CLASSIC)

    def test_values_the_template_changes_are_admitted_changed(self):
        for what, (value, becomes) in CHANGED.items():
            with self.subTest(what):
                injected = standin.inject(with_metadata({"DD_VALUE": value}), CLASSIC)
                self.assertEqual(env_values(proxy(injected), "DD_VALUE"), [becomes])

    def test_the_exact_template_line_is_substituted_as_text(self):
        text = standin.render(with_metadata({"DD_ENV": "prod", "A_FIRST": "x y"}), CLASSIC)
        self.assertIn('    - name: A_FIRST\n      value: "x y"\n    - name: DD_ENV\n      value: "prod"\n', text)
        self.assertEqual(text.count('- name: DD_ENV\n      value: "prod"\n'), 2)  # istio-init and istio-proxy

    def test_entries_render_in_sorted_key_order_like_a_go_map(self):
        injected = standin.inject(with_metadata({"B": "2", "A": "1", "C": "3"}), CLASSIC)
        names = [e["name"] for e in proxy(injected)["env"] if e["name"] in "ABC"]
        self.assertEqual(names, ["A", "B", "C"])

    def test_a_name_yaml_reads_as_a_boolean_refuses_the_pod(self):
        # go-yaml v2 reads y, Y, n, N, yes, on, off, true ... as booleans; EnvVar.name is a string.
        for name in ("Y", "n", "yes", "ON", "false"):
            with self.subTest(name), self.assertRaisesRegex(standin.InjectionError, "cannot unmarshal bool"):
                standin.inject(with_metadata({name: "1"}), CLASSIC)

    def test_a_name_go_yaml_reads_as_a_number_refuses_the_pod(self):
        # Valid Kubernetes env names ([-._a-zA-Z][-._a-zA-Z0-9]*) that go-yaml v2 types as
        # numbers; PyYAML alone would read -.5, -1e5 and -_1 as strings.
        for name in ("-1", "-_1", "-.5", ".5", "-1e5", "-.inf"):
            with self.subTest(name), self.assertRaisesRegex(standin.InjectionError, "cannot unmarshal number"):
                standin.inject(with_metadata({name: "1"}), CLASSIC)

    def test_a_lone_dash_name_breaks_the_template(self):
        with self.assertRaises(standin.InjectionError):
            standin.inject(with_metadata({"-": "1"}), CLASSIC)

    def test_a_null_name_renders_a_variable_without_a_name(self):
        # Istio admits it; the apiserver's validation then refuses the pod (env[].name required).
        injected = standin.inject(with_metadata({"null": "1"}), CLASSIC)
        self.assertEqual(env_values(proxy(injected), ""), ["1"])

    def test_names_that_stay_strings(self):
        for name in ("DD_ENV", "-abc", "._1", ".e5", "a.b-c", "YES_PLEASE", "Nope"):
            with self.subTest(name):
                self.assertEqual(env_values(proxy(standin.inject(with_metadata({name: "1"}), CLASSIC)), name), ["1"])

    def test_yaml_proxy_config_annotation_is_read_like_json(self):
        p = pod({"proxy.istio.io/config": "proxyMetadata:\n  DD_ENV: prod\nconcurrency: 2\n"})
        self.assertEqual(env_values(proxy(standin.inject(p, CLASSIC)), "DD_ENV"), ["prod"])

    def test_a_malformed_proxy_config_refuses_the_pod(self):
        for text in ("proxyMetadata: [", '{"proxyMetadata":{"DD_RATE":0.5}}'):
            with self.subTest(text), self.assertRaisesRegex(standin.InjectionError,
                                                            "^failed to process pod: could not parse proxy config"):
                standin.inject(pod({"proxy.istio.io/config": text}), CLASSIC)


class Placement(unittest.TestCase):
    def test_classic_sidecar_is_the_last_container_and_istio_init_the_last_init_container(self):
        injected = standin.inject(pod(containers=("app", "worker"), init=("migrate",)), CLASSIC)
        self.assertEqual([c["name"] for c in injected["spec"]["containers"]], ["app", "worker", "istio-proxy"])
        self.assertEqual([c["name"] for c in injected["spec"]["initContainers"]], ["migrate", "istio-init"])
        self.assertNotIn("restartPolicy", proxy(injected))

    def test_native_sidecar_is_an_init_container_with_restart_policy_always(self):
        injected = standin.inject(pod(init=("migrate",)), NATIVE)
        self.assertEqual([c["name"] for c in injected["spec"]["containers"]], ["app"])
        self.assertEqual([c["name"] for c in injected["spec"]["initContainers"]], ["istio-init", "istio-proxy", "migrate"])
        self.assertEqual(proxy(injected)["restartPolicy"], "Always")

    def test_the_native_sidecar_annotation_wins_over_the_global_flag(self):
        on = standin.inject(pod({"sidecar.istio.io/nativeSidecar": "true"}), CLASSIC)
        self.assertEqual(proxy(on).get("restartPolicy"), "Always")
        off = standin.inject(pod({"sidecar.istio.io/nativeSidecar": "false"}), NATIVE)
        self.assertEqual([c["name"] for c in off["spec"]["containers"]], ["app", "istio-proxy"])

    def test_hold_application_until_proxy_starts_puts_the_proxy_first(self):
        p = pod({"proxy.istio.io/config": '{"holdApplicationUntilProxyStarts": true}'})
        self.assertEqual([c["name"] for c in standin.inject(p, CLASSIC)["spec"]["containers"]], ["istio-proxy", "app"])

    def test_status_annotation_names_what_was_injected(self):
        injected = standin.inject(pod(), CLASSIC)
        self.assertEqual(injected["metadata"]["annotations"]["sidecar.istio.io/status"],
                         '{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":null,'
                         '"imagePullSecrets":null,"revision":"default"}')
        native = standin.inject(pod(), NATIVE)
        self.assertEqual(json.loads(native["metadata"]["annotations"]["sidecar.istio.io/status"])["initContainers"],
                         ["istio-init", "istio-proxy"])

    def test_a_users_own_istio_proxy_is_kept_on_top_of_the_template(self):
        p = pod(containers=("app", "istio-proxy"))
        p["spec"]["containers"][1]["env"] = [{"name": "DD_ENV", "value": "mine"}]
        p["metadata"]["annotations"]["proxy.istio.io/config"] = '{"proxyMetadata":{"DD_ENV":"meta"}}'
        injected = standin.inject(p, CLASSIC)
        self.assertEqual(env_values(proxy(injected), "DD_ENV"), ["mine"])
        self.assertEqual(proxy(injected)["image"], "shop/web:1")

    def test_reinjection_strips_what_the_status_lists_and_injects_once(self):
        first = standin.inject(with_metadata({"DD_ENV": "prod"}), CLASSIC)
        proxy(first)["env"].append({"name": "DD_DIRECT", "value": 'set "directly"'})
        again = standin.inject(first, CLASSIC)
        self.assertEqual([c["name"] for c in again["spec"]["containers"]], ["app", "istio-proxy"])
        self.assertEqual([c["name"] for c in again["spec"]["initContainers"]], ["istio-init"])
        # The old sidecar is merged with the new rendering, so what was set on it stays.
        self.assertEqual(env_values(proxy(again), "DD_DIRECT"), ['set "directly"'])
        self.assertEqual(env_values(proxy(again), "DD_ENV"), ["prod"])


class Decision(unittest.TestCase):
    def test_the_inject_label_wins_over_the_annotation(self):
        p = pod({"sidecar.istio.io/inject": "true"}, labels={"sidecar.istio.io/inject": "false"})
        self.assertEqual(standin.inject_required(p)[0], False)
        p = pod({"sidecar.istio.io/inject": "false"}, labels={"sidecar.istio.io/inject": "true"})
        self.assertEqual(standin.inject_required(p)[0], True)

    def test_the_annotation_alone_opts_out_and_anything_else_is_the_default(self):
        self.assertEqual(standin.inject_required(pod({"sidecar.istio.io/inject": "false"}))[0], False)
        self.assertEqual(standin.inject_required(pod({"sidecar.istio.io/inject": "nope"}))[0], True)
        self.assertEqual(standin.inject_required(pod())[0], True)

    def test_host_network_and_system_namespaces_are_skipped(self):
        self.assertEqual(standin.inject_required(pod(hostNetwork=True))[0], False)
        for ns in ("kube-system", "kube-public", "kube-node-lease", "local-path-storage"):
            self.assertEqual(standin.inject_required(pod(namespace=ns))[0], False)

    def test_a_skipped_pod_is_allowed_without_a_patch(self):
        answer, line = standin.admit(review(pod(labels={"sidecar.istio.io/inject": "false"})), CLASSIC)
        self.assertEqual(answer["response"], {"uid": "0b7f-uid", "allowed": True})
        self.assertIn("skipped", line)

    def test_the_patch_gives_the_injected_pod(self):
        p = with_metadata({"DD_ENV": "prod"})
        answer, _ = standin.admit(review(p), CLASSIC)
        self.assertEqual(answer["response"]["patchType"], "JSONPatch")
        patched = apply_patch(p, json.loads(base64.b64decode(answer["response"]["patch"])))
        self.assertEqual(patched, standin.inject(p, CLASSIC))


class DatadogTracer(unittest.TestCase):
    def test_the_datadog_branch_renders_the_annotation_with_the_same_line(self):
        p = pod({"apm.datadoghq.com/env": '{"DD_ENV":"prod","DD_TRACE_SAMPLE_RATE":0.5,"DD_LOGS_INJECTION":true}'})
        env = proxy(standin.inject(p, DATADOG))["env"]
        self.assertEqual([(e["name"], e["value"]) for e in env if e["name"].startswith("DD_")],
                         [("DD_ENV", "prod"), ("DD_LOGS_INJECTION", "true"), ("DD_TRACE_SAMPLE_RATE", "0.5")])

    def test_the_datadog_branch_is_off_without_the_tracer_setting(self):
        p = pod({"apm.datadoghq.com/env": '{"DD_ENV":"prod"}'})
        self.assertEqual(env_values(proxy(standin.inject(p, CLASSIC)), "DD_ENV"), [])

    def test_a_quote_in_the_annotation_makes_istio_refuse_the_pod(self):
        answer, _ = standin.admit(review(pod({"apm.datadoghq.com/env": '{"DD_TAGS":"say \\"hi\\""}'})), DATADOG)
        self.assertIs(answer["response"]["allowed"], False)
        self.assertEqual(answer["response"]["status"]["message"], REFUSAL)

    def test_json_values_print_as_go_prints_them(self):
        # fmt's %v of what json.Unmarshal made: numbers are float64, arrays []any, objects map[string]any.
        cases = {"1000000": "1e+06", "100": "100", "0.1": "0.1", "1.5e-7": "1.5e-07", "false": "false",
                 '{"b":1,"a":[1,"x"]}': "map[a:[1 x] b:1]", "null": "<no value>", "[null]": "[<nil>]"}
        for json_value, printed in cases.items():
            with self.subTest(json_value):
                self.assertEqual(standin.go_sprint(json.loads(json_value)), printed)
        p = pod({"apm.datadoghq.com/env": '{"DD_TRACE_RATE_LIMIT":1000000}'})
        self.assertEqual(env_values(proxy(standin.inject(p, DATADOG)), "DD_TRACE_RATE_LIMIT"), ["1e+06"])

    def test_malformed_json_fails_the_template(self):
        with self.assertRaisesRegex(standin.InjectionError, "range can't iterate over"):
            standin.inject(pod({"apm.datadoghq.com/env": "{not json"}), DATADOG)

    def test_another_annotation_is_not_read(self):
        p = with_metadata({"DD_TAGS": "team:shop"})
        p["metadata"]["annotations"]["tracepatch.io/tracer-env"] = '{"DD_TAGS":"say \\"hi\\""}'
        self.assertEqual(env_values(proxy(standin.inject(p, DATADOG)), "DD_TAGS"), ["team:shop"])


class Parser(unittest.TestCase):
    def test_libyaml_parses_like_go_yaml(self):
        # The stand-in's fidelity rests on libyaml, the C original of go-yaml v2.
        self.assertTrue(standin.PARSER.startswith("libyaml"), standin.PARSER)


if __name__ == "__main__":
    unittest.main(verbosity=2)
