"""vectorize: a class raster -> polygons with attributes, in a file or a GeoDataFrame (read, polygonize, attributes,
write). No torch."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import InvalidParameterError, NotGeoreferencedWarning, NoValidDataError
from geoseg.hints import option
from geoseg.io.classes import check_class_ids, check_class_raster, check_nodata_is_no_class
from geoseg.io.formats import NAMED_LAYER_DRIVERS, companion_files, vector_driver
from geoseg.io.gdal_cache import WindowedReads, bounded_gdal_cache
from geoseg.io.georef import Georeference
from geoseg.io.read import open_dataset
from geoseg.io.tags import read_class_names
from geoseg.io.write import check_output_path
from geoseg.options import Bound, check_class_names, check_number, check_numbers, plain_arguments
from geoseg.progress import ProgressCallback
from geoseg.vectorization import CONNECTIVITIES
from geoseg.vectorization.attributes import FeatureBuilder
from geoseg.vectorization.polygons import polygonize_stream
from geoseg.vectorization.writers import to_geodataframe, write_features


@plain_arguments
def vectorize(
    class_raster: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    *,
    classes: Sequence[str] | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    connectivity: int = 4,
    crs: Any = None,
    probabilities: str | os.PathLike[str] | None = None,
    window: int = 2048,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    layer: str | None = None,
) -> Any:
    """Polygonize a class raster window by window; identical to polygonizing it whole.

    * ``classes``: class names (index = class id); default: names stored on the raster by geoseg, else the ids.
    * ``min_area``: drop polygons smaller than this, in square map units of the raster CRS (the ``area`` column).
    * ``simplify``: Douglas-Peucker tolerance in map units of the raster CRS (topology-preserving, per polygon).
    * ``connectivity``: 4 (edges) or 8 (edges and corners), as in GDAL/rasterio polygonize.
    * ``crs``: write polygons in this CRS (default: the raster's, or that of its GCPs; polygons of a raster placed
      only by GCPs or RPCs are mapped through GDAL's transformer for them).
    * ``probabilities``: a raster with one band per class on the same grid; adds ``mean_prob``, the mean of the
      polygon's class probability over its pixels.
    * ``dst``: GeoPackage, GeoJSON, FlatGeobuf, Shapefile or GeoParquet path (by extension, see
      :data:`geoseg.io.formats.VECTOR_FORMATS`), written incrementally and atomically; without it a GeoDataFrame is
      returned.

    The raster must be a class raster (:func:`geoseg.io.classes.check_class_raster`): one band of class ids (integers,
    or floats holding whole numbers); a multiband image, a probability raster or continuous data without class names
    is refused.

    Columns: ``class_id``, ``class_name``, ``pixels``, ``area`` (map units of the raster CRS, before simplification),
    ``area_m2`` (geodesic for geographic CRSs, NaN without a CRS), optional ``mean_prob``, ``geometry``.
    Nodata (nodata value, mask or NaN) never becomes a polygon. Returns a :class:`VectorizeResult` when ``dst`` is
    given.

    Raises:
        InvalidParameterError: a bad option (a negative or NaN ``min_area``/``simplify``, a ``window`` below 2, empty
            or repeated class names, a ``crs`` PROJ does not know), an unsupported output extension, a probability
            raster on another grid, ``crs`` for a raster without one, or ``layer`` for an output without named layers
            (GeoJSON, Shapefile, GeoParquet) or without ``dst``.
        OutputExistsError, OutputError: ``dst`` exists without ``overwrite``, or cannot be written.
        InputNotFoundError, NotARasterError: the class raster cannot be opened.
        UnsupportedRasterError: the raster is not a class raster (several bands, non-integer values, continuous data
            without class names), or its declared nodata is one of its class ids.
        UnknownClassError: negative values, or ids the given ``classes`` do not name.
        NoValidDataError: the raster holds no valid pixel (nothing is written).
        CancelledError: ``progress`` asked to stop (nothing is left at ``dst``).
    """
    if connectivity not in CONNECTIVITIES:
        raise InvalidParameterError(f"{option('connectivity')} must be 4 or 8, got {connectivity!r}")
    check_number("window", window, Bound(integer=True, low=2, unit="pixels"))
    check_numbers({"min_area": min_area, "simplify": simplify})
    classes = check_class_names(classes)
    _target_crs(crs)  # a CRS PROJ does not know fails here, before the raster is read
    driver = None
    out_path = None
    if dst is not None:
        driver = vector_driver(dst)
        inputs = {class_raster: "class raster", probabilities: "probability raster"}
        out_path = check_output_path(
            dst, overwrite=overwrite, inputs=inputs, what="polygon file", companions=companion_files(dst, driver)
        )
    if layer is not None and driver not in NAMED_LAYER_DRIVERS:
        where = f"{dst} is {driver}, which holds one unnamed layer" if dst is not None else "no output file is given"
        raise InvalidParameterError(
            f"{option('layer')} names the layer of a GeoPackage or FlatGeobuf output, but {where}; drop "
            f"{option('layer')} or write to a .gpkg/.fgb file"
        )
    return _vectorize(
        class_raster,
        out_path,
        driver,
        classes,
        min_area,
        simplify,
        connectivity,
        crs,
        probabilities,
        window,
        overwrite,
        progress,
        layer,
    )


def _target_crs(crs: Any) -> Any:
    """``crs`` as a pyproj CRS (None stays None).

    Raises:
        InvalidParameterError: PROJ does not know it.
    """
    if crs is None:
        return None
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return CRS.from_user_input(crs)
    except (CRSError, TypeError, ValueError) as exc:
        raise InvalidParameterError(
            f"{option('crs')} {crs!r} is not a coordinate reference system PROJ knows; give e.g. EPSG:4326, an "
            f"EPSG code, a WKT string or a PROJ string"
        ) from exc


def _antimeridian_crossing_latitude(georef: Georeference, shape: tuple[int, int]) -> float | None:
    """A latitude at which the raster's footprint crosses the antimeridian (180° longitude), or None when it does
    not: its outline (densified, 64 points an edge) in longitude/latitude either leaves [-180, 180] (a geographic
    grid that runs past 180°) or jumps by more than 180° between neighbouring points (a projected grid across it)."""
    from pyproj import CRS, Transformer

    h, w = shape
    t = np.linspace(0.0, 1.0, 64)
    cols = np.concatenate([t * w, np.full(64, w), (1 - t) * w, np.zeros(64)])
    rows = np.concatenate([np.zeros(64), t * h, np.full(64, h), (1 - t) * h])
    x, y = georef.pixel_to_map(cols, rows)
    crs = georef.map_crs
    if crs is None:
        return None
    if crs.is_geographic:
        lon, lat = x, y
        if crs != CRS.from_epsg(4326):
            lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(x, y)
            lon = np.unwrap(np.asarray(lon), period=360.0)
    else:
        lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(x, y)
        lon = np.unwrap(np.asarray(lon, np.float64), period=360.0)  # a jump across 180° becomes a run past it
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    finite = np.isfinite(lon) & np.isfinite(lat)
    if not finite.any():
        return None
    lon, lat = lon[finite], lat[finite]
    beyond = (lon > 180.0) | (lon < -180.0)
    if not beyond.any():
        return None
    return float(np.clip(np.mean(lat), -85.0, 85.0))


def _seam_at_antimeridian(crs: Any, lat: float) -> bool:
    """Whether ``crs`` cuts the world at 180° longitude near latitude ``lat`` (EPSG:4326, Web Mercator, global
    equal-area grids): two points 0.002° apart across it land far apart."""
    from pyproj import Transformer

    t = Transformer.from_crs(4326, crs, always_xy=True)
    xa, ya = t.transform(179.999, lat)
    xb, yb = t.transform(-179.999, lat)
    xc, yc = t.transform(179.997, lat)
    near = math.hypot(xc - xa, yc - ya)
    far = math.hypot(xb - xa, yb - ya)
    return bool(np.isfinite(far) and far > 100 * max(near, 1e-12))


def _check_no_antimeridian_wrap(georef: Georeference, shape: tuple[int, int], out_crs: Any, path: Any) -> None:
    """Refuse a reprojection that would tear the polygons of a raster crossing 180° longitude across the world.

    Raises:
        InvalidParameterError: the raster crosses the antimeridian and ``out_crs`` is cut there.
    """
    lat = _antimeridian_crossing_latitude(georef, shape)
    if lat is None or not _seam_at_antimeridian(out_crs, lat):
        return
    raise InvalidParameterError(
        f"{path} crosses the antimeridian (180° longitude) and {out_crs.to_string()} is cut there: its polygons "
        f"would be torn across the whole world; omit {option('crs')} to keep the raster's CRS, or give a projected "
        f"CRS that spans 180° (e.g. the UTM zone there, EPSG:32660 or EPSG:32601)"
    )


def _not_empty(stream: Iterator[list[Any]], path: Any) -> Iterator[list[Any]]:
    """``stream`` (polygon batches), raising NoValidDataError at its end when it held no polygon: a class raster
    without a valid pixel gives no file, rather than an empty one that looks like a result."""
    found = False
    for batch in stream:
        found = found or bool(batch)
        yield batch
    if not found:
        raise NoValidDataError(
            f"class raster {path} holds no valid pixel (every pixel is nodata or masked), so there is nothing to "
            f"vectorize; check it is the class map you meant and that its nodata value is right (gdalinfo -stats)"
        )


def _built(stream: Iterator[list[Any]], builder: FeatureBuilder, *, min_area: float, path: Any) -> Iterator[Any]:
    """The attribute batches of ``stream``'s polygons (``builder``), raising InvalidParameterError at the end when
    ``min_area`` dropped every polygon: an empty file would look like a class raster without classes."""
    polygons = kept = largest = 0
    for batch in stream:
        polygons += len(batch)
        largest = max([largest, *(int(b[1]) for b in batch)])
        cols = builder.build(batch)
        if cols is not None:
            kept += len(cols["class_id"])
            yield cols
    if polygons and not kept:
        raise InvalidParameterError(
            f"{option('min_area', min_area)} drops all {polygons} polygons of {path} (the largest covers {largest} "
            f"pixels; the area is in square map units of the raster's CRS): nothing would be written; lower "
            f"{option('min_area')}"
        )


def _check_probabilities(prob_ds: Any, path: str | os.PathLike[str]) -> None:
    """Refuse a raster whose values (scale and offset applied, on the value sample of its first bands,
    :func:`geoseg.io.classes.sample_values`) are not probabilities in [0, 1], e.g. the image instead of the
    probability raster that prediction wrote.

    Raises:
        InvalidParameterError: naming the band and the range of values found.
    """
    from geoseg.io.classes import sample_values

    for band in range(1, min(prob_ds.count, 3) + 1):
        scale, offset = prob_ds.scales[band - 1], prob_ds.offsets[band - 1]
        values = sample_values(prob_ds, band).astype(np.float64) * scale + offset
        if values.size and (values.min() < -1e-6 or values.max() > 1 + 1e-6):
            raise InvalidParameterError(
                f"probability raster {path} band {band} holds values {values.min():g}..{values.max():g}, not "
                f"probabilities in [0, 1] (scale and offset applied); pass the probability raster that prediction "
                f"wrote ({option('probabilities')} of predict), not the image"
            )


def _vectorize(
    class_raster: Any,
    out_path: Path | None,
    driver: str | None,
    classes: Sequence[str] | None,
    min_area: float,
    simplify: float,
    connectivity: int,
    crs: Any,
    probabilities: Any,
    window: int,
    overwrite: bool,
    progress: ProgressCallback | None,
    layer: str | None,
) -> Any:
    ds = open_dataset(class_raster)
    prob_ds = None
    try:
        values = check_class_raster(ds, path=class_raster, names=classes)
        check_class_ids(values, path=class_raster, names=classes)
        names = list(classes) if classes is not None else read_class_names(ds)
        check_nodata_is_no_class(ds, values, path=class_raster, names=names)
        if probabilities is not None:
            prob_ds = open_dataset(probabilities)
            if (prob_ds.height, prob_ds.width) != (ds.height, ds.width) or prob_ds.transform != ds.transform:
                raise InvalidParameterError(
                    f"probability raster {probabilities} ({prob_ds.width}x{prob_ds.height}) is not on the grid of "
                    f"{class_raster} ({ds.width}x{ds.height}); pass the probability raster written with the classes"
                )
            _check_probabilities(prob_ds, probabilities)
        out_crs = _target_crs(crs)
        src_crs = Georeference.of(ds).map_crs
        if out_crs is not None and src_crs is None:
            raise InvalidParameterError(
                f"cannot reproject to {crs}: {class_raster} has no CRS; omit {option('crs')} to write pixel/map "
                f"coordinates"
            )
        if out_crs is not None and src_crs is not None and out_crs != src_crs:
            _check_no_antimeridian_wrap(Georeference.of(ds), (ds.height, ds.width), out_crs, class_raster)
        builder = FeatureBuilder(
            ds,
            names=names,
            min_area=min_area,
            simplify=simplify,
            connectivity=connectivity,
            out_crs=out_crs,
            with_prob=prob_ds is not None,
        )
        stream = _not_empty(
            polygonize_stream(ds, connectivity=connectivity, window=window, prob_ds=prob_ds, progress=progress),
            class_raster,
        )
        batches = _built(stream, builder, min_area=min_area, path=class_raster)
        final_crs = out_crs if out_crs is not None else src_crs
        if final_crs is None:
            georef = Georeference.of(ds)
            what = "a geotransform but no CRS" if georef.has_transform else georef.describe()
            warnings.warn(
                f"{class_raster} has {what}; the polygons are in its {'map' if georef.has_transform else 'pixel'} "
                f"coordinates and carry no CRS (set the raster's CRS, e.g. gdal_edit.py -a_srs EPSG:32633, to place "
                f"them)",
                NotGeoreferencedWarning,
                stacklevel=4,
            )
        with bounded_gdal_cache(*(WindowedReads.of(d, (window, window)) for d in (ds, prob_ds) if d is not None)):
            if out_path is None or driver is None:
                return to_geodataframe(batches, final_crs, prob_ds is not None)
            return write_features(
                out_path, driver, batches, final_crs, prob_ds is not None, connectivity, overwrite, layer
            )
    finally:
        ds.close()
        if prob_ds is not None:
            prob_ds.close()
