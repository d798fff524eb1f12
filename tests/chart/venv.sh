#!/usr/bin/env bash
# Makes sure $REPO/.venv holds the pinned tools of tests/chart/requirements.txt (creating
# the venv if missing; pip runs only when an installed version differs from its pin), then
# prints the venv's python on stdout. Progress goes to stderr. Used by tests/chart/check.sh
# and tests/monitoring/check.sh.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$REPO/.venv"
REQUIREMENTS="$REPO/tests/chart/requirements.txt"
PYTHON="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "---- creating $VENV" >&2
  "$PYTHON" -m venv "$VENV" >&2
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
  echo "---- installing the pinned tools of tests/chart/requirements.txt into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$REQUIREMENTS" >&2
  pins_installed || { echo "FAIL the pinned tools did not install" >&2; exit 1; }
fi

echo "$VENV/bin/python"
