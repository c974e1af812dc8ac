#!/usr/bin/env bash
# Run the QGIS plugin tests in a real headless QGIS, once per backend (run plugins/qgis/ci_setup.sh first):
#   1. in-process: the QGIS-side venv's python (geoseg importable next to the qgis bindings)
#   2. subprocess: plain /usr/bin/python3 (no geoseg) driving the project venv's `python -m geoseg`
# Extra arguments go to pytest (e.g. -k segment). Exit status: non-zero when either run fails.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${GEOSEG_QGIS_VENV:-/opt/geoseg-qgis-venv}"
project_python="${GEOSEG_PROJECT_PYTHON:-$repo/.venv/bin/python}"
export QT_QPA_PLATFORM=offscreen
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/runtime-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
unset PYTHONPATH PYTHONHOME GEOSEG_PYTHON GEOSEG_QGIS_BACKEND
cd "$here"
status=0
t0=$(date +%s)

echo "== QGIS plugin tests, in-process backend ($venv/bin/python)"
GEOSEG_QGIS_BACKEND=inprocess "$venv/bin/python" -m pytest -q tests "$@" || status=1
t1=$(date +%s)

echo "== QGIS plugin tests, subprocess backend (/usr/bin/python3 -> $project_python -m geoseg)"
if /usr/bin/python3 -c "import geoseg" >/dev/null 2>&1; then
  echo "run_tests.sh: geoseg is importable in /usr/bin/python3; the subprocess run would not test the subprocess path" >&2
  status=1
fi
GEOSEG_QGIS_BACKEND=subprocess GEOSEG_PYTHON="$project_python" /usr/bin/python3 -m pytest -q tests "$@" || status=1
t2=$(date +%s)
echo "QGIS plugin tests: in-process $((t1 - t0)) s, subprocess $((t2 - t1)) s, status $status"
exit $status
