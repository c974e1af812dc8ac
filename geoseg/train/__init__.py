"""Training from rasters or polygons: labels, chip sampling, spatial split, augmentations, losses, loop.

Importing this package does not import torch: :func:`train_model` (which does) is loaded on first use, so the
torch-free parts (labels, chip sampling, option names) serve the CLI without it.
"""

from __future__ import annotations

from typing import Any

from geoseg._lazy import lazy_attribute, lazy_dir

_LAZY = {
    "TrainResult": "geoseg.train.loop",
    "train_model": "geoseg.train.loop",
    "load_train_config": "geoseg.train.config",
}

__all__ = ["TrainResult", "load_train_config", "train_model"]


def __getattr__(name: str) -> Any:
    return lazy_attribute(globals(), _LAZY, name)


def __dir__() -> list[str]:
    return lazy_dir(globals(), _LAZY)
