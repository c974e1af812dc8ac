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
from geoseg.io.read import open_dataset
from geoseg.metrics import SegmentationReport
from geoseg.progress import ProgressCallback, report
from geoseg.vectorize import bounded_gdal_cache, class_names_from_tags

#: extensions read as polygon ground truth (everything else is opened as a raster)
VECTOR_EXTENSIONS = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet", ".geoparquet", ".gml", ".kml")
#: attribute names tried, in order, when ``truth_class_field`` is not given
CLASS_FIELD_CANDIDATES = ("class_id", "class", "label", "class_name", "classname", "category", "value")


def _georeferenced(ds: Any) -> bool:
    return ds.crs is not None or ds.transform != Affine.identity()


def _is_vector(truth: Any) -> bool:
    if hasattr(truth, "geometry"):
        return True
    return Path(str(truth)).suffix.lower() in VECTOR_EXTENSIONS


def _read_vector(path: Any, what: str) -> Any:
    import geopandas as gpd

    if hasattr(path, "geometry"):
        return path
    p = Path(str(path))
    if not p.exists():
        raise InputNotFoundError(f"{what} not found: {p}; check the path (relative to {os.getcwd()})")
    try:
        if p.suffix.lower() in (".parquet", ".geoparquet"):
            return gpd.read_parquet(p)
        return gpd.read_file(p)
    except Exception as exc:
        raise InvalidParameterError(f"cannot read {what} {p} as polygons: {exc}") from exc


def _to_crs(gdf: Any, crs: Any, what: str) -> Any:
    if crs is None or gdf.crs is None:
        return gdf
    return gdf.to_crs(crs) if gdf.crs != crs else gdf


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
    out = np.empty(nrows)
    for i in range(nrows):
        corners = [transform @ (0, row0 + i), transform @ (1, row0 + i), transform @ (1, row0 + i + 1),
                   transform @ (0, row0 + i + 1)]
        lons, lats = zip(*corners)
        out[i] = abs(geod.polygon_area_perimeter(lons, lats)[0])
    return out


def _resolve_classes(classes: Sequence[str] | int | None, pred: Any) -> list[str] | None:
    if classes is None:
        return class_names_from_tags(pred)
    if isinstance(classes, int):
        if classes < 1:
            raise InvalidParameterError(f"classes must be >= 1 or a list of names, got {classes}")
        return [str(i) for i in range(classes)]
    names = [str(c) for c in classes]
    if not names:
        raise InvalidParameterError("classes is empty; pass the class names (index = class id) or their number")
    return names


def _vector_class_ids(gdf: Any, field: str | None, names: list[str] | None, path: Any) -> tuple[np.ndarray, str]:
    """The class id of each label polygon, from an integer or class-name attribute."""
    columns = [c for c in gdf.columns if c != gdf.geometry.name]
    if field is None:
        field = next((c for c in CLASS_FIELD_CANDIDATES if c in columns), None)
        if field is None:
            raise UnknownClassError(
                f"label polygons {path} have no class attribute (tried {', '.join(CLASS_FIELD_CANDIDATES)}); "
                f"available fields: {', '.join(columns) or '(none)'}; pass truth_class_field= (CLI: --class-field)"
            )
    elif field not in columns:
        raise UnknownClassError(
            f"label polygons {path} have no attribute {field!r}; available fields: {', '.join(columns) or '(none)'}"
        )
    values = gdf[field]
    if values.isna().any():
        raise UnknownClassError(f"{int(values.isna().sum())} label polygons in {path} have no {field!r} value")
    try:
        as_float = values.astype(float).to_numpy()
        numeric = bool(np.all(as_float == np.round(as_float)))
    except (TypeError, ValueError):
        numeric = False
    if numeric:
        return as_float.astype(np.int64), field
    if names is None:
        raise UnknownClassError(
            f"label attribute {field!r} of {path} holds class names ({', '.join(sorted(map(str, set(values)))[:8])}); "
            f"pass classes=[...] (CLI: --classes) to map names to ids"
        )
    lookup = {n: i for i, n in enumerate(names)}
    unknown = sorted({str(v) for v in values} - set(lookup))
    if unknown:
        raise UnknownClassError(
            f"label attribute {field!r} of {path} holds class names {unknown} that are not in the classes "
            f"{names}; add them to classes or fix the labels"
        )
    return np.array([lookup[str(v)] for v in values], dtype=np.int64), field


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
            self.ds, crs=pred.crs, transform=pred.transform, width=pred.width, height=pred.height,
            resampling=Resampling.nearest, add_alpha=self.ds.nodata is None,
            src_crs=src_crs,
        )

    def read(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        data = self.reader.read(1, window=win)
        valid = self.reader.read_masks(1, window=win) > 0
        if data.dtype.kind == "f":
            valid &= np.isfinite(data)
        return data, valid

    def close(self) -> None:
        if self.reader is not self.ds:
            self.reader.close()
        self.ds.close()


class _VectorTruth:
    def __init__(self, truth: Any, pred: Any, field: str | None, names: list[str] | None, background: int | None):
        gdf = _read_vector(truth, "label polygons")
        gdf = gdf[~gdf.geometry.is_empty & gdf.geometry.notna()]
        self.ids, self.field = _vector_class_ids(gdf, field, names, truth)
        gdf = _to_crs(gdf, pred.crs, "label polygons")
        self.geoms = gdf.geometry.values
        self.tree = gdf.sindex
        self.background = background
        self.dtype = np.int64 if (self.ids.size == 0 or self.ids.min() < 0 or self.ids.max() > 2**31 - 2) else np.int32
        self.pred = pred

    def read(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        h, w = int(win.height), int(win.width)
        from shapely.geometry import box

        t = window_transform(win, self.pred.transform)
        x0, y0 = t @ (0, 0)
        x1, y1 = t @ (w, h)
        idx = self.tree.query(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        fill = -1 if self.background is None else self.background
        if idx.size:
            idx = np.sort(idx)  # file order: later polygons win where labels overlap
            shapes = zip(self.geoms[idx], self.ids[idx].tolist())
            out = rasterio.features.rasterize(shapes, out_shape=(h, w), transform=t, fill=fill, dtype="int32")
        else:
            out = np.full((h, w), fill, dtype=np.int32)
        valid = out != -1 if self.background is None else np.ones((h, w), dtype=bool)
        return out, valid

    def close(self) -> None:
        pass


class _Aoi:
    def __init__(self, aoi: Any, pred: Any) -> None:
        gdf = _to_crs(_read_vector(aoi, "area of interest"), pred.crs, "area of interest")
        gdf = gdf[~gdf.geometry.is_empty & gdf.geometry.notna()]
        if len(gdf) == 0:
            raise NoOverlapError(f"area of interest {aoi} holds no geometry")
        xmin, ymin, xmax, ymax = gdf.total_bounds
        pb = pred.bounds
        # bounds of a south-up grid (e.g. the identity transform of an image without georeference) have top < bottom
        left, right = sorted((pb.left, pb.right))
        bottom, top = sorted((pb.bottom, pb.top))
        if xmin >= right or xmax <= left or ymin >= top or ymax <= bottom:
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
      :data:`CLASS_FIELD_CANDIDATES` present).
    * ``background``: class id for pixels no label polygon covers (default: left out).
    """
    if window < 1:
        raise InvalidParameterError(f"window must be >= 1, got {window}")
    return _evaluate(prediction, truth, classes, ignore_index, aoi, truth_class_field, background, window, progress)


def _evaluate(
    prediction: Any, truth: Any, classes: Sequence[str] | int | None, ignore_index: int | None, aoi: Any,
    truth_class_field: str | None, background: int | None, window: int, progress: ProgressCallback | None,
) -> SegmentationReport:
    pred = open_dataset(prediction)
    truth_src: _RasterTruth | _VectorTruth | None = None
    try:
        if np.dtype(pred.dtypes[0]).kind not in "uif":
            raise InvalidParameterError(f"prediction {prediction} has dtype {pred.dtypes[0]}; expected class ids")
        names = _resolve_classes(classes, pred)
        if _is_vector(truth):
            truth_src = _VectorTruth(truth, pred, truth_class_field, names, background)
        else:
            if not hasattr(truth, "geometry") and not Path(str(truth)).exists():
                raise InputNotFoundError(f"truth not found: {truth}; check the path (relative to {os.getcwd()})")
            truth_src = _RasterTruth(truth, pred)
        aoi_src = _Aoi(aoi, pred) if aoi is not None else None
        readers = [pred] + ([truth_src.ds] if isinstance(truth_src, _RasterTruth) else [])
        with bounded_gdal_cache(readers, window):
            return _accumulate(pred, truth_src, names, ignore_index, aoi_src, window, progress, prediction, truth)
    finally:
        if truth_src is not None:
            truth_src.close()
        pred.close()


def _accumulate(
    pred: Any, truth_src: Any, names: list[str] | None, ignore_index: int | None, aoi: _Aoi | None, window: int,
    progress: ProgressCallback | None, prediction: Any, truth: Any,
) -> SegmentationReport:
    n = len(names) if names is not None else 0
    grow = names is None
    matrix = np.zeros((n, n), dtype=np.int64)
    support_m2 = np.zeros(n)
    unknown_truth: dict[int, int] = {}
    unknown_pred: dict[int, int] = {}
    counts = {"pred_nodata": 0, "truth_nodata": 0, "outside_aoi": 0, "ignored": 0}
    H, W = pred.height, pred.width
    total_windows = math.ceil(H / window) * math.ceil(W / window)
    done = 0
    report(progress, 0, total_windows, "evaluate")
    const_m2 = _pixel_area_m2_rows(pred.transform, pred.crs, 0, 1)
    geographic = isinstance(const_m2, np.ndarray)
    for r0 in range(0, H, window):
        for c0 in range(0, W, window):
            win = Window(c0, r0, min(window, W - c0), min(window, H - r0))
            p = pred.read(1, window=win)
            valid = pred.read_masks(1, window=win) > 0
            if p.dtype.kind == "f":
                valid &= np.isfinite(p)
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
            pv = p[valid].astype(np.int64)
            tv = t[valid].astype(np.int64)
            if grow and pv.size:
                hi = int(max(pv.max(), tv.max())) + 1
                if hi > n:
                    matrix = np.pad(matrix, ((0, hi - n), (0, hi - n)))
                    support_m2 = np.pad(support_m2, (0, hi - n))
                    n = hi
            bad_t = (tv < 0) | (tv >= n)
            bad_p = (pv < 0) | (pv >= n)
            for arr, store in ((tv[bad_t], unknown_truth), (pv[bad_p], unknown_pred)):
                if arr.size:
                    ids, cnt = np.unique(arr, return_counts=True)
                    for i, c in zip(ids.tolist(), cnt.tolist()):
                        store[i] = store.get(i, 0) + c
            ok = ~(bad_t | bad_p)
            if n:
                matrix += np.bincount(tv[ok] * n + pv[ok], minlength=n * n).reshape(n, n)
                if geographic:
                    rows = np.nonzero(valid)[0][ok]
                    per_row = _pixel_area_m2_rows(pred.transform, pred.crs, r0, int(win.height))
                    support_m2 += np.bincount(tv[ok], weights=np.asarray(per_row)[rows], minlength=n)
            done += 1
            report(progress, done, total_windows, "evaluate")
    _raise_unknown(unknown_truth, unknown_pred, names, n, ignore_index, truth, prediction)
    total = int(matrix.sum())
    if total == 0:
        raise NoOverlapError(
            f"no pixel is valid in both prediction {prediction} and truth {truth}: prediction nodata "
            f"{counts['pred_nodata']} px, truth nodata/uncovered {counts['truth_nodata']} px, outside the area of "
            f"interest {counts['outside_aoi']} px, ignored {counts['ignored']} px (of {H * W}); check the inputs "
            f"cover the same area and are not empty"
        )
    rep = SegmentationReport.from_matrix(matrix, names if names is not None else [str(i) for i in range(n)])
    pixel_area = abs(pred.transform.a * pred.transform.e - pred.transform.b * pred.transform.d)
    support = matrix.sum(1).astype(np.float64)
    if geographic:
        m2 = support_m2
    elif isinstance(const_m2, float) and not math.isnan(const_m2):
        m2 = support * const_m2
    else:
        m2 = None
    rep.set_support_area(support * pixel_area, m2)
    rep.extra.update({
        "prediction": str(prediction),
        "truth": str(truth) if not hasattr(truth, "geometry") else "<GeoDataFrame>",
        "crs": pred.crs.to_string() if pred.crs else None,
        "pixel_area": pixel_area,
        "ignore_index": ignore_index,
        "excluded_pixels": counts,
    })
    return rep


def _raise_unknown(
    unknown_truth: dict[int, int], unknown_pred: dict[int, int], names: list[str] | None, n: int,
    ignore_index: int | None, truth: Any, prediction: Any,
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
