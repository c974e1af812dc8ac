"""evaluate: streaming scores checked against scikit-learn; raster/vector truth, grids, AOI, errors, real data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasters import TRANSFORM, UTM, class_scene, write_raster
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    jaccard_score,
    precision_recall_fscore_support,
)

from geoseg.errors import (
    GridMismatchWarning,
    InputNotFoundError,
    NoOverlapError,
    NotGeoreferencedWarning,
    UnknownClassError,
)
from geoseg.evaluation import evaluate
from geoseg.vectorization import vectorize


def sklearn_check(rep, t: np.ndarray, p: np.ndarray, n: int) -> None:
    labels = list(range(n))
    np.testing.assert_array_equal(rep.matrix, confusion_matrix(t, p, labels=labels))
    iou = jaccard_score(t, p, labels=labels, average=None, zero_division=0)
    iou[(np.bincount(t, minlength=n) + np.bincount(p, minlength=n)) == 0] = np.nan  # absent from both: undefined
    prec, rec, f1, sup = precision_recall_fscore_support(t, p, labels=labels, zero_division=np.nan)
    got = np.array([[c.iou, c.precision, c.recall, c.f1] for c in rep.classes])
    np.testing.assert_allclose(got[:, 0], iou, equal_nan=True)
    np.testing.assert_allclose(got[:, 1], prec, equal_nan=True)
    np.testing.assert_allclose(got[:, 2], rec, equal_nan=True)
    present = (sup > 0) | (np.bincount(p, minlength=n) > 0)
    np.testing.assert_allclose(got[present, 3], np.nan_to_num(f1[present]))
    assert np.isnan(got[~present]).all()
    assert [c.support for c in rep.classes] == sup.tolist()
    assert rep.miou == pytest.approx(np.nanmean(iou))
    assert rep.overall_accuracy == pytest.approx(accuracy_score(t, p))
    assert rep.kappa == pytest.approx(cohen_kappa_score(t, p, labels=labels))
    freq = sup / sup.sum()
    assert rep.fwiou == pytest.approx(np.nansum(freq * np.nan_to_num(iou)))
    assert rep.pixels == t.size


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_sklearn_with_nodata_ignore_and_absent_classes(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 6  # class 4 never in truth, class 5 absent from both
    truth = rng.choice([0, 1, 2, 3], size=(53, 47), p=[0.4, 0.3, 0.2, 0.1]).astype(np.uint8)
    pred = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 5, size=truth.shape)).astype(np.uint8)
    pred[:5, :] = 255  # prediction nodata
    truth[-4:, :7] = 254  # truth nodata
    truth[20:24, 10:30] = 9  # ignored
    p_path = write_raster(tmp_path / "p.tif", pred, nodata=255)
    t_path = write_raster(tmp_path / "t.tif", truth, nodata=254)
    rep = evaluate(p_path, t_path, classes=[f"c{i}" for i in range(n)], ignore_index=9, window=16)
    keep = (pred != 255) & (truth != 254) & (truth != 9)
    sklearn_check(rep, truth[keep].astype(int), pred[keep].astype(int), n)
    assert rep.classes[0].name == "c0"
    assert rep.classes[1].support_area == pytest.approx(rep.classes[1].support * 100.0)
    assert rep.classes[1].support_m2 == pytest.approx(rep.classes[1].support * 100.0)
    assert rep.extra["excluded_pixels"]["ignored"] == int(((truth == 9) & (pred != 255)).sum())
    json.dumps(rep.to_dict())


def test_window_size_does_not_change_result(tmp_path: Path) -> None:
    _, labels = class_scene(70, 90, classes=4)
    rng = np.random.default_rng(3)
    pred = np.where(rng.random(labels.shape) < 0.8, labels, rng.integers(0, 4, labels.shape)).astype(np.uint8)
    p = write_raster(tmp_path / "p.tif", pred)
    t = write_raster(tmp_path / "t.tif", labels)
    a = evaluate(p, t, classes=4, window=7)
    b = evaluate(p, t, classes=4, window=4096)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    # classes inferred from the data when not given
    c = evaluate(p, t, window=13)
    np.testing.assert_array_equal(c.matrix, a.matrix)


def test_truth_on_other_grid_is_resampled_with_warning(tmp_path: Path) -> None:
    _, labels = class_scene(40, 48, classes=3)
    p = write_raster(tmp_path / "p.tif", labels)
    fine = np.kron(labels, np.ones((2, 2), dtype=np.uint8))
    t = write_raster(tmp_path / "t.tif", fine, transform=Affine(5.0, 0, 500000.0, 0, -5.0, 4600000.0))
    with pytest.warns(GridMismatchWarning, match="nearest"):
        rep = evaluate(p, t, classes=3, window=16)
    assert rep.overall_accuracy == 1.0 and rep.pixels == labels.size
    # truth covering only part of the prediction: the rest is not evaluated
    part = write_raster(tmp_path / "part.tif", labels[:20], transform=TRANSFORM @ Affine.translation(0, 10))
    with pytest.warns(GridMismatchWarning):
        rep = evaluate(p, part, classes=3, window=16)
    assert rep.pixels == 20 * 48
    # another CRS
    from rasterio.warp import calculate_default_transform, reproject

    dst_t, w, h = calculate_default_transform(
        UTM, "EPSG:4326", 48, 40, *rasterio.transform.array_bounds(40, 48, TRANSFORM)
    )
    geo = np.full((h, w), 255, dtype=np.uint8)
    reproject(
        labels, geo, src_transform=TRANSFORM, src_crs=UTM, dst_transform=dst_t, dst_crs="EPSG:4326", dst_nodata=255
    )
    g = write_raster(tmp_path / "g.tif", geo, crs="EPSG:4326", transform=dst_t, nodata=255)
    with pytest.warns(GridMismatchWarning):
        rep = evaluate(p, g, classes=3)
    assert rep.overall_accuracy > 0.9


def test_vector_truth_equals_raster_truth(tmp_path: Path) -> None:
    _, labels = class_scene(60, 50, classes=3, seed=4)
    rng = np.random.default_rng(4)
    pred = np.where(rng.random(labels.shape) < 0.75, labels, rng.integers(0, 3, labels.shape)).astype(np.uint8)
    p = write_raster(tmp_path / "p.tif", pred)
    t = write_raster(tmp_path / "t.tif", labels)
    polys = vectorize(t, tmp_path / "labels.gpkg").path
    ref = evaluate(p, t, classes=["a", "b", "c"])
    got = evaluate(p, polys, classes=["a", "b", "c"], window=16)
    np.testing.assert_array_equal(got.matrix, ref.matrix)
    by_name = evaluate(p, polys, classes=["a", "b", "c"], truth_class_field="class_name", window=16)
    np.testing.assert_array_equal(by_name.matrix, ref.matrix)
    # reprojected labels (EPSG:4326) are reprojected back per window
    gdf = gpd.read_file(polys).to_crs("EPSG:4326")
    got = evaluate(p, gdf, classes=3)
    assert got.overall_accuracy == pytest.approx(ref.overall_accuracy, abs=0.01)


def test_vector_background_and_aoi(tmp_path: Path) -> None:
    pred = np.zeros((20, 20), dtype=np.uint8)
    pred[5:10, 5:10] = 1
    p = write_raster(tmp_path / "p.tif", pred)
    x0, y0 = TRANSFORM @ (5, 5)
    x1, y1 = TRANSFORM @ (10, 12)
    gdf = gpd.GeoDataFrame({"class": [1]}, geometry=[shapely.box(x0, y1, x1, y0)], crs=UTM)
    rep = evaluate(p, gdf, classes=2)
    assert rep.pixels == 35 and rep.matrix.tolist() == [[0, 0], [10, 25]]
    rep = evaluate(p, gdf, classes=2, background=0)
    assert rep.pixels == 400 and rep.classes[1].iou == pytest.approx(25 / 35)
    ax1, _ = TRANSFORM @ (10, 0)
    xa, ya = TRANSFORM @ (0, 20)
    aoi = gpd.GeoDataFrame(geometry=[shapely.box(xa, ya, ax1, TRANSFORM.f)], crs=UTM)
    aoi.to_file(tmp_path / "aoi.geojson")
    rep = evaluate(p, gdf, classes=2, background=0, aoi=tmp_path / "aoi.geojson")
    assert rep.pixels == 200 and rep.extra["excluded_pixels"]["outside_aoi"] == 200


def test_geographic_support_m2(tmp_path: Path) -> None:
    a = np.ones((10, 10), dtype=np.uint8)
    t = Affine(0.001, 0, 10.0, 0, -0.001, 45.0)
    p = write_raster(tmp_path / "p.tif", a, crs="EPSG:4326", transform=t)
    rep = evaluate(p, p, classes=2, window=3)
    assert rep.classes[1].support_m2 == pytest.approx(787.0 * 1111.0, rel=0.01)
    assert rep.classes[1].support_area == pytest.approx(1e-4)


def test_errors(tmp_path: Path) -> None:
    a = np.zeros((10, 10), dtype=np.uint8)
    a[0, 0] = 7
    a[1, 1] = 9
    p = write_raster(tmp_path / "p.tif", np.zeros((10, 10), dtype=np.uint8))
    t = write_raster(tmp_path / "t.tif", a)
    with pytest.raises(UnknownClassError, match=r"truth .* class ids \[7, 9\] \(2 px\).*3 classes 0\.\.2"):
        evaluate(p, t, classes=["a", "b", "c"])
    far = write_raster(tmp_path / "far.tif", a, transform=TRANSFORM @ Affine.translation(1000, 0))
    with pytest.raises(NoOverlapError, match="does not overlap"):
        evaluate(p, far, classes=10)
    empty = write_raster(tmp_path / "e.tif", np.full((10, 10), 255, dtype=np.uint8), nodata=255)
    with pytest.raises(NoOverlapError, match="no pixel is valid.*prediction nodata 100 px"):
        evaluate(empty, t, classes=10)
    gdf = gpd.GeoDataFrame(
        {"kind": ["x"], "height": [3]}, geometry=[shapely.box(500000, 4599900, 500050, 4600000)], crs=UTM
    )
    with pytest.raises(UnknownClassError, match="no class attribute.*available fields: kind, height"):
        evaluate(p, gdf, classes=2)
    with pytest.raises(UnknownClassError, match="no attribute 'cls'.*kind, height"):
        evaluate(p, gdf, classes=2, truth_class_field="cls")
    with pytest.raises(UnknownClassError, match=r"class names \['x'\] that are not in the classes"):
        evaluate(p, gdf, classes=["a", "b"], truth_class_field="kind")
    aoi = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)], crs=UTM)
    with pytest.raises(NoOverlapError, match="area of interest"):
        evaluate(p, p, classes=2, aoi=aoi)
    with pytest.raises(InputNotFoundError):
        evaluate(p, tmp_path / "nope.tif")
    bigpred = write_raster(tmp_path / "bp.tif", np.full((10, 10), 5, dtype=np.uint8))
    with pytest.raises(UnknownClassError, match=r"prediction .* class ids \{5\} that are not among the 2 class names"):
        evaluate(bigpred, p, classes=2)


def test_unreferenced_truth_same_shape_is_pixel_aligned(tmp_path: Path) -> None:
    _, labels = class_scene(30, 30, classes=2)
    p = write_raster(tmp_path / "p.tif", labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = write_raster(tmp_path / "t.tif", labels, crs=None, transform=None)
    with pytest.warns(NotGeoreferencedWarning, match="pixel-aligned"):
        rep = evaluate(p, t, classes=2)
    assert rep.overall_accuracy == 1.0


def test_cli_evaluate(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from geoseg.cli.evaluate_cmd import evaluate_command

    _, labels = class_scene(30, 40, classes=3)
    p = write_raster(tmp_path / "p.tif", labels)
    t = write_raster(tmp_path / "t.tif", labels)
    out = tmp_path / "rep"
    r = CliRunner().invoke(
        evaluate_command, [str(p), str(t), "--classes", "a,b,c", "--report-dir", str(out), "--progress", "none"]
    )
    assert r.exit_code == 0, r.output
    assert "mIoU 1.000" in r.output
    assert sorted(x.name for x in out.iterdir()) == ["report.csv", "report.html", "report.json", "report.md"]
    bad = write_raster(tmp_path / "bad.tif", np.full((30, 40), 8, dtype=np.uint8))
    r = CliRunner().invoke(evaluate_command, [str(p), str(bad), "--classes", "a,b,c", "--progress", "none"])
    assert r.exit_code == 2 and "Error: truth" in r.output and "[8]" in r.output
    r = CliRunner().invoke(
        evaluate_command, [str(p), str(t), "--report-dir", str(tmp_path / "r"), "--format", "pdf", "--progress", "none"]
    )
    assert r.exit_code == 2 and "pdf" in r.output


def test_no_torch_in_subprocess() -> None:
    code = "import geoseg.evaluation, geoseg.report; import sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_spacenet_mask_vs_polygons(tmp_path: Path, shared_data: Path) -> None:
    d = shared_data / "spacenet_solaris"
    if not d.is_dir():
        pytest.skip("spacenet_solaris not present")
    with rasterio.open(d / "sample_geotiff.tif") as img:
        crs, transform, shape = img.crs, img.transform, img.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(d / "sample_fp_mask_from_geojson.tif") as m:
            mask = m.read(1)
    assert mask.shape == shape
    # the mask file has no geotransform: give it the image's grid in a temporary copy
    pred = write_raster(tmp_path / "mask.tif", (mask > 0).astype(np.uint8), crs=crs, transform=transform)
    labels = gpd.read_file(d / "geotiff_labels.geojson")
    with pytest.raises(UnknownClassError, match="available fields: access"):
        evaluate(pred, labels)
    labels["class_id"] = 1
    rep = evaluate(pred, labels, classes=["background", "building"], background=0, window=256)
    assert rep.pixels == shape[0] * shape[1]
    assert rep.classes[1].iou > 0.97, rep.format_table()
    assert rep.overall_accuracy > 0.995
    assert rep.classes[1].support_m2 == pytest.approx(rep.classes[1].support * 0.25)


def test_predict_postprocess_helper(tmp_path: Path) -> None:
    import click
    from click.testing import CliRunner

    from geoseg.cli.evaluate_cmd import PostProcessing

    _, labels = class_scene(30, 40, classes=3)
    p = write_raster(tmp_path / "p.tif", labels)
    scene = write_raster(tmp_path / "scene.tif", class_scene(30, 40, classes=3)[0])  # the truth is checked against it
    out = tmp_path / "classes.tif"

    @click.command()
    def run() -> None:
        plan = PostProcessing.plan(
            str(out),
            raster=str(scene),
            checkpoint=str(tmp_path / "m.safetensors"),
            probabilities=None,
            vector=str(tmp_path / "v.gpkg"),
            truth=str(p),
            report_dir=str(tmp_path / "r"),
            overwrite=False,
        )
        with plan.outputs:
            shutil.copy(p, plan.outputs.stage(out))  # stands for the prediction
            plan.run(plan.outputs.stage(out), progress_kind="none")

    r = CliRunner().invoke(run, [])
    assert r.exit_code == 0, r.output
    assert "mIoU 1.000" in r.output and (tmp_path / "v.gpkg").exists() and (tmp_path / "r" / "report.html").exists()
    assert out.exists() and not [q for q in tmp_path.iterdir() if ".partial" in q.name]


def _named(path: Path, ids: np.ndarray, names: list[str]) -> Path:
    from geoseg.io.tags import write_class_names

    write_raster(path, ids.astype(np.uint8))
    with rasterio.open(path, "r+") as ds:
        write_class_names(ds, names)
    return path


def test_truth_and_prediction_are_compared_by_their_stored_class_names(tmp_path: Path) -> None:
    """A truth raster that numbers the same classes otherwise is compared class by class (by name), not id by id;
    one that names other classes, or classes= that contradicts the map's stored names, is refused."""
    from geoseg.errors import InvalidParameterError

    _, ids = class_scene(48, 48, bands=1, classes=3, seed=2)
    names = ["water", "forest", "crop"]
    pred = _named(tmp_path / "pred.tif", ids, names)
    order = [2, 0, 1]  # the truth's id of each class of the prediction: water is 2 there, forest 0, crop 1
    truth = _named(tmp_path / "truth.tif", np.asarray(order)[ids], ["forest", "crop", "water"])
    report = evaluate(pred, truth)
    assert report.miou == 1.0 and [c.name for c in report.classes] == names
    placeholder = _named(tmp_path / "ph.tif", ids, ["class_0", "class_1", "class_2"])
    assert evaluate(pred, placeholder).miou == 1.0  # placeholder names only number the classes: ids compared
    other = _named(tmp_path / "other.tif", ids, ["a", "b", "c"])
    with pytest.raises(InvalidParameterError, match=r"truth .*other\.tif stores class names the prediction does not "
                       r"have \(a,b,c; truth: a,b,c; prediction: water,forest,crop\)"):  # fmt: skip
        evaluate(pred, other)
    with pytest.raises(InvalidParameterError, match=r"classes=\[...\] .crop,water,forest. contradicts the class "
                       r"names stored on the prediction .*pred\.tif \(water,forest,crop, index"):  # fmt: skip
        evaluate(pred, pred, classes=["crop", "water", "forest"])
    assert evaluate(pred, pred, classes=names).miou == 1.0
