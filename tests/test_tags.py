"""The class-name tag (geoseg.io.tags): one writer, one reader, used by every tool that reads class names."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasters import class_scene, write_raster

from geoseg.cli.main import cli
from geoseg.errors import InvalidParameterError
from geoseg.io import RasterSource
from geoseg.io.tags import CLASSES_TAG, class_legend, read_class_names, write_class_names
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
