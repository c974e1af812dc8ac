#!/usr/bin/env bash
# Build an installable QGIS plugin zip: dist/geoseg_qgis-<version>.zip (Plugins > Manage and Install > Install from ZIP).
# Usage: plugins/qgis/package.sh [OUT_DIR]   (default: <repo>/dist)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$repo/dist}"
version="$(sed -n 's/^version=//p' "$here/geoseg_qgis/metadata.txt" | tr -d '[:space:]')"
[ -n "$version" ] || { echo "no version= in metadata.txt" >&2; exit 1; }
mkdir -p "$out"
zip="$out/geoseg_qgis-$version.zip"
python3 - "$here" "$zip" <<'PY'
import sys, zipfile
from pathlib import Path

root, dest = Path(sys.argv[1]), Path(sys.argv[2])
skip_dirs = {"__pycache__", ".pytest_cache", ".ruff_cache"}
with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
    for p in sorted((root / "geoseg_qgis").rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not skip_dirs & set(rel.parts) and p.suffix not in {".pyc", ".qml"}:
            zf.write(p, rel.as_posix())  # the zip holds one top folder: geoseg_qgis/
print(dest)
PY
