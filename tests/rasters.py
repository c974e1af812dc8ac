"""Helpers that write small, real GeoTIFFs for tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

UTM = CRS.from_epsg(32633)
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0)


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: Any = UTM,
    transform: Affine | None = TRANSFORM,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    **profile: Any,
) -> Path:
    """Write a (bands, rows, cols) or (rows, cols) array as a GeoTIFF."""
    if data.ndim == 2:
        data = data[None]
    prof: dict[str, Any] = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    if transform is None:
        prof.pop("transform")
    if crs is None:
        prof.pop("crs")
    prof.update(profile)
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                ds.set_band_description(i, d)
    return path


def class_scene(
    rows: int, cols: int, *, bands: int = 4, classes: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A blocky labelled scene: labels (rows, cols) uint8 and float32 bands whose spectra depend on the class."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, classes, size=(rows // 8 + 2, cols // 8 + 2))
    labels = np.kron(coarse, np.ones((8, 8), dtype=np.int64))[:rows, :cols].astype(np.uint8)
    spectra = rng.uniform(0, 1, size=(classes, bands)).astype(np.float32)
    data = spectra[labels].transpose(2, 0, 1) + rng.normal(0, 0.05, size=(bands, rows, cols)).astype(np.float32)
    return data.astype(np.float32), labels
