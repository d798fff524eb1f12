#!/usr/bin/env python3
"""A STAND-IN for Istio's sidecar injector (istiod's /inject admission webhook).

This is not Istio. It lets tracepatch's end-to-end suite (tests/e2e/run.sh) check, on a
bare kube-apiserver with no Istio installed, what Istio's injector does with what
tracepatch writes: it decides injection, renders the sidecar's environment from the
pod's `proxy.istio.io/config` annotation with the exact text line of Istio's injection
template, parses the rendered text as YAML, and refuses the pod when that parse fails,
as Istio does.

It follows istio/istio at commit 86c9f01fd735fb01d8192f5bcaf0d424afb7f14c (master of
2026-08-22, after 1.31.0-alpha.0); paths and line numbers below are of that version:

  manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml
    11-37    every webhook: pods CREATE, failurePolicy Fail, reinvocationPolicy from
             values (values.yaml 147: Never), path /inject (values.yaml 196)
    65-145   the four webhooks of the default revision and their selectors (run.sh
             registers the same, `fx_istio_webhook_config`)
  manifests/charts/istio-control/istio-discovery/files/injection-template.yaml
    29       native sidecar: annotation sidecar.istio.io/nativeSidecar, else the global flag
    31       the app containers (every container but istio-proxy)
    32-49    labels and annotations the template adds
    77-86    initContainers: istio-init (no CNI)
    147-153  istio-init's env: every proxyMetadata entry as
                 - name: {{ $key }}
                   value: "{{ $value }}"
    184-193  istio-proxy under `containers:`, or, native, continuing `initContainers:`
             with `restartPolicy: Always`
    237-355  istio-proxy's env: PROXY_CONFIG as a literal block (275-277),
             ISTIO_META_APP_CONTAINERS (291-292), with global.proxy.tracer=datadog every
             entry of `fromJSON` of the apm.datadoghq.com/env annotation (341-346), then
             every proxyMetadata entry (352-355), with the same two lines
  pkg/kube/inject/inject.go
    201-315  injectRequired: hostNetwork, ignored namespaces, the sidecar.istio.io/inject
             label over the annotation ("true", "false", anything else = default),
             policy `enabled` (values.yaml 337) so the default is to inject
    453-543  RunTemplate: render, parse (applyOverlayYAML) onto an empty pod and onto the
             pod; the native-sidecar move of a user's istio-proxy (518-533)
    577-603  stripPod: a pod with sidecar.istio.io/status is re-injected: the containers
             it lists are left out of the template's input, the status is dropped
    921-927  SidecarInjectionStatus, the JSON of sidecar.istio.io/status
  pkg/kube/inject/initializer.go 38-42  IgnoredNamespaces
  pkg/kube/inject/template.go 148-157  fromJSON: json.Unmarshal into `any`; on error the
             string "{}", over which `range` then fails
  pkg/kube/inject/webhook.go
    276-314  moveContainer, modifyContainers
    344-346  toAdmissionResponse: a refusal is allowed=false with the error as message
    418-443  getInjectionStatus
    465-497  injectPod: "failed to run injection template: ...", "failed to process pod: ..."
    511-591  reapplyOverwrittenContainers: a user's own istio-proxy is applied again on top
             (not on re-injection)
    785-828  reorderPod: proxy.istio.io/config parsed again (an error refuses the pod);
             istio-proxy last (first with holdApplicationUntilProxyStarts); native:
             istio-init, istio-proxy, then the rest; classic: istio-init last
    1097-1155 StrategicMergePatchYAML: the rendered text is parsed by sigs.k8s.io/yaml
             (go-yaml v2, YAML 1.1); a parse error becomes "invalid JSON document"
    1177-1286 inject: policy check, then injection; an error is a refusal
  pilot/pkg/model/proxy_config.go 37-66, 151-157 and pkg/config/mesh/mesh.go 146-157:
             proxy.istio.io/config is YAML or JSON (protomarshal.ApplyYAML); a value that
             does not parse is ignored there, and refuses the pod in reorderPod

The YAML parser is libyaml through PyYAML's CSafeLoader (go-yaml v2 is a Go port of
libyaml, and YAML 1.1 like it), with plain scalars typed as go-yaml v2 types them
(kubernetes-sigs/yaml goyaml.v2/resolve.go, commit 742f5e6f06b9: y/Y/n/N are booleans,
-.5 is a number, ...); PyYAML's own Python parser is the fallback when the C binding is
missing.

Left out, because tracepatch relies on none of it: volumes and volume mounts, probes and
their rewriting, Prometheus annotations, resources, CNI (istio-validation), templates
other than `sidecar` (inject.istio.io/templates), revisions other than `default`, the
never/alwaysInjectSelector (empty by default, values.yaml 122-123), ProxyConfig custom
resources and mesh defaults (none here: proxyMetadata comes from the annotation only), the
proxy.istio.io/overrides annotation, and every ProxyConfig field but proxyMetadata and
holdApplicationUntilProxyStarts.

Usage:
  istio_standin.py serve --tls-cert F --tls-key F [--addr 127.0.0.1:0] [--port-file F]
                         [--native-sidecars] [--tracer none|datadog]
  istio_standin.py render [--native-sidecars] [--tracer none|datadog] < pod.json
      print the template text rendered for a pod (or an AdmissionReview), then the
      admission response the server would send
"""

from __future__ import annotations

import argparse
import base64
import copy
import decimal
import http.server
import json
import math
import os
import re
import ssl
import sys
import threading
import time
from dataclasses import dataclass

import yaml

# ---------------------------------------------------------------------------------------
# YAML as go-yaml v2 reads it
# ---------------------------------------------------------------------------------------

try:
    _BaseLoader = yaml.CSafeLoader
    PARSER = "libyaml (PyYAML CSafeLoader)"
except AttributeError:  # PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader
    PARSER = "PyYAML SafeLoader (pure Python; libyaml binding missing)"


class GoYamlV2Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """libyaml's parser with go-yaml v2's resolution of plain scalars."""

    def resolve(self, kind, value, implicit):
        if kind is yaml.ScalarNode and implicit[0]:
            return go_yaml_v2_tag(value)
        return super().resolve(kind, value, implicit)


# kubernetes-sigs/yaml goyaml.v2/resolve.go (commit 742f5e6f06b9): the type go-yaml v2
# gives a plain scalar. It differs from PyYAML's YAML 1.1 resolver: y, Y, n, N are
# booleans; -.5, -1e5 and -_1 are numbers; there are no base-60 numbers.
_GO_BOOL = {**dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
            **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False)}
_GO_NULL = {"", "~", "null", "Null", "NULL"}
_GO_SPECIAL_FLOAT = {".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF"}
_GO_INT = re.compile(r"^[-+]?(?:0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+|0[0-7]*|[1-9][0-9]*)$")  # strconv.ParseInt base 0
_GO_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")  # yamlStyleFloat
_GO_TIMESTAMP = re.compile(r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt ][0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(?:\.[0-9]+)?(?:Z|[-+][0-9]{2}:[0-9]{2})?)?$")


def go_yaml_v2_tag(value: str) -> str:
    tag = "tag:yaml.org,2002:"
    hint = value[:1]
    if value in _GO_BOOL:
        return tag + "bool"
    if value in _GO_NULL:
        return tag + "null"
    if value in _GO_SPECIAL_FLOAT:
        return tag + "float"
    if hint == "." and re.match(r"^\.[0-9]+(?:[eE][-+]?[0-9]+)?$", value):
        return tag + "float"
    if hint and hint in "+-0123456789":
        if _GO_TIMESTAMP.match(value):
            return tag + "timestamp"
        plain = value.replace("_", "")
        if _GO_INT.match(plain):
            return tag + "int"
        if _GO_FLOAT.match(plain):
            return tag + "float"
    return tag + "str"


def _go_bool(loader, node):
    return _GO_BOOL[loader.construct_scalar(node)]


def _go_int(loader, node):
    plain = loader.construct_scalar(node).replace("_", "")
    sign, digits = (-1, plain[1:]) if plain[:1] == "-" else (1, plain.lstrip("+"))
    if len(digits) > 1 and digits[0] == "0" and digits[1] in "01234567":
        return sign * int(digits, 8)
    return sign * int(digits, 0)


def _go_float(loader, node):
    text = loader.construct_scalar(node)
    if text in _GO_SPECIAL_FLOAT:
        return float(text.replace(".", "").lower().replace("+", ""))
    return float(text.replace("_", ""))


def _go_timestamp(loader, node):
    # A time.Time, which sigs.k8s.io/yaml turns into its RFC 3339 text: a string.
    return loader.construct_scalar(node)


GoYamlV2Loader.add_constructor("tag:yaml.org,2002:bool", _go_bool)
GoYamlV2Loader.add_constructor("tag:yaml.org,2002:int", _go_int)
GoYamlV2Loader.add_constructor("tag:yaml.org,2002:float", _go_float)
GoYamlV2Loader.add_constructor("tag:yaml.org,2002:timestamp", _go_timestamp)


def parse_yaml(text: str):
    return yaml.load(text, Loader=GoYamlV2Loader)  # noqa: S506 (a safe loader)


# ---------------------------------------------------------------------------------------
# Configuration and errors
# ---------------------------------------------------------------------------------------

# initializer.go 38-42.
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "local-path-storage"})
PROXY_IMAGE = "docker.io/istio/proxyv2:standin"
PROXY = "istio-proxy"
INIT = "istio-init"
STATUS = "sidecar.istio.io/status"
PROXY_CONFIG = "proxy.istio.io/config"
DATADOG_ENV = "apm.datadoghq.com/env"

# injection-template.yaml 150-151, 343-344 and 353-354: the two lines every
# proxyMetadata entry (and, with tracer=datadog, every apm.datadoghq.com/env entry) is
# rendered with. Substituted as text, never escaped, exactly as text/template does.
ENV_ENTRY_LINES = '    - name: {{ $key }}\n      value: "{{ $value }}"\n'


@dataclass(frozen=True)
class Settings:
    """What an Istio installation decides globally."""

    native_sidecars: bool = False  # ENABLE_NATIVE_SIDECARS=true (pilot/pkg/features/pilot.go 345)
    tracer: str = "none"  # values.global.proxy.tracer (values.yaml 412)


class InjectionError(Exception):
    """What Istio answers with allowed=false; str() is its message."""


# ---------------------------------------------------------------------------------------
# Go text/template printing of fromJSON values (template.go 148-157: json.Unmarshal into any)
# ---------------------------------------------------------------------------------------


def go_float(f: float) -> str:
    """fmt's %v of a float64: the shortest digits that read back the same, in %e form when
    the decimal exponent is below -4 or at least 6 (strconv's 'g' with shortest precision
    decides with precision 6): 0.5, 100, 100000, 1e+06, 1.5e-05."""
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    sign, digits, exp = decimal.Decimal(repr(f)).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    exp += len("".join(map(str, digits))) - len(ds)
    dp = len(ds) + exp  # position of the decimal point
    x = dp - 1
    neg = "-" if sign else ""
    if x < -4 or x >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mant}e{'+' if x >= 0 else '-'}{abs(x):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{ds}"
    if dp >= len(ds):
        return f"{neg}{ds}{'0' * (dp - len(ds))}"
    return f"{neg}{ds[:dp]}.{ds[dp:]}"


def go_sprint(v, top: bool = True) -> str:
    """What `{{ $value }}` prints for a value json.Unmarshal put in an `any`."""
    if v is None:
        # text/template prints an invalid (nil) value as <no value>; fmt prints a nil
        # inside a slice or map as <nil>.
        return "<no value>" if top else "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return go_float(float(v))
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        return "[" + " ".join(go_sprint(e, False) for e in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_sprint(v[k], False)}" for k in sorted(v)) + "]"
    return str(v)


def go_from_json(text: str):
    """template.go 148-157; None stands for its "{}" string on a parse error."""

    def no_const(name):
        raise ValueError(name)

    try:
        value = json.loads(text, parse_constant=no_const)
    except ValueError:
        return None

    def finite(x):
        if isinstance(x, float) and math.isinf(x):
            raise ValueError("number out of range")
        if isinstance(x, int) and not isinstance(x, bool) and abs(x) > 1.7976931348623157e308:
            raise ValueError("number out of range")
        for e in x.values() if isinstance(x, dict) else x if isinstance(x, list) else ():
            finite(e)

    try:
        finite(value)
    except ValueError:
        return None
    return value


def go_range(v):
    """(key, value) pairs of a template `range` over a map (sorted keys) or a slice."""
    if isinstance(v, dict):
        return [(k, v[k]) for k in sorted(v)]
    if isinstance(v, list):
        return [(str(i), e) for i, e in enumerate(v)]
    raise InjectionError(
        "failed to run injection template: template: inject:342:37: executing \"inject\" at "
        "<fromJSON (index .ObjectMeta.Annotations `apm.datadoghq.com/env`)>: range can't iterate over {}"
    )


def env_entries(pairs) -> str:
    """The template's two env lines for each pair, substituted as text."""
    out = []
    for key, value in pairs:
        out.append(
            re.sub(
                r"\{\{ \$(key|value) \}\}",
                lambda m: key if m.group(1) == "key" else value,  # noqa: B023
                ENV_ENTRY_LINES,
            )
        )
    return "".join(out)


# ---------------------------------------------------------------------------------------
# proxy.istio.io/config
# ---------------------------------------------------------------------------------------


def parse_proxy_config(text: str) -> dict:
    """protomarshal.ApplyYAML into a ProxyConfig (unknown fields allowed, types checked for
    the fields this stand-in uses). Raises ValueError like "could not parse proxy config"."""
    try:
        doc = parse_yaml(text)
    except yaml.YAMLError as e:
        raise ValueError(f"could not parse proxy config: {one_line(e)}") from e
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError("could not parse proxy config: not an object")
    meta = doc.get("proxyMetadata")
    if meta is not None:
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("could not parse proxy config: proxyMetadata: every value must be a string")
        doc["proxyMetadata"] = {str(k): v for k, v in meta.items()}
    hold = doc.get("holdApplicationUntilProxyStarts")
    if hold is not None and not isinstance(hold, bool):
        raise ValueError("could not parse proxy config: holdApplicationUntilProxyStarts: not a boolean")
    return doc


def proxy_config_of(pod: dict) -> dict:
    """The effective ProxyConfig: the annotation, ignored when it does not parse
    (proxy_config.go 57-62)."""
    text = annotations(pod).get(PROXY_CONFIG)
    if text is None:
        return {}
    try:
        return parse_proxy_config(text)
    except ValueError:
        return {}


def proto_json_string(s: str) -> str:
    """A JSON string as Go's protojson writes it: only ", \\, control characters and DEL
    escaped; U+0085, U+2028, U+2029 stay raw."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def proxy_config_json(pc: dict) -> str:
    """protoToJSON .ProxyConfig (template.go 285-297), for the fields kept here."""
    parts = []
    if pc.get("holdApplicationUntilProxyStarts") is not None:
        parts.append(f'"holdApplicationUntilProxyStarts":{"true" if pc["holdApplicationUntilProxyStarts"] else "false"}')
    meta = pc.get("proxyMetadata") or {}
    if meta:
        entries = ",".join(f"{proto_json_string(k)}:{proto_json_string(meta[k])}" for k in sorted(meta))
        parts.append(f'"proxyMetadata":{{{entries}}}')
    return "{" + ",".join(parts) + "}"


# ---------------------------------------------------------------------------------------
# The decision (inject.go 201-315)
# ---------------------------------------------------------------------------------------


def annotations(pod: dict) -> dict:
    return (pod.get("metadata") or {}).get("annotations") or {}


def labels(pod: dict) -> dict:
    return (pod.get("metadata") or {}).get("labels") or {}


def inject_required(pod: dict) -> tuple[bool, str]:
    if (pod.get("spec") or {}).get("hostNetwork"):
        return False, "hostNetwork"
    ns = (pod.get("metadata") or {}).get("namespace", "")
    if ns in IGNORED_NAMESPACES:
        return False, f"namespace {ns} is ignored"
    selector = annotations(pod).get("sidecar.istio.io/inject", "")
    source = "annotation"
    if "sidecar.istio.io/inject" in labels(pod):
        selector = labels(pod)["sidecar.istio.io/inject"]
        source = "label"
    if selector == "true":
        return True, f"{source} sidecar.istio.io/inject=true"
    if selector == "false":
        return False, f"{source} sidecar.istio.io/inject=false"
    # "" or an invalid value: the policy default, `enabled`.
    return True, "policy enabled"


# ---------------------------------------------------------------------------------------
# Rendering (injection-template.yaml)
# ---------------------------------------------------------------------------------------


def yaml_dq(s: str) -> str:
    """sprig's `quote` (Go %q) for names and labels; JSON escaping is equivalent here."""
    return json.dumps(s)


def native_sidecar(pod: dict, settings: Settings) -> bool:
    """injection-template.yaml 29."""
    value = annotations(pod).get("sidecar.istio.io/nativeSidecar") or ("true" if settings.native_sidecars else "false")
    return value != "false"


def render(pod: dict, settings: Settings) -> str:
    """The text the injection template renders for a (stripped) pod."""
    meta = pod.get("metadata") or {}
    lbl = meta.get("labels") or {}
    ann = meta.get("annotations") or {}
    native = native_sidecar(pod, settings)
    pc = proxy_config_of(pod)
    proxy_metadata = pc.get("proxyMetadata") or {}
    apps = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name") != PROXY]
    canonical = lbl.get("service.istio.io/canonical-name") or lbl.get("app.kubernetes.io/name") or lbl.get("app") or meta.get("name") or meta.get("generateName", "").rstrip("-")
    revision = lbl.get("service.istio.io/canonical-revision") or lbl.get("app.kubernetes.io/version") or lbl.get("version") or "latest"

    t = ["metadata:\n", "  labels:\n"]
    t.append(f'    security.istio.io/tlsMode: {yaml_dq(lbl.get("security.istio.io/tlsMode") or "istio")}\n')
    t.append(f"    service.istio.io/canonical-name: {yaml_dq(canonical[:63].strip('-_.'))}\n")
    t.append(f"    service.istio.io/canonical-revision: {yaml_dq(revision)}\n")
    t.append("  annotations: {\n")
    t.append('    istio.io/rev: "default",\n')
    if apps:
        if "kubectl.kubernetes.io/default-logs-container" not in ann:
            t.append(f'    kubectl.kubernetes.io/default-logs-container: "{apps[0]}",\n')
        if "kubectl.kubernetes.io/default-container" not in ann:
            t.append(f'    kubectl.kubernetes.io/default-container: "{apps[0]}",\n')
    t.append("  }\n")
    t.append("spec:\n")
    # 77-183: istio-init (interception mode REDIRECT, no CNI).
    t.append("  initContainers:\n")
    t.append(f"  - name: {INIT}\n")
    t.append(f'    image: "{PROXY_IMAGE}"\n')
    t.append("    args:\n")
    for arg in ("istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"):
        t.append(f"    - {yaml_dq(arg)}\n")
    if proxy_metadata:  # 147-153
        t.append("    env:\n")
        t.append(env_entries((k, proxy_metadata[k]) for k in sorted(proxy_metadata)))
    t.append("    securityContext:\n")
    t.append("      allowPrivilegeEscalation: false\n")
    t.append("      privileged: false\n")
    t.append("      capabilities:\n")
    t.append("        add:\n        - NET_ADMIN\n        - NET_RAW\n")
    t.append("        drop:\n        - ALL\n")
    t.append("      readOnlyRootFilesystem: false\n")
    t.append("      runAsGroup: 0\n      runAsNonRoot: false\n      runAsUser: 0\n")
    # 184-193: istio-proxy.
    if not native:
        t.append("  containers:\n")
    t.append(f"  - name: {PROXY}\n")
    t.append(f'    image: "{PROXY_IMAGE}"\n')
    if native:
        t.append("    restartPolicy: Always\n")
    t.append("    ports:\n    - containerPort: 15090\n      protocol: TCP\n      name: http-envoy-prom\n")
    t.append("    args:\n    - proxy\n    - sidecar\n    - --domain\n    - $(POD_NAMESPACE).svc.cluster.local\n")
    # 237-355: the env.
    t.append("    env:\n")
    t.append("    - name: PILOT_CERT_PROVIDER\n      value: istiod\n")
    t.append("    - name: CA_ADDR\n      value: istiod.istio-system.svc:15012\n")
    t.append("    - name: POD_NAME\n      valueFrom:\n        fieldRef:\n          fieldPath: metadata.name\n")
    t.append("    - name: POD_NAMESPACE\n      valueFrom:\n        fieldRef:\n          fieldPath: metadata.namespace\n")
    t.append("    - name: PROXY_CONFIG\n      value: |\n             " + proxy_config_json(pc) + "\n")
    t.append(f'    - name: ISTIO_META_APP_CONTAINERS\n      value: "{",".join(apps)}"\n')
    t.append('    - name: ISTIO_META_CLUSTER_ID\n      value: "Kubernetes"\n')
    if settings.tracer == "datadog" and DATADOG_ENV in ann:  # 341-346
        parsed = go_from_json(ann[DATADOG_ENV])
        t.append(env_entries((k, go_sprint(v)) for k, v in go_range(parsed)))
    t.append(env_entries((k, proxy_metadata[k]) for k in sorted(proxy_metadata)))  # 352-355
    t.append("    securityContext:\n")
    t.append("      allowPrivilegeEscalation: false\n")
    t.append("      capabilities:\n        drop:\n        - ALL\n")
    t.append("      privileged: false\n      readOnlyRootFilesystem: true\n")
    t.append("      runAsGroup: 1337\n      runAsNonRoot: true\n      runAsUser: 1337\n")
    return "".join(t)


# ---------------------------------------------------------------------------------------
# Applying the rendered template (strategic merge, as far as a pod's containers need it)
# ---------------------------------------------------------------------------------------

# The lists a strategic merge patch merges by key within a pod (k8s.io/api core/v1 types).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name"}


def strategic_merge(original, patch, field: str = ""):
    if not isinstance(patch, dict) or not isinstance(original, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(original)
    for k, v in patch.items():
        if v is None:  # a null in the patch deletes the field
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = strategic_merge(out[k], v, k)
        elif isinstance(v, list) and k in MERGE_KEYS and isinstance(out.get(k), list):
            key = MERGE_KEYS[k]
            merged = out[k]
            for item in v:
                at = next((i for i, o in enumerate(merged)
                           if isinstance(o, dict) and isinstance(item, dict) and o.get(key) == item.get(key)), None)
                if at is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[at] = strategic_merge(merged[at], item, k)
        else:
            out[k] = copy.deepcopy(v)
    return out


def check_types(template_pod: dict) -> None:
    """What json.Unmarshal into corev1.Pod refuses among what the template can produce:
    a non-string env name or value (a proxyMetadata key that YAML 1.1 reads as a boolean,
    say). A null name or value is the empty string, as Go reads it."""
    spec = template_pod.get("spec") or {}
    for field in ("initContainers", "containers"):
        for c in spec.get(field) or []:
            for e in c.get("env") or []:
                for prop in ("name", "value"):
                    if prop in e and e[prop] is None:
                        e[prop] = ""
                    if prop in e and not isinstance(e[prop], str):
                        kind = "bool" if isinstance(e[prop], bool) else "number" if isinstance(e[prop], (int, float)) else "object"
                        raise InjectionError(
                            "failed to run injection template: failed applying injection overlay: unmarshal patched pod: "
                            f"json: cannot unmarshal {kind} into Go struct field EnvVar.spec.{field}.env.{prop} of type string"
                        )


def normalize(pod: dict) -> None:
    """The round trip through corev1.Pod: an empty env value is omitted."""
    spec = pod.get("spec") or {}
    for field in ("initContainers", "containers"):
        for c in spec.get(field) or []:
            for e in c.get("env") or []:
                if e.get("value") == "":
                    del e["value"]


def move_first(items: list, name: str) -> list:
    match = [c for c in items if c.get("name") == name]
    return match[-1:] + [c for c in items if c.get("name") != name]


def move_last(items: list, name: str) -> list:
    match = [c for c in items if c.get("name") == name]
    return [c for c in items if c.get("name") != name] + match[-1:]


def injection_status(template_pod: dict) -> str:
    """webhook.go 418-443, as Go's json.Marshal writes it."""
    spec = template_pod.get("spec") or {}

    def names(field):
        got = [c.get("name", "") for c in spec.get(field) or []]
        return got or None

    status = {"initContainers": names("initContainers"), "containers": names("containers"),
              "volumes": names("volumes"), "imagePullSecrets": names("imagePullSecrets"), "revision": "default"}
    return json.dumps(status, separators=(",", ":"), ensure_ascii=False)


def strip_pod(pod: dict) -> dict:
    """inject.go 577-603."""
    status_text = annotations(pod).get(STATUS)
    if status_text is None:
        return pod
    try:
        status = json.loads(status_text)
        if not isinstance(status, dict):
            raise ValueError
    except ValueError:
        return pod
    stripped = copy.deepcopy(pod)
    spec = stripped.setdefault("spec", {})
    for field in ("containers", "initContainers"):
        gone = set(status.get(field) or [])
        if spec.get(field):
            spec[field] = [c for c in spec[field] if c.get("name") not in gone]
    del stripped["metadata"]["annotations"][STATUS]
    return stripped


def inject(pod: dict, settings: Settings) -> dict:
    """The injected pod, or InjectionError with Istio's message."""
    stripped = strip_pod(pod)
    text = render(stripped, settings)
    try:
        template_pod = parse_yaml(text)
    except yaml.YAMLError as e:
        raise InjectionError(
            "failed to run injection template: failed applying injection overlay: strategic merge: invalid JSON document"
        ) from e
    if not isinstance(template_pod, dict):
        raise InjectionError(
            "failed to run injection template: failed applying injection overlay: strategic merge: invalid JSON document"
        )
    check_types(template_pod)
    native = native_sidecar(pod, settings)
    merged = copy.deepcopy(pod)
    spec = merged.setdefault("spec", {})
    tspec = template_pod.get("spec") or {}
    # inject.go 518-533: with native sidecars, a user's istio-proxy moves to initContainers.
    if native and any(c.get("name") == PROXY for c in tspec.get("initContainers") or []) \
            and any(c.get("name") == PROXY for c in spec.get("containers") or []):
        user_proxy = next(c for c in spec["containers"] if c.get("name") == PROXY)
        spec["containers"] = [c for c in spec["containers"] if c.get("name") != PROXY]
        spec.setdefault("initContainers", []).append(user_proxy)
    merged = strategic_merge(merged, template_pod)
    spec = merged.setdefault("spec", {})
    # webhook.go 511-591: a container of the user's own that the template also renders is
    # applied again on top, unless the pod was injected before.
    if STATUS not in annotations(pod):
        for field in ("containers", "initContainers"):
            for tc in tspec.get(field) or []:
                mine = next((c for c in (pod.get("spec") or {}).get("containers", []) + (pod.get("spec") or {}).get("initContainers", [])
                             if c.get("name") == tc.get("name")), None)
                if mine is not None:
                    merged = strategic_merge(merged, {"spec": {field: [copy.deepcopy(mine)]}})
    spec = merged.setdefault("spec", {})
    md = merged.setdefault("metadata", {})
    md.setdefault("annotations", {})[STATUS] = injection_status(template_pod)
    # webhook.go 785-828.
    if PROXY_CONFIG in annotations(pod):
        try:
            pc = parse_proxy_config(annotations(pod)[PROXY_CONFIG])
        except ValueError as e:
            raise InjectionError(f"failed to process pod: {e}") from e
    else:
        pc = {}
    containers = spec.get("containers") or []
    containers = move_first(containers, PROXY) if pc.get("holdApplicationUntilProxyStarts") else move_last(containers, PROXY)
    spec["containers"] = containers
    inits = spec.get("initContainers") or []
    if any(c.get("name") == PROXY for c in inits):
        for name in ("enable-core-dump", PROXY, "istio-validation", INIT):
            inits = move_first(inits, name)
    else:
        inits = move_first(inits, "istio-validation")
        inits = move_last(inits, INIT)
        inits = move_last(inits, "enable-core-dump")
    if inits:
        spec["initContainers"] = inits
    normalize(merged)
    return merged


def json_patch(before: dict, after: dict) -> list:
    """A JSON Patch from the original pod to the injected one, field by field."""
    ops = []
    for section, fields in (("metadata", ("labels", "annotations")), ("spec", ("initContainers", "containers"))):
        b, a = before.get(section) or {}, after.get(section) or {}
        for f in fields:
            if f in a and a[f] != b.get(f):
                ops.append({"op": "add", "path": f"/{section}/{f}", "value": a[f]})
    return ops


# ---------------------------------------------------------------------------------------
# Admission
# ---------------------------------------------------------------------------------------


def admit(review: dict, settings: Settings) -> tuple[dict, str]:
    """The AdmissionReview answer to an AdmissionReview, and a one-line log of it."""
    request = review.get("request") or {}
    uid = request.get("uid", "")
    pod = copy.deepcopy(request.get("object") or {})
    md = pod.setdefault("metadata", {})
    if not md.get("namespace"):
        md["namespace"] = request.get("namespace", "")
    who = f'{md.get("namespace")}/{md.get("name") or md.get("generateName", "") + "*"}'
    response = {"uid": uid, "allowed": True}
    required, why = inject_required(pod)
    if not required:
        line = f"{who}: skipped ({why})"
    else:
        try:
            injected = inject(pod, settings)
        except InjectionError as e:
            response = {"uid": uid, "allowed": False, "status": {"metadata": {}, "message": str(e)}}
            cause = f" (cause: {one_line(e.__cause__)})" if e.__cause__ else ""
            line = f"{who}: REFUSED: {e}{cause}"
        else:
            patch = json_patch(request.get("object") or {}, injected)
            response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
            response["patchType"] = "JSONPatch"
            line = f"{who}: injected ({why}; native={native_sidecar(pod, settings)}, tracer={settings.tracer})"
    answer = {"apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
              "kind": review.get("kind", "AdmissionReview"), "response": response}
    return answer, line


def one_line(e) -> str:
    return " ".join(str(e).split())


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    settings = Settings()
    server_version = "istio-standin"

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if not self.path.startswith("/inject"):
            return self.reply(404, b"not found\n", "text/plain")
        if not body:
            return self.reply(400, b"no body found\n", "text/plain")
        if self.headers.get("Content-Type") != "application/json":
            return self.reply(415, b"invalid Content-Type, want `application/json`\n", "text/plain")
        try:
            review = json.loads(body)
            if not isinstance(review, dict):
                raise ValueError("not an object")
        except ValueError as e:
            return self.reply(400, f"could not decode body: {e}\n".encode(), "text/plain")
        answer, line = admit(review, self.settings)
        log(line)
        self.reply(200, json.dumps(answer).encode(), "application/json")

    def reply(self, code: int, body: bytes, ctype: str):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):  # the one line per admission is enough
        pass


_log_lock = threading.Lock()


def log(line: str) -> None:
    with _log_lock:
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} istio-standin: {line}\n")
        sys.stderr.flush()


def serve(args) -> int:
    host, _, port = args.addr.rpartition(":")
    settings = Settings(native_sidecars=args.native_sidecars, tracer=args.tracer)
    handler = type("ConfiguredHandler", (Handler,), {"settings": settings})
    server = http.server.ThreadingHTTPServer((host, int(port)), handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.tls_cert, args.tls_key)
    ctx.set_alpn_protocols(["http/1.1"])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    bound = server.server_address[1]
    log(f"listening on https://{host}:{bound}/inject (native sidecars {settings.native_sidecars}, "
        f"tracer {settings.tracer}, YAML parser {PARSER}); this is a stand-in, not Istio")
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{bound}\n")
        os.replace(tmp, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def render_cmd(args) -> int:
    doc = json.load(sys.stdin)
    review = doc if doc.get("kind") == "AdmissionReview" else {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "render", "namespace": (doc.get("metadata") or {}).get("namespace", "default"), "object": doc}}
    settings = Settings(native_sidecars=args.native_sidecars, tracer=args.tracer)
    pod = copy.deepcopy(review["request"]["object"])
    try:
        sys.stdout.write(render(strip_pod(pod), settings))
    except InjectionError as e:
        print(f"# render: {e}")
    answer, line = admit(review, settings)
    print("---")
    print(json.dumps(answer, indent=2, ensure_ascii=False))
    print(f"# {line}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("serve", "render"):
        s = sub.add_parser(name)
        s.add_argument("--native-sidecars", action="store_true",
                       help="inject istio-proxy as a native sidecar unless the pod says otherwise")
        s.add_argument("--tracer", choices=("none", "datadog"), default="none",
                       help="values.global.proxy.tracer; datadog renders apm.datadoghq.com/env too")
        if name == "serve":
            s.add_argument("--addr", default="127.0.0.1:0", help="HOST:PORT (port 0: any free port)")
            s.add_argument("--tls-cert", required=True)
            s.add_argument("--tls-key", required=True)
            s.add_argument("--port-file", help="write the bound port here once listening")
    args = p.parse_args(argv)
    return serve(args) if args.cmd == "serve" else render_cmd(args)


if __name__ == "__main__":
    sys.exit(main())
