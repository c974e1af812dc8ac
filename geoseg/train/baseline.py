"""Pixel-wise random forest baseline: the floor a segmentation network has to beat on the same training pixels.

A scikit-learn ``RandomForestClassifier`` (100 trees by default) is fitted on band values of labelled pixels drawn
uniformly at random (20,000 by default) from the pixels a network may train on, and maps a raster window by window
into a class raster with the same grid, nodata (255) and class metadata as :func:`geoseg.inference.predict_raster`,
so :func:`geoseg.evaluation.evaluate` scores both with one convention. Needs scikit-learn (``pip install
'geoseg[baseline]'``). Reference: Breiman, "Random Forests", Machine Learning 45 (2001); the usual pixel classifier
for multispectral and hyperspectral land cover.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from geoseg.errors import InvalidParameterError, MissingDependencyError
from geoseg.io.bands import BandSpec
from geoseg.io.read import RasterSource
from geoseg.io.write import BlockWriter, atomic_path, check_output_path, geotiff_profile, write_class_metadata
from geoseg.metrics import ConfusionMatrix, SegmentationReport
from geoseg.options import plain_arguments
from geoseg.train.labels import IGNORE_INDEX

BASELINES = ("rf",)
FOREST_TREES = 100
FOREST_PIXELS = 20_000


def require_sklearn() -> Any:
    """scikit-learn's RandomForestClassifier, or a MissingDependencyError saying how to install it."""
    try:
        from sklearn.ensemble import RandomForestClassifier
    except ImportError as exc:
        raise MissingDependencyError(
            "the random forest baseline needs scikit-learn: pip install 'geoseg[baseline]'"
        ) from exc
    return RandomForestClassifier


def _sklearn_forest(trees: int, seed: int, threads: int | None) -> Any:
    return require_sklearn()(n_estimators=trees, random_state=seed, n_jobs=threads or 1)


def grid_windows(shape: tuple[int, int], size: int = 512) -> list[Window]:
    """Non-overlapping windows of at most ``size`` px covering a ``(rows, cols)`` raster."""
    h, w = shape
    return [Window(c, r, min(size, w - c), min(size, h - r)) for r in range(0, h, size) for c in range(0, w, size)]


def sample_labelled_pixels(
    image: RasterSource, labels: Any, windows: Sequence[Window], n: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` labelled, valid pixels drawn uniformly without replacement from ``windows``.

    ``labels`` is a label source on the image grid (``read(window)`` -> class ids, :data:`IGNORE_INDEX` where
    unknown). Returns band values ``(pixels, bands)`` float32 and class ids ``(pixels,)`` int64. Labels are read twice
    (a count, then the draw) and the image once per window that holds a drawn pixel: memory stays at one window.
    """
    rng = np.random.default_rng(seed)
    counts = np.array([int((labels.read(w) != IGNORE_INDEX).sum()) for w in windows], np.int64)
    total = int(counts.sum())
    if total == 0:
        raise InvalidParameterError("no labelled pixel to train the random forest on (all labels ignored or nodata)")
    n = min(n, total)
    # which of the `total` labelled pixels are drawn, as ranks within each window
    drawn = np.sort(rng.choice(total, size=n, replace=False))
    starts = np.concatenate([[0], np.cumsum(counts)])
    xs, ys = [], []
    for k, win in enumerate(windows):
        ranks = drawn[(drawn >= starts[k]) & (drawn < starts[k + 1])] - starts[k]
        if not ranks.size:
            continue
        y = labels.read(win)
        rows, cols = np.nonzero(y != IGNORE_INDEX)
        rows, cols = rows[ranks], cols[ranks]
        data, valid = image.read(win)
        ok = valid[rows, cols] & np.isfinite(data[:, rows, cols]).all(0)
        xs.append(data[:, rows[ok], cols[ok]].T)
        ys.append(y[rows[ok], cols[ok]])
    if not xs or not sum(len(v) for v in ys):
        raise InvalidParameterError("every labelled pixel drawn for the random forest is image nodata")
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def fit_forest(
    pixels: np.ndarray, classes: np.ndarray, *, trees: int = FOREST_TREES, seed: int = 0, threads: int | None = None
) -> Any:
    """A fitted ``RandomForestClassifier`` on ``pixels`` (n, bands) and their class ids (n,)."""
    forest = _sklearn_forest(trees, seed, threads)
    forest.fit(pixels, classes)
    return forest


def forest_classes(forest: Any, data: np.ndarray) -> np.ndarray:
    """Class ids (rows, cols) int64 for a (bands, rows, cols) array of band values."""
    b, h, w = data.shape
    flat = np.nan_to_num(data.reshape(b, -1).T, nan=0.0, posinf=0.0, neginf=0.0)
    return forest.predict(flat).reshape(h, w)


def score_forest(
    forest: Any, image: RasterSource, labels: Any, windows: Sequence[Window], names: Sequence[str]
) -> SegmentationReport:
    """Confusion-matrix report of the forest on the labelled valid pixels of ``windows``."""
    cm = ConfusionMatrix(len(names))
    for win in windows:
        y = labels.read(win)
        keep = y != IGNORE_INDEX
        if not keep.any():
            continue
        data, valid = image.read(win)
        keep &= valid
        cm.update(forest_classes(forest, data)[keep], y[keep])
    return cm.report(list(names))


@dataclass
class ForestResult:
    """A forest baseline map and how it was made."""

    output: Path
    pixels: int
    fit_seconds: float
    seconds: float
    forest: Any


def predict_forest(
    forest: Any,
    image: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    classes: Sequence[str],
    colors: Sequence[Sequence[int]] | None = None,
    bands: BandSpec = None,
    window: int = 512,
    overwrite: bool = False,
) -> Path:
    """Map ``image`` with a fitted forest into a uint8 class raster (nodata 255, class names and colors stored)."""
    dst_path = check_output_path(dst, overwrite=overwrite, inputs=[image])
    with RasterSource(image, bands=bands) as src, atomic_path(dst_path, overwrite=overwrite) as tmp:
        profile = geotiff_profile(
            width=src.width, height=src.height, count=1, dtype="uint8", crs=src.crs, transform=src.transform, nodata=255
        )
        writer = BlockWriter(tmp, profile)
        try:
            write_class_metadata(writer.dataset, classes=list(classes), colors=colors, nodata=255)
            writer.dataset.update_tags(geoseg_model="random_forest", geoseg_bands=",".join(src.band_names))
            for win in grid_windows(src.shape, window):
                data, valid = src.read(win)
                out = forest_classes(forest, data).astype(np.uint8)
                out[~valid] = 255
                writer.write(int(win.row_off), int(win.col_off), out[None])
        except BaseException:
            writer.abort()
            raise
        writer.close()
    return dst_path


@plain_arguments
def forest_baseline(
    image: str | os.PathLike[str],
    labels: Any,
    dst: str | os.PathLike[str],
    *,
    classes: Sequence[str],
    bands: BandSpec = None,
    pixels: int = FOREST_PIXELS,
    trees: int = FOREST_TREES,
    seed: int = 0,
    threads: int | None = None,
    overwrite: bool = False,
) -> ForestResult:
    """Fit a forest on ``pixels`` labelled pixels drawn from the label source ``labels`` (on ``image``'s grid, e.g.
    restricted to a training area) and map the whole image into ``dst``."""
    t0 = time.perf_counter()
    with RasterSource(image, bands=bands) as src:
        x, y = sample_labelled_pixels(src, labels, grid_windows(src.shape), pixels, seed=seed)
    t1 = time.perf_counter()
    forest = fit_forest(x, y, trees=trees, seed=seed, threads=threads)
    fit = time.perf_counter() - t1
    out = predict_forest(forest, image, dst, classes=classes, bands=bands, overwrite=overwrite)
    return ForestResult(out, len(y), fit + (t1 - t0), time.perf_counter() - t0, forest)
