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

import numpy as np

from geoseg.io.blocks import BlockCache
from geoseg.io.gdal_cache import WindowedReads, bounded_gdal_cache
from geoseg.io.normalize import Normalization
from geoseg.io.read import RasterSource, reflect_fill
from geoseg.tiling import Tile, TileGrid

SMALL_CACHE = 128 * 2**20  # CPU: blocks shared by consecutive tile rows are kept across the width when they fit this
LARGE_CACHE = 2 * 2**30  # GPU (decode is the bound): the same, up to this


def default_workers(*, cuda: bool) -> int:
    """Reader threads: one per usable core beside a GPU (at least 2, at most 32): there decoding is the bound (DESIGN:
    ~24 MPix/s per thread against ~370 MPix/s for the model), so 8 threads on a 16-core machine would cap the
    pipeline at half the machine's decode rate. On CPU none: the model's intra-op threads already use every core, and
    a reader thread running beside them stalls every parallel op it delays (measured on 2 cores: 13-band tiles read on
    the side ran the pipeline 15% slower than reading them between forward passes)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
    return min(32, max(2, cores)) if cuda else 0


def keep_overlap_rows(source: RasterSource, grid: TileGrid, *, cuda: bool) -> bool:
    """Whether the blocks two consecutive tile rows share (at most two block rows of the width) are kept, so no block
    is decoded twice. On CPU the model is the bound, so they are decoded again rather than held when they exceed
    :data:`SMALL_CACHE`; memory then no longer grows with the raster width."""
    bh, _ = source.block_shapes[0]
    per_px = source.count * max(np.dtype(d).itemsize for d in source.dtypes)
    overlap = 2 * grid.halo[0]  # rows two consecutive tile rows both read
    held_rows = (-(-overlap // bh) + 1) * bh  # the block rows under that overlap, however it is aligned
    return held_rows * source.width * per_px <= (LARGE_CACHE if cuda else SMALL_CACHE)


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
        halo_rows, halo_cols = self.grid.halo
        reads = WindowedReads.of(
            self.source,
            self.grid.tile_shape,
            overlap=(2 * halo_rows, 2 * halo_cols),
            keep_rows=self.keep_rows,
            blocks_held=self.blocks is not None,
        )
        self._stack.enter_context(bounded_gdal_cache(reads))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._stack.close()

    def _read(self, tile: Tile, out: np.ndarray) -> tuple[np.ndarray, bool]:
        """Fill ``out`` (C, th, tw) with the normalized, padded tile; (padded validity, whether the core has data)."""
        h, w = int(tile.read_window.height), int(tile.read_window.width)
        if self.blocks is not None:
            valid = self.blocks.read_into(tile.index[0], tile.read_window, out)
        else:
            valid = self.source.read_into(tile.read_window, out)  # decoded straight into the batch slot
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
