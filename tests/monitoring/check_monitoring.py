"""Checks of tracepatch's alerts, dashboard and runbooks; run by tests/monitoring/check.sh.

- promtool check rules on the rule file, and promtool test rules on its unit tests
  (tracepatch.rules.test.yaml): every alert and severity fires in a test and has a test
  where it must stay silent; and the tests are shown to bite: the `for:` of every alert
  one minute shorter or longer, each threshold moved, the webhook-name matcher widened
  to any webhook, each must make promtool test fail;
- every metric, label, grouping label and label value used by the alerts and the
  dashboard exists in /metrics captured from kube-apiserver v1.36.2 and tracepatch
  (fixtures/), or is a label Prometheus attaches to scraped series; every legend and
  annotation names only labels its expression returns; the checker itself is shown to
  catch misspellings;
- the webhook-name matcher is the same everywhere and matches exactly the webhooks of
  manifests/mutatingwebhookconfiguration.yaml;
- every dashboard expression passes promtool check rules (as recording rules, with the
  Grafana variables replaced), and the dashboard holds together (ids, layout, data
  source, the panels asked for);
- every alert has summary, description and a runbook_url whose anchor is a section of
  docs/runbooks.md saying what it means, how to confirm it and how to fix it;
- one source of truth: manifests/monitoring/ is what tests/monitoring/generate.py makes
  from the chart's monitoring/ files, the chart's rendered PrometheusRule, dashboard
  ConfigMap and ServiceMonitor equal those manifests (Helm engine), the chart's values
  change only what they say, and kubectl kustomize manifests/monitoring builds them.

Output: one PASS/FAIL/SKIP line per check, then "monitoring: N passed, N failed, N skipped".
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate  # noqa: E402
import promql  # noqa: E402

REPO = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE.parents[1]
CHART = REPO / "manifests" / "helm" / "tracepatch"
RULES = CHART / "monitoring" / "tracepatch.rules.yaml"
DASHBOARD = CHART / "monitoring" / "tracepatch-dashboard.json"
RULE_TESTS = HERE / "tracepatch.rules.test.yaml"
PLAIN = REPO / "manifests" / "monitoring"
MWC = REPO / "manifests" / "mutatingwebhookconfiguration.yaml"
RUNBOOKS = REPO / "docs" / "runbooks.md"
FIXTURES = sorted((HERE / "fixtures").glob("*.metrics"))

# Labels Prometheus attaches to every series it scrapes: job and instance always; the
# Prometheus Operator's ServiceMonitors (and kube-prometheus's apiserver job) add the
# others. Accepted on any metric; their values depend on the scrape configuration.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
# Series Prometheus makes itself for every target (not in any /metrics).
PROMETHEUS_SERIES = {"up": {}}
# What the dashboard's Grafana variables become for promtool.
GRAFANA_VARIABLES = {"__rate_interval": "5m", "__range": "1h", "__interval": "1m", "job": ".*tracepatch.*"}
SEVERITIES = {"warning", "critical"}

# ---------------------------------------------------------------------------------------
# Reporting (the same output as tests/chart/check_chart.py)
# ---------------------------------------------------------------------------------------

COUNTS = {"PASS": 0, "FAIL": 0, "SKIP": 0}
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


def short(v, limit: int = 400) -> str:
    s = json.dumps(v, sort_keys=True, default=sorted) if not isinstance(v, str) else repr(v)
    return s if len(s) <= limit else s[:limit] + "..."


def group(title: str):
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            _GROUPS.append({"PASS": 0, "FAIL": 0, "SKIP": 0})
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - reported, then the next group runs
                report("FAIL", f"{title}: raised {type(e).__name__}", f"{e}\n{traceback.format_exc()}")
                return None
            finally:
                g = _GROUPS.pop()
                total = g["PASS"] + g["FAIL"] + g["SKIP"]
                if g["FAIL"]:
                    print(f"FAIL {title}: {g['FAIL']} of {total} checks failed", flush=True)
                elif not VERBOSE and g["PASS"]:
                    print(f"PASS {title}: {g['PASS']} checks" + (f", {g['SKIP']} skipped" if g["SKIP"] else ""),
                          flush=True)
        return run
    return wrap


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------

def alert_rules(rules_doc: dict) -> list[dict]:
    return [r for g in rules_doc["groups"] for r in g["rules"] if "alert" in r]


def rule_key(r: dict) -> str:
    return f"{r['alert']} ({r.get('labels', {}).get('severity', '?')})"


def load_catalog() -> dict:
    catalog = {}
    for f in FIXTURES:
        for metric, labels in promql.parse_exposition(f.read_text()).items():
            merged = catalog.setdefault(metric, {})
            for label, values in labels.items():
                merged.setdefault(label, set()).update(values)
    for metric, labels in PROMETHEUS_SERIES.items():
        catalog.setdefault(metric, dict(labels))
    return catalog


def grafana_substitute(expr: str) -> tuple[str, list[str]]:
    """expr with the Grafana variables replaced, and the unknown ones."""
    unknown = []

    def sub(m):
        name = m.group(1) or m.group(2)
        if name not in GRAFANA_VARIABLES:
            unknown.append(name)
            return m.group(0)
        return GRAFANA_VARIABLES[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", sub, expr), unknown


def dashboard_targets(dash: dict) -> list[tuple[dict, dict]]:
    """(panel, target) for every query of every panel (rows' nested panels too)."""
    out = []
    for p in dash["panels"]:
        for q in [p] + p.get("panels", []):
            for t in q.get("targets", []):
                out.append((q, t))
    return out


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def webhook_names() -> list[str]:
    return [w["name"] for w in yaml.safe_load(MWC.read_text())["webhooks"]]


# ---------------------------------------------------------------------------------------
# promtool: the rule file and its unit tests
# ---------------------------------------------------------------------------------------

PROMTOOL = shutil.which("promtool")


@group("promtool check rules (alerts)")
def check_rule_file(rules_doc: dict) -> None:
    out = run([PROMTOOL, "check", "rules", str(RULES)])
    expect(out.returncode == 0, f"promtool check rules {RULES.relative_to(REPO)}", out.stdout + out.stderr)
    print("     " + " ".join((out.stdout + out.stderr).split()), flush=True)
    seen_names = set()
    for g in rules_doc["groups"]:
        expect(g["name"] not in seen_names, f"group {g['name']}: unique name", "duplicate")
        seen_names.add(g["name"])
    for r in alert_rules(rules_doc):
        k = rule_key(r)
        expect(re.fullmatch(r"Tracepatch[A-Z][A-Za-z]+", r["alert"]) is not None, f"{k}: name Tracepatch<CamelCase>",
               r["alert"])
        expect(r.get("labels", {}).get("severity") in SEVERITIES, f"{k}: severity is warning or critical",
               short(r.get("labels")))
        ann = r.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            expect(bool(str(ann.get(key, "")).strip()), f"{k}: has {key}", "missing")
        expect(set(ann) <= {"summary", "description", "runbook_url"}, f"{k}: no other annotations", short(sorted(ann)))
        expect(bool(r.get("for")), f"{k}: has for:", "missing")
    pairs = [(r["alert"], r["labels"]["severity"]) for r in alert_rules(rules_doc)]
    expect(len(pairs) == len(set(pairs)), "each alert has one rule per severity", short(pairs))


@group("promtool test rules (alert unit tests)")
def check_rule_tests(rules_doc: dict) -> None:
    out = run([PROMTOOL, "test", "rules", str(RULE_TESTS)])
    text = (out.stdout + out.stderr).strip()
    expect(out.returncode == 0, f"promtool test rules {RULE_TESTS.relative_to(REPO)}", text)
    print("     " + " ".join(text.split()), flush=True)
    tests = yaml.safe_load(RULE_TESTS.read_text())
    rule_file = (RULE_TESTS.parent / tests["rule_files"][0]).resolve()
    expect_eq(tests["rule_files"], [os.path.relpath(RULES, RULE_TESTS.parent)],
              "the unit tests load the chart's rule file, and only it")
    expect(rule_file == RULES, "rule_files resolves to the chart's rule file", str(rule_file))
    fired, silent, names_tested = set(), set(), set()
    for t in tests["tests"]:
        for a in t.get("alert_rule_test", []):
            names_tested.add(a["alertname"])
            if not a.get("exp_alerts"):
                silent.add(a["alertname"])
            for e in a.get("exp_alerts") or []:
                fired.add((a["alertname"], e.get("exp_labels", {}).get("severity")))
                expect(set(e.get("exp_annotations", {})) == {"summary", "description", "runbook_url"},
                       f"{t['name']}: {a['alertname']} at {a['eval_time']}: every annotation is checked",
                       short(sorted(e.get("exp_annotations", {}))))
    for r in alert_rules(rules_doc):
        expect((r["alert"], r["labels"]["severity"]) in fired, f"{rule_key(r)}: a test makes it fire",
               "no test expects it")
        expect(r["alert"] in silent, f"{r['alert']}: a test where it must stay silent", "none")
    unknown = names_tested - {r["alert"] for r in alert_rules(rules_doc)}
    expect(not unknown, "the tests name only alerts that exist", short(sorted(unknown)))


def _minutes(d: str) -> int:
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?", d)
    if not m or not d:
        raise ValueError(f"for: {d!r}: only h and m are handled here")
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


# Changes that the unit tests must notice: (what, alert, severity, old text, new text) in
# that rule's expr. Thresholds one step off, a condition dropped, a label lost.
EXPR_MUTATIONS = [
    ("threshold > 0 -> >= 0", "TracepatchWebhookFailingOpen", "warning", ") > 0", ") >= 0"),
    ("the type=\"admit\" matcher dropped", "TracepatchWebhookFailingOpen", "warning", ', type="admit"', ""),
    ("ratio 0.5 -> 0.4", "TracepatchWebhookFailingOpen", "critical", "> 0.5", "> 0.4"),
    ("ratio 0.5 -> 0.6", "TracepatchWebhookFailingOpen", "critical", "> 0.5", "> 0.6"),
    ("window 5m -> 10m", "TracepatchWebhookRejecting", "critical", "[5m]", "[10m]"),
    ("error_type dropped from the labels", "TracepatchWebhookRejecting", "critical", "error_type, ", ""),
    ("p99 -> p90", "TracepatchWebhookSlow", "warning", "histogram_quantile(0.99,", "histogram_quantile(0.90,"),
    ("p99 threshold 1s -> 10s", "TracepatchWebhookSlow", "warning", ") > 1\n", ") > 10\n"),
    ("14 days -> 15 days", "TracepatchServingCertificateExpiring", "warning", "< 14 * 86400", "< 15 * 86400"),
    ("a gauge of 0 (no certificate) counted", "TracepatchServingCertificateExpiring", "warning",
     "(tracepatch_serving_certificate_expiry_timestamp_seconds > 0)",
     "tracepatch_serving_certificate_expiry_timestamp_seconds"),
    ("3 days -> 4 days", "TracepatchServingCertificateExpiring", "critical", "< 3 * 86400", "< 4 * 86400"),
    ("more than 5 -> 5 or more", "TracepatchInvalidRequests", "warning", ") > 5", ") >= 5"),
    ("result=\"invalid\" -> any result", "TracepatchInvalidRequests", "warning", '{result="invalid"}', ""),
    ("a replica that is not ready counted as ready", "TracepatchNoReadyReplica", "critical",
     'tracepatch_ready{job=~".*tracepatch.*"} == 1', 'tracepatch_ready{job=~".*tracepatch.*"} >= 0'),
    ("readiness approximated by a certificate being served", "TracepatchNoReadyReplica", "critical",
     'tracepatch_ready{job=~".*tracepatch.*"} == 1',
     'tracepatch_serving_certificate_expiry_timestamp_seconds{job=~".*tracepatch.*"} > 0'),
    ("per job -> all jobs together", "TracepatchNoReadyReplica", "critical", "count by (namespace, job)", "count"),
    ("the absent() arm dropped", "TracepatchNoReadyReplica", "critical", "\nor\nabsent(up{job=~\".*tracepatch.*\"})", ""),
    ("trusted replicas counted", "TracepatchCaBundleNotTrusted", "warning",
     "tracepatch_ca_bundle_trusted == 0", "tracepatch_ca_bundle_trusted <= 1"),
    ("an absent series counted as untrusted", "TracepatchCaBundleNotTrusted", "warning",
     "tracepatch_ca_bundle_trusted == 0", "tracepatch_ready unless tracepatch_ca_bundle_trusted == 1"),
]
WEBHOOK_REGEX_TEXT = r'name=~"(pods|services|cronjobs)\\.tracepatch\\.io"'


@group("the unit tests bite (mutations of the rules must fail them)")
def check_mutations(rules_doc: dict) -> None:
    tests_text = RULE_TESTS.read_text()
    rel = os.path.relpath(RULES, RULE_TESTS.parent)
    with tempfile.TemporaryDirectory() as tmp:
        test_path = Path(tmp) / "t" / "u" / RULE_TESTS.name
        test_path.parent.mkdir(parents=True)
        test_path.write_text(tests_text)
        rules_path = (test_path.parent / rel).resolve()
        rules_path.parent.mkdir(parents=True, exist_ok=True)

        def fails(doc: dict) -> tuple[bool, str]:
            rules_path.write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
            out = run([PROMTOOL, "test", "rules", str(test_path)])
            return out.returncode != 0, (out.stdout + out.stderr).strip()[-300:]

        # Control: the rules as they are, written the same way, pass.
        bad, text = fails(rules_doc)
        if not expect(not bad, "control: the unmodified rules (re-serialised) pass", text):
            return

        def mutate(alert: str, severity: str, change) -> dict:
            doc = copy.deepcopy(rules_doc)
            hits = [r for r in alert_rules(doc) if r["alert"] == alert and r["labels"]["severity"] == severity]
            if len(hits) != 1:
                raise AssertionError(f"no single rule {alert} ({severity})")
            change(hits[0])
            return doc

        for r in alert_rules(rules_doc):
            k = rule_key(r)
            m = _minutes(r["for"])
            for delta in (-1, 1):
                if m + delta < 0:
                    continue
                doc = mutate(r["alert"], r["labels"]["severity"], lambda x: x.__setitem__("for", f"{m + delta}m"))
                bad, _ = fails(doc)
                expect(bad, f"{k}: for: {r['for']} -> {m + delta}m is caught", "the tests still pass")
            if WEBHOOK_REGEX_TEXT in r["expr"]:
                doc = mutate(r["alert"], r["labels"]["severity"],
                             lambda x: x.__setitem__("expr", x["expr"].replace(WEBHOOK_REGEX_TEXT, 'name=~".+"')))
                bad, _ = fails(doc)
                expect(bad, f"{k}: the webhook-name matcher widened to any webhook is caught", "the tests still pass")
        for what, alert, severity, old, new in EXPR_MUTATIONS:
            target = [x for x in alert_rules(rules_doc) if x["alert"] == alert and x["labels"]["severity"] == severity]
            expr = target[0]["expr"] if target else ""
            # Whitespace-insensitive for multi-line fragments.
            norm = re.sub(r"\s*\n\s*", "\n", expr)
            if not expect(old in norm, f"{alert} ({severity}): mutation '{what}' still applies",
                          f"{old!r} is not in the expression any more: update EXPR_MUTATIONS"):
                continue
            doc = mutate(alert, severity, lambda x: x.__setitem__("expr", norm.replace(old, new)))
            bad, _ = fails(doc)
            expect(bad, f"{alert} ({severity}): {what} is caught", "the tests still pass")


# ---------------------------------------------------------------------------------------
# Names: every metric, label and value exists
# ---------------------------------------------------------------------------------------

@group("metric and label names (fixtures from the real /metrics)")
def check_names(rules_doc: dict, dash: dict, catalog: dict) -> None:
    expect(len(FIXTURES) >= 2, "fixtures of kube-apiserver and tracepatch /metrics", short([f.name for f in FIXTURES]))
    # The checker catches what it should.
    bad = {
        "a misspelt metric": "rate(tracepatch_admission_request_total[5m])",
        "a misspelt label": 'apiserver_admission_webhook_fail_open_count{webhook="pods.tracepatch.io"}',
        "a label value never exported": 'tracepatch_admission_requests_total{result="failed"}',
        "a regex that matches no webhook": r'apiserver_admission_webhook_fail_open_count{name=~"pods\\.tracepatch\\.com"}',
        "grouping by a missing label": "sum by (webhook) (apiserver_admission_webhook_fail_open_count)",
        "an apiserver label on a tracepatch metric": 'tracepatch_admission_requests_total{code="200"}',
    }
    for what, expr in bad.items():
        expect(bool(promql.check(expr, catalog, TARGET_LABELS)), f"the name check catches {what}", f"{expr} passed")
    expect(bool(promql.check("sum by (kind) (rate(tracepatch_admission_requests_total[5m]))", catalog, TARGET_LABELS,
                             legend="{{kind}} {{result}}")),
           "the name check catches a legend label the result does not have", "passed")

    for r in alert_rules(rules_doc):
        k = rule_key(r)
        problems = promql.check(r["expr"], catalog, TARGET_LABELS)
        expect(not problems, f"alert {k}: metrics, labels and values exist", "; ".join(problems))
        a = promql.analyse(r["expr"])
        result_labels = a.by if a.by else {label for s in a.selectors for label in catalog.get(s.metric, {})} | TARGET_LABELS
        used = set()
        for text in r.get("annotations", {}).values():
            used |= set(re.findall(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)", text))
        expect(used <= result_labels, f"alert {k}: annotations use only labels the expression returns",
               f"{sorted(used - result_labels)} not in {sorted(result_labels)}")

    for panel, t in dashboard_targets(dash):
        where = f"dashboard panel {panel['id']} '{panel['title']}' {t['refId']}"
        expr, unknown = grafana_substitute(t["expr"])
        expect(not unknown, f"{where}: only known Grafana variables", short(unknown))
        problems = promql.check(expr, catalog, TARGET_LABELS, legend=t.get("legendFormat", ""))
        expect(not problems, f"{where}: metrics, labels, values and legend exist", "; ".join(problems))
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)", q)
        if not expect(m is not None, f"dashboard variable {var['name']}: label_values(selector, label)", q):
            continue
        problems = promql.check(m.group(1), catalog, TARGET_LABELS)
        expect(not problems, f"dashboard variable {var['name']}: selector exists", "; ".join(problems))
        metric = promql.analyse(m.group(1)).selectors[0].metric
        expect(m.group(2) in set(catalog.get(metric, {})) | TARGET_LABELS,
               f"dashboard variable {var['name']}: {metric} has label {m.group(2)}", "it does not")


@group("webhook names")
def check_webhook_matchers(rules_doc: dict, dash: dict) -> None:
    names = webhook_names()
    expect_eq(names, ["pods.tracepatch.io", "services.tracepatch.io", "cronjobs.tracepatch.io"],
              "manifests/mutatingwebhookconfiguration.yaml: the webhooks the alerts watch")
    exprs = [(rule_key(r), r["expr"]) for r in alert_rules(rules_doc)]
    exprs += [(f"dashboard panel {p['id']} {t['refId']}", grafana_substitute(t["expr"])[0]) for p, t in dashboard_targets(dash)]
    regexes = set()
    apiserver_selectors = 0
    for where, expr in exprs:
        for s in promql.analyse(expr).selectors:
            if not (s.metric or "").startswith("apiserver_admission_webhook_"):
                continue
            apiserver_selectors += 1
            ms = {(label, op): v for label, op, v in s.matchers}
            expect(("name", "=~") in ms and ("type", "=") in ms and ms[("type", "=")] == "admit",
                   f"{where}: {s.metric} selects by webhook name and type=\"admit\"", short(s.matchers))
            if ("name", "=~") in ms:
                regexes.add(ms[("name", "=~")])
    expect(apiserver_selectors >= 8, "the apiserver's series are used (alerts and dashboard)", str(apiserver_selectors))
    if not expect(len(regexes) == 1, "one webhook-name regex everywhere", short(sorted(regexes))):
        return
    rx = re.compile(regexes.pop())
    for n in names:
        expect(rx.fullmatch(n) is not None, f"the regex matches {n}", rx.pattern)
    for other in ["pods.other.example.com", "pods.tracepatch.io.example.com", "xpods.tracepatch.io",
                  "pods-tracepatch-io", "namespace.sidecar-injector.istio.io", "tracepatch.io", "pods.tracepatch.iox"]:
        expect(rx.fullmatch(other) is None, f"the regex does not match {other}", rx.pattern)


# ---------------------------------------------------------------------------------------
# Dashboard
# ---------------------------------------------------------------------------------------

REQUIRED_PANELS = {
    "admission rate by kind and result": ("tracepatch_admission_requests_total", {"kind", "result"}),
    "apiserver-side latency per webhook": ("apiserver_admission_webhook_admission_duration_seconds_bucket", {"name", "le"}),
    "fail-open events per webhook": ("apiserver_admission_webhook_fail_open_count", {"name"}),
    "rules applied by rule": ("tracepatch_rules_applied_total", {"rule"}),
    "warnings by rule": ("tracepatch_warnings_total", {"rule"}),
    "certificate expiry": ("tracepatch_serving_certificate_expiry_timestamp_seconds", set()),
    "ready replicas": ("tracepatch_ready", set()),
    "caBundle trust per job": ("tracepatch_ca_bundle_trusted", {"job"}),
}


@group("dashboard")
def check_dashboard(dash: dict) -> None:
    for key in ("uid", "title", "schemaVersion", "panels", "templating"):
        expect(key in dash, f"dashboard has {key}", "missing")
    expect("__inputs" not in dash, "no __inputs (the sidecar provisions dashboards without an import step)", "present")
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables.get("datasource", {})
    expect_eq((ds.get("type"), ds.get("query")), ("datasource", "prometheus"), "a Prometheus data source variable")
    panels = [q for p in dash["panels"] for q in [p] + p.get("panels", [])]
    ids = [p["id"] for p in panels]
    expect(len(ids) == len(set(ids)), "panel ids are unique", short(ids))
    boxes = []
    for p in panels:
        g = p["gridPos"]
        expect(g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0,
               f"panel {p['id']}: inside the 24-column grid", short(g))
        boxes.append((p["id"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
    overlaps = [(a[0], b[0]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
                if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]]
    expect(not overlaps, "no two panels overlap", short(overlaps))
    for p in panels:
        if p["type"] == "row":
            continue
        expect(p["type"] in {"timeseries", "stat"}, f"panel {p['id']}: a core panel type", p["type"])
        expect(bool(p.get("title")) and bool(p.get("description")), f"panel {p['id']}: title and description", "missing")
        targets = p.get("targets", [])
        expect(bool(targets), f"panel {p['id']}: has queries", "none")
        expect(p.get("datasource") == {"type": "prometheus", "uid": "${datasource}"},
               f"panel {p['id']}: uses the data source variable", short(p.get("datasource")))
        refs = [t["refId"] for t in targets]
        expect(len(refs) == len(set(refs)), f"panel {p['id']}: refIds unique", short(refs))
        for t in targets:
            expect(t.get("datasource") == {"type": "prometheus", "uid": "${datasource}"} and bool(t.get("expr")),
                   f"panel {p['id']} {t['refId']}: an expression on the data source variable", short(t))
            for s in promql.analyse(grafana_substitute(t["expr"])[0]).selectors:
                if s.metric and (s.metric.startswith("tracepatch_") or s.metric == "up"):
                    expect(("job", "=~", GRAFANA_VARIABLES["job"]) in s.matchers,
                           f"panel {p['id']} {t['refId']}: {s.metric} follows the job variable", short(s.matchers))
    for what, (metric, labels) in REQUIRED_PANELS.items():
        hit = False
        for p, t in dashboard_targets(dash):
            a = promql.analyse(grafana_substitute(t["expr"])[0])
            if any(s.metric == metric for s in a.selectors) and labels <= a.by:
                hit = True
        expect(hit, f"dashboard shows {what} ({metric} by {', '.join(sorted(labels)) or '-'})", "no panel does")

    # Every expression through promtool, as recording rules.
    rules = []
    for p, t in dashboard_targets(dash):
        expr, _ = grafana_substitute(t["expr"])
        rules.append({"record": f"tracepatch_dashboard:panel{p['id']}_{t['refId']}", "expr": expr})
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q)
            if m:
                rules.append({"record": f"tracepatch_dashboard:variable_{var['name']}", "expr": m.group(1)})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump({"groups": [{"name": "tracepatch-dashboard", "rules": rules}]}, f)
        f.flush()
        out = run([PROMTOOL, "check", "rules", f.name])
        expect(out.returncode == 0, f"promtool check rules: all {len(rules)} dashboard expressions", out.stdout + out.stderr)
        print("     " + " ".join((out.stdout + out.stderr).replace(f.name, "<dashboard expressions>").split()),
              flush=True)
    # And promtool does fail on a bad one (the check can fail).
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum by (name (up)"}]}]}, f)
        f.flush()
        out = run([PROMTOOL, "check", "rules", f.name])
        expect(out.returncode != 0, "promtool check rules refuses a malformed expression", "it accepted it")


# ---------------------------------------------------------------------------------------
# Runbooks
# ---------------------------------------------------------------------------------------

def github_anchor(heading: str) -> str:
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


@group("runbooks")
def check_runbooks(rules_doc: dict, default_base: str) -> None:
    if not expect(RUNBOOKS.exists(), "docs/runbooks.md exists", "missing"):
        return
    text = RUNBOOKS.read_text()
    sections = {}
    for m in re.finditer(r"^## (.+)$", text, re.M):
        end = text.find("\n## ", m.end())
        sections[github_anchor(m.group(1))] = text[m.end(): end if end >= 0 else len(text)]
    expect(default_base.startswith("https://") and "#" not in default_base,
           "values.yaml prometheusRule.runbookBaseURL is an https URL without a fragment", default_base)
    for r in alert_rules(rules_doc):
        k = rule_key(r)
        url = r["annotations"]["runbook_url"]
        anchor = github_anchor(r["alert"])
        expect_eq(url, f"{default_base}#{anchor}", f"{k}: runbook_url is the chart's default base + #{anchor}")
        body = sections.get(anchor)
        if not expect(body is not None, f"{k}: docs/runbooks.md has the section ## {r['alert']}", "missing"):
            continue
        for part in ("What it means", "How to confirm", "How to fix"):
            expect(f"**{part}**" in body, f"{r['alert']}: runbook says {part.lower()}", "missing")
        expect("kubectl" in body, f"{r['alert']}: runbook confirms with kubectl", "no kubectl command")
        expect(any(s.metric and s.metric in body for s in promql.analyse(r["expr"]).selectors),
               f"{r['alert']}: runbook shows the alert's series", "none of them")
    # tracepatch_ca_bundle_trusted exists in self-managed mode only: the runbook must say
    # what covers a caBundle tracepatch does not manage.
    body = sections.get("tracepatchcabundlenottrusted", "")
    expect(all(w in body for w in ("self-managed", "cert-manager", "TracepatchWebhookFailingOpen")),
           "docs/runbooks.md: the caBundle runbook covers the modes without tracepatch_ca_bundle_trusted",
           "it must name self-managed, cert-manager and TracepatchWebhookFailingOpen")


# ---------------------------------------------------------------------------------------
# One source of truth: generated manifests, chart render, kustomize
# ---------------------------------------------------------------------------------------

def plain_docs() -> dict[str, dict]:
    kustomization = yaml.safe_load((PLAIN / "kustomization.yaml").read_text())
    out = {}
    for res in kustomization["resources"]:
        for d in yaml.safe_load_all((PLAIN / res).read_text()):
            if d:
                out[d["kind"]] = d
    return out


@group("manifests/monitoring is generated from the chart's files")
def check_generated() -> None:
    for path, make in generate.GENERATED.items():
        expect(path.exists() and path.read_text() == make(), f"{path.relative_to(REPO)} is up to date",
               "differs from what tests/monitoring/generate.py makes: run it")
    listed = set(yaml.safe_load((PLAIN / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in PLAIN.glob("*.yaml")} - {"kustomization.yaml"}
    expect_eq(sorted(listed), sorted(present), "manifests/monitoring/kustomization.yaml lists every file")
    top = set(yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())["resources"])
    expect(not any("monitoring" in r for r in top), "manifests/kustomization.yaml does not include monitoring/",
           short(sorted(top)))
    plain = plain_docs()
    expect_eq(plain["PrometheusRule"]["spec"], yaml.safe_load(RULES.read_text()),
              "the plain PrometheusRule's spec is the rule file")
    expect_eq(json.loads(plain["ConfigMap"]["data"]["tracepatch.json"]), json.loads(DASHBOARD.read_text()),
              "the plain dashboard ConfigMap holds the dashboard JSON")


def render(values: dict) -> list[dict]:
    import helm_python as helm
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values=values, name="tracepatch", namespace="tracepatch", is_install=True)
    return [d for path, text in sorted(out.items()) if not path.endswith("NOTES.txt")
            for d in yaml.safe_load_all(text) if d]


@group("chart renders = manifests/monitoring")
def check_chart_render(default_base: str) -> None:
    try:
        import helm_python  # noqa: F401
    except ImportError:
        report("FAIL", "helm-python-sdk", "not installed: run through tests/monitoring/check.sh")
        return
    on = {"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}, "serviceMonitor": {"enabled": True}}
    objs = render(on)
    plain = plain_docs()
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    rule = by_kind.get("PrometheusRule", [])
    dash_cms = [o for o in by_kind.get("ConfigMap", []) if "tracepatch.json" in o.get("data", {})]
    if not (expect(len(rule) == 1, "the chart renders one PrometheusRule", str(len(rule)))
            and expect(len(dash_cms) == 1, "the chart renders one dashboard ConfigMap", str(len(dash_cms)))):
        return
    rule, cm = rule[0], dash_cms[0]
    sm = by_kind["ServiceMonitor"][0]
    expect_eq(rule["spec"], plain["PrometheusRule"]["spec"], "chart PrometheusRule spec = manifests/monitoring/prometheusrule.yaml")
    expect_eq(json.loads(cm["data"]["tracepatch.json"]), json.loads(plain["ConfigMap"]["data"]["tracepatch.json"]),
              "chart dashboard JSON = manifests/monitoring/grafana-dashboard.yaml")
    expect_eq(sm["spec"], plain["ServiceMonitor"]["spec"], "chart ServiceMonitor spec = manifests/monitoring/servicemonitor.yaml")
    for kind, o in (("PrometheusRule", rule), ("ConfigMap", cm), ("ServiceMonitor", sm)):
        p = plain[kind]
        expect_eq((o["metadata"]["name"], o["metadata"]["namespace"]), (p["metadata"]["name"], p["metadata"]["namespace"]),
                  f"{kind}: same name and namespace")
        expect(set(p["metadata"]["labels"].items()) <= set(o["metadata"]["labels"].items()),
               f"{kind}: the plain manifest's labels are the chart's", short(p["metadata"]["labels"]))
    expect_eq(cm["metadata"]["labels"].get("grafana_dashboard"), "1", "dashboard ConfigMap: grafana_dashboard: \"1\"")

    # Values change only what they say.
    custom = copy.deepcopy(on)
    custom["prometheusRule"].update({"alertLabels": {"team": "platform", "severity": "page"},
                                     "runbookBaseURL": "https://runbooks.example.com/tracepatch/",
                                     "labels": {"release": "prometheus"}})
    custom["grafanaDashboard"].update({"labels": {"dashboards": "tracepatch"}, "annotations": {"grafana_folder": "Admission"}})
    objs = render(custom)
    crule = next(o for o in objs if o["kind"] == "PrometheusRule")
    ccm = next(o for o in objs if o["kind"] == "ConfigMap" and "tracepatch.json" in o.get("data", {}))
    want = copy.deepcopy(plain["PrometheusRule"]["spec"])
    for g in want["groups"]:
        for r in g["rules"]:
            if "alert" in r:
                r["labels"] = {**r["labels"], "team": "platform"}
                r["annotations"]["runbook_url"] = r["annotations"]["runbook_url"].replace(
                    default_base, "https://runbooks.example.com/tracepatch")
    expect_eq(crule["spec"], want, "alertLabels added to every alert (severity kept), runbook URLs rebased, nothing else")
    expect_eq(crule["metadata"]["labels"].get("release"), "prometheus", "prometheusRule.labels on the PrometheusRule")
    expect_eq((ccm["metadata"]["labels"].get("dashboards"), ccm["metadata"]["labels"].get("grafana_dashboard"),
               ccm["metadata"].get("annotations")), ("tracepatch", "1", {"grafana_folder": "Admission"}),
              "grafanaDashboard.labels added to the sidecar label (Helm merges maps), annotations added")
    objs = render({"grafanaDashboard": {"enabled": True, "labels": {"dashboards": "tracepatch", "grafana_dashboard": None}}})
    ccm = next(o for o in objs if o["kind"] == "ConfigMap" and "tracepatch.json" in o.get("data", {}))
    expect_eq((ccm["metadata"]["labels"].get("dashboards"), "grafana_dashboard" in ccm["metadata"]["labels"]),
              ("tracepatch", False), "grafanaDashboard.labels.grafana_dashboard: null drops the default label")
    objs = render({"prometheusRule": {"enabled": True, "namespace": "monitoring"},
                   "grafanaDashboard": {"enabled": True, "namespace": "grafana"}})
    expect_eq(sorted((o["kind"], o["metadata"]["namespace"]) for o in objs if o["kind"] == "PrometheusRule"
                     or (o["kind"] == "ConfigMap" and "tracepatch.json" in o.get("data", {}))),
              [("ConfigMap", "grafana"), ("PrometheusRule", "monitoring")], "namespace values move the two objects")
    objs = render({})
    expect_eq(sorted(o["kind"] for o in objs if o["kind"] in {"PrometheusRule", "ServiceMonitor"}
                     or (o["kind"] == "ConfigMap" and "tracepatch.json" in o.get("data", {}))), [],
              "default values: no monitoring objects")


@group("kubectl kustomize manifests/monitoring")
def check_kustomize() -> None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        report("SKIP", "kubectl kustomize manifests/monitoring", "kubectl is not installed")
        return
    out = run([kubectl, "kustomize", str(PLAIN)])
    if not expect(out.returncode == 0, "kubectl kustomize manifests/monitoring", out.stderr.strip()):
        return
    built = sorted(json.dumps(d, sort_keys=True) for d in yaml.safe_load_all(out.stdout) if d)
    files = sorted(json.dumps(d, sort_keys=True) for d in plain_docs().values())
    expect_eq(built, files, "kustomize builds exactly the files' objects")


def main() -> int:
    if not PROMTOOL:
        print("FAIL promtool not found: install it (Debian/Ubuntu: apt-get install prometheus)")
        print("monitoring: 0 passed, 1 failed, 0 skipped")
        return 1
    version = run([PROMTOOL, "--version"]).stdout.splitlines()[0]
    print(f"---- {version}; fixtures: {', '.join(f.name for f in FIXTURES)}")
    rules_doc = yaml.safe_load(RULES.read_text())
    dash = json.loads(DASHBOARD.read_text())
    catalog = load_catalog()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    default_base = values["prometheusRule"]["runbookBaseURL"]
    check_rule_file(rules_doc)
    check_rule_tests(rules_doc)
    check_mutations(rules_doc)
    check_names(rules_doc, dash, catalog)
    check_webhook_matchers(rules_doc, dash)
    check_dashboard(dash)
    check_runbooks(rules_doc, default_base)
    check_generated()
    check_chart_render(default_base)
    check_kustomize()
    print()
    print(f"monitoring: {COUNTS['PASS']} passed, {COUNTS['FAIL']} failed, {COUNTS['SKIP']} skipped")
    return 1 if COUNTS["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
