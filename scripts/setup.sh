#!/usr/bin/env bash
# Create ./.venv with geoseg and everything it needs (CPU torch). `--dev` adds test tools, a small torch-free
# environment ./.venv-notorch (geoseg info/evaluate/vectorize must work without torch: tests/test_torch_free.py) and,
# as root on Debian, QGIS 3.40 LTR for the plugin tests. Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
PY=${PYTHON:-python3}
# repair VENV: reinstall, at the version installed, every package of VENV whose recorded files are missing. An install
# cut short (a full disk, an interrupt) leaves such packages behind, and pip calls them satisfied on every rerun.
repair() {
  local broken
  broken=$("$1/bin/python" - <<'EOF'
import importlib.metadata as md
import sys

seen = set()
for dist in md.distributions():
    name = dist.metadata["Name"] or ""
    if name.lower() in seen or not str(dist.locate_file("")).startswith(sys.prefix):
        continue  # listed twice, or a system package seen through the venv
    seen.add(name.lower())
    if any(f.suffix != ".pyc" and not f.locate().exists() for f in dist.files or []):
        print(f"{name}=={dist.version}")
EOF
)
  if [[ -n $broken ]]; then
    echo "setup: reinstalling incomplete packages in $1:" $broken
    # shellcheck disable=SC2086  # one argument per package
    "$1/bin/python" -m pip install -q --force-reinstall --no-deps $broken
  fi
}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
repair .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch pinned to 2.13.0: the CPU wheel available offline here; an unpinned torch makes pip resolve a multi-GB CUDA
# build. On a GPU machine install the CUDA torch you want first; this line is then a no-op if it satisfies >=2.1.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
if [[ $DEV == 1 ]]; then
  .venv/bin/python -m pip install -q -e ".[all,dev]"
  [[ -x .venv-notorch/bin/python ]] || "$PY" -m venv .venv-notorch
  repair .venv-notorch
  .venv-notorch/bin/python -m pip install -q --upgrade pip
  .venv-notorch/bin/python -m pip install -q -e ".[vector,report]"
  # Second environment for the ecosystem tests (equality with torchvision's and timm's models, smp-* models):
  # torchvision has no build for torch 2.13.0, so .venv-eco gets torch 2.14.1 + torchvision 0.29.1, pinned on the
  # same command line as geoseg's extras so the resolver keeps them (the pair pip finds on local disk; an unpinned
  # torch makes it fetch a multi-GB CUDA build from the registry). ~6 GB; GEOSEG_SKIP_ECOSYSTEM=1 skips it.
  if [[ "${GEOSEG_SKIP_ECOSYSTEM:-}" != "1" ]]; then
    [[ -x .venv-eco/bin/python ]] || "$PY" -m venv .venv-eco
    repair .venv-eco
    .venv-eco/bin/python -m pip install -q --upgrade pip
    .venv-eco/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" -e ".[smp,onnx,dev]"
  fi
  if [[ -x plugins/qgis/ci_setup.sh ]] || [[ -f plugins/qgis/ci_setup.sh ]]; then
    if [[ $(id -u) == 0 ]]; then
      bash plugins/qgis/ci_setup.sh
    else
      echo "setup: not root, skipping the QGIS install (plugin tests need QGIS 3.40; see plugins/qgis/ci_setup.sh)"
    fi
  fi
else
  .venv/bin/python -m pip install -q -e ".[all]"
fi
echo "setup: ready ($(.venv/bin/python -c 'import torch, geoseg; print("geoseg", geoseg.__version__, "torch", torch.__version__)'))"
