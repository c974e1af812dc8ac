"""geoseg's metadata on the class rasters it writes: the one writer and the one reader of the class-name tag.

Class names are stored as the dataset tag ``geoseg_classes`` holding a JSON list (index = class id), next to a color
table (:func:`geoseg.io.write.write_class_metadata`). Predictions, label rasters and the bundled sample all carry it;
vectorize, evaluate, training and the QGIS plugin (through ``geoseg info --json``) read it back here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio

CLASSES_TAG = "geoseg_classes"


def write_class_names(ds: rasterio.io.DatasetWriter, names: Sequence[str]) -> None:
    """Store class names (index = class id) on ``ds`` as a JSON list in the ``geoseg_classes`` tag."""
    ds.update_tags(**{CLASSES_TAG: json.dumps([str(n) for n in names])})


def read_class_names(ds: Any) -> list[str] | None:
    """The class names stored on a raster (``geoseg_classes`` tag), or None when it has none.

    Reads the JSON list geoseg writes, and the comma-joined list the QGIS plugin wrote on label rasters up to
    version 0.1.0. ``ds`` is an open rasterio dataset.
    """
    raw = ds.tags().get(CLASSES_TAG)
    if not raw:
        return None
    if not raw.lstrip().startswith("["):
        return [n for n in raw.split(",") if n] or None
    try:
        names = json.loads(raw)
    except ValueError:
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def class_legend(ds: Any) -> dict[str, Any]:
    """What a map legend needs from a class raster: ``classes`` (names or None), ``colors`` (one ``[r, g, b]`` per
    class id of the color table, or None) and ``nodata`` (the class raster's nodata value or None)."""
    colors = None
    if ds.count >= 1 and np.dtype(ds.dtypes[0]).kind in "iu":
        try:
            cmap = ds.colormap(1)
        except ValueError:  # no color table
            cmap = None
        if cmap:
            colors = [[int(v) for v in cmap.get(i, (0, 0, 0, 0))[:3]] for i in range(max(cmap) + 1)]
    nodata = ds.nodata
    return {"classes": read_class_names(ds), "colors": colors, "nodata": None if nodata is None else float(nodata)}


__all__ = ["CLASSES_TAG", "class_legend", "read_class_names", "write_class_names"]
