#!/usr/bin/env bash
# What the webhook's matchConditions save, measured on a real kube-apiserver (the local
# one of ../shared/k8s-local, or any cluster KUBECONFIG reaches whose apiserver can
# connect to this machine's loopback: in practice the local one).
#
#   bench/match-conditions.sh            # both parts; prints a Markdown table
#   PART=mix bench/match-conditions.sh   # only (a)
#   PART=hang bench/match-conditions.sh  # only (b)
#   PODS=100 bench/match-conditions.sh   # pods of (b) (default 100)
#
# (a) Requests the webhook receives for a realistic mix: 1,000 pods (5% with the
#     tracer annotation, 1% Datadog Agent pods), 200 Services (2% with the trace port),
#     50 CronJobs (half already labelled), created with and without matchConditions.
#     Counted by tracepatch's own tracepatch_admission_requests_total.
# (b) Time to create PODS unrelated pods while the webhook's address accepts
#     connections and never answers (a black-holed path): without conditions each pod
#     waits timeoutSeconds (3 s) before failurePolicy: Ignore admits it; with them the
#     apiserver never calls.
#
# The webhook configurations are `tracepatch webhook-config` output with one change: a
# namespaceSelector term for this run's namespaces, so that nothing else on a shared
# apiserver reaches them. Everything it creates is deleted at the end.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=/dev/null
source "$REPO/../shared/k8s-local/env.sh"
PART="${PART:-all}"
PODS="${PODS:-100}"
BIN="${TRACEPATCH_BIN:-$REPO/target/debug/tracepatch}"
PKI="$K/pki"
PORT="${PORT:-18543}"
HEALTH_PORT="${HEALTH_PORT:-18580}"
HANG_PORT="${HANG_PORT:-18544}"
RUN="mc$(printf '%04x' "$RANDOM")"
WORK="$(mktemp -d)"
PIDS=()

kubectl get --raw /readyz >/dev/null 2>&1 || { echo "no apiserver at KUBECONFIG=$KUBECONFIG" >&2; exit 2; }
[[ -x "$BIN" ]] || (cd "$REPO" && cargo build --quiet --bin tracepatch)

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  kubectl delete mutatingwebhookconfiguration "00-$RUN-a" "00-$RUN-b" --ignore-not-found >/dev/null 2>&1 || true
  for ns in "$RUN-with" "$RUN-without" "$RUN-hang-with" "$RUN-hang-without"; do
    kubectl -n "$ns" delete pods,services,cronjobs --all --wait=false >/dev/null 2>&1 || true
    kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# register NAME URL [--no-match-conditions]: the rendered configuration, limited to this
# run's namespaces.
register() {
  local name="$1" url="$2"
  shift 2
  "$BIN" webhook-config --name "$name" --url "$url" --ca-file "$PKI/ca.crt" "$@" |
    python3 -c '
import sys, yaml
doc = yaml.safe_load(sys.stdin)
for hook in doc["webhooks"]:
    hook["namespaceSelector"]["matchExpressions"].append(
        {"key": "tracepatch-bench", "operator": "In", "values": [sys.argv[1]]})
print(yaml.safe_dump(doc))
' "$RUN" | kubectl apply -f - >/dev/null
}

namespace() {
  kubectl create namespace "$1" >/dev/null
  kubectl label namespace "$1" "tracepatch-bench=$RUN" >/dev/null
}

# The mix of (a), as one multi-document file per kind.
write_mix() {
  python3 - "$WORK" <<'PY'
import json, sys
out = sys.argv[1]
def dump(name, docs):
    with open(f"{out}/{name}.json", "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": docs}, f)
pods = []
for i in range(1000):
    meta = {"name": f"p{i}", "labels": {"app": f"web{i % 37}"}}
    image = "registry.k8s.io/pause:3.10"
    if i % 20 == 0:
        meta["annotations"] = {"apm.datadoghq.com/env": '{"DD_ENV":"prod"}'}
    if i % 100 == 1:
        meta["labels"] = {"app": "datadog-agent"}
        image = "gcr.io/datadoghq/agent:7"
    pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                 "spec": {"containers": [{"name": "c", "image": image}]}})
svcs = []
for i in range(200):
    port = {"name": "traceport", "port": 8126} if i % 50 == 0 else {"name": "http", "port": 80}
    # Headless, like the Datadog Agent's own Service: a bare apiserver's service IP
    # range is small, and admission does not depend on it.
    svcs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}"},
                 "spec": {"clusterIP": "None", "selector": {"app": "x"}, "ports": [port]}})
cjs = []
for i in range(50):
    tmeta = {"labels": {"app": f"job{i}"}} if i % 2 == 0 else {}
    cjs.append({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": f"c{i}"},
                "spec": {"schedule": "0 3 * * *", "suspend": True, "jobTemplate": {"spec": {"template": {
                    "metadata": tmeta, "spec": {"restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}}}}})
dump("pods", pods); dump("services", svcs); dump("cronjobs", cjs)
PY
}

requests_total() {
  curl -s "http://127.0.0.1:$HEALTH_PORT/metrics" |
    awk '/^tracepatch_admission_requests_total/ {s += $NF} END {print s + 0}'
}

mix() {
  "$BIN" serve --addr "127.0.0.1:$PORT" --health-addr "127.0.0.1:$HEALTH_PORT" \
    --tls-cert "$PKI/webhook.crt" --tls-key "$PKI/webhook.key" >"$WORK/serve.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$HEALTH_PORT/readyz" >/dev/null && break; sleep 0.2; done
  write_mix
  local mode ns before after
  for mode in without with; do
    ns="$RUN-$mode"
    namespace "$ns"
    if [[ "$mode" == with ]]; then
      register "00-$RUN-a" "https://127.0.0.1:$PORT"
    else
      register "00-$RUN-a" "https://127.0.0.1:$PORT" --no-match-conditions
    fi
    sleep 2 # the apiserver's view of a new webhook configuration
    before=$(requests_total)
    for kind in pods services cronjobs; do
      kubectl -n "$ns" create -f "$WORK/$kind.json" >/dev/null
    done
    after=$(requests_total)
    echo "| (a) 1,000 pods, 200 Services, 50 CronJobs, $mode matchConditions | $((after - before)) webhook requests |"
  done
  local sent
  sent=$(kubectl -n "$RUN-with" get pods -o json | python3 -c '
import json, sys
pods = json.load(sys.stdin)["items"]
env = sum(1 for p in pods if "proxy.istio.io/config" in p["metadata"].get("annotations", {}))
agent = sum(1 for p in pods if p["metadata"].get("labels", {}).get("sidecar.istio.io/inject") == "false")
print(f"{env} annotated pods mutated, {agent} agent pods labelled")')
  echo "| (a) with matchConditions, what the rules still did | $sent |"
}

hang() {
  python3 - "$HANG_PORT" >"$WORK/hang.log" 2>&1 <<'PY' &
# Accepts TCP connections and never answers: a black-holed webhook.
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
held = []
while True:
    c, _ = s.accept(); held.append(c)
PY
  PIDS+=($!)
  sleep 0.5
  python3 - "$WORK" "$PODS" <<'PY'
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
items = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"u{i}", "labels": {"app": "web"}},
          "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}} for i in range(n)]
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, open(f"{out}/unrelated.json", "w"))
PY
  local mode ns start end
  for mode in with without; do
    ns="$RUN-hang-$mode"
    namespace "$ns"
    if [[ "$mode" == with ]]; then
      register "00-$RUN-b" "https://127.0.0.1:$HANG_PORT"
    else
      register "00-$RUN-b" "https://127.0.0.1:$HANG_PORT" --no-match-conditions
    fi
    sleep 2
    start=$(date +%s.%N)
    kubectl -n "$ns" create -f "$WORK/unrelated.json" >/dev/null
    end=$(date +%s.%N)
    echo "| (b) $PODS unrelated pods, webhook black-holed, $mode matchConditions | $(python3 -c "print(f'{$end - $start:.1f} s')") |"
  done
}

echo "| measurement | result |"
echo "|---|---|"
case "$PART" in
  mix) mix ;;
  hang) hang ;;
  all) mix; hang ;;
  *) echo "PART is mix, hang or all" >&2; exit 2 ;;
esac
