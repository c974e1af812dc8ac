"""Loaders for the public benchmark scenes: image raster, labels (raster or polygons) and class names.

The hyperspectral scenes (MATLAB .mat files, read with scipy) are converted into GeoTIFFs without georeference
(pixel coordinates, no CRS); Sen1Floods11 is used as distributed; SpaceNet buildings become polygons with a class id.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio

from geoseg.errors import InputNotFoundError, MissingDependencyError

LABEL_NODATA = 255
SALINAS_A_CLASSES = {
    1: "brocoli_green_weeds_1",
    10: "corn_senesced_green_weeds",
    11: "lettuce_romaine_4wk",
    12: "lettuce_romaine_5wk",
    13: "lettuce_romaine_6wk",
    14: "lettuce_romaine_7wk",
}
SAMSON_CLASSES = ["rock", "tree", "water"]


def _loadmat(path: Path) -> dict:
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover
        raise MissingDependencyError("reading .mat scenes needs scipy: pip install scipy") from exc
    if not path.exists():
        raise InputNotFoundError(f"dataset file not found: {path}")
    return loadmat(path)


def _write(path: Path, data: np.ndarray, nodata: float | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if data.ndim == 2:
        data = data[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype.name,
        nodata=nodata,
        compress="deflate",
        tiled=True,
    ) as ds:
        ds.write(data)
    return path


def salinas_a(folder: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> tuple[Path, Path, list[str]]:
    """Salinas-A (AVIRIS, 83 x 86 px, 204 bands): image (int16), labels remapped to 0..5 (255 = unlabelled)."""
    folder, out = Path(folder), Path(out_dir)
    cube = _loadmat(folder / "SalinasA_corrected.mat")["salinasA_corrected"]
    gt = _loadmat(folder / "SalinasA_gt.mat")["salinasA_gt"]
    labels = np.full(gt.shape, LABEL_NODATA, np.uint8)
    for new, old in enumerate(SALINAS_A_CLASSES):
        labels[gt == old] = new
    img = _write(out / "salinas_a.tif", cube.transpose(2, 0, 1).astype(np.int16), None)
    lab = _write(out / "salinas_a_labels.tif", labels, LABEL_NODATA)
    return img, lab, list(SALINAS_A_CLASSES.values())


def samson(folder: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> tuple[Path, Path, list[str]]:
    """Samson (95 x 95 px, 156 bands): image (float32 reflectance), labels = dominant abundance (rock/tree/water)."""
    folder, out = Path(folder), Path(out_dir)
    y = _loadmat(folder / "Samson.mat")["Y"]
    a = _loadmat(folder / "_EndSamson.mat")["A"]
    cube = y.reshape(156, 95, 95, order="F").astype(np.float32)
    labels = a.argmax(0).reshape(95, 95, order="F").astype(np.uint8)
    img = _write(out / "samson.tif", cube, None)
    lab = _write(out / "samson_labels.tif", labels, LABEL_NODATA)
    return img, lab, SAMSON_CLASSES


SEN1FLOODS11_CLASSES = ["not_water", "water"]
SPACENET_CLASSES = ["background", "building"]


def sen1floods11(folder: str | os.PathLike[str]) -> tuple[Path, Path, list[str]]:
    """Sen1Floods11 hand-labelled chip (Bonafilia et al. 2020): the Sentinel-2 image (512 x 512 px, 13 bands B1..B12
    with B8A, int16 TOA x 10000, nodata 0, EPSG:4326) and its label raster (int16: 0 not water, 1 water, -1 nodata),
    both used as they are (no copy)."""
    folder = Path(folder)
    images = sorted(folder.glob("*_S2Hand.tif"))
    labels = sorted(folder.glob("*_LabelHand.tif"))
    if not images or not labels:
        raise InputNotFoundError(f"no *_S2Hand.tif / *_LabelHand.tif pair in {folder}")
    return images[0], labels[0], list(SEN1FLOODS11_CLASSES)


def spacenet_buildings(folder: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> tuple[Path, Path, list[str]]:
    """SpaceNet sample (CosmiQ solaris): the 900 x 900 px panchromatic image (uint16, nodata 0, EPSG:32616, 0.5 m)
    and its building footprints as polygons with an integer ``class_id`` attribute (1 = building), written to
    ``out_dir/buildings.gpkg``; train with ``class_field="class_id"`` and ``background=0``. Needs geopandas."""
    try:
        import geopandas as gpd
    except ImportError as exc:  # pragma: no cover
        raise MissingDependencyError("the SpaceNet polygons need geopandas: pip install 'geoseg[vector]'") from exc
    folder, out = Path(folder), Path(out_dir)
    src = folder / "geotiff_labels.geojson"
    image = folder / "sample_geotiff.tif"
    for p in (src, image):
        if not p.exists():
            raise InputNotFoundError(f"dataset file not found: {p}")
    gdf = gpd.read_file(src)[["geometry"]]
    gdf["class_id"] = 1
    out.mkdir(parents=True, exist_ok=True)
    polygons = out / "buildings.gpkg"
    gdf.to_file(polygons, driver="GPKG")
    return image, polygons, list(SPACENET_CLASSES)


SPACENET_ROAD_CLASSES = ["background", "road"]


def spacenet_roads(folder: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> tuple[Path, Path, list[str]]:
    """SpaceNet road sample (CosmiQ solaris, Las Vegas): the 1300 x 1300 px single-band image (uint16, EPSG:4326,
    ~0.3 m) and its road mask (0/255 on the same grid) as class ids 0 = background, 1 = road, written to
    ``out_dir/roads.tif`` with the image's georeference."""
    folder, out = Path(folder), Path(out_dir)
    image, mask = folder / "road_mask_input.tif", folder / "sample_road_raster_mask.tif"
    for p in (image, mask):
        if not p.exists():
            raise InputNotFoundError(f"dataset file not found: {p}")
    with rasterio.open(image) as img, rasterio.open(mask) as m:
        profile = {"crs": img.crs, "transform": img.transform}
        ids = (m.read(1) > 0).astype(np.uint8)
    out.mkdir(parents=True, exist_ok=True)
    labels = _write(out / "roads.tif", ids, LABEL_NODATA)
    with rasterio.open(labels, "r+") as ds:
        ds.crs, ds.transform = profile["crs"], profile["transform"]
    return image, labels, list(SPACENET_ROAD_CLASSES)
