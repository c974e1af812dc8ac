"""Label sources on the image grid: an integer label raster, or polygons rasterized window by window."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoseg.errors import InvalidParameterError, MissingDependencyError, ModelContractError
from geoseg.io.read import RasterSource, open_dataset

IGNORE_INDEX = 255
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet", ".geoparquet", ".gml", ".kml")


class LabelSource(Protocol):
    """Class ids for a window of the image grid (IGNORE_INDEX where unknown)."""

    classes: list[str]

    def read(self, window: Window) -> np.ndarray: ...

    def close(self) -> None: ...


def is_vector(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


class LabelRaster:
    """Windowed reads of an integer label raster on the image grid; nodata, negative ids (a common nodata convention,
    e.g. -1) and, without a nodata value, 255 -> IGNORE_INDEX."""

    def __init__(self, path: str | os.PathLike[str], image: RasterSource, classes: Sequence[str] | None) -> None:
        self.path = str(path)
        ds = open_dataset(path)
        self._ds = ds
        if (ds.height, ds.width) != image.shape:
            ds.close()
            raise ModelContractError(
                f"label raster {path} is {ds.height}x{ds.width} but the image is {image.height}x{image.width}; "
                f"labels must be on the image grid (rasterize or resample them onto it)"
            )
        if image.crs and ds.crs and ds.crs != image.crs:
            ds.close()
            raise ModelContractError(f"label raster CRS {ds.crs} differs from image CRS {image.crs}; reproject it")
        if np.dtype(ds.dtypes[0]).kind not in "iu":
            ds.close()
            raise ModelContractError(f"label raster {path} has {ds.dtypes[0]} values; class ids must be integers")
        self.nodata = ds.nodata
        ids = self._class_ids()
        if classes:
            unknown = sorted(int(i) for i in ids if i >= len(classes) or i < 0)
            if unknown:
                ds.close()
                raise InvalidParameterError(
                    f"label ids {unknown} in {path} exceed the {len(classes)} class names given; give one name per "
                    f"class id 0..{int(ids.max())} or set those pixels to the label nodata value"
                )
            self.classes = list(classes)
        else:
            n = int(ids.max()) + 1 if ids.size else 0
            self.classes = [f"class_{i}" for i in range(n)]
        if len(self.classes) < 2:
            ds.close()
            raise InvalidParameterError(
                f"labels in {path} hold {ids.tolist()}: need at least 2 classes (ids 0..K-1; nodata ignored)"
            )

    def _class_ids(self, max_pixels: int = 4_000_000) -> np.ndarray:
        ds = self._ds
        step = max(1, int(np.sqrt(ds.width * ds.height / max_pixels)))
        shape = (max(1, ds.height // step), max(1, ds.width // step))
        arr = ds.read(1, out_shape=shape, resampling=rasterio.enums.Resampling.nearest)
        vals = np.unique(arr)
        if self.nodata is not None:
            vals = vals[vals != self.nodata]
        vals = vals[vals >= 0]  # negative ids are nodata (e.g. Sen1Floods11's -1), as in read()
        return vals[vals != IGNORE_INDEX] if self.nodata is None else vals

    def read(self, window: Window) -> np.ndarray:
        lab = self._ds.read(1, window=window).astype(np.int64)
        bad = (lab < 0) | (lab >= len(self.classes))
        if self.nodata is not None:
            bad |= lab == self.nodata
        lab[bad] = IGNORE_INDEX
        return lab

    def close(self) -> None:
        self._ds.close()


class LabelVector:
    """Polygons with a class attribute, reprojected to the image CRS and rasterized per window.

    Class values may be integer ids or names (mapped through ``classes``; without ``classes`` the sorted distinct
    names become the classes). Pixels covered by no polygon get ``background`` (a class id) or are ignored (None).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        image: RasterSource,
        *,
        class_field: str | None,
        classes: Sequence[str] | None = None,
        background: int | None = None,
    ) -> None:
        try:
            import geopandas as gpd
        except ImportError as exc:  # pragma: no cover
            raise MissingDependencyError("vector labels need geopandas: pip install 'geoseg[vector]'") from exc
        p = Path(path)
        self.path = str(p)
        if not p.exists():
            from geoseg.errors import InputNotFoundError

            raise InputNotFoundError(f"label file not found: {p}")
        try:
            gdf = gpd.read_file(p)
        except Exception as exc:
            raise InvalidParameterError(f"cannot read vector labels {p}: {exc}") from exc
        fields = [c for c in gdf.columns if c != "geometry"]
        if class_field is None:
            raise InvalidParameterError(f"vector labels need a class attribute: pass class_field= one of {fields}")
        if class_field not in gdf.columns:
            raise InvalidParameterError(
                f"vector labels {p.name} have no attribute {class_field!r}; available attributes: {', '.join(fields)}"
            )
        gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
        if gdf.crs is not None and image.crs is not None and gdf.crs != image.crs:
            gdf = gdf.to_crs(image.crs)
        values = gdf[class_field]
        if values.dtype.kind in "iu" or (values.dtype.kind == "f" and np.all(np.mod(values.dropna(), 1) == 0)):
            ids = values.astype(np.int64).to_numpy()
            n = int(ids.max()) + 1 if ids.size else 0
            self.classes = list(classes) if classes else [f"class_{i}" for i in range(max(n, (background or 0) + 1))]
            if ids.size and (ids.min() < 0 or ids.max() >= len(self.classes)):
                raise InvalidParameterError(
                    f"class ids {sorted(set(ids.tolist()) - set(range(len(self.classes))))} in {class_field!r} "
                    f"are outside 0..{len(self.classes) - 1}; give one class name per id"
                )
        else:
            names = values.astype(str)
            self.classes = list(classes) if classes else sorted(set(names))
            lookup = {c: i for i, c in enumerate(self.classes)}
            unknown = sorted(set(names) - set(lookup))
            if unknown:
                raise InvalidParameterError(
                    f"class names {unknown[:10]} in {class_field!r} are not among the classes {self.classes}"
                )
            ids = names.map(lookup).to_numpy(np.int64)
        if len(self.classes) < 2:
            raise InvalidParameterError(f"vector labels give {self.classes}: need at least 2 classes")
        self.background = background
        self._geoms = gdf.geometry.to_numpy()
        self._ids = ids
        self._tree = gdf.sindex if len(gdf) else None
        self._transform = image.transform

    def read(self, window: Window) -> np.ndarray:
        from rasterio.features import rasterize
        from shapely.geometry import box

        h, w = int(window.height), int(window.width)
        fill = IGNORE_INDEX if self.background is None else self.background
        if self._tree is None:
            return np.full((h, w), fill, np.int64)
        tr = window_transform(window, self._transform)
        left, top = tr @ (0, 0)
        right, bottom = tr @ (w, h)
        hits = self._tree.query(box(min(left, right), min(top, bottom), max(left, right), max(top, bottom)))
        if len(hits) == 0:
            return np.full((h, w), fill, np.int64)
        shapes = ((self._geoms[i], int(self._ids[i])) for i in sorted(hits))
        return rasterize(shapes, out_shape=(h, w), transform=tr, fill=fill, dtype="int32").astype(np.int64)

    def close(self) -> None:
        pass


def open_labels(
    path: str | os.PathLike[str],
    image: RasterSource,
    *,
    classes: Sequence[str] | None = None,
    class_field: str | None = None,
    background: int | None = None,
) -> LabelRaster | LabelVector:
    """A label raster, or vector labels (by file extension) rasterized on the image grid."""
    if is_vector(path):
        return LabelVector(path, image, class_field=class_field, classes=classes, background=background)
    return LabelRaster(path, image, classes)
