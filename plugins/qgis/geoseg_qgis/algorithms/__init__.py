"""The geoseg Processing algorithms, one per module."""

from __future__ import annotations

from .evaluate import EvaluateSegmentation
from .segment import SegmentRaster
from .train import TrainModel
from .vectorize import VectorizeClasses

ALGORITHMS = (SegmentRaster, VectorizeClasses, EvaluateSegmentation, TrainModel)

__all__ = ["ALGORITHMS", "EvaluateSegmentation", "SegmentRaster", "TrainModel", "VectorizeClasses"]
