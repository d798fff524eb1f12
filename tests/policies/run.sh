#!/usr/bin/env bash
# Rules 2-4 as MutatingAdmissionPolicies (`tracepatch policies`) against the same rules in
# tracepatch's webhook, on a real apiserver: every golden fixture of rules 2-4 and a few
# hundred generated Pods, Services and CronJobs (with UPDATEs) are created where only the
# policies apply, where only the webhook applies, and where both do; the stored objects
# must be equal field for field, and with both installed the webhook must answer with an
# empty patch. Then the ordering case: with tracepatch's webhook unreachable, or with the
# Istio stand-in registered under a name that sorts first, an agent pod gets no sidecar
# where the policies apply (and gets one where they do not). The details are in
# tests/policies/equivalence.py.
#
# Workloads' pod templates (the DaemonSet and Deployment fixtures) are converted into the
# Pods their controllers would create (template metadata and spec), since a template is
# never admitted as a pod.
#
# Usage:
#   tests/policies/run.sh            exits 1 on any failure; closing line
#                                    "policies: N passed, N failed"
#   tests/policies/run.sh --check    exit 0 if an apiserver is reachable, else print why
#                                    and exit 3
#
# Environment:
#   K8S_LOCAL           the local control plane (../shared/k8s-local/env.sh; default
#                       k8s-local beside the checkouts): its kubeconfig, and its PKI's
#                       webhook.crt/webhook.key/ca.crt for the webhooks on 127.0.0.1
#   TRACEPATCH_BIN      the binary (default: cargo build, target/debug/tracepatch)
#   POLICIES_PROFILES   comma-separated profiles to run (default, name-mode,
#                       name-rename-pods, rename-pods, custom, ordering); default: all
#   POLICIES_KEEP=1     keep the namespaces, policies and webhook configurations
#   POLICIES_VERBOSE=1  a PASS line per check
#   POLICIES_RUN_ID     the run id in every name (default: random)
#   POLICIES_WEBHOOK_MATCH_CONDITIONS=1
#                       register the webhook with the shipped matchConditions (default:
#                       without, so that every object reaches the rules)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SHARED="${POLICIES_SHARED:-$REPO/../shared}"

if [[ -r "$SHARED/k8s-local/env.sh" ]]; then
  # shellcheck source=/dev/null
  source "$SHARED/k8s-local/env.sh" # sets K and KUBECONFIG
fi
export K="${K:-}" KUBECONFIG="${KUBECONFIG:-}"

why_not() {
  if ! command -v kubectl >/dev/null 2>&1; then
    echo "kubectl is not installed"
  elif [[ -z "$K" || ! -r "$K/pki/webhook.crt" || ! -r "$K/pki/ca.crt" ]]; then
    echo "no local control plane PKI (\$K/pki/webhook.crt, ca.crt; see ../shared/k8s-local)"
  elif ! out="$(kubectl get --raw /readyz --request-timeout=5s 2>&1)"; then
    echo "no apiserver reachable through ${KUBECONFIG:-the default kubeconfig}: $(echo "$out" | tail -n 1)"
  elif [[ "$(kubectl api-resources --api-group=admissionregistration.k8s.io -o name 2>/dev/null)" != *mutatingadmissionpolicies.* ]]; then
    echo "the apiserver serves no MutatingAdmissionPolicy API (Kubernetes 1.36, or 1.34+ with the feature enabled)"
  fi
}

reason="$(why_not)"
if [[ "${1:-}" == "--check" ]]; then
  if [[ -n "$reason" ]]; then echo "$reason"; exit 3; fi
  exit 0
fi
if [[ -n "$reason" ]]; then
  echo "SKIP policies equivalence: $reason"
  echo "policies: 0 passed, 0 failed (skipped)"
  exit 0
fi

if [[ -z "${TRACEPATCH_BIN:-}" ]]; then
  (cd "$REPO" && cargo build --locked --quiet --bin tracepatch)
  TRACEPATCH_BIN="$REPO/target/debug/tracepatch"
fi
# A copy: a build in the same tree during the run must not swap the binary under it.
BIN_COPY="$(mktemp -d)/tracepatch"
trap 'rm -rf "$(dirname "$BIN_COPY")"' EXIT
cp "$TRACEPATCH_BIN" "$BIN_COPY"
if ! "$BIN_COPY" policies >/dev/null; then
  echo "FAIL $TRACEPATCH_BIN has no working policies command"
  echo "policies: 0 passed, 1 failed"
  exit 1
fi
export TRACEPATCH_BIN="$BIN_COPY"
echo "---- apiserver $(kubectl get --raw /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p'), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
"$REPO/tests/e2e/python.sh" "$HERE/equivalence.py"
