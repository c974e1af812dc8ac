"""Per-scene mosaics: a VRT over the region files (GDAL XML written directly) and an optional COG."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import rasterio
import rasterio.shutil
from affine import Affine

from geoseg.io.georef import Georeference
from geoseg.io.write import atomic_path

GDAL_TYPES = {
    "uint8": "Byte",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def build_vrt(
    dst: str | os.PathLike[str],
    regions: Sequence[tuple[str | os.PathLike[str], tuple[int, int]]],
    *,
    shape: tuple[int, int],
    transform: Affine,
    atomic: bool = True,
) -> Path:
    """Write a VRT of ``shape`` (rows, cols) placing each region file at its pixel (row, col) origin.

    Band type, nodata, description, color table and dataset tags are copied from the first region; so is the
    georeference when the scene has no geotransform (its GCPs or RPCs, shifted back to the scene's origin). Source
    paths are stored relative to the VRT's folder. Written atomically unless ``atomic=False`` (``dst`` is then
    already a temporary name in the final folder, e.g. from :func:`geoseg.io.write.atomic_path`).
    """
    dst = Path(dst)
    with rasterio.open(regions[0][0]) as ds:
        dtype, nodata, crs, tags = ds.dtypes[0], ds.nodata, ds.crs, ds.tags()
        desc = ds.descriptions[0]
        block = ds.block_shapes[0]
        georef = Georeference.of(ds).shifted(-regions[0][1][0], -regions[0][1][1])
        try:
            cmap = ds.colormap(1)
        except ValueError:
            cmap = None
    root = ET.Element("VRTDataset", rasterXSize=str(shape[1]), rasterYSize=str(shape[0]))
    if georef.kind == "transform":
        if crs is not None:
            ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = crs.to_wkt()
        ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in transform.to_gdal())
    if georef.gcps:
        attrs = {"Projection": georef.gcps_crs.to_wkt(), "dataAxisToSRSAxisMapping": "1,2"} if georef.gcps_crs else {}
        gcp_list = ET.SubElement(root, "GCPList", **attrs)
        for g in georef.gcps:
            point = {"Id": str(g.id or ""), "Info": str(g.info or ""), "Pixel": repr(float(g.col))}
            point |= {"Line": repr(float(g.row)), "X": repr(float(g.x)), "Y": repr(float(g.y))}
            ET.SubElement(gcp_list, "GCP", point, Z=repr(float(g.z or 0.0)))
    if georef.rpcs is not None:
        rpc = ET.SubElement(root, "Metadata", domain="RPC")
        for k, v in sorted(georef.rpcs.to_gdal().items()):
            ET.SubElement(rpc, "MDI", key=k).text = v
    if tags:
        md = ET.SubElement(root, "Metadata")
        for k in sorted(tags):
            ET.SubElement(md, "MDI", key=k).text = tags[k]
    gtype = GDAL_TYPES[dtype]
    band = ET.SubElement(
        root, "VRTRasterBand", dataType=gtype, band="1", blockXSize=str(block[1]), blockYSize=str(block[0])
    )
    if desc:
        ET.SubElement(band, "Description").text = desc
    if nodata is not None:
        ET.SubElement(band, "NoDataValue").text = _num(nodata)
    if cmap:
        ET.SubElement(band, "ColorInterp").text = "Palette"
        table = ET.SubElement(band, "ColorTable")
        for i in range(max(cmap) + 1):
            c = cmap.get(i, (0, 0, 0, 0))
            ET.SubElement(table, "Entry", c1=str(c[0]), c2=str(c[1]), c3=str(c[2]), c4=str(c[3]))
    for path, (r0, c0) in regions:
        with rasterio.open(path) as ds:
            h, w, rb = ds.height, ds.width, ds.block_shapes[0]
        src = ET.SubElement(band, "SimpleSource")
        rel = os.path.relpath(Path(path).resolve(), dst.resolve().parent)
        ET.SubElement(src, "SourceFilename", relativeToVRT="1").text = Path(rel).as_posix()
        ET.SubElement(src, "SourceBand").text = "1"
        ET.SubElement(
            src,
            "SourceProperties",
            RasterXSize=str(w),
            RasterYSize=str(h),
            DataType=gtype,
            BlockXSize=str(rb[1]),
            BlockYSize=str(rb[0]),
        )
        ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
        ET.SubElement(src, "DstRect", xOff=str(c0), yOff=str(r0), xSize=str(w), ySize=str(h))
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode") + "\n"
    if not atomic:
        dst.write_text(text, encoding="utf-8")
        return dst
    with atomic_path(dst, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return dst


def build_cog(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, overwrite: bool = True, atomic: bool = True
) -> Path:
    """Copy a mosaic to one Cloud-Optimized GeoTIFF (DEFLATE, mode-resampled overviews).

    Written atomically (GDAL's temporary overview file included) unless ``atomic=False`` (``dst`` is then already a
    temporary name, e.g. from :func:`geoseg.io.write.atomic_path`).
    """
    dst = Path(dst)
    if not atomic:
        _copy_cog(src, dst)
        return dst
    with atomic_path(dst, overwrite=overwrite) as tmp:
        _copy_cog(src, tmp)
    return dst


def _copy_cog(src: str | os.PathLike[str], tmp: Path) -> None:
    rasterio.shutil.copy(
        str(src),
        str(tmp),
        driver="COG",
        COMPRESS="DEFLATE",
        OVERVIEW_RESAMPLING="MODE",
        BIGTIFF="IF_SAFER",
        NUM_THREADS="ALL_CPUS",
    )


__all__ = ["build_cog", "build_vrt"]
