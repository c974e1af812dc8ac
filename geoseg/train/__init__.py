"""Training from rasters or polygons: labels, chip sampling, spatial split, augmentations, losses, loop.

Importing this package does not import torch: :func:`train_model` (which does) is loaded on first use, so the
torch-free parts (labels, chip sampling, option names) serve the CLI without it.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "TrainResult": "geoseg.train.loop",
    "train_model": "geoseg.train.loop",
    "load_train_config": "geoseg.train.config",
}

__all__ = ["TrainResult", "load_train_config", "train_model"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'geoseg.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
