"""Label polygons (geoseg.io.labels): one reader for training and evaluation, over every vector format."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from rasterio.windows import Window
from rasters import TRANSFORM, UTM, class_scene, write_raster

from geoseg.errors import InvalidParameterError, UnknownClassError
from geoseg.evaluation import evaluate
from geoseg.io import RasterSource
from geoseg.io.labels import CLASS_FIELD_CANDIDATES, VECTOR_SUFFIXES, PolygonLabels, is_vector
from geoseg.vectorization import vectorize

NAMES = ["crop", "forest", "water"]
FORMATS = [".gpkg", ".geojson", ".shp", ".fgb", ".parquet"]


def _write(gdf: gpd.GeoDataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        gdf.to_parquet(path)
    else:
        gdf.to_file(path)
    return path


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, Path, np.ndarray, gpd.GeoDataFrame]:
    """An image, its label raster, and the label raster as polygons (class_id and class_name) in EPSG:4326."""
    data, labels = class_scene(40, 48, bands=2, classes=3, seed=7)
    img = write_raster(tmp_path / "img.tif", data)
    lab = write_raster(tmp_path / "lab.tif", labels)
    gdf = vectorize(lab, classes=NAMES)[["class_id", "class_name", "geometry"]]
    return img, lab, labels, gdf


@pytest.mark.parametrize("suffix", FORMATS)
def test_every_format_trains_and_evaluates_the_same_labels(tmp_path: Path, scene, suffix: str) -> None:
    """GPKG, GeoJSON, Shapefile, FlatGeobuf and GeoParquet give the label raster exactly, for training (class field
    found by name, ids or names) and for evaluation."""
    from geoseg.train.labels import open_labels

    img, lab, labels, gdf = scene
    path = _write(gdf, tmp_path / f"labels{suffix}")
    assert is_vector(path)
    whole = Window(0, 0, labels.shape[1], labels.shape[0])
    with RasterSource(img) as src:
        by_id = open_labels(path, src)  # class_id found by name, like evaluate
        assert by_id.classes == ["class_0", "class_1", "class_2"]
        np.testing.assert_array_equal(by_id.read(whole), labels)
        by_name = open_labels(path, src, class_field="class_name")
        assert by_name.classes == NAMES
        np.testing.assert_array_equal(by_name.read(whole), labels)
        np.testing.assert_array_equal(by_name.read(Window(5, 3, 20, 30)), labels[3:33, 5:25])
    pred = np.where(np.arange(labels.size).reshape(labels.shape) % 7 == 0, (labels + 1) % 3, labels).astype(np.uint8)
    p = write_raster(tmp_path / "pred.tif", pred)
    ref = evaluate(p, lab, classes=NAMES)
    np.testing.assert_array_equal(evaluate(p, path, classes=NAMES, window=16).matrix, ref.matrix)
    got = evaluate(p, path, classes=NAMES, truth_class_field="class_name", window=16)
    np.testing.assert_array_equal(got.matrix, ref.matrix)


def test_training_reads_geoparquet(tmp_path: Path, scene) -> None:
    """train_model takes GeoParquet labels (read with pyarrow, whatever GDAL drivers the wheels carry)."""
    from geoseg.models import read_config
    from geoseg.train import train_model

    img, _, _, gdf = scene
    path = _write(gdf, tmp_path / "labels.parquet")
    res = train_model(img, path, tmp_path / "m.safetensors", arch="tiny", arch_kwargs={"width": 8}, epochs=1,
                      chip=16, batch_size=4, chips_per_epoch=8, block=16, val_fraction=0.0, device="cpu",
                      class_field="class_name")  # fmt: skip
    assert read_config(res.checkpoint).classes == NAMES


@pytest.mark.parametrize("field", CLASS_FIELD_CANDIDATES)
def test_class_field_is_found_the_same_way_for_training_and_evaluation(tmp_path: Path, field: str) -> None:
    from geoseg.train.labels import open_labels

    labels = np.zeros((10, 10), np.uint8)
    labels[:, 5:] = 1
    img = write_raster(tmp_path / "img.tif", np.ones((1, 10, 10), np.float32))
    x0, y0 = TRANSFORM @ (0, 0)
    x1, y1 = TRANSFORM @ (5, 10)
    x2, _ = TRANSFORM @ (10, 10)
    # ids as text ("0", "1"): ids for both, as they always were for evaluation
    gdf = gpd.GeoDataFrame({"other": ["x", "y"], field: ["0", "1"]},
                           geometry=[shapely.box(x0, y1, x1, y0), shapely.box(x1, y1, x2, y0)], crs=UTM)  # fmt: skip
    path = _write(gdf, tmp_path / "l.gpkg")
    with RasterSource(img) as src:
        lv = open_labels(path, src)
        np.testing.assert_array_equal(lv.read(Window(0, 0, 10, 10)), labels)
    p = write_raster(tmp_path / "p.tif", labels)
    assert evaluate(p, path, classes=2).overall_accuracy == 1.0


def test_unknown_names_and_missing_values_are_one_error_for_both(tmp_path: Path) -> None:
    from geoseg.train.labels import open_labels

    img = write_raster(tmp_path / "img.tif", np.ones((1, 10, 10), np.float32))
    box = shapely.box(*(TRANSFORM @ (0, 10)), *(TRANSFORM @ (10, 0)))
    gdf = gpd.GeoDataFrame({"class": ["a", None]}, geometry=[box, box], crs=UTM)
    path = _write(gdf, tmp_path / "l.geojson")
    p = write_raster(tmp_path / "p.tif", np.zeros((10, 10), np.uint8))
    with RasterSource(img) as src, pytest.raises(UnknownClassError, match="1 polygons have no 'class' value"):
        open_labels(path, src)
    with pytest.raises(UnknownClassError, match="1 polygons have no 'class' value"):
        evaluate(p, path, classes=["a", "b"])
    gdf = gpd.GeoDataFrame({"class": ["a", "c"]}, geometry=[box, box], crs=UTM)
    path = _write(gdf, tmp_path / "m.geojson")
    with RasterSource(img) as src, pytest.raises(InvalidParameterError, match=r"\['c'\] that are not in the classes"):
        open_labels(path, src, classes=["a", "b"])
    with pytest.raises(UnknownClassError, match=r"\['c'\] that are not in the classes"):
        evaluate(p, path, classes=["a", "b"])


def test_overlapping_polygons_later_wins_and_any_id_survives(tmp_path: Path) -> None:
    """Burn order is file order; negative or large ids are kept exactly and uncovered pixels are reported apart."""
    big = shapely.box(*(TRANSFORM @ (0, 10)), *(TRANSFORM @ (10, 0)))
    small = shapely.box(*(TRANSFORM @ (2, 6)), *(TRANSFORM @ (6, 2)))
    gdf = gpd.GeoDataFrame({"class_id": [-1, 2**40]}, geometry=[big, small], crs=UTM)
    labels = PolygonLabels(gdf, crs=UTM, transform=TRANSFORM)
    ids, covered = labels.rasterize(Window(0, 0, 12, 12))
    assert covered[:10, :10].all() and not covered[10:].any() and not covered[:, 10:].any()
    assert (ids[2:6, 2:6] == 2**40).all() and ids[0, 0] == -1 and ids.dtype == np.int64


def test_vector_suffixes_cover_the_writers_formats() -> None:
    from geoseg.vectorization import VECTOR_FORMATS

    assert set(VECTOR_FORMATS) <= set(VECTOR_SUFFIXES)


def test_names_keep_the_layer_s_own_ids_from_an_id_field(tmp_path: Path) -> None:
    """Names alone are numbered alphabetically; with the id field the layer's own ids are used, for training and
    evaluation alike, and the names name those ids."""
    from geoseg.train import train_model
    from geoseg.train.labels import open_labels

    data, labels = class_scene(40, 48, bands=2, classes=3, seed=7)
    img = write_raster(tmp_path / "img.tif", data)
    own = {0: ("water", 2), 1: ("urban", 0), 2: ("forest", 1)}  # raster id -> (name, the layer's own id)
    gdf = vectorize(write_raster(tmp_path / "lab.tif", labels))[["class_id", "geometry"]]
    gdf["name"] = [own[i][0] for i in gdf["class_id"]]
    gdf["code"] = [own[i][1] for i in gdf["class_id"]]
    path = _write(gdf.drop(columns="class_id"), tmp_path / "labels.gpkg")
    window = Window(0, 0, 48, 40)
    with RasterSource(img) as src:
        alphabetical = open_labels(path, src, class_field="name")
        assert alphabetical.classes == ["forest", "urban", "water"]
        by_code = open_labels(path, src, class_field="name", id_field="code")
        assert by_code.classes == ["urban", "forest", "water"]
        expected = np.vectorize(lambda i: own[i][1])(labels)
        np.testing.assert_array_equal(by_code.read(window), expected)
    model = train_model(img, path, tmp_path / "m.safetensors", arch="tiny", class_field="name", id_field="code",
                        epochs=1, chip=16, chips_per_epoch=4, batch_size=4, block=16, device="cpu")  # fmt: skip
    from geoseg.models import read_config

    assert read_config(model.checkpoint).classes == ["urban", "forest", "water"]
    truth = write_raster(tmp_path / "truth.tif", expected.astype(np.uint8))
    report = evaluate(
        truth, path, classes=["urban", "forest", "water"], truth_class_field="name", truth_id_field="code"
    )
    assert report.miou == pytest.approx(1.0)
    gaps = gdf.assign(code=[{0: 4, 1: 1, 2: 2}[i] for i in gdf["class_id"]])  # ids without polygons are named
    labels_gaps = PolygonLabels(gaps, crs=UTM, transform=TRANSFORM, class_field="name", id_field="code")
    assert labels_gaps.classes == ["class_0", "urban", "forest", "class_3", "water"]


def test_an_id_field_that_disagrees_with_the_names_is_an_error(tmp_path: Path) -> None:
    square = [shapely.box(i, 0, i + 1, 1) for i in range(3)]
    two_names = gpd.GeoDataFrame({"name": ["a", "b", "a"], "code": [0, 0, 1]}, geometry=square, crs=UTM)
    with pytest.raises(
        UnknownClassError, match=r"'code' and 'name' disagree \(id 0: \['a', 'b'\]; 'a': ids \[0, 1\]\)"
    ):
        PolygonLabels(two_names, crs=UTM, transform=TRANSFORM, class_field="name", id_field="code")
    not_ids = two_names.assign(code=["x", "y", "z"])
    with pytest.raises(UnknownClassError, match="the id field 'code' .* must hold class ids"):
        PolygonLabels(not_ids, crs=UTM, transform=TRANSFORM, class_field="name", id_field="code")
    with pytest.raises(UnknownClassError, match="no attribute 'nope'"):
        PolygonLabels(two_names, crs=UTM, transform=TRANSFORM, class_field="name", id_field="nope")
