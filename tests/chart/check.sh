#!/usr/bin/env bash
# Checks of the install artifacts (manifests/, the Helm chart, the e2e suite's generated
# objects, the Dockerfile): lint and render with the real Helm engine, schema rejection of
# bad values, validation against Kubernetes' schemas, and agreement between the chart and
# the plain manifests. One PASS/FAIL/SKIP line per check, a closing
# "chart: N passed, N failed, N skipped" line, and a non-zero exit on any failure.
#
# Installs its pinned tools (tests/chart/requirements.txt) into $REPO/.venv, creating it
# if missing; pip runs only when an installed version differs from its pin.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$REPO/.venv"
REQUIREMENTS="$REPO/tests/chart/requirements.txt"
PYTHON="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "---- creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

# Exit 0 when every pin is installed at its version (a quick metadata read, no pip).
pins_installed() {
  "$VENV/bin/python" - "$REQUIREMENTS" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, want = line.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}

if ! pins_installed; then
  echo "---- installing the pinned tools of tests/chart/requirements.txt into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$REQUIREMENTS"
  pins_installed || { echo "FAIL the pinned tools did not install"; exit 1; }
fi

exec "$VENV/bin/python" "$REPO/tests/chart/check_chart.py" "$REPO"
