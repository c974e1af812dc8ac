"""A raster read on another raster's grid: ground truth on a prediction's grid, training labels on an image's grid.

One rule for both (:class:`RasterOnGrid`):

* the same grid (same shape and georeference) -> read pixel by pixel;
* no georeference, same shape -> taken as pixel-aligned (with a :class:`~geoseg.errors.NotGeoreferencedWarning` when
  the target grid is georeferenced);
* another affine grid (other transform, CRS, pixel size or shape) -> warped onto the target grid with nearest-
  neighbour resampling, window by window (:class:`rasterio.vrt.WarpedVRT`), with a
  :class:`~geoseg.errors.GridMismatchWarning`; target pixels the raster does not cover are invalid;
* rasters that do not overlap, or cannot be placed on a common map (one has no georeference and the shapes differ;
  a grid placed only by GCPs or RPCs that is not the other's) -> :class:`~geoseg.errors.NoOverlapError`.

A label raster that has the image's size and CRS but lies 2 km away is therefore never paired pixel by pixel.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from geoseg.errors import GridMismatchWarning, NoOverlapError, NotGeoreferencedWarning
from geoseg.io.georef import Georeference
from geoseg.io.read import open_dataset, read_masked


def _bounds(georef: Georeference, height: int, width: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a grid's four corners in its map CRS (rotations and flips included)."""
    xs, ys = georef.pixel_to_map(np.array([0, width, width, 0]), np.array([0, 0, height, height]))
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def _fmt(b: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in b) + ")"


class RasterOnGrid:
    """Band ``band`` of the raster ``path`` read on a target grid (``georef``, ``shape`` = (rows, cols)).

    :meth:`read` returns the values (the file's dtype) and where they are valid (nodata, masks, NaN/inf and target
    pixels outside the raster are invalid). ``nodata`` overrides the file's nodata value. ``warped`` says whether the
    raster is resampled.

    Raises:
        InputNotFoundError, NotARasterError: the raster cannot be opened (see :func:`geoseg.io.read.open_dataset`).
        NoOverlapError: the raster cannot be placed on the target grid, or does not overlap it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        georef: Georeference,
        shape: tuple[int, int],
        what: str = "raster",
        target: str = "the target grid",
        band: int = 1,
        nodata: float | None = None,
    ) -> None:
        self.path = str(path)
        self.ds = open_dataset(path)
        self.reader: Any = self.ds
        self.band = band
        self.nodata = nodata
        self.warped = False
        try:
            self._align(georef, shape, what, target)
        except BaseException:
            self.ds.close()
            raise

    def _align(self, georef: Georeference, shape: tuple[int, int], what: str, target: str) -> None:
        ds, path = self.ds, self.path
        mine = Georeference.of(ds)
        height, width = shape
        same_shape = (ds.height, ds.width) == (height, width)
        if same_shape and mine.same_as(georef):
            return
        if not mine.is_georeferenced and same_shape:
            if georef.is_georeferenced:
                warnings.warn(
                    f"{what} {path} has no georeference; it has the shape of {target}, so it is taken as "
                    f"pixel-aligned with it",
                    NotGeoreferencedWarning,
                    stacklevel=4,
                )
            return
        if not mine.is_georeferenced or not georef.is_georeferenced:
            raise NoOverlapError(
                f"cannot align {what} {path} ({ds.width}x{ds.height}) with {target} ({width}x{height}): one of "
                f"them has no georeference and their shapes differ; give both a georeference or the same grid"
            )
        if mine.kind != "transform" or georef.kind != "transform":
            raise NoOverlapError(
                f"cannot align {what} {path} ({mine.describe()}) with {target} ({georef.describe()}): a grid placed "
                f"only by GCPs or RPCs is aligned only with the same grid; warp them onto one map grid first "
                f"(gdalwarp -r near)"
            )
        src_crs = mine.crs or georef.crs
        dst_crs = georef.crs or mine.crs
        mb = _bounds(mine, ds.height, ds.width)
        tb = _bounds(georef, height, width)
        try:
            from rasterio.warp import transform_bounds

            b = transform_bounds(src_crs, dst_crs, *mb) if src_crs != dst_crs else mb
            if not np.all(np.isfinite(b)):
                raise ValueError("coordinates outside the CRS's area")
        except Exception as exc:
            raise NoOverlapError(
                f"{what} {path} (bounds {_fmt(mb)} in {src_crs}) cannot be placed in {dst_crs} ({exc}); check its CRS"
            ) from exc
        if b[0] >= tb[2] or b[2] <= tb[0] or b[1] >= tb[3] or b[3] <= tb[1]:
            if (mine.crs is None) != (georef.crs is None):  # one CRS was taken for the other's
                which = f"{what} {path}" if mine.crs is None else target
                fix = (
                    f"{which} has no CRS, so its coordinates were taken to be in {src_crs}: set the CRS it is in "
                    f"(gdal_edit -a_srs EPSG:XXXX)"
                )
            else:
                fix = "check both cover the same area in the right CRS"
            raise NoOverlapError(
                f"{what} {path} (bounds {_fmt(b)}) does not overlap {target} (bounds {_fmt(tb)}) in {dst_crs}; {fix}"
            )
        from rasterio.vrt import WarpedVRT

        warnings.warn(
            f"{what} {path} is on another grid ({src_crs}, {ds.width}x{ds.height}, {tuple(ds.transform)[:6]}) than "
            f"{target} ({dst_crs}, {width}x{height}, {tuple(georef.transform)[:6]}); resampling it with nearest "
            f"neighbour onto that grid",
            GridMismatchWarning,
            stacklevel=4,
        )
        self.reader = WarpedVRT(
            ds,
            crs=dst_crs,
            transform=georef.transform,
            width=width,
            height=height,
            resampling=Resampling.nearest,
            add_alpha=ds.nodata is None and self.nodata is None,
            src_crs=src_crs,
            **({"src_nodata": self.nodata, "nodata": self.nodata} if self.nodata is not None else {}),
        )
        self.warped = True

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Values ``(rows, cols)`` of ``window`` of the target grid and where they are valid (bool)."""
        data, valid = read_masked(self.reader, window, self.band)
        if self.nodata is not None:
            valid &= data != self.nodata
        return data, valid

    def close(self) -> None:
        if self.reader is not self.ds:
            self.reader.close()
        self.ds.close()

    def __enter__(self) -> RasterOnGrid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["RasterOnGrid"]
