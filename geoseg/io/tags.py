"""geoseg's metadata tags on the rasters it writes."""

from __future__ import annotations

import json

import rasterio


def class_names_from_tags(ds: rasterio.DatasetReader) -> list[str] | None:
    """Class names stored by geoseg on a class raster (tag ``geoseg_classes``), if any."""
    raw = ds.tags().get("geoseg_classes")
    if not raw:
        return None
    try:
        names = json.loads(raw)
    except ValueError:
        return None
    return [str(n) for n in names] if isinstance(names, list) else None
