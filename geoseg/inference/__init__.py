"""Tiled, streamed prediction and stitching.

Importing this package does not import torch: :func:`predict_raster` (which does) is loaded on first use, so the
torch-free parts (the stitching strategies and their names) serve the CLI and the QGIS plugin without it.
"""

from __future__ import annotations

import importlib
from typing import Any

from geoseg.inference.stitch import STITCH_METHODS, make_stitcher

_LAZY = {"PredictResult": "geoseg.inference.predict", "predict_raster": "geoseg.inference.predict"}

__all__ = ["STITCH_METHODS", "PredictResult", "make_stitcher", "predict_raster"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'geoseg.inference' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
