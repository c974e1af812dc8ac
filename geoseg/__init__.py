"""geoseg: semantic segmentation of large multiband and hyperspectral rasters.

Importing ``geoseg`` does not import torch: torch-backed functions are loaded on first use, so evaluation and
vectorization work in environments without it.
"""

from __future__ import annotations

from typing import Any

from geoseg._lazy import lazy_attribute, lazy_dir
from geoseg.errors import GeoSegError
from geoseg.io import Normalization, RasterSource, compute_normalization, open_dataarray, open_raster
from geoseg.metrics import ConfusionMatrix, SegmentationReport
from geoseg.tiling import Tile, TileGrid

__version__ = "0.1.0"

# name -> module holding it; imported lazily (these modules import torch or optional dependencies)
_LAZY = {
    "predict_raster": "geoseg.inference.predict",
    "STITCH_METHODS": "geoseg.inference.stitch",
    "ModelConfig": "geoseg.models.config",
    "create_model": "geoseg.models",
    "list_models": "geoseg.models",
    "register_model": "geoseg.models",
    "load_checkpoint": "geoseg.models",
    "save_checkpoint": "geoseg.models",
    "read_config": "geoseg.models",
    "train_model": "geoseg.train",
    "run_batch": "geoseg.distributed",
    "vectorize": "geoseg.vectorization",
    "VectorizeResult": "geoseg.vectorization",
    "evaluate": "geoseg.evaluation",
    "write_report": "geoseg.report",
    "BatchResult": "geoseg.distributed",
}

__all__ = [
    "ConfusionMatrix",
    "GeoSegError",
    "Normalization",
    "RasterSource",
    "SegmentationReport",
    "Tile",
    "TileGrid",
    "__version__",
    "compute_normalization",
    "open_dataarray",
    "open_raster",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    return lazy_attribute(globals(), _LAZY, name)


def __dir__() -> list[str]:
    return lazy_dir(globals(), _LAZY)
