"""Label polygons on a raster grid: read them, find the class attribute, map class names to ids, reproject to the
grid's CRS and rasterize them window by window. No torch; needs the ``vector`` extra (geopandas, pyogrio, pyarrow).

Used by training (:mod:`geoseg.train.labels`), evaluation (:mod:`geoseg.evaluation`, ground truth and areas of
interest) and, through them, the QGIS plugin, so a polygon file means the same classes everywhere. A file with
several layers is refused unless the layer is chosen; windows of rotated, sheared or flipped grids are found from
all four corners of the full affine transform, and grids placed by GCPs or RPCs map the polygons through GDAL's
transformer for them (:class:`geoseg.io.georef.Georeference`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.windows import Window

from geoseg.errors import (
    InputNotFoundError,
    InvalidParameterError,
    MissingDependencyError,
    NoOverlapError,
    NoValidDataError,
    UnknownClassError,
)
from geoseg.hints import CLASS_LIST, option, placeholder
from geoseg.io.formats import VECTOR_INPUT_SUFFIXES
from geoseg.io.georef import Georeference
from geoseg.tiling import window_transform

#: file extensions read as polygons (everything else is opened as a raster)
VECTOR_SUFFIXES = VECTOR_INPUT_SUFFIXES
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


def read_polygons(
    source: LabelsLike, *, what: str = "label polygons", layer: str | None = None, layer_option: str = "layer="
) -> Any:
    """A GeoDataFrame of the features of ``source`` (a path or a GeoDataFrame) with a non-empty geometry.

    Paths are read with pyogrio (GeoPackage, GeoJSON, Shapefile, FlatGeobuf, GML, KML, any OGR format), GeoParquet
    (``.parquet``/``.geoparquet``) with pyarrow through :func:`geopandas.read_parquet`. A file with several layers
    (a GeoPackage holding fields and roads) is read only when ``layer`` names one: geoseg never takes the first.
    ``layer_option`` is how the caller's user chooses a layer (:func:`geoseg.hints.option`, e.g. ``--layer NAME``),
    for messages.

    Raises:
        InputNotFoundError: the path does not exist.
        InvalidParameterError: the file cannot be read as polygons, holds several layers and ``layer`` is None, or
            has no layer ``layer``.
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
                chosen = _choose_layer(path, layer, what=what, option=layer_option)
                gdf = gpd.read_file(path, engine="pyogrio", layer=chosen)
        except (InvalidParameterError, InputNotFoundError):
            raise
        except Exception as exc:
            raise InvalidParameterError(f"cannot read {what} {path} as polygons: {exc}") from exc
    return gdf[~gdf.geometry.isna() & ~gdf.geometry.is_empty]


def _choose_layer(path: Path, layer: str | None, *, what: str, option: str) -> str | None:
    """The layer of ``path`` to read: ``layer`` (checked), the only one, or an error listing them."""
    import pyogrio

    try:
        layers = [str(row[0]) for row in pyogrio.list_layers(path)]
    except Exception as exc:
        raise InvalidParameterError(f"cannot read {what} {path} as polygons: {exc}") from exc
    if layer is not None:
        if layer not in layers:
            raise InvalidParameterError(
                f"{what} {path} has no layer {layer!r}; its layers are {', '.join(map(repr, layers)) or '(none)'}"
            )
        return layer
    if len(layers) > 1:
        raise InvalidParameterError(
            f"{what} {path} holds {len(layers)} layers ({', '.join(map(repr, layers[:10]))}"
            f"{', ...' if len(layers) > 10 else ''}); choose one with {option}"
        )
    return layers[0] if layers else None


def to_crs(gdf: Any, crs: Any) -> Any:
    """``gdf`` in ``crs``; unchanged when either CRS is unknown (then both are taken to be the same)."""
    if crs is None or gdf.crs is None or gdf.crs == crs:
        return gdf
    return gdf.to_crs(crs)


def find_class_field(gdf: Any, field: str | None, *, what: str, field_option: str = "class_field") -> str:
    """The attribute holding the classes: ``field``, or the first of :data:`CLASS_FIELD_CANDIDATES` present.
    ``field_option`` is the caller's option that names it (for the message, :func:`geoseg.hints.option`).

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
                f"{available}; pass the class field ({option(field_option, placeholder('NAME'))})"
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
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    if is_numeric_dtype(values.dtype) and not is_bool_dtype(values.dtype):
        fractions = sorted({float(v) for v in values if not float(v).is_integer()})
        shown = ", ".join(f"{v:g}" for v in fractions[:5]) + (", ..." if len(fractions) > 5 else "")
        raise UnknownClassError(
            f"attribute {field!r} of {what} holds numbers that are not whole ({shown}); class ids are integers 0, 1, "
            f"2, ...: fix the values, or store class names as text"
        )
    text = values.astype(str)
    if names is None:
        if not names_define_classes:
            shown = ", ".join(sorted(set(text))[:8])
            raise UnknownClassError(
                f"attribute {field!r} of {what} holds class names ({shown}); pass {option('classes', CLASS_LIST)} to "
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


class GridPolygons:
    """Polygons on a raster grid, rasterized window by window.

    ``geometries`` are in the grid's map CRS (:attr:`Georeference.map_crs`). On an affine grid (north-up, rotated,
    sheared or flipped) they are rasterized in map coordinates with each window's transform, after a spatial-index
    query with the window's four corners; on a grid placed by GCPs or RPCs they are first mapped to pixel coordinates
    through GDAL's transformer (densified to about a pixel, so edges follow the mapping).
    """

    def __init__(self, geometries: Any, georef: Georeference) -> None:
        import shapely

        self.georef = georef
        geoms = np.asarray(geometries, dtype=object)
        self.pixel_space = georef.kind in ("gcps", "rpcs")
        if self.pixel_space and geoms.size:
            x, y = georef.pixel_to_map(np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]))
            step = float(min(np.hypot(x[1] - x[0], y[1] - y[0]), np.hypot(x[2] - x[0], y[2] - y[0])))
            if step > 0:
                geoms = shapely.segmentize(geoms, step)
            geoms = shapely.transform(geoms, lambda xy: np.column_stack(georef.map_to_pixel(xy[:, 0], xy[:, 1])))
        self.geometries = geoms
        self._tree = shapely.STRtree(geoms) if geoms.size else None

    def __len__(self) -> int:
        return int(self.geometries.size)

    def _window_box(self, window: Window) -> Any:
        from shapely.geometry import box

        r0, c0 = float(window.row_off), float(window.col_off)
        r1, c1 = r0 + float(window.height), c0 + float(window.width)
        if self.pixel_space:
            return box(c0, r0, c1, r1)
        xs, ys = self.georef.pixel_to_map(np.array([c0, c1, c1, c0]), np.array([r0, r0, r1, r1]))
        return box(xs.min(), ys.min(), xs.max(), ys.max())

    def burn(self, window: Window) -> np.ndarray:
        """``(rows, cols)`` int64: 0 where no polygon covers the pixel centre, else 1 + the index of the last polygon
        (in file order) that does (GDAL's rule: a pixel belongs to a polygon when its centre lies inside)."""
        from rasterio.features import rasterize

        h, w = int(window.height), int(window.width)
        hits = np.empty(0, dtype=np.intp)
        if self._tree is not None:
            hits = np.sort(self._tree.query(self._window_box(window)))
        if hits.size == 0:
            return np.zeros((h, w), np.int64)
        if self.pixel_space:
            t = Affine.translation(float(window.col_off), float(window.row_off))
        else:
            t = window_transform(window, self.georef.transform)
        # burn 1 + the position among the hits, so coverage is exact whatever the polygons' values
        burned = rasterize(zip(self.geometries[hits], range(1, hits.size + 1)), out_shape=(h, w), transform=t,
                           fill=0, dtype="int32")  # fmt: skip
        return np.concatenate([[0], hits + 1])[burned]


def _fmt_bounds(b: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in b) + ")"


def _check_covers(
    geometries: Any,
    own_crs: Any,
    grid: Georeference,
    shape: tuple[int, int],
    *,
    what: str,
    target: str,
    path: str = "FILE",
) -> None:
    """Refuse polygons (in the grid's map CRS) none of which touches the grid's footprint (its four corners mapped
    to the map), saying why: the polygons have no CRS (so their coordinates were taken as the grid's), the grid has
    none, or they lie elsewhere.

    Raises:
        NoOverlapError: naming both extents and the fix.
    """
    import shapely
    from shapely.geometry import Polygon

    height, width = shape
    xs, ys = grid.pixel_to_map(np.array([0.0, width, width, 0.0]), np.array([0.0, 0.0, height, height]))
    footprint = Polygon(np.column_stack([xs, ys]))
    geoms = np.asarray(geometries, dtype=object)
    finite = geoms[np.isfinite(shapely.bounds(geoms)).all(axis=1)] if geoms.size else geoms
    if finite.size and shapely.intersects(finite, footprint).any():
        return
    grid_crs = grid.map_crs
    mine = _fmt_bounds(shapely.total_bounds(finite)) if finite.size else "(not finite)"
    theirs = _fmt_bounds(footprint.bounds)
    if own_crs is None and grid_crs is not None:
        raise NoOverlapError(
            f"{what} have no CRS and their coordinates (bounds {mine}) do not fall on {target} (bounds {theirs} in "
            f"{grid_crs}): set the CRS they were drawn in (ogr2ogr -a_srs EPSG:XXXX fixed.gpkg {path}, or Set CRS in "
            f"QGIS), and geoseg reprojects them"
        )
    if grid_crs is None and own_crs is not None:
        raise NoOverlapError(
            f"{target} has no CRS, so {what} (in {own_crs}, bounds {mine}) cannot be placed on it: their coordinates "
            f"do not fall on its grid (bounds {theirs}); give it its CRS (gdal_edit -a_srs EPSG:XXXX)"
        )
    where = f" in {grid_crs}" if grid_crs is not None else ""
    raise NoOverlapError(
        f"{what} (bounds {mine}{where}) lie outside {target} (bounds {theirs}): no polygon touches it; check both "
        f"cover the same area and the polygons' CRS is the one they were drawn in"
    )


def _grid(georef: Georeference | None, crs: Any, transform: Affine | None) -> Georeference:
    if georef is not None:
        return georef
    return Georeference(crs=crs, transform=transform if transform is not None else Affine.identity())


class PolygonLabels:
    """Label polygons with one class id each, on the grid of a raster.

    Args:
        source: a vector file (see :func:`read_polygons`) or a GeoDataFrame.
        georef: the grid's georeference (:class:`~geoseg.io.georef.Georeference`: CRS and transform, GCPs or RPCs);
            or, for an affine grid, ``crs`` and ``transform``. Polygons are reprojected to the grid's CRS when both
            CRSs are known.
        class_field: the attribute holding class ids or names (default: the first of
            :data:`CLASS_FIELD_CANDIDATES` present).
        classes: class names, index = id; names in the attribute are mapped through them.
        names_define_classes: without ``classes``, whether the sorted distinct names become the classes (see
            :func:`class_ids`).
        id_field: an attribute of integer class ids: each polygon gets its id from it, and a ``class_field`` of names
            names those ids (:func:`ids_from_id_field`) instead of being numbered alphabetically.
        layer, layer_option: the layer to read from a multi-layer file, and how users choose it (see
            :func:`read_polygons`).
        shape, target: the grid's (rows, cols) and how messages name it; with ``shape``, polygons that cover none of
            the grid are refused at once, with the reason (no CRS, elsewhere), instead of scoring or training nothing.
        field_option: the caller's option naming the class attribute, for messages (``truth_class_field`` in
            evaluation).

    Attributes:
        field: the class attribute used; id_field: the id attribute used, or None. ids: the class id of each polygon
            (int64), in file order.
        classes: the class names (as given, derived from the names, or None).

    Raises:
        InputNotFoundError, InvalidParameterError, MissingDependencyError: see :func:`read_polygons`.
        UnknownClassError: see :func:`find_class_field` and :func:`class_ids`.
        NoValidDataError: the file or layer holds no polygon.
        NoOverlapError: with ``shape``, no polygon touches the grid (see :func:`_check_covers`).
    """

    def __init__(
        self,
        source: LabelsLike,
        *,
        crs: Any = None,
        transform: Affine | None = None,
        georef: Georeference | None = None,
        class_field: str | None = None,
        classes: Sequence[str] | None = None,
        names_define_classes: bool = False,
        id_field: str | None = None,
        what: str = "label polygons",
        layer: str | None = None,
        layer_option: str = "layer=",
        field_option: str = "class_field",
        shape: tuple[int, int] | None = None,
        target: str = "the raster",
    ) -> None:
        self.what = what if hasattr(source, "geometry") else f"{what} {source}"
        gdf = read_polygons(source, what=what, layer=layer, layer_option=layer_option)
        if not len(gdf):
            where = f" in layer {layer!r}" if layer is not None else ""
            raise NoValidDataError(
                f"{self.what} hold no polygon{where} (no feature with a non-empty geometry), so they label no pixel; "
                f"pass the file or layer ({layer_option}) that holds them"
            )
        self.field = find_class_field(gdf, class_field, what=self.what, field_option=field_option)
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
        grid = _grid(georef, crs, transform)
        own_crs = gdf.crs
        gdf = to_crs(gdf, grid.map_crs)
        if shape is not None:
            path = "FILE" if hasattr(source, "geometry") else str(source)
            _check_covers(gdf.geometry.to_numpy(), own_crs, grid, shape, what=self.what, target=target, path=path)
        self.transform = grid.transform
        self._polygons = GridPolygons(gdf.geometry.to_numpy(), grid)
        self.geometries = self._polygons.geometries

    def __len__(self) -> int:
        return len(self.ids)

    def rasterize(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Class ids ``(rows, cols)`` (int64) of ``window`` of the grid and where a polygon covers it (bool).

        A pixel belongs to a polygon when its centre lies inside (GDAL's rule); where polygons overlap, the later one
        in file order wins. Uncovered pixels hold 0 in the ids.
        """
        burned = self._polygons.burn(window)
        lut = np.concatenate([[0], self.ids])
        return lut[burned], burned > 0


class AreaOfInterest:
    """Polygons (any attributes) restricting an operation to where they lie, on a raster grid.

    Raises:
        InputNotFoundError, InvalidParameterError, MissingDependencyError: see :func:`read_polygons`.
    """

    def __init__(
        self, source: LabelsLike, georef: Georeference, *, layer: str | None = None, layer_option: str = "layer="
    ) -> None:
        gdf = read_polygons(source, what="area of interest", layer=layer, layer_option=layer_option)
        #: the polygons' own CRS (None: their coordinates are taken to be in the grid's)
        self.own_crs = gdf.crs
        gdf = to_crs(gdf, georef.map_crs)
        self.bounds = tuple(float(v) for v in gdf.total_bounds) if len(gdf) else None
        self._polygons = GridPolygons(gdf.geometry.to_numpy(), georef)

    def __len__(self) -> int:
        return len(self._polygons)

    def mask(self, window: Window) -> np.ndarray:
        """``(rows, cols)`` bool: pixels of ``window`` whose centre lies inside a polygon."""
        return self._polygons.burn(window) > 0


__all__ = [
    "CLASS_FIELD_CANDIDATES",
    "VECTOR_SUFFIXES",
    "AreaOfInterest",
    "GridPolygons",
    "PolygonLabels",
    "class_ids",
    "find_class_field",
    "ids_from_id_field",
    "is_vector",
    "read_polygons",
    "to_crs",
]
