#!/usr/bin/env bash
# The whole end-to-end run on a throw-away kind cluster: create the cluster, build the
# image with docker and load it into kind, install Istio (minimal profile) if istioctl is
# on PATH, install tracepatch with the Helm chart, wait for it, run tests/e2e/run.sh, and
# delete the cluster (also on failure or Ctrl-C).
#
# Needs: docker, kind, kubectl, helm; istioctl optional (without it the Istio checks are
# skipped, unless E2E_ISTIO=standin with E2E_ISTIO_HOST set to an address of this machine
# the kind node reaches). Your own kubeconfig is not touched: the cluster's goes to a
# temporary file.
#
# Environment:
#   KIND_CLUSTER_NAME   cluster name (default tracepatch-e2e)
#   KIND_NODE_IMAGE     node image, i.e. the Kubernetes version (default: kind's own)
#   KIND_KEEP=1         keep the cluster afterwards (its kubeconfig path is printed)
#   HELM_EXTRA_ARGS     extra `helm install` arguments, e.g. "--set certificates.mode=cert-manager"
#   plus everything run.sh reads (E2E_TIMEOUT, E2E_KEEP, ...).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="${KIND_CLUSTER_NAME:-tracepatch-e2e}"
IMAGE_REPOSITORY="ghcr.io/tracepatch/tracepatch"
IMAGE_TAG="e2e"
NAMESPACE="tracepatch"

for tool in docker kind kubectl helm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "FAIL kind.sh needs $tool on PATH"
    exit 1
  fi
done

WORK="$(mktemp -d)"
export KUBECONFIG="$WORK/kubeconfig"
cleanup() {
  local rc=$?
  set +e
  if [[ "${KIND_KEEP:-}" == 1 ]]; then
    echo "---- kept kind cluster $CLUSTER: export KUBECONFIG=$KUBECONFIG"
  else
    echo "---- deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "---- creating kind cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 120s \
  ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}

echo "---- building $IMAGE_REPOSITORY:$IMAGE_TAG"
docker build -t "$IMAGE_REPOSITORY:$IMAGE_TAG" "$REPO"
kind load docker-image "$IMAGE_REPOSITORY:$IMAGE_TAG" --name "$CLUSTER"

if command -v istioctl >/dev/null 2>&1; then
  echo "---- installing Istio (minimal profile)"
  istioctl install -y --set profile=minimal
else
  # The Istio stand-in runs on this machine, where a kind node's apiserver does not reach
  # 127.0.0.1; E2E_ISTIO=standin E2E_ISTIO_HOST=<this machine as the node sees it> uses it.
  if [[ -z "${E2E_ISTIO:-}" ]]; then
    echo "---- istioctl is not on PATH: Istio is not installed and the Istio checks will be skipped"
    export E2E_ISTIO=none
  else
    echo "---- istioctl is not on PATH: Istio is not installed (E2E_ISTIO=$E2E_ISTIO)"
  fi
fi

echo "---- installing tracepatch with the Helm chart"
# shellcheck disable=SC2086 # HELM_EXTRA_ARGS is a list of words on purpose.
helm install tracepatch "$REPO/manifests/helm/tracepatch" \
  --namespace "$NAMESPACE" --create-namespace \
  --set image.tag="$IMAGE_TAG" --set image.pullPolicy=Never \
  --wait --timeout 5m ${HELM_EXTRA_ARGS:-}
kubectl -n "$NAMESPACE" rollout status deployment/tracepatch --timeout=120s

E2E_NAMESPACE="$NAMESPACE" "$REPO/tests/e2e/run.sh"
