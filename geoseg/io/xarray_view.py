"""Lazy xarray.DataArray view of a raster (rioxarray + dask), for users who compute on it."""

from __future__ import annotations

import os
from typing import Any

from geoseg.errors import MissingDependencyError
from geoseg.io.bands import BandSpec
from geoseg.io.read import RasterSource


def open_dataarray(
    path: str | os.PathLike[str], *, bands: BandSpec = None, chunks: int | dict[str, int] | str = 1024
) -> Any:
    """Open ``path`` as a lazy, dask-backed ``xarray.DataArray`` (band, y, x) with nodata masked as NaN.

    Band selection follows :class:`RasterSource` (indexes, ranges, names); band names become the ``band`` labels.
    Nothing is read until the array is computed. This view is for analysis: ``predict_raster`` streams windows
    directly and never builds a per-tile dask graph.

    Raises:
        MissingDependencyError: rioxarray or dask is not installed (the ``xarray`` extra).
        InputNotFoundError, NotARasterError, BandSelectionError: see :class:`~geoseg.io.read.RasterSource`.
    """
    try:
        import rioxarray  # noqa: F401  (registers the engine)
        from rioxarray import open_rasterio
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError("the xarray view needs rioxarray and dask: pip install 'geoseg[xarray]'") from exc
    with RasterSource(path, bands=bands) as src:
        indexes, names = src.band_indexes, src.band_names
    spec: Any = {"band": -1, "y": chunks, "x": chunks} if isinstance(chunks, int) else chunks
    da: Any = open_rasterio(path, chunks=spec, masked=True, lock=False)  # one DataArray for a one-subdataset file
    da = da.sel(band=indexes).assign_coords(band=names)
    if "long_name" in da.attrs:  # rioxarray's band descriptions are the file's: keep those of the selected bands
        da.attrs["long_name"] = tuple(names)
    return da
