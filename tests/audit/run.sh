#!/usr/bin/env bash
# `tracepatch audit` against a real kube-apiserver (KUBECONFIG; when it is unset, the
# local control plane of ../shared/k8s-local).
#
# Seeds, in namespaces of its own (tpaudit-<run id>[-b|-clean|-optout|-excluded]), one
# object of every finding type, made by hand as they exist on install day (owners too: a
# Deployment, its ReplicaSet and pod joined by ownerReferences, as a controller-manager
# would have made them), plus clean objects (written by `tracepatch mutate`, i.e. as the
# webhook would have admitted them), then checks:
#   - the report (-o json) lists exactly the seeded findings, with the restart and patch
#     commands; -n, the context's namespace, -l, --exclude-namespace, opt-outs of
#     namespace and object; table and YAML; exit codes 0 / 1 / 2;
#   - the least-privilege ClusterRoles of manifests/audit/: the audit runs with the read
#     role alone (impersonating a ServiceAccount), --fix is refused without the fix role
#     and changes nothing;
#   - --fix --dry-run sends nothing; --fix (with the fix role) leaves only the pod
#     findings, patched with the field manager tracepatch-audit; a second audit agrees;
#   - the progress line on a terminal.
# Closing line: "audit: N passed, N failed"; exit 1 if any failed. Without a reachable
# apiserver: one line "audit skipped: ..." and exit 0 (CI has none).
#
# The seeds must not pass through any tracepatch webhook (other test suites may have one
# registered): their namespaces carry tracepatch.io/enabled: "false", which the shipped
# namespaceSelector excludes, and istio-injection: disabled (no injector either), and the
# audit runs with tests/audit/config.yaml, whose opt-out label is
# audit.tracepatch.io/enabled, so that it still reads them. The seeds are checked
# unchanged after creation.
#
# Environment: TRACEPATCH_BIN (default: cargo build, target/debug/tracepatch),
# AUDIT_KEEP=1 keeps the namespaces.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
if [[ -z "${KUBECONFIG:-}" && -r "$REPO/../shared/k8s-local/env.sh" ]]; then
  # shellcheck source=/dev/null
  source "$REPO/../shared/k8s-local/env.sh"
fi
export KUBECONFIG="${KUBECONFIG:-$HOME/.kube/config}"

skip() {
  echo "audit skipped: $*"
  exit 0
}
command -v kubectl >/dev/null 2>&1 || skip "kubectl is not installed"
command -v jq >/dev/null 2>&1 || skip "jq is not installed"
if ! out="$(kubectl get --raw /readyz --request-timeout=5s 2>&1)"; then
  skip "no Kubernetes apiserver reachable (KUBECONFIG=$KUBECONFIG: $(echo "$out" | tail -n 1)); start ../shared/k8s-local/start.sh"
fi

PASS=0
FAIL=0
pass() {
  PASS=$((PASS + 1))
  echo "PASS $*"
}
fail() {
  FAIL=$((FAIL + 1))
  echo "FAIL $*"
}
check() { # check NAME COMMAND...: passes when the command succeeds
  local name="$1"
  shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}

BIN="${TRACEPATCH_BIN:-}"
if [[ -z "$BIN" ]]; then
  (cd "$REPO" && cargo build --quiet --bin tracepatch) || {
    echo "FAIL cargo build"
    echo "audit: 0 passed, 1 failed"
    exit 1
  }
  BIN="$REPO/target/debug/tracepatch"
fi

ID="$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
NS="tpaudit-$ID"
NS_B="$NS-b"
NS_CLEAN="$NS-clean"
NS_OPTOUT="$NS-optout"
NS_EXCL="$NS-excluded"
ALL_NS=("$NS" "$NS_B" "$NS_CLEAN" "$NS_OPTOUT" "$NS_EXCL")
RUN_LABEL="audit.tracepatch.io/run"
OPT_OUT="audit.tracepatch.io/enabled"
CFG="$HERE/config.yaml"
WORK="$(mktemp -d)"

cleanup() {
  if [[ "${AUDIT_KEEP:-}" == 1 ]]; then
    echo "kept: namespaces ${ALL_NS[*]}, cluster roles and bindings tpaudit-$ID-*"
  else
    for n in "${ALL_NS[@]}"; do
      kubectl -n "$n" delete pods,services,cronjobs,jobs,replicasets,deployments,daemonsets,statefulsets,serviceaccounts \
        --all --wait=false >/dev/null 2>&1
    done
    kubectl delete clusterrolebinding,clusterrole -l "$RUN_LABEL=$ID" --wait=false >/dev/null 2>&1
    kubectl delete namespace "${ALL_NS[@]}" --wait=false >/dev/null 2>&1
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "---- run $ID: $($BIN --version), apiserver $(kubectl version -o json 2>/dev/null | jq -r .serverVersion.gitVersion)"

# ---------------------------------------------------------------- seeds
for n in "${ALL_NS[@]}"; do
  extra=""
  [[ "$n" == "$NS_OPTOUT" ]] && extra="    $OPT_OUT: \"false\""
  kubectl create -f - >/dev/null <<EOF || { echo "FAIL cannot create namespace $n"; exit 1; }
apiVersion: v1
kind: Namespace
metadata:
  name: $n
  labels:
    $RUN_LABEL: "$ID"
    tracepatch.io/enabled: "false"
    istio-injection: disabled
$extra
EOF
done

# create NS: the manifest on stdin; prints the uid.
create() {
  kubectl -n "$1" create -f - -o jsonpath='{.metadata.uid}'
}

PROXY='{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0"}'

# An agent Deployment, its ReplicaSet and its pod, injected before tracepatch existed.
DEP_UID="$(create "$NS" <<EOF
{"apiVersion": "apps/v1", "kind": "Deployment",
 "metadata": {"name": "agent", "labels": {"$RUN_LABEL": "$ID"}},
 "spec": {"selector": {"matchLabels": {"app": "datadog-agent"}},
  "template": {"metadata": {"labels": {"app": "datadog-agent", "$RUN_LABEL": "$ID"}},
   "spec": {"containers": [{"name": "agent", "image": "gcr.io/datadoghq/agent:7.52.0"}]}}}}
EOF
)"
RS_UID="$(create "$NS" <<EOF
{"apiVersion": "apps/v1", "kind": "ReplicaSet",
 "metadata": {"name": "agent-6f7d8", "labels": {"$RUN_LABEL": "$ID"},
  "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "agent", "uid": "$DEP_UID", "controller": true, "blockOwnerDeletion": true}]},
 "spec": {"selector": {"matchLabels": {"app": "datadog-agent", "pod-template-hash": "6f7d8"}},
  "template": {"metadata": {"labels": {"app": "datadog-agent", "pod-template-hash": "6f7d8", "$RUN_LABEL": "$ID"}},
   "spec": {"containers": [{"name": "agent", "image": "gcr.io/datadoghq/agent:7.52.0"}]}}}}
EOF
)"
create "$NS" >/dev/null <<EOF
{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "agent-6f7d8-x2x9q", "labels": {"app": "datadog-agent", "pod-template-hash": "6f7d8", "$RUN_LABEL": "$ID"},
  "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "agent-6f7d8", "uid": "$RS_UID", "controller": true, "blockOwnerDeletion": true}]},
 "spec": {"containers": [{"name": "agent", "image": "gcr.io/datadoghq/agent:7.52.0"}, $PROXY]}}
EOF

# A node agent DaemonSet's pod, recognised by its image, with a native sidecar.
DS_UID="$(create "$NS" <<EOF
{"apiVersion": "apps/v1", "kind": "DaemonSet",
 "metadata": {"name": "node-agent", "labels": {"$RUN_LABEL": "$ID"}},
 "spec": {"selector": {"matchLabels": {"app": "node-agent"}},
  "template": {"metadata": {"labels": {"app": "node-agent", "$RUN_LABEL": "$ID"}},
   "spec": {"containers": [{"name": "agent", "image": "datadog/agent:7"}]}}}}
EOF
)"
create "$NS" >/dev/null <<EOF
{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "node-agent-k2j4d", "labels": {"app": "node-agent", "$RUN_LABEL": "$ID"},
  "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "node-agent", "uid": "$DS_UID", "controller": true, "blockOwnerDeletion": true}]},
 "spec": {"initContainers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0", "restartPolicy": "Always"}],
  "containers": [{"name": "agent", "image": "datadog/agent:7"}]}}
EOF

# A meshed StatefulSet pod whose sidecar lacks a variable of the annotation.
STS_UID="$(create "$NS" <<EOF
{"apiVersion": "apps/v1", "kind": "StatefulSet",
 "metadata": {"name": "web", "labels": {"$RUN_LABEL": "$ID"}},
 "spec": {"serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
  "template": {"metadata": {"labels": {"app": "web", "$RUN_LABEL": "$ID"}},
   "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}
EOF
)"
create "$NS" >/dev/null <<EOF
{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "web-0", "labels": {"app": "web", "$RUN_LABEL": "$ID"},
  "annotations": {"apm.datadoghq.com/env": "{\"DD_ENV\": \"prod\", \"DD_SERVICE\": \"web\"}"},
  "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "$STS_UID", "controller": true, "blockOwnerDeletion": true}]},
 "spec": {"containers": [{"name": "web", "image": "nginx"},
  {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0", "env": [{"name": "DD_ENV", "value": "prod"}]}]}}
EOF

# A bare meshed pod whose sidecar has another value (the annotation changed since).
create "$NS" >/dev/null <<EOF
{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "legacy", "labels": {"$RUN_LABEL": "$ID"},
  "annotations": {"apm.datadoghq.com/env": "{\"DD_ENV\": \"prod\"}"}},
 "spec": {"containers": [{"name": "legacy", "image": "nginx"},
  {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0", "env": [{"name": "DD_ENV", "value": "staging"}]}]}}
EOF

# A bare pod with the annotation and no sidecar: admitted without tracepatch.
create "$NS" >/dev/null <<EOF
{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "worker", "labels": {"$RUN_LABEL": "$ID"},
  "annotations": {"apm.datadoghq.com/env": "{\"DD_ENV\": \"prod\"}"}},
 "spec": {"containers": [{"name": "worker", "image": "busybox"}]}}
EOF

# The agent's Service: trace port without appProtocol; the same opted out by label.
# Headless: the local apiserver's Service IP range is a /24 that every suite shares.
service() { # service NAME [EXTRA_LABELS_JSON]
  cat <<EOF
{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "$1", "labels": {"$RUN_LABEL": "$ID"${2:-}}},
 "spec": {"clusterIP": "None", "selector": {"app": "datadog-agent"},
  "ports": [{"name": "traceport", "port": 8126, "targetPort": 8126, "protocol": "TCP"},
            {"name": "dogstatsdport", "port": 8125, "targetPort": 8125, "protocol": "UDP"}]}}
EOF
}
service datadog-agent | create "$NS" >/dev/null
service opted ", \"$OPT_OUT\": \"false\"" | create "$NS" >/dev/null
service datadog-agent | create "$NS_B" >/dev/null
service datadog-agent | create "$NS_OPTOUT" >/dev/null

# A CronJob without the app label, one of its Jobs and that Job's pod.
cronjob() { # cronjob NAME [POD_TEMPLATE_LABELS_JSON]
  cat <<EOF
{"apiVersion": "batch/v1", "kind": "CronJob",
 "metadata": {"name": "$1", "labels": {"$RUN_LABEL": "$ID"}},
 "spec": {"schedule": "0 3 * * *",
  "jobTemplate": {"spec": {"template": {"metadata": {"labels": {"$RUN_LABEL": "$ID"${2:-}}},
   "spec": {"restartPolicy": "Never", "containers": [{"name": "report", "image": "busybox"}]}}}}}}
EOF
}
CJ_UID="$(cronjob report | create "$NS")"
JOB_UID="$(create "$NS" <<EOF
{"apiVersion": "batch/v1", "kind": "Job",
 "metadata": {"name": "report-29000000", "labels": {"$RUN_LABEL": "$ID"},
  "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "report", "uid": "$CJ_UID", "controller": true, "blockOwnerDeletion": true}]},
 "spec": {"template": {"metadata": {"labels": {"$RUN_LABEL": "$ID"}},
  "spec": {"restartPolicy": "Never", "containers": [{"name": "report", "image": "busybox"}]}}}}
EOF
)"
create "$NS" >/dev/null <<EOF
{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "report-29000000-r7kx2", "labels": {"$RUN_LABEL": "$ID", "job-name": "report-29000000"},
  "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "report-29000000", "uid": "$JOB_UID", "controller": true, "blockOwnerDeletion": true}]},
 "spec": {"restartPolicy": "Never", "containers": [{"name": "report", "image": "busybox"}]}}
EOF
cronjob nightly | create "$NS_EXCL" >/dev/null

# Clean objects, as the webhook would have admitted them (tracepatch mutate).
clean() { # clean: manifest on stdin, mutated by the rules, created in NS_CLEAN
  "$BIN" mutate --config "$CFG" -f - -o json 2>/dev/null | create "$NS_CLEAN" >/dev/null
}
clean <<EOF
{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "web", "labels": {"$RUN_LABEL": "$ID", "tags.datadoghq.com/version": "3"},
  "annotations": {"apm.datadoghq.com/env": "{\"DD_ENV\": \"prod\", \"DD_TRACE_SAMPLING_RULES\": [{\"sample_rate\": 0.5}]}"}},
 "spec": {"containers": [{"name": "web", "image": "nginx"}, $PROXY]}}
EOF
clean <<EOF
{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "agent", "labels": {"app": "datadog-agent", "$RUN_LABEL": "$ID"}},
 "spec": {"containers": [{"name": "agent", "image": "gcr.io/datadoghq/agent:7.52.0"}]}}
EOF
service datadog-agent | clean
cronjob report | clean
# Explicit intent: an agent pod that says inject "true" is left as set (a warning only).
create "$NS_CLEAN" >/dev/null <<EOF
{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "agent-meshed", "labels": {"app": "datadog-agent", "sidecar.istio.io/inject": "true", "$RUN_LABEL": "$ID"}},
 "spec": {"containers": [{"name": "agent", "image": "gcr.io/datadoghq/agent:7.52.0"}, $PROXY]}}
EOF

seeded() {
  local n
  n="$(kubectl get pods,services,cronjobs,jobs -A -l "$RUN_LABEL=$ID" -o name | wc -l)"
  [[ "$n" == 18 ]] || {
    echo "  expected 18 seeded pods, services, cronjobs and jobs, found $n"
    return 1
  }
  # Nothing (no webhook) changed them on the way in.
  local changed=""
  [[ -n "$(kubectl -n "$NS" get service datadog-agent -o jsonpath='{.spec.ports[0].appProtocol}')" ]] && changed=1
  [[ -n "$(kubectl -n "$NS" get pod agent-6f7d8-x2x9q -o jsonpath='{.metadata.labels.sidecar\.istio\.io/inject}')" ]] && changed=1
  [[ -n "$(kubectl -n "$NS" get cronjob report -o jsonpath='{.spec.jobTemplate.spec.template.metadata.labels.app}')" ]] && changed=1
  if [[ -n "$changed" ]]; then
    echo "  a webhook changed the seeds; registered: $(kubectl get mutatingwebhookconfigurations -o name | tr '\n' ' ')"
    return 1
  fi
}
if seeded; then pass "seeds created unmutated in ${ALL_NS[*]}"; else
  fail "seeds created unmutated"
  echo "audit: $PASS passed, $FAIL failed"
  exit 1
fi

# ---------------------------------------------------------------- expected findings
# One line per finding: namespace|kind|name|rule|finding|fix action|fix command
EXPECTED_A="$(
  cat <<EOF
$NS|CronJob|report|cronjob-app|cronjob-app-missing|patch|kubectl -n $NS patch cronjob report --type=json -p '[{"op":"add","path":"/spec/jobTemplate/spec/template/metadata/labels/app","value":"report"},{"op":"add","path":"/spec/jobTemplate/metadata/labels","value":{}},{"op":"add","path":"/spec/jobTemplate/metadata/labels/app","value":"report"}]'
$NS|Job|report-29000000|cronjob-app|cronjob-run-unlabelled|none|
$NS|Pod|agent-6f7d8-x2x9q|agent-sidecar|agent-sidecar-injected|restart|kubectl -n $NS rollout restart deployment/agent
$NS|Pod|legacy|tracer-env|sidecar-env-missing|delete-pod|kubectl -n $NS delete pod legacy
$NS|Pod|node-agent-k2j4d|agent-sidecar|agent-sidecar-injected|restart|kubectl -n $NS rollout restart daemonset/node-agent
$NS|Pod|report-29000000-r7kx2|cronjob-app|cronjob-run-unlabelled|none|
$NS|Pod|web-0|tracer-env|sidecar-env-missing|restart|kubectl -n $NS rollout restart statefulset/web
$NS|Pod|worker|tracer-env|missed-admission|delete-pod|kubectl -n $NS delete pod worker
$NS|Service|datadog-agent|trace-port|trace-port-http|patch|kubectl -n $NS patch service datadog-agent --type=json -p '[{"op":"add","path":"/spec/ports/0/appProtocol","value":"tcp"}]'
EOF
)"
EXPECTED_B="$NS_B|Service|datadog-agent|trace-port|trace-port-http|patch|kubectl -n $NS_B patch service datadog-agent --type=json -p '[{\"op\":\"add\",\"path\":\"/spec/ports/0/appProtocol\",\"value\":\"tcp\"}]'"
EXPECTED_EXCL="$NS_EXCL|CronJob|nightly|cronjob-app|cronjob-app-missing|patch|kubectl -n $NS_EXCL patch cronjob nightly --type=json -p '[{\"op\":\"add\",\"path\":\"/spec/jobTemplate/spec/template/metadata/labels/app\",\"value\":\"nightly\"},{\"op\":\"add\",\"path\":\"/spec/jobTemplate/metadata/labels\",\"value\":{}},{\"op\":\"add\",\"path\":\"/spec/jobTemplate/metadata/labels/app\",\"value\":\"nightly\"}]'"
EXPECTED_ALL="$EXPECTED_A
$EXPECTED_B"
# What --fix leaves: the pods that need a restart (or a delete).
EXPECTED_LEFT="$(grep -E '\|(restart|delete-pod)\|' <<<"$EXPECTED_A")"

# summary FILE: the report (-o json) as expected lines, in report order.
summary() {
  jq -r '.[] | [.namespace, .kind, .name, .rule, .finding, .fix.action, (.fix.command // "")] | join("|")' "$1"
}

EXCLUDE=(--exclude-namespace kube-system --exclude-namespace tracepatch --exclude-namespace "$NS_EXCL")
SEL=(-l "$RUN_LABEL=$ID")

# audit NAME [ARGS...]: runs the audit with the test's config and selector; stdout in
# $WORK/NAME.out, stderr in $WORK/NAME.err, exit status in RC.
audit() {
  local name="$1"
  shift
  "$BIN" audit --config "$CFG" "${SEL[@]}" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
  RC=$?
}

# same NAME GOT WANT: compares two texts, showing the difference.
same() {
  if [[ "$2" == "$3" ]]; then
    pass "$1"
  else
    fail "$1"
    diff <(echo "$3") <(echo "$2") | sed 's/^/    /' | head -40
  fi
}

expect_rc() { # expect_rc NAME WANT
  if [[ "$RC" == "$2" ]]; then pass "$1: exit $2"; else
    fail "$1: exit $RC, want $2"
    sed 's/^/    /' "$WORK/$1.err" | head -20
  fi
}

# ---------------------------------------------------------------- the report
audit all -A "${EXCLUDE[@]}" -o json
expect_rc all 1
same "-A -o json lists exactly the seeded findings" "$(summary "$WORK/all.out")" "$EXPECTED_ALL"
check "patches are the rules' RFC 6902 operations" test \
  "$(jq -c '[.[] | select(.kind == "Service" and .namespace == "'"$NS"'") | .patch]' "$WORK/all.out")" \
  == '[[{"op":"add","path":"/spec/ports/0/appProtocol","value":"tcp"}]]'
check "owners named (Deployment through the ReplicaSet, CronJob of a run)" test \
  "$(jq -c '[.[] | select(.owner) | "\(.name)=\(.owner.kind)/\(.owner.name)"] | sort' "$WORK/all.out")" \
  == '["agent-6f7d8-x2x9q=Deployment/agent","node-agent-k2j4d=DaemonSet/node-agent","report-29000000-r7kx2=CronJob/report","report-29000000=CronJob/report","web-0=StatefulSet/web"]'
check "sidecar reasons name the variables" grep -q 'istio-proxy lacks DD_SERVICE' "$WORK/all.out"
check "the explicit inject=\"true\" agent pod is a warning, not a finding" \
  grep -q "^Warning: $NS_CLEAN/Pod/agent-meshed: tracepatch agent-sidecar: " "$WORK/all.err"

audit with-excluded -A -o json
expect_rc with-excluded 1
same "without --exclude-namespace NS the excluded namespace's CronJob appears" \
  "$(summary "$WORK/with-excluded.out")" "$(printf '%s\n%s\n%s' "$EXPECTED_A" "$EXPECTED_B" "$EXPECTED_EXCL")"

audit one -n "$NS_B" -o json
expect_rc one 1
same "-n lists one namespace" "$(summary "$WORK/one.out")" "$EXPECTED_B"

kubectl config view --raw --minify -o json | jq --arg ns "$NS_B" '.contexts[0].context.namespace = $ns' >"$WORK/ctx.kubeconfig"
KUBECONFIG="$WORK/ctx.kubeconfig" audit context -o json
expect_rc context 1
same "no -n: the kubeconfig context's namespace" "$(summary "$WORK/context.out")" "$EXPECTED_B"

audit clean -n "$NS_CLEAN"
expect_rc clean 0
check "a clean namespace: empty table, \"No findings.\" on stderr" \
  test -z "$(cat "$WORK/clean.out")" -a "$(tail -n 1 "$WORK/clean.err")" == "No findings."
audit clean-json -n "$NS_CLEAN" -o json
expect_rc clean-json 0
check "a clean namespace in JSON is []" test "$(cat "$WORK/clean-json.out")" == "[]"

audit optout -n "$NS_OPTOUT" -o json
expect_rc optout 0
check "an opted-out namespace is not read" grep -q "namespace $NS_OPTOUT opted out ($OPT_OUT: \"false\")" "$WORK/optout.err"
audit excluded -n "$NS_EXCL" "${EXCLUDE[@]}" -o json
expect_rc excluded 0
check "an excluded namespace is not read" grep -q "namespace $NS_EXCL is excluded" "$WORK/excluded.err"

audit table -A "${EXCLUDE[@]}"
expect_rc table 1
check "table: header and one row per finding" test \
  "$(head -n 1 "$WORK/table.out" | tr -s ' ')" == "NAMESPACE KIND NAME RULE FINDING FIX" \
  -a "$(wc -l <"$WORK/table.out")" -eq 11
check "table: the fix column holds the restart command" \
  grep -qE "^$NS +Pod +agent-6f7d8-x2x9q +agent-sidecar +agent pod runs istio-proxy.* +kubectl -n $NS rollout restart deployment/agent$" "$WORK/table.out"

audit yaml -A "${EXCLUDE[@]}" -o yaml
expect_rc yaml 1
if python3 -c 'import yaml' 2>/dev/null; then
  check "-o yaml says what -o json says" test \
    "$(python3 -c 'import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1])), sort_keys=True))' "$WORK/yaml.out")" \
    == "$(jq -cS . "$WORK/all.out" | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin), sort_keys=True))')"
else
  echo "SKIP -o yaml says what -o json says (python3 with PyYAML is not installed)"
fi

# ---------------------------------------------------------------- errors: exit 2
printf 'apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]\ncontexts: [{name: c, context: {cluster: c}}]\ncurrent-context: c\nusers: []\n' >"$WORK/dead.kubeconfig"
KUBECONFIG="$WORK/dead.kubeconfig" audit unreachable -A
expect_rc unreachable 2
check "unreachable apiserver: one error line" grep -q '^error: cannot ' "$WORK/unreachable.err"
echo 'tracerEnv: {bogus: 1}' >"$WORK/bad.yaml"
"$BIN" audit --config "$WORK/bad.yaml" -A >"$WORK/badcfg.out" 2>"$WORK/badcfg.err"
RC=$?
expect_rc badcfg 2
"$BIN" audit --dry-run -A >"$WORK/usage.out" 2>"$WORK/usage.err"
RC=$?
expect_rc usage 2

# ---------------------------------------------------------------- least privilege
# The ClusterRoles of manifests/audit/, renamed for this run, bound to a ServiceAccount
# the audit impersonates.
kubectl -n "$NS" create serviceaccount auditor >/dev/null
roles() {
  sed -e "s/name: tracepatch-audit-fix$/name: tpaudit-$ID-fix/" -e "s/name: tracepatch-audit$/name: tpaudit-$ID-read/" \
    -e "s|^    app.kubernetes.io/component: audit$|&\n    $RUN_LABEL: \"$ID\"|" \
    "$REPO/manifests/audit/read/clusterroles.yaml" | kubectl create -f - >/dev/null
}
bind() { # bind ROLE
  kubectl create clusterrolebinding "tpaudit-$ID-$1" --clusterrole "tpaudit-$ID-$1" \
    --serviceaccount "$NS:auditor" >/dev/null &&
    kubectl label clusterrolebinding "tpaudit-$ID-$1" "$RUN_LABEL=$ID" >/dev/null
}
roles && bind read
kubectl config view --raw --minify -o json |
  jq --arg who "system:serviceaccount:$NS:auditor" '.users[0].user["as"] = $who' >"$WORK/auditor.kubeconfig"
check "the read role grants no patch" test "$(KUBECONFIG="$WORK/auditor.kubeconfig" kubectl -n "$NS" auth can-i patch services)" == no

KUBECONFIG="$WORK/auditor.kubeconfig" audit rbac-read -A "${EXCLUDE[@]}" -o json
expect_rc rbac-read 1
same "with the read role alone, the same report" "$(summary "$WORK/rbac-read.out")" "$EXPECTED_ALL"

RV_BEFORE="$(kubectl -n "$NS" get service datadog-agent -o jsonpath='{.metadata.resourceVersion}')"
KUBECONFIG="$WORK/auditor.kubeconfig" audit rbac-fix-refused -A "${EXCLUDE[@]}" -o json --fix
expect_rc rbac-fix-refused 1
check "--fix without the fix role: each patch refused (403), reported with the finding" test \
  "$(jq '[.[] | select(.fix.error != null) | select(.fix.error | startswith("403"))] | length' "$WORK/rbac-fix-refused.out")" == 3
check "--fix without the fix role changed nothing" test \
  "$(kubectl -n "$NS" get service datadog-agent -o jsonpath='{.metadata.resourceVersion}')" == "$RV_BEFORE"

# ---------------------------------------------------------------- --fix
audit dry -A "${EXCLUDE[@]}" -o json --fix --dry-run
expect_rc dry 1
same "--fix --dry-run: every finding remains" "$(summary "$WORK/dry.out")" "$EXPECTED_ALL"
check "--fix --dry-run shows the patch, test of the resourceVersion first" grep -qF \
  "$NS: service/datadog-agent would be patched: [{\"op\":\"test\",\"path\":\"/metadata/resourceVersion\",\"value\":\"$RV_BEFORE\"},{\"op\":\"add\",\"path\":\"/spec/ports/0/appProtocol\",\"value\":\"tcp\"}]" \
  "$WORK/dry.err"
check "--fix --dry-run changed nothing" test \
  "$(kubectl -n "$NS" get service datadog-agent -o jsonpath='{.metadata.resourceVersion}')" == "$RV_BEFORE"

bind fix
KUBECONFIG="$WORK/auditor.kubeconfig" audit fix -A "${EXCLUDE[@]}" -o json --fix
expect_rc fix 1
same "--fix leaves only the pod findings" "$(summary "$WORK/fix.out")" "$EXPECTED_LEFT"
check "--fix says what it patched" test "$(grep -c ' patched (' "$WORK/fix.err")" == 3
check "--fix prints the restart commands" grep -qx "  kubectl -n $NS rollout restart deployment/agent" "$WORK/fix.err"
check "the Services got appProtocol: tcp" test \
  "$(kubectl get services -A -l "$RUN_LABEL=$ID" -o json | jq -c '[.items[] | select(.metadata.namespace == "'"$NS"'" or .metadata.namespace == "'"$NS_B"'") | select(.metadata.name == "datadog-agent") | .spec.ports[0].appProtocol]')" \
  == '["tcp","tcp"]'
check "the CronJob got the app label on both templates" test \
  "$(kubectl -n "$NS" get cronjob report -o jsonpath='{.spec.jobTemplate.metadata.labels.app}/{.spec.jobTemplate.spec.template.metadata.labels.app}')" == "report/report"
check "patched by the field manager tracepatch-audit" test \
  "$(kubectl -n "$NS" get service datadog-agent --show-managed-fields -o json | jq -r '[.metadata.managedFields[].manager] | index("tracepatch-audit") != null')" == true
check "the opted-out Service and the excluded namespace's CronJob were not touched" test \
  "$(kubectl -n "$NS" get service opted -o jsonpath='{.spec.ports[0].appProtocol}')$(kubectl -n "$NS_EXCL" get cronjob nightly -o jsonpath='{.spec.jobTemplate.spec.template.metadata.labels.app}')" == ""

audit again -A "${EXCLUDE[@]}" -o json
expect_rc again 1
check "a second audit agrees with what --fix left" cmp -s "$WORK/fix.out" "$WORK/again.out"
audit fix-again -A "${EXCLUDE[@]}" -o json --fix
expect_rc fix-again 1
check "a second --fix patches nothing" test "$(grep -c ' patched (' "$WORK/fix-again.err")" == 0

# ---------------------------------------------------------------- progress on a terminal
if command -v script >/dev/null 2>&1; then
  script -qec "$BIN audit --config $CFG -l $RUN_LABEL=$ID -A -o json >/dev/null" "$WORK/tty.log" >/dev/null 2>&1
  check "a progress line on a terminal, rewritten with \\r" grep -q $'\r\e\[2Kaudit: [0-9]* pods read' "$WORK/tty.log"
  check "no progress line when stderr is not a terminal" test "$(grep -c $'\r' "$WORK/all.err")" == 0
else
  echo "SKIP progress line (script(1) is not installed)"
fi

echo "audit: $PASS passed, $FAIL failed"
((FAIL == 0))
