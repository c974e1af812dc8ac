"""Label polygons on a raster grid: read them, find the class attribute, map class names to ids, reproject to the
grid's CRS and rasterize them window by window. No torch; needs the ``vector`` extra (geopandas, pyogrio, pyarrow).

Used by training (:mod:`geoseg.train.labels`), evaluation (:mod:`geoseg.evaluation`) and, through them, the QGIS
plugin, so a polygon file means the same classes everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoseg.errors import InputNotFoundError, InvalidParameterError, MissingDependencyError, UnknownClassError

#: file extensions read as polygons (everything else is opened as a raster)
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet", ".geoparquet", ".gml", ".kml")
#: extensions read as GeoParquet with pyarrow (GDAL's Parquet driver is missing from most pyogrio/rasterio wheels)
GEOPARQUET_SUFFIXES = (".parquet", ".geoparquet")
#: attribute names tried, in order, when no class attribute is given
CLASS_FIELD_CANDIDATES = ("class_id", "class", "label", "class_name", "classname", "category", "value")

LabelsLike = str | os.PathLike[str] | Any  # a path, or a GeoDataFrame


def is_vector(labels: LabelsLike) -> bool:
    """Whether ``labels`` are polygons: a GeoDataFrame, or a path with one of :data:`VECTOR_SUFFIXES`."""
    if hasattr(labels, "geometry"):
        return True
    return Path(str(labels)).suffix.lower() in VECTOR_SUFFIXES


def read_polygons(source: LabelsLike, *, what: str = "label polygons") -> Any:
    """A GeoDataFrame of the features of ``source`` (a path or a GeoDataFrame) with a non-empty geometry.

    Paths are read with pyogrio (GeoPackage, GeoJSON, Shapefile, FlatGeobuf, GML, KML, any OGR format), GeoParquet
    (``.parquet``/``.geoparquet``) with pyarrow through :func:`geopandas.read_parquet`.

    Raises:
        InputNotFoundError: the path does not exist.
        InvalidParameterError: the file cannot be read as polygons.
        MissingDependencyError: geopandas is not installed.
    """
    try:
        import geopandas as gpd
    except ImportError as exc:
        raise MissingDependencyError(f"{what} need geopandas: pip install 'geoseg[vector]'") from exc
    gdf: Any
    if hasattr(source, "geometry"):
        gdf = source
    else:
        path = Path(str(source))
        if not path.exists():
            raise InputNotFoundError(f"{what} not found: {path}; check the path (relative to {os.getcwd()})")
        try:
            if path.suffix.lower() in GEOPARQUET_SUFFIXES:
                gdf = gpd.read_parquet(path)
            else:
                gdf = gpd.read_file(path, engine="pyogrio")
        except Exception as exc:
            raise InvalidParameterError(f"cannot read {what} {path} as polygons: {exc}") from exc
    return gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]


def to_crs(gdf: Any, crs: Any) -> Any:
    """``gdf`` in ``crs``; unchanged when either CRS is unknown (then both are taken to be the same)."""
    if crs is None or gdf.crs is None or gdf.crs == crs:
        return gdf
    return gdf.to_crs(crs)


def find_class_field(gdf: Any, field: str | None, *, what: str) -> str:
    """The attribute holding the classes: ``field``, or the first of :data:`CLASS_FIELD_CANDIDATES` present.

    Raises:
        UnknownClassError: ``field`` is not an attribute, or none of the candidates is.
    """
    columns = [c for c in gdf.columns if c != gdf.geometry.name]
    available = ", ".join(map(str, columns)) or "(none)"
    if field is None:
        found = next((c for c in CLASS_FIELD_CANDIDATES if c in columns), None)
        if found is None:
            raise UnknownClassError(
                f"{what} have no class attribute (tried {', '.join(CLASS_FIELD_CANDIDATES)}); available fields: "
                f"{available}; pass the class field (class_field=... in training, truth_class_field=... in evaluation; "
                f"CLI: --class-field)"
            )
        return found
    if field not in columns:
        raise UnknownClassError(f"{what} have no attribute {field!r}; available fields: {available}")
    return field


def class_ids(
    values: Any, *, classes: Sequence[str] | None, names_define_classes: bool, field: str, what: str
) -> tuple[np.ndarray, list[str] | None]:
    """Class ids (int64, one per polygon) of the attribute ``values`` (a pandas Series), and the class names.

    Integer values (numbers, or text holding integers) are ids; anything else is a class name mapped to its index
    in ``classes``. Without ``classes``, names become the sorted distinct names when ``names_define_classes``
    (training: the labels define the classes, numbered alphabetically); otherwise names are an error (evaluation:
    the ids must be the prediction's). Returns the names: ``classes`` as given, the derived names, or None. A layer
    with an id attribute next to the names keeps its own ids with :func:`ids_from_id_field` instead.

    Raises:
        UnknownClassError: a polygon has no value, a name is not among ``classes``, or names cannot be mapped.
    """
    names = [str(c) for c in classes] if classes is not None else None
    missing = values.isna()
    if missing.any():
        raise UnknownClassError(f"{what}: {int(missing.sum())} polygons have no {field!r} value; fix the labels")
    try:
        as_float = values.astype(float).to_numpy()
        numeric = bool(np.all(np.isfinite(as_float) & (as_float == np.round(as_float))))
    except (TypeError, ValueError):
        numeric = False
    if numeric:
        return as_float.astype(np.int64), names
    text = values.astype(str)
    if names is None:
        if not names_define_classes:
            shown = ", ".join(sorted(set(text))[:8])
            raise UnknownClassError(
                f"attribute {field!r} of {what} holds class names ({shown}); pass classes=[...] (CLI: --classes) to "
                f"map names to ids"
            )
        names = sorted(set(text))
    lookup = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(text) - set(lookup))
    if unknown:
        raise UnknownClassError(
            f"attribute {field!r} of {what} holds class names {unknown[:10]} that are not in the classes {names}; a "
            f"name not among the classes has no id: add it to the classes or fix the labels"
        )
    return text.map(lookup).to_numpy(np.int64), names


def ids_from_id_field(
    names: Any, ids: Any, *, classes: Sequence[str] | None, name_field: str, id_field: str, what: str
) -> tuple[np.ndarray, list[str]]:
    """Class ids (int64, one per polygon) from the integer attribute ``ids`` (a pandas Series, e.g. ``class_id``),
    and the class names, index = id: ``classes`` when given, else the ``names`` attribute (e.g. ``class_name``) of
    the polygons of each id (ids no polygon has are named ``class_<id>``).

    This is how a layer that holds both an id and a name per polygon keeps its own ids; without an id field, names
    are numbered by ``classes`` or alphabetically (:func:`class_ids`).

    Raises:
        UnknownClassError: a polygon has no id or name, an id is not a non-negative integer, or one id has two names
            (or one name two ids).
    """
    for values, field in ((ids, id_field), (names, name_field)):
        missing = values.isna()
        if missing.any():
            raise UnknownClassError(f"{what}: {int(missing.sum())} polygons have no {field!r} value; fix the labels")
    try:
        as_float = ids.astype(float).to_numpy()
        integral = bool(np.all(np.isfinite(as_float) & (as_float == np.round(as_float)) & (as_float >= 0)))
    except (TypeError, ValueError):
        integral = False
    if not integral:
        shown = ", ".join(sorted(set(ids.astype(str)))[:8])
        raise UnknownClassError(
            f"the id field {id_field!r} of {what} must hold class ids (integers 0, 1, 2, ...); it holds {shown}"
        )
    out = as_float.astype(np.int64)
    text = names.astype(str).to_numpy()
    by_id: dict[int, set[str]] = {}
    by_name: dict[str, set[int]] = {}
    for i, n in zip(out.tolist(), text.tolist(), strict=True):
        by_id.setdefault(i, set()).add(n)
        by_name.setdefault(n, set()).add(i)
    clash = [f"id {i}: {sorted(ns)}" for i, ns in sorted(by_id.items()) if len(ns) > 1]
    clash += [f"{n!r}: ids {sorted(ids_)}" for n, ids_ in sorted(by_name.items()) if len(ids_) > 1]
    if clash:
        raise UnknownClassError(
            f"{what}: {id_field!r} and {name_field!r} disagree ({'; '.join(clash[:6])}); each class id needs one "
            f"name and each name one id"
        )
    if classes is not None:
        return out, [str(c) for c in classes]
    top = max(by_id) if by_id else -1
    return out, [next(iter(by_id[i])) if i in by_id else f"class_{i}" for i in range(top + 1)]


class PolygonLabels:
    """Label polygons with one class id each, on the grid of a raster (its CRS and transform).

    Args:
        source: a vector file (see :func:`read_polygons`) or a GeoDataFrame.
        crs, transform: the grid the polygons are rasterized on; polygons are reprojected to ``crs`` when both CRSs
            are known.
        class_field: the attribute holding class ids or names (default: the first of
            :data:`CLASS_FIELD_CANDIDATES` present).
        classes: class names, index = id; names in the attribute are mapped through them.
        names_define_classes: without ``classes``, whether the sorted distinct names become the classes (see
            :func:`class_ids`).
        id_field: an attribute of integer class ids: each polygon gets its id from it, and a ``class_field`` of names
            names those ids (:func:`ids_from_id_field`) instead of being numbered alphabetically.

    Attributes:
        field: the class attribute used; id_field: the id attribute used, or None. ids: the class id of each polygon
            (int64), in file order.
        classes: the class names (as given, derived from the names, or None).

    Raises:
        InputNotFoundError, InvalidParameterError, MissingDependencyError: see :func:`read_polygons`.
        UnknownClassError: see :func:`find_class_field` and :func:`class_ids`.
    """

    def __init__(
        self,
        source: LabelsLike,
        *,
        crs: Any,
        transform: Affine,
        class_field: str | None = None,
        classes: Sequence[str] | None = None,
        names_define_classes: bool = False,
        id_field: str | None = None,
        what: str = "label polygons",
    ) -> None:
        self.what = what if hasattr(source, "geometry") else f"{what} {source}"
        gdf = read_polygons(source, what=what)
        self.field = find_class_field(gdf, class_field, what=self.what)
        self.classes: list[str] | None
        if id_field is not None:
            id_field = find_class_field(gdf, id_field, what=self.what)
            self.ids, self.classes = ids_from_id_field(
                gdf[self.field],
                gdf[id_field],
                classes=classes,
                name_field=self.field,
                id_field=id_field,
                what=self.what,
            )
        else:
            self.ids, self.classes = class_ids(
                gdf[self.field],
                classes=classes,
                names_define_classes=names_define_classes,
                field=self.field,
                what=self.what,
            )
        self.id_field = id_field
        gdf = to_crs(gdf, crs)
        self.geometries = gdf.geometry.to_numpy()
        self.transform = transform
        self._tree = gdf.sindex if len(gdf) else None

    def __len__(self) -> int:
        return len(self.ids)

    def rasterize(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Class ids ``(rows, cols)`` (int64) of ``window`` of the grid and where a polygon covers it (bool).

        A pixel belongs to a polygon when its centre lies inside (GDAL's rule); where polygons overlap, the later one
        in file order wins. Uncovered pixels hold 0 in the ids.
        """
        from rasterio.features import rasterize
        from shapely.geometry import box

        h, w = int(window.height), int(window.width)
        t = window_transform(window, self.transform)
        hits = np.empty(0, dtype=np.intp)
        if self._tree is not None:
            x0, y0 = t @ (0, 0)
            x1, y1 = t @ (w, h)
            hits = np.sort(self._tree.query(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))))
        if hits.size == 0:
            return np.zeros((h, w), np.int64), np.zeros((h, w), bool)
        # burn 1 + the position among the hits, so any class id (negative, huge) survives and coverage is exact
        shapes = zip(self.geometries[hits], range(1, hits.size + 1))
        burned = rasterize(shapes, out_shape=(h, w), transform=t, fill=0, dtype="int32")
        lut = np.concatenate([[0], self.ids[hits]])
        return lut[burned], burned > 0


__all__ = [
    "CLASS_FIELD_CANDIDATES",
    "VECTOR_SUFFIXES",
    "PolygonLabels",
    "class_ids",
    "find_class_field",
    "ids_from_id_field",
    "is_vector",
    "read_polygons",
    "to_crs",
]
