"""Stitching strategies: how overlapping tile predictions become one seam-free map.

Every strategy consumes tiles in row-major order and emits finished, non-overlapping *pieces* of the output (a
rectangle of class ids, validity and optional probabilities) that together cover the raster exactly once.

* ``center`` -- each output pixel comes from the one tile whose *core* contains it (the centre of its read window,
  away from the tile border). With a halo at least the receptive-field radius this equals a whole-image pass.
  Cheapest: no accumulation, class ids straight from the core; one piece per tile, so nothing of the raster's width
  is held.
* ``mean`` -- average the softmax probabilities of every tile whose read window covers the pixel.
* ``gaussian`` -- like ``mean`` but each tile's contribution is weighted by a 2-D Gaussian centred on the tile,
  so border pixels (least context) count least. Both accumulate over a rolling band of rows (the overlap between
  tile rows) and emit full-width pieces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from geoseg.tiling import Tile, TileGrid


@dataclass
class Piece:
    """A finished output rectangle with top-left pixel (``row``, ``col``): class ids, validity, optional probs.

    A piece owns its arrays (never views of reused tile buffers), so the writer may modify them in place."""

    row: int
    col: int
    classes: np.ndarray  # (rows, cols) class ids (integer)
    valid: np.ndarray  # (rows, cols) bool
    probs: np.ndarray | None  # (C, rows, cols) float32 or None


@dataclass
class TileResult:
    """Model output for one tile (``probs`` None for skipped all-nodata tiles)."""

    tile: Tile
    valid: np.ndarray  # (tile_h, tile_w) bool validity of the padded tile
    classes: np.ndarray | None  # (tile_h, tile_w) argmax
    probs: np.ndarray | None  # (C, tile_h, tile_w) softmax, when the strategy or output needs it


class Stitcher:
    """Base class; subclasses set ``needs_probs`` and implement :meth:`add`."""

    needs_probs = False
    classes_dtype: type[np.integer] = np.int64  # dtype of emitted class ids (the pipeline sets the smallest that fits)

    def __init__(self, grid: TileGrid, num_classes: int, *, keep_probs: bool = False) -> None:
        self.grid = grid
        self.num_classes = num_classes
        self.keep_probs = keep_probs

    def add(self, result: TileResult) -> list[Piece]:
        """Consume the next tile (row-major order); return the pieces of the output that are now final."""
        raise NotImplementedError


class CenterStitcher(Stitcher):
    """Center-crop stitching (see module docstring): each tile's core, copied out of the reused tile buffers."""

    def add(self, result: TileResult) -> list[Piece]:
        t = result.tile
        rs, cs = t.core_slices
        row, col = int(t.core.row_off), int(t.core.col_off)
        if result.classes is None:  # skipped (all-nodata) tile
            shape = (int(t.core.height), int(t.core.width))
            probs = np.zeros((self.num_classes, *shape), np.float32) if self.keep_probs else None
            return [Piece(row, col, np.zeros(shape, self.classes_dtype), np.zeros(shape, bool), probs)]
        probs = result.probs[:, rs, cs].copy() if self.keep_probs and result.probs is not None else None
        return [Piece(row, col, result.classes[rs, cs].astype(self.classes_dtype), result.valid[rs, cs].copy(), probs)]


def gaussian_weights(shape: tuple[int, int], sigma_fraction: float = 0.25) -> np.ndarray:
    """A separable Gaussian (peak 1 at the centre, sigma = fraction of the tile size), never exactly zero."""
    axes = []
    for n in shape:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2
        axes.append(np.exp(-0.5 * (x / max(n * sigma_fraction, 1e-6)) ** 2))
    w = np.outer(axes[0], axes[1])
    return np.maximum(w / w.max(), 1e-4).astype(np.float32)


class BlendStitcher(Stitcher):
    """Weighted average of overlapping tile probabilities, accumulated over a rolling band of rows."""

    needs_probs = True

    def __init__(
        self,
        grid: TileGrid,
        num_classes: int,
        *,
        keep_probs: bool = False,
        weights: Callable[[tuple[int, int]], np.ndarray] | None = None,
    ) -> None:
        super().__init__(grid, num_classes, keep_probs=keep_probs)
        th, tw = grid.tile_shape
        self.weights = (weights or (lambda s: np.ones(s, np.float32)))((th, tw))
        w = grid.shape[1]
        self._base = 0  # first row held in the buffers
        self._acc = np.zeros((num_classes, 0, w), np.float32)
        self._wsum = np.zeros((0, w), np.float32)
        self._valid = np.zeros((0, w), bool)

    def _extend_to(self, row_stop: int) -> None:
        have = self._base + self._wsum.shape[0]
        if row_stop > have:
            n, w = row_stop - have, self.grid.shape[1]
            self._acc = np.concatenate([self._acc, np.zeros((self.num_classes, n, w), np.float32)], axis=1)
            self._wsum = np.concatenate([self._wsum, np.zeros((n, w), np.float32)])
            self._valid = np.concatenate([self._valid, np.zeros((n, w), bool)])

    def add(self, result: TileResult) -> list[Piece]:
        t = result.tile
        i, j = t.index
        r0, c0 = int(t.read_window.row_off), int(t.read_window.col_off)
        h, w = int(t.read_window.height), int(t.read_window.width)
        self._extend_to(max(r0 + h, int(t.core.row_off + t.core.height)))
        # validity is decided by the core owner (cores partition the raster)
        rs, cs = t.core_slices
        cr, cc = int(t.core.row_off) - self._base, int(t.core.col_off)
        self._valid[cr : cr + rs.stop - rs.start, cc : cc + cs.stop - cs.start] = (
            result.valid[rs, cs] if result.probs is not None else False
        )
        if result.probs is not None:
            wt = self.weights[:h, :w] * result.valid[:h, :w]
            b = r0 - self._base
            self._acc[:, b : b + h, c0 : c0 + w] += result.probs[:, :h, :w] * wt
            self._wsum[b : b + h, c0 : c0 + w] += wt
        if j < self.grid.grid_shape[1] - 1:
            return []
        nrows = self.grid.grid_shape[0]
        final_stop = self.grid.read_row_span(i + 1)[0] if i + 1 < nrows else self.grid.shape[0]
        final_stop = min(final_stop, self.grid.row_span(i)[1])
        return self._emit(final_stop)

    def _emit(self, stop: int) -> list[Piece]:
        n = stop - self._base
        if n <= 0:
            return []
        acc, wsum, valid = self._acc[:, :n], self._wsum[:n], self._valid[:n]
        probs = acc / np.maximum(wsum, 1e-12)
        valid = valid & (wsum > 0)
        band = Piece(self._base, 0, probs.argmax(0), valid, probs if self.keep_probs else None)
        self._acc, self._wsum, self._valid = self._acc[:, n:].copy(), self._wsum[n:].copy(), self._valid[n:].copy()
        self._base = stop
        return [band]


STITCH_METHODS: dict[str, Callable[..., Stitcher]] = {
    "center": CenterStitcher,
    "mean": BlendStitcher,
    "gaussian": lambda grid, n, **kw: BlendStitcher(grid, n, weights=gaussian_weights, **kw),
}


def make_stitcher(method: str, grid: TileGrid, num_classes: int, *, keep_probs: bool = False) -> Stitcher:
    """Instantiate a stitching strategy by name.

    Raises:
        InvalidParameterError: ``method`` is not in :data:`STITCH_METHODS`.
    """
    from geoseg.errors import InvalidParameterError

    if method not in STITCH_METHODS:
        raise InvalidParameterError(f"unknown stitch method {method!r}; choose one of {', '.join(STITCH_METHODS)}")
    return STITCH_METHODS[method](grid, num_classes, keep_probs=keep_probs)
