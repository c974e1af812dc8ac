#!/usr/bin/env bash
# Run the QGIS plugin tests in a real QGIS (headless, plus the desktop under Xvfb for the dialogs), once per way the
# plugin finds geoseg (run plugins/qgis/ci_setup.sh first); geoseg always runs in a process of its own:
#   1. host: the QGIS-side venv's python (geoseg importable next to the qgis bindings, no environment configured):
#      the plugin runs geoseg with QGIS's own Python and sys.path
#   2. configured: plain /usr/bin/python3 (no geoseg) with GEOSEG_PYTHON = the project venv's python
# Extra arguments go to pytest (e.g. -k segment). Exit status: non-zero when either run fails.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${GEOSEG_QGIS_VENV:-/opt/geoseg-qgis-venv}"
project_python="${GEOSEG_PROJECT_PYTHON:-$repo/.venv/bin/python}"
export QT_QPA_PLATFORM=offscreen
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/runtime-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
unset PYTHONPATH PYTHONHOME GEOSEG_PYTHON
cd "$here"
status=0
t0=$(date +%s)

echo "== QGIS plugin tests, geoseg importable in QGIS's Python ($venv/bin/python)"
"$venv/bin/python" -m pytest -q tests "$@" || status=1
t1=$(date +%s)

echo "== QGIS plugin tests, configured geoseg environment (/usr/bin/python3 -> $project_python -m geoseg)"
if /usr/bin/python3 -c "import geoseg" >/dev/null 2>&1; then
  echo "run_tests.sh: geoseg is importable in /usr/bin/python3; the configured run would not test a configured environment" >&2
  status=1
fi
GEOSEG_PYTHON="$project_python" /usr/bin/python3 -m pytest -q tests "$@" || status=1
t2=$(date +%s)
echo "QGIS plugin tests: host $((t1 - t0)) s, configured $((t2 - t1)) s, status $status"
exit $status
