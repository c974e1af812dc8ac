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
from affine import Affine
from rasterio.windows import Window

from geoseg.errors import (
    InputNotFoundError,
    InvalidParameterError,
    NoOverlapError,
    UnknownClassError,
)
from geoseg.hints import CLASS_LIST, option, placeholder
from geoseg.io.align import RasterOnGrid
from geoseg.io.classes import check_class_ids, check_class_raster, check_integral, check_nodata_is_no_class
from geoseg.io.gdal_cache import WindowedReads, bounded_gdal_cache
from geoseg.io.georef import Georeference
from geoseg.io.labels import AreaOfInterest, PolygonLabels, is_vector
from geoseg.io.read import iter_windows, nodata_fits, open_dataset, read_masked
from geoseg.io.tags import read_class_names
from geoseg.metrics import ConfusionMatrix, SegmentationReport
from geoseg.options import check_class_names, check_numbers, check_requires, plain_arguments
from geoseg.progress import ProgressCallback, report_progress


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


def _mean_pixel_area(georef: Georeference, height: int, width: int) -> tuple[float, float]:
    """Mean pixel area of a grid placed by GCPs or RPCs, in map units² and m² (NaN when unknown): the area of its
    footprint (edges sampled every 1/64 of a side, mapped through the transformer) over its pixel count."""
    from shapely.geometry import Polygon

    k = np.linspace(0.0, 1.0, 65)
    cols = np.concatenate([k * width, np.full(65, width), (1 - k) * width, np.zeros(65)])
    rows = np.concatenate([np.zeros(65), k * height, np.full(65, height), (1 - k) * height])
    xs, ys = georef.pixel_to_map(cols, rows)
    ring = Polygon(np.column_stack([xs, ys]))
    n = float(height * width)
    crs = georef.map_crs
    if crs is None:
        return ring.area / n, float("nan")
    from pyproj import CRS

    pcrs = CRS.from_user_input(crs)
    if pcrs.is_geographic:
        geod = pcrs.get_geod()
        m2 = abs(geod.geometry_area_perimeter(ring)[0]) if geod is not None else float("nan")
    else:
        factor = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0
        m2 = ring.area * factor**2
    return ring.area / n, m2 / n


def _resolve_classes(classes: Sequence[str] | int | None, pred: Any) -> list[str] | None:
    stored = read_class_names(pred)
    if classes is None:
        return stored
    if isinstance(classes, int):
        if classes < 1:
            raise InvalidParameterError(f"classes must be >= 1 or a list of names, got {classes}")
        return [str(i) for i in range(classes)]
    names = [str(c) for c in classes]
    if not names:
        raise InvalidParameterError("classes is empty; pass the class names (index = class id) or their number")
    if stored is not None and names[: len(stored)] != stored:
        raise InvalidParameterError(
            f"{option('classes', CLASS_LIST)} {','.join(names)!r} contradicts the class names stored on the "
            f"prediction {getattr(pred, 'name', '')} ({','.join(stored)}, index = class id): the map's ids mean those "
            f"classes; drop {option('classes', CLASS_LIST)} to use them"
        )
    return names


class _RasterTruth:
    """Raster truth on the prediction grid (:class:`geoseg.io.align.RasterOnGrid`: the grid the training labels use
    too), checked to be a class raster."""

    def __init__(self, path: Any, pred: Any, names: list[str] | None, target: str = "the prediction") -> None:
        self.on_grid = RasterOnGrid(
            path, georef=Georeference.of(pred), shape=(pred.height, pred.width), what="truth", target=target
        )
        self.ds = self.on_grid.ds
        self.path = path
        self.to_prediction_ids: np.ndarray | None = None
        try:
            check_class_raster(self.ds, path=path, what="truth", names=names)
            self.to_prediction_ids = _id_map(read_class_names(self.ds), names, path)
        except BaseException:
            self.on_grid.close()
            raise

    def read(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        t, valid = self.on_grid.read(win)
        check_integral(t, valid, path=self.path, what="truth")
        lut = self.to_prediction_ids
        if lut is not None:  # the truth numbers its classes otherwise: compare classes by name
            known = valid & (t >= 0) & (t < len(lut))
            t = np.array(t, copy=True)
            t[known] = lut[t[known].astype(np.int64)]
        return t, valid

    def close(self) -> None:
        self.on_grid.close()


def _id_map(truth_names: list[str] | None, names: list[str] | None, path: Any) -> np.ndarray | None:
    """For truth that stores class names other than the prediction's: the prediction's id of each truth id (a
    lookup table), so that both are compared by class name; None when both number the classes alike (or either
    stores no names: ids are then compared as they are).

    Raises:
        InvalidParameterError: the truth names a class the prediction does not have.
    """
    if truth_names is None or names is None or truth_names == names[: len(truth_names)]:
        return None
    if all(n in (str(i), f"class_{i}") for i, n in enumerate(truth_names)):
        return None  # placeholder names ("0", "class_0", ...): the truth only numbers its classes
    missing = [n for n in truth_names if n not in names]
    if missing:
        raise InvalidParameterError(
            f"truth {path} stores class names the prediction does not have ({','.join(missing)}; truth: "
            f"{','.join(truth_names)}; prediction: {','.join(names)}), so the two cannot be compared class by class; "
            f"use truth labelled with the prediction's classes"
        )
    return np.asarray([names.index(n) for n in truth_names], dtype=np.int64)


class _VectorTruth:
    """Label polygons rasterized per window of the prediction grid; uncovered pixels are ``background`` or left
    out."""

    def __init__(
        self, truth: Any, pred: Any, field: str | None, names: list[str] | None, background: int | None,
        layer: str | None,
        id_field: str | None = None,
        target: str = "the prediction",
    ) -> None:  # fmt: skip
        self.polygons = PolygonLabels(
            truth, georef=Georeference.of(pred), class_field=field, classes=names, layer=layer,
            layer_option=option("truth_layer", placeholder("NAME")), what="truth polygons",
            id_field=id_field, field_option="truth_class_field", shape=(pred.height, pred.width), target=target,
        )  # fmt: skip
        self.background = background

    def read(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        ids, covered = self.polygons.rasterize(win)
        if self.background is None:
            return ids, covered
        return np.where(covered, ids, self.background), np.ones(covered.shape, dtype=bool)

    def close(self) -> None:
        pass


def _aoi(aoi: Any, pred: Any, layer: str | None) -> AreaOfInterest:
    georef = Georeference.of(pred)
    area = AreaOfInterest(aoi, georef, layer=layer, layer_option=option("aoi_layer", placeholder("NAME")))
    if area.bounds is None:
        raise NoOverlapError(
            f"area of interest {aoi} holds no geometry (no polygon, or only empty ones); draw the area to score in it, "
            f"or drop {option('aoi')} to score every pixel"
        )
    if not all(np.isfinite(v) for v in area.bounds):
        declared = area.own_crs.to_string() if area.own_crs is not None else "none"
        raise NoOverlapError(
            f"area of interest {aoi} cannot be placed on the prediction's grid: its coordinates are not valid in the "
            f"CRS it declares ({declared}; a GeoJSON file without a CRS is read as longitude/latitude); save it with "
            f"the CRS it was drawn in (ogr2ogr -a_srs EPSG:XXXX fixed.gpkg {aoi})"
        )
    # the grid's four corners (rotated and GCP grids included); pixels are counted exactly while evaluating
    xs, ys = georef.pixel_to_map(np.array([0, pred.width, pred.width, 0]), np.array([0, 0, pred.height, pred.height]))
    xmin, ymin, xmax, ymax = area.bounds
    overlaps = not (xmin >= xs.max() or xmax <= xs.min() or ymin >= ys.max() or ymax <= ys.min())
    if not overlaps:
        fix = "check both cover the same area in the right CRS"
        if area.own_crs is None and georef.map_crs is not None:
            fix = (
                f"it has no CRS, so its coordinates were taken to be in {georef.map_crs}: set the CRS it was drawn in "
                f"(ogr2ogr -a_srs EPSG:XXXX fixed.gpkg {aoi}, or Set CRS in QGIS)"
            )
        raise NoOverlapError(
            f"area of interest {aoi} (bounds {tuple(round(v, 3) for v in area.bounds)}) covers no pixel of the "
            f"prediction ({georef.describe()}); {fix}"
        )
    return area


def _check_ignore_index(ignore_index: int | None, truth_src: Any, truth: Any) -> None:
    """Refuse an ``ignore_index`` no truth pixel can hold: outside the truth raster's dtype (-5 in uint8 labels), or
    negative for polygon truth, whose ids are class ids 0, 1, ... Such a value would ignore nothing, silently.

    Raises:
        InvalidParameterError: naming the value, what the truth can hold and the fix.
    """
    if ignore_index is None:
        return
    if isinstance(truth_src, _RasterTruth):
        dtype = np.dtype(truth_src.ds.dtypes[0])
        if nodata_fits(ignore_index, dtype):
            return
        span = f"{np.iinfo(dtype).min}..{np.iinfo(dtype).max}" if dtype.kind in "iu" else str(dtype)
        raise InvalidParameterError(
            f"{option('ignore_index', ignore_index)} cannot occur in truth {truth}: it holds {dtype} values "
            f"({span}), so no pixel would be ignored; give the truth value to leave out (e.g. its 'unlabelled' code) "
            f"or drop {option('ignore_index')}"
        )
    if ignore_index < 0:
        raise InvalidParameterError(
            f"{option('ignore_index', ignore_index)} cannot occur in polygon truth {truth}: its pixels hold class "
            f"ids 0, 1, 2, ... (or {option('background')}), so no pixel would be ignored; give the class id to leave "
            f"out or drop {option('ignore_index')}"
        )


def check_truth(
    truth: Any,
    grid: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    truth_class_field: str | None = None,
    truth_layer: str | None = None,
    truth_id_field: str | None = None,
    background: int | None = None,
) -> None:
    """Check, before a class map is made on the grid of raster ``grid`` (e.g. the image to predict), that ``truth``
    can be scored against it: what :func:`evaluate` checks when it opens the truth (a readable class raster or
    polygons with a class attribute, ``classes`` mapping names to ids), and that the truth overlaps the grid (bounds
    in a common CRS; polygons: at least one touches it, else the reason: empty layer, no CRS, elsewhere). So
    ``geoseg predict --truth`` refuses such truth before predicting.

    Raises:
        the errors of :func:`evaluate` about the truth (InputNotFoundError, NotARasterError, UnsupportedRasterError,
        UnknownClassError, InvalidParameterError, NoValidDataError, NoOverlapError).
    """
    ds = open_dataset(grid)
    src: _RasterTruth | _VectorTruth | None = None
    target = f"the image {grid} (the class map's grid)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # evaluate gives them when it runs: once
            names = list(classes) if classes is not None else None
            if is_vector(truth):
                src = _VectorTruth(
                    truth, ds, truth_class_field, names, background, truth_layer, truth_id_field, target=target
                )
            else:
                if not Path(str(truth)).exists():
                    raise InputNotFoundError(f"truth not found: {truth}; check the path (relative to {os.getcwd()})")
                src = _RasterTruth(truth, ds, names, target=target)
    finally:
        if src is not None:
            src.close()
        ds.close()


@plain_arguments
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
    truth_layer: str | None = None,
    aoi_layer: str | None = None,
    truth_id_field: str | None = None,
    model_classes: bool = False,
) -> SegmentationReport:
    """Compare a class raster with ground truth, window by window, and return a :class:`SegmentationReport`.

    * ``truth``: a class raster (warped with nearest neighbour onto the prediction grid when grids differ, with a
      :class:`~geoseg.errors.GridMismatchWarning`) or label polygons (GeoPackage/GeoJSON/Shapefile/FlatGeobuf/
      GeoParquet path or a GeoDataFrame) rasterized per window after reprojection to the prediction CRS.
    * ``classes``: class names (index = id) or their number; default: names stored on the prediction by geoseg,
      else the ids seen. Truth ids outside the classes raise :class:`~geoseg.errors.UnknownClassError`.
    * ``ignore_index``: a truth id left out of the scores. Nodata in either raster is always left out.
    * ``model_classes``: the classes are those of the model that made the prediction (``geoseg predict --truth``,
      ``geoseg batch --truth-dir``), so they cannot be changed: truth ids beyond them are to be marked nodata in
      the truth, or scored with a model trained on those classes (the advice of the error says so).
    * ``aoi``: polygons (path or GeoDataFrame) restricting the evaluation.
    * ``truth_class_field``: attribute of label polygons holding class ids or names (default: the first of
      :data:`~geoseg.io.labels.CLASS_FIELD_CANDIDATES` present); read by :class:`geoseg.io.labels.PolygonLabels`,
      like training labels.
    * ``truth_id_field``: attribute of label polygons holding the class ids of a ``truth_class_field`` of names.
    * ``background``: class id for pixels no label polygon covers (default: left out).
    * ``truth_layer``, ``aoi_layer``: the layer to read from a polygon file with several layers (required then).

    The prediction and raster truth must be class rasters (:func:`geoseg.io.classes.check_class_raster`: one band of
    whole numbers, not a probability or image raster). A prediction georeferenced only by GCPs or RPCs is scored
    against polygons mapped through GDAL's transformer for them, and against raster truth on the same grid.

    Raises:
        InvalidParameterError: a bad option (window, classes), a polygon file with several layers and no layer
            chosen, or a prediction that does not hold class ids.
        UnsupportedRasterError: the prediction or raster truth is not a class raster (several bands, non-integer
            values, continuous data).
        InputNotFoundError, NotARasterError: the prediction, truth or area of interest cannot be opened.
        UnknownClassError: truth or prediction ids outside the classes, label names not among the classes, or label
            polygons without a class attribute.
        NoOverlapError: the inputs do not overlap or share no valid pixel.
        CancelledError: ``progress`` asked to stop.
    """
    check_numbers({"window": window, "ignore_index": ignore_index, "background": background})
    if classes is not None and not isinstance(classes, int):
        check_class_names(classes)
    if truth is not None and not is_vector(truth):
        for name, value, why in (
            ("truth_class_field", truth_class_field, "the class attribute"),
            ("background", background, "the class of pixels outside"),
            ("truth_layer", truth_layer, "the layer"),
        ):
            if value is not None:
                raise InvalidParameterError(
                    f"{option(name)} names {why} of label polygons, but the truth {truth} is a class raster (its "
                    f"values are the class ids); drop {option(name)}"
                )
    check_requires({"aoi_layer": aoi_layer, "aoi": aoi}, {"aoi_layer": ("aoi", "it chooses a layer of the AOI file")})
    return _evaluate(
        prediction, truth, classes, ignore_index, aoi, truth_class_field, background, window, progress,
        truth_layer, aoi_layer, truth_id_field, model_classes,
    )  # fmt: skip


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
    truth_layer: str | None = None,
    aoi_layer: str | None = None,
    truth_id_field: str | None = None,
    model_classes: bool = False,
) -> SegmentationReport:
    pred = open_dataset(prediction)
    truth_src: _RasterTruth | _VectorTruth | None = None
    try:
        if np.dtype(pred.dtypes[0]).kind not in "uif":
            raise InvalidParameterError(f"prediction {prediction} has dtype {pred.dtypes[0]}; expected class ids")
        names = _resolve_classes(classes, pred)
        values = check_class_raster(pred, path=prediction, what="prediction", names=names)
        # the value sample, before a full pass; ids the sample misses are counted while scoring (_raise_unknown)
        check_class_ids(values, path=prediction, what="prediction", names=names)
        check_nodata_is_no_class(pred, values, path=prediction, what="prediction", names=names)
        if is_vector(truth):
            truth_src = _VectorTruth(truth, pred, truth_class_field, names, background, truth_layer, truth_id_field)
        else:
            if not hasattr(truth, "geometry") and not Path(str(truth)).exists():
                raise InputNotFoundError(f"truth not found: {truth}; check the path (relative to {os.getcwd()})")
            truth_src = _RasterTruth(truth, pred, names)
        _check_ignore_index(ignore_index, truth_src, truth)
        aoi_src = _aoi(aoi, pred, aoi_layer) if aoi is not None else None
        readers = [pred] + ([truth_src.ds] if isinstance(truth_src, _RasterTruth) else [])
        with bounded_gdal_cache(*(WindowedReads.of(d, (window, window)) for d in readers)):
            return _accumulate(
                pred, truth_src, names, ignore_index, aoi_src, window, progress, prediction, truth, model_classes
            )
    finally:
        if truth_src is not None:
            truth_src.close()
        pred.close()


def _accumulate(
    pred: Any,
    truth_src: Any,
    names: list[str] | None,
    ignore_index: int | None,
    aoi: AreaOfInterest | None,
    window: int,
    progress: ProgressCallback | None,
    prediction: Any,
    truth: Any,
    model_classes: bool = False,
) -> SegmentationReport:
    cm = ConfusionMatrix(len(names) if names is not None else None, track_unknown=True)
    counts = {"pred_nodata": 0, "truth_nodata": 0, "outside_aoi": 0, "ignored": 0}
    H, W = pred.height, pred.width
    total_windows = math.ceil(H / window) * math.ceil(W / window)
    report_progress(progress, 0, total_windows, "evaluate")
    georef = Georeference.of(pred)
    affine = georef.kind in (None, "transform")
    if affine:
        const_m2 = _pixel_area_m2_rows(pred.transform, pred.crs, 0, 1)
        pixel_area = abs(pred.transform.a * pred.transform.e - pred.transform.b * pred.transform.d)
    else:  # GCPs/RPCs: the mean pixel of the grid's footprint
        pixel_area, const_m2 = _mean_pixel_area(georef, H, W)
    geographic = isinstance(const_m2, np.ndarray)
    for done, win in enumerate(iter_windows(H, W, window), start=1):
        p, valid = read_masked(pred, win)
        check_integral(p, valid, path=prediction, what="prediction")
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
    _raise_unknown(cm.unknown_truth, cm.unknown_pred, names, n, ignore_index, truth, prediction, model_classes)
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
            "crs": georef.map_crs.to_string() if georef.map_crs else None,
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
    model_classes: bool = False,
) -> None:
    known = f"{n} classes 0..{n - 1}" + (f" ({', '.join(names[:10])}{', ...' if n > 10 else ''})" if names else "")
    if unknown_truth:
        ids = sorted(unknown_truth)
        px = sum(unknown_truth.values())
        where = f"truth {truth} holds class ids {ids} ({px} px) that are not among the {known}"
        if model_classes:  # the model's classes: nothing to pass, only the truth or the model can change
            raise UnknownClassError(
                f"{where} the model predicts; mark those pixels as nodata in the truth, or use a model trained with "
                f"those classes"
            )
        hint = f"set {option('ignore_index', ids[0])}" if len(ids) == 1 else "remap the labels"
        raise UnknownClassError(
            f"{where}; pass {option('classes', CLASS_LIST)} listing every class, {hint}, or mark them as nodata in "
            f"the labels" + (f" (ignore_index is {ignore_index})" if ignore_index is not None else "")
        )
    if unknown_pred:
        ids = sorted(unknown_pred)
        raise UnknownClassError(
            f"prediction {prediction} holds class ids {ids} ({sum(unknown_pred.values())} px) that are not among the "
            f"{known}; pass the classes the model was trained with ({option('classes')})"
        )
