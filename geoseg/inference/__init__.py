"""Tiled, streamed prediction and stitching.

Importing this package does not import torch: :func:`predict_raster` (which does) is loaded on first use, so the
torch-free parts (the stitching strategies and their names) serve the CLI and the QGIS plugin without it.
"""

from __future__ import annotations

from typing import Any

from geoseg._lazy import lazy_attribute, lazy_dir
from geoseg.inference.stitch import STITCH_METHODS, make_stitcher

_LAZY = {"PredictResult": "geoseg.inference.predict", "predict_raster": "geoseg.inference.predict"}

__all__ = ["STITCH_METHODS", "PredictResult", "make_stitcher", "predict_raster"]


def __getattr__(name: str) -> Any:
    return lazy_attribute(globals(), _LAZY, name)


def __dir__() -> list[str]:
    return lazy_dir(globals(), _LAZY)
