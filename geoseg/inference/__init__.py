"""Tiled, streamed prediction and stitching. Importing this package imports torch."""

from geoseg.inference.predict import PredictResult, predict_array, predict_raster
from geoseg.inference.stitch import STITCH_METHODS, make_stitcher

__all__ = ["STITCH_METHODS", "PredictResult", "make_stitcher", "predict_array", "predict_raster"]
