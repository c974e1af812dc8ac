"""The class-name tag (geoseg.io.tags): one writer, one reader, used by every tool that reads class names."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasters import class_scene, write_raster

from geoseg.cli.main import cli
from geoseg.errors import InvalidParameterError
from geoseg.io import RasterSource
from geoseg.io.tags import CLASSES_TAG, class_legend, read_class_names, read_class_table, write_class_names
from geoseg.io.write import write_class_metadata


def test_written_names_are_read_back_by_vectorize_evaluate_training_and_info(tmp_path) -> None:
    from geoseg.evaluation import evaluate
    from geoseg.train.labels import LabelRaster
    from geoseg.vectorization import vectorize

    _, labels = class_scene(24, 24, classes=3)
    path = write_raster(tmp_path / "lab.tif", labels, nodata=255)
    names = ["water", "forest, mixed", "urban"]  # a comma inside a name survives (JSON, not comma-joined)
    with rasterio.open(path, "r+") as ds:
        write_class_metadata(ds, classes=names, colors=[[0, 0, 255], [0, 128, 0], [200, 0, 0]], nodata=255)
    with rasterio.open(path) as ds:
        assert json.loads(ds.tags()[CLASSES_TAG]) == names and read_class_names(ds) == names
        legend = class_legend(ds)
    assert legend["classes"] == names and legend["colors"][:3] == [[0, 0, 255], [0, 128, 0], [200, 0, 0]]
    assert legend["nodata"] == 255.0
    assert sorted(set(vectorize(path)["class_name"])) == sorted(names)
    assert [c.name for c in evaluate(path, path).classes] == names
    with RasterSource(path) as img:
        assert LabelRaster(path, img, None).classes == names  # training labels carry their names
    out = CliRunner().invoke(cli, ["info", str(path), "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["legend"]["classes"] == names


def test_comma_joined_names_from_older_plugin_label_rasters(tmp_path) -> None:
    path = write_raster(tmp_path / "lab.tif", np.zeros((4, 4), np.uint8))
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(**{CLASSES_TAG: "water,forest"})
    with rasterio.open(path) as ds:
        assert read_class_names(ds) == ["water", "forest"]
    with rasterio.open(path, "r+") as ds:
        write_class_names(ds, ["a"])
    with rasterio.open(path) as ds:
        assert read_class_names(ds) == ["a"] and class_legend(ds)["colors"] is None


def test_label_ids_beyond_the_stored_names_are_an_error(tmp_path) -> None:
    from geoseg.train.labels import LabelRaster

    path = write_raster(tmp_path / "lab.tif", np.array([[0, 1], [2, 2]], np.uint8))
    with rasterio.open(path, "r+") as ds:
        write_class_names(ds, ["a", "b"])
    with RasterSource(path) as img, pytest.raises(InvalidParameterError, match="2 class names stored on the raster"):
        LabelRaster(path, img, None)
    with RasterSource(path) as img:
        assert LabelRaster(path, img, ["a", "b", "c"]).classes == ["a", "b", "c"]


def _gdal_view(path) -> ET.Element:
    """Band 1 as GDAL itself reads it: a VRT copy serializes the category names and attribute table GDAL found."""
    import rasterio.shutil

    vrt = f"{path}.vrt"
    rasterio.shutil.copy(path, vrt, driver="VRT")
    return ET.parse(vrt).getroot().find("VRTRasterBand")


def test_class_names_and_colors_reach_gdal_qgis_and_arcgis_as_categories_and_attribute_table(tmp_path) -> None:
    """A prediction's class names are GDAL category names and a thematic attribute table (Value, Class_Name, RGB) in
    the standard PAM sidecar, which gdalinfo, QGIS and ArcGIS read without any geoseg or QGIS style file."""
    from model_utils import tiny_checkpoint

    from geoseg.inference import predict_raster

    data, _ = class_scene(32, 32, bands=2)
    src = write_raster(tmp_path / "in.tif", data)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], ["water", "forest, mixed", "urban"])
    out = predict_raster(src, tmp_path / "c.tif", model=ck, device="cpu").output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("c.tif")) == ["c.tif", "c.tif.aux.xml"]
    band = _gdal_view(out)
    assert [c.text for c in band.findall("CategoryNames/Category")] == ["water", "forest, mixed", "urban"]
    rat = band.find("GDALRasterAttributeTable")
    assert rat.get("tableType") == "thematic"
    fields = [(d.findtext("Name"), d.findtext("Usage")) for d in rat.findall("FieldDefn")]
    assert fields == [("Value", "5"), ("Class_Name", "2"), ("Red", "6"), ("Green", "7"), ("Blue", "8")]
    with rasterio.open(out) as ds:
        cmap = ds.colormap(1)
    rows = [[f.text for f in r.findall("F")] for r in rat.findall("Row")]
    assert rows == [[str(i), n, *map(str, cmap[i][:3])] for i, n in enumerate(["water", "forest, mixed", "urban"])]


def test_class_table_keeps_other_sidecar_contents_and_is_read_from_other_tools(tmp_path) -> None:
    path = write_raster(tmp_path / "lab.tif", np.array([[1, 3], [3, 1]], np.uint8), nodata=0)
    sidecar = tmp_path / "lab.tif.aux.xml"
    # a sidecar as another tool leaves it: statistics on band 1, and an attribute table for values 1 and 3 only
    sidecar.write_text(
        '<PAMDataset><PAMRasterBand band="1"><Metadata><MDI key="STATISTICS_MEAN">2</MDI></Metadata>'
        '<GDALRasterAttributeTable tableType="thematic">'
        '<FieldDefn index="0"><Name>VALUE</Name><Type>0</Type><Usage>5</Usage></FieldDefn>'
        '<FieldDefn index="1"><Name>CLASS_NAME</Name><Type>2</Type><Usage>2</Usage></FieldDefn>'
        '<Row index="0"><F>1</F><F>wheat</F></Row><Row index="1"><F>3</F><F>maize</F></Row>'
        "</GDALRasterAttributeTable></PAMRasterBand></PAMDataset>"
    )
    with rasterio.open(path) as ds:  # no geoseg tag: names come from the attribute table, by value
        assert read_class_names(ds) == ["class_0", "wheat", "class_2", "maize"]
    info = json.loads(CliRunner().invoke(cli, ["info", str(path), "--json"]).output)
    assert info["legend"]["classes"] == ["class_0", "wheat", "class_2", "maize"]
    with rasterio.open(path, "r+") as ds:
        write_class_metadata(ds, classes=["none", "wheat", "rye", "maize"], colors=None, nodata=0)
    band = _gdal_view(path)
    assert [c.text for c in band.findall("CategoryNames/Category")] == ["none", "wheat", "rye", "maize"]
    assert [d.findtext("Name") for d in band.findall("GDALRasterAttributeTable/FieldDefn")] == ["Value", "Class_Name"]
    assert "STATISTICS_MEAN" in sidecar.read_text()  # the other tool's statistics are kept
    assert read_class_table(path) == ["none", "wheat", "rye", "maize"]
