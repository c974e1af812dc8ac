"""Training chips from an image raster and an aligned label raster, with a spatially separated validation split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.errors import InvalidParameterError, ModelContractError
from geoseg.io.normalize import Normalization
from geoseg.io.read import RasterSource, open_dataset, reflect_pad

IGNORE_INDEX = 255


@dataclass(frozen=True)
class BlockSplit:
    """The raster cut into square blocks; each block is train or validation (no pixel leaks across)."""

    block: int
    train: list[tuple[int, int]]  # block (row, col) origins in pixels
    val: list[tuple[int, int]]


def block_split(shape: tuple[int, int], block: int, val_fraction: float, seed: int) -> BlockSplit:
    """Assign whole blocks to validation at random (seeded); at least one block each when possible."""
    if not 0 <= val_fraction < 1:
        raise InvalidParameterError(f"val_fraction must be in [0, 1), got {val_fraction}")
    h, w = shape
    origins = [(r, c) for r in range(0, max(h - block, 0) + 1, block) for c in range(0, max(w - block, 0) + 1, block)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(origins))
    n_val = int(round(val_fraction * len(origins)))
    if val_fraction > 0 and len(origins) > 1:
        n_val = min(max(n_val, 1), len(origins) - 1)
    val = [origins[i] for i in sorted(order[:n_val])]
    train = [origins[i] for i in sorted(order[n_val:])]
    return BlockSplit(block, train, val)


class LabelRaster:
    """Windowed reads of an integer label raster aligned with the image; nodata/out-of-range -> IGNORE_INDEX."""

    def __init__(self, path: str, image: RasterSource, num_classes: int) -> None:
        self.path = path
        ds = open_dataset(path)
        self._ds = ds
        if (ds.height, ds.width) != image.shape:
            ds.close()
            raise ModelContractError(
                f"label raster {path} is {ds.height}x{ds.width} but the image is {image.height}x{image.width}; "
                f"labels must be on the image grid (rasterize or resample them onto it)"
            )
        if image.crs and ds.crs and ds.crs != image.crs:
            ds.close()
            raise ModelContractError(f"label raster CRS {ds.crs} differs from image CRS {image.crs}; reproject it")
        self.nodata = ds.nodata
        self.num_classes = num_classes

    def read(self, window: Window) -> np.ndarray:
        lab = self._ds.read(1, window=window).astype(np.int64)
        bad = (lab < 0) | (lab >= self.num_classes)
        if self.nodata is not None:
            bad |= lab == self.nodata
        lab[bad] = IGNORE_INDEX
        return lab

    def class_ids(self, max_pixels: int = 4_000_000) -> np.ndarray:
        """Distinct label values (sampled by decimated read for big rasters)."""
        ds = self._ds
        step = max(1, int(np.sqrt(ds.width * ds.height / max_pixels)))
        arr = ds.read(
            1,
            out_shape=(max(1, ds.height // step), max(1, ds.width // step)),
            resampling=rasterio.enums.Resampling.nearest,
        )
        vals = np.unique(arr)
        if self.nodata is not None:
            vals = vals[vals != self.nodata]
        return vals

    def close(self) -> None:
        self._ds.close()


class ChipReader:
    """Reads normalized (image, label) chips; invalid image pixels get the ignore label."""

    def __init__(self, image: RasterSource, labels: LabelRaster, norm: Normalization, chip: int) -> None:
        self.image, self.labels, self.norm, self.chip = image, labels, norm, chip

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

    def random_origins(self, blocks: list[tuple[int, int]], block: int, n: int, rng: np.random.Generator) -> list:
        """``n`` random chip origins, each chip inside one of ``blocks``."""
        if not blocks:
            return []
        out = []
        for k in rng.integers(0, len(blocks), n):
            r0, c0 = blocks[k]
            bh = min(block, self.image.height - r0)
            bw = min(block, self.image.width - c0)
            r = r0 + int(rng.integers(0, max(bh - self.chip, 0) + 1))
            c = c0 + int(rng.integers(0, max(bw - self.chip, 0) + 1))
            out.append((r, c))
        return out

    def grid_origins(self, blocks: list[tuple[int, int]], block: int) -> list[tuple[int, int]]:
        """Non-overlapping chips covering each block (for validation)."""
        out = []
        for r0, c0 in blocks:
            bh = min(block, self.image.height - r0)
            bw = min(block, self.image.width - c0)
            for r in range(r0, r0 + bh, self.chip):
                for c in range(c0, c0 + bw, self.chip):
                    out.append((r, c))
        return out
