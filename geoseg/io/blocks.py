"""Decode each block of a raster once per pass over a grid of overlapping tiles.

Overlapping tiles share blocks: a 512-px tile read at a 384-px stride from a file with 512-px blocks touches four
blocks where it owns about half of one, so reading each tile window on its own decodes every block several times
(GDAL's block cache does not keep the blocks of multi-band, pixel-interleaved window reads). :class:`BlockCache` reads
whole blocks (block-aligned windows, clipped at the raster edge) in the file's dtype, assembles tile windows from
them, and drops each block as soon as the last window that needs it has been filled. Memory is bounded by the
blocks shared between windows still to be read: those of one tile row, or, without ``per_row``, also the blocks two
consecutive tile rows share across the width.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np
from rasterio.windows import Window

from geoseg.io.read import RasterSource
from geoseg.tiling import TileGrid

BlockKey = tuple[int, int, int]  # (group, block row, block col)


def _span(start: int, stop: int, block: int) -> range:
    """Block indexes covering pixels ``[start, stop)`` along one axis."""
    return range(start // block, (stop - 1) // block + 1)


class BlockCache:
    """Fill float32 tile buffers from whole blocks, each decoded once per group (thread-safe).

    The tiles form a grid: tile row ``i`` reads raster rows ``tile_rows[i]`` and tile column ``j`` reads columns
    ``tile_cols[j]`` (``[start, stop)``). A block is decoded once for the whole pass, or with ``per_row`` once per
    tile row (then the blocks two tile rows share are decoded twice but never held across the width). How many tiles
    still need a block is known from the grid, so it is dropped right after its last one; bookkeeping is per block
    row and column, never per tile. Only sources whose values float32 holds exactly and whose validity comes from
    the values (not a GDAL mask band) qualify: see :meth:`supports`.
    """

    def __init__(
        self,
        source: RasterSource,
        tile_rows: Sequence[tuple[int, int]],
        tile_cols: Sequence[tuple[int, int]],
        *,
        per_row: bool = False,
    ) -> None:
        if not self.supports(source):
            raise ValueError(f"{source.path}: block reuse needs exact float32 bands without a GDAL mask band")
        self.source = source
        self.block = source.block_shapes[0]
        self.per_row = per_row
        bh, bw = self.block
        # how many tile rows / columns read each block row / column
        self._row_users = Counter(b for r0, r1 in tile_rows for b in _span(r0, r1, bh))
        self._col_users = Counter(b for c0, c1 in tile_cols for b in _span(c0, c1, bw))
        self._lock = threading.Lock()
        self._live: dict[BlockKey, tuple[Future[np.ndarray], list[int]]] = {}
        self.decoded = 0  # blocks decoded so far (for tests and benchmarks)

    @classmethod
    def for_grid(cls, source: RasterSource, grid: TileGrid, *, per_row: bool = False) -> BlockCache:
        """A cache for one pass over ``grid``'s tiles (any order)."""
        rows: dict[int, tuple[int, int]] = {}
        cols: dict[int, tuple[int, int]] = {}
        for t in grid:
            r0, c0 = int(t.read_window.row_off), int(t.read_window.col_off)
            rows[t.index[0]] = (r0, r0 + int(t.read_window.height))
            cols[t.index[1]] = (c0, c0 + int(t.read_window.width))
        return cls(source, [rows[i] for i in sorted(rows)], [cols[j] for j in sorted(cols)], per_row=per_row)

    @staticmethod
    def supports(source: RasterSource) -> bool:
        return source.exact_float32 and not source.uses_gdal_mask and len(set(source.block_shapes)) == 1

    @property
    def live_bytes(self) -> int:
        """Memory held by decoded blocks still needed."""
        with self._lock:
            futures = [f for f, _ in self._live.values()]
        return sum(f.result().nbytes for f in futures if f.done() and f.exception() is None)

    def _blocks(self, window: Window) -> list[tuple[int, int]]:
        bh, bw = self.block
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        return [(bi, bj) for bi in _span(r0, r1, bh) for bj in _span(c0, c1, bw)]

    def _get(self, key: BlockKey) -> np.ndarray:
        _, bi, bj = key
        with self._lock:
            entry = self._live.get(key)
            owner = entry is None
            if entry is None:
                uses = (1 if self.per_row else self._row_users[bi]) * self._col_users[bj]
                entry = self._live[key] = (Future(), [max(1, uses)])
        fut = entry[0]
        if owner:
            bh, bw = self.block
            r0, c0 = bi * bh, bj * bw
            win = Window(c0, r0, min(bw, self.source.width - c0), min(bh, self.source.height - r0))
            try:
                fut.set_result(self.source.read_raw(win))
                with self._lock:
                    self.decoded += 1
            except BaseException as exc:
                fut.set_exception(exc)
                with self._lock:  # let a later window retry instead of re-raising a stale error forever
                    self._live.pop(key, None)
        return fut.result()

    def _release(self, key: BlockKey) -> None:
        with self._lock:
            entry = self._live.get(key)
            if entry is not None:
                entry[1][0] -= 1
                if entry[1][0] <= 0:
                    del self._live[key]

    def read_into(self, tile_row: int, window: Window, out: np.ndarray) -> np.ndarray:
        """Fill ``out[:, :rows, :cols]`` with ``window`` (a window of tile row ``tile_row``) as
        :meth:`RasterSource.read_into` would; return the validity mask."""
        group = tile_row if self.per_row else 0
        bh, bw = self.block
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        for bi, bj in self._blocks(window):
            key = (group, bi, bj)
            block = self._get(key)
            by, bx = bi * bh, bj * bw
            y0, y1 = max(r0, by), min(r1, by + bh)
            x0, x1 = max(c0, bx), min(c1, bx + bw)
            out[:, y0 - r0 : y1 - r0, x0 - c0 : x1 - c0] = block[:, y0 - by : y1 - by, x0 - bx : x1 - bx]
            self._release(key)
        return self.source.finish_read(out[:, : r1 - r0, : c1 - c0])
