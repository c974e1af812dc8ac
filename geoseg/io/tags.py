"""geoseg's metadata on the class rasters it writes: the one writer and the one reader of class names.

Class names are stored in two places:

* inside the file, as the dataset tag ``geoseg_classes`` holding a JSON list (index = class id), next to a color
  table (:func:`geoseg.io.write.write_class_metadata`); geoseg reads this first;
* as band 1's GDAL category names and a thematic raster attribute table (Value, Class_Name, Red, Green, Blue) in
  GDAL's PAM sidecar ``<raster>.aux.xml`` (:func:`write_class_table`): the standard place where GDAL keeps them for
  GeoTIFF (the format cannot hold them inside), read without any plugin by ``gdalinfo``, QGIS (a paletted legend of
  exactly the classes, with their names) and ArcGIS. geoseg reads them back from rasters other tools classified.

Predictions, label rasters and the bundled sample all carry the tag; vectorize, evaluate, training and the QGIS
plugin (through ``geoseg info --json``) read names here.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

CLASSES_TAG = "geoseg_classes"


def write_class_names(ds: rasterio.io.DatasetWriter, names: Sequence[str]) -> None:
    """Store class names (index = class id) on ``ds`` as a JSON list in the ``geoseg_classes`` tag."""
    ds.update_tags(**{CLASSES_TAG: json.dumps([str(n) for n in names])})


# GDAL's raster attribute table codes (gdal.h: GDALRATFieldType, GDALRATFieldUsage)
_GFT_INTEGER, _GFT_STRING = 0, 2
_GFU_NAME, _GFU_MINMAX, _GFU_RED, _GFU_GREEN, _GFU_BLUE = 2, 5, 6, 7, 8


def pam_path(raster: str | os.PathLike[str]) -> Path:
    """GDAL's PAM sidecar of ``raster``: ``<raster>.aux.xml``."""
    return Path(f"{os.fspath(raster)}.aux.xml")


def write_class_table(
    raster: str | os.PathLike[str], names: Sequence[str], colors: Sequence[Sequence[int]] | None = None
) -> Path | None:
    """Write band 1's category names and a thematic raster attribute table into ``raster``'s PAM sidecar.

    The table has one row per class id (``Value``, ``Class_Name`` and, with ``colors``, ``Red``/``Green``/``Blue``
    0-255), so QGIS shows a legend of exactly these classes and ArcGIS an attribute table; ``gdalinfo`` lists the
    categories. Other contents of an existing sidecar (statistics, metadata, other bands) are kept. Call it while
    the raster is written under its temporary name (:func:`geoseg.io.write.atomic_path` moves the sidecar with it).
    Returns the sidecar, or None for a GDAL virtual path (``/vsi...``), which has no sidecar file.

    Raises:
        OSError: the sidecar cannot be written.
    """
    raster = os.fspath(raster)
    if raster.startswith("/vsi") or "://" in raster:
        return None
    path = pam_path(raster)
    root = ET.parse(path).getroot() if path.exists() else ET.Element("PAMDataset")
    band = next((b for b in root.findall("PAMRasterBand") if b.get("band") == "1"), None)
    if band is None:
        band = ET.SubElement(root, "PAMRasterBand", band="1")
    for tag in ("CategoryNames", "GDALRasterAttributeTable"):
        for old in band.findall(tag):
            band.remove(old)
    cats = ET.SubElement(band, "CategoryNames")
    for name in names:
        ET.SubElement(cats, "Category").text = str(name)
    rgb = [list(c)[:3] for c in colors or []][: len(names)]
    fields = [("Value", _GFT_INTEGER, _GFU_MINMAX), ("Class_Name", _GFT_STRING, _GFU_NAME)]
    if rgb and len(rgb) == len(names):
        fields += [
            ("Red", _GFT_INTEGER, _GFU_RED),
            ("Green", _GFT_INTEGER, _GFU_GREEN),
            ("Blue", _GFT_INTEGER, _GFU_BLUE),
        ]
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    for i, (name, kind, usage) in enumerate(fields):
        defn = ET.SubElement(rat, "FieldDefn", index=str(i))
        ET.SubElement(defn, "Name").text = name
        ET.SubElement(defn, "Type").text = str(kind)
        ET.SubElement(defn, "Usage").text = str(usage)
    for i, name in enumerate(names):
        row = ET.SubElement(rat, "Row", index=str(i))
        values = [i, name, *(int(v) for v in (rgb[i] if len(fields) > 2 else []))]
        for v in values:
            ET.SubElement(row, "F").text = str(v)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="unicode")
    return path


def read_class_table(raster: str | os.PathLike[str]) -> list[str] | None:
    """Class names from band 1's category names (index = value) or its raster attribute table (a name column and a
    value column) in ``raster``'s PAM sidecar, as GDAL, QGIS and ArcGIS write them; None when it has neither.
    Values without a name in a table are named ``class_<value>``."""
    path = pam_path(raster)
    if not path.is_file():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return None
    band = next((b for b in root.findall("PAMRasterBand") if b.get("band") == "1"), None)
    if band is None:
        return None
    cats = [c.text or "" for c in band.findall("CategoryNames/Category")]
    if any(cats):
        return cats
    rat = band.find("GDALRasterAttributeTable")
    if rat is None:
        return None
    usage = {int(d.findtext("Usage", "0")): int(d.get("index", "-1")) for d in rat.findall("FieldDefn")}
    if _GFU_NAME not in usage or _GFU_MINMAX not in usage:
        return None
    by_value: dict[int, str] = {}
    for row in rat.findall("Row"):
        cells = [f.text or "" for f in row.findall("F")]
        try:
            by_value[int(float(cells[usage[_GFU_MINMAX]]))] = cells[usage[_GFU_NAME]]
        except (IndexError, ValueError):
            return None
    if not by_value or min(by_value) < 0 or max(by_value) > 65535:
        return None
    return [by_value.get(v, f"class_{v}") for v in range(max(by_value) + 1)]


def read_class_names(ds: Any) -> list[str] | None:
    """The class names stored on a raster, or None when it has none.

    Reads the ``geoseg_classes`` tag (the JSON list geoseg writes, and the comma-joined list the QGIS plugin wrote
    on label rasters up to version 0.1.0), else the category names or attribute table GDAL keeps in the raster's
    PAM sidecar (:func:`read_class_table`). ``ds`` is an open rasterio dataset.
    """
    raw = ds.tags().get(CLASSES_TAG)
    if not raw:
        return read_class_table(ds.name) if isinstance(getattr(ds, "name", None), str) else None
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


__all__ = [
    "CLASSES_TAG",
    "class_legend",
    "pam_path",
    "read_class_names",
    "read_class_table",
    "write_class_names",
    "write_class_table",
]
