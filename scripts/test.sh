#!/usr/bin/env bash
# Lint, format and type checks, then the whole test suite (library, CLI, Dask, real-data tests when ../shared/data exists), then the QGIS
# plugin tests in a real headless QGIS. Any failure, or a pytest run that collects no test (exit 5), fails.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check geoseg tests plugins benchmarks scripts sample_data
.venv/bin/ruff format --check geoseg tests plugins benchmarks scripts sample_data
.venv/bin/mypy   # geoseg/, configured in pyproject.toml
.venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
# Ecosystem tests (tests/ecosystem + the smp-* contract tests) run in .venv-eco (torch 2.14.1 + torchvision, timm,
# smp), on full runs. GEOSEG_REQUIRE_ECOSYSTEM=1 turns a missing library there into an error, not a skip.
if [[ $# -eq 0 ]]; then
  if [[ -x .venv-eco/bin/python ]]; then
    echo "== ecosystem tests (.venv-eco: torchvision, timm, smp)"
    GEOSEG_REQUIRE_ECOSYSTEM=1 .venv-eco/bin/python -m pytest -q -p no:cacheprovider -m ecosystem tests/ecosystem \
      tests/models
  elif [[ "${CI:-}" == "true" ]]; then
    echo "test: .venv-eco is missing, but CI must run the ecosystem tests (run scripts/setup.sh --dev)" >&2
    exit 1
  else
    echo "test: no .venv-eco here; skipping the ecosystem tests (scripts/setup.sh --dev creates it; CI runs them)"
  fi
fi
if [[ -f plugins/qgis/run_tests.sh ]]; then
  if command -v qgis_process >/dev/null 2>&1; then
    bash plugins/qgis/run_tests.sh
  elif [[ "${CI:-}" == "true" ]]; then
    echo "test: QGIS is not installed, but CI must run the plugin tests (run scripts/setup.sh --dev as root)" >&2
    exit 1
  else
    echo "test: QGIS not installed here; skipping the plugin tests (CI runs them)"
  fi
fi
