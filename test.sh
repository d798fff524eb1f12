#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this):
#   1. formatting and lints (cargo fmt --check, cargo clippy -D warnings);
#   2. the Rust tests: unit, golden fixtures, property tests, the TLS server, the
#      hostile-input suite, certificates (cargo nextest if installed, else cargo test);
#   3. the install artifacts: Helm chart lint/render with the real Helm engine, schema
#      validation of every manifest, chart/manifests agreement (tests/chart/check.sh,
#      which installs its pinned Python tools into .venv on first use);
#   4. alerts, dashboard and runbooks: promtool check/test rules, every PromQL
#      expression and metric name against captured /metrics (tests/monitoring/check.sh);
#   5. the Istio stand-in's own unit tests (tests/e2e/test_istio_standin.py);
#   6. the end-to-end suite: tests/e2e/local.sh when the local apiserver of
#      ../shared/k8s-local is up, else run.sh where KUBECONFIG reaches a cluster with
#      tracepatch installed, else one line saying why it was skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

step() { printf '\n==== %s\n' "$*"; }

step "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

step "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
  # nextest does not run doctests.
  cargo test --locked --doc
else
  cargo test --locked --no-fail-fast
fi

step "install artifacts (Helm chart, manifests, schemas)"
cargo build --locked --quiet --bin tracepatch
TRACEPATCH_BIN="$PWD/target/debug/tracepatch" tests/chart/check.sh

step "alerts, dashboard and runbooks (promtool, tests/monitoring/check.sh)"
tests/monitoring/check.sh

step "Istio stand-in unit tests"
tests/e2e/python.sh tests/e2e/test_istio_standin.py

step "end-to-end"
# The local apiserver of ../shared/k8s-local when it is up (test.sh never starts it),
# else a cluster KUBECONFIG reaches where tracepatch is installed, else one line saying
# why it was skipped (CI has neither).
if tests/e2e/local.sh --check >/dev/null 2>&1; then
  tests/e2e/local.sh
  # tracepatch audit against the same apiserver (it skips, saying why, without one).
  tests/audit/run.sh
  # Rules 2-4 as MutatingAdmissionPolicies, equal to the webhook on the same apiserver.
  tests/policies/run.sh
elif tests/e2e/run.sh --check-installed >/dev/null 2>&1; then
  tests/e2e/run.sh
else
  tests/e2e/skip-notice.sh
fi
