#!/usr/bin/env bash
# Checks of the install artifacts (manifests/, the Helm chart, the e2e suite's generated
# objects, the Dockerfile): lint and render with the real Helm engine, schema rejection of
# bad values, validation against Kubernetes' schemas, and agreement between the chart and
# the plain manifests. One PASS/FAIL/SKIP line per check, a closing
# "chart: N passed, N failed, N skipped" line, and a non-zero exit on any failure.
#
# Installs its pinned tools (tests/chart/requirements.txt) into $REPO/.venv, creating it
# if missing (tests/chart/venv.sh); pip runs only when an installed version differs from
# its pin.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV_PYTHON="$("$REPO/tests/chart/venv.sh")"

exec "$VENV_PYTHON" "$REPO/tests/chart/check_chart.py" "$REPO"
