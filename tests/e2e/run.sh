#!/usr/bin/env bash
# End-to-end checks of tracepatch through a real apiserver: creates objects the way a user
# would (kubectl) and asserts on exactly what the apiserver stored, or returned for a
# server-side dry run. Runs against whatever cluster KUBECONFIG points at.
#
# Two ways to reach the webhook:
#   - installed in the cluster (default): from the Helm chart or manifests/, with its
#     MutatingWebhookConfiguration $E2E_WEBHOOK_CONFIG (00-tracepatch);
#   - running on this machine: E2E_WEBHOOK_URL=https://HOST:PORT and E2E_CA_FILE=ca.crt;
#     the suite then registers its own MutatingWebhookConfiguration 00-tracepatch-e2e
#     (clientConfig.url $E2E_WEBHOOK_URL/mutate, same rules, selectors and policies) and
#     deletes it at the end. This also works against a bare apiserver with no nodes: pods
#     stay Pending, but admission has already happened.
#
# Usage:
#   tests/e2e/run.sh                   run the suite (exit 1 if any check fails)
#   tests/e2e/run.sh --check-cluster   exit 0 if a cluster is reachable, else print one
#                                      line saying why and exit 3
#   tests/e2e/run.sh --print-manifests print every object the suite would create, and exit
#
# Environment:
#   E2E_WEBHOOK_URL, E2E_CA_FILE  run against a webhook outside the cluster (see above)
#   E2E_NAMESPACE                 namespace tracepatch is installed in (default tracepatch)
#   E2E_DEPLOYMENT                its Deployment, waited for if present (default tracepatch)
#   E2E_WEBHOOK_CONFIG            its MutatingWebhookConfiguration (default 00-tracepatch)
#   E2E_TIMEOUT                   seconds to wait for readiness and mutations (default 120)
#   E2E_KEEP=1                    keep the test namespaces (for debugging)
#   E2E_PYTHON                    python3 interpreter used to parse proxy.istio.io/config
set -euo pipefail

# Byte-wise string comparison, as the apiserver sorts webhook configuration names.
export LC_ALL=C

INSTALL_NS="${E2E_NAMESPACE:-tracepatch}"
INSTALL_DEPLOYMENT="${E2E_DEPLOYMENT:-tracepatch}"
WEBHOOK_CONFIG="${E2E_WEBHOOK_CONFIG:-00-tracepatch}"
E2E_WEBHOOK_CONFIG_NAME="00-tracepatch-e2e"
TIMEOUT="${E2E_TIMEOUT:-120}"
WEBHOOK_URL="${E2E_WEBHOOK_URL:-}"
CA_FILE="${E2E_CA_FILE:-}"

# The annotation of rule 1 and the exact values the webhook must produce from it.
ENV_ANNOTATION='{"DD_ENV":"prod","DD_TRACE_SAMPLING_RULES":[{"sample_rate":0.5}]}'
WANT_DD_ENV='prod'
WANT_SAMPLING='[{"sample_rate":0.5}]'
MALFORMED_ANNOTATION='{"DD_ENV": }'
# imagePullPolicy Never: admission is what is tested; nothing needs to run or be pulled.
APP_IMAGE='registry.k8s.io/pause:3.10'
AGENT_IMAGE='gcr.io/datadoghq/agent:7'
# Test pods meet the Pod Security "restricted" profile, so that they are admitted in any
# namespace, tracepatch's own (which enforces it) included.
POD_SECURITY='  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    seccompProfile:
      type: RuntimeDefault'
CONTAINER_SECURITY='      securityContext:
        allowPrivilegeEscalation: false
        capabilities:
          drop: ["ALL"]'

PASS=0
FAIL=0
SKIP=0
pass() { echo "PASS $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL $*"; FAIL=$((FAIL + 1)); }
skip() { echo "SKIP $*"; SKIP=$((SKIP + 1)); }
info() { echo "---- $*"; }

# expect_eq DESCRIPTION GOT WANT
expect_eq() {
  if [[ "$2" == "$3" ]]; then
    pass "$1"
  else
    fail "$1: got '$2', want '$3'"
  fi
}

# ---------------------------------------------------------------------------------------
# Fixtures: every object the suite creates, as YAML on stdout.
# ---------------------------------------------------------------------------------------

# fx_namespace NAME [LABEL=VALUE ...]
fx_namespace() {
  local name="$1" kv
  shift
  cat <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: ${name}
  labels:
    app.kubernetes.io/part-of: tracepatch-e2e
EOF
  for kv in "$@"; do
    printf '    %s: "%s"\n' "${kv%%=*}" "${kv#*=}"
  done
}

# fx_webhook_config URL CA_BASE64: the suite's own registration of a webhook outside the
# cluster. Same rules, policies and selectors as manifests/mutatingwebhookconfiguration.yaml
# (tests/chart/check.sh compares them); the name sorts before istio-* for the same reason.
fx_webhook_config() {
  local url="$1" ca="$2" hook name group resource operations
  cat <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: ${E2E_WEBHOOK_CONFIG_NAME}
  labels:
    app.kubernetes.io/part-of: tracepatch-e2e
webhooks:
EOF
  for hook in 'pods.tracepatch.io||pods|"CREATE"' \
    'services.tracepatch.io||services|"CREATE", "UPDATE"' \
    'cronjobs.tracepatch.io|batch|cronjobs|"CREATE", "UPDATE"'; do
    IFS='|' read -r name group resource operations <<<"$hook"
    cat <<EOF
  - name: ${name}
    rules:
      - apiGroups: ["${group}"]
        apiVersions: ["v1"]
        resources: ["${resource}"]
        operations: [${operations}]
        scope: Namespaced
    clientConfig:
      url: ${url}/mutate
      caBundle: ${ca}
    failurePolicy: Ignore
    sideEffects: None
    admissionReviewVersions: ["v1"]
    reinvocationPolicy: IfNeeded
    matchPolicy: Equivalent
    timeoutSeconds: 3
    namespaceSelector:
      matchExpressions:
        - key: kubernetes.io/metadata.name
          operator: NotIn
          values: ["kube-system", "${INSTALL_NS}"]
        - key: tracepatch.io/enabled
          operator: NotIn
          values: ["false"]
    objectSelector:
      matchExpressions:
        - key: tracepatch.io/enabled
          operator: NotIn
          values: ["false"]
EOF
  done
}

# fx_service_account NS: the `default` account; a bare apiserver has no controller-manager
# to create it, and pod admission needs it.
fx_service_account() {
  cat <<EOF
apiVersion: v1
kind: ServiceAccount
metadata:
  name: default
  namespace: $1
EOF
}

# fx_annotated_pod NAME NS ANNOTATION_VALUE WITH_ISTIO_PROXY(yes|no) [EXTRA_LABEL=VALUE]
# A pod carrying the tracer environment annotation; with yes, it also has a container
# named istio-proxy, as if Istio had already injected one.
fx_annotated_pod() {
  local name="$1" ns="$2" annotation="$3" sidecar="$4" label="${5:-}"
  # Single-quoted YAML scalar: double any single quote in the value.
  annotation="${annotation//\'/\'\'}"
  cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  namespace: ${ns}
  labels:
    app: ${name}
EOF
  if [[ -n "$label" ]]; then
    printf '    %s: "%s"\n' "${label%%=*}" "${label#*=}"
  fi
  cat <<EOF
  annotations:
    apm.datadoghq.com/env: '${annotation}'
spec:
${POD_SECURITY}
  containers:
    - name: app
      image: ${APP_IMAGE}
      imagePullPolicy: Never
${CONTAINER_SECURITY}
EOF
  if [[ "$sidecar" == yes ]]; then
    cat <<EOF
    - name: istio-proxy
      image: ${APP_IMAGE}
      imagePullPolicy: Never
${CONTAINER_SECURITY}
EOF
  fi
}

# fx_agent_pod NAME NS: a Datadog Agent pod (label and image both say so).
fx_agent_pod() {
  cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: $2
  labels:
    app: datadog-agent
spec:
${POD_SECURITY}
  containers:
    - name: agent
      image: ${AGENT_IMAGE}
      imagePullPolicy: Never
${CONTAINER_SECURITY}
EOF
}

# fx_plain_pod NAME NS: no annotation, no agent: what Istio injects into as usual.
fx_plain_pod() {
  cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: $2
  labels:
    app: $1
spec:
${POD_SECURITY}
  containers:
    - name: app
      image: ${APP_IMAGE}
      imagePullPolicy: Never
${CONTAINER_SECURITY}
EOF
}

# fx_service NAME NS PORT_NAME PORT
fx_service() {
  cat <<EOF
apiVersion: v1
kind: Service
metadata:
  name: $1
  namespace: $2
spec:
  selector:
    app: datadog-agent
  ports:
    - name: $3
      port: $4
      targetPort: $4
      protocol: TCP
EOF
}

# fx_cronjob NAME NS [APP_LABEL_ON_THE_CRONJOB] [APP_LABEL_ON_THE_POD_TEMPLATE]
fx_cronjob() {
  local name="$1" ns="$2" app="${3:-}" template_app="${4:-}"
  cat <<EOF
apiVersion: batch/v1
kind: CronJob
metadata:
  name: ${name}
  namespace: ${ns}
EOF
  if [[ -n "$app" ]]; then
    printf '  labels:\n    app: %s\n' "$app"
  fi
  cat <<EOF
spec:
  schedule: "0 3 * * *"
  suspend: true
  jobTemplate:
    spec:
      template:
EOF
  if [[ -n "$template_app" ]]; then
    printf '        metadata:\n          labels:\n            app: %s\n' "$template_app"
  fi
  cat <<EOF
        spec:
          restartPolicy: Never
          containers:
            - name: job
              image: ${APP_IMAGE}
              imagePullPolicy: Never
EOF
}

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------

# create DESCRIPTION < YAML: create an object; a refusal is a FAIL, not an abort.
create() {
  local err
  if ! err="$(kubectl create -f - 2>&1 >/dev/null)"; then
    fail "$1: kubectl create refused it: $(echo "$err" | tr '\n' ' ')"
  fi
  return 0
}

# get NS KIND NAME JSONPATH: one field of a stored object ("" when absent).
get() {
  kubectl -n "$1" get "$2" "$3" -o "jsonpath=$4" 2>/dev/null || true
}

# The value of variable $1 on the pod's istio-proxy container, wherever it is (a native
# sidecar lives in initContainers), as a jsonpath.
proxy_env_path() {
  echo "{.spec.containers[?(@.name==\"istio-proxy\")].env[?(@.name==\"$1\")].value}{.spec.initContainers[?(@.name==\"istio-proxy\")].env[?(@.name==\"$1\")].value}"
}

# proxy_metadata VALUE_OF_proxy.istio.io/config KEY: the value of proxyMetadata.KEY.
# The annotation is YAML or JSON (Istio reads both); JSON is parsed with the standard
# library, YAML with PyYAML when present, else with a reader for a flat proxyMetadata map.
proxy_metadata() {
  "$PYTHON" - "$1" "$2" <<'PY'
import json, sys
text, key = sys.argv[1], sys.argv[2]
def flat_yaml(t):
    meta, inside = {}, False
    for line in t.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            inside = line.split(":", 1)[0].strip() == "proxyMetadata"
            continue
        if inside and ":" in line:
            k, v = line.strip().split(":", 1)
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
                v = v[1:-1].replace("''", "'") if v[0] == "'" else json.loads(v)
            meta[k.strip()] = v
    return {"proxyMetadata": meta}
try:
    doc = json.loads(text) if text.strip() else {}
except ValueError:
    try:
        import yaml
        doc = yaml.safe_load(text)
    except ImportError:
        doc = flat_yaml(text)
value = ((doc or {}).get("proxyMetadata") or {}).get(key)
print("" if value is None else value)
PY
}

# wait_for_mutation: a server-side dry run of an annotated pod until it comes back
# mutated, so that the checks do not race the webhook's start or the apiserver's view of
# a new webhook configuration.
wait_for_mutation() {
  local deadline=$((SECONDS + TIMEOUT)) got
  while ((SECONDS < deadline)); do
    got="$(fx_annotated_pod warmup "$NS_MAIN" "$ENV_ANNOTATION" yes |
      kubectl create --dry-run=server -o "jsonpath=$(proxy_env_path DD_ENV)" -f - 2>/dev/null || true)"
    if [[ "$got" == "$WANT_DD_ENV" ]]; then
      pass "webhook answers: a dry-run pod comes back mutated"
      return 0
    fi
    sleep 2
  done
  fail "webhook answers: no dry-run pod came back mutated within ${TIMEOUT}s (is tracepatch running and reachable from the apiserver?)"
}

# ensure_default_sa NS
ensure_default_sa() {
  if ! kubectl -n "$1" get serviceaccount default >/dev/null 2>&1; then
    fx_service_account "$1" | kubectl create -f - >/dev/null 2>&1 || true
  fi
}

# check_cluster: prints why no cluster is usable and returns 3, or returns 0 quietly.
check_cluster() {
  if ! command -v kubectl >/dev/null 2>&1; then
    echo "kubectl is not installed"
    return 3
  fi
  # Without a context kubectl falls back to http://localhost:8080, where something else
  # (tracepatch's own health port, say) may answer.
  if ! kubectl config current-context >/dev/null 2>&1; then
    echo "no Kubernetes context (KUBECONFIG=${KUBECONFIG:-unset}, no current-context)"
    return 3
  fi
  local out
  if ! out="$(kubectl get --raw=/version --request-timeout=5s 2>&1)"; then
    echo "no cluster reachable at context $(kubectl config current-context): $(echo "$out" | tail -n 1)"
    return 3
  fi
  return 0
}

# ---------------------------------------------------------------------------------------
# Names of this run
# ---------------------------------------------------------------------------------------
RUN_ID="${E2E_RUN_ID:-$(printf '%04x%04x' "$RANDOM" "$RANDOM")}"
NS_MAIN="tp-e2e-${RUN_ID}"
NS_OPTOUT="tp-e2e-${RUN_ID}-optout"
NS_ISTIO="tp-e2e-${RUN_ID}-istio"

print_manifests() {
  local ca="LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==" url="${WEBHOOK_URL:-https://127.0.0.1:8443}"
  if [[ -n "$CA_FILE" ]]; then
    ca="$(base64 <"$CA_FILE" | tr -d '\n')"
  fi
  fx_namespace "$NS_MAIN"
  echo ---
  fx_namespace "$NS_OPTOUT" tracepatch.io/enabled=false
  echo ---
  fx_namespace "$NS_ISTIO" istio-injection=enabled
  echo ---
  fx_webhook_config "$url" "$ca"
  echo ---
  fx_service_account "$NS_MAIN"
  echo ---
  fx_annotated_pod env-sidecar "$NS_MAIN" "$ENV_ANNOTATION" yes
  echo ---
  fx_annotated_pod env-injected "$NS_ISTIO" "$ENV_ANNOTATION" no
  echo ---
  fx_annotated_pod env-malformed "$NS_MAIN" "$MALFORMED_ANNOTATION" yes
  echo ---
  fx_annotated_pod env-optout-object "$NS_MAIN" "$ENV_ANNOTATION" yes tracepatch.io/enabled=false
  echo ---
  fx_agent_pod agent "$NS_MAIN"
  echo ---
  fx_plain_pod plain "$NS_ISTIO"
  echo ---
  fx_service agent-traces "$NS_MAIN" traceport 8126
  echo ---
  fx_service plain-svc "$NS_MAIN" http 80
  echo ---
  fx_cronjob nightly-report "$NS_MAIN"
  echo ---
  fx_cronjob billing-sync "$NS_MAIN" billing
  echo ---
  fx_cronjob relabelled "$NS_MAIN" "" relabelled
}

case "${1:-}" in
  --check-cluster)
    rc=0
    reason="$(check_cluster)" || rc=$?
    if ((rc != 0)); then echo "e2e skipped: $reason"; fi
    exit "$rc"
    ;;
  --print-manifests)
    print_manifests
    exit 0
    ;;
  "") ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
    exit 2
    ;;
esac

# ---------------------------------------------------------------------------------------
# Preflight
# ---------------------------------------------------------------------------------------
if ! reason="$(check_cluster)"; then
  echo "FAIL cannot run the e2e suite: $reason"
  exit 1
fi
PYTHON="${E2E_PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "FAIL python3 is needed to parse the proxy.istio.io/config annotation (set E2E_PYTHON)"
  exit 1
fi
if [[ -n "$WEBHOOK_URL" && ! -r "$CA_FILE" ]]; then
  echo "FAIL E2E_WEBHOOK_URL is set, so E2E_CA_FILE must name a readable CA certificate (got '${CA_FILE}')"
  exit 1
fi

TMP="$(mktemp -d)"
CREATED_WEBHOOK_CONFIG=""
CREATED_NAMESPACES=()
cleanup() {
  local rc=$?
  set +e
  if [[ -n "$CREATED_WEBHOOK_CONFIG" ]]; then
    kubectl delete mutatingwebhookconfiguration "$CREATED_WEBHOOK_CONFIG" --ignore-not-found >/dev/null 2>&1
    info "deleted MutatingWebhookConfiguration $CREATED_WEBHOOK_CONFIG"
  fi
  if ((${#CREATED_NAMESPACES[@]})); then
    if [[ "${E2E_KEEP:-}" == 1 ]]; then
      info "kept namespaces ${CREATED_NAMESPACES[*]} (E2E_KEEP=1)"
    else
      # --wait=false: a bare apiserver has no namespace controller to finish deleting.
      kubectl delete namespace "${CREATED_NAMESPACES[@]}" --ignore-not-found --wait=false >/dev/null 2>&1
      info "deleting namespaces ${CREATED_NAMESPACES[*]}"
    fi
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

info "cluster: $(kubectl config current-context) ($(kubectl get --raw=/version 2>/dev/null | tr -d ' \n' | sed -n 's/.*"gitVersion":"\([^"]*\)".*/\1/p'))"

# ---------------------------------------------------------------------------------------
# The webhook
# ---------------------------------------------------------------------------------------
if [[ -n "$WEBHOOK_URL" ]]; then
  info "mode: webhook outside the cluster at $WEBHOOK_URL"
  CREATED_WEBHOOK_CONFIG="$E2E_WEBHOOK_CONFIG_NAME"
  fx_webhook_config "$WEBHOOK_URL" "$(base64 <"$CA_FILE" | tr -d '\n')" | kubectl apply -f - >/dev/null
  ACTIVE_WEBHOOK_CONFIG="$E2E_WEBHOOK_CONFIG_NAME"
else
  info "mode: tracepatch installed in the cluster (namespace $INSTALL_NS, webhook configuration $WEBHOOK_CONFIG)"
  if ! kubectl get mutatingwebhookconfiguration "$WEBHOOK_CONFIG" >/dev/null 2>&1; then
    fail "tracepatch is not installed: no MutatingWebhookConfiguration $WEBHOOK_CONFIG (install it, see tests/e2e/README.md, or set E2E_WEBHOOK_URL)"
    exit 1
  fi
  if kubectl -n "$INSTALL_NS" get deployment "$INSTALL_DEPLOYMENT" >/dev/null 2>&1; then
    if kubectl -n "$INSTALL_NS" rollout status "deployment/$INSTALL_DEPLOYMENT" --timeout="${TIMEOUT}s" >/dev/null; then
      pass "deployment $INSTALL_NS/$INSTALL_DEPLOYMENT is rolled out"
    else
      fail "deployment $INSTALL_NS/$INSTALL_DEPLOYMENT did not become ready within ${TIMEOUT}s"
    fi
  fi
  ACTIVE_WEBHOOK_CONFIG="$WEBHOOK_CONFIG"
fi

# The order rule 2 depends on, checked against the configurations this cluster really has.
order_ok=yes
while read -r other; do
  other="${other#*/}"
  case "$other" in
    istio*)
      if [[ ! "$ACTIVE_WEBHOOK_CONFIG" < "$other" ]]; then
        order_ok=no
        fail "webhook order: $ACTIVE_WEBHOOK_CONFIG does not sort before $other"
      fi
      ;;
  esac
done < <(kubectl get mutatingwebhookconfigurations -o name)
if [[ "$order_ok" == yes ]]; then
  pass "webhook order: $ACTIVE_WEBHOOK_CONFIG sorts before every istio* webhook configuration on this cluster"
fi

# ---------------------------------------------------------------------------------------
# Test namespaces
# ---------------------------------------------------------------------------------------
ISTIO=""
if kubectl get mutatingwebhookconfigurations -o name | grep -qE '/(istio-sidecar-injector|istio-revision-tag-)'; then
  ISTIO=yes
fi
CREATED_NAMESPACES=("$NS_MAIN" "$NS_OPTOUT")
fx_namespace "$NS_MAIN" | kubectl create -f - >/dev/null
fx_namespace "$NS_OPTOUT" tracepatch.io/enabled=false | kubectl create -f - >/dev/null
if [[ -n "$ISTIO" ]]; then
  CREATED_NAMESPACES+=("$NS_ISTIO")
  fx_namespace "$NS_ISTIO" istio-injection=enabled | kubectl create -f - >/dev/null
fi
for ns in "${CREATED_NAMESPACES[@]}"; do ensure_default_sa "$ns"; done
info "test namespaces: ${CREATED_NAMESPACES[*]}"

wait_for_mutation

# ---------------------------------------------------------------------------------------
# (a) Rule 1: tracer environment from the annotation, on an existing istio-proxy and in
#     proxyMetadata for Istio to inject
# ---------------------------------------------------------------------------------------
fx_annotated_pod env-sidecar "$NS_MAIN" "$ENV_ANNOTATION" yes | create "(a) pod env-sidecar"
expect_eq "(a) pod: DD_ENV on istio-proxy" \
  "$(get "$NS_MAIN" pod env-sidecar "$(proxy_env_path DD_ENV)")" "$WANT_DD_ENV"
expect_eq "(a) pod: DD_TRACE_SAMPLING_RULES on istio-proxy (compact JSON)" \
  "$(get "$NS_MAIN" pod env-sidecar "$(proxy_env_path DD_TRACE_SAMPLING_RULES)")" "$WANT_SAMPLING"
expect_eq "(a) pod: no variable on the app container" \
  "$(get "$NS_MAIN" pod env-sidecar '{.spec.containers[?(@.name=="app")].env}')" ""
proxy_config="$(get "$NS_MAIN" pod env-sidecar '{.metadata.annotations.proxy\.istio\.io/config}')"
expect_eq "(a) pod: proxyMetadata.DD_ENV in proxy.istio.io/config" \
  "$(proxy_metadata "$proxy_config" DD_ENV)" "$WANT_DD_ENV"
expect_eq "(a) pod: proxyMetadata.DD_TRACE_SAMPLING_RULES in proxy.istio.io/config" \
  "$(proxy_metadata "$proxy_config" DD_TRACE_SAMPLING_RULES)" "$WANT_SAMPLING"

# ---------------------------------------------------------------------------------------
# (b) Rule 2: no sidecar for the agent's own pods
# ---------------------------------------------------------------------------------------
fx_agent_pod agent "$NS_MAIN" | create "(b) agent pod"
expect_eq "(b) agent pod: label sidecar.istio.io/inject" \
  "$(get "$NS_MAIN" pod agent '{.metadata.labels.sidecar\.istio\.io/inject}')" "false"
expect_eq "(b) agent pod: annotation sidecar.istio.io/inject" \
  "$(get "$NS_MAIN" pod agent '{.metadata.annotations.sidecar\.istio\.io/inject}')" "false"
expect_eq "(b) agent pod: label istio.io/dataplane-mode" \
  "$(get "$NS_MAIN" pod agent '{.metadata.labels.istio\.io/dataplane-mode}')" "none"

# ---------------------------------------------------------------------------------------
# (c) Rule 3: the trace port declared TCP, on CREATE and on UPDATE
# ---------------------------------------------------------------------------------------
fx_service agent-traces "$NS_MAIN" traceport 8126 | create "(c) service agent-traces"
expect_eq "(c) service CREATE: appProtocol of port traceport/8126" \
  "$(get "$NS_MAIN" service agent-traces '{.spec.ports[?(@.name=="traceport")].appProtocol}')" "tcp"
fx_service plain-svc "$NS_MAIN" http 80 | create "(c) service plain-svc"
expect_eq "(c) service CREATE: a port that is not the trace port is left alone" \
  "$(get "$NS_MAIN" service plain-svc '{.spec.ports[?(@.name=="http")].appProtocol}')" ""
kubectl -n "$NS_MAIN" patch service plain-svc --type=json \
  -p '[{"op":"add","path":"/spec/ports/-","value":{"name":"apm","port":8126,"targetPort":8126,"protocol":"TCP"}}]' \
  >/dev/null 2>&1 || fail "(c) service UPDATE: kubectl patch refused"
expect_eq "(c) service UPDATE: appProtocol of an added port 8126" \
  "$(get "$NS_MAIN" service plain-svc '{.spec.ports[?(@.port==8126)].appProtocol}')" "tcp"

# ---------------------------------------------------------------------------------------
# (d) Rule 4: an app label on CronJob templates, on CREATE and on UPDATE
# ---------------------------------------------------------------------------------------
fx_cronjob nightly-report "$NS_MAIN" | create "(d) cronjob nightly-report"
expect_eq "(d) cronjob without app label: pod template app label = its name" \
  "$(get "$NS_MAIN" cronjob nightly-report '{.spec.jobTemplate.spec.template.metadata.labels.app}')" "nightly-report"
expect_eq "(d) cronjob without app label: job template app label = its name" \
  "$(get "$NS_MAIN" cronjob nightly-report '{.spec.jobTemplate.metadata.labels.app}')" "nightly-report"
fx_cronjob billing-sync "$NS_MAIN" billing | create "(d) cronjob billing-sync"
expect_eq "(d) cronjob labelled app=billing: pod template app label" \
  "$(get "$NS_MAIN" cronjob billing-sync '{.spec.jobTemplate.spec.template.metadata.labels.app}')" "billing"
fx_cronjob relabelled "$NS_MAIN" "" relabelled | create "(d) cronjob relabelled"
kubectl -n "$NS_MAIN" patch cronjob relabelled --type=json \
  -p '[{"op":"remove","path":"/spec/jobTemplate/spec/template/metadata/labels/app"}]' \
  >/dev/null 2>&1 || fail "(d) cronjob UPDATE: kubectl patch refused"
expect_eq "(d) cronjob UPDATE removing the template's app label: label set again" \
  "$(get "$NS_MAIN" cronjob relabelled '{.spec.jobTemplate.spec.template.metadata.labels.app}')" "relabelled"

# ---------------------------------------------------------------------------------------
# (e) Opt-out: a namespace or an object labelled tracepatch.io/enabled=false is untouched,
#     and so are kube-system and tracepatch's own namespace
# ---------------------------------------------------------------------------------------
fx_annotated_pod env-optout "$NS_OPTOUT" "$ENV_ANNOTATION" yes | create "(e) pod env-optout"
fx_agent_pod agent-optout "$NS_OPTOUT" | create "(e) agent pod agent-optout"
expect_eq "(e) opted-out namespace: no variable on istio-proxy" \
  "$(get "$NS_OPTOUT" pod env-optout "$(proxy_env_path DD_ENV)")" ""
expect_eq "(e) opted-out namespace: no proxy.istio.io/config" \
  "$(get "$NS_OPTOUT" pod env-optout '{.metadata.annotations.proxy\.istio\.io/config}')" ""
expect_eq "(e) opted-out namespace: agent pod without sidecar.istio.io/inject label" \
  "$(get "$NS_OPTOUT" pod agent-optout '{.metadata.labels.sidecar\.istio\.io/inject}')" ""
if [[ -z "$(get "$NS_OPTOUT" pod env-optout '{.metadata.name}')" ]]; then
  fail "(e) opted-out namespace: the pods were not created, so the checks above prove nothing"
fi
fx_annotated_pod env-optout-object "$NS_MAIN" "$ENV_ANNOTATION" yes tracepatch.io/enabled=false |
  create "(e) pod env-optout-object"
expect_eq "(e) opted-out object: no variable on istio-proxy" \
  "$(get "$NS_MAIN" pod env-optout-object "$(proxy_env_path DD_ENV)")" ""
expect_eq "(e) opted-out object: created" \
  "$(get "$NS_MAIN" pod env-optout-object '{.metadata.name}')" "env-optout-object"
for ns in kube-system "$INSTALL_NS"; do
  if ! kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1; then
    skip "(e) excluded namespace $ns: the namespace or its default ServiceAccount is missing (a bare apiserver has no controller-manager to create one)"
    continue
  fi
  if got="$(fx_annotated_pod env-excluded "$ns" "$ENV_ANNOTATION" yes |
    kubectl create --dry-run=server -o "jsonpath={.metadata.name}:$(proxy_env_path DD_ENV)" -f - 2>"$TMP/excluded.err")"; then
    expect_eq "(e) excluded namespace $ns: dry-run pod unmutated" "$got" "env-excluded:"
  else
    fail "(e) excluded namespace $ns: dry-run pod refused: $(tr '\n' ' ' <"$TMP/excluded.err")"
  fi
done

# ---------------------------------------------------------------------------------------
# (f) A malformed annotation: admitted unchanged, with a warning naming the annotation
# ---------------------------------------------------------------------------------------
if fx_annotated_pod env-malformed "$NS_MAIN" "$MALFORMED_ANNOTATION" yes |
  kubectl create -f - >/dev/null 2>"$TMP/malformed.err"; then
  pass "(f) malformed annotation: pod admitted"
else
  fail "(f) malformed annotation: pod refused: $(tr '\n' ' ' <"$TMP/malformed.err")"
fi
if grep -i '^Warning:' "$TMP/malformed.err" | grep -qF 'apm.datadoghq.com/env'; then
  pass "(f) malformed annotation: kubectl printed a warning naming apm.datadoghq.com/env"
else
  fail "(f) malformed annotation: no warning naming apm.datadoghq.com/env on stderr (got: $(tr '\n' ' ' <"$TMP/malformed.err"))"
fi
expect_eq "(f) malformed annotation: pod unchanged (no variable on istio-proxy)" \
  "$(get "$NS_MAIN" pod env-malformed "$(proxy_env_path DD_ENV)")" ""
expect_eq "(f) malformed annotation: pod unchanged (no proxy.istio.io/config)" \
  "$(get "$NS_MAIN" pod env-malformed '{.metadata.annotations.proxy\.istio\.io/config}')" ""

# ---------------------------------------------------------------------------------------
# (g) A server-side dry run is mutated the same way, and nothing is stored
# ---------------------------------------------------------------------------------------
got="$(fx_annotated_pod env-dryrun "$NS_MAIN" "$ENV_ANNOTATION" yes |
  kubectl create --dry-run=server -o "jsonpath=$(proxy_env_path DD_ENV)" -f - 2>/dev/null || true)"
expect_eq "(g) dry run: DD_ENV on istio-proxy in the returned pod" "$got" "$WANT_DD_ENV"
expect_eq "(g) dry run: nothing persisted" \
  "$(kubectl -n "$NS_MAIN" get pod env-dryrun --ignore-not-found -o name 2>&1)" ""

# ---------------------------------------------------------------------------------------
# With Istio: the order against the real injector, and the reinvocation path
# ---------------------------------------------------------------------------------------
if [[ -n "$ISTIO" ]]; then
  fx_plain_pod plain "$NS_ISTIO" | create "istio: control pod"
  expect_eq "istio: control pod gets an injected istio-proxy (injection is active in $NS_ISTIO)" \
    "$(get "$NS_ISTIO" pod plain '{.spec.containers[?(@.name=="istio-proxy")].name}{.spec.initContainers[?(@.name=="istio-proxy")].name}')" "istio-proxy"
  fx_agent_pod agent "$NS_ISTIO" | create "istio: agent pod"
  names="$(get "$NS_ISTIO" pod agent '{.spec.containers[*].name} {.spec.initContainers[*].name}')"
  if [[ -z "${names// /}" ]]; then
    fail "istio: agent pod gets no istio-proxy container: the pod is missing"
  elif [[ " $names " == *" istio-proxy "* ]]; then
    fail "istio: agent pod gets no istio-proxy container: it has containers: $names"
  else
    pass "istio: agent pod gets no istio-proxy container (containers: ${names% })"
  fi
  fx_annotated_pod env-injected "$NS_ISTIO" "$ENV_ANNOTATION" no | create "istio: annotated pod"
  expect_eq "istio: injected istio-proxy has DD_ENV" \
    "$(get "$NS_ISTIO" pod env-injected "$(proxy_env_path DD_ENV)")" "$WANT_DD_ENV"
  expect_eq "istio: injected istio-proxy has DD_TRACE_SAMPLING_RULES" \
    "$(get "$NS_ISTIO" pod env-injected "$(proxy_env_path DD_TRACE_SAMPLING_RULES)")" "$WANT_SAMPLING"
else
  why="Istio's injector (MutatingWebhookConfiguration istio-sidecar-injector or istio-revision-tag-*) is not installed on this cluster"
  skip "istio: control pod gets an injected istio-proxy: $why"
  skip "istio: agent pod gets no istio-proxy container: $why"
  skip "istio: injected istio-proxy has the tracer variables (reinvocation path): $why"
fi

echo
echo "e2e: ${PASS} passed, ${FAIL} failed, ${SKIP} skipped"
((FAIL == 0))
