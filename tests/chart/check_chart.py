"""Checks of tracepatch's install artifacts; run by tests/chart/check.sh.

- the Helm chart lints and renders with the real Helm engine (helm-python-sdk) for the
  default values, each certificate mode, the ServiceMonitor, monitoring (PrometheusRule
  and Grafana dashboard) on, a configFile and a renamed release; values.schema.json
  rejects wrong types and unknown modes and accepts the monitoring values it documents,
  and the templates refuse a webhook name that would sort after Istio's and a grace
  period not longer than shutdownDelay + drainTimeout;
- every plain and rendered manifest, and every object the e2e suite creates, validates
  against Kubernetes' own schemas (kubernetes-validate) for the oldest and the newest
  Kubernetes version supported; the CRD kinds (cert-manager, Prometheus Operator's
  ServiceMonitor and PrometheusRule) are checked field by field here instead;
- the chart's default render and manifests/ agree on the webhook configuration, the
  Deployment, the Service, the PDB and RBAC, and both match the contract (exact values);
- the ConfigMap's config.yaml is config/datadog.yaml (parsed and compared);
- the Dockerfile and the shell scripts hold together with the manifests.

Output: one PASS/FAIL/SKIP line per check, then "chart: N passed, N failed, N skipped".
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import yaml

REPO = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2])
MANIFESTS = REPO / "manifests"
CHART = MANIFESTS / "helm" / "tracepatch"
DATADOG_CONFIG = REPO / "config" / "datadog.yaml"
OTEL_CONFIG = REPO / "config" / "otel-collector.yaml"
E2E_RUN = REPO / "tests" / "e2e" / "run.sh"

# Kubernetes versions every manifest is validated against.
# Oldest, 1.29: the first release with native sidecars (the SidecarContainers feature,
# restartable init containers) on by default; it was alpha in 1.28. Istio's native-sidecar
# mode and rule 1's initContainers path rely on it, and the chart declares
# kubeVersion >=1.29.0-0. Newest: the newest schema kubernetes-validate ships.
OLDEST_KUBERNETES = "1.29.0"
NEWEST_KUBERNETES = kubernetes_validate.latest_version()

RELEASE = "tracepatch"
NAMESPACE = "tracepatch"
IMAGE_REPOSITORY = "ghcr.io/tracepatch/tracepatch"
# Mutating webhook configurations tracepatch must be called before (the apiserver sorts
# them by name, byte-wise): Istio's injector (default and revision tag) and Datadog's.
MUST_SORT_BEFORE = ["istio-sidecar-injector", "istio-revision-tag-default", "datadog-webhook"]
# Kinds kubernetes-validate has no schema for; checked by check_crds().
CRD_KINDS = {("cert-manager.io/v1", "Certificate"), ("cert-manager.io/v1", "Issuer"),
             ("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}

# Kinds the oldest supported Kubernetes does not have.
NEWER_THAN_OLDEST = {"MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"}

TEST_CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBdGVzdA==\n-----END CERTIFICATE-----\n"

# ---------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------

COUNTS = {"PASS": 0, "FAIL": 0, "SKIP": 0}
# Inside a group, passing checks are counted and summed up in one line when the group
# ends (CHECK_VERBOSE=1 prints each); failures and skips are always printed as they come.
VERBOSE = os.environ.get("CHECK_VERBOSE") == "1"
_GROUPS: list[dict] = []


def report(status: str, name: str, why: str = "") -> None:
    COUNTS[status] += 1
    if _GROUPS:
        _GROUPS[-1][status] += 1
        if status == "PASS" and not VERBOSE:
            return
    print(f"{status} {name}" + (f": {why}" if why else ""), flush=True)


def expect(cond: bool, name: str, why: str = "") -> bool:
    report("PASS" if cond else "FAIL", name, "" if cond else why)
    return cond


def expect_eq(got, want, name: str) -> bool:
    return expect(got == want, name, f"got {short(got)}, want {short(want)}")


def short(v, limit: int = 300) -> str:
    s = json.dumps(v, sort_keys=True, default=sorted) if not isinstance(v, str) else repr(v)
    return s if len(s) <= limit else s[:limit] + "..."


def group(title: str):
    """Runs a group of checks, summed up in one line; an exception inside becomes one
    FAIL, not a crash."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            label = next((a for a in args if isinstance(a, str)), "")
            name = f"{title} [{label}]" if label else title
            _GROUPS.append({"PASS": 0, "FAIL": 0, "SKIP": 0})
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - reported, then the next group runs
                report("FAIL", f"{name}: raised {type(e).__name__}", f"{e}\n{traceback.format_exc()}")
                return None
            finally:
                g = _GROUPS.pop()
                total = g["PASS"] + g["FAIL"] + g["SKIP"]
                if g["FAIL"]:
                    print(f"FAIL {name}: {g['FAIL']} of {total} checks failed", flush=True)
                elif not VERBOSE and g["PASS"]:
                    print(f"PASS {name}: {g['PASS']} checks" + (f", {g['SKIP']} skipped" if g["SKIP"] else ""),
                          flush=True)
        return run
    return wrap


# ---------------------------------------------------------------------------------------
# Loading and rendering
# ---------------------------------------------------------------------------------------

def load_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def plain_manifests() -> list[dict]:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    objs = []
    for res in kustomization["resources"]:
        objs += load_docs((MANIFESTS / res).read_text())
    return objs


def render(values: dict | None = None, name: str = RELEASE, namespace: str = NAMESPACE):
    """(objects, NOTES.txt text) of the chart rendered by the Helm engine."""
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values=values, name=name, namespace=namespace,
                           is_install=True)
    notes = ""
    objs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            notes = text
        else:
            objs += load_docs(text)
    return objs, notes


def find(objs, kind, name=None):
    hits = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return hits


def one(objs, kind, name=None) -> dict:
    hits = find(objs, kind, name)
    if len(hits) != 1:
        raise AssertionError(f"expected one {kind}{' ' + name if name else ''}, found {len(hits)}")
    return hits[0]


def ident(o) -> tuple:
    return (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace", ""))


def config_map(objs: list[dict]) -> dict:
    """The ConfigMap holding the rules configuration (config.yaml); the chart may also
    render a Grafana dashboard ConfigMap."""
    hits = [o for o in objs if o["kind"] == "ConfigMap" and "config.yaml" in o.get("data", {})]
    if len(hits) != 1:
        raise AssertionError(f"expected one ConfigMap with config.yaml, found {len(hits)}")
    return hits[0]


def container(deploy: dict) -> dict:
    return deploy["spec"]["template"]["spec"]["containers"][0]


def args_map(deploy: dict) -> dict:
    """--flag=value arguments of the tracepatch container (value True for bare flags)."""
    out = {}
    for a in container(deploy)["args"][1:]:
        k, _, v = a.partition("=")
        out[k] = v if _ else True
    return out


def subset(small: dict, big: dict) -> bool:
    return all(big.get(k) == v for k, v in small.items())


def duration_seconds(text: str) -> float:
    """The server's duration syntax (cli.rs parse_duration)."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", text)
    if not m:
        raise ValueError(f"bad duration {text!r}")
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def shutdown_seconds(args: dict) -> float:
    """What the server may spend after SIGTERM: --shutdown-delay, then --drain-timeout
    (the server's defaults when a flag is absent)."""
    return duration_seconds(args.get("--shutdown-delay", "0s")) + duration_seconds(args.get("--drain-timeout", "20s"))


def go_duration_seconds(text: str) -> float:
    """A Go time.Duration string as cert-manager takes it (e.g. 2160h, 1h30m)."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"bad Go duration {text!r}")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


# ---------------------------------------------------------------------------------------
# The contract: exact values both the plain manifests and the chart's defaults must have
# ---------------------------------------------------------------------------------------

WEBHOOK_RULES = {
    "pods.tracepatch.io": ([""], ["pods"], ["CREATE"]),
    "services.tracepatch.io": ([""], ["services"], ["CREATE", "UPDATE"]),
    "cronjobs.tracepatch.io": (["batch"], ["cronjobs"], ["CREATE", "UPDATE"]),
}
OPT_OUT = {"key": "tracepatch.io/enabled", "operator": "NotIn", "values": ["false"]}


def self_managed_args(webhook_name: str, fullname: str) -> list[str]:
    return ["serve", "--addr=0.0.0.0:8443", "--health-addr=0.0.0.0:8080",
            "--config=/etc/tracepatch/config.yaml", "--log-format=json", "--drain-timeout=20s",
            "--shutdown-delay=5s", "--worker-threads=2", "--self-managed-certs", f"--cert-secret={fullname}-tls",
            f"--webhook-config={webhook_name}", f"--service={fullname}",
            "--cluster-domain=cluster.local", "--sync-match-conditions"]


@group("contract")
def check_contract(objs: list[dict], label: str, namespace: str = NAMESPACE) -> None:
    """Exact contract values, for the plain manifests and the chart's default render."""
    mwc = one(objs, "MutatingWebhookConfiguration")
    name = mwc["metadata"]["name"]
    expect_eq(name, "00-tracepatch", f"{label}: webhook configuration name")
    for other in MUST_SORT_BEFORE:
        expect(name < other, f"{label}: {name} sorts before {other}", "it does not")
    expect_eq([w["name"] for w in mwc["webhooks"]], list(WEBHOOK_RULES), f"{label}: webhook names")
    for w in mwc["webhooks"]:
        n = w["name"]
        groups, resources, ops = WEBHOOK_RULES[n]
        expect_eq(w["rules"], [{"apiGroups": groups, "apiVersions": ["v1"], "resources": resources,
                                "operations": ops, "scope": "Namespaced"}], f"{label}: {n} rules")
        expect_eq({k: w.get(k) for k in ("failurePolicy", "sideEffects", "admissionReviewVersions",
                                         "reinvocationPolicy", "matchPolicy")},
                  {"failurePolicy": "Ignore", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                   "reinvocationPolicy": "IfNeeded", "matchPolicy": "Equivalent"},
                  f"{label}: {n} policies")
        expect(isinstance(w.get("timeoutSeconds"), int) and 1 <= w["timeoutSeconds"] <= 5,
               f"{label}: {n} timeoutSeconds is small (1-5)", f"got {w.get('timeoutSeconds')}")
        expect_eq(w["clientConfig"], {"service": {"name": "tracepatch", "namespace": namespace,
                                                  "path": "/mutate", "port": 443}},
                  f"{label}: {n} clientConfig (and no caBundle: the server writes it)")
        expect_eq(w["namespaceSelector"], {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", namespace]},
            OPT_OUT]}, f"{label}: {n} namespaceSelector")
        expect_eq(w["objectSelector"], {"matchExpressions": [OPT_OUT]}, f"{label}: {n} objectSelector")

    deploy = one(objs, "Deployment", "tracepatch")
    spec = deploy["spec"]
    pod = spec["template"]["spec"]
    c = container(deploy)
    expect_eq(spec["replicas"], 2, f"{label}: 2 replicas")
    expect_eq(c["image"], f"{IMAGE_REPOSITORY}:{CHART_APP_VERSION}", f"{label}: image tag is the chart's appVersion")
    expect_eq(c["args"], self_managed_args(name, "tracepatch"), f"{label}: serve arguments")
    expect_eq(c.get("env"), [{"name": "TRACEPATCH_NAMESPACE",
                              "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
              f"{label}: TRACEPATCH_NAMESPACE from the downward API")
    expect_eq(pod["securityContext"], {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                       "seccompProfile": {"type": "RuntimeDefault"}},
              f"{label}: pod securityContext")
    expect_eq(c["securityContext"], {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                     "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
              f"{label}: container securityContext")
    expect_eq(c["ports"], [{"name": "https", "containerPort": 8443, "protocol": "TCP"},
                           {"name": "health", "containerPort": 8080, "protocol": "TCP"}],
              f"{label}: container ports")
    expect_eq((c["livenessProbe"]["httpGet"], c["readinessProbe"]["httpGet"]),
              ({"path": "/healthz", "port": "health"}, {"path": "/readyz", "port": "health"}),
              f"{label}: liveness /healthz and readiness /readyz on the health port")
    expect_eq(c["resources"], {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
              f"{label}: resources (no CPU limit)")
    expect_eq(pod.get("automountServiceAccountToken"), True, f"{label}: token mounted (self-managed mode)")
    a = args_map(deploy)
    expect(pod["terminationGracePeriodSeconds"] > shutdown_seconds(a),
           f"{label}: terminationGracePeriodSeconds > --shutdown-delay + --drain-timeout",
           f"{pod['terminationGracePeriodSeconds']} vs {a.get('--shutdown-delay')} + {a.get('--drain-timeout')}")
    labels = spec["template"]["metadata"]["labels"]
    annotations = spec["template"]["metadata"].get("annotations", {})
    expect_eq((labels.get("sidecar.istio.io/inject"), annotations.get("sidecar.istio.io/inject")),
              ("false", "false"), f"{label}: pod label and annotation sidecar.istio.io/inject=false")
    expect_eq([{k: v for k, v in t.items() if k != "labelSelector"} for t in pod["topologySpreadConstraints"]],
              [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}],
              f"{label}: topology spread across nodes, ScheduleAnyway")

    pdb = one(objs, "PodDisruptionBudget")
    expect_eq(pdb["spec"]["minAvailable"], 1, f"{label}: PDB minAvailable 1")

    svc = one(objs, "Service", "tracepatch")
    expect_eq(svc["spec"]["ports"], [
        {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"},
        {"name": "metrics", "port": 8080, "targetPort": "health", "protocol": "TCP"}], f"{label}: Service ports")

    role = one(objs, "Role")
    expect_eq(role["rules"], [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["tracepatch-tls"],
         "verbs": ["get", "update"]}], f"{label}: Role rules (least privilege)")
    crole = one(objs, "ClusterRole")
    expect_eq(crole["rules"], [
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
         "resourceNames": ["00-tracepatch"], "verbs": ["get", "patch"]}],
        f"{label}: ClusterRole rules (least privilege)")
    sa = one(objs, "ServiceAccount")
    expect_eq((sa["metadata"]["name"], sa.get("automountServiceAccountToken")), ("tracepatch", False),
              f"{label}: ServiceAccount tracepatch, token off unless a pod asks")

    cm = one(objs, "ConfigMap", "tracepatch-config")
    expect_eq(yaml.safe_load(cm["data"]["config.yaml"]), yaml.safe_load(DATADOG_CONFIG.read_text()),
              f"{label}: ConfigMap config.yaml is config/datadog.yaml")


# ---------------------------------------------------------------------------------------
# Invariants every render must hold (any values, any mode)
# ---------------------------------------------------------------------------------------

@group("invariants")
def is_audit_rbac(o: dict) -> bool:
    """The optional RBAC of `tracepatch audit` (audit.rbac), checked in its scenario."""
    return o["kind"] in {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"} and \
        re.search(r"-audit(-fix)?$", o["metadata"]["name"]) is not None


def check_invariants(objs: list[dict], label: str, namespace: str) -> None:
    # The server's own objects; the audit command's RBAC is not the server's.
    objs = [o for o in objs if not is_audit_rbac(o)]
    mwc = one(objs, "MutatingWebhookConfiguration")
    mwc_name = mwc["metadata"]["name"]
    deploy = one(objs, "Deployment")
    svc = one(objs, "Service")
    sa = one(objs, "ServiceAccount")
    cm = config_map(objs)
    pod_meta = deploy["spec"]["template"]["metadata"]
    pod = deploy["spec"]["template"]["spec"]
    c = container(deploy)
    a = args_map(deploy)
    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}

    expect(mwc_name < "istio-", f"{label}: webhook configuration {mwc_name} sorts before istio-", "it does not")
    expect(all(o["metadata"].get("namespace", namespace) == namespace for o in objs),
           f"{label}: every namespaced object is in the release namespace", "one is not")
    expect(subset(deploy["spec"]["selector"]["matchLabels"], pod_meta["labels"]),
           f"{label}: Deployment selector matches its pods", "it does not")
    expect(subset(svc["spec"]["selector"], pod_meta["labels"]), f"{label}: Service selector matches the pods",
           "it does not")
    for t in pod.get("topologySpreadConstraints", []):
        expect(subset(t["labelSelector"]["matchLabels"], pod_meta["labels"]),
               f"{label}: topology spread selects the pods", "it does not")
    for pdb in find(objs, "PodDisruptionBudget"):
        expect(subset(pdb["spec"]["selector"]["matchLabels"], pod_meta["labels"]),
               f"{label}: PDB selector matches the pods", "it does not")
    expect_eq((pod_meta["labels"].get("sidecar.istio.io/inject"),
               pod_meta.get("annotations", {}).get("sidecar.istio.io/inject")),
              ("false", "false"), f"{label}: no Istio sidecar for tracepatch's own pods")
    expect(bool(pod_meta.get("annotations", {}).get("checksum/config")), f"{label}: checksum/config annotation",
           "missing")
    expect_eq(pod["serviceAccountName"], sa["metadata"]["name"], f"{label}: pods run as the chart's ServiceAccount")
    for w in mwc["webhooks"]:
        svc_ref = w["clientConfig"]["service"]
        expect_eq((svc_ref["name"], svc_ref["namespace"], svc_ref["path"], svc_ref["port"]),
                  (svc["metadata"]["name"], namespace, "/mutate", 443), f"{label}: {w['name']} calls the Service")
    https = [p for p in svc["spec"]["ports"] if p["port"] == 443]
    expect(len(https) == 1 and port_names.get(https[0]["targetPort"]) == 8443,
           f"{label}: Service 443 reaches container port 8443", short(svc["spec"]["ports"]))
    for probe in ("livenessProbe", "readinessProbe"):
        expect_eq(port_names.get(c[probe]["httpGet"]["port"]), 8080, f"{label}: {probe} on the health port 8080")
    expect(pod["terminationGracePeriodSeconds"] > shutdown_seconds(a),
           f"{label}: terminationGracePeriodSeconds > --shutdown-delay + --drain-timeout",
           f"{pod['terminationGracePeriodSeconds']} vs {a.get('--shutdown-delay')} + {a.get('--drain-timeout')}")
    expect_eq((a.get("--addr"), a.get("--health-addr")), ("0.0.0.0:8443", "0.0.0.0:8080"),
              f"{label}: listen addresses match the container ports")

    # /etc/tracepatch is one projected volume: config.yaml from the ConfigMap, tls/ from
    # the Secret (cert-manager, secret modes).
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    sources = {}
    for v in pod["volumes"]:
        if v["name"] in mounts:
            for s in v.get("projected", {}).get("sources", []):
                for kind, src in s.items():
                    for item in src.get("items", []):
                        sources[os.path.join(mounts[v["name"]], item["path"])] = (kind, src["name"], item["key"])
    expect_eq(sources.get(a["--config"]), ("configMap", cm["metadata"]["name"], "config.yaml"),
              f"{label}: --config is the ConfigMap's config.yaml")

    roles = find(objs, "Role") + find(objs, "ClusterRole")
    bindings = find(objs, "RoleBinding") + find(objs, "ClusterRoleBinding")
    verbs = {v for r in roles for rule in r["rules"] for v in rule["verbs"]}
    expect(not verbs & {"list", "watch", "delete", "*"}, f"{label}: no list/watch/delete/* anywhere in RBAC",
           f"verbs {sorted(verbs)}")
    if "--self-managed-certs" in a:
        secret = a["--cert-secret"]
        expect_eq(a.get("--webhook-config"), mwc_name, f"{label}: --webhook-config names the webhook configuration")
        expect_eq(a.get("--service"), svc["metadata"]["name"], f"{label}: --service names the Service")
        expect_eq(pod.get("automountServiceAccountToken"), True, f"{label}: token mounted (self-managed)")
        role = one(objs, "Role")
        expect_eq(role["rules"], [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret],
             "verbs": ["get", "update"]}], f"{label}: Role limited to the Secret {secret}")
        crole = one(objs, "ClusterRole")
        expect_eq(crole["rules"], [
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
             "resourceNames": [mwc_name], "verbs": ["get", "patch"]}],
            f"{label}: ClusterRole limited to {mwc_name}")
        for b in bindings:
            ref = b["roleRef"]
            target = one(objs, ref["kind"], ref["name"])
            expect(bool(target) and b["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                                      "namespace": namespace}],
                   f"{label}: {b['kind']} binds {ref['name']} to the ServiceAccount", short(b))
        expect(not any("caBundle" in w["clientConfig"] for w in mwc["webhooks"]),
               f"{label}: no caBundle in the template (the server writes it)", "one is set")
    else:
        expect_eq((a.get("--tls-cert"), a.get("--tls-key")),
                  ("/etc/tracepatch/tls/tls.crt", "/etc/tracepatch/tls/tls.key"), f"{label}: --tls-cert/--tls-key")
        for flag, key in (("--tls-cert", "tls.crt"), ("--tls-key", "tls.key")):
            src = sources.get(a.get(flag))
            expect(src is not None and src[0] == "secret" and src[2] == key,
                   f"{label}: {flag} is {key} of a Secret in the projected volume", short(src))
        expect(not roles and not bindings, f"{label}: no RBAC without self-managed certificates",
               f"{len(roles)} roles")
        expect_eq(pod.get("automountServiceAccountToken"), False, f"{label}: no token without self-managed certificates")
        for flag in ("--self-managed-certs", "--cert-secret", "--webhook-config"):
            expect(flag not in a, f"{label}: no {flag}", "present")


# ---------------------------------------------------------------------------------------
# CRD kinds: kubernetes-validate has no schema for them
# ---------------------------------------------------------------------------------------

CERT_MANAGER_USAGES = {"signing", "digital signature", "content commitment", "key encipherment",
                       "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
                       "decipher only", "any", "server auth", "client auth", "code signing",
                       "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
                       "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"}
ISSUER_TYPES = {"acme", "ca", "selfSigned", "vault", "venafi"}


@group("CRDs")
def check_crds(objs: list[dict], label: str, namespace: str) -> None:
    kinds = {(o["apiVersion"], o["kind"]) for o in objs}
    certs = [o for o in objs if o["kind"] == "Certificate"]
    issuers = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Issuer"}
    for o in objs:
        if (o["apiVersion"], o["kind"]) in {("cert-manager.io/v1", "Issuer")}:
            spec = o.get("spec") or {}
            types = set(spec) & ISSUER_TYPES
            expect(len(types) == 1 and set(spec) == types, f"{label}: Issuer {o['metadata']['name']}: exactly one issuer type",
                   short(spec))
            if "ca" in spec:
                ca_secret = spec["ca"].get("secretName")
                producers = [c for c in certs if c["spec"].get("secretName") == ca_secret]
                expect(len(producers) == 1 and producers[0]["spec"].get("isCA") is True,
                       f"{label}: CA Issuer's secret {ca_secret} is made by a CA Certificate", short(producers))
    for o in certs:
        n = o["metadata"]["name"]
        spec = o.get("spec") or {}
        expect_eq(o["apiVersion"], "cert-manager.io/v1", f"{label}: Certificate {n} apiVersion")
        expect(isinstance(spec.get("secretName"), str) and bool(spec["secretName"]),
               f"{label}: Certificate {n}: secretName (required)", short(spec))
        ref = spec.get("issuerRef") or {}
        expect(bool(ref.get("name")) and ref.get("kind", "Issuer") in {"Issuer", "ClusterIssuer"}
               and ref.get("group", "cert-manager.io") == "cert-manager.io",
               f"{label}: Certificate {n}: issuerRef (required)", short(ref))
        if ref.get("kind", "Issuer") == "Issuer" and not ref.get("name", "").startswith("corp-"):
            expect(ref.get("name") in issuers, f"{label}: Certificate {n}: its Issuer is rendered too",
                   f"{ref.get('name')} not in {sorted(issuers)}")
        expect(bool(spec.get("dnsNames") or spec.get("commonName")),
               f"{label}: Certificate {n}: names a subject (dnsNames or commonName)", short(spec))
        expect(set(spec.get("usages", [])) <= CERT_MANAGER_USAGES, f"{label}: Certificate {n}: known usages",
               short(spec.get("usages")))
        pk = spec.get("privateKey") or {}
        expect(pk.get("algorithm", "RSA") in {"RSA", "ECDSA", "Ed25519"}
               and pk.get("encoding", "PKCS1") in {"PKCS1", "PKCS8"}
               and pk.get("rotationPolicy", "Always") in {"Never", "Always"},
               f"{label}: Certificate {n}: privateKey fields", short(pk))
        if "duration" in spec or "renewBefore" in spec:
            d = go_duration_seconds(spec.get("duration", "2160h"))
            r = go_duration_seconds(spec.get("renewBefore", "720h"))
            expect(r < d, f"{label}: Certificate {n}: renewBefore < duration", f"{r} vs {d}")
    if ("cert-manager.io/v1", "Certificate") in kinds:
        mwc = one(objs, "MutatingWebhookConfiguration")
        svc = one(objs, "Service")
        deploy = one(objs, "Deployment")
        serving = one(objs, "Certificate", svc["metadata"]["name"])
        svc_name = svc["metadata"]["name"]
        want_dns = [svc_name, f"{svc_name}.{namespace}", f"{svc_name}.{namespace}.svc",
                    f"{svc_name}.{namespace}.svc.cluster.local"]
        expect_eq(serving["spec"]["dnsNames"], want_dns, f"{label}: serving Certificate names the Service")
        expect("server auth" in serving["spec"].get("usages", []), f"{label}: serving Certificate usage server auth",
               short(serving["spec"].get("usages")))
        expect_eq(mwc["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from"),
                  f"{namespace}/{serving['metadata']['name']}", f"{label}: cainjector annotation names the Certificate")
        secret_sources = [s["secret"]["name"] for v in deploy["spec"]["template"]["spec"]["volumes"]
                          for s in v.get("projected", {}).get("sources", []) if "secret" in s]
        expect_eq(secret_sources, [serving["spec"]["secretName"]],
                  f"{label}: the pods mount the Certificate's Secret")
    for o in find(objs, "PrometheusRule"):
        check_prometheus_rule(o, label)
    for o in find(objs, "ServiceMonitor"):
        n = o["metadata"]["name"]
        svc = one(objs, "Service")
        spec = o.get("spec") or {}
        expect_eq(o["apiVersion"], "monitoring.coreos.com/v1", f"{label}: ServiceMonitor {n} apiVersion")
        expect(subset(spec.get("selector", {}).get("matchLabels", {}), svc["metadata"]["labels"])
               and bool(spec.get("selector", {}).get("matchLabels")),
               f"{label}: ServiceMonitor {n}: selector (required) matches the Service", short(spec.get("selector")))
        expect_eq(spec.get("namespaceSelector"), {"matchNames": [namespace]},
                  f"{label}: ServiceMonitor {n}: namespaceSelector is the release namespace")
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        eps = spec.get("endpoints") or []
        expect(bool(eps), f"{label}: ServiceMonitor {n}: endpoints", "none")
        for ep in eps:
            expect(ep.get("port") in ports and ports[ep["port"]]["port"] == 8080,
                   f"{label}: ServiceMonitor {n}: endpoint port is the Service's metrics port 8080", short(ep))
            expect_eq((ep.get("path"), ep.get("scheme")), ("/metrics", "http"),
                      f"{label}: ServiceMonitor {n}: scrapes http /metrics")
            for k in ("interval", "scrapeTimeout"):
                expect(re.fullmatch(r"(\d+(ms|s|m|h))+", str(ep.get(k, "30s"))) is not None,
                       f"{label}: ServiceMonitor {n}: {k} is a Prometheus duration", short(ep.get(k)))


# The fields of monitoring.coreos.com/v1 PrometheusRule, from the Prometheus Operator's CRD
# (prometheusrules.monitoring.coreos.com): spec required; groups[] with a unique,
# non-empty name; rules[] with expr required (integer or string); durations in
# Prometheus's syntax; labels and annotations are maps of strings (the CRD's
# case-insensitive partial_response_strategy pattern is spelt out: Python's re refuses its
# inline flag). Stricter than the CRD where Prometheus itself is (it refuses a rule with
# both or neither of alert and record, and annotations on a recording rule), and no
# unknown fields.
PROM_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LABEL_MAP = {"type": "object", "propertyNames": {"pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
             "additionalProperties": {"type": "string"}}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"groups": {"type": "array", "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": {"type": "string", "pattern": PROM_DURATION},
                    "query_offset": {"type": "string", "pattern": PROM_DURATION},
                    "limit": {"type": "integer"},
                    "partial_response_strategy": {"type": "string", "pattern": "^([Aa][Bb][Oo][Rr][Tt]|[Ww][Aa][Rr][Nn])?$"},
                    "labels": LABEL_MAP,
                    "rules": {"type": "array", "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["expr"],
                        "properties": {
                            "alert": {"type": "string", "minLength": 1},
                            "record": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
                            "expr": {"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 1}]},
                            "for": {"type": "string", "pattern": PROM_DURATION},
                            "keep_firing_for": {"type": "string", "minLength": 1, "pattern": PROM_DURATION},
                            "labels": LABEL_MAP,
                            "annotations": STRING_MAP,
                        },
                        "oneOf": [
                            {"required": ["alert"], "not": {"required": ["record"]}},
                            {"required": ["record"], "not": {"anyOf": [{"required": ["alert"]},
                                                                        {"required": ["annotations"]},
                                                                        {"required": ["for"]}]}},
                        ],
                    }},
                },
            }}},
        },
    },
}


def check_prometheus_rule(o: dict, label: str) -> None:
    n = o["metadata"]["name"]
    errors = sorted(jsonschema.Draft202012Validator(PROMETHEUS_RULE_SCHEMA).iter_errors(o), key=str)
    expect(not errors, f"{label}: PrometheusRule {n}: the CRD's fields and types",
           "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:5]))
    groups = (o.get("spec") or {}).get("groups") or []
    names = [g.get("name") for g in groups]
    expect(bool(groups) and len(names) == len(set(names)), f"{label}: PrometheusRule {n}: groups with unique names",
           short(names))
    alerts = [r for g in groups for r in g.get("rules", []) if "alert" in r]
    expect(bool(alerts), f"{label}: PrometheusRule {n}: has alerts", "none")
    for r in alerts:
        ann = r.get("annotations", {})
        expect({"summary", "description", "runbook_url"} <= set(ann) and r.get("labels", {}).get("severity"),
               f"{label}: PrometheusRule {n}: {r['alert']} has severity, summary, description, runbook_url",
               short(sorted(ann)))
        expect(re.fullmatch(r"https?://[^#\s]+#[a-z0-9-]+", ann.get("runbook_url", "")) is not None,
               f"{label}: PrometheusRule {n}: {r['alert']} runbook_url is a URL with a #section",
               ann.get("runbook_url", ""))


@group("PrometheusRule schema")
def check_prometheus_rule_schema_bites() -> None:
    """The structural check refuses what the CRD or Prometheus would."""
    good = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": "x"},
            "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0", "for": "5m",
                                                          "labels": {"severity": "warning"},
                                                          "annotations": {"summary": "s"}}]}]}}
    validator = jsonschema.Draft202012Validator(PROMETHEUS_RULE_SCHEMA)
    expect(validator.is_valid(good), "a well-formed PrometheusRule passes", short(list(map(str, validator.iter_errors(good)))))
    bad = {
        "a rule without expr": lambda r: r.pop("expr"),
        "a rule with both alert and record": lambda r: r.__setitem__("record", "x:y"),
        "a for: that is not a duration": lambda r: r.__setitem__("for", "5 minutes"),
        "a label with a non-string value": lambda r: r["labels"].__setitem__("team", 1),
        "a label name Prometheus refuses": lambda r: r["labels"].__setitem__("team-name", "x"),
        "an unknown rule field": lambda r: r.__setitem__("severity", "warning"),
    }
    for what, change in bad.items():
        o = copy.deepcopy(good)
        change(o["spec"]["groups"][0]["rules"][0])
        expect(not validator.is_valid(o), f"the PrometheusRule check refuses {what}", "accepted")
    o = copy.deepcopy(good)
    o["spec"]["groups"][0]["name"] = ""
    expect(not validator.is_valid(o), "the PrometheusRule check refuses an empty group name", "accepted")


# ---------------------------------------------------------------------------------------
# Kubernetes schemas
# ---------------------------------------------------------------------------------------

# Each call of kubernetes-validate reads its schema files again; they never change.
kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)


def validate_all(objs_by_source: dict[str, list[dict]]) -> None:
    seen = {}
    for source, objs in objs_by_source.items():
        for o in objs:
            key = json.dumps(o, sort_keys=True)
            seen.setdefault(key, (source, o))
    for version in (OLDEST_KUBERNETES, NEWEST_KUBERNETES):
        errors, skipped, count = [], set(), 0
        for source, o in seen.values():
            if (o["apiVersion"], o["kind"]) in CRD_KINDS:
                skipped.add(o["kind"])
                continue
            # GA in 1.36: validated against the newest schema only (the chart renders
            # them only when enabled, for clusters that serve the API).
            if o["kind"] in NEWER_THAN_OLDEST and version == OLDEST_KUBERNETES:
                skipped.add(f"{o['kind']} (on {version})")
                continue
            count += 1
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"{source} {o['kind']}/{o['metadata']['name']}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                errors.append(f"{source} {o['kind']}/{o['metadata']['name']}: {e.message}")
        expect(not errors, f"kubernetes-validate {version} (strict): {count} distinct objects from "
                           f"{len(objs_by_source)} sources (skipped CRD kinds {', '.join(sorted(skipped))})",
               "\n  " + "\n  ".join(errors))


# ---------------------------------------------------------------------------------------
# The groups
# ---------------------------------------------------------------------------------------

CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
CHART_APP_VERSION = str(CHART_META["appVersion"])

# What `tracepatch webhook-config --conditions-only` prints for a configuration whose
# CronJob label is `service` (only the CronJob webhook's condition differs).
CUSTOM_CONDITIONS = {
    "pods.tracepatch.io": [{"name": "tracepatch-rules-may-apply", "expression": "object != null"}],
    "services.tracepatch.io": [{"name": "tracepatch-rules-may-apply", "expression": "object != null"}],
    "cronjobs.tracepatch.io": [{"name": "tracepatch-rules-may-apply",
                                "expression": "object != null && !('service' in object.spec.jobTemplate.spec.template.metadata.labels)"}],
}

SCENARIOS = {
    "default": ({}, RELEASE, NAMESPACE),
    "cert-manager, self-signed CA": ({"certificates": {"mode": "cert-manager"}}, RELEASE, NAMESPACE),
    "cert-manager, issuerRef": ({"certificates": {"mode": "cert-manager", "certManager": {
        "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}}}},
        RELEASE, NAMESPACE),
    "secret": ({"certificates": {"mode": "secret", "secret": {"name": "my-tls", "caBundle": TEST_CA_PEM}}},
               RELEASE, NAMESPACE),
    "serviceMonitor": ({"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
                       RELEASE, NAMESPACE),
    "monitoring": ({"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                    "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"},
                                       "alertLabels": {"team": "platform"}},
                    "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Admission"}}},
                   RELEASE, NAMESPACE),
    "configFile (OTel profile)": ({"configFile": OTEL_CONFIG.read_text()}, RELEASE, NAMESPACE),
    "matchConditions off": ({"webhook": {"matchConditions": {"enabled": False}}}, RELEASE, NAMESPACE),
    "audit RBAC with --fix": ({"audit": {"rbac": True, "fix": True}}, RELEASE, NAMESPACE),
    "policies": ({"policies": {"enabled": True}}, RELEASE, NAMESPACE),
    "custom config": ({"config": {"cronJobApp": {"label": "service"}}}, RELEASE, NAMESPACE),
    "custom config, custom conditions": ({"config": {"cronJobApp": {"label": "service"}},
                                          "webhook": {"matchConditions": {"custom": CUSTOM_CONDITIONS}}},
                                         RELEASE, NAMESPACE),
    "renamed release, one replica, extras": ({
        "webhook": {"name": "00-edge-tracepatch", "excludeNamespaces": ["istio-system", "monitoring"],
                    "timeoutSeconds": 5},
        "replicas": 1, "priorityClassName": "system-cluster-critical", "drainTimeout": "45s",
        "shutdownDelay": "14999ms", "workerThreads": 0,
        "terminationGracePeriodSeconds": 60, "podLabels": {"team": "platform", "sidecar.istio.io/inject": "true"},
        "podAnnotations": {"example.com/owner": "platform"}, "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "imagePullSecrets": [{"name": "regcred"}], "extraArgs": ["--renew-before=14d"],
        "logFormat": "text"}, "edge", "platform"),
}


@group("helm render")
def render_all() -> dict:
    renders = {}
    for label, (values, name, namespace) in SCENARIOS.items():
        try:
            renders[label] = render(values or None, name=name, namespace=namespace)
            report("PASS", f"helm render ({label})")
        except helm.HelmError as e:
            report("FAIL", f"helm render ({label})", str(e))
    return renders


@group("helm lint")
def check_lint() -> None:
    for label, (values, _name, namespace) in SCENARIOS.items():
        rep = helm.lint(str(CHART), values or None, strict=True, namespace=namespace)
        problems = [f"{m['path']}: {m['error']}" for m in rep.get("messages", []) if m.get("severity", 0) >= 2]
        problems += rep.get("errors") or []
        expect(not problems, f"helm lint --strict ({label})", "; ".join(problems))


@group("schema")
def check_schema_rejections() -> None:
    bad_values = {
        "replicas as a string": {"replicas": "two"},
        "unknown certificates.mode": {"certificates": {"mode": "vault"}},
        "certificates.mode as a number": {"certificates": {"mode": 1}},
        "timeoutSeconds as a string": {"webhook": {"timeoutSeconds": "3"}},
        "timeoutSeconds above the API's 30": {"webhook": {"timeoutSeconds": 60}},
        "unknown failurePolicy": {"webhook": {"failurePolicy": "Sometimes"}},
        "unknown logFormat": {"logFormat": "xml"},
        "drainTimeout not a duration": {"drainTimeout": "20 seconds"},
        "shutdownDelay not a duration": {"shutdownDelay": "5 seconds"},
        "a negative workerThreads": {"workerThreads": -1},
        "workerThreads as a string": {"workerThreads": "2"},
        "pdb.enabled as a string": {"pdb": {"enabled": "yes"}},
        "excludeNamespaces as a string": {"webhook": {"excludeNamespaces": "kube-public"}},
        "a misspelt top-level value": {"replica": 3},
        "an unknown rules configuration section": {"config": {"tracerEnvs": {}}},
        "secret mode without its Secret": {"certificates": {"mode": "secret"}},
        "unknown image.pullPolicy": {"image": {"pullPolicy": "Sometimes"}},
        "prometheusRule.enabled as a string": {"prometheusRule": {"enabled": "yes"}},
        "matchConditions.enabled as a string": {"webhook": {"matchConditions": {"enabled": "yes"}}},
        "audit.rbac as a string": {"audit": {"rbac": "yes"}},
        "policies.enabled as a string": {"policies": {"enabled": "yes"}},
        "matchConditions.custom for an unknown webhook": {"webhook": {"matchConditions": {"custom": {
            "deployments.tracepatch.io": [{"name": "x", "expression": "true"}]}}}},
        "a custom condition without an expression": {"webhook": {"matchConditions": {"custom": {
            "pods.tracepatch.io": [{"name": "x"}]}}}},
        "a misspelt prometheusRule key": {"prometheusRule": {"enable": True}},
        "an alert label with a non-string value": {"prometheusRule": {"alertLabels": {"team": 1}}},
        "an alert label name Prometheus refuses": {"prometheusRule": {"alertLabels": {"team-name": "x"}}},
        "a runbookBaseURL with a #fragment": {"prometheusRule": {"runbookBaseURL": "https://wiki.example.com/r#top"}},
        "a runbookBaseURL that is not an http(s) URL": {"prometheusRule": {"runbookBaseURL": "docs/runbooks.md"}},
        "prometheusRule.namespace not a namespace name": {"prometheusRule": {"namespace": "Monitoring"}},
        "prometheusRule.labels with a non-string value": {"prometheusRule": {"labels": {"release": 1}}},
        "grafanaDashboard.enabled as a string": {"grafanaDashboard": {"enabled": "true"}},
        "a misspelt grafanaDashboard key": {"grafanaDashboard": {"enabeld": True}},
        "grafanaDashboard.labels with a non-string value": {"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}},
        "grafanaDashboard.annotations as a list": {"grafanaDashboard": {"annotations": ["grafana_folder"]}},
    }
    for label, values in bad_values.items():
        try:
            render(values)
        except helm.HelmValuesError as e:
            report("PASS", f"values.schema.json rejects {label}")
            continue
        except helm.HelmError as e:
            report("FAIL", f"values.schema.json rejects {label}", f"refused, but not by the schema: {e}")
            continue
        report("FAIL", f"values.schema.json rejects {label}", "rendered without complaint")
    accepted = {
        "monitoring on with every value set": {
            "prometheusRule": {"enabled": True, "namespace": "monitoring", "labels": {"release": "prometheus"},
                               "alertLabels": {"team": "platform", "_tier": "1"},
                               "runbookBaseURL": "http://wiki.example.com/tracepatch/runbooks"},
            "grafanaDashboard": {"enabled": True, "namespace": "grafana", "labels": {"dashboards": "1"},
                                 "annotations": {"grafana_folder": "Admission"}}},
        "the sidecar label dropped with null": {"grafanaDashboard": {"enabled": True,
                                                                     "labels": {"grafana_dashboard": None}}},
    }
    for label, values in accepted.items():
        try:
            objs, _ = render(values)
        except helm.HelmError as e:
            report("FAIL", f"values.schema.json accepts {label}", str(e))
            continue
        expect(bool(find(objs, "PrometheusRule") or [o for o in find(objs, "ConfigMap") if "tracepatch.json" in o["data"]]),
               f"values.schema.json accepts {label}", "rendered, but without the monitoring objects")
    refused_by_templates = {
        "a webhook name sorting after istio-": {"webhook": {"name": "zz-tracepatch"}},
        "a webhook name starting with istio-": {"webhook": {"name": "istio-tracepatch"}},
        "a drainTimeout as long as the grace period": {"drainTimeout": "30s", "shutdownDelay": "0s"},
        "shutdownDelay + drainTimeout as long as the grace period": {"shutdownDelay": "10s"},
    }
    for label, values in refused_by_templates.items():
        try:
            render(values)
        except helm.HelmRenderError as e:
            expect(True, f"templates refuse {label}")
            continue
        except helm.HelmError as e:
            report("FAIL", f"templates refuse {label}", f"refused otherwise: {e}")
            continue
        report("FAIL", f"templates refuse {label}", "rendered without complaint")


@group("checksum")
def check_checksum() -> None:
    def checksum(values):
        objs, _ = render(values)
        return one(objs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    base = checksum({})
    expect_eq(checksum({}), base, "checksum/config is stable for the same configuration")
    expect(checksum({"config": {"cronJobApp": {"label": "service"}}}) != base,
           "checksum/config changes with the configuration (pods roll)", "unchanged")


@group("chart vs manifests")
def check_chart_matches_manifests(plain: list[dict], chart: list[dict]) -> None:
    plain_ids = {ident(o) for o in plain if o["kind"] != "Namespace"}
    chart_ids = {ident(o) for o in chart}
    expect_eq(sorted(chart_ids), sorted(plain_ids), "chart default renders the same objects as manifests/ (minus the Namespace)")
    pm, cm_ = one(plain, "MutatingWebhookConfiguration"), one(chart, "MutatingWebhookConfiguration")
    expect_eq(cm_["metadata"]["name"], pm["metadata"]["name"], "chart = manifests: webhook configuration name")
    expect_eq(cm_["webhooks"], pm["webhooks"], "chart = manifests: webhooks (rules, policies, timeout, selectors, clientConfig)")
    pd, cd = one(plain, "Deployment"), one(chart, "Deployment")
    for path in (("spec", "replicas"), ("spec", "selector"), ("spec", "strategy"),
                 ("spec", "template", "spec")):
        got, want = cd, pd
        for p in path:
            got, want = got[p], want[p]
        expect_eq(got, want, f"chart = manifests: Deployment {'.'.join(path)}")
    for kind in ("Service", "PodDisruptionBudget", "ServiceAccount", "Role", "ClusterRole", "RoleBinding",
                 "ClusterRoleBinding"):
        p, c = one(plain, kind), one(chart, kind)
        strip = lambda o: {k: v for k, v in o.items() if k not in ("metadata",)}  # noqa: E731
        expect_eq(strip(c), strip(p), f"chart = manifests: {kind}")
    for o in plain:
        labels = o["metadata"].get("labels", {})
        if o["kind"] != "Namespace":
            expect_eq(labels.get("app.kubernetes.io/version"), CHART_APP_VERSION,
                      f"manifests: {o['kind']} {o['metadata']['name']} labelled with version {CHART_APP_VERSION}")
    cargo_version = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M).group(1)
    expect_eq(CHART_APP_VERSION, cargo_version, "chart appVersion = Cargo.toml version")


@group("scenarios")
def check_scenario_specifics(renders: dict) -> None:
    objs, _ = renders["secret"]
    mwc = one(objs, "MutatingWebhookConfiguration")
    want = base64.b64encode(TEST_CA_PEM.strip().encode()).decode()
    expect_eq([w["clientConfig"].get("caBundle") for w in mwc["webhooks"]], [want] * 3,
              "secret mode: the caBundle (given as PEM) is base64 on every webhook")
    expect_eq(one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"][1]["secret"]["name"],
              "my-tls", "secret mode: the pods mount the given Secret")
    objs, _ = renders["cert-manager, issuerRef"]
    expect_eq(find(objs, "Issuer"), [], "cert-manager with issuerRef: no Issuer of the chart's own")
    expect_eq(one(objs, "Certificate")["spec"]["issuerRef"],
              {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"},
              "cert-manager with issuerRef: the Certificate uses it")
    objs, _ = renders["cert-manager, self-signed CA"]
    expect_eq(sorted(o["metadata"]["name"] for o in find(objs, "Issuer")), ["tracepatch-ca", "tracepatch-selfsigned"],
              "cert-manager without issuerRef: self-signed root and CA Issuers")
    expect_eq(sorted(o["metadata"]["name"] for o in find(objs, "Certificate")), ["tracepatch", "tracepatch-ca"],
              "cert-manager without issuerRef: CA and serving Certificates")
    objs, _ = renders["serviceMonitor"]
    sm = one(objs, "ServiceMonitor")
    expect_eq(sm["metadata"]["labels"].get("release"), "prometheus", "serviceMonitor: extra labels")
    expect_eq(find(renders["default"][0], "ServiceMonitor"), [], "no ServiceMonitor by default")
    default_objs = renders["default"][0]
    expect_eq(find(default_objs, "PrometheusRule"), [], "no PrometheusRule by default")
    expect_eq([o for o in find(default_objs, "ConfigMap") if "tracepatch.json" in o.get("data", {})], [],
              "no dashboard ConfigMap by default")
    objs, _ = renders["monitoring"]
    rule = one(objs, "PrometheusRule")
    expect_eq((rule["metadata"]["name"], rule["metadata"]["namespace"], rule["metadata"]["labels"].get("release"),
               rule["metadata"]["labels"].get("app.kubernetes.io/name")),
              ("tracepatch", NAMESPACE, "prometheus", "tracepatch"),
              "monitoring: PrometheusRule named after the release, labelled for the ruleSelector")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    expect(bool(alerts) and all(r["labels"].get("team") == "platform" and r["labels"].get("severity") in
                                {"warning", "critical"} for r in alerts),
           "monitoring: alertLabels on every alert, severity kept", short([r["labels"] for r in alerts]))
    dash = [o for o in find(objs, "ConfigMap") if "tracepatch.json" in o.get("data", {})]
    if expect(len(dash) == 1, "monitoring: one dashboard ConfigMap", str(len(dash))):
        d = dash[0]
        expect_eq((d["metadata"]["name"], d["metadata"]["labels"].get("grafana_dashboard"),
                   d["metadata"].get("annotations"), json.loads(d["data"]["tracepatch.json"]).get("uid")),
                  ("tracepatch-dashboard", "1", {"grafana_folder": "Admission"}, "tracepatch"),
                  "monitoring: dashboard ConfigMap for Grafana's sidecar, with the dashboard JSON")
    def conditions(label):
        return [w.get("matchConditions") for w in one(renders[label][0], "MutatingWebhookConfiguration")["webhooks"]]
    shipped = yaml.safe_load((CHART / "files" / "match-conditions.yaml").read_text())
    expect_eq(conditions("default"), [shipped[n] for n in ("pods.tracepatch.io", "services.tracepatch.io",
                                                           "cronjobs.tracepatch.io")],
              "default rules configuration: the rendered matchConditions of files/match-conditions.yaml")
    objs, _ = renders["policies"]
    expect_eq(sorted(o["kind"] for o in objs if "AdmissionPolicy" in o["kind"]),
              ["MutatingAdmissionPolicy"] * 3 + ["MutatingAdmissionPolicyBinding"] * 3,
              "policies.enabled: the three policies and their bindings")
    expect_eq([o for o in renders["default"][0] if "AdmissionPolicy" in o["kind"]], [],
              "no MutatingAdmissionPolicy by default")
    objs, _ = renders["audit RBAC with --fix"]
    roles = sorted(o["metadata"]["name"] for o in find(objs, "ClusterRole") if "audit" in o["metadata"]["name"])
    expect(len(roles) == 2 and find(objs, "ServiceAccount", "tracepatch-audit"),
           "audit.rbac and audit.fix: the audit ServiceAccount and its read and fix ClusterRoles", str(roles))
    expect_eq([o for o in find(renders["default"][0], "ServiceAccount") if o["metadata"]["name"].endswith("-audit")], [],
              "no audit RBAC by default")
    fix_rules = [r for o in find(objs, "ClusterRole") if "fix" in o["metadata"]["name"] for r in o["rules"]]
    expect(fix_rules and all("pods" not in r.get("resources", []) and set(r["verbs"]) <= {"get", "patch"}
                             for r in fix_rules),
           "audit --fix role: get and patch only, never pods", short(fix_rules))
    def sync(label):
        return "--sync-match-conditions" in container(one(renders[label][0], "Deployment"))["args"]
    expect(sync("custom config") and sync("default") and not sync("matchConditions off"),
           "self-managed: the server keeps matchConditions in step with its configuration, unless they are off")
    for label in ("matchConditions off", "custom config", "configFile (OTel profile)"):
        expect_eq(conditions(label), [None] * 3,
                  f"{label}: no matchConditions (every object is sent; conditions for another "
                  "configuration would skip objects its rules change)")
    expect_eq(conditions("custom config, custom conditions"),
              [CUSTOM_CONDITIONS[n] for n in ("pods.tracepatch.io", "services.tracepatch.io", "cronjobs.tracepatch.io")],
              "webhook.matchConditions.custom: rendered as given")
    objs, _ = renders["configFile (OTel profile)"]
    expect_eq(yaml.safe_load(config_map(objs)["data"]["config.yaml"]), yaml.safe_load(OTEL_CONFIG.read_text()),
              "configFile: config.yaml is config/otel-collector.yaml")
    objs, notes = renders["renamed release, one replica, extras"]
    d = one(objs, "Deployment")
    pod = d["spec"]["template"]
    a = args_map(d)
    expect_eq((d["metadata"]["name"], one(objs, "Service")["metadata"]["name"], config_map(objs)["metadata"]["name"]),
              ("edge-tracepatch", "edge-tracepatch", "edge-tracepatch-config"), "renamed release: object names")
    expect_eq((a.get("--webhook-config"), a.get("--cert-secret"), a.get("--service"), a.get("--log-format"),
               a.get("--drain-timeout"), a.get("--shutdown-delay"), a.get("--worker-threads"), a.get("--renew-before")),
              ("00-edge-tracepatch", "edge-tracepatch-tls", "edge-tracepatch", "text", "45s", "14999ms", "0", "14d"),
              "renamed release: serve arguments follow the values")
    ns_values = one(objs, "MutatingWebhookConfiguration")["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    expect_eq(ns_values, ["kube-system", "platform", "istio-system", "monitoring"],
              "excludeNamespaces: added to kube-system and the release namespace")
    expect_eq(find(objs, "PodDisruptionBudget"), [], "one replica: no PDB (it would block every drain)")
    expect("no PodDisruptionBudget" in notes, "one replica: NOTES says there is no PDB", notes[:200])
    expect_eq(pod["metadata"]["labels"].get("sidecar.istio.io/inject"), "false",
              "podLabels cannot turn the sidecar opt-out off")
    expect_eq((pod["metadata"]["labels"].get("team"), pod["metadata"]["annotations"].get("example.com/owner"),
               pod["spec"].get("priorityClassName"), pod["spec"].get("nodeSelector"),
               pod["spec"].get("imagePullSecrets")),
              ("platform", "platform", "system-cluster-critical", {"kubernetes.io/os": "linux"}, [{"name": "regcred"}]),
              "podLabels, podAnnotations, priorityClassName, nodeSelector, imagePullSecrets rendered")
    _, notes = renders["default"]
    expect("tracepatch mutate -f" in notes and "--dry-run=server" in notes,
           "NOTES.txt shows `tracepatch mutate -f` and a server-side dry run", notes[:200])


@group("tracepatch config check")
def check_config_with_binary(plain: list[dict], renders: dict) -> None:
    """The server's own parser on every rendered config.yaml, when a built binary is given
    (TRACEPATCH_BIN=target/debug/tracepatch): the schema here checks only the sections."""
    binary = os.environ.get("TRACEPATCH_BIN")
    if not binary:
        report("SKIP", "tracepatch config check on the rendered configurations",
               "set TRACEPATCH_BIN to a built tracepatch binary to run it")
        return
    configs = {"manifests/": config_map(plain)["data"]["config.yaml"]}
    for label, (objs, _) in renders.items():
        configs[f"chart {label}"] = config_map(objs)["data"]["config.yaml"]
    with tempfile.TemporaryDirectory() as tmp:
        for label, text in configs.items():
            path = Path(tmp) / "config.yaml"
            path.write_text(text)
            out = subprocess.run([binary, "config", "check", str(path)], capture_output=True, text=True, timeout=60)
            expect(out.returncode == 0, f"tracepatch config check accepts the config.yaml of {label}",
                   (out.stdout + out.stderr).strip())


@group("kustomize")
def check_kustomize(plain: list[dict]) -> None:
    listed = set(yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    expect_eq(sorted(listed), sorted(present), "kustomization.yaml lists every manifest file")
    kubectl = shutil.which("kubectl")
    if not kubectl:
        report("SKIP", "kubectl kustomize manifests/ builds the same objects", "kubectl is not installed")
        return
    out = subprocess.run([kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        report("FAIL", "kubectl kustomize manifests/", out.stderr.strip())
        return
    canon = lambda objs: sorted(json.dumps(o, sort_keys=True) for o in objs)  # noqa: E731
    expect_eq(canon(load_docs(out.stdout)), canon(plain), "kubectl kustomize manifests/ builds the same objects")


@group("e2e fixtures")
def e2e_objects() -> list[dict] | None:
    with tempfile.TemporaryDirectory() as tmp:
        ca = Path(tmp) / "ca.crt"
        ca.write_text(TEST_CA_PEM)
        env = dict(os.environ, E2E_RUN_ID="check", E2E_WEBHOOK_URL="https://127.0.0.1:8443", E2E_CA_FILE=str(ca))
        out = subprocess.run(["bash", str(E2E_RUN), "--print-manifests"], capture_output=True, text=True,
                             env=env, timeout=60)
    if not expect(out.returncode == 0, "tests/e2e/run.sh --print-manifests", out.stderr.strip()):
        return None
    return load_docs(out.stdout)


@group("e2e")
def check_e2e_webhook(e2e: list[dict], plain: list[dict]) -> None:
    mine = one(e2e, "MutatingWebhookConfiguration")
    shipped = one(plain, "MutatingWebhookConfiguration")
    name = mine["metadata"]["name"]
    for other in MUST_SORT_BEFORE:
        expect(name < other, f"e2e webhook configuration {name} sorts before {other}", "it does not")
    strip = lambda w: {k: v for k, v in w.items() if k != "clientConfig"}  # noqa: E731
    expect_eq([strip(w) for w in mine["webhooks"]], [strip(w) for w in shipped["webhooks"]],
              "e2e webhook configuration = manifests/ (rules, policies, timeout, selectors)")
    expect_eq({w["clientConfig"]["url"] for w in mine["webhooks"]}, {"https://127.0.0.1:8443/mutate"},
              "e2e webhook configuration calls $E2E_WEBHOOK_URL/mutate")
    expect_eq({w["clientConfig"]["caBundle"] for w in mine["webhooks"]}, {base64.b64encode(TEST_CA_PEM.encode()).decode()},
              "e2e webhook configuration trusts $E2E_CA_FILE")
    pods = {o["metadata"]["name"]: o for o in e2e if o["kind"] == "Pod"}
    ann = pods["env-sidecar"]["metadata"]["annotations"]["apm.datadoghq.com/env"]
    expect_eq(json.loads(ann), {"DD_ENV": "prod", "DD_TRACE_SAMPLING_RULES": [{"sample_rate": 0.5}]},
              "e2e fixture: the annotation is the JSON of check (a)")
    expect_eq(pods["agent"]["spec"]["containers"][0]["image"], "gcr.io/datadoghq/agent:7", "e2e fixture: agent image")


@group("Dockerfile")
def check_dockerfile(plain: list[dict]) -> None:
    text = (REPO / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    expect(len(froms) >= 2, "Dockerfile is multi-stage", short(froms))
    expect_eq(froms[-1], "gcr.io/distroless/static-debian12:nonroot", "Dockerfile: final stage distroless/static nonroot")
    expect("cargo build --release --locked" in text, "Dockerfile: cargo build --release --locked", "missing")
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    run_as = one(plain, "Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    expect_eq(user[-1:], [f"{run_as}:{run_as}"], "Dockerfile: USER is the manifests' runAsUser, numeric")
    entry = re.findall(r"^ENTRYPOINT\s+(.+)$", text, re.M)
    cmd = re.findall(r"^CMD\s+(.+)$", text, re.M)
    expect_eq((json.loads(entry[-1]) if entry else None, json.loads(cmd[-1]) if cmd else None),
              (["/usr/local/bin/tracepatch"], ["serve"]), "Dockerfile: ENTRYPOINT the binary, CMD serve")
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    expect({"target/", ".venv/", "certs/", ".git"} <= ignored, ".dockerignore: target/, .venv/, certs/, .git",
           short(sorted(ignored)))


@group("shell")
def check_shell() -> None:
    scripts = sorted((REPO / "tests" / "e2e").glob("*.sh")) + [REPO / "tests" / "chart" / "check.sh",
                                                               REPO / "tests" / "chart" / "venv.sh",
                                                               REPO / "tests" / "monitoring" / "check.sh"]
    for s in scripts:
        out = subprocess.run(["bash", "-n", str(s)], capture_output=True, text=True)
        expect(out.returncode == 0, f"bash -n {s.relative_to(REPO)}", out.stderr.strip())
        expect(os.access(s, os.X_OK), f"{s.relative_to(REPO)} is executable", "it is not")
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        report("SKIP", "shellcheck of the scripts", "shellcheck is not installed (apt-get install shellcheck)")
        return
    out = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    expect(out.returncode == 0, "shellcheck of the scripts", out.stdout.strip())
    out = subprocess.run(["bash", str(REPO / "tests" / "e2e" / "skip-notice.sh")], capture_output=True, text=True,
                         env=dict(os.environ, KUBECONFIG=os.devnull), timeout=60)
    expect(out.returncode == 0 and out.stdout.startswith("e2e skipped:") and out.stdout.count("\n") == 1,
           "skip-notice.sh without a cluster: one 'e2e skipped:' line, exit 0",
           f"exit {out.returncode}: {out.stdout!r}")


def main() -> int:
    start = time.monotonic()
    print(f"---- Helm engine {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
          f"kubernetes-validate {kubernetes_validate.__version__}: Kubernetes {OLDEST_KUBERNETES} and {NEWEST_KUBERNETES}")
    plain = plain_manifests()
    renders = render_all()
    check_lint()
    check_schema_rejections()
    check_prometheus_rule_schema_bites()
    check_contract(plain, "manifests/")
    if "default" in renders:
        check_contract(renders["default"][0], "chart default")
        check_chart_matches_manifests(plain, renders["default"][0])
        check_checksum()
    for label, (objs, _) in renders.items():
        _, _, namespace = SCENARIOS[label]
        check_invariants(objs, f"chart {label}", namespace)
        check_crds(objs, f"chart {label}", namespace)
    if len(renders) == len(SCENARIOS):
        check_scenario_specifics(renders)
    check_kustomize(plain)
    check_config_with_binary(plain, renders)
    e2e = e2e_objects()
    if e2e is not None:
        check_e2e_webhook(e2e, plain)
    sources = {"manifests/": plain, **{f"chart {k}": v[0] for k, v in renders.items()}}
    if e2e is not None:
        sources["tests/e2e/run.sh --print-manifests"] = e2e
    validate_all(sources)
    check_dockerfile(plain)
    check_shell()
    print()
    print(f"---- {time.monotonic() - start:.1f}s")
    print(f"chart: {COUNTS['PASS']} passed, {COUNTS['FAIL']} failed, {COUNTS['SKIP']} skipped")
    return 1 if COUNTS["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
