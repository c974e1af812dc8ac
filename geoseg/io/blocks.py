"""Decode each block of a raster once per pass over a known sequence of windows.

Overlapping tiles share blocks: a 512-px tile read at a 384-px stride from a file with 512-px blocks touches four
blocks where it owns about half of one, so reading each tile window on its own decodes every block several times
(GDAL's block cache does not keep the blocks of multi-band, pixel-interleaved window reads). :class:`BlockCache` reads
whole blocks (block-aligned windows, clipped at the raster edge) in the file's dtype, assembles tile windows from
them, and drops each block as soon as the last window that needs it has been filled. Memory is bounded by the
blocks shared between windows still to be read: those of one tile row, or, with ``keep_rows``, also the blocks two
consecutive tile rows share across the width.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Hashable, Iterable
from concurrent.futures import Future

import numpy as np
from rasterio.windows import Window

from geoseg.io.read import RasterSource

BlockKey = tuple[Hashable, int, int]


class BlockCache:
    """Fill float32 tile buffers from whole blocks, each decoded once per group (thread-safe).

    ``windows`` lists every ``(group, window)`` that will be filled, in any order; a block is decoded once per group
    that uses it (use one group for the whole pass to decode every block exactly once, or the tile row to hold only
    the blocks of one tile row). Only sources whose values float32 holds exactly and whose validity comes from the
    values (not a GDAL mask band) qualify: see :meth:`supports`.
    """

    def __init__(self, source: RasterSource, windows: Iterable[tuple[Hashable, Window]]) -> None:
        if not self.supports(source):
            raise ValueError(f"{source.path}: block reuse needs exact float32 bands without a GDAL mask band")
        self.source = source
        self.block = source.block_shapes[0]
        self._uses: Counter[BlockKey] = Counter()
        for group, window in windows:
            for bi, bj in self._blocks(window):
                self._uses[group, bi, bj] += 1
        self._lock = threading.Lock()
        self._live: dict[BlockKey, Future[np.ndarray]] = {}
        self.decoded = 0  # blocks decoded so far (for tests and benchmarks)

    @staticmethod
    def supports(source: RasterSource) -> bool:
        return source.exact_float32 and not source.uses_gdal_mask and len(set(source.block_shapes)) == 1

    @property
    def live_bytes(self) -> int:
        """Memory held by decoded blocks still needed."""
        with self._lock:
            futures = list(self._live.values())
        return sum(f.result().nbytes for f in futures if f.done() and f.exception() is None)

    def _blocks(self, window: Window) -> list[tuple[int, int]]:
        bh, bw = self.block
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        return [(bi, bj) for bi in range(r0 // bh, (r1 - 1) // bh + 1) for bj in range(c0 // bw, (c1 - 1) // bw + 1)]

    def _get(self, key: BlockKey) -> np.ndarray:
        with self._lock:
            fut = self._live.get(key)
            owner = fut is None
            if owner:
                fut = self._live[key] = Future()
        assert fut is not None
        if owner:
            _, bi, bj = key
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
            self._uses[key] -= 1
            if self._uses[key] <= 0:
                self._live.pop(key, None)
                del self._uses[key]

    def read_into(self, group: Hashable, window: Window, out: np.ndarray) -> np.ndarray:
        """Fill ``out[:, :rows, :cols]`` with ``window`` as :meth:`RasterSource.read_into` would; return validity."""
        bh, bw = self.block
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        for bi, bj in self._blocks(window):
            key = (group, bi, bj)
            block = self._get(key)
            y0, y1 = max(r0, bi * bh), min(r1, (bi + 1) * bh)
            x0, x1 = max(c0, bj * bw), min(c1, (bj + 1) * bw)
            by, bx = bi * bh, bj * bw
            out[:, y0 - r0 : y1 - r0, x0 - c0 : x1 - c0] = block[:, y0 - by : y1 - by, x0 - bx : x1 - bx]
            self._release(key)
        return self.source.finish_read(out[:, : r1 - r0, : c1 - c0])
