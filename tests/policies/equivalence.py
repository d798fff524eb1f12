#!/usr/bin/env python3
"""Rules 2-4 as MutatingAdmissionPolicies against the same rules in tracepatch's webhook,
on a real apiserver: does an object come out the same either way?

Run by tests/policies/run.sh (which checks that an apiserver is reachable and builds
tracepatch); see that file for the usage. For every configuration profile:

  1. `tracepatch policies --config F` is installed under names of this run, its bindings
     limited to this run's namespaces labelled `mapeq.tracepatch.io/policies: "yes"`;
  2. `tracepatch serve --config F` runs on loopback with the local PKI's webhook
     certificate, registered with the shipped MutatingWebhookConfiguration
     (manifests/mutatingwebhookconfiguration.yaml, the profile's opt-out label, a URL)
     without its matchConditions, so that every object reaches the rules, the reference
     (POLICIES_WEBHOOK_MATCH_CONDITIONS=1 keeps them), under a name of this run, limited
     to this run's namespaces labelled `mapeq.tracepatch.io/webhook: "yes"`;
  3. every object (the golden fixtures of rules 2-4 whose config.yaml is the profile's,
     and generated objects) is created in a namespace where only the policies apply, one
     where only the webhook applies, and one where both apply; Services and CronJobs are
     also updated (UPDATE); the stored objects are read back and compared field by field,
     ignoring metadata.uid, resourceVersion, creationTimestamp, managedFields, namespace,
     generation, the name a generateName produced, and what the apiserver allocates
     (a Service's clusterIP(s), nodePorts);
  4. with both installed, the webhook must change nothing the policies handle: its log
     line for each such object says patch_ops=0, and tracepatch_rules_applied_total of
     rules 2-4 does not move (read from /metrics before and after).

Then the ordering case: tracepatch's webhook unreachable (a closed port), the Istio
stand-in (tests/e2e/istio_standin.py) registered for this run's namespaces labelled
istio-injection=enabled: an agent pod gets no sidecar where the policies apply, and gets
one where they do not (the control). Also with tracepatch up but the stand-in registered
under a name that sorts before tracepatch's webhook configuration.

Everything this run creates is named with its run id and deleted at the end.
"""

import copy
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
BIN = os.environ["TRACEPATCH_BIN"]
K = Path(os.environ["K"])
CA = K / "pki" / "ca.crt"
CERT = K / "pki" / "webhook.crt"
KEY = K / "pki" / "webhook.key"
RUN = os.environ.get("POLICIES_RUN_ID") or "%08x" % random.SystemRandom().getrandbits(32)
PREFIX = f"mapeq-{RUN}"
LABEL = "mapeq.tracepatch.io"
ID = f"{LABEL}/id"
KEEP = os.environ.get("POLICIES_KEEP") == "1"
VERBOSE = os.environ.get("POLICIES_VERBOSE") == "1"
RULES_2_4 = ("agent-sidecar", "trace-port", "cronjob-app")

passed = 0
failed = 0
created_cluster = []  # (kind, name) of cluster-scoped objects to delete
created_namespaces = []
processes = []
tmp = Path(tempfile.mkdtemp(prefix="tracepatch-policies-"))


def log(msg):
    print(msg, flush=True)


def ok(msg):
    global passed
    passed += 1
    if VERBOSE:
        log(f"PASS {msg}")


def bad(msg, detail=""):
    global failed
    failed += 1
    log(f"FAIL {msg}")
    if detail:
        for line in detail.splitlines()[:60]:
            log(f"     {line}")


# ---------------------------------------------------------------------------------------
# kubectl and processes
# ---------------------------------------------------------------------------------------

def kubectl(*args, stdin=None, check=True):
    p = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {p.stderr.strip()}")
    return p


def apply(docs):
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, logfile):
    f = open(logfile, "w")
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    processes.append(p)
    return p


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def metrics(health):
    with urllib.request.urlopen(f"http://{health}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'tracepatch_rules_applied_total\{rule="([^"]+)"\} (\d+)', line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


# ---------------------------------------------------------------------------------------
# Profiles: a configuration, with the fixtures written for it and generated objects
# ---------------------------------------------------------------------------------------

CUSTOM = """\
optOut:
  label: example.com/no-tracing
agentSidecar:
  ambientOptOut: false
  selectors:
    - matchLabels: {app: otel-collector}
      matchExpressions:
        - {key: tier, operator: NotIn, values: [dev, test]}
        - {key: canary, operator: DoesNotExist}
    - matchExpressions:
        - {key: app.kubernetes.io/name, operator: Glob, values: ["*collector-[0-9]", "agent-?", "x[!a-c]y"]}
    - matchExpressions:
        - {key: example.com/agent, operator: Exists}
        - {key: app.kubernetes.io/name, operator: Glob, values: ["a/**"]}
  images:
    - otel/opentelemetry-collector-contrib
    - "ghcr.io/*/collector"
    - "quay.io/[a-c]*/agent"
    - "registry.example.com/**/agent"
tracePort:
  mode: name
  ports:
    - {name: otlp, port: 4317}
    - port: 9411
cronJobApp:
  label: example.com/service
"""


def fixture_cases():
    """(case dir, config text or None) for rules 2-4."""
    out = []
    for rule in ("agent-sidecar", "trace-port", "cronjob-app"):
        for case in sorted((FIXTURES / rule).iterdir()):
            if case.is_dir():
                cfg = case / "config.yaml"
                out.append((case, cfg.read_text() if cfg.exists() else None))
    return out


def pod_from_template(doc):
    """A workload's pod template as the Pod its controller would create."""
    tmpl = (doc.get("spec") or {}).get("template") or {}
    meta = copy.deepcopy(tmpl.get("metadata") or {})
    meta.pop("name", None)
    meta["name"] = doc["metadata"]["name"] + "-pod"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": copy.deepcopy(tmpl.get("spec") or {})}


def fixture_objects(case):
    text = (case / "input.yaml").read_text()
    out = []
    for i, doc in enumerate(d for d in yaml.safe_load_all(text) if d):
        kind = doc.get("kind")
        if kind in ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"):
            doc = pod_from_template(doc)
        elif kind not in ("Pod", "Service", "CronJob"):
            continue
        doc["metadata"].pop("namespace", None)
        out.append((f"fixture {case.parent.name}/{case.name}#{i}", doc))
    return out


# -- generated objects ------------------------------------------------------------------

AGENT_LABELS = [
    {}, {"app": "datadog-agent"}, {"app": "datadog-cluster-agent"}, {"app": "datadog-clusterchecks"},
    {"app": "web"}, {"app.kubernetes.io/component": "agent", "app.kubernetes.io/name": "prod-datadog"},
    {"app.kubernetes.io/component": "agent", "app.kubernetes.io/name": "fluentd"},
    {"app.kubernetes.io/component": "cluster-agent", "app.kubernetes.io/name": "datadog"},
    {"agent.datadoghq.com/component": "agent"},
    {"app": "otel-collector"}, {"app": "otel-collector", "tier": "dev"},
    {"app": "otel-collector", "tier": "prod"}, {"app": "otel-collector", "canary": "1"},
    {"app.kubernetes.io/name": "my-collector-7"}, {"app.kubernetes.io/name": "agent-x"},
    {"app.kubernetes.io/name": "xdy"}, {"app.kubernetes.io/name": "xby"},
    {"example.com/agent": "yes", "app.kubernetes.io/name": "a/b"},
]
IMAGES = [
    "nginx", "shop/web:1", "gcr.io/datadoghq/agent:7.52.0", "gcr.io/datadoghq/agent",
    "eu.gcr.io/datadoghq/agent:7", "asia.gcr.io/datadoghq/cluster-agent", "datadog/agent",
    "docker.io/datadog/agent:7", "index.docker.io/datadog/cluster-agent:latest",
    "registry-1.docker.io/datadog/agent", "docker.io/library/datadog/agent",
    "public.ecr.aws/datadog/agent:7@sha256:" + "a" * 64, "datadoghq.azurecr.io/agent:7",
    "registry.datadoghq.com/cluster-agent:7.50", "myregistry.local:5000/datadog/agent",
    "localhost/library/datadog/agent", "gcr.io/datadoghq/agentx", "datadog/agent-ish",
    "gcr.io/datadoghq/dd-lib-java-init:v1", "GCR.IO/datadoghq/agent",
    "otel/opentelemetry-collector-contrib:0.99", "docker.io/otel/opentelemetry-collector-contrib",
    "ghcr.io/acme/collector:1", "ghcr.io/acme/sub/collector", "quay.io/bob/agent", "quay.io/dan/agent",
    "registry.example.com/x/y/agent", "registry.example.com/agent",
]
INJECT_VALUES = [None, None, None, "false", "true", "TRUE", "maybe", ""]


def gen_pods(rng, opt_out, n=120, ports=False):
    out = []
    for i in range(n):
        labels = dict(rng.choice(AGENT_LABELS))
        annotations = {}
        v = rng.choice(INJECT_VALUES)
        if v is not None:
            labels["sidecar.istio.io/inject"] = v
        v = rng.choice(INJECT_VALUES)
        if v is not None:
            annotations["sidecar.istio.io/inject"] = v
        if rng.random() < 0.15:
            labels["istio.io/dataplane-mode"] = rng.choice(["none", "ambient"])
        if rng.random() < 0.08:
            labels[opt_out] = rng.choice(["false", "true"])
        containers = [{"name": f"c{j}", "image": rng.choice(IMAGES)} for j in range(rng.randint(1, 2))]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"gen-pod-{i}"},
               "spec": {"containers": containers}}
        if rng.random() < 0.2:
            pod["spec"]["initContainers"] = [{"name": "init", "image": rng.choice(IMAGES)}]
        if ports:
            names = ["traceport", "tcp-traceport", "http-trace", "otlp", "a-very-long-tp", None, "dogstatsdport"]
            used = set()
            for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
                plist = []
                for k in range(rng.randint(0, 2)):
                    p = {"containerPort": rng.choice([8126, 8125, 4317, 9000 + len(used)])}
                    name = rng.choice(names)
                    if name is not None and (name not in used or rng.random() < 0.1):
                        p["name"] = name
                        used.add(name)
                    if rng.random() < 0.15:
                        p["protocol"] = "UDP"
                    plist.append(p)
                if plist:
                    c["ports"] = plist
        if rng.random() < 0.15 and not labels:
            pass  # no labels map at all
        elif labels:
            pod["metadata"]["labels"] = labels
        if annotations:
            pod["metadata"]["annotations"] = annotations
        out.append((f"generated pod {i}", pod))
    return out


SERVICE_PORTS = [
    {"name": "traceport", "port": 8126}, {"name": "traceport", "port": 9126},
    {"name": "trace", "port": 8126}, {"name": "http-trace", "port": 8126},
    {"name": "tcp-traceport", "port": 8126}, {"name": "grpc-web-x", "port": 8126},
    {"name": "tcpx", "port": 8126}, {"name": "tls", "port": 8126}, {"name": "dogstatsdport", "port": 8125},
    {"name": "web", "port": 80}, {"name": "otlp", "port": 4317}, {"name": "zipkin", "port": 9411},
    {"name": "otlp", "port": 4318}, {"name": "http2-x", "port": 9411},
]


def gen_services(rng, opt_out, n=80):
    out = []
    for i in range(n):
        ports = []
        for p in rng.sample(SERVICE_PORTS, rng.randint(1, 3)):
            p = dict(p)
            if any(q["name"] == p["name"] or q["port"] == p["port"] for q in ports):
                continue
            r = rng.random()
            if r < 0.12:
                p["appProtocol"] = rng.choice(["tcp", "TCP", "http", "kubernetes.io/h2c"])
            if rng.random() < 0.1:
                p["protocol"] = rng.choice(["UDP", "SCTP"])
            if rng.random() < 0.3:
                p["targetPort"] = rng.choice(["traceport", "http-trace", 8126, "otlp"])
            ports.append(p)
        if len(ports) == 1 and rng.random() < 0.3:
            ports[0].pop("name")  # a single port may be unnamed
        svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"gen-svc-{i}"},
               "spec": {"clusterIP": "None", "ports": ports, "selector": {"app": "x"}}}
        if rng.random() < 0.08:
            svc["metadata"]["labels"] = {opt_out: rng.choice(["false", "true"])}
        out.append((f"generated service {i}", svc))
    return out


def gen_cronjobs(rng, opt_out, key, n=60):
    out = []
    values = ["reports", "", "sync-worker", "x" * 63, "Bad Value"]
    for i in range(n):
        name = f"gen-cj-{i}"
        if rng.random() < 0.1:
            name = (name + "-" + "n" * 60)[:52]
        cj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
              "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {"spec": {
                  "restartPolicy": "Never", "containers": [{"name": "job", "image": "shop/job:1"}]}}}}}}
        labels = {}
        if rng.random() < 0.4:
            labels[key] = rng.choice(values)
        if rng.random() < 0.08:
            labels[opt_out] = rng.choice(["false", "true"])
        if labels:
            cj["metadata"]["labels"] = labels
        tl = {}
        if rng.random() < 0.3:
            tl[key] = rng.choice(values[:3])
        if rng.random() < 0.3:
            tl["app.kubernetes.io/name"] = rng.choice(["cleanup", "", "web"])
        if tl or rng.random() < 0.5:
            cj["spec"]["jobTemplate"]["spec"]["template"]["metadata"] = {"labels": tl} if tl else {}
        jl = {}
        if rng.random() < 0.3:
            jl[key] = "job-" + str(i)
        if rng.random() < 0.2:
            jl["team"] = "shop"
        if jl or rng.random() < 0.3:
            cj["spec"]["jobTemplate"]["metadata"] = {"labels": jl} if jl else {}
        if rng.random() < 0.05:
            del cj["metadata"]["name"]
            cj["metadata"]["generateName"] = "gen-cj-"
        out.append((f"generated cronjob {i}", cj))
    return out


def gen_updates(rng, opt_out, key):
    """(description, created object, replacing object): UPDATEs of Services and CronJobs."""
    out = []
    base_svc = lambda name, ports, labels=None: {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, **({"labels": labels} if labels else {})},
        "spec": {"clusterIP": "None", "ports": ports, "selector": {"app": "x"}}}
    out.append(("update: service gains a trace port",
                base_svc("upd-svc-0", [{"name": "web", "port": 80}]),
                base_svc("upd-svc-0", [{"name": "web", "port": 80}, {"name": "traceport", "port": 8126},
                                       {"name": "otlp", "port": 4317}])))
    out.append(("update: opted-out service loses the opt-out label",
                base_svc("upd-svc-1", [{"name": "traceport", "port": 8126}], {opt_out: "false"}),
                base_svc("upd-svc-1", [{"name": "traceport", "port": 8126}])))
    out.append(("update: service gains the opt-out label",
                base_svc("upd-svc-2", [{"name": "traceport", "port": 8126}]),
                base_svc("upd-svc-2", [{"name": "traceport", "port": 8126}], {opt_out: "false"})))
    out.append(("update: appProtocol removed",
                base_svc("upd-svc-3", [{"name": "traceport", "port": 8126, "appProtocol": "http"}]),
                base_svc("upd-svc-3", [{"name": "traceport", "port": 8126}])))

    def cj(name, labels=None, tl=None):
        o = {"apiVersion": "batch/v1", "kind": "CronJob",
             "metadata": {"name": name, **({"labels": labels} if labels else {})},
             "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {"spec": {
                 "restartPolicy": "Never", "containers": [{"name": "job", "image": "shop/job:1"}]}}}}}}
        if tl is not None:
            o["spec"]["jobTemplate"]["spec"]["template"]["metadata"] = {"labels": tl}
        return o
    out.append(("update: cronjob template loses its label",
                cj("upd-cj-0", {key: "reports"}, {key: "worker"}), cj("upd-cj-0", {key: "reports"}, {})))
    out.append(("update: opted-out cronjob loses the opt-out label",
                cj("upd-cj-1", {opt_out: "false"}), cj("upd-cj-1")))
    out.append(("update: cronjob gains the opt-out label",
                cj("upd-cj-2"), cj("upd-cj-2", {opt_out: "false"})))
    out.append(("update: cronjob label changes, template has one",
                cj("upd-cj-3", {key: "a"}, {key: "a"}), cj("upd-cj-3", {key: "b"}, {key: "a"})))
    return out


class Profile:
    def __init__(self, name, config_text, generate):
        self.name = name
        self.config_text = config_text or ""
        self.generate = generate  # which generated kinds: set of "pods", "pod-ports", ...
        self.fixtures = []

    @property
    def cfg(self):
        return yaml.safe_load(self.config_text) or {}

    def opt_out(self):
        return (self.cfg.get("optOut") or {}).get("label", "tracepatch.io/enabled")

    def cron_key(self):
        return (self.cfg.get("cronJobApp") or {}).get("label", "app")

    def objects(self):
        seed = int(hashlib.sha256(self.name.encode()).hexdigest()[:8], 16)
        rng = random.Random(seed)
        objs = []
        for case in self.fixtures:
            objs.extend(fixture_objects(case))
        objs.extend(copy.deepcopy(getattr(self, "extra", [])))
        o = self.opt_out()
        if "pods" in self.generate:
            objs.extend(gen_pods(rng, o))
        if "pod-ports" in self.generate:
            objs.extend(gen_pods(rng, o, n=80, ports=True))
        if "services" in self.generate:
            objs.extend(gen_services(rng, o))
        if "cronjobs" in self.generate:
            objs.extend(gen_cronjobs(rng, o, self.cron_key()))
        updates = gen_updates(rng, o, self.cron_key()) if "updates" in self.generate else []
        # Unique names per kind; every object gets its id.
        seen = set()
        result = []
        for n, (desc, obj) in enumerate(objs):
            meta = obj["metadata"]
            if "name" in meta:
                base, k = meta["name"], 1
                while (obj["kind"], meta["name"]) in seen:
                    k += 1
                    meta["name"] = f"{base[:48]}-{k}"
                seen.add((obj["kind"], meta["name"]))
            meta.setdefault("annotations", {})[ID] = str(n)
            result.append((str(n), desc, obj))
        upd = []
        for n, (desc, a, b) in enumerate(updates):
            for o2 in (a, b):
                o2["metadata"].setdefault("annotations", {})[ID] = f"u{n}"
            upd.append((f"u{n}", desc, a, b))
        return result, upd


def profiles():
    by_config = {}
    for case, cfg in fixture_cases():
        by_config.setdefault(cfg, []).append(case)
    out = []
    default = Profile("default", None, {"pods", "services", "cronjobs", "updates"})
    default.fixtures = by_config.pop(None, [])
    out.append(default)
    for cfg, cases in sorted(by_config.items()):
        name_mode = "mode: name" in cfg
        rename = "renamePodPorts: true" in cfg
        name = {(True, False): "name-mode", (True, True): "name-rename-pods",
                (False, True): "rename-pods"}.get((name_mode, rename), "fixture-" + cases[0].name)
        p = Profile(name, cfg, {"services", "updates"} | ({"pod-ports"} if rename else set()))
        p.fixtures = cases
        out.append(p)
    custom = Profile("custom", CUSTOM, {"pods", "services", "cronjobs", "updates"})
    # The configuration without what `tracepatch policies` leaves to the webhook (its
    # notes): the third selector (its Glob has **) and the last image pattern.
    custom.reduced_text = CUSTOM.replace(
        "    - matchExpressions:\n        - {key: example.com/agent, operator: Exists}\n"
        "        - {key: app.kubernetes.io/name, operator: Glob, values: [\"a/**\"]}\n", "").replace(
        '    - "registry.example.com/**/agent"\n', "")
    assert custom.reduced_text.count("**") == 0
    custom.extra = [
        ("pod only the webhook recognises (image pattern with **)",
         {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "only-webhook-0"},
          "spec": {"containers": [{"name": "a", "image": "registry.example.com/x/y/agent:1"}]}}),
        ("pod only the webhook recognises (image pattern with **, no directory)",
         {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "only-webhook-1", "labels": {"app": "x"}},
          "spec": {"containers": [{"name": "a", "image": "nginx"}],
                   "initContainers": [{"name": "b", "image": "registry.example.com/agent"}]}}),
    ]
    out.append(custom)
    only = os.environ.get("POLICIES_PROFILES")
    if only:
        out = [p for p in out if p.name in only.split(",")]
    return out


def webhook_only(p, config_file, objs):
    """Ids of the objects whose outcome in the webhook depends on a configuration entry
    the policies leave to it: `tracepatch mutate --patch` differs between the profile's
    configuration and the same without those entries."""
    reduced = getattr(p, "reduced_text", None)
    if reduced is None:
        return set()
    reduced_file = tmp / f"{p.name}-reduced.yaml"
    reduced_file.write_text(reduced)
    text = yaml.safe_dump_all([o for _, _, o in objs])
    full = run_tracepatch("mutate", "--config", str(config_file), "--patch", "-f", "-", stdin=text).stdout
    part = run_tracepatch("mutate", "--config", str(reduced_file), "--patch", "-f", "-", stdin=text).stdout
    return {oid for (oid, _, _), a, b in zip(objs, full.splitlines(), part.splitlines()) if a != b}


# ---------------------------------------------------------------------------------------
# Installing policies, webhook, namespaces
# ---------------------------------------------------------------------------------------

def run_tracepatch(*args, stdin=None):
    p = subprocess.run([BIN, *args], input=stdin, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"tracepatch {' '.join(args)}: {p.stderr.strip()}")
    return p


def install_policies(config_file, selector, tag):
    """The rendered policies, renamed for this run, bound to namespaces matching selector."""
    out = run_tracepatch("policies", "--config", str(config_file))
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    names = []
    for d in docs:
        rule = d["metadata"]["name"].removeprefix("tracepatch-")
        d["metadata"]["name"] = f"{PREFIX}-{tag}-{rule}"
        if d["kind"] == "MutatingAdmissionPolicyBinding":
            d["spec"]["policyName"] = f"{PREFIX}-{tag}-{rule}"
            d["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": selector}}
        created_cluster.append((d["kind"].lower(), d["metadata"]["name"]))
        names.append(d["metadata"]["name"])
    apply(docs)
    return out.stderr, [n for d, n in zip(docs, names) if d["kind"] == "MutatingAdmissionPolicy"]


def webhook_config(opt_out, url, name, selector):
    """The shipped MutatingWebhookConfiguration (manifests/mutatingwebhookconfiguration.yaml:
    its rules, failurePolicy, reinvocationPolicy, timeout, selectors) for a webhook at url,
    with the profile's opt-out label in the selectors, limited to namespaces matching
    selector. The reference is what the webhook's rules do, so its matchConditions are
    left out (every object is sent) unless POLICIES_WEBHOOK_MATCH_CONDITIONS=1 (shipped
    conditions, rendered for the default configuration)."""
    import base64
    doc = yaml.safe_load((REPO / "manifests" / "mutatingwebhookconfiguration.yaml").read_text())
    doc["metadata"]["name"] = name
    keep_conditions = os.environ.get("POLICIES_WEBHOOK_MATCH_CONDITIONS") == "1"
    for hook in doc["webhooks"]:
        hook["clientConfig"] = {"url": f"{url}/mutate", "caBundle": base64.b64encode(CA.read_bytes()).decode()}
        for sel in (hook["namespaceSelector"], hook["objectSelector"]):
            for r in sel.get("matchExpressions", []):
                if r["key"] == "tracepatch.io/enabled":
                    r["key"] = opt_out
        if not keep_conditions:
            hook.pop("matchConditions", None)
        hook["namespaceSelector"].setdefault("matchLabels", {}).update(selector)
    created_cluster.append(("mutatingwebhookconfiguration", name))
    return doc


def namespace(name, labels):
    created_namespaces.append(name)
    apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}])


def start_webhook(config_file, tag):
    port, health = free_port(), free_port()
    logfile = tmp / f"tracepatch-{tag}.log"
    p = start([BIN, "serve", "--addr", f"127.0.0.1:{port}", "--health-addr", f"127.0.0.1:{health}",
               "--tls-cert", str(CERT), "--tls-key", str(KEY), "--config", str(config_file),
               "--log-format", "json"], logfile)
    if not wait_http(f"http://127.0.0.1:{health}/readyz"):
        raise RuntimeError(f"tracepatch serve did not become ready: {logfile.read_text()[-2000:]}")
    return p, f"https://127.0.0.1:{port}", f"127.0.0.1:{health}", logfile


# ---------------------------------------------------------------------------------------
# Others on the same apiserver
# ---------------------------------------------------------------------------------------

def selector_matches(sel, labels):
    """Kubernetes label selector semantics; a missing selector matches everything."""
    if not sel:
        return True
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for r in sel.get("matchExpressions") or []:
        k, op, vals = r["key"], r["operator"], r.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def interference(namespaces):
    """Mutating webhooks and policies of others (another engineer's test run on the same
    apiserver) that would act in any of these namespaces (name -> labels): their changes
    would make the comparison meaningless, so the run waits for them to go."""
    found = []
    hooks = json.loads(kubectl("get", "mutatingwebhookconfigurations", "-o", "json").stdout)["items"]
    for cfg in hooks:
        if PREFIX in cfg["metadata"]["name"]:
            continue
        for hook in cfg.get("webhooks") or []:
            for ns, labels in namespaces.items():
                full = {**labels, "kubernetes.io/metadata.name": ns}
                if selector_matches(hook.get("namespaceSelector"), full):
                    found.append(f"MutatingWebhookConfiguration {cfg['metadata']['name']} ({ns})")
                    break
    policies = {p["metadata"]["name"]: p for p in json.loads(
        kubectl("get", "mutatingadmissionpolicies", "-o", "json").stdout)["items"]}
    for b in json.loads(kubectl("get", "mutatingadmissionpolicybindings", "-o", "json").stdout)["items"]:
        if PREFIX in b["metadata"]["name"]:
            continue
        pol = policies.get(b["spec"].get("policyName"), {})
        psel = ((pol.get("spec") or {}).get("matchConstraints") or {}).get("namespaceSelector")
        bsel = (b["spec"].get("matchResources") or {}).get("namespaceSelector")
        for ns, labels in namespaces.items():
            full = {**labels, "kubernetes.io/metadata.name": ns}
            if selector_matches(psel, full) and selector_matches(bsel, full):
                found.append(f"MutatingAdmissionPolicyBinding {b['metadata']['name']} ({ns})")
                break
    return sorted(set(found))


def wait_until_alone(namespaces, timeout=900):
    deadline = time.time() + timeout
    said = None
    while True:
        found = interference(namespaces)
        if not found:
            return True
        if found != said:
            log(f"     waiting: {', '.join(found)} would also mutate this run's objects")
            said = found
        if time.time() > deadline:
            return False
        time.sleep(5)


# ---------------------------------------------------------------------------------------
# Creating, reading back, comparing
# ---------------------------------------------------------------------------------------

PLURAL = {"Pod": "pods", "Service": "services", "CronJob": "cronjobs.batch"}


def create_all(ns, objs):
    """Creates the objects (one kubectl call); returns kubectl's stderr."""
    docs = [o for _, _, o in objs]
    p = kubectl("create", "-n", ns, "-f", "-", "-o", "name", stdin=yaml.safe_dump_all(docs), check=False)
    return p.stderr


def replace_all(ns, objs):
    docs = [o for o in objs]
    p = kubectl("replace", "-n", ns, "-f", "-", "-o", "name", stdin=yaml.safe_dump_all(docs), check=False)
    return p.stderr


def read_back(ns):
    p = kubectl("get", "-n", ns, "pods,services,cronjobs.batch", "-o", "json")
    out = {}
    for item in json.loads(p.stdout)["items"]:
        oid = ((item["metadata"].get("annotations") or {}).get(ID))
        if oid is not None:
            out[oid] = item
    return out


def normalized(obj):
    o = copy.deepcopy(obj)
    meta = o["metadata"]
    for f in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "namespace", "generation"):
        meta.pop(f, None)
    if "generateName" in meta:
        meta.pop("name", None)
    if o.get("kind") == "Service":
        spec = o.get("spec", {})
        if spec.get("clusterIP") != "None":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        for p in spec.get("ports", []):
            p.pop("nodePort", None)
    return o


def diff(a, b, path=""):
    """Paths where a and b differ, with both values."""
    if type(a) is not type(b):
        return [f"{path or '/'}: {json.dumps(a)} != {json.dumps(b)}"]
    if isinstance(a, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: {json.dumps(a.get(k, '<absent>'))} != {json.dumps(b.get(k, '<absent>'))}")
            else:
                out.extend(diff(a[k], b[k], f"{path}/{k}"))
        return out
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)} items: {json.dumps(a)} != {json.dumps(b)}"]
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out.extend(diff(x, y, f"{path}/{i}"))
        return out
    return [] if a == b else [f"{path}: {json.dumps(a)} != {json.dumps(b)}"]


def compare(label, objs, got_a, got_b, name_a, name_b, expected_different=frozenset()):
    """Field by field; an object in expected_different must differ (the policies left it to
    the webhook): there `name_a` must have stored it with the labels it was sent with."""
    for oid, desc, obj in objs:
        a, b = got_a.get(oid), got_b.get(oid)
        if a is None and b is None:
            ok(f"{label}: {desc}: refused in both")
            continue
        if a is None or b is None:
            bad(f"{label}: {desc}: stored only in {name_b if a is None else name_a}")
            continue
        d = diff(normalized(a), normalized(b))
        if oid in expected_different:
            sent = obj["metadata"].get("labels") or {}
            if d and (a["metadata"].get("labels") or {}) == sent:
                ok(f"{label}: {desc}: left to the webhook, as the policies' notes say")
            else:
                bad(f"{label}: {desc}: expected the policies to leave it unchanged for the webhook",
                    "\n".join(d) or "no difference")
        elif d:
            bad(f"{label}: {desc}: {name_a} and {name_b} differ", "\n".join(d))
        else:
            ok(f"{label}: {desc}")


def changed_count(objs, got, unchanged):
    """How many objects the rules changed: stored differently than in a namespace that
    opted out (where nothing applies)."""
    return sum(1 for oid, _, _ in objs
               if oid in got and oid in unchanged and diff(normalized(got[oid]), normalized(unchanged[oid])))


def policy_invocations(names):
    """The apiserver's own count of mutations it ran for each of these policies
    (apiserver_mutating_admission_policy_check_total, one per mutation run, whatever
    its outcome), summed over bindings and outcomes."""
    text = kubectl("get", "--raw", "/metrics").stdout
    out = dict.fromkeys(names, 0)
    for line in text.splitlines():
        m = re.match(r'apiserver_mutating_admission_policy_check_total\{[^}]*policy="([^"]+)"[^}]*\} (\d+)', line)
        if m and m.group(1) in out:
            out[m.group(1)] += int(m.group(2))
    return out


def webhook_lines(logfile, ns):
    lines = []
    for line in logfile.read_text().splitlines():
        try:
            j = json.loads(line)
        except ValueError:
            continue
        f = j.get("fields", j)
        if f.get("message") == "admitted" and f.get("namespace") == ns:
            lines.append(f)
    return lines


def canary_ready(ns, objs, kind):
    """Waits until an object of kind that the policies change comes back changed from a
    server-side dry run in ns (the apiserver loads new policies asynchronously)."""
    deadline = time.time() + 30
    for _, _, obj in objs:
        if obj["kind"] != kind:
            continue
        sent = yaml.safe_dump(obj)
        p = kubectl("create", "--dry-run=server", "-n", ns, "-f", "-", "-o", "json", stdin=sent, check=False)
        if p.returncode != 0:
            continue
        got = json.loads(p.stdout)
        if normalized(got) == normalized(json.loads(json.dumps(obj))):
            continue
        # This object is changed by something; wait until the result is stable.
        prev = None
        while time.time() < deadline:
            p = kubectl("create", "--dry-run=server", "-n", ns, "-f", "-", "-o", "json", stdin=sent, check=False)
            cur = json.dumps(normalized(json.loads(p.stdout)), sort_keys=True)
            if cur == prev:
                return True
            prev = cur
            time.sleep(1)
        return False
    return True


# ---------------------------------------------------------------------------------------
# One profile
# ---------------------------------------------------------------------------------------

def run_profile(p):
    tag = p.name
    config_file = tmp / f"{tag}.yaml"
    config_file.write_text(p.config_text or "# the built-in Datadog profile\n")
    objs, updates = p.objects()
    base = {f"{LABEL}/run": RUN, f"{LABEL}/profile": tag}
    notes, policy_names = install_policies(config_file, {**base, f"{LABEL}/policies": "yes"}, tag)
    for n in notes.splitlines():
        log(f"     {tag}: {n}")
    _, url, health, logfile = start_webhook(config_file, tag)
    apply([webhook_config(p.opt_out(), url, f"00-tracepatch-{PREFIX}-{tag}", {**base, f"{LABEL}/webhook": "yes"})])
    ns_pol, ns_hook, ns_both = f"{PREFIX}-{tag}-pol", f"{PREFIX}-{tag}-hook", f"{PREFIX}-{tag}-both"
    off = {p.opt_out(): "false"}
    ns_pol_off, ns_hook_off = f"{PREFIX}-{tag}-pol-off", f"{PREFIX}-{tag}-hook-off"
    # A namespace of this run opts out of other tracepatch installations (label
    # tracepatch.io/enabled: "false") where the profile's own opt-out label is another.
    others_off = {} if p.opt_out() == "tracepatch.io/enabled" else {"tracepatch.io/enabled": "false"}
    spaces = {
        ns_pol: {**base, **others_off, f"{LABEL}/policies": "yes"},
        ns_hook: {**base, **others_off, f"{LABEL}/webhook": "yes"},
        ns_both: {**base, **others_off, f"{LABEL}/policies": "yes", f"{LABEL}/webhook": "yes"},
        ns_pol_off: {**base, **others_off, f"{LABEL}/policies": "yes", **off},
        ns_hook_off: {**base, **others_off, f"{LABEL}/webhook": "yes", **off},
    }
    if not wait_until_alone(spaces):
        bad(f"{tag}: other runs' webhooks or policies kept acting in this run's namespaces")
        return False
    for ns, labels in spaces.items():
        namespace(ns, labels)
    for kind in ("Pod", "Service", "CronJob"):
        if not canary_ready(ns_pol, objs, kind) or not canary_ready(ns_hook, objs, kind):
            bad(f"{tag}: {kind} mutations did not settle within 30 s")

    only_webhook = webhook_only(p, config_file, objs)
    # (a) policies only, (b) webhook only; then the UPDATEs (create, replace)
    errs_pol = create_all(ns_pol, objs)
    errs_hook = create_all(ns_hook, objs)
    if VERBOSE and (errs_pol or errs_hook):
        log(f"     {tag}: refused by the apiserver (policies): {errs_pol.strip()}")
        log(f"     {tag}: refused by the apiserver (webhook): {errs_hook.strip()}")
    for ns in (ns_pol, ns_hook):
        create_all(ns, [(u, d, a) for u, d, a, _ in updates])
        replace_all(ns, [b for _, _, _, b in updates])
    got_pol, got_hook = read_back(ns_pol), read_back(ns_hook)
    got_hook_created = {k for k in got_hook if not k.startswith("u")}
    finals = objs + [(u, d, b) for u, d, _, b in updates]
    compare(f"{tag} policies vs webhook", finals, got_pol, got_hook, "policies", "webhook", only_webhook)

    # (c) both: the webhook changes nothing the policies handled
    before = metrics(health)
    create_all(ns_both, objs)
    create_all(ns_both, [(u, d, a) for u, d, a, _ in updates])
    replace_all(ns_both, [b for _, _, _, b in updates])
    time.sleep(0.5)
    after = metrics(health)
    got_both = read_back(ns_both)
    compare(f"{tag} both vs webhook", finals, got_both, got_hook, "both", "webhook")
    lines = webhook_lines(logfile, ns_both)
    patched = [l for l in lines if int(l.get("patch_ops", 0)) != 0]
    expected_names = {o["metadata"].get("name") for oid, _, o in objs if oid in only_webhook}
    unexpected = [l for l in patched if l.get("name") not in expected_names]
    if not lines:
        bad(f"{tag} both: the webhook logged no admission in {ns_both}")
    elif unexpected:
        bad(f"{tag} both: the webhook still changed objects the policies had handled",
            "\n".join(f"{l.get('operation')} {l.get('kind')} {l.get('name')}: rules={l.get('rules')} "
                      f"patch_ops={l.get('patch_ops')}" for l in unexpected))
    else:
        ok(f"{tag} both: the webhook's patch was empty for every object the policies handled")
    delta = {r: after.get(r, 0) - before.get(r, 0) for r in RULES_2_4}
    if sum(delta.values()) != len(patched) or (not only_webhook and any(delta.values())):
        bad(f"{tag} both: tracepatch_rules_applied_total moved by {delta}, "
            f"{len(patched)} objects expected from the webhook alone")
    else:
        ok(f"{tag} both: tracepatch_rules_applied_total of rules 2-4 moved by {delta}")

    # opted-out namespaces: nothing either way
    create_all(ns_pol_off, objs)
    create_all(ns_hook_off, objs)
    off_pol, off_hook = read_back(ns_pol_off), read_back(ns_hook_off)
    compare(f"{tag} opted-out namespace", objs, off_pol, off_hook, "policies", "webhook")
    changed = changed_count(objs, got_hook, off_hook)
    untouched = sum(1 for oid, _, o in objs if oid in off_pol and
                    (off_pol[oid]["metadata"].get("labels") or {}) == (o["metadata"].get("labels") or {}))
    # (d) what the policies leave as it is never reaches their patches: each policy's
    # matchConditions stop it first, so the apiserver neither encodes and patches the
    # object nor runs the policies a second time. Counted by the apiserver itself.
    unchanged = [(oid, d, o) for oid, d, o in objs if oid in got_pol and oid in off_pol
                 and not diff(normalized(got_pol[oid]), normalized(off_pol[oid]))]
    ns_pol_again = f"{PREFIX}-{tag}-pol-again"
    spaces[ns_pol_again] = spaces[ns_pol]
    namespace(ns_pol_again, spaces[ns_pol])
    before_inv = policy_invocations(policy_names)
    create_all(ns_pol_again, unchanged)
    moved = {n: c - before_inv[n] for n, c in policy_invocations(policy_names).items() if c != before_inv[n]}
    if not unchanged:
        bad(f"{tag}: no object was left unchanged by the policies; the check needs some")
    elif moved:
        bad(f"{tag}: the policies ran their mutations on objects they do not change "
            f"({len(unchanged)} such objects created; invocations {moved})")
    else:
        ok(f"{tag}: {len(unchanged)} objects the policies do not change: no policy mutation ran")

    log(f"---- {tag}: {len(objs)} objects + {len(updates)} updates; the rules changed "
        f"{changed} of them; {len(only_webhook)} left to the webhook by the policies; with both "
        f"installed the webhook answered {len(lines)} admissions, {len(patched)} with a patch "
        f"(rules_applied delta {delta}); opted-out namespaces: {untouched} of {len(off_pol)} "
        f"stored objects kept the labels they were sent with; {len(objs) - len(got_hook_created)} "
        f"objects refused by the apiserver's validation either way; the {len(unchanged)} objects "
        f"the policies leave as they are, created again, ran {sum(moved.values())} policy mutations")
    for ns in (ns_pol, ns_hook, ns_both, ns_pol_off, ns_hook_off, ns_pol_again):
        cleanup_namespace(ns)
    found = interference(spaces)
    if found:
        log(f"     {tag}: {', '.join(found)} appeared during the profile: its results may be theirs")
        return False
    return True


# ---------------------------------------------------------------------------------------
# The ordering case
# ---------------------------------------------------------------------------------------

AGENT_POD = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "datadog-agent-x1", "labels": {"app": "datadog-agent"}},
             "spec": {"containers": [{"name": "agent", "image": "gcr.io/datadoghq/agent:7.52.0"}]}}


def standin_config(name, url, selector):
    created_cluster.append(("mutatingwebhookconfiguration", name))
    ca = CA.read_bytes()
    import base64
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name, "labels": {f"{LABEL}/run": RUN}},
            "webhooks": [{
                "name": "namespace.sidecar-injector.istio.io",
                "clientConfig": {"url": f"{url}/inject", "caBundle": base64.b64encode(ca).decode()},
                "sideEffects": "None",
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": ["pods"]}],
                "failurePolicy": "Fail", "reinvocationPolicy": "Never", "admissionReviewVersions": ["v1"],
                "namespaceSelector": {"matchLabels": selector,
                                      "matchExpressions": [{"key": "istio-injection", "operator": "In",
                                                            "values": ["enabled"]}]},
                "objectSelector": {"matchExpressions": [{"key": "sidecar.istio.io/inject",
                                                         "operator": "NotIn", "values": ["false"]}]}}]}


def containers_of(ns, name):
    p = kubectl("get", "-n", ns, "pod", name, "-o", "json")
    pod = json.loads(p.stdout)
    spec = pod["spec"]
    return [c["name"] for c in spec.get("initContainers", []) + spec["containers"]], pod


def ordering():
    config_file = tmp / "ordering.yaml"
    config_file.write_text("# the built-in Datadog profile\n")
    port_file = tmp / "standin.port"
    start([str(REPO / "tests/e2e/python.sh"), str(REPO / "tests/e2e/istio_standin.py"), "serve",
           "--tls-cert", str(CERT), "--tls-key", str(KEY), "--addr", "127.0.0.1:0",
           "--port-file", str(port_file)], tmp / "standin.log")
    deadline = time.time() + 60
    while not (port_file.exists() and port_file.read_text().strip()):
        if time.time() > deadline:
            bad("ordering: the Istio stand-in did not start", (tmp / "standin.log").read_text()[-2000:])
            return
        time.sleep(0.2)
    standin = f"https://127.0.0.1:{port_file.read_text().strip()}"
    closed = free_port()  # bound, then closed: nothing listens there
    _, url_up, _, _ = start_webhook(config_file, "ordering")
    base = {f"{LABEL}/run": RUN}
    install_policies(config_file, {**base, f"{LABEL}/ordering-policies": "yes"}, "ordering")

    # Case 1: tracepatch's webhook unreachable; Istio's injector sorts after it.
    down = {**base, f"{LABEL}/case": "down"}
    apply([webhook_config("tracepatch.io/enabled", f"https://127.0.0.1:{closed}", f"00-tracepatch-{PREFIX}-down", down),
           standin_config(f"istio-sidecar-injector-{PREFIX}", standin, down)])
    # Case 2: tracepatch up, but the injector registered under a name sorting first.
    early = {**base, f"{LABEL}/case": "early"}
    apply([webhook_config("tracepatch.io/enabled", url_up, f"00-tracepatch-{PREFIX}-up", early),
           standin_config(f"0-istio-sidecar-injector-{PREFIX}", standin, early)])
    cases = [
        ("webhook unreachable", down, f"{PREFIX}-order-down"),
        ("injector sorted first", early, f"{PREFIX}-order-early"),
    ]
    spaces = {}
    for desc, sel, ns in cases:
        spaces[ns + "-pol"] = {**sel, "istio-injection": "enabled", f"{LABEL}/ordering-policies": "yes"}
        spaces[ns + "-ctl"] = {**sel, "istio-injection": "enabled"}
    if not wait_until_alone(spaces):
        bad("ordering: other runs' webhooks or policies kept acting in this run's namespaces")
        return
    for ns, labels in spaces.items():
        namespace(ns, labels)
    time.sleep(2)
    for desc, sel, ns in cases:
        # The control first: proves the stand-in injects here and the webhook does not help.
        deadline = time.time() + 30
        while True:
            p = kubectl("create", "--dry-run=server", "-n", ns + "-ctl", "-f", "-", "-o", "json",
                        stdin=yaml.safe_dump(AGENT_POD), check=False)
            names = [c["name"] for c in json.loads(p.stdout)["spec"]["containers"]] if p.returncode == 0 else []
            if "istio-proxy" in names or time.time() > deadline:
                break
            time.sleep(1)
        kubectl("create", "-n", ns + "-ctl", "-f", "-", stdin=yaml.safe_dump(AGENT_POD), check=False)
        ctl, _ = containers_of(ns + "-ctl", AGENT_POD["metadata"]["name"])
        if "istio-proxy" in ctl:
            ok(f"ordering ({desc}): without the policies the agent pod gets a sidecar: {ctl}")
            log(f"---- ordering ({desc}), control without policies: containers {ctl}")
        else:
            bad(f"ordering ({desc}): the control pod got no sidecar, so the case proves nothing: {ctl}")
        # With the policies: wait until they are loaded (dry run), then create.
        deadline = time.time() + 30
        while time.time() < deadline:
            p = kubectl("create", "--dry-run=server", "-n", ns + "-pol", "-f", "-", "-o", "json",
                        stdin=yaml.safe_dump(AGENT_POD), check=False)
            if p.returncode == 0 and (json.loads(p.stdout)["metadata"].get("labels") or {}).get(
                    "sidecar.istio.io/inject") == "false":
                break
            time.sleep(1)
        kubectl("create", "-n", ns + "-pol", "-f", "-", stdin=yaml.safe_dump(AGENT_POD), check=False)
        pol, pod = containers_of(ns + "-pol", AGENT_POD["metadata"]["name"])
        labels = pod["metadata"].get("labels") or {}
        if "istio-proxy" not in pol and "istio-init" not in pol and labels.get("sidecar.istio.io/inject") == "false":
            ok(f"ordering ({desc}): with the policies the agent pod has no sidecar")
            log(f"---- ordering ({desc}), with policies: containers {pol}, labels {labels}")
        else:
            bad(f"ordering ({desc}): with the policies the agent pod has {pol}, labels {labels}")
    for desc, sel, ns in cases:
        cleanup_namespace(ns + "-pol")
        cleanup_namespace(ns + "-ctl")


# ---------------------------------------------------------------------------------------
# Cleanup
# ---------------------------------------------------------------------------------------

def cleanup_namespace(ns):
    if KEEP:
        return
    kubectl("delete", "-n", ns, "pods,services,cronjobs.batch", "--all", "--wait=false", check=False)
    kubectl("delete", "namespace", ns, "--wait=false", check=False)
    # No controller-manager here: finalize the (now empty) namespace ourselves.
    p = kubectl("get", "namespace", ns, "-o", "json", check=False)
    if p.returncode == 0:
        obj = json.loads(p.stdout)
        obj["spec"]["finalizers"] = []
        kubectl("replace", "--raw", f"/api/v1/namespaces/{ns}/finalize", "-f", "-",
                stdin=json.dumps(obj), check=False)
    if ns in created_namespaces:
        created_namespaces.remove(ns)


def cleanup():
    if KEEP:
        log(f"---- kept everything of run {RUN} (POLICIES_KEEP=1); logs in {tmp}")
        return
    for kind, name in reversed(created_cluster):
        kubectl("delete", kind, name, "--ignore-not-found", "--wait=false", check=False)
    for ns in list(created_namespaces):
        cleanup_namespace(ns)
    for p in processes:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in processes:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def main():
    log(f"---- run {RUN}: tracepatch {BIN}, apiserver {kubectl('config', 'view', '--minify', '-o', 'jsonpath={.clusters[0].cluster.server}').stdout}")
    try:
        global passed, failed
        for p in profiles():
            log(f"---- profile {p.name}: {len(p.fixtures)} fixtures, generated {sorted(p.generate)}")
            for attempt in range(3):
                counts = (passed, failed)
                if run_profile(p):
                    break
                if attempt < 2:
                    passed, failed = counts
                    log(f"---- profile {p.name} again: another run's webhook or policy acted in its namespaces")
        if not os.environ.get("POLICIES_PROFILES") or "ordering" in os.environ.get("POLICIES_PROFILES", ""):
            ordering()
    except Exception as e:  # report, clean up, fail
        bad(f"run aborted: {e}")
    finally:
        cleanup()
    log(f"policies: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
