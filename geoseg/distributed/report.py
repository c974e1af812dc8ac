"""Accuracy of scene mosaics against truth rasters, and per-worker throughput."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.metrics import ConfusionMatrix, SegmentationReport


@dataclass
class WorkerStats:
    """What one Dask worker computed: tasks, output pixels and busy seconds."""

    address: str
    tasks: int = 0
    pixels: int = 0
    seconds: float = 0.0

    @property
    def mpix_per_s(self) -> float:
        return self.pixels / 1e6 / self.seconds if self.seconds > 0 else float("nan")


def scene_report(
    prediction: str | os.PathLike[str], truth: str | os.PathLike[str], classes: Sequence[str]
) -> SegmentationReport:
    """Per-class scores of a class mosaic against truth (geoseg.evaluate when present, else a same-grid stream)."""
    try:
        from geoseg.evaluate import evaluate
    except ImportError:
        return _stream_same_grid(prediction, truth, classes)
    return evaluate(prediction, truth, classes=list(classes))


def _stream_same_grid(
    prediction: str | os.PathLike[str], truth: str | os.PathLike[str], classes: Sequence[str], window: int = 1024
) -> SegmentationReport:
    import rasterio
    from rasterio.windows import Window

    from geoseg.errors import InvalidParameterError

    cm = ConfusionMatrix(len(classes))
    with rasterio.open(prediction) as p, rasterio.open(truth) as t:
        if (p.height, p.width) != (t.height, t.width):
            raise InvalidParameterError(f"truth {truth} is {t.height}x{t.width}, prediction {p.height}x{p.width}")
        for r in range(0, p.height, window):
            for c in range(0, p.width, window):
                win = Window(c, r, min(window, p.width - c), min(window, p.height - r))
                pa, ta = p.read(1, window=win), t.read(1, window=win)
                valid = np.ones(pa.shape, bool)
                if p.nodata is not None:
                    valid &= pa != p.nodata
                if t.nodata is not None:
                    valid &= ta != t.nodata
                cm.update(pa, ta, valid)
    return cm.report(classes)


def combined_report(reports: Sequence[SegmentationReport], classes: Sequence[str]) -> SegmentationReport | None:
    """All scenes together: the sum of their confusion matrices."""
    if not reports:
        return None
    n = len(classes)
    total = np.zeros((n, n), np.int64)
    for r in reports:
        m = np.asarray(r.matrix)
        k = min(n, m.shape[0])
        total[:k, :k] += m[:k, :k]
    return SegmentationReport.from_matrix(total, classes)


__all__ = ["WorkerStats", "combined_report", "scene_report"]
