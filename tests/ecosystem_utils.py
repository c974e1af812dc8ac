"""The ecosystem tests need torchvision, timm and segmentation-models-pytorch, which live in a second environment
(``.venv-eco``: torch 2.14.1 + torchvision 0.29.1, made by ``scripts/setup.sh --dev``).

In the main environment they skip; with ``GEOSEG_REQUIRE_ECOSYSTEM=1`` (how ``scripts/test.sh`` runs them there) a
missing library is an error, so a CI run in which they did not run fails instead of passing with skips.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

REQUIRE_ENV = "GEOSEG_REQUIRE_ECOSYSTEM"


def ecosystem_import(name: str) -> ModuleType:
    """Import ``name`` or skip the module (fail when ``GEOSEG_REQUIRE_ECOSYSTEM=1``)."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # torchvision built for another torch raises RuntimeError/AttributeError, not ImportError
        message = f"{name} is not importable ({type(exc).__name__}: {str(exc)[:120]})"
        if os.environ.get(REQUIRE_ENV) == "1":
            raise RuntimeError(f"{message}, but {REQUIRE_ENV}=1: the ecosystem environment is broken") from exc
        pytest.skip(f"{message}; ecosystem tests run in .venv-eco (scripts/setup.sh --dev)", allow_module_level=True)
