#!/usr/bin/env bash
# Install what the QGIS plugin tests need, idempotently (Debian bookworm, as root):
#   * QGIS 3.40 LTR from bookworm-backports (qgis, python3-qgis, qgis-providers) + python3-pytest
#   * xvfb: a virtual X display for the tests that open the algorithms' dialogs in the QGIS desktop application
#   * a QGIS-side venv ($GEOSEG_QGIS_VENV, default /opt/geoseg-qgis-venv) made with --system-site-packages (it sees
#     the qgis bindings) holding geoseg (editable, this repo) + CPU torch + numpy<2 (QGIS's bindings need numpy 1.x)
# Usage: plugins/qgis/ci_setup.sh   (about 5 min for apt + 2-3 min for the venv on a fresh machine; seconds after)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${GEOSEG_QGIS_VENV:-/opt/geoseg-qgis-venv}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
t0=$(date +%s)

. /etc/os-release
if [ "${VERSION_CODENAME:-}" != "bookworm" ]; then
  echo "ci_setup.sh: expects Debian bookworm (found ${PRETTY_NAME:-unknown}); QGIS 3.40 comes from bookworm-backports" >&2
  exit 1
fi

qgis_ok() {
  command -v qgis_process >/dev/null 2>&1 && /usr/bin/python3 -c \
    "import pytest, qgis.core as q, sys; sys.exit(0 if q.Qgis.QGIS_VERSION_INT >= 34000 else 1)" >/dev/null 2>&1
}
if ! qgis_ok; then
  list=/etc/apt/sources.list.d/backports.list
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee "$list" >/dev/null
  fi
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q -t bookworm-backports qgis python3-qgis qgis-providers
  $SUDO apt-get install -y -q python3-pytest
fi
if ! command -v Xvfb >/dev/null 2>&1; then
  $SUDO apt-get update -q && $SUDO apt-get install -y -q xvfb
fi
t1=$(date +%s)
echo "ci_setup.sh: QGIS $(/usr/bin/python3 -c 'import qgis.core as q; print(q.Qgis.QGIS_VERSION)' 2>/dev/null) ready ($((t1 - t0)) s)"

# QGIS-side venv. The stamp records what was installed; an unchanged repo path + pyproject skips pip entirely.
torch_version="$("$repo/.venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null \
  || echo 2.13.0)"
stamp_want="$(cat "$repo/pyproject.toml" "$here/ci_setup.sh" | sha256sum | cut -c1-16) $repo torch=$torch_version"
stamp="$venv/.geoseg-qgis-stamp"
if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$stamp_want" ] || \
   ! QT_QPA_PLATFORM=offscreen "$venv/bin/python" -c "import qgis.core, torch, geoseg, pytest" >/dev/null 2>&1; then
  # numpy<2: QGIS's bindings are built for numpy 1.x; pyarrow<20 and attrs>=24 are the newest/oldest that work with
  # it and with affine 3 next to Debian's older attrs that the venv also sees.
  "$venv/bin/python" -m pip install -q "torch==$torch_version" "numpy<2" "pyarrow<20" "attrs>=24" pytest \
    -e "$repo[vector,report]"
  echo "$stamp_want" > "$stamp"
fi
t2=$(date +%s)
echo "ci_setup.sh: QGIS-side venv $venv ready ($((t2 - t1)) s); total $((t2 - t0)) s"
