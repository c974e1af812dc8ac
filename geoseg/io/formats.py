"""File formats by extension: the one place that maps an output path to the driver that writes it.

An output's format is chosen by its extension, never guessed: a class map asked for as ``classes.png`` is refused
with the formats geoseg writes instead of being written as a GeoTIFF under a PNG name. Raster outputs (class maps,
probabilities, batch region files, mosaics' COGs) are GeoTIFFs; polygon outputs are GeoPackage, GeoJSON, FlatGeobuf,
Shapefile or GeoParquet. Polygon *inputs* (labels, ground truth, areas of interest) are recognised by
:data:`VECTOR_INPUT_SUFFIXES`.
"""

from __future__ import annotations

import os
from pathlib import Path

from geoseg.errors import InvalidParameterError

#: raster output extension -> GDAL driver (every raster geoseg writes is a tiled GeoTIFF, or a COG, which is one)
RASTER_FORMATS: dict[str, str] = {".tif": "GTiff", ".tiff": "GTiff"}

#: polygon output extension -> driver ("GeoParquet" is written with pyarrow, the others with pyogrio/GDAL)
VECTOR_FORMATS: dict[str, str] = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
    ".shp": "ESRI Shapefile",
    ".parquet": "GeoParquet",
    ".geoparquet": "GeoParquet",
}

#: polygon drivers whose files hold named layers (``layer=`` / ``--layer``); the others hold one unnamed layer
NAMED_LAYER_DRIVERS: tuple[str, ...] = ("GPKG", "FlatGeobuf")

#: files a driver writes beside the named one (same stem, these extensions); they are published and replaced with it
COMPANION_SUFFIXES: dict[str, tuple[str, ...]] = {"ESRI Shapefile": (".shx", ".dbf", ".prj", ".cpg")}

#: extensions read as polygons (labels, truth, areas of interest); every other path is opened as a raster
VECTOR_INPUT_SUFFIXES: tuple[str, ...] = (*VECTOR_FORMATS, ".gml", ".kml")


def _known(formats: dict[str, str]) -> str:
    return ", ".join(f"{k} ({v})" for k, v in formats.items())


def raster_driver(path: str | os.PathLike[str], *, what: str = "raster output") -> str:
    """The GDAL driver that writes the raster ``path``, chosen by its extension (:data:`RASTER_FORMATS`).

    Raises:
        InvalidParameterError: an extension geoseg does not write rasters in (``.png``, ``.jp2``, ``.gpkg``, none...),
            naming the supported ones.
    """
    suffix = Path(path).suffix.lower()
    driver = RASTER_FORMATS.get(suffix)
    if driver is None:
        stem = Path(path).with_suffix(".tif") if suffix else Path(f"{path}.tif")
        raise InvalidParameterError(
            f"unsupported {what} format {suffix or '(no extension)'!r} for {path}: geoseg writes GeoTIFF; name it "
            f"{stem} (supported: {_known(RASTER_FORMATS)}) and convert afterwards if needed (gdal_translate -of ...)"
        )
    return driver


def vector_driver(path: str | os.PathLike[str], *, what: str = "vector output") -> str:
    """The driver that writes the polygon file ``path``, chosen by its extension (:data:`VECTOR_FORMATS`).

    Raises:
        InvalidParameterError: an extension not in :data:`VECTOR_FORMATS`, naming the supported ones.
    """
    suffix = Path(path).suffix.lower()
    driver = VECTOR_FORMATS.get(suffix)
    if driver is None:
        raise InvalidParameterError(
            f"unsupported {what} format {suffix or '(no extension)'!r} for {path}; use one of: {_known(VECTOR_FORMATS)}"
        )
    return driver


def companion_files(path: str | os.PathLike[str], driver: str) -> list[Path]:
    """The files ``driver`` writes beside ``path`` (e.g. a Shapefile's ``.shx``, ``.dbf``, ``.prj``, ``.cpg``)."""
    p = Path(path)
    return [p.with_suffix(s) for s in COMPANION_SUFFIXES.get(driver, ())]


__all__ = [
    "COMPANION_SUFFIXES",
    "RASTER_FORMATS",
    "VECTOR_FORMATS",
    "VECTOR_INPUT_SUFFIXES",
    "companion_files",
    "raster_driver",
    "vector_driver",
]
