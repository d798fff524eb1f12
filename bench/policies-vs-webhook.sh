#!/usr/bin/env bash
# Rules 3 and 4 through MutatingAdmissionPolicies vs through tracepatch's webhook, on a real
# apiserver: the wall time of `kubectl create -f` of the same multi-document files, 500
# Services (headless, each with the agent's trace port, so rule 3 adds appProtocol: tcp) and
# 500 CronJobs (no app label, so rule 4 labels the job and pod templates), into
#   none      a namespace where neither applies (the apiserver and kubectl alone),
#   policies  a namespace where only `tracepatch policies` applies,
#   webhook   a namespace where only the webhook applies (`tracepatch serve` on loopback,
#             registered with manifests/mutatingwebhookconfiguration.yaml: the shipped
#             selectors, timeout and matchConditions, with a URL).
# Every round creates each batch once per setup (the order of the setups rotates), checks
# that every object came out mutated (or not, for "none"), and deletes them again.
# Prints one Markdown table: per kind and setup, the median over the rounds of the batch's
# seconds, per object, and the difference to "none"; and, from the apiserver's own
# histogram apiserver_admission_controller_admission_duration_seconds, the time per object
# spent in its MutatingAdmissionPolicy and MutatingAdmissionWebhook plugins (the webhook's
# round trip, or the CEL), which the wall time's noise (etcd, kubectl) hides.
#
#   bench/policies-vs-webhook.sh             # 3 rounds of 500 + 500
#   OBJECTS=unrelated bench/policies-vs-webhook.sh
#                                            # Services without the trace port and CronJobs
#                                            # whose pod template has its app label: what
#                                            # most of a cluster's objects are; nothing may
#                                            # change, and the cost is the filtering
#   ROUNDS=3 COUNT=200 bench/policies-vs-webhook.sh
#   TRACEPATCH_BIN=target/release/tracepatch bench/policies-vs-webhook.sh
#                                            # default: the fast-release build (optimized,
#                                            # no LTO), built if missing
#
# The apiserver of ../shared/k8s-local (env.sh; KUBECONFIG and the PKI's webhook.crt for
# 127.0.0.1), shared with whatever else runs there: a busy apiserver makes every setup
# slower; the load average is printed. Everything created carries the run id and is
# deleted at the end. Exits 3 without an apiserver.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${POLICIES_SHARED:-$REPO/../shared}"
ROUNDS="${ROUNDS:-3}"
COUNT="${COUNT:-500}"
OBJECTS="${OBJECTS:-relevant}"
[[ $OBJECTS == relevant || $OBJECTS == unrelated ]] || { echo "OBJECTS: relevant or unrelated" >&2; exit 2; }
# shellcheck source=/dev/null
[[ -r "$SHARED/k8s-local/env.sh" ]] && source "$SHARED/k8s-local/env.sh"
K="${K:-}"
if ! kubectl get --raw /readyz --request-timeout=5s >/dev/null 2>&1 || [[ ! -r "$K/pki/webhook.crt" ]]; then
  echo "no apiserver reachable (../shared/k8s-local/start.sh starts the local one)" >&2
  exit 3
fi
if [[ -z "${TRACEPATCH_BIN:-}" ]]; then
  (cd "$REPO" && cargo build --locked --quiet --profile fast-release --bin tracepatch)
  TRACEPATCH_BIN="$REPO/target/fast-release/tracepatch"
fi

# Python with PyYAML (the e2e suite's pinned one).
PY="$REPO/tests/e2e/python.sh"
RUN="$(printf '%04x%04x' "$RANDOM" "$RANDOM")"
TMP="$(mktemp -d)"
cp "$TRACEPATCH_BIN" "$TMP/tracepatch"
BIN="$TMP/tracepatch"
NS_PREFIX="tp-bench-$RUN"
WEBHOOK_NAME="00-tracepatch-bench-$RUN"
SERVER_PID=""

# The rules as shipped, with an opt-out label of the benchmark's own, so that its
# namespaces can carry tracepatch.io/enabled: "false" and no other tracepatch installation
# on the same apiserver acts in them.
cat >"$TMP/config.yaml" <<'EOF'
optOut:
  label: bench.tracepatch.io/skip
EOF

cleanup() {
  set +e
  for s in none policies webhook; do
    kubectl delete -n "$NS_PREFIX-$s" services,cronjobs.batch --all --wait=false >/dev/null 2>&1
    kubectl delete namespace "$NS_PREFIX-$s" --wait=false >/dev/null 2>&1
    kubectl get namespace "$NS_PREFIX-$s" -o json 2>/dev/null |
      jq '.spec.finalizers = []' |
      kubectl replace --raw "/api/v1/namespaces/$NS_PREFIX-$s/finalize" -f - >/dev/null 2>&1
  done
  kubectl delete mutatingwebhookconfiguration "$WEBHOOK_NAME" --ignore-not-found >/dev/null 2>&1
  for r in trace-port cronjob-app agent-sidecar; do
    kubectl delete mutatingadmissionpolicybinding "bench-$RUN-$r" --ignore-not-found >/dev/null 2>&1
    kubectl delete mutatingadmissionpolicy "bench-$RUN-$r" --ignore-not-found >/dev/null 2>&1
  done
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# --- the objects ----------------------------------------------------------------------
service() { # service NAME: the agent's Service (relevant, and the probe) or a web Service
  if [[ $OBJECTS == relevant || $1 == probe ]]; then
    printf -- '---\napiVersion: v1\nkind: Service\nmetadata:\n  name: %s\nspec:\n  clusterIP: None\n  selector: {app: datadog-agent}\n  ports:\n    - {name: dogstatsdport, port: 8125, protocol: UDP}\n    - {name: traceport, port: 8126, protocol: TCP}\n' "$1"
  else
    printf -- '---\napiVersion: v1\nkind: Service\nmetadata:\n  name: %s\nspec:\n  clusterIP: None\n  selector: {app: web}\n  ports:\n    - {name: metrics, port: 9090, protocol: UDP}\n    - {name: http, port: 8080, protocol: TCP}\n' "$1"
  fi
}
# Relevant: no app label anywhere; unrelated: the pod template has one.
TEMPLATE_LABELS=""
[[ $OBJECTS == unrelated ]] && TEMPLATE_LABELS="metadata: {labels: {app: shop-job}}"
for ((i = 0; i < COUNT; i++)); do service "svc-$i"; done >"$TMP/services.yaml"
for ((i = 0; i < COUNT; i++)); do
  cat <<EOF
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: cj-$i
spec:
  schedule: "@daily"
  jobTemplate:
    spec:
      template:
        $TEMPLATE_LABELS
        spec:
          restartPolicy: Never
          containers: [{name: job, image: shop/job:1}]
EOF
done >"$TMP/cronjobs.yaml"

# --- the three setups -----------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"
HEALTH="$(free_port)"
"$BIN" serve --addr "127.0.0.1:$PORT" --health-addr "127.0.0.1:$HEALTH" --config "$TMP/config.yaml" \
  --tls-cert "$K/pki/webhook.crt" --tls-key "$K/pki/webhook.key" --log-format json >"$TMP/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$HEALTH/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

# The shipped MutatingWebhookConfiguration (with its matchConditions), for this server,
# the benchmark's opt-out label, and only the benchmark's "webhook" namespace.
"$PY" -c '
import sys, json, yaml, base64
run, url, ca, manifest = sys.argv[1:5]
doc = yaml.safe_load(open(manifest))
doc["metadata"]["name"] = sys.argv[5]
for h in doc["webhooks"]:
    h["clientConfig"] = {"url": url + "/mutate", "caBundle": base64.b64encode(open(ca, "rb").read()).decode()}
    for sel in (h["namespaceSelector"], h["objectSelector"]):
        for r in sel.get("matchExpressions", []):
            if r["key"] == "tracepatch.io/enabled":
                r["key"] = "bench.tracepatch.io/skip"
    h["namespaceSelector"].setdefault("matchLabels", {})["bench.tracepatch.io/webhook"] = run
print(json.dumps(doc))' "$RUN" "https://127.0.0.1:$PORT" "$K/pki/ca.crt" "$REPO/manifests/mutatingwebhookconfiguration.yaml" \
  "$WEBHOOK_NAME" | kubectl apply -f - >/dev/null

"$BIN" policies --config "$TMP/config.yaml" 2>/dev/null | "$PY" -c '
import sys, json, yaml
run = sys.argv[1]
items = []
for d in yaml.safe_load_all(sys.stdin):
    if not d:
        continue
    rule = d["metadata"]["name"].removeprefix("tracepatch-")
    d["metadata"]["name"] = f"bench-{run}-{rule}"
    if d["kind"] == "MutatingAdmissionPolicyBinding":
        d["spec"]["policyName"] = f"bench-{run}-{rule}"
        d["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {"bench.tracepatch.io/policies": run}}}
    items.append(d)
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))' "$RUN" | kubectl apply -f - >/dev/null

for s in none policies webhook; do
  labels="tracepatch.io/enabled=false"
  [[ $s == policies ]] && labels="$labels bench.tracepatch.io/policies=$RUN"
  [[ $s == webhook ]] && labels="$labels bench.tracepatch.io/webhook=$RUN"
  kubectl create namespace "$NS_PREFIX-$s" >/dev/null
  # shellcheck disable=SC2086
  kubectl label namespace "$NS_PREFIX-$s" $labels >/dev/null
done

# Wait until the policies and the webhook act (policies load asynchronously).
one_svc="$(service probe)"
for s in policies webhook; do
  for _ in $(seq 1 60); do
    got="$(echo "$one_svc" | kubectl create --dry-run=server -n "$NS_PREFIX-$s" -f - -o jsonpath='{.spec.ports[1].appProtocol}' 2>/dev/null || true)"
    [[ "$got" == tcp ]] && break
    sleep 1
  done
  [[ "$got" == tcp ]] || { echo "the $s setup does not mutate" >&2; exit 1; }
done

# --- rounds ---------------------------------------------------------------------------
declare -A T # T[kind/setup] = space-separated seconds
declare -A A # A[kind/setup] = space-separated ms per object in the two mutating admission plugins
# The apiserver's own time in its MutatingAdmissionPolicy and MutatingAdmissionWebhook
# plugins for CREATE (sum of seconds, all requests: others' requests during a batch add a
# little).
plugin_seconds() {
  kubectl get --raw /metrics | awk '
    /^apiserver_admission_controller_admission_duration_seconds_sum\{name="MutatingAdmission(Policy|Webhook)",operation="CREATE",rejected="false",type="admit"\}/ { s += $2 }
    END { printf "%.6f\n", s }'
}
check() {     # check NS KIND SETUP: every object mutated (or, for none or unrelated, none)
  local ns="$1" kind="$2" setup="$3" n
  if [[ $kind == services ]]; then
    n="$(kubectl get -n "$ns" services -o json | jq '[.items[] | select(.spec.ports[1].appProtocol != null)] | length')"
  else
    n="$(kubectl get -n "$ns" cronjobs.batch -o json | jq '[.items[] | select(.spec.jobTemplate.metadata.labels.app != null)] | length')"
  fi
  local want="$COUNT"
  [[ $setup == none || $OBJECTS == unrelated ]] && want=0
  if [[ "$n" != "$want" ]]; then
    echo "round check failed: $kind in $setup: $n of $COUNT mutated, expected $want" >&2
    exit 1
  fi
}
setups=(none policies webhook)
for ((r = 0; r < ROUNDS; r++)); do
  for ((k = 0; k < 3; k++)); do
    s="${setups[$(((r + k) % 3))]}"
    for kind in services cronjobs; do
      # A shared apiserver can time out a request (etcd under someone else's load): such
      # a batch is deleted and created again, its time not counted.
      for attempt in 1 2 3; do
        before="$(plugin_seconds)"
        start=$(date +%s.%N)
        if kubectl create -n "$NS_PREFIX-$s" -f "$TMP/$kind.yaml" >/dev/null 2>"$TMP/create.err"; then
          break
        fi
        echo "round $((r + 1)) $kind $s: attempt $attempt failed ($(tail -n 1 "$TMP/create.err")); again" >&2
        kubectl delete -n "$NS_PREFIX-$s" "${kind/cronjobs/cronjobs.batch}" --all --wait=true >/dev/null
        ((attempt < 3)) || exit 1
      done
      end=$(date +%s.%N)
      after="$(plugin_seconds)"
      secs="$(echo "$end - $start" | bc)"
      adm="$(echo "($after - $before) * 1000 / $COUNT" | bc -l)"
      T[$kind/$s]="${T[$kind/$s]:-} $secs"
      A[$kind/$s]="${A[$kind/$s]:-} $adm"
      printf 'round %d %s %s: %s s, %.3f ms/object in the mutating admission plugins\n' "$((r + 1))" "$kind" "$s" "$secs" "$adm" >&2
      check "$NS_PREFIX-$s" "$kind" "$s"
      kubectl delete -n "$NS_PREFIX-$s" "${kind/cronjobs/cronjobs.batch}" --all --wait=true >/dev/null
    done
  done
  echo "round $((r + 1))/$ROUNDS done (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, apiserver $(kubectl get --raw /version | jq -r .gitVersion), $OBJECTS objects, $ROUNDS rounds of $COUNT per kind, median batch time:"
echo
echo "| objects | setup | seconds per batch | ms per object | vs none | ms per object in the mutating admission plugins (apiserver metrics) |"
echo "|---|---|---:|---:|---:|---:|"
for kind in services cronjobs; do
  base="$(echo "${T[$kind/none]}" | median)"
  for s in none policies webhook; do
    m="$(echo "${T[$kind/$s]}" | median)"
    a="$(echo "${A[$kind/$s]}" | median)"
    printf '| %s %s | %s | %.2f | %.2f | %+.2f ms/object | %.3f |\n' "$COUNT" "$kind" "$s" "$m" \
      "$(echo "$m * 1000 / $COUNT" | bc -l)" "$(echo "($m - $base) * 1000 / $COUNT" | bc -l)" "$a"
  done
done
echo
echo "raw, per batch (seconds; ms per object in the plugins):"
for kind in services cronjobs; do
  for s in none policies webhook; do echo "  $kind $s:${T[$kind/$s]};${A[$kind/$s]}"; done
done
