"""Sizing GDAL's block cache for one pass of windowed reads: the one rule for prediction, vectorization and
evaluation.

GDAL's default block cache (5% of RAM) fills with blocks a one-pass read never revisits, so peak memory would grow
with the raster. A pass over windows in row-major order only revisits the blocks that consecutive windows share, so
the cache needs room for those alone:

* blocks as wide as the raster (strips): the strips of one window row serve every window of that row, so a window
  row of strips plus one strip;
* tiled blocks, across the width: the blocks under the rows two consecutive window rows share (their overlap, or
  one block row when window rows do not start on block rows), when they are kept (``keep_rows``);
* tiled blocks, along a row: the blocks of two neighbouring windows, when windows overlap or straddle blocks;
* blocks the caller keeps decoded itself (:class:`geoseg.io.blocks.BlockCache`): only the few being decoded.

A decoded block holds every band of a pixel-interleaved file, plus a byte of mask per pixel. ``GDAL_CACHEMAX``, when
set in the environment or a surrounding ``rasterio.Env``, is left alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_CACHE_MB = 16  # MiB


@dataclass(frozen=True)
class WindowedReads:
    """One pass of row-major windowed reads over a raster, as far as GDAL's block cache is concerned.

    ``shape``, ``block`` and ``window`` are (rows, cols) in pixels; ``pixel_bytes`` is what a decoded block holds per
    pixel; ``overlap`` is the (rows, cols) consecutive windows share.
    """

    shape: tuple[int, int]
    block: tuple[int, int]
    pixel_bytes: int
    window: tuple[int, int]
    overlap: tuple[int, int] = (0, 0)
    keep_rows: bool = True
    blocks_held: bool = False

    @classmethod
    def of(
        cls,
        ds: Any,
        window: tuple[int, int],
        *,
        overlap: tuple[int, int] = (0, 0),
        keep_rows: bool = True,
        blocks_held: bool = False,
    ) -> WindowedReads:
        """The reads of ``window``-sized windows of ``ds``: a rasterio dataset or a :class:`geoseg.io.RasterSource`
        (whose blocks hold every band of the file, not only the selected ones)."""
        profile = getattr(ds, "profile", {}) or {}
        count = int(profile.get("count", ds.count))
        itemsize = max(np.dtype(d).itemsize for d in ds.dtypes)
        return cls(
            shape=(int(ds.height), int(ds.width)),
            block=tuple(int(v) for v in ds.block_shapes[0]),  # type: ignore[arg-type]
            pixel_bytes=count * itemsize + 1,
            window=window,
            overlap=overlap,
            keep_rows=keep_rows,
            blocks_held=blocks_held,
        )

    def cache_bytes(self) -> int:
        """Bytes of decoded blocks the pass revisits (see the module docstring)."""
        (height, width), (bh, bw), px = self.shape, self.block, self.pixel_bytes
        (wh, ww), (oy, ox) = self.window, self.overlap
        if self.blocks_held:
            return 4 * bh * min(bw, width) * px
        if bw >= width:
            return (wh + bh) * width * px
        need = 0
        if self.keep_rows and (oy > 0 or wh % bh):
            need = (-(-oy // bh) + 1) * bh * width * px
        if ox > 0 or ww % bw:  # hyperspectral blocks are ~100 MB each: at least those of two neighbouring windows
            need = max(need, min(wh + 2 * bh, height) * min(ww + 2 * bw, width) * px)
        return need


def bounded_gdal_cache(*reads: WindowedReads | None) -> contextlib.AbstractContextManager[Any]:
    """A ``rasterio.Env`` whose ``GDAL_CACHEMAX`` holds the blocks ``reads`` revisit (at least 16 MiB, plus 25%), or a
    null context when ``GDAL_CACHEMAX`` is already set. None entries are skipped.

    rasterio hands ``GDAL_CACHEMAX`` to ``GDALSetCacheMax64``, i.e. in bytes (a bare 16 would be a 16-byte cache, which
    decodes every revisited block again), and does not restore it when a nested ``Env`` exits, so the size in force
    before is put back on exit."""
    import rasterio.env

    if "GDAL_CACHEMAX" in os.environ or (rasterio.env.hasenv() and "GDAL_CACHEMAX" in rasterio.env.getenv()):
        return contextlib.nullcontext()
    need = sum(r.cache_bytes() for r in reads if r is not None)
    return _gdal_cache_bytes(max(MIN_CACHE_MB * 2**20, int(need * 1.25)))


@contextlib.contextmanager
def _gdal_cache_bytes(nbytes: int) -> Iterator[None]:
    """GDAL's block cache limited to ``nbytes`` bytes in the block, and the previous limit again after it."""
    import rasterio.env

    previous = rasterio.env.get_gdal_config("GDAL_CACHEMAX")  # bytes (GDALGetCacheMax64)
    try:
        with rasterio.Env(GDAL_CACHEMAX=nbytes):
            yield
    finally:
        rasterio.env.set_gdal_config("GDAL_CACHEMAX", previous)


__all__ = ["MIN_CACHE_MB", "WindowedReads", "bounded_gdal_cache"]
