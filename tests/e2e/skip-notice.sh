#!/usr/bin/env bash
# For test.sh, when the end-to-end suite cannot run here: prints one line, starting with
# "e2e skipped:", saying why (no local apiserver of ../shared/k8s-local is up, and
# KUBECONFIG reaches no cluster where tracepatch is installed: CI has neither) and how to
# run it. It never runs the suite and never fails: a machine without an apiserver is not
# an error.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

local_reason="$("$here/local.sh" --check 2>&1)"
local_rc=$?
cluster_reason="$("$here/run.sh" --check-installed 2>&1)"
cluster_rc=$?
cluster_reason="${cluster_reason#e2e skipped: }"

if ((local_rc == 0)); then
  local_reason="the local apiserver is up (run tests/e2e/local.sh)"
fi
if ((cluster_rc == 0)); then
  cluster_reason="KUBECONFIG reaches a cluster with tracepatch installed (run tests/e2e/run.sh)"
fi
if ((local_rc != 0 && cluster_rc != 0)); then
  line="e2e skipped: no Kubernetes apiserver to test against (CI has none): local: $local_reason; KUBECONFIG: $cluster_reason. To run it: ../shared/k8s-local/start.sh, then tests/e2e/local.sh"
else
  line="e2e skipped: not run by this command, though local: $local_reason; KUBECONFIG: $cluster_reason"
fi
# One line, whatever the reasons contained.
echo "$line" | tr '\n' ' ' | sed 's/ *$//'
echo
exit 0
