#!/usr/bin/env bash
# The end-to-end suite against the local apiserver of ../shared/k8s-local (etcd and
# kube-apiserver on 127.0.0.1:6443, started by ../shared/k8s-local/start.sh; this script
# never starts it): starts tracepatch from the build twice (the default configuration,
# and config/datadog-istio-tracer.yaml for the tracer=datadog checks), both on
# loopback with the local PKI's webhook certificate, runs tests/e2e/run.sh against them
# with the Istio stand-in (E2E_ISTIO=auto: no Istio is installed there), and stops both.
#
# Usage:
#   tests/e2e/local.sh           run it; exits with run.sh's status
#   tests/e2e/local.sh --check   exit 0 if the local apiserver is up, else print one line
#                                saying why and exit 3
#
# Environment:
#   K8S_LOCAL            where the local control plane lives (see ../shared/k8s-local/env.sh)
#   E2E_SHARED           the shared/ checkout (default: ../shared beside this repository)
#   E2E_TRACEPATCH_BIN   the tracepatch binary (default: cargo build, target/debug/tracepatch)
#   E2E_LOG_DIR          keep tracepatch's logs here (default: a temporary directory, removed)
#   plus everything run.sh reads (E2E_ISTIO, E2E_TIMEOUT, E2E_KEEP, ...).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SHARED="${E2E_SHARED:-$REPO/../shared}"

# check_local: prints why the local apiserver is not usable and returns 3, or returns 0.
check_local() {
  if [[ ! -r "$SHARED/k8s-local/env.sh" ]]; then
    echo "no local apiserver: $SHARED/k8s-local/env.sh is missing"
    return 3
  fi
  if ! command -v kubectl >/dev/null 2>&1; then
    echo "no local apiserver: kubectl is not installed"
    return 3
  fi
  if [[ ! -r "$KUBECONFIG" ]]; then
    echo "no local apiserver: $KUBECONFIG is missing (../shared/k8s-local/start.sh makes it)"
    return 3
  fi
  local out
  if ! out="$(kubectl get --raw /readyz --request-timeout=5s 2>&1)"; then
    echo "the local apiserver is not running ($KUBECONFIG: $(echo "$out" | tail -n 1)); start it with ../shared/k8s-local/start.sh"
    return 3
  fi
  return 0
}

if [[ -r "$SHARED/k8s-local/env.sh" ]]; then
  # shellcheck source=/dev/null
  source "$SHARED/k8s-local/env.sh" # sets K and KUBECONFIG
fi
K="${K:-}"
KUBECONFIG="${KUBECONFIG:-}"
export KUBECONFIG

case "${1:-}" in
  --check)
    rc=0
    reason="$(check_local)" || rc=$?
    if ((rc != 0)); then echo "$reason"; fi
    exit "$rc"
    ;;
  "") ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
    exit 2
    ;;
esac

if ! reason="$(check_local)"; then
  echo "FAIL $reason"
  exit 1
fi
PKI="$K/pki"
for f in ca.crt webhook.crt webhook.key; do
  if [[ ! -r "$PKI/$f" ]]; then
    echo "FAIL $PKI/$f is missing (../shared/k8s-local/pki.sh makes it)"
    exit 1
  fi
done

BIN="${E2E_TRACEPATCH_BIN:-}"
if [[ -z "$BIN" ]]; then
  echo "---- cargo build --bin tracepatch"
  (cd "$REPO" && cargo build --locked --quiet --bin tracepatch)
  BIN="$REPO/target/debug/tracepatch"
fi

LOG_DIR="${E2E_LOG_DIR:-}"
TMP="$(mktemp -d)"
if [[ -z "$LOG_DIR" ]]; then LOG_DIR="$TMP"; else mkdir -p "$LOG_DIR"; fi
PIDS=()
cleanup() {
  local rc=$? pid
  set +e
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if ((${#PIDS[@]})); then echo "---- stopped tracepatch (pids ${PIDS[*]})"; fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port: a TCP port nothing listens on now on 127.0.0.1.
free_port() {
  "$HERE/python.sh" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_tracepatch NAME [SERVE ARGS...]: start it on free ports, wait until /readyz says
# ready; prints its admission URL.
start_tracepatch() {
  local name="$1" port health deadline
  shift
  port="$(free_port)"
  health="$(free_port)"
  "$BIN" serve --addr "127.0.0.1:$port" --health-addr "127.0.0.1:$health" \
    --tls-cert "$PKI/webhook.crt" --tls-key "$PKI/webhook.key" "$@" >"$LOG_DIR/$name.log" 2>&1 &
  PIDS+=("$!")
  deadline=$((SECONDS + 30))
  until "$HERE/python.sh" - "http://127.0.0.1:$health/readyz" <<'PY' 2>/dev/null; do
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
PY
    if ! kill -0 "${PIDS[-1]}" 2>/dev/null || ((SECONDS >= deadline)); then
      echo "FAIL tracepatch ($name) did not become ready: $(tail -n 5 "$LOG_DIR/$name.log" | tr '\n' ' ')" >&2
      return 1
    fi
    sleep 0.3
  done
  echo "---- tracepatch ($name, pid ${PIDS[-1]}) at https://127.0.0.1:$port, log $LOG_DIR/$name.log" >&2
  URL="https://127.0.0.1:$port"
}

start_tracepatch default --log-format json
DEFAULT_URL="$URL"
start_tracepatch tracer-env --config "$HERE/../../config/datadog-istio-tracer.yaml"
TRACER_ENV_URL="$URL"

# run.sh's exit status is this script's (the EXIT trap stops tracepatch either way).
E2E_TRACEPATCH_BIN="$BIN" E2E_WEBHOOK_URL="$DEFAULT_URL" E2E_CA_FILE="$PKI/ca.crt" \
  E2E_WEBHOOK_LOG="$LOG_DIR/default.log" \
  E2E_TRACER_ENV_WEBHOOK_URL="$TRACER_ENV_URL" \
  E2E_ISTIO_TLS_CERT="$PKI/webhook.crt" E2E_ISTIO_TLS_KEY="$PKI/webhook.key" E2E_ISTIO_CA_FILE="$PKI/ca.crt" \
  "$HERE/run.sh"
