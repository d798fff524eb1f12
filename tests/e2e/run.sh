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
# Istio's sidecar injector (E2E_ISTIO):
#   auto (default)  the real one if the cluster has it (MutatingWebhookConfiguration
#                   istio-sidecar-injector or istio-revision-tag-*), else the stand-in
#   real            the real one; a FAIL if it is not installed
#   standin         tests/e2e/istio_standin.py, started here and registered as
#                   MutatingWebhookConfiguration istio-sidecar-injector with Istio's
#                   selectors (failurePolicy Fail, reinvocationPolicy Never); stopped and
#                   deleted at the end. The apiserver must reach it at $E2E_ISTIO_HOST
#   none            no Istio checks (each prints SKIP)
#
# Usage:
#   tests/e2e/run.sh                      run the suite (exit 1 if any check fails)
#   tests/e2e/run.sh --check-cluster      exit 0 if a cluster is reachable, else print one
#                                         line saying why and exit 3
#   tests/e2e/run.sh --check-installed    exit 0 if a cluster is reachable and tracepatch is
#                                         installed there (or E2E_WEBHOOK_URL is set), else
#                                         print one line saying why and exit 3
#   tests/e2e/run.sh --print-manifests [all]  print every object the suite would create
#                                         (`all`: with the stand-in's and the second
#                                         tracepatch's webhook configurations), and exit
#
# Environment:
#   E2E_WEBHOOK_URL, E2E_CA_FILE  run against a webhook outside the cluster (see above)
#   E2E_TRACER_ENV_WEBHOOK_URL    a second tracepatch outside the cluster, started with
#                                 --config config/datadog-istio-tracer.yaml (same CA);
#                                 without it the checks of that configuration are SKIPs
#   E2E_NAMESPACE                 namespace tracepatch is installed in (default tracepatch)
#   E2E_DEPLOYMENT                its Deployment, waited for if present (default tracepatch)
#   E2E_WEBHOOK_CONFIG            its MutatingWebhookConfiguration (default 00-tracepatch)
#   E2E_ISTIO                     auto | real | standin | none (see above)
#   E2E_ISTIO_HOST                address the stand-in listens on and is called at
#                                 (default 127.0.0.1)
#   E2E_ISTIO_TLS_CERT, E2E_ISTIO_TLS_KEY, E2E_ISTIO_CA_FILE
#                                 the stand-in's serving certificate, key and the CA that
#                                 signed it; default: a throwaway CA made with openssl
#   E2E_TRACEPATCH_BIN            a tracepatch binary whose `webhook-config` renders the
#                                 suite's webhook configuration (else it is written out here)
#   E2E_TIMEOUT                   seconds to wait for readiness and mutations (default 120)
#   E2E_KEEP=1                    keep the test namespaces (for debugging)
#   E2E_PYTHON                    a python3 with PyYAML to use instead of tests/e2e/.venv
set -euo pipefail

# Byte-wise string comparison, as the apiserver sorts webhook configuration names.
export LC_ALL=C

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
INSTALL_NS="${E2E_NAMESPACE:-tracepatch}"
INSTALL_DEPLOYMENT="${E2E_DEPLOYMENT:-tracepatch}"
WEBHOOK_CONFIG="${E2E_WEBHOOK_CONFIG:-00-tracepatch}"
E2E_WEBHOOK_CONFIG_NAME="00-tracepatch-e2e"
TRACER_ENV_WEBHOOK_CONFIG_NAME="00-tracepatch-e2e-tracer-env"
ISTIO_WEBHOOK_CONFIG_NAME="istio-sidecar-injector"
TIMEOUT="${E2E_TIMEOUT:-120}"
WEBHOOK_URL="${E2E_WEBHOOK_URL:-}"
CA_FILE="${E2E_CA_FILE:-}"
TRACER_ENV_WEBHOOK_URL="${E2E_TRACER_ENV_WEBHOOK_URL:-}"
ISTIO_MODE="${E2E_ISTIO:-auto}"
ISTIO_HOST="${E2E_ISTIO_HOST:-127.0.0.1}"

# The annotation of rule 1 and the exact values the webhook must produce from it.
ENV_ANNOTATION='{"DD_ENV":"prod","DD_TRACE_SAMPLING_RULES":[{"sample_rate":0.5}]}'
WANT_DD_ENV='prod'
WANT_SAMPLING_JSON='"[{\"sample_rate\":0.5}]"' # [{"sample_rate":0.5}], as a JSON string
MALFORMED_ANNOTATION='{"DD_ENV": }'
# The annotation Istio's tracer=datadog branch does not read (config/datadog-istio-tracer.yaml).
TRACER_ENV_KEY='tracepatch.io/tracer-env'
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

# What a user may put in the annotation, each checked through Istio's injector: a case
# NAME, whether Istio's template carries it unchanged (safe) or not (unsafe: tracepatch
# must keep it out of proxyMetadata and set it on istio-proxy directly), the variable, its
# JSON value in the annotation, and the exact value the sidecar must get (a JSON string).
CASE_NAMES=()
CASE_SAFETY=()
CASE_VAR=()
CASE_JSON=()
CASE_WANT=()
# value_case NAME SAFETY JSON_VALUE [WANT]: a value of DD_E2E_VALUE.
value_case() {
  CASE_NAMES+=("$1")
  CASE_SAFETY+=("$2")
  CASE_VAR+=(DD_E2E_VALUE)
  CASE_JSON+=("$3")
  CASE_WANT+=("${4:-$3}")
}
# name_case NAME VARIABLE: a valid environment variable name ([-._a-zA-Z][-._a-zA-Z0-9]*)
# that Istio's template line `- name: {{ $key }}` does not carry as that string: go-yaml v2
# reads it as a boolean, a number or null, or as YAML syntax. Its value is "1".
name_case() {
  CASE_NAMES+=("$1")
  CASE_SAFETY+=(unsafe)
  CASE_VAR+=("$2")
  CASE_JSON+=('"1"')
  CASE_WANT+=('"1"')
}
value_case array unsafe '[{"sample_rate":0.5}]' '"[{\"sample_rate\":0.5}]"'
value_case object unsafe '{"team":"shop","tier":1}' '"{\"team\":\"shop\",\"tier\":1}"'
value_case quote unsafe '"say \"hi\""'
value_case quote-comment unsafe '"v1\" # rest"'
value_case backslash unsafe '"team:a\\b"'
value_case newline unsafe '"line1\nline2"'
value_case tab unsafe '"a\tb"'
value_case line-separator unsafe '"a\u2028b"'
value_case byte-order-mark unsafe '"\ufeffbom"'
value_case spaces safe '"  padded  "'
value_case hash safe '"v1 # not a comment"'
value_case colon safe '"key: value"'
value_case non-ascii safe '"café ☕ 東京"'
value_case empty safe '""'
name_case name-yaml-boolean Y
name_case name-yaml-number -1
name_case name-yaml-null null
name_case name-lone-dash -

# ---------------------------------------------------------------------------------------
# Results: every PASS/FAIL/SKIP line is also appended to $RESULTS, and the closing line
# counts that file, so a check that runs in a subshell (a pipeline, $(...)) still counts.
# ---------------------------------------------------------------------------------------
RESULTS=""
record() {
  echo "$1 $2"
  if [[ -n "$RESULTS" ]]; then echo "$1" >>"$RESULTS"; fi
}
pass() { record PASS "$*"; }
fail() { record FAIL "$*"; }
skip() { record SKIP "$*"; }
info() { echo "---- $*"; }
count() { grep -c "^$1\$" "$RESULTS" || true; }

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

# fx_webhook_config URL CA_FILE: the suite's own registration of a webhook outside the
# cluster. Same rules, policies and selectors as manifests/mutatingwebhookconfiguration.yaml
# (tests/chart/check.sh compares them); the name sorts before istio-* for the same reason.
# With a tracepatch binary that renders its configuration (`tracepatch webhook-config`,
# from E2E_TRACEPATCH_BIN or TRACEPATCH_BIN), that rendering, which is what
# manifests/ holds; else the same written out here.
fx_webhook_config() {
  local url="$1" ca_file="$2" ca hook name group resource operations
  local bin="${E2E_TRACEPATCH_BIN:-${TRACEPATCH_BIN:-}}"
  if [[ -n "$bin" && -x "$bin" ]] && "$bin" webhook-config --help >/dev/null 2>&1; then
    "$bin" webhook-config --name "$E2E_WEBHOOK_CONFIG_NAME" --namespace "$INSTALL_NS" --url "$url" --ca-file "$ca_file"
    return
  fi
  ca="$(base64 <"$ca_file" | tr -d '\n')"
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

# fx_tracer_env_webhook_config URL CA_BASE64: a second tracepatch, configured with
# config/datadog-istio-tracer.yaml, for pods of the namespace labelled
# e2e.tracepatch.io/config=tracer-env only (that namespace also carries
# tracepatch.io/enabled=false, so that the first tracepatch leaves it alone).
fx_tracer_env_webhook_config() {
  cat <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: ${TRACER_ENV_WEBHOOK_CONFIG_NAME}
  labels:
    app.kubernetes.io/part-of: tracepatch-e2e
webhooks:
  - name: pods.tracer-env.tracepatch.io
    rules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        resources: ["pods"]
        operations: ["CREATE"]
        scope: Namespaced
    clientConfig:
      url: $1/mutate
      caBundle: $2
    failurePolicy: Ignore
    sideEffects: None
    admissionReviewVersions: ["v1"]
    reinvocationPolicy: IfNeeded
    timeoutSeconds: 3
    namespaceSelector:
      matchLabels:
        e2e.tracepatch.io/config: tracer-env
EOF
}

# fx_istio_webhook_config URL CA_BASE64: the stand-in registered as Istio's chart registers
# istiod (istio/istio manifests/charts/istio-control/istio-discovery/templates/
# mutatingwebhook.yaml 11-37 and 65-145, default revision): four webhooks, pods CREATE,
# failurePolicy Fail, reinvocationPolicy Never (values.yaml 147), path /inject. One
# condition is the suite's own: every namespaceSelector also requires the label all the
# suite's namespaces carry, so that on a shared cluster the stand-in never injects (or,
# unreachable, refuses) anyone else's pods.
fx_istio_webhook_config() {
  local url="$1" ca="$2" prefix ns_selector obj_selector
  cat <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: ${ISTIO_WEBHOOK_CONFIG_NAME}
  labels:
    app.kubernetes.io/part-of: tracepatch-e2e
    e2e.tracepatch.io/istio-standin: "true"
    istio.io/rev: default
    app: sidecar-injector
webhooks:
EOF
  for prefix in rev.namespace. rev.object. namespace. object.; do
    case "$prefix" in
      rev.namespace.)
        ns_selector='[{key: istio.io/rev, operator: In, values: ["default"]}, {key: istio-injection, operator: DoesNotExist}'
        obj_selector='[{key: sidecar.istio.io/inject, operator: NotIn, values: ["false"]}]'
        ;;
      rev.object.)
        ns_selector='[{key: istio.io/rev, operator: DoesNotExist}, {key: istio-injection, operator: DoesNotExist}'
        obj_selector='[{key: sidecar.istio.io/inject, operator: NotIn, values: ["false"]}, {key: istio.io/rev, operator: In, values: ["default"]}]'
        ;;
      namespace.)
        ns_selector='[{key: istio-injection, operator: In, values: ["enabled"]}'
        obj_selector='[{key: sidecar.istio.io/inject, operator: NotIn, values: ["false"]}]'
        ;;
      object.)
        ns_selector='[{key: istio-injection, operator: DoesNotExist}, {key: istio.io/rev, operator: DoesNotExist}'
        obj_selector='[{key: sidecar.istio.io/inject, operator: In, values: ["true"]}, {key: istio.io/rev, operator: DoesNotExist}]'
        ;;
    esac
    cat <<EOF
  - name: ${prefix}sidecar-injector.istio.io
    clientConfig:
      url: ${url}/inject
      caBundle: ${ca}
    sideEffects: None
    rules:
      - operations: ["CREATE"]
        apiGroups: [""]
        apiVersions: ["v1"]
        resources: ["pods"]
    failurePolicy: Fail
    reinvocationPolicy: Never
    admissionReviewVersions: ["v1"]
    namespaceSelector:
      matchExpressions: ${ns_selector}, {key: app.kubernetes.io/part-of, operator: In, values: ["tracepatch-e2e"]}]
    objectSelector:
      matchExpressions: ${obj_selector}
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

# fx_istio_pod NAME NS NATIVE(true|false) [ANNOTATION_KEY ANNOTATION_VALUE]: a pod for
# Istio's injector to inject, with sidecar.istio.io/nativeSidecar saying where the sidecar
# goes (Istio honours it over its global setting) and, optionally, one more annotation
# (the tracer variables, as JSON).
fx_istio_pod() {
  local name="$1" ns="$2" native="$3" key="${4:-}" value="${5:-}"
  cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  namespace: ${ns}
  labels:
    app: ${name}
  annotations:
    sidecar.istio.io/nativeSidecar: "${native}"
EOF
  if [[ -n "$key" ]]; then
    printf "    %s: '%s'\n" "$key" "${value//\'/\'\'}"
  fi
  cat <<EOF
spec:
${POD_SECURITY}
  containers:
    - name: app
      image: ${APP_IMAGE}
      imagePullPolicy: Never
${CONTAINER_SECURITY}
EOF
}

# fx_reinjected_pod NAME NS: a pod as Istio injected it once (its sidecar.istio.io/status,
# istio-init and an istio-proxy carrying a stale DD_ENV), created again (a manifest saved
# with `kubectl get -o yaml`, say), with the tracer annotation.
fx_reinjected_pod() {
  cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: $2
  labels:
    app: $1
  annotations:
    sidecar.istio.io/nativeSidecar: "false"
    sidecar.istio.io/status: '{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":null,"imagePullSecrets":null,"revision":"default"}'
    apm.datadoghq.com/env: '${ENV_ANNOTATION}'
spec:
  initContainers:
    - name: istio-init
      image: docker.io/istio/proxyv2:previous
      imagePullPolicy: Never
  containers:
    - name: app
      image: ${APP_IMAGE}
      imagePullPolicy: Never
    - name: istio-proxy
      image: docker.io/istio/proxyv2:previous
      imagePullPolicy: Never
      env:
        - name: DD_ENV
          value: stale
EOF
}

# fx_agent_pod NAME NS [NATIVE(true|false)]: a Datadog Agent pod (label and image both say so).
fx_agent_pod() {
  cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: $2
  labels:
    app: datadog-agent
EOF
  if [[ -n "${3:-}" ]]; then
    printf '  annotations:\n    sidecar.istio.io/nativeSidecar: "%s"\n' "$3"
  fi
  cat <<EOF
spec:
${POD_SECURITY}
  containers:
    - name: agent
      image: ${AGENT_IMAGE}
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

# fx_cronjob NAME NS [APP_LABEL_ON_THE_CRONJOB] [POD_TEMPLATE_LABEL=VALUE]
fx_cronjob() {
  local name="$1" ns="$2" app="${3:-}" template_label="${4:-}"
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
  if [[ -n "$template_label" ]]; then
    printf '        metadata:\n          labels:\n            %s: %s\n' "${template_label%%=*}" "${template_label#*=}"
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

# create DESCRIPTION YAML: create an object; a refusal is a FAIL, not an abort. Returns 1
# when refused, so that a caller can leave out checks that would only repeat it. kubectl's
# stderr (its warnings) is kept in $TMP/last-create.err.
create() {
  if kubectl create -f - >/dev/null 2>"$TMP/last-create.err" <<<"$2"; then
    return 0
  fi
  fail "$1: kubectl create refused it: $(tr '\n' ' ' <"$TMP/last-create.err")"
  return 1
}

# get NS KIND NAME JSONPATH: one field of a stored object ("" when the field is absent,
# "<KIND NS/NAME is missing>" when the object is, so that a check for an absent field
# cannot pass on an object that was never created).
get() {
  local out
  if out="$(kubectl -n "$1" get "$2" "$3" -o "jsonpath=$4" 2>/dev/null)"; then
    printf '%s' "$out"
  else
    printf '<%s %s/%s is missing>' "$2" "$1" "$3"
  fi
}

# fetch_pod NS NAME: the stored pod's JSON in a file (empty when it does not exist); prints
# the file name.
fetch_pod() {
  local file="$TMP/pod.$1.$2.json"
  kubectl -n "$1" get pod "$2" -o json >"$file" 2>/dev/null || : >"$file"
  echo "$file"
}

# check_pod DESCRIPTION PODCHECK_ARGS...: PASS when tests/e2e/podcheck.py agrees, else a
# FAIL with what it found.
check_pod() {
  local desc="$1" out
  shift
  if out="$("$PY" "$HERE/podcheck.py" "$@" 2>&1)"; then
    pass "$desc"
  else
    fail "$desc: $out"
  fi
}

# warned_about NAME: kubectl printed a warning naming NAME for the last create (NAME as a
# whole word: not inside a longer name, so that `-` does not match `tracer-env`).
warned_about() {
  local word="${1//./\\.}"
  grep -i '^Warning:' "$TMP/last-create.err" | grep -qE "(^|[^-._A-Za-z0-9])${word}([^-._A-Za-z0-9]|\$)"
}

# The value of variable $1 on the pod's istio-proxy container, wherever it is (a native
# sidecar lives in initContainers), as a jsonpath.
proxy_env_path() {
  echo "{.spec.containers[?(@.name==\"istio-proxy\")].env[?(@.name==\"$1\")].value}{.spec.initContainers[?(@.name==\"istio-proxy\")].env[?(@.name==\"$1\")].value}"
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
    sleep 1
  done
  fail "webhook answers: no dry-run pod came back mutated within ${TIMEOUT}s (is tracepatch running and reachable from the apiserver?)"
  return 1
}

# wait_for_injection DESCRIPTION: a server-side dry run of a plain pod in $NS_ISTIO until
# Istio's injector adds istio-proxy to it.
wait_for_injection() {
  local deadline=$((SECONDS + TIMEOUT)) got
  while ((SECONDS < deadline)); do
    got="$(fx_istio_pod warmup "$NS_ISTIO" false |
      kubectl create --dry-run=server -o 'jsonpath={.spec.containers[*].name}' -f - 2>/dev/null || true)"
    if [[ " $got " == *" istio-proxy "* ]]; then
      pass "$1: a dry-run pod in $NS_ISTIO comes back with istio-proxy"
      return 0
    fi
    sleep 1
  done
  fail "$1: no dry-run pod in $NS_ISTIO came back with istio-proxy within ${TIMEOUT}s${STANDIN_PID:+ (does the apiserver reach the stand-in at $ISTIO_HOST? set E2E_ISTIO_HOST, or E2E_ISTIO=none)}"
  return 1
}

# wait_for_tracer_env_webhook: as wait_for_mutation, for the second tracepatch
# (config/datadog-istio-tracer.yaml) in its namespace.
wait_for_tracer_env_webhook() {
  local deadline=$((SECONDS + TIMEOUT)) got
  while ((SECONDS < deadline)); do
    got="$(fx_istio_pod warmup "$NS_TRACER_ENV" false "$TRACER_ENV_KEY" '{"DD_ENV":"prod"}' |
      kubectl create --dry-run=server -o 'jsonpath={.metadata.annotations.proxy\.istio\.io/config}' -f - 2>/dev/null || true)"
    if [[ "$got" == *DD_ENV* ]]; then
      pass "second tracepatch (config/datadog-istio-tracer.yaml) answers: a dry-run pod comes back mutated"
      return 0
    fi
    sleep 1
  done
  fail "second tracepatch (config/datadog-istio-tracer.yaml) answers: no dry-run pod came back mutated within ${TIMEOUT}s"
  return 1
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

# check_installed: as check_cluster, and tracepatch must be installed there (unless
# E2E_WEBHOOK_URL names one outside the cluster).
check_installed() {
  check_cluster || return 3
  if [[ -z "$WEBHOOK_URL" ]] && ! kubectl get mutatingwebhookconfiguration "$WEBHOOK_CONFIG" --request-timeout=5s >/dev/null 2>&1; then
    echo "tracepatch is not installed at context $(kubectl config current-context): no MutatingWebhookConfiguration $WEBHOOK_CONFIG"
    return 3
  fi
  return 0
}

istio_installed() {
  kubectl get mutatingwebhookconfigurations -o name | grep -qE '/(istio-sidecar-injector|istio-revision-tag-)'
}

# ---------------------------------------------------------------------------------------
# The Istio stand-in's process
# ---------------------------------------------------------------------------------------
STANDIN_PID=""
STANDIN_LOG=""

# make_standin_cert: a throwaway CA and a serving certificate for $ISTIO_HOST.
make_standin_cert() {
  local dir="$TMP/istio-pki" san
  mkdir -p "$dir"
  if [[ "$ISTIO_HOST" =~ ^[0-9.]+$ || "$ISTIO_HOST" == *:* ]]; then san="IP:$ISTIO_HOST"; else san="DNS:$ISTIO_HOST"; fi
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=istio-standin-ca \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=istio-standin \
    -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" >"$dir/ext"
  openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 1 -extfile "$dir/ext" -out "$dir/tls.crt" 2>/dev/null
  ISTIO_TLS_CERT="$dir/tls.crt"
  ISTIO_TLS_KEY="$dir/tls.key"
  ISTIO_CA_FILE="$dir/ca.crt"
}

# start_standin [STAND-IN FLAGS...]: start it, wait for its port, register it.
start_standin() {
  local port_file="$TMP/istio-standin.port" deadline
  rm -f "$port_file"
  "$PY" "$HERE/istio_standin.py" serve --addr "$ISTIO_HOST:0" \
    --tls-cert "$ISTIO_TLS_CERT" --tls-key "$ISTIO_TLS_KEY" --port-file "$port_file" "$@" \
    >>"$STANDIN_LOG" 2>&1 &
  STANDIN_PID=$!
  deadline=$((SECONDS + 20))
  while [[ ! -s "$port_file" ]]; do
    if ! kill -0 "$STANDIN_PID" 2>/dev/null || ((SECONDS >= deadline)); then
      fail "Istio stand-in did not start: $(tail -n 5 "$STANDIN_LOG" | tr '\n' ' ')"
      return 1
    fi
    sleep 0.2
  done
  CREATED_ISTIO_CONFIG="$ISTIO_WEBHOOK_CONFIG_NAME"
  fx_istio_webhook_config "https://$ISTIO_HOST:$(cat "$port_file")" "$(base64 <"$ISTIO_CA_FILE" | tr -d '\n')" |
    kubectl apply -f - >/dev/null
  info "Istio stand-in (pid $STANDIN_PID, ${*:-default settings}) at https://$ISTIO_HOST:$(cat "$port_file")/inject, log $STANDIN_LOG"
}

stop_standin() {
  if [[ -n "$STANDIN_PID" ]]; then
    kill "$STANDIN_PID" 2>/dev/null || true
    wait "$STANDIN_PID" 2>/dev/null || true
    STANDIN_PID=""
  fi
}

# ---------------------------------------------------------------------------------------
# Names of this run
# ---------------------------------------------------------------------------------------
RUN_ID="${E2E_RUN_ID:-$(printf '%04x%04x' "$RANDOM" "$RANDOM")}"
NS_MAIN="tp-e2e-${RUN_ID}"
NS_OPTOUT="tp-e2e-${RUN_ID}-optout"
NS_ISTIO="tp-e2e-${RUN_ID}-istio"
# Istio injects, tracepatch does not: what Istio alone does (tracer=datadog).
NS_ISTIO_ALONE="tp-e2e-${RUN_ID}-istio-alone"
# Istio injects, and the second tracepatch (config/datadog-istio-tracer.yaml) runs.
NS_TRACER_ENV="tp-e2e-${RUN_ID}-tracer-env"

print_manifests() {
  local ca ca_file="$CA_FILE" url="${WEBHOOK_URL:-https://127.0.0.1:8443}" i
  if [[ -z "$ca_file" ]]; then
    ca_file="$(mktemp)"
    echo "-----BEGIN CERTIFICATE-----" >"$ca_file"
  fi
  ca="$(base64 <"$ca_file" | tr -d '\n')"
  fx_namespace "$NS_MAIN"
  echo ---
  fx_namespace "$NS_OPTOUT" tracepatch.io/enabled=false
  echo ---
  fx_namespace "$NS_ISTIO" istio-injection=enabled
  echo ---
  fx_namespace "$NS_ISTIO_ALONE" istio-injection=enabled tracepatch.io/enabled=false
  echo ---
  fx_namespace "$NS_TRACER_ENV" istio-injection=enabled tracepatch.io/enabled=false e2e.tracepatch.io/config=tracer-env
  echo ---
  fx_webhook_config "$url" "$ca_file"
  echo ---
  if [[ -z "$CA_FILE" ]]; then rm -f "$ca_file"; fi
  if [[ "${1:-}" == all ]]; then
    # tests/chart/check.sh expects exactly one MutatingWebhookConfiguration (the one it
    # compares with manifests/) in the default output.
    fx_tracer_env_webhook_config "${TRACER_ENV_WEBHOOK_URL:-https://127.0.0.1:8444}" "$ca"
    echo ---
    fx_istio_webhook_config "https://127.0.0.1:15017" "$ca"
    echo ---
  fi
  fx_service_account "$NS_MAIN"
  echo ---
  fx_annotated_pod env-sidecar "$NS_MAIN" "$ENV_ANNOTATION" yes
  echo ---
  fx_annotated_pod env-malformed "$NS_MAIN" "$MALFORMED_ANNOTATION" yes
  echo ---
  fx_annotated_pod env-optout-object "$NS_MAIN" "$ENV_ANNOTATION" yes tracepatch.io/enabled=false
  echo ---
  fx_agent_pod agent "$NS_MAIN"
  echo ---
  fx_service agent-traces "$NS_MAIN" traceport 8126
  echo ---
  fx_service plain-svc "$NS_MAIN" http 80
  echo ---
  fx_cronjob nightly-report "$NS_MAIN"
  echo ---
  fx_cronjob billing-sync "$NS_MAIN" billing
  echo ---
  fx_cronjob relabelled "$NS_MAIN" "" app=weekly-digest
  echo ---
  fx_cronjob reports-job "$NS_MAIN" "" app.kubernetes.io/name=reports-ui
  echo ---
  fx_istio_pod control-classic "$NS_ISTIO" false
  echo ---
  fx_agent_pod agent-native "$NS_ISTIO" true
  echo ---
  for i in "${!CASE_NAMES[@]}"; do
    fx_istio_pod "case-${CASE_NAMES[$i]}-native" "$NS_ISTIO" true apm.datadoghq.com/env "{\"${CASE_VAR[$i]}\":${CASE_JSON[$i]}}"
    echo ---
  done
  fx_reinjected_pod reinjected "$NS_ISTIO"
  echo ---
  fx_istio_pod recommended-native "$NS_TRACER_ENV" true "$TRACER_ENV_KEY" "$TRACER_ENV_ANNOTATION"
}

# The variables of part 4 (tracer=datadog): a quote, a JSON array, a line break and a
# value Istio carries unchanged, in the annotation Istio does not read.
TRACER_ENV_ANNOTATION='{"DD_ENV":"prod","DD_TAGS":"say \"hi\"","DD_TRACE_SAMPLING_RULES":[{"sample_rate":0.5}],"DD_NOTE":"line1\nline2"}'

case "${1:-}" in
  --check-cluster)
    rc=0
    reason="$(check_cluster)" || rc=$?
    if ((rc != 0)); then echo "e2e skipped: $reason"; fi
    exit "$rc"
    ;;
  --check-installed)
    rc=0
    reason="$(check_installed)" || rc=$?
    if ((rc != 0)); then echo "e2e skipped: $reason"; fi
    exit "$rc"
    ;;
  --print-manifests)
    print_manifests "${2:-}"
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
case "$ISTIO_MODE" in
  auto | real | standin | none) ;;
  *)
    echo "FAIL E2E_ISTIO must be auto, real, standin or none (got '$ISTIO_MODE')"
    exit 1
    ;;
esac
if [[ -n "$WEBHOOK_URL" && ! -r "$CA_FILE" ]]; then
  echo "FAIL E2E_WEBHOOK_URL is set, so E2E_CA_FILE must name a readable CA certificate (got '${CA_FILE}')"
  exit 1
fi
if [[ -n "$TRACER_ENV_WEBHOOK_URL" && -z "$WEBHOOK_URL" ]]; then
  echo "FAIL E2E_TRACER_ENV_WEBHOOK_URL needs E2E_WEBHOOK_URL and E2E_CA_FILE (the same CA signs both)"
  exit 1
fi
# The python with PyYAML: the podcheck.py checks and the stand-in run on it.
if ! PY="$("$HERE/python.sh" -c 'import sys, yaml; print(sys.executable)')"; then
  echo "FAIL no python3 with PyYAML: tests/e2e/python.sh could not make tests/e2e/.venv (set E2E_PYTHON)"
  exit 1
fi

TMP="$(mktemp -d)"
RESULTS="$TMP/results"
: >"$RESULTS"
STANDIN_LOG="$TMP/istio-standin.log"
CREATED_WEBHOOK_CONFIG=""
CREATED_TRACER_ENV_CONFIG=""
CREATED_ISTIO_CONFIG=""
CREATED_NAMESPACES=()
cleanup() {
  local rc=$?
  set +e
  stop_standin
  local config
  for config in "$CREATED_WEBHOOK_CONFIG" "$CREATED_TRACER_ENV_CONFIG" "$CREATED_ISTIO_CONFIG"; do
    if [[ -n "$config" ]]; then
      kubectl delete mutatingwebhookconfiguration "$config" --ignore-not-found >/dev/null 2>&1
      info "deleted MutatingWebhookConfiguration $config"
    fi
  done
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
  bin="${E2E_TRACEPATCH_BIN:-${TRACEPATCH_BIN:-}}"
  if [[ -n "$bin" && -x "$bin" ]] && "$bin" webhook-config --help >/dev/null 2>&1; then
    info "its webhook configuration $E2E_WEBHOOK_CONFIG_NAME: rendered by $bin webhook-config"
  else
    info "its webhook configuration $E2E_WEBHOOK_CONFIG_NAME: the copy of manifests/ in this script"
  fi
  CREATED_WEBHOOK_CONFIG="$E2E_WEBHOOK_CONFIG_NAME"
  fx_webhook_config "$WEBHOOK_URL" "$CA_FILE" | kubectl apply -f - >/dev/null
  ACTIVE_WEBHOOK_CONFIG="$E2E_WEBHOOK_CONFIG_NAME"
  if [[ -n "$TRACER_ENV_WEBHOOK_URL" ]]; then
    info "second tracepatch (config/datadog-istio-tracer.yaml) at $TRACER_ENV_WEBHOOK_URL"
    CREATED_TRACER_ENV_CONFIG="$TRACER_ENV_WEBHOOK_CONFIG_NAME"
    fx_tracer_env_webhook_config "$TRACER_ENV_WEBHOOK_URL" "$(base64 <"$CA_FILE" | tr -d '\n')" | kubectl apply -f - >/dev/null
  fi
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

# ---------------------------------------------------------------------------------------
# Test namespaces
# ---------------------------------------------------------------------------------------
ISTIO=""
ISTIO_WHY=""
case "$ISTIO_MODE" in
  none) ISTIO_WHY="E2E_ISTIO=none" ;;
  real)
    if istio_installed; then ISTIO=real; else ISTIO_WHY="E2E_ISTIO=real, but Istio's injector (MutatingWebhookConfiguration istio-sidecar-injector or istio-revision-tag-*) is not installed"; fi
    ;;
  standin)
    if istio_installed; then
      ISTIO_WHY="E2E_ISTIO=standin, but a real Istio injector is installed; the stand-in does not register beside it"
    else
      ISTIO=standin
    fi
    ;;
  auto) if istio_installed; then ISTIO=real; else ISTIO=standin; fi ;;
esac
if [[ "$ISTIO_MODE" =~ ^(real|standin)$ && -z "$ISTIO" ]]; then
  fail "Istio: $ISTIO_WHY"
fi
CREATED_NAMESPACES=("$NS_MAIN" "$NS_OPTOUT")
fx_namespace "$NS_MAIN" | kubectl create -f - >/dev/null
fx_namespace "$NS_OPTOUT" tracepatch.io/enabled=false | kubectl create -f - >/dev/null
if [[ -n "$ISTIO" ]]; then
  CREATED_NAMESPACES+=("$NS_ISTIO" "$NS_ISTIO_ALONE" "$NS_TRACER_ENV")
  fx_namespace "$NS_ISTIO" istio-injection=enabled | kubectl create -f - >/dev/null
  fx_namespace "$NS_ISTIO_ALONE" istio-injection=enabled tracepatch.io/enabled=false | kubectl create -f - >/dev/null
  fx_namespace "$NS_TRACER_ENV" istio-injection=enabled tracepatch.io/enabled=false e2e.tracepatch.io/config=tracer-env |
    kubectl create -f - >/dev/null
fi
for ns in "${CREATED_NAMESPACES[@]}"; do ensure_default_sa "$ns"; done
info "test namespaces: ${CREATED_NAMESPACES[*]}"

if [[ "$ISTIO" == standin ]]; then
  ISTIO_TLS_CERT="${E2E_ISTIO_TLS_CERT:-}"
  ISTIO_TLS_KEY="${E2E_ISTIO_TLS_KEY:-}"
  ISTIO_CA_FILE="${E2E_ISTIO_CA_FILE:-}"
  if [[ -z "$ISTIO_TLS_CERT" ]]; then
    if command -v openssl >/dev/null 2>&1; then
      make_standin_cert
    else
      fail "Istio stand-in: no E2E_ISTIO_TLS_CERT and no openssl to make one"
      ISTIO=""
      ISTIO_WHY="the stand-in has no certificate"
    fi
  elif [[ ! -r "$ISTIO_TLS_CERT" || ! -r "$ISTIO_TLS_KEY" || ! -r "$ISTIO_CA_FILE" ]]; then
    fail "Istio stand-in: E2E_ISTIO_TLS_CERT, E2E_ISTIO_TLS_KEY and E2E_ISTIO_CA_FILE must all be readable files"
    ISTIO=""
    ISTIO_WHY="the stand-in has no certificate"
  fi
fi
if [[ "$ISTIO" == standin ]] && ! start_standin; then
  ISTIO=""
  ISTIO_WHY="the stand-in did not start"
fi
if [[ -n "$ISTIO" ]]; then info "Istio: $ISTIO (E2E_ISTIO=$ISTIO_MODE)"; else info "Istio: none: $ISTIO_WHY"; fi

# The order rule 2 depends on, checked against the configurations this cluster really has.
istio_configs=()
while read -r other; do
  other="${other#*/}"
  case "$other" in istio*) istio_configs+=("$other") ;; esac
done < <(kubectl get mutatingwebhookconfigurations -o name)
if ((${#istio_configs[@]} == 0)); then
  skip "webhook order: no istio* webhook configuration on this cluster to sort before"
else
  for other in "${istio_configs[@]}"; do
    for mine in "$ACTIVE_WEBHOOK_CONFIG" ${CREATED_TRACER_ENV_CONFIG:+"$CREATED_TRACER_ENV_CONFIG"}; do
      if [[ "$mine" < "$other" ]]; then
        pass "webhook order: $mine sorts before $other"
      else
        fail "webhook order: $mine does not sort before $other"
      fi
    done
  done
fi

wait_for_mutation || true

# ---------------------------------------------------------------------------------------
# (a) Rule 1: tracer environment from the annotation, on an existing istio-proxy and in
#     proxyMetadata for Istio to inject (a JSON array cannot pass Istio's template, so it
#     goes to istio-proxy only)
# ---------------------------------------------------------------------------------------
if create "(a) pod env-sidecar" "$(fx_annotated_pod env-sidecar "$NS_MAIN" "$ENV_ANNOTATION" yes)"; then
  pod="$(fetch_pod "$NS_MAIN" env-sidecar)"
  check_pod "(a) pod: DD_ENV on istio-proxy" env "$pod" istio-proxy DD_ENV "\"$WANT_DD_ENV\""
  check_pod "(a) pod: DD_TRACE_SAMPLING_RULES on istio-proxy (compact JSON)" \
    env "$pod" istio-proxy DD_TRACE_SAMPLING_RULES "$WANT_SAMPLING_JSON"
  expect_eq "(a) pod: no variable on the app container" \
    "$(get "$NS_MAIN" pod env-sidecar '{.metadata.name}:{.spec.containers[?(@.name=="app")].env}')" "env-sidecar:"
  check_pod "(a) pod: proxyMetadata.DD_ENV in proxy.istio.io/config" meta "$pod" DD_ENV "\"$WANT_DD_ENV\""
  check_pod "(a) pod: no proxyMetadata.DD_TRACE_SAMPLING_RULES (its quotes would break Istio's template)" \
    meta "$pod" DD_TRACE_SAMPLING_RULES absent
fi

# ---------------------------------------------------------------------------------------
# (b) Rule 2: no sidecar for the agent's own pods
# ---------------------------------------------------------------------------------------
if create "(b) agent pod" "$(fx_agent_pod agent "$NS_MAIN")"; then
  expect_eq "(b) agent pod: label sidecar.istio.io/inject" \
    "$(get "$NS_MAIN" pod agent '{.metadata.labels.sidecar\.istio\.io/inject}')" "false"
  expect_eq "(b) agent pod: annotation sidecar.istio.io/inject" \
    "$(get "$NS_MAIN" pod agent '{.metadata.annotations.sidecar\.istio\.io/inject}')" "false"
  expect_eq "(b) agent pod: label istio.io/dataplane-mode" \
    "$(get "$NS_MAIN" pod agent '{.metadata.labels.istio\.io/dataplane-mode}')" "none"
fi

# ---------------------------------------------------------------------------------------
# (c) Rule 3: the trace port declared TCP, on CREATE and on UPDATE
# ---------------------------------------------------------------------------------------
if create "(c) service agent-traces" "$(fx_service agent-traces "$NS_MAIN" traceport 8126)"; then
  expect_eq "(c) service CREATE: appProtocol of port traceport/8126" \
    "$(get "$NS_MAIN" service agent-traces '{.spec.ports[?(@.name=="traceport")].appProtocol}')" "tcp"
fi
if create "(c) service plain-svc" "$(fx_service plain-svc "$NS_MAIN" http 80)"; then
  expect_eq "(c) service CREATE: a port that is not the trace port is left alone" \
    "$(get "$NS_MAIN" service plain-svc '{.metadata.name}:{.spec.ports[?(@.name=="http")].appProtocol}')" "plain-svc:"
  if kubectl -n "$NS_MAIN" patch service plain-svc --type=json \
    -p '[{"op":"add","path":"/spec/ports/-","value":{"name":"apm","port":8126,"targetPort":8126,"protocol":"TCP"}}]' \
    >/dev/null 2>"$TMP/patch.err"; then
    expect_eq "(c) service UPDATE: appProtocol of an added port 8126" \
      "$(get "$NS_MAIN" service plain-svc '{.spec.ports[?(@.port==8126)].appProtocol}')" "tcp"
  else
    fail "(c) service UPDATE: kubectl patch refused: $(tr '\n' ' ' <"$TMP/patch.err")"
  fi
fi

# ---------------------------------------------------------------------------------------
# (d) Rule 4: an app label on CronJob templates, on CREATE and on UPDATE; the value is the
#     CronJob's app label, else the pod template's app.kubernetes.io/name, else its name
# ---------------------------------------------------------------------------------------
if create "(d) cronjob nightly-report" "$(fx_cronjob nightly-report "$NS_MAIN")"; then
  expect_eq "(d) cronjob without app label: pod template app label = its name" \
    "$(get "$NS_MAIN" cronjob nightly-report '{.spec.jobTemplate.spec.template.metadata.labels.app}')" "nightly-report"
  expect_eq "(d) cronjob without app label: job template app label = its name" \
    "$(get "$NS_MAIN" cronjob nightly-report '{.spec.jobTemplate.metadata.labels.app}')" "nightly-report"
fi
if create "(d) cronjob billing-sync" "$(fx_cronjob billing-sync "$NS_MAIN" billing)"; then
  expect_eq "(d) cronjob labelled app=billing: pod template app label" \
    "$(get "$NS_MAIN" cronjob billing-sync '{.spec.jobTemplate.spec.template.metadata.labels.app}')" "billing"
fi
if create "(d) cronjob reports-job" "$(fx_cronjob reports-job "$NS_MAIN" "" app.kubernetes.io/name=reports-ui)"; then
  expect_eq "(d) cronjob whose pod template has app.kubernetes.io/name=reports-ui: pod template app label" \
    "$(get "$NS_MAIN" cronjob reports-job '{.spec.jobTemplate.spec.template.metadata.labels.app}')" "reports-ui"
  expect_eq "(d) cronjob whose pod template has app.kubernetes.io/name=reports-ui: job template app label" \
    "$(get "$NS_MAIN" cronjob reports-job '{.spec.jobTemplate.metadata.labels.app}')" "reports-ui"
fi
# The template's own app label (weekly-digest) differs from the CronJob's name
# (relabelled), so each check below can tell which one it sees.
if create "(d) cronjob relabelled" "$(fx_cronjob relabelled "$NS_MAIN" "" app=weekly-digest)"; then
  expect_eq "(d) cronjob with a template app label: kept on CREATE" \
    "$(get "$NS_MAIN" cronjob relabelled '{.spec.jobTemplate.spec.template.metadata.labels.app}')" "weekly-digest"
  if kubectl -n "$NS_MAIN" patch cronjob relabelled --type=json \
    -p '[{"op":"remove","path":"/spec/jobTemplate/spec/template/metadata/labels/app"}]' \
    >/dev/null 2>"$TMP/patch.err"; then
    expect_eq "(d) cronjob UPDATE removing the template's app label: set again, to the CronJob's name" \
      "$(get "$NS_MAIN" cronjob relabelled '{.spec.jobTemplate.spec.template.metadata.labels.app}')" "relabelled"
  else
    fail "(d) cronjob UPDATE: kubectl patch refused: $(tr '\n' ' ' <"$TMP/patch.err")"
  fi
fi

# ---------------------------------------------------------------------------------------
# (e) Opt-out: a namespace or an object labelled tracepatch.io/enabled=false is untouched,
#     and so are kube-system and tracepatch's own namespace. Every check reads the
#     object's name too, so that a missing object cannot pass for an untouched one.
# ---------------------------------------------------------------------------------------
if create "(e) pod env-optout" "$(fx_annotated_pod env-optout "$NS_OPTOUT" "$ENV_ANNOTATION" yes)"; then
  expect_eq "(e) opted-out namespace: no variable on istio-proxy" \
    "$(get "$NS_OPTOUT" pod env-optout "{.metadata.name}:$(proxy_env_path DD_ENV)")" "env-optout:"
  expect_eq "(e) opted-out namespace: no proxy.istio.io/config" \
    "$(get "$NS_OPTOUT" pod env-optout '{.metadata.name}:{.metadata.annotations.proxy\.istio\.io/config}')" "env-optout:"
fi
if create "(e) agent pod agent-optout" "$(fx_agent_pod agent-optout "$NS_OPTOUT")"; then
  expect_eq "(e) opted-out namespace: agent pod without sidecar.istio.io/inject label" \
    "$(get "$NS_OPTOUT" pod agent-optout '{.metadata.name}:{.metadata.labels.sidecar\.istio\.io/inject}')" "agent-optout:"
fi
if create "(e) pod env-optout-object" \
  "$(fx_annotated_pod env-optout-object "$NS_MAIN" "$ENV_ANNOTATION" yes tracepatch.io/enabled=false)"; then
  expect_eq "(e) opted-out object: no variable on istio-proxy" \
    "$(get "$NS_MAIN" pod env-optout-object "{.metadata.name}:$(proxy_env_path DD_ENV)")" "env-optout-object:"
fi
# tracepatch's own namespace exists where it is installed; for a webhook outside the
# cluster the suite makes it when missing, and keeps it (an empty namespace: on a bare
# apiserver a deleted namespace never finishes terminating, and a later run could not use it).
if [[ -n "$WEBHOOK_URL" ]] && ! kubectl get namespace "$INSTALL_NS" >/dev/null 2>&1; then
  if fx_namespace "$INSTALL_NS" | kubectl create -f - >/dev/null 2>"$TMP/ns.err"; then
    info "created namespace $INSTALL_NS for the excluded-namespace check (kept)"
  else
    fail "(e) excluded namespace $INSTALL_NS: could not create it: $(tr '\n' ' ' <"$TMP/ns.err")"
  fi
fi
for ns in kube-system "$INSTALL_NS"; do
  # A full cluster has the default ServiceAccount there; a bare apiserver admits pods
  # without one (its ServiceAccount admission plugin is off).
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
if create "(f) malformed annotation: pod admitted" "$(fx_annotated_pod env-malformed "$NS_MAIN" "$MALFORMED_ANNOTATION" yes)"; then
  pass "(f) malformed annotation: pod admitted"
  if warned_about 'apm.datadoghq.com/env'; then
    pass "(f) malformed annotation: kubectl printed a warning naming apm.datadoghq.com/env"
  else
    fail "(f) malformed annotation: no warning naming apm.datadoghq.com/env on stderr (got: $(tr '\n' ' ' <"$TMP/last-create.err"))"
  fi
  expect_eq "(f) malformed annotation: pod unchanged (no variable on istio-proxy)" \
    "$(get "$NS_MAIN" pod env-malformed "{.metadata.name}:$(proxy_env_path DD_ENV)")" "env-malformed:"
  expect_eq "(f) malformed annotation: pod unchanged (no proxy.istio.io/config)" \
    "$(get "$NS_MAIN" pod env-malformed '{.metadata.name}:{.metadata.annotations.proxy\.istio\.io/config}')" "env-malformed:"
fi

# ---------------------------------------------------------------------------------------
# (g) A server-side dry run is mutated the same way, and nothing is stored
# ---------------------------------------------------------------------------------------
got="$(fx_annotated_pod env-dryrun "$NS_MAIN" "$ENV_ANNOTATION" yes |
  kubectl create --dry-run=server -o "jsonpath=$(proxy_env_path DD_ENV)" -f - 2>/dev/null || true)"
expect_eq "(g) dry run: DD_ENV on istio-proxy in the returned pod" "$got" "$WANT_DD_ENV"
expect_eq "(g) dry run: nothing persisted" \
  "$(kubectl -n "$NS_MAIN" get pod env-dryrun --ignore-not-found -o name 2>&1)" ""

# ---------------------------------------------------------------------------------------
# With Istio's injector (real or the stand-in): the order, the reinvocation path, and
# every kind of value through Istio's template, with classic and native sidecars
# ---------------------------------------------------------------------------------------
if [[ -n "$ISTIO" ]] && wait_for_injection "Istio's injector ($ISTIO) answers"; then
  for layout in classic native; do
    native=false
    if [[ "$layout" == native ]]; then native=true; fi
    tag="istio $layout"
    if create "$tag: control pod" "$(fx_istio_pod "control-$layout" "$NS_ISTIO" "$native")"; then
      check_pod "$tag: control pod gets istio-proxy ($layout), listed in sidecar.istio.io/status" \
        sidecar "$(fetch_pod "$NS_ISTIO" "control-$layout")" "$layout"
    fi
    if create "$tag: agent pod" "$(fx_agent_pod "agent-$layout" "$NS_ISTIO" "$native")"; then
      check_pod "$tag: agent pod gets no istio-proxy (tracepatch's label came first)" \
        sidecar "$(fetch_pod "$NS_ISTIO" "agent-$layout")" none
    fi
    for i in "${!CASE_NAMES[@]}"; do
      name="case-${CASE_NAMES[$i]}-$layout"
      var="${CASE_VAR[$i]}"
      desc="$tag: ${CASE_NAMES[$i]} (${var}=${CASE_JSON[$i]}, ${CASE_SAFETY[$i]})"
      if ! create "$desc: pod admitted" \
        "$(fx_istio_pod "$name" "$NS_ISTIO" "$native" apm.datadoghq.com/env "{\"${var}\":${CASE_JSON[$i]}}")"; then
        continue
      fi
      pass "$desc: pod admitted"
      if [[ "${CASE_SAFETY[$i]}" == unsafe ]]; then
        if warned_about "$var"; then
          pass "$desc: kubectl printed a warning naming $var"
        else
          fail "$desc: no warning naming $var (stderr: $(tr '\n' ' ' <"$TMP/last-create.err"))"
        fi
      fi
      pod="$(fetch_pod "$NS_ISTIO" "$name")"
      check_pod "$desc: injected" sidecar "$pod" "$layout"
      check_pod "$desc: istio-proxy has $var exactly, once" env "$pod" istio-proxy "$var" "${CASE_WANT[$i]}"
      if [[ "${CASE_SAFETY[$i]}" == safe ]]; then
        check_pod "$desc: in proxyMetadata, exactly" meta "$pod" "$var" "${CASE_WANT[$i]}"
      else
        check_pod "$desc: not in proxyMetadata" meta "$pod" "$var" absent
      fi
    done
  done
  if create "istio classic: re-created injected pod" "$(fx_reinjected_pod reinjected "$NS_ISTIO")"; then
    pod="$(fetch_pod "$NS_ISTIO" reinjected)"
    check_pod "istio classic: re-created injected pod is injected once" sidecar "$pod" classic
    check_pod "istio classic: re-created injected pod: DD_ENV from the annotation replaces the stale one" \
      env "$pod" istio-proxy DD_ENV "\"$WANT_DD_ENV\""
    check_pod "istio classic: re-created injected pod: DD_TRACE_SAMPLING_RULES on istio-proxy" \
      env "$pod" istio-proxy DD_TRACE_SAMPLING_RULES "$WANT_SAMPLING_JSON"
  fi
elif [[ -n "$ISTIO" ]]; then
  ISTIO_WHY="Istio's injector did not answer"
  ISTIO=""
fi
if [[ -z "$ISTIO" ]]; then
  why="no Istio injector: ${ISTIO_WHY:-unknown}"
  skip "istio: control pods get an injected istio-proxy (classic and native): $why"
  skip "istio: agent pods get no istio-proxy: $why"
  skip "istio: every kind of value reaches the injected istio-proxy exactly (reinvocation path): $why"
  skip "istio: a re-created injected pod is injected once: $why"
fi

# ---------------------------------------------------------------------------------------
# Istio with global.proxy.tracer=datadog: its template also renders apm.datadoghq.com/env
# with the same line (istio/istio#56279). A quote there makes Istio refuse the pod, with
# or without tracepatch; the remedy is tracepatch reading another annotation
# (config/datadog-istio-tracer.yaml).
# ---------------------------------------------------------------------------------------
QUOTE_ANNOTATION='{"DD_TAGS":"say \"hi\""}'
# refused_by_istio DESCRIPTION: the last create failed, refused by Istio's injector.
refused_by_istio() {
  if grep -q 'sidecar-injector.istio.io" denied the request' "$TMP/last-create.err"; then
    pass "$1"
  else
    fail "$1: $(tr '\n' ' ' <"$TMP/last-create.err")"
  fi
}
if [[ "$ISTIO" == standin ]]; then
  stop_standin
  if start_standin --tracer datadog && wait_for_injection "Istio stand-in with tracer=datadog answers"; then
    tag="istio tracer=datadog"
    if kubectl create -f - >/dev/null 2>"$TMP/last-create.err" \
      <<<"$(fx_istio_pod quote-alone "$NS_ISTIO_ALONE" false apm.datadoghq.com/env "$QUOTE_ANNOTATION")"; then
      fail "$tag, no tracepatch: a quote in apm.datadoghq.com/env: the pod was admitted, want refused by Istio"
    else
      refused_by_istio "$tag, no tracepatch: a quote in apm.datadoghq.com/env makes Istio refuse the pod"
    fi
    if kubectl create -f - >/dev/null 2>"$TMP/last-create.err" \
      <<<"$(fx_istio_pod quote-default "$NS_ISTIO" false apm.datadoghq.com/env "$QUOTE_ANNOTATION")"; then
      fail "$tag, tracepatch's default configuration: a quote in apm.datadoghq.com/env: the pod was admitted, want refused by Istio (its template reads that annotation itself)"
    else
      refused_by_istio "$tag, tracepatch's default configuration: a quote in apm.datadoghq.com/env still makes Istio refuse the pod"
    fi
    if create "$tag, tracepatch's default configuration: DD_ENV=prod admitted" \
      "$(fx_istio_pod safe-default "$NS_ISTIO" false apm.datadoghq.com/env '{"DD_ENV":"prod"}')"; then
      check_pod "$tag, tracepatch's default configuration: istio-proxy has DD_ENV=prod twice (Istio's datadog branch and proxyMetadata)" \
        env-all "$(fetch_pod "$NS_ISTIO" safe-default)" istio-proxy DD_ENV '"prod"' 2
    fi
    if [[ -n "$CREATED_TRACER_ENV_CONFIG" ]] && wait_for_tracer_env_webhook; then
      for layout in classic native; do
        native=false
        if [[ "$layout" == native ]]; then native=true; fi
        desc="$tag, tracepatch reading $TRACER_ENV_KEY ($layout)"
        if create "$desc: pod admitted" \
          "$(fx_istio_pod "recommended-$layout" "$NS_TRACER_ENV" "$native" "$TRACER_ENV_KEY" "$TRACER_ENV_ANNOTATION")"; then
          pass "$desc: pod admitted"
          pod="$(fetch_pod "$NS_TRACER_ENV" "recommended-$layout")"
          check_pod "$desc: injected" sidecar "$pod" "$layout"
          check_pod "$desc: DD_ENV exactly, once" env "$pod" istio-proxy DD_ENV '"prod"'
          check_pod "$desc: DD_TAGS (a quote) exactly, once" env "$pod" istio-proxy DD_TAGS '"say \"hi\""'
          check_pod "$desc: DD_TRACE_SAMPLING_RULES exactly, once" \
            env "$pod" istio-proxy DD_TRACE_SAMPLING_RULES "$WANT_SAMPLING_JSON"
          check_pod "$desc: DD_NOTE (a line break) exactly, once" env "$pod" istio-proxy DD_NOTE '"line1\nline2"'
          check_pod "$desc: DD_ENV in proxyMetadata" meta "$pod" DD_ENV '"prod"'
        fi
      done
    elif [[ -z "$CREATED_TRACER_ENV_CONFIG" ]]; then
      skip "istio tracer=datadog, tracepatch reading $TRACER_ENV_KEY: no second tracepatch (set E2E_TRACER_ENV_WEBHOOK_URL to one started with --config config/datadog-istio-tracer.yaml; tests/e2e/local.sh does)"
    fi
  fi
elif [[ "$ISTIO" == real ]]; then
  skip "istio tracer=datadog: the suite cannot switch a real Istio's global.proxy.tracer (E2E_ISTIO=standin tests it)"
else
  skip "istio tracer=datadog: no Istio injector: ${ISTIO_WHY:-unknown}"
fi

# ---------------------------------------------------------------------------------------
# matchConditions: objects no rule could change are never sent. Counted in the webhook's
# own log (one JSON line per admission, with the namespace), so that objects other users
# of the same apiserver create at the same time do not count.
# ---------------------------------------------------------------------------------------
if [[ -n "${E2E_WEBHOOK_LOG:-}" ]] && kubectl get mutatingwebhookconfiguration "$E2E_WEBHOOK_CONFIG_NAME" \
  -o jsonpath='{.webhooks[0].matchConditions[0].name}' 2>/dev/null | grep -q .; then
  NS_QUIET="tp-e2e-${RUN_ID}-quiet"
  CREATED_NAMESPACES+=("$NS_QUIET")
  fx_namespace "$NS_QUIET" | kubectl create -f - >/dev/null
  ensure_default_sa "$NS_QUIET"
  # admissions_in NS: how many admissions the webhook logged for that namespace.
  admissions_in() { grep -c "\"namespace\":\"$1\"" "$E2E_WEBHOOK_LOG" || true; }
  "$PY" - "$NS_QUIET" >"$TMP/quiet.json" <<'PY'
import json, sys
ns = sys.argv[1]
items = []
for i in range(100):
    items.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"quiet-{i}", "namespace": ns,
        "labels": {"app": f"web-{i % 7}"}, "annotations": {"prometheus.io/scrape": "true"}},
        "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10",
                                 "ports": [{"name": "http", "containerPort": 8080}]}]}})
for i in range(60):
    items.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"quiet-{i}", "namespace": ns},
        "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}})
for i in range(40):
    items.append({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": f"quiet-{i}", "namespace": ns},
        "spec": {"schedule": "0 3 * * *", "suspend": True, "jobTemplate": {
            "metadata": {"labels": {"app": f"job-{i}"}},
            "spec": {"template": {"metadata": {"labels": {"app": f"job-{i}"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "job", "image": "registry.k8s.io/pause:3.10"}]}}}}}})
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
PY
  before="$(admissions_in "$NS_QUIET")"
  if kubectl create -f "$TMP/quiet.json" >/dev/null 2>"$TMP/quiet.err"; then
    sleep 1 # the log is written by a background thread
    expect_eq "matchConditions: 100 pods, 60 Services, 40 CronJobs no rule changes: webhook requests" \
      "$(($(admissions_in "$NS_QUIET") - before))" 0
  else
    fail "matchConditions: the irrelevant objects were not created: $(tr '\n' ' ' <"$TMP/quiet.err")"
  fi
  # The control: in the same namespace, an object a rule changes is still sent and changed.
  create "matchConditions: a Service with the trace port is created" "$(fx_service quiet-traces "$NS_QUIET" traceport 8126)"
  sleep 1
  expect_eq "matchConditions: ... and sent to the webhook once" "$(($(admissions_in "$NS_QUIET") - before))" 1
  expect_eq "matchConditions: ... and changed (appProtocol tcp)" \
    "$(get "$NS_QUIET" service quiet-traces '{.spec.ports[0].appProtocol}')" tcp
elif [[ -z "${E2E_WEBHOOK_LOG:-}" ]]; then
  skip "matchConditions: objects no rule changes are not sent: needs the webhook's log (E2E_WEBHOOK_LOG; tests/e2e/local.sh sets it)"
else
  skip "matchConditions: the webhook configuration $E2E_WEBHOOK_CONFIG_NAME has none (a tracepatch binary without webhook-config?)"
fi

if (($(count FAIL) > 0)) && [[ -s "$STANDIN_LOG" ]]; then
  info "last lines of the Istio stand-in's log:"
  tail -n 15 "$STANDIN_LOG"
fi
echo
echo "e2e: $(count PASS) passed, $(count FAIL) failed, $(count SKIP) skipped"
(($(count FAIL) == 0))
