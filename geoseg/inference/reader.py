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

CPU_CACHE_MB = 64.0
"""Default block-reuse budget on the CPU (MiB). There the model, not decoding, bounds the speed, so the blocks two
tile rows share are decoded twice rather than held once they exceed this; 64 MiB keeps every raster within 10% of a
small one's peak RSS (``benchmarks/predict_memory.py``) and covers 4-band uint16 rasters up to 8192 px wide."""
GPU_CACHE_FRACTION = 0.125
"""Beside a GPU decoding is the bound: the default budget is this fraction of the host memory still available
(``MemAvailable``, or the cgroup's limit less its usage when lower) when the pass starts."""
GPU_CACHE_MIN_MB, GPU_CACHE_MAX_MB = 64.0, 16384.0  # bounds of that default


def default_workers(*, cuda: bool) -> int:
    """Reader threads: one per usable core beside a GPU (at least 2, at most 32): there decoding is the bound (DESIGN:
    ~24 MPix/s per thread against ~370 MPix/s for the model), so 8 threads on a 16-core machine would cap the
    pipeline at half the machine's decode rate. On CPU none: the model's intra-op threads already use every core, and
    a reader thread running beside them stalls every parallel op it delays (measured on 2 cores: 13-band tiles read on
    the side ran the pipeline 15% slower than reading them between forward passes)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
    return min(32, max(2, cores)) if cuda else 0


def host_available_bytes() -> int | None:
    """Host memory still available to this process, in bytes: ``MemAvailable`` of ``/proc/meminfo``, lowered to
    the cgroup (v2 ``memory.max`` less ``memory.current``, or v1 ``memory.limit_in_bytes`` less
    ``memory.usage_in_bytes``) when it is tighter; None where neither can be read (not Linux)."""
    found: list[int] = []
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        with contextlib.suppress(OSError, ValueError):
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
            if limit != "max" and int(limit) < 2**60:  # v1 reports "no limit" as a huge number
                found.append(max(0, int(limit) - usage))
            break
    return min(found) if found else None


def default_cache_mb(*, cuda: bool) -> float:
    """The block-reuse budget (MiB) when the caller gives none: :data:`CPU_CACHE_MB` on the CPU; beside a GPU
    :data:`GPU_CACHE_FRACTION` of :func:`host_available_bytes`, within [:data:`GPU_CACHE_MIN_MB`,
    :data:`GPU_CACHE_MAX_MB`] (the minimum when the available memory cannot be read)."""
    if not cuda:
        return CPU_CACHE_MB
    available = host_available_bytes()
    if available is None:
        return GPU_CACHE_MIN_MB
    return min(GPU_CACHE_MAX_MB, max(GPU_CACHE_MIN_MB, GPU_CACHE_FRACTION * available / 2**20))


def overlap_rows_bytes(source: RasterSource, grid: TileGrid) -> int:
    """Bytes of the decoded blocks two consecutive tile rows share, held across the width when kept: the block rows
    under their overlap (``2 * halo`` rows), however it is aligned, times the width, every band of the file."""
    bh, _ = source.block_shapes[0]
    per_px = source.count * max(np.dtype(d).itemsize for d in source.dtypes)
    overlap = 2 * grid.halo[0]  # rows two consecutive tile rows both read
    held_rows = (-(-overlap // bh) + 1) * bh
    return held_rows * source.width * per_px


def keep_overlap_rows(source: RasterSource, grid: TileGrid, *, cache_mb: float) -> bool:
    """Whether the blocks two consecutive tile rows share are kept, so no block is decoded twice: only when they fit
    ``cache_mb`` MiB (:func:`overlap_rows_bytes`). Otherwise they are decoded again for the next tile row and memory
    does not grow with the raster width: peak RSS stays within ``cache_mb`` of a small raster's."""
    return overlap_rows_bytes(source, grid) <= cache_mb * 2**20


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


__all__ = [
    "CPU_CACHE_MB",
    "TileReader",
    "default_cache_mb",
    "default_workers",
    "host_available_bytes",
    "keep_overlap_rows",
    "overlap_rows_bytes",
]
