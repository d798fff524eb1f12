#!/usr/bin/env bash
# Runs python with the e2e suite's pinned packages (tests/e2e/requirements.txt), which it
# installs into tests/e2e/.venv first when that is missing or differs from the pins:
#   tests/e2e/python.sh tests/e2e/test_istio_standin.py
#   tests/e2e/python.sh tests/e2e/istio_standin.py serve ...
# E2E_PYTHON=/path/to/python skips the venv and runs that interpreter as it is.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -n "${E2E_PYTHON:-}" ]]; then
  exec "$E2E_PYTHON" "$@"
fi
VENV="$HERE/.venv"
REQUIREMENTS="$HERE/requirements.txt"

pins_installed() {
  "$VENV/bin/python" - "$REQUIREMENTS" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if line:
        name, want = line.split("==")
        try:
            if version(name) != want:
                sys.exit(1)
        except PackageNotFoundError:
            sys.exit(1)
PY
}

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "---- creating $VENV" >&2
  "${PYTHON:-python3}" -m venv "$VENV" >&2
fi
if ! pins_installed; then
  echo "---- installing tests/e2e/requirements.txt into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$REQUIREMENTS" >&2
  pins_installed || { echo "FAIL the pinned packages of $REQUIREMENTS did not install" >&2; exit 1; }
fi
exec "$VENV/bin/python" "$@"
