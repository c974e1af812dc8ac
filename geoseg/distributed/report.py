"""Accuracy of scene mosaics against truth rasters, and per-worker throughput."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

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
    """Per-class scores of a class mosaic against truth (a raster or label polygons), by
    :func:`geoseg.evaluation.evaluate`.

    Raises:
        UnknownClassError, NoOverlapError, InputNotFoundError: see :func:`geoseg.evaluation.evaluate`.
    """
    from geoseg.evaluation import evaluate

    return evaluate(prediction, truth, classes=list(classes), model_classes=True)


def combined_report(reports: Sequence[SegmentationReport], classes: Sequence[str]) -> SegmentationReport | None:
    """All scenes together: the sum of their confusion matrices."""
    if not reports:
        return None
    total = ConfusionMatrix(len(classes))
    for r in reports:
        total.add_matrix(r.matrix)
    return total.report(classes)


__all__ = ["WorkerStats", "combined_report", "scene_report"]
