"""Class raster -> polygons, window by window, merged across window seams; identical to polygonizing it whole.

* :mod:`~geoseg.vectorization.polygons`: the algorithm (connected components per window, seams joined with a
  union-find, polygons in pixel coordinates);
* :mod:`~geoseg.vectorization.attributes`: class name, pixels, area (map units and m²), mean probability, world
  geometry (filtered, simplified, reprojected);
* :mod:`~geoseg.vectorization.writers`: GeoPackage/GeoJSON/FlatGeobuf/Shapefile (pyogrio) or GeoParquet (pyarrow)
  written incrementally and atomically, or a GeoDataFrame (formats by extension: :mod:`geoseg.io.formats`);
* :mod:`~geoseg.vectorization.pipeline`: :func:`vectorize`, which runs them.

Importing this package loads none of them (nor scipy, shapely or pyarrow): the CLI lists :data:`CONNECTIVITIES`
without the ``vector`` extra. No torch.
"""

from __future__ import annotations

from typing import Any

from geoseg._lazy import lazy_attribute, lazy_dir

#: pixel connectivity of a polygon: 4 (edges) or 8 (edges and corners), as in GDAL/rasterio polygonize
CONNECTIVITIES = (4, 8)

_LAZY = {
    "vectorize": "geoseg.vectorization.pipeline",
    "VectorizeResult": "geoseg.vectorization.writers",
    "VECTOR_FORMATS": "geoseg.io.formats",
    "vector_driver": "geoseg.io.formats",
    "polygonize_stream": "geoseg.vectorization.polygons",
}

__all__ = ["CONNECTIVITIES", *_LAZY]


def __getattr__(name: str) -> Any:
    return lazy_attribute(globals(), _LAZY, name)


def __dir__() -> list[str]:
    return lazy_dir(globals(), _LAZY)
