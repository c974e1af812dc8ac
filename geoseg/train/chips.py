"""Training chips: a spatially separated block split, and random / grid / class-balanced chip sampling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from geoseg.errors import InvalidParameterError
from geoseg.io.normalize import Normalization
from geoseg.io.read import RasterSource, reflect_pad
from geoseg.train.labels import IGNORE_INDEX, LabelSource

SAMPLING_MODES = ("random", "grid", "balanced")


@dataclass(frozen=True)
class BlockSplit:
    """The raster cut into square blocks; each block is train or validation (no pixel leaks across)."""

    block: int
    train: list[tuple[int, int]]  # block (row, col) origins in pixels
    val: list[tuple[int, int]]


def block_split(
    shape: tuple[int, int],
    block: int,
    val_fraction: float,
    seed: int,
    histograms: dict[tuple[int, int], np.ndarray] | None = None,
) -> BlockSplit:
    """Assign whole blocks to validation at random (seeded); at least one block each when possible.

    Blocks tile the raster from the top-left; the last row/column of blocks absorbs the remainder. With per-block
    class ``histograms`` the split is stratified: validation blocks are drawn so that every class with pixels in at
    least two blocks appears in both train and validation, then filled up at random.
    """
    if not 0 <= val_fraction < 1:
        raise InvalidParameterError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if block < 1:
        raise InvalidParameterError(f"block must be >= 1 px, got {block}")
    h, w = shape
    origins = [(r, c) for r in range(0, max(h - block, 0) + 1, block) for c in range(0, max(w - block, 0) + 1, block)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(origins))
    n_val = int(round(val_fraction * len(origins)))
    if val_fraction > 0 and len(origins) > 1:
        n_val = min(max(n_val, 1), len(origins) - 1)
    if histograms is not None and n_val:
        chosen = _stratified(origins, histograms, n_val, rng)
        val = sorted(chosen)
        train = [o for o in origins if o not in chosen]
        return BlockSplit(block, train, val)
    val = [origins[i] for i in sorted(order[:n_val])]
    train = [origins[i] for i in sorted(order[n_val:])]
    return BlockSplit(block, train, val)


def _stratified(
    origins: list[tuple[int, int]], hist: dict[tuple[int, int], np.ndarray], n_val: int, rng: np.random.Generator
) -> set[tuple[int, int]]:
    """Greedy stratified choice of ``n_val`` validation blocks (rarest class first)."""
    h = np.stack([hist[o] for o in origins]).astype(np.float64)
    chosen: set[int] = set()
    for c in np.argsort(h.sum(0)):
        holders = np.flatnonzero(h[:, c] > 0)
        if len(holders) < 2 or any(i in chosen for i in holders) or len(chosen) >= n_val:
            continue
        candidates = [i for i in holders if i not in chosen]
        # keep at least one block holding this class for training
        if len(candidates) < 2:
            continue
        chosen.add(int(rng.choice(candidates)))
    rest = [i for i in rng.permutation(len(origins)) if i not in chosen]
    chosen.update(int(i) for i in rest[: max(0, n_val - len(chosen))])
    return {origins[i] for i in chosen}


class ChipReader:
    """Reads normalized (image, label) chips; invalid image pixels get the ignore label."""

    def __init__(self, image: RasterSource, labels: LabelSource, norm: Normalization, chip: int, block: int) -> None:
        self.image, self.labels, self.norm, self.chip, self.block = image, labels, norm, chip, block
        self._hist: dict[tuple[int, int], np.ndarray] = {}

    def _extent(self, r0: int, c0: int) -> tuple[int, int]:
        """Block size at origin (r0, c0): the last block row/column extends to the raster edge."""
        h, w = self.image.shape
        bh = h - r0 if r0 + 2 * self.block > h else self.block
        bw = w - c0 if c0 + 2 * self.block > w else self.block
        return bh, bw

    def read(self, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
        h = min(self.chip, self.image.height - row)
        w = min(self.chip, self.image.width - col)
        win = Window(col, row, w, h)
        pad = (self.chip - h, self.chip - w)
        x, valid = self.image.read(win)
        self.norm.apply(x)
        x[:, ~valid] = 0.0
        y = self.labels.read(win)
        y[~valid] = IGNORE_INDEX
        return reflect_pad(x, pad), np.pad(y, ((0, pad[0]), (0, pad[1])), constant_values=IGNORE_INDEX)

    def _random_in_block(self, r0: int, c0: int, rng: np.random.Generator) -> tuple[int, int]:
        bh, bw = self._extent(r0, c0)
        r = r0 + int(rng.integers(0, max(bh - self.chip, 0) + 1))
        c = c0 + int(rng.integers(0, max(bw - self.chip, 0) + 1))
        return r, c

    def random_origins(self, blocks: list[tuple[int, int]], n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        """``n`` random chip origins, each chip inside one of ``blocks``."""
        if not blocks:
            return []
        return [self._random_in_block(*blocks[int(k)], rng) for k in rng.integers(0, len(blocks), n)]

    def grid_origins(self, blocks: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Non-overlapping chips covering each block."""
        out = []
        for r0, c0 in blocks:
            bh, bw = self._extent(r0, c0)
            out += [(r, c) for r in range(r0, r0 + bh, self.chip) for c in range(c0, c0 + bw, self.chip)]
        return out

    def block_histogram(self, r0: int, c0: int) -> np.ndarray:
        """Pixel count per class in a block (cached; read once)."""
        key = (r0, c0)
        if key not in self._hist:
            bh, bw = self._extent(r0, c0)
            y = self.labels.read(Window(c0, r0, bw, bh))
            n = len(self.labels.classes)
            self._hist[key] = np.bincount(y[y != IGNORE_INDEX].ravel(), minlength=n)[:n]
        return self._hist[key]

    def balanced_origins(
        self, blocks: list[tuple[int, int]], n: int, rng: np.random.Generator
    ) -> list[tuple[int, int]]:
        """Chips drawn so every class present is equally likely to be sampled: pick a class uniformly, then a block
        in proportion to that class's pixels in it, then a random chip inside the block."""
        if not blocks:
            return []
        hists = np.stack([self.block_histogram(*b) for b in blocks]).astype(np.float64)
        present = np.flatnonzero(hists.sum(0) > 0)
        if present.size == 0:
            return self.random_origins(blocks, n, rng)
        out = []
        for cls in rng.choice(present, size=n):
            p = hists[:, cls] / hists[:, cls].sum()
            out.append(self._random_in_block(*blocks[int(rng.choice(len(blocks), p=p))], rng))
        return out

    def origins(self, mode: str, blocks: list[tuple[int, int]], n: int, rng: np.random.Generator) -> list:
        if mode == "random":
            return self.random_origins(blocks, n, rng)
        if mode == "balanced":
            return self.balanced_origins(blocks, n, rng)
        if mode == "grid":
            grid = self.grid_origins(blocks)
            return [grid[i] for i in rng.permutation(len(grid))]
        raise InvalidParameterError(f"unknown sampling {mode!r}; choose one of {', '.join(SAMPLING_MODES)}")
