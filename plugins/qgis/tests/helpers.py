"""Small helpers for the plugin tests (GDAL readers, a recording feedback)."""

from __future__ import annotations

import time

import numpy as np
from osgeo import gdal, ogr, osr
from qgis.core import QgsProcessingFeedback


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps log lines (with their time) and progress values; optionally cancels once progress passes ``cancel_at``
    percent, or once a log line contains ``cancel_on``."""

    def __init__(self, cancel_at: float | None = None, cancel_on: str | None = None) -> None:
        super().__init__()
        self.infos: list[str] = []
        self.warnings: list[str] = []
        self.times: list[float] = []
        self.progress: list[float] = []
        self.cancel_at = cancel_at
        self.cancel_on = cancel_on
        self.cancelled_at: float | None = None
        self.progressChanged.connect(self._on_progress)

    def _on_progress(self, value: float) -> None:
        self.progress.append(value)
        if self.cancel_at is not None and value > self.cancel_at:
            self.cancel()

    def cancel(self) -> None:
        if self.cancelled_at is None:
            self.cancelled_at = time.monotonic()
        super().cancel()

    def pushInfo(self, info: str) -> None:  # noqa: N802
        self.infos.append(info)
        self.times.append(time.monotonic())
        super().pushInfo(info)
        if self.cancel_on is not None and self.cancel_on in info:
            self.cancel()

    def pushWarning(self, warning: str) -> None:  # noqa: N802
        self.warnings.append(warning)
        super().pushWarning(warning)

    def when(self, text: str) -> float:
        """When the first log line containing ``text`` came."""
        return next(t for t, line in zip(self.times, self.infos) if text in line)

    @property
    def text(self) -> str:
        return "\n".join(self.infos)


def raster(path: str) -> tuple[np.ndarray, str, tuple[int, int], int]:
    """(band 1 values, CRS WKT, (width, height), band count)."""
    ds = gdal.Open(path)
    assert ds is not None, path
    arr = ds.GetRasterBand(1).ReadAsArray()
    return arr, ds.GetProjection(), (ds.RasterXSize, ds.RasterYSize), ds.RasterCount


def same_crs(wkt_a: str, wkt_b: str) -> bool:
    a, b = osr.SpatialReference(), osr.SpatialReference()
    a.ImportFromWkt(wkt_a)
    b.ImportFromWkt(wkt_b)
    return bool(a.IsSame(b))


def polygons(path: str) -> tuple[list[dict], str]:
    """(attribute dicts with area, layer CRS WKT) of the first layer of a vector file."""
    ds = ogr.Open(path)
    assert ds is not None, path
    layer = ds.GetLayer(0)
    rows = []
    for f in layer:
        d = f.items()
        g = f.GetGeometryRef()
        d["_area"] = g.GetArea() if g is not None else 0.0
        d["_type"] = g.GetGeometryName() if g is not None else None
        rows.append(d)
    srs = layer.GetSpatialRef()
    return rows, srs.ExportToWkt() if srs is not None else ""
