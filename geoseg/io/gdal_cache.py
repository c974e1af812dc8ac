"""Sizing GDAL's block cache for one pass of windowed reads."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np


def bounded_gdal_cache(datasets: Sequence[Any], window: int) -> contextlib.AbstractContextManager[Any]:
    """A rasterio.Env sizing GDAL's block cache for one pass of ``window``-sized reads, unless GDAL_CACHEMAX is set.

    GDAL's default cache (5% of RAM) fills with blocks a one-pass windowed read never revisits, so peak RSS would grow
    with the raster. The cache only needs the blocks shared by consecutive windows: one row of blocks across the
    width (tiled files), or a whole window row when blocks are wider than a window (striped files).
    """
    import rasterio.env

    if "GDAL_CACHEMAX" in os.environ or (rasterio.env.hasenv() and "GDAL_CACHEMAX" in rasterio.env.getenv()):
        return contextlib.nullcontext()
    need = 0
    for ds in datasets:
        if ds is None:
            continue
        bh, bw = ds.block_shapes[0]
        if bw > window:  # striped: the strips of a whole window row are revisited by every window of the row
            rows = window + bh
        elif window % bw or window % bh:  # blocks straddling window borders are read twice
            rows = bh
        else:  # block-aligned windows never revisit a block
            rows = 0
        need += 2 * rows * ds.width * np.dtype(ds.dtypes[0]).itemsize  # data + mask
    return rasterio.Env(GDAL_CACHEMAX=max(8, int(need * 1.25 / 2**20) + 1))
