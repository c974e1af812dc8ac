"""Training areas: restrict the labels a model may learn from to an area, or keep an area out (a test region).

An area is polygons (a vector file path, a GeoDataFrame/GeoSeries or a shapely geometry, in any CRS: reprojected to
the image's) or a pixel window of the image grid (a :class:`rasterio.windows.Window`, a ``(col_off, row_off, width,
height)`` tuple, or the string ``"col_off,row_off,width,height"``). Pixels are inside a polygon area when their
centre is (the rasterization rule :mod:`geoseg.evaluation` uses for an area of interest), so a region held out here and
scored there is the same set of pixels.

Only labels are masked: image pixels outside the area still serve as spatial context for chips near its border, as
they will at prediction time.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoseg.errors import InputNotFoundError, InvalidParameterError, MissingDependencyError, NoOverlapError
from geoseg.io.read import RasterSource

AreaSpec = Any  # str | os.PathLike | Window | tuple[int, int, int, int] | GeoDataFrame | GeoSeries | shapely geometry

_WINDOW_RE = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*$")


def describe_area(spec: AreaSpec) -> str | None:
    """A short JSON-friendly description of an area spec (for the model contract)."""
    if spec is None:
        return None
    if isinstance(spec, Window):
        return f"window {int(spec.col_off)},{int(spec.row_off)},{int(spec.width)},{int(spec.height)}"
    if isinstance(spec, tuple):
        return "window " + ",".join(str(int(v)) for v in spec)
    if isinstance(spec, (str, os.PathLike)):
        return str(spec)
    return f"<{type(spec).__name__}>"


class PixelArea:
    """Which pixels of an image grid an area covers, for any window (polygons rasterized per window)."""

    def __init__(self, spec: AreaSpec, image: RasterSource, *, what: str = "training area") -> None:
        self.what = what
        self.window: Window | None = None
        self.geoms: Any = None
        self.transform = image.transform
        window = _as_window(spec)
        if window is not None:
            col, row, w, h = (int(v) for v in (window.col_off, window.row_off, window.width, window.height))
            if w < 1 or h < 1 or col < 0 or row < 0:
                raise InvalidParameterError(
                    f"{what} window {col},{row},{w},{h} must have col_off, row_off >= 0 and width, height >= 1 px"
                )
            if col >= image.width or row >= image.height:
                raise NoOverlapError(
                    f"{what} window {col},{row},{w},{h} lies outside the {image.width}x{image.height} px image; give "
                    f"col_off,row_off,width,height in pixels of the image grid"
                )
            self.window = Window(col, row, min(w, image.width - col), min(h, image.height - row))
            return
        self.geoms = _read_polygons(spec, image, what)

    def mask(self, window: Window) -> np.ndarray:
        """Boolean (rows, cols) array: True where the pixel of ``window`` is inside the area."""
        h, w = int(window.height), int(window.width)
        r0, c0 = int(window.row_off), int(window.col_off)
        if self.window is not None:
            out = np.zeros((h, w), dtype=bool)
            a = self.window
            rs = slice(max(0, int(a.row_off) - r0), max(0, min(h, int(a.row_off + a.height) - r0)))
            cs = slice(max(0, int(a.col_off) - c0), max(0, min(w, int(a.col_off + a.width) - c0)))
            out[rs, cs] = True
            return out
        from rasterio.features import geometry_mask

        return geometry_mask(
            self.geoms, out_shape=(h, w), transform=window_transform(window, self.transform), invert=True
        )


def _as_window(spec: AreaSpec) -> Window | None:
    if isinstance(spec, Window):
        return spec
    if isinstance(spec, tuple) and len(spec) == 4 and all(isinstance(v, (int, np.integer)) for v in spec):
        return Window(*(int(v) for v in spec))
    if isinstance(spec, str) and (m := _WINDOW_RE.match(spec)):
        return Window(*(int(v) for v in m.groups()))
    return None


def _read_polygons(spec: AreaSpec, image: RasterSource, what: str) -> Any:
    try:
        import geopandas as gpd
    except ImportError as exc:  # pragma: no cover
        raise MissingDependencyError(f"a polygon {what} needs geopandas: pip install 'geoseg[vector]'") from exc
    if isinstance(spec, (str, os.PathLike)):
        p = os.fspath(spec)
        if not os.path.exists(p):
            raise InputNotFoundError(
                f"{what} not found: {p}; give a polygon file (GeoPackage, GeoJSON, Shapefile, ...) or a pixel window "
                f"'col_off,row_off,width,height'"
            )
        try:
            gdf = gpd.read_parquet(p) if p.lower().endswith((".parquet", ".geoparquet")) else gpd.read_file(p)
        except Exception as exc:
            raise InvalidParameterError(f"cannot read {what} {p} as polygons: {exc}") from exc
        geoms = gdf.geometry
    elif isinstance(spec, (gpd.GeoDataFrame, gpd.GeoSeries)):
        geoms = spec.geometry if isinstance(spec, gpd.GeoDataFrame) else spec
    elif hasattr(spec, "geom_type"):
        geoms = gpd.GeoSeries([spec], crs=None)
    else:
        raise InvalidParameterError(
            f"{what} must be polygons (a file path, GeoDataFrame or shapely geometry) or a pixel window "
            f"(col_off, row_off, width, height); got {type(spec).__name__}"
        )
    geoms = geoms[~geoms.isna() & ~geoms.is_empty]
    if not len(geoms) or not geoms.geom_type.isin(["Polygon", "MultiPolygon"]).any():
        raise InvalidParameterError(f"{what} {describe_area(spec)} holds no polygon")
    if geoms.crs is not None and image.crs is not None and geoms.crs != image.crs:
        geoms = geoms.to_crs(image.crs)
    xmin, ymin, xmax, ymax = geoms.total_bounds
    left, top = image.transform @ (0, 0)
    right, bottom = image.transform @ (image.width, image.height)
    if xmin >= max(left, right) or xmax <= min(left, right) or ymin >= max(top, bottom) or ymax <= min(top, bottom):
        raise NoOverlapError(
            f"{what} {describe_area(spec)} (bounds {tuple(round(float(v), 3) for v in geoms.total_bounds)}) does not "
            f"overlap the image (bounds {tuple(round(float(v), 3) for v in (left, bottom, right, top))}); check its CRS"
        )
    return list(geoms.values)


class AreaLabels:
    """A label source restricted to ``include`` (when given) minus ``exclude``: other pixels read as ``ignore``."""

    def __init__(self, labels: Any, include: PixelArea | None, exclude: PixelArea | None, ignore: int) -> None:
        self.inner, self.include, self.exclude, self.ignore = labels, include, exclude, ignore
        self.classes = labels.classes

    def read(self, window: Window) -> np.ndarray:
        y = self.inner.read(window)
        if self.include is not None:
            y[~self.include.mask(window)] = self.ignore
        if self.exclude is not None:
            y[self.exclude.mask(window)] = self.ignore
        return y

    def close(self) -> None:
        self.inner.close()
