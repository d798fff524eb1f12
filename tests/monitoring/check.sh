#!/usr/bin/env bash
# Checks of tracepatch's alerts, Grafana dashboard and runbooks (check_monitoring.py says
# what each check is): promtool check rules and promtool test rules, mutations of the
# rules that the unit tests must catch, every metric and label checked against /metrics
# captured from kube-apiserver v1.36.2 and tracepatch, the dashboard's expressions through
# promtool, the runbook sections, and the chart's rendered monitoring objects (real Helm
# engine) against manifests/monitoring/.
#
# Needs promtool (Debian/Ubuntu: apt-get install prometheus) and the pinned Python tools
# of tests/chart/requirements.txt, which tests/chart/venv.sh installs into $REPO/.venv.
# One PASS/FAIL/SKIP line per check, a closing "monitoring: N passed, N failed, N skipped"
# line, and a non-zero exit on any failure.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV_PYTHON="$("$REPO/tests/chart/venv.sh")"

exec "$VENV_PYTHON" "$REPO/tests/monitoring/check_monitoring.py" "$REPO"
