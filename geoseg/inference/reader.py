"""The tile reader of the prediction pipeline: tiles read, normalized, validity-checked and reflect-padded straight
into the batch slots of :class:`geoseg.inference.engine.BatchRunner`.

Beside a GPU reader threads (one GDAL handle each) fill the slots while the model runs; on CPU tiles are read on the
calling thread between forward passes, because the model already uses every core. When the source allows it, tiles
are assembled from whole input blocks, each decoded once (:class:`geoseg.io.blocks.BlockCache`).
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from geoseg.io.blocks import BlockCache
from geoseg.io.normalize import Normalization
from geoseg.io.read import RasterSource, reflect_fill
from geoseg.tiling import Tile, TileGrid

SMALL_CACHE = 128 * 2**20  # CPU: blocks shared by consecutive tile rows are kept across the width when they fit this
LARGE_CACHE = 2 * 2**30  # GPU (decode is the bound): the same, up to this


def default_workers(*, cuda: bool) -> int:
    """Reader threads: up to 8 beside a GPU. On CPU none: the model's intra-op threads already use every core, and a
    reader thread running beside them stalls every parallel op it delays (measured on 2 cores: 13-band tiles read on
    the side ran the pipeline 15% slower than reading them between forward passes)."""
    cores = os.cpu_count() or 2
    return min(8, max(2, cores)) if cuda else 0


def keep_overlap_rows(source: RasterSource, grid: TileGrid, *, cuda: bool) -> bool:
    """Whether the blocks two consecutive tile rows share (at most two block rows of the width) are kept, so no block
    is decoded twice. On CPU the model is the bound, so they are decoded again rather than held when they exceed
    :data:`SMALL_CACHE`; memory then no longer grows with the raster width."""
    bh, _ = source.block_shapes[0]
    per_px = source.count * max(np.dtype(d).itemsize for d in source.dtypes)
    overlap = 2 * grid.halo[0]  # rows two consecutive tile rows both read
    held_rows = (-(-overlap // bh) + 1) * bh  # the block rows under that overlap, however it is aligned
    return held_rows * source.width * per_px <= (LARGE_CACHE if cuda else SMALL_CACHE)


def bounded_gdal_cache(
    source: RasterSource, grid: TileGrid, *, keep_overlap_rows: bool = True, block_reuse: bool = False
) -> contextlib.AbstractContextManager[Any]:
    """A rasterio.Env sizing GDAL's block cache for one pass of tile reads, unless GDAL_CACHEMAX is set.

    GDAL's default cache (5% of RAM) fills with blocks a one-pass read never revisits, so peak RSS would grow with the
    raster. With ``block_reuse`` (geoseg holds decoded blocks itself, :class:`BlockCache`) GDAL only needs room for
    the blocks being decoded. Otherwise neighbouring tiles of a row share a column of blocks and consecutive tile rows
    share the blocks under their overlap: ``keep_overlap_rows`` keeps two rows of blocks across the width, without it
    only the blocks of two neighbouring tiles. Striped files always keep a tile row of strips.
    """
    import rasterio.env

    if "GDAL_CACHEMAX" in os.environ or (rasterio.env.hasenv() and "GDAL_CACHEMAX" in rasterio.env.getenv()):
        return contextlib.nullcontext()
    bh, bw = source.block_shapes[0]
    th, tw = grid.tile_shape
    per_px = int(source.profile.get("count", source.count)) * max(np.dtype(d).itemsize for d in source.dtypes) + 1
    if block_reuse:
        need = 4 * bh * min(bw, source.width) * per_px
    elif bw >= source.width:
        need = (th + bh) * source.width * per_px
    else:
        need = 2 * bh * source.width * per_px if keep_overlap_rows else 0
        # at least the blocks two neighbouring tiles read (hyperspectral blocks are ~100 MB each)
        need = max(need, min(th + 2 * bh, source.height) * min(tw + 2 * bw, source.width) * per_px)
    return rasterio.Env(GDAL_CACHEMAX=max(16, int(need * 1.25 / 2**20) + 1))


class TileReader:
    """Reads tiles of ``grid`` from ``source`` into batch buffers: normalized, nodata set to 0 (the band mean after
    normalization), reflect-padded to the tile shape, on ``workers`` threads (on the calling thread when 0).

    Use it as a context manager: it sizes GDAL's block cache for the pass and stops its threads on exit. Blocks are
    decoded once per tile row, or, when ``keep_rows`` (see :func:`keep_overlap_rows`), once for the whole pass.
    """

    def __init__(
        self, source: RasterSource, norm: Normalization, grid: TileGrid, *, workers: int, keep_rows: bool
    ) -> None:
        self.source, self.norm, self.grid, self.keep_rows = source, norm, grid, keep_rows
        self.blocks = BlockCache.for_grid(source, grid, per_row=not keep_rows) if BlockCache.supports(source) else None
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geoseg-read") if workers else None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> TileReader:
        self._stack.enter_context(
            bounded_gdal_cache(
                self.source, self.grid, keep_overlap_rows=self.keep_rows, block_reuse=self.blocks is not None
            )
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._stack.close()

    def _read(self, tile: Tile, out: np.ndarray) -> tuple[np.ndarray, bool]:
        """Fill ``out`` (C, th, tw) with the normalized, padded tile; (padded validity, whether the core has data)."""
        h, w = int(tile.read.height), int(tile.read.width)
        if self.blocks is not None:
            valid = self.blocks.read_into(tile.index[0], tile.read, out)
        else:
            valid = self.source.read_into(tile.read, out)  # decoded straight into the batch slot
        rs, cs = tile.core_slices
        padded_valid = np.pad(valid, ((0, tile.pad[0]), (0, tile.pad[1])), constant_values=False)
        if not padded_valid[rs, cs].any():
            return padded_valid, False  # all-nodata core: skip the model
        data = self.norm.apply(out[:, :h, :w])
        if not valid.all():
            data[:, ~valid] = 0.0  # nodata -> band mean after normalization; masked again on output
        if tile.pad[0] or tile.pad[1]:
            reflect_fill(out, h, w)
        return padded_valid, True

    def submit(self, tiles: list[Tile], buf: np.ndarray) -> list[Future[tuple[np.ndarray, bool]]]:
        """Read ``tiles`` into ``buf[0..len(tiles))``; each future gives (padded validity, whether the core has
        data)."""
        if self.pool is not None:
            return [self.pool.submit(self._read, t, buf[k]) for k, t in enumerate(tiles)]
        done: list[Future[tuple[np.ndarray, bool]]] = []
        for k, t in enumerate(tiles):  # no reader threads: read on the calling thread
            done.append(Future())
            done[-1].set_result(self._read(t, buf[k]))
        return done

    def close(self) -> None:
        """Stop the reader threads (reads not started are cancelled)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["TileReader", "default_workers", "keep_overlap_rows"]
