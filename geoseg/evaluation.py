"""Streaming evaluation of a class raster against ground truth (raster or polygons). No torch.

The prediction grid drives everything: it is read window by window; raster truth on another grid is warped onto it
with nearest-neighbour resampling (WarpedVRT, window by window); polygon truth is rasterized per window. Only a
``classes x classes`` confusion matrix (plus per-class support areas) is kept in memory.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoseg.errors import (
    GridMismatchWarning,
    InputNotFoundError,
    InvalidParameterError,
    NoOverlapError,
    NotGeoreferencedWarning,
    UnknownClassError,
)
from geoseg.io.gdal_cache import WindowedReads, bounded_gdal_cache
from geoseg.io.labels import PolygonLabels, is_vector, read_polygons, to_crs
from geoseg.io.read import iter_windows, open_dataset, read_masked
from geoseg.io.tags import read_class_names
from geoseg.metrics import ConfusionMatrix, SegmentationReport
from geoseg.progress import ProgressCallback, report_progress


def _georeferenced(ds: Any) -> bool:
    return ds.crs is not None or ds.transform != Affine.identity()


def _pixel_area_m2_rows(transform: Affine, crs: Any, row0: int, nrows: int) -> np.ndarray | float:
    """Area of one pixel in m²: a constant for projected CRSs, per row for geographic ones, NaN without CRS."""
    if crs is None:
        return float("nan")
    from pyproj import CRS

    pcrs = CRS.from_user_input(crs)
    pixel = abs(transform.a * transform.e - transform.b * transform.d)
    if not pcrs.is_geographic:
        factor = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0
        return pixel * factor**2
    geod = pcrs.get_geod()
    if geod is None:  # a geographic CRS always has an ellipsoid; be safe
        return float("nan")
    out = np.empty(nrows)
    for i in range(nrows):
        corners = [
            transform @ (0, row0 + i),
            transform @ (1, row0 + i),
            transform @ (1, row0 + i + 1),
            transform @ (0, row0 + i + 1),
        ]
        lons, lats = zip(*corners)
        out[i] = abs(geod.polygon_area_perimeter(lons, lats)[0])
    return out


def _resolve_classes(classes: Sequence[str] | int | None, pred: Any) -> list[str] | None:
    if classes is None:
        return read_class_names(pred)
    if isinstance(classes, int):
        if classes < 1:
            raise InvalidParameterError(f"classes must be >= 1 or a list of names, got {classes}")
        return [str(i) for i in range(classes)]
    names = [str(c) for c in classes]
    if not names:
        raise InvalidParameterError("classes is empty; pass the class names (index = class id) or their number")
    return names


class _RasterTruth:
    def __init__(self, path: Any, pred: Any) -> None:
        self.ds = open_dataset(path)
        self.reader = self.ds
        self.path = path
        same_shape = (self.ds.height, self.ds.width) == (pred.height, pred.width)
        if not _georeferenced(self.ds) and same_shape:
            if _georeferenced(pred):
                warnings.warn(
                    f"truth {path} has no georeference; it has the prediction's shape, so it is taken as "
                    f"pixel-aligned with it",
                    NotGeoreferencedWarning,
                    stacklevel=3,
                )
            return
        if self.ds.crs == pred.crs and self.ds.transform == pred.transform and same_shape:
            return
        if not _georeferenced(self.ds) or not _georeferenced(pred):
            raise NoOverlapError(
                f"cannot align truth {path} ({self.ds.width}x{self.ds.height}) with the prediction "
                f"({pred.width}x{pred.height}): one of them has no georeference and their shapes differ"
            )
        from rasterio.warp import transform_bounds

        src_crs = self.ds.crs or pred.crs
        b = transform_bounds(src_crs, pred.crs, *self.ds.bounds) if pred.crs else tuple(self.ds.bounds)
        pb = pred.bounds
        if b[0] >= pb[2] or b[2] <= pb[0] or b[1] >= pb[3] or b[3] <= pb[1]:
            raise NoOverlapError(
                f"truth {path} (bounds {tuple(round(v, 3) for v in b)}) does not overlap the prediction "
                f"(bounds {tuple(round(v, 3) for v in pb)}) in {pred.crs}; check both cover the same area and CRS"
            )
        warnings.warn(
            f"truth {path} is on another grid ({self.ds.crs}, {self.ds.width}x{self.ds.height}) than the prediction "
            f"({pred.crs}, {pred.width}x{pred.height}); resampling it with nearest neighbour onto the prediction grid",
            GridMismatchWarning,
            stacklevel=3,
        )
        self.reader = WarpedVRT(
            self.ds,
            crs=pred.crs,
            transform=pred.transform,
            width=pred.width,
            height=pred.height,
            resampling=Resampling.nearest,
            add_alpha=self.ds.nodata is None,
            src_crs=src_crs,
        )

    def read(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        return read_masked(self.reader, win)

    def close(self) -> None:
        if self.reader is not self.ds:
            self.reader.close()
        self.ds.close()


class _VectorTruth:
    """Label polygons rasterized per window of the prediction grid; uncovered pixels are ``background`` or left
    out."""

    def __init__(
        self,
        truth: Any,
        pred: Any,
        field: str | None,
        names: list[str] | None,
        background: int | None,
        id_field: str | None = None,
    ):
        self.polygons = PolygonLabels(
            truth, crs=pred.crs, transform=pred.transform, class_field=field, classes=names, id_field=id_field
        )
        self.background = background

    def read(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        ids, covered = self.polygons.rasterize(win)
        if self.background is None:
            return ids, covered
        return np.where(covered, ids, self.background), np.ones(covered.shape, dtype=bool)

    def close(self) -> None:
        pass


class _Aoi:
    def __init__(self, aoi: Any, pred: Any) -> None:
        gdf = to_crs(read_polygons(aoi, what="area of interest"), pred.crs)
        if len(gdf) == 0:
            raise NoOverlapError(f"area of interest {aoi} holds no geometry")
        xmin, ymin, xmax, ymax = gdf.total_bounds
        pb = pred.bounds
        if xmin >= pb.right or xmax <= pb.left or ymin >= pb.top or ymax <= pb.bottom:
            raise NoOverlapError(
                f"area of interest {aoi} (bounds {tuple(round(float(v), 3) for v in gdf.total_bounds)}) does not "
                f"overlap the prediction (bounds {tuple(round(v, 3) for v in pb)}) in {pred.crs}"
            )
        self.geoms = gdf.geometry.values
        self.pred = pred

    def mask(self, win: Window) -> np.ndarray:
        t = window_transform(win, self.pred.transform)
        shape = (int(win.height), int(win.width))
        return rasterio.features.geometry_mask(self.geoms, out_shape=shape, transform=t, invert=True)


def evaluate(
    prediction: str | os.PathLike[str],
    truth: Any,
    *,
    classes: Sequence[str] | int | None = None,
    ignore_index: int | None = None,
    aoi: Any = None,
    truth_class_field: str | None = None,
    background: int | None = None,
    window: int = 1024,
    progress: ProgressCallback | None = None,
    truth_id_field: str | None = None,
) -> SegmentationReport:
    """Compare a class raster with ground truth, window by window, and return a :class:`SegmentationReport`.

    * ``truth``: a class raster (warped with nearest neighbour onto the prediction grid when grids differ, with a
      :class:`~geoseg.errors.GridMismatchWarning`) or label polygons (GeoPackage/GeoJSON/Shapefile/FlatGeobuf/
      GeoParquet path or a GeoDataFrame) rasterized per window after reprojection to the prediction CRS.
    * ``classes``: class names (index = id) or their number; default: names stored on the prediction by geoseg,
      else the ids seen. Truth ids outside the classes raise :class:`~geoseg.errors.UnknownClassError`.
    * ``ignore_index``: a truth id left out of the scores. Nodata in either raster is always left out.
    * ``aoi``: polygons (path or GeoDataFrame) restricting the evaluation.
    * ``truth_class_field``: attribute of label polygons holding class ids or names (default: the first of
      :data:`~geoseg.io.labels.CLASS_FIELD_CANDIDATES` present); read by :class:`geoseg.io.labels.PolygonLabels`,
      like training labels.
    * ``truth_id_field``: attribute of label polygons holding the class ids of a ``truth_class_field`` of names.
    * ``background``: class id for pixels no label polygon covers (default: left out).

    Raises:
        InvalidParameterError: a bad option (window, classes), or a prediction that does not hold class ids.
        InputNotFoundError, NotARasterError: the prediction, truth or area of interest cannot be opened.
        UnknownClassError: truth or prediction ids outside the classes, label names not among the classes, or label
            polygons without a class attribute.
        NoOverlapError: the inputs do not overlap or share no valid pixel.
        CancelledError: ``progress`` asked to stop.
    """
    if window < 1:
        raise InvalidParameterError(f"window must be >= 1, got {window}")
    return _evaluate(
        prediction, truth, classes, ignore_index, aoi, truth_class_field, background, window, progress, truth_id_field
    )


def _evaluate(
    prediction: Any,
    truth: Any,
    classes: Sequence[str] | int | None,
    ignore_index: int | None,
    aoi: Any,
    truth_class_field: str | None,
    background: int | None,
    window: int,
    progress: ProgressCallback | None,
    truth_id_field: str | None = None,
) -> SegmentationReport:
    pred = open_dataset(prediction)
    truth_src: _RasterTruth | _VectorTruth | None = None
    try:
        if np.dtype(pred.dtypes[0]).kind not in "uif":
            raise InvalidParameterError(f"prediction {prediction} has dtype {pred.dtypes[0]}; expected class ids")
        names = _resolve_classes(classes, pred)
        if is_vector(truth):
            truth_src = _VectorTruth(truth, pred, truth_class_field, names, background, truth_id_field)
        else:
            if not hasattr(truth, "geometry") and not Path(str(truth)).exists():
                raise InputNotFoundError(f"truth not found: {truth}; check the path (relative to {os.getcwd()})")
            truth_src = _RasterTruth(truth, pred)
        aoi_src = _Aoi(aoi, pred) if aoi is not None else None
        readers = [pred] + ([truth_src.ds] if isinstance(truth_src, _RasterTruth) else [])
        with bounded_gdal_cache(*(WindowedReads.of(d, (window, window)) for d in readers)):
            return _accumulate(pred, truth_src, names, ignore_index, aoi_src, window, progress, prediction, truth)
    finally:
        if truth_src is not None:
            truth_src.close()
        pred.close()


def _accumulate(
    pred: Any,
    truth_src: Any,
    names: list[str] | None,
    ignore_index: int | None,
    aoi: _Aoi | None,
    window: int,
    progress: ProgressCallback | None,
    prediction: Any,
    truth: Any,
) -> SegmentationReport:
    cm = ConfusionMatrix(len(names) if names is not None else None, track_unknown=True)
    counts = {"pred_nodata": 0, "truth_nodata": 0, "outside_aoi": 0, "ignored": 0}
    H, W = pred.height, pred.width
    total_windows = math.ceil(H / window) * math.ceil(W / window)
    report_progress(progress, 0, total_windows, "evaluate")
    const_m2 = _pixel_area_m2_rows(pred.transform, pred.crs, 0, 1)
    geographic = isinstance(const_m2, np.ndarray)
    for done, win in enumerate(iter_windows(H, W, window), start=1):
        p, valid = read_masked(pred, win)
        counts["pred_nodata"] += int((~valid).sum())
        t, tvalid = truth_src.read(win)
        counts["truth_nodata"] += int((valid & ~tvalid).sum())
        valid &= tvalid
        if aoi is not None:
            inside = aoi.mask(win)
            counts["outside_aoi"] += int((valid & ~inside).sum())
            valid &= inside
        if ignore_index is not None:
            ign = t == ignore_index
            counts["ignored"] += int((valid & ign).sum())
            valid &= ~ign
        area = None
        if geographic:
            rows = np.asarray(_pixel_area_m2_rows(pred.transform, pred.crs, int(win.row_off), int(win.height)))
            area = np.broadcast_to(rows[:, None], valid.shape)
        cm.update(p, t, valid, truth_area=area)
        report_progress(progress, done, total_windows, "evaluate")
    n = cm.num_classes
    _raise_unknown(cm.unknown_truth, cm.unknown_pred, names, n, ignore_index, truth, prediction)
    matrix = cm.matrix
    total = int(matrix.sum())
    if total == 0:
        raise NoOverlapError(
            f"no pixel is valid in both prediction {prediction} and truth {truth}: prediction nodata "
            f"{counts['pred_nodata']} px, truth nodata/uncovered {counts['truth_nodata']} px, outside the area of "
            f"interest {counts['outside_aoi']} px, ignored {counts['ignored']} px (of {H * W}); check the inputs "
            f"cover the same area and are not empty"
        )
    rep = cm.report(names if names is not None else [str(i) for i in range(n)])
    pixel_area = abs(pred.transform.a * pred.transform.e - pred.transform.b * pred.transform.d)
    support = matrix.sum(1).astype(np.float64)
    if geographic:
        m2 = cm.truth_area
    elif isinstance(const_m2, float) and not math.isnan(const_m2):
        m2 = support * const_m2
    else:
        m2 = None
    rep.set_support_area(support * pixel_area, m2)
    rep.extra.update(
        {
            "prediction": str(prediction),
            "truth": str(truth) if not hasattr(truth, "geometry") else "<GeoDataFrame>",
            "crs": pred.crs.to_string() if pred.crs else None,
            "pixel_area": pixel_area,
            "ignore_index": ignore_index,
            "excluded_pixels": counts,
        }
    )
    return rep


def _raise_unknown(
    unknown_truth: dict[int, int],
    unknown_pred: dict[int, int],
    names: list[str] | None,
    n: int,
    ignore_index: int | None,
    truth: Any,
    prediction: Any,
) -> None:
    known = f"{n} classes 0..{n - 1}" + (f" ({', '.join(names[:10])}{', ...' if n > 10 else ''})" if names else "")
    if unknown_truth:
        ids = sorted(unknown_truth)
        px = sum(unknown_truth.values())
        hint = f"ignore_index={ids[0]} (CLI: --ignore-index {ids[0]})" if len(ids) == 1 else "remapping the labels"
        raise UnknownClassError(
            f"truth {truth} holds class ids {ids} ({px} px) that are not among the {known}; pass classes listing "
            f"every class, set {hint}, or mark them as nodata in the labels"
            + (f" (ignore_index is {ignore_index})" if ignore_index is not None else "")
        )
    if unknown_pred:
        ids = sorted(unknown_pred)
        raise UnknownClassError(
            f"prediction {prediction} holds class ids {ids} ({sum(unknown_pred.values())} px) that are not among the "
            f"{known}; pass the classes the model was trained with (CLI: --classes)"
        )
