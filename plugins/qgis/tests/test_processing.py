"""The geoseg algorithms run through processing.run / runAndLoadResults in a real headless QGIS."""

from __future__ import annotations

import glob
import json
import os
import time
from pathlib import Path

import numpy as np
import processing
import pytest
from conftest import CLASSES, geoseg_env
from helpers import RecordingFeedback, polygons, raster, same_crs
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsFeature,
    QgsPalettedRasterRenderer,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterVectorLayer,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

pytestmark = pytest.mark.usefixtures("qgis_app")
CPU = 1  # index of "cpu" in the Device enum


def expected_backend_line(mode: str) -> str:
    """How the log names the geoseg process: the configured environment, or QGIS's own Python."""
    if mode == "configured":
        return f"geoseg backend: subprocess {os.environ['GEOSEG_PYTHON']}"
    return "(no geoseg environment is configured; geoseg is importable in QGIS's Python)"


def test_provider_and_algorithms() -> None:
    provider = QgsApplication.processingRegistry().providerById("geoseg")
    assert provider is not None and provider.name() == "geoseg"
    ids = sorted(a.id() for a in provider.algorithms())
    assert ids == ["geoseg:evaluate", "geoseg:segmentraster", "geoseg:trainmodel", "geoseg:vectorizeclasses"]
    alg = QgsApplication.processingRegistry().algorithmById("geoseg:segmentraster")
    assert alg.displayName() == "Segment raster"
    names = [p.name() for p in alg.parameterDefinitions()]
    for expected in ("INPUT", "MODEL", "BANDS", "TILE", "OVERLAP", "DEVICE", "OUTPUT", "PROBABILITIES", "POLYGONS"):
        assert expected in names


@pytest.fixture(scope="module")
def segmented(tmp_path_factory: pytest.TempPathFactory, scene: str, checkpoint: str) -> dict:
    out = tmp_path_factory.mktemp("segment")
    feedback = RecordingFeedback()
    res = processing.run(
        "geoseg:segmentraster",
        {
            "INPUT": scene,
            "MODEL": checkpoint,
            "BANDS": "",
            "TILE": 128,
            "OVERLAP": 16,
            "DEVICE": CPU,
            "OUTPUT": str(out / "classes.tif"),
            "PROBABILITIES": str(out / "probs.tif"),
            "POLYGONS": str(out / "polygons.gpkg"),
        },
        feedback=feedback,
    )
    return {"res": res, "feedback": feedback, "dir": out}


def test_segment_raster_outputs(segmented: dict, scene: str, backend_mode: str, model_config: dict) -> None:
    res, feedback = segmented["res"], segmented["feedback"]
    assert expected_backend_line(backend_mode) in feedback.text
    assert max(feedback.progress) == pytest.approx(100, abs=0.5)
    arr, crs, size, count = raster(res["OUTPUT"])
    _, scene_crs, scene_size, _ = raster(scene)
    assert size == scene_size == (320, 320) and count == 1
    assert same_crs(crs, scene_crs)
    values = set(np.unique(arr).tolist())
    assert values <= set(range(len(CLASSES))) | {255} and len(values - {255}) >= 2
    # probabilities: one band per class, same grid
    _, pcrs, psize, pcount = raster(res["PROBABILITIES"])
    assert psize == size and pcount == len(CLASSES) and same_crs(pcrs, scene_crs)
    # polygons: classes of the raster, in the raster CRS, covering the valid pixels
    rows, vcrs = polygons(res["POLYGONS"])
    assert rows and same_crs(vcrs, scene_crs)
    assert {r["class_id"] for r in rows} <= values - {255}
    assert {r["class_name"] for r in rows} <= set(CLASSES)
    assert sum(r["_area"] for r in rows) == pytest.approx(np.sum(arr != 255) * 100.0, rel=1e-6)  # 10 m pixels
    # the model's class colors travel with the outputs (.qml beside the raster, the style inside the GeoPackage)
    qml = Path(res["OUTPUT"]).with_suffix(".qml").read_text()
    for r, g, b in model_config["colors"]:
        assert f"#{r:02x}{g:02x}{b:02x}" in qml.lower()
    assert not Path(res["POLYGONS"]).with_suffix(".qml").exists()
    # the device used, not the one asked for ("auto"), and one geoseg process for prediction and polygons
    assert any(line.startswith(f"wrote {res['OUTPUT']} on cpu (") for line in feedback.infos), feedback.text


def test_segment_loads_with_class_colors(tmp_path: Path, scene: str, checkpoint: str, model_config: dict) -> None:
    QgsProject.instance().clear()
    res = processing.runAndLoadResults(
        "geoseg:segmentraster",
        {
            "INPUT": scene,
            "MODEL": checkpoint,
            "DEVICE": CPU,
            "OUTPUT": str(tmp_path / "c.tif"),
            "POLYGONS": str(tmp_path / "p.gpkg"),
        },
    )
    layers = list(QgsProject.instance().mapLayers().values())
    rasters = [lyr for lyr in layers if lyr.source() == res["OUTPUT"]]
    assert rasters, [lyr.source() for lyr in layers]
    renderer = rasters[0].renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    classes = renderer.classes()
    assert [c.label for c in classes] == CLASSES
    assert [[c.color.red(), c.color.green(), c.color.blue()] for c in classes] == model_config["colors"]
    vectors = [lyr for lyr in layers if isinstance(lyr, QgsVectorLayer)]
    assert vectors and isinstance(vectors[0].renderer(), QgsCategorizedSymbolRenderer)
    assert [c.label() for c in vectors[0].renderer().categories()] == CLASSES
    QgsProject.instance().clear()


def test_wrong_bands_is_a_readable_error(tmp_path: Path, scene: str, checkpoint: str) -> None:
    out = tmp_path / "bad.tif"
    with pytest.raises(QgsProcessingException, match=r"geoseg: .*(band|6)"):
        processing.run(
            "geoseg:segmentraster",
            {
                "INPUT": scene,
                "MODEL": checkpoint,
                "BANDS": "1,2,3",
                "DEVICE": CPU,
                "OUTPUT": str(out),
            },
        )
    assert not out.exists()


def test_cancel_leaves_no_output(tmp_path: Path, scene: str, checkpoint: str) -> None:
    out = tmp_path / "cancelled.tif"
    feedback = RecordingFeedback(cancel_at=0.0)
    with pytest.raises(QgsProcessingException, match="cancel"):
        processing.run(
            "geoseg:segmentraster",
            {
                "INPUT": scene,
                "MODEL": checkpoint,
                "TILE": 32,
                "OVERLAP": 8,
                "DEVICE": CPU,
                "OUTPUT": str(out),
                "PROBABILITIES": str(tmp_path / "p.tif"),
            },
            feedback=feedback,
        )
    assert feedback.isCanceled()
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)


@pytest.mark.parametrize(("names", "message"), [("water,,forest", "empty name"), ("water,forest,water", "twice")])
def test_empty_or_repeated_class_names_are_refused(tmp_path: Path, labels: str, names: str, message: str) -> None:
    out = tmp_path / "v.gpkg"
    with pytest.raises(QgsProcessingException, match=message):
        processing.run("geoseg:vectorizeclasses", {"INPUT": labels, "OUTPUT": str(out), "CLASSES": names})
    assert not out.exists()


@pytest.fixture(scope="module")
def label_polygons(tmp_path_factory: pytest.TempPathFactory, labels: str) -> str:
    out = tmp_path_factory.mktemp("vec") / "labels.gpkg"
    res = processing.run("geoseg:vectorizeclasses", {"INPUT": labels, "OUTPUT": str(out)})
    assert res["FEATURES"] and res["FEATURES"] > 0
    return res["OUTPUT"]


def test_vectorize_classes(label_polygons: str, labels: str) -> None:
    rows, crs = polygons(label_polygons)
    arr, lcrs, _, _ = raster(labels)
    assert same_crs(crs, lcrs)
    assert {r["class_name"] for r in rows} == set(CLASSES)  # names stored on labels.tif
    for cid in range(len(CLASSES)):
        area = sum(r["_area"] for r in rows if r["class_id"] == cid)
        assert area == pytest.approx(np.sum(arr == cid) * 100.0, rel=1e-6)
    assert QgsVectorLayer(label_polygons, "l", "ogr").listStylesInDatabase()[2] == ["geoseg classes"]


def _check_report(res: dict, folder: Path) -> dict:
    for ext in ("json", "csv", "md", "html"):
        assert (folder / f"report.{ext}").exists(), ext
    assert res["REPORT_HTML"] == str(folder / "report.html")
    report = json.loads((folder / "report.json").read_text())
    assert 0.0 <= res["MIOU"] <= 1.0 and res["MIOU"] == pytest.approx(report["miou"], abs=1e-6)
    table = res["TABLE"]
    layer = table if isinstance(table, QgsVectorLayer) else QgsVectorLayer(table, "t", "ogr")
    feats = list(layer.getFeatures())
    assert [f["class_name"] for f in feats] == CLASSES
    assert [f["class_id"] for f in feats] == list(range(len(CLASSES)))
    for f, row in zip(feats, report["classes"]):
        if row["iou"] is not None:
            assert f["iou"] == pytest.approx(row["iou"], abs=1e-6)
        assert f["support"] == row["support"]
    return report


def test_evaluate_against_raster_and_polygons(
    segmented: dict, labels: str, label_polygons: str, tmp_path: Path, backend_mode: str
) -> None:
    prediction = segmented["res"]["OUTPUT"]
    feedback = RecordingFeedback()
    res = processing.run(
        "geoseg:evaluate",
        {
            "PREDICTION": prediction,
            "TRUTH": labels,
            "REPORT_FOLDER": str(tmp_path / "r1"),
            "TABLE": str(tmp_path / "t1.gpkg"),
        },
        feedback=feedback,
    )
    assert expected_backend_line(backend_mode) in feedback.text
    raster_report = _check_report(res, tmp_path / "r1")
    assert raster_report["pixels"] == int(np.sum(raster(labels)[0] != 255))
    res2 = processing.run(
        "geoseg:evaluate",
        {
            "PREDICTION": prediction,
            "TRUTH_POLYGONS": label_polygons,
            "CLASS_FIELD": "class_id",
            "REPORT_FOLDER": str(tmp_path / "r2"),
            "TABLE": "TEMPORARY_OUTPUT",
        },
    )
    vector_report = _check_report(res2, tmp_path / "r2")
    # the polygons are the label raster, vectorized: same pixels, same scores
    assert vector_report["pixels"] == raster_report["pixels"]
    assert vector_report["miou"] == pytest.approx(raster_report["miou"], abs=1e-6)


def test_train_with_vector_labels(tmp_path: Path, scene: str, label_polygons: str, geoseg_python: str) -> None:
    out = tmp_path / "model.safetensors"
    feedback = RecordingFeedback()
    res = processing.run(
        "geoseg:trainmodel",
        {
            "INPUT": scene,
            "LABEL_POLYGONS": label_polygons,
            "CLASS_FIELD": "class_name",
            "CLASSES": ",".join(CLASSES),
            "ARCH": "tiny",
            "ARCH_KWARGS": '{"width": 8}',
            "EPOCHS": 1,
            "CHIP": 64,
            "CHIPS_PER_EPOCH": 16,
            "BATCH_SIZE": 8,
            "SELF_TRAINING": 1,
            "DEVICE": CPU,
            "OUTPUT": str(out),
        },
        feedback=feedback,
    )
    assert out.exists() and res["OUTPUT"] == str(out)
    assert 0.0 <= res["BEST_MIOU"] <= 1.0
    assert "rasterized label polygons" in feedback.text
    # one self-training round asked for: the epoch on the labels runs; the polygons label every pixel of the scene,
    # so there is nothing to pseudo-label: geoseg skips the round, and its warning reaches the dialog's log as one
    assert "train: 1/2" in feedback.text and "train: 2/2" not in feedback.text, feedback.text
    assert any("round 1: nothing to pseudo-label: every valid pixel" in w for w in feedback.warnings), feedback.warnings
    import subprocess

    info = json.loads(
        subprocess.run(
            [geoseg_python, "-m", "geoseg", "info", str(out), "--json"], check=True, capture_output=True, text=True
        ).stdout
    )
    assert info["classes"] == CLASSES and info["arch"] == "tiny" and len(info["bands"]) == 6
    assert not glob.glob(str(tmp_path / ".*partial*"))


# ---------------------------------------------------------------------------------------------------------- issue 17


def test_no_field_parameter_has_a_parent_that_accepts_rasters() -> None:
    """QGIS 3.40 crashes (signal 11 in QgsProcessingFieldWidgetWrapper::setParentLayerWrapperValue) when a dialog
    whose field parameter's parent accepts rasters opens with a raster as the active layer."""
    provider = QgsApplication.processingRegistry().providerById("geoseg")
    for alg in provider.algorithms():
        for param in alg.parameterDefinitions():
            if isinstance(param, QgsProcessingParameterField):
                parent = alg.parameterDefinition(param.parentLayerParameterName())
                assert isinstance(parent, QgsProcessingParameterVectorLayer), (alg.id(), param.name())
                assert set(parent.dataTypes()) <= {QgsProcessing.TypeVectorPolygon}, (alg.id(), param.name())


def _gdal_warnings(path: str) -> list[str]:
    """What QGIS's GDAL says when it opens ``path``."""
    from osgeo import gdal

    said: list[str] = []
    gdal.PushErrorHandler(lambda cls, no, msg: said.append(msg))
    try:
        ds = gdal.OpenEx(path)
        if ds is not None and ds.GetLayerCount():
            ds.GetLayer(0).GetFeatureCount()
        ds = None
    finally:
        gdal.PopErrorHandler()
    return said


def test_raster_and_polygons_of_the_same_name_keep_both_legends(
    tmp_path: Path, scene: str, checkpoint: str, model_config: dict
) -> None:
    """The README's example: OUTPUT=classes.tif POLYGONS=classes.gpkg. Reopened later, the raster shows its classes
    by name (from its .qml, and from the raster itself without it), the polygons theirs."""
    from osgeo import gdal

    out, polys = tmp_path / "classes.tif", tmp_path / "classes.gpkg"
    processing.run(
        "geoseg:segmentraster",
        {"INPUT": scene, "MODEL": checkpoint, "DEVICE": CPU, "OUTPUT": str(out), "POLYGONS": str(polys)},
    )
    raster_layer = QgsRasterLayer(str(out), "classes")
    renderer = raster_layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer) and [c.label for c in renderer.classes()] == CLASSES
    vector_layer = QgsVectorLayer(str(polys), "polygons", "ogr")
    assert isinstance(vector_layer.renderer(), QgsCategorizedSymbolRenderer)
    assert [c.label() for c in vector_layer.renderer().categories()] == CLASSES
    assert _gdal_warnings(str(polys)) == []  # no "GeoPackage v1.4 may only be partially supported"
    # without any style file, the raster itself names its classes (category names and attribute table)
    out.with_suffix(".qml").unlink()
    bare = QgsRasterLayer(str(out), "classes")  # keep the layer: its renderer lives and dies with it
    renderer = bare.renderer()
    assert [c.label for c in renderer.classes()] == CLASSES
    assert [[c.color.red(), c.color.green(), c.color.blue()] for c in renderer.classes()] == model_config["colors"]
    info = gdal.Info(str(out), format="json")  # what gdalinfo shows: category names and the attribute table
    assert info["bands"][0]["categories"] == CLASSES, info["bands"][0]
    table = info["rat"]  # gdalinfo lists the first band's table at the top level
    assert [row["f"][1] for row in table["row"]] == CLASSES and table["tableType"] == "thematic"
    # GeoJSON polygons of the same name cannot have a style inside: the raster's classes.qml is kept
    processing.run(
        "geoseg:segmentraster",
        {
            "INPUT": scene,
            "MODEL": checkpoint,
            "DEVICE": CPU,
            "OUTPUT": str(out),
            "POLYGONS": str(tmp_path / "classes.geojson"),
        },
    )
    assert "<pipe" in out.with_suffix(".qml").read_text()
    again = QgsRasterLayer(str(out), "c")
    assert [c.label for c in again.renderer().classes()] == CLASSES


def _one_line_error(run: object) -> str:
    with pytest.raises(QgsProcessingException) as err:
        run()  # type: ignore[operator]
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text and "Error:" not in text, text
    return text


def test_errors_are_one_line_in_the_dialog_s_terms(tmp_path: Path, scene: str, checkpoint: str) -> None:
    from osgeo import gdal

    def segment(**params: object) -> None:
        processing.run("geoseg:segmentraster", {"INPUT": scene, "MODEL": checkpoint, "DEVICE": CPU, **params})

    # a raster picked as the model file
    text = _one_line_error(lambda: segment(MODEL=scene, OUTPUT=str(tmp_path / "a.tif")))
    assert "is not a model checkpoint: it is a TIFF/GeoTIFF raster" in text and "TypeError" not in text
    # an output whose folder is a file
    (tmp_path / "afile").write_text("x")
    text = _one_line_error(lambda: segment(OUTPUT=str(tmp_path / "afile" / "c.tif")))
    target, blocker = tmp_path / "afile" / "c.tif", tmp_path / "afile"
    assert (
        text == f"Classes: cannot write {target}: {blocker} is a file, not a folder; choose another file name or folder"
    )
    # a 3-band raster for the 6-band model: no band mapping can help, and none is suggested
    three = str(tmp_path / "three.tif")
    gdal.Translate(three, scene, bandList=[1, 2, 3])
    text = _one_line_error(
        lambda: processing.run(
            "geoseg:segmentraster", {"INPUT": three, "MODEL": checkpoint, "OUTPUT": str(tmp_path / "b.tif")}
        )
    )
    assert "the raster has only 3 band(s)" in text and "--bands" not in text and "1,2,3" not in text
    # an 8-band raster without band names: the hint names the dialog's parameter and 6 bands
    eight = str(tmp_path / "eight.tif")
    src = gdal.Open(scene)
    ds = gdal.GetDriverByName("GTiff").Create(eight, src.RasterXSize, src.RasterYSize, 8, gdal.GDT_Float32)
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    for i, b in enumerate([1, 2, 3, 4, 5, 6, 1, 2], start=1):  # written band by band: no band names
        ds.GetRasterBand(i).WriteArray(src.GetRasterBand(b).ReadAsArray().astype(np.float32))
    ds = src = None
    text = _one_line_error(
        lambda: processing.run(
            "geoseg:segmentraster", {"INPUT": eight, "MODEL": checkpoint, "OUTPUT": str(tmp_path / "c.tif")}
        )
    )
    assert "Set 'Band mapping' listing 6 raster bands" in text and "e.g. 'Band mapping' = 1-6" in text
    assert "--bands" not in text and "bands=" not in text
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tif" and p.name[0] in "abc"]


@pytest.fixture()
def named_polygons(label_polygons: str) -> QgsVectorLayer:
    """The label polygons as a memory layer (so geoseg gets a temporary export) with a name and the layer's own id
    per class, the ids not in alphabetical order of the names."""
    own = {i: (name, code) for i, (name, code) in enumerate(zip(CLASSES, (4, 0, 2, 1, 3)))}
    src = QgsVectorLayer(label_polygons, "labels", "ogr")
    mem = QgsVectorLayer(f"Polygon?crs={src.crs().authid()}&field=name:string&field=code:integer", "mem", "memory")
    feats = []
    for f in src.getFeatures():
        g = QgsFeature(mem.fields())
        g.setGeometry(f.geometry())
        name, code = own[f["class_id"]]
        g.setAttributes([name, code])
        feats.append(g)
    mem.dataProvider().addFeatures(feats)
    QgsProject.instance().addMapLayer(mem)
    yield mem
    QgsProject.instance().removeMapLayer(mem.id())


def _temporary_leftovers() -> set[str]:
    import tempfile

    from qgis.core import QgsProcessingUtils

    found = {str(p) for p in Path(tempfile.gettempdir()).glob("geoseg_qgis_*")}
    return found | {str(p) for p in Path(QgsProcessingUtils.tempFolder()).rglob("labels*.gpkg")}


def test_train_from_names_with_the_layer_s_ids_leaves_no_temporary_file(
    tmp_path: Path, scene: str, named_polygons: QgsVectorLayer, geoseg_python: str
) -> None:
    before = _temporary_leftovers()
    out = tmp_path / "m.safetensors"
    feedback = RecordingFeedback()
    processing.run(
        "geoseg:trainmodel",
        {
            "INPUT": scene,
            "LABEL_POLYGONS": named_polygons,
            "CLASS_FIELD": "name",
            "ID_FIELD": "code",
            "ARCH": "tiny",
            "ARCH_KWARGS": '{"width": 8}',
            "EPOCHS": 1,
            "CHIP": 64,
            "CHIPS_PER_EPOCH": 8,
            "BATCH_SIZE": 8,
            "DEVICE": CPU,
            "OUTPUT": str(out),
        },
        feedback=feedback,
    )
    info = _info(geoseg_python, out)
    assert info["classes"] == ["forest", "urban", "cropland", "bare_soil", "water"]  # by code, not alphabetical
    assert _temporary_leftovers() == before
    assert "ids from code" in feedback.text
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _info(geoseg_python: str, path: Path) -> dict:
    import subprocess

    env = geoseg_env()
    out = subprocess.run(
        [geoseg_python, "-m", "geoseg", "info", str(path), "--json"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout)


def test_train_refuses_a_temporary_checkpoint(scene: str, labels: str, label_polygons: str) -> None:
    with pytest.raises(QgsProcessingException, match="choose a file to save the model to"):
        processing.run(
            "geoseg:trainmodel", {"INPUT": scene, "LABELS": labels, "ARCH": "tiny", "OUTPUT": "TEMPORARY_OUTPUT"}
        )
    with pytest.raises(QgsProcessingException, match="Incorrect parameter value for OUTPUT"):  # QGIS's own check
        processing.run("geoseg:trainmodel", {"INPUT": scene, "LABELS": labels, "ARCH": "tiny", "OUTPUT": ""})
    with pytest.raises(QgsProcessingException, match="not both"):
        processing.run(
            "geoseg:trainmodel",
            {"INPUT": scene, "LABELS": labels, "LABEL_POLYGONS": label_polygons, "OUTPUT": "/tmp/x.safetensors"},
        )
    for kwargs, message in (('{"width": 4', "must be JSON"), ('{"width": 4, "width": 8}', 'give "width" twice')):
        with pytest.raises(QgsProcessingException, match=f"Architecture options {message}"):
            processing.run(
                "geoseg:trainmodel",
                {"INPUT": scene, "LABELS": labels, "ARCH_KWARGS": kwargs, "OUTPUT": "/tmp/x.safetensors"},
            )


def test_architecture_is_a_list_of_the_registry_s_names() -> None:
    from geoseg_qgis.choices import ARCHITECTURES

    alg = QgsApplication.processingRegistry().algorithmById("geoseg:trainmodel")
    arch = alg.parameterDefinition("ARCH")
    assert isinstance(arch, QgsProcessingParameterEnum) and tuple(arch.options()) == ("default", *ARCHITECTURES)
    assert arch.defaultValue() == "default" and "tiny" in ARCHITECTURES
    # the dialog's defaults are geoseg's default recipe: the network from the bands, the schedule from the labels
    for name in ("EPOCHS", "CHIP", "CHIPS_PER_EPOCH"):
        assert alg.parameterDefinition(name).defaultValue() is None, name


def test_the_default_architecture_is_geoseg_s_choice(
    tmp_path: Path, scene: str, labels: str, geoseg_python: str
) -> None:
    """Left at "default", the dialog passes no architecture: geoseg picks its default network for the bands (ssnet
    for this 6-band scene), as the command line does."""
    out = tmp_path / "m.safetensors"
    processing.run(
        "geoseg:trainmodel",
        {"INPUT": scene, "LABELS": labels, "EPOCHS": 1, "CHIPS_PER_EPOCH": 8, "DEVICE": CPU, "OUTPUT": str(out)},
        feedback=RecordingFeedback(),
    )
    import subprocess

    info = json.loads(
        subprocess.run(
            [geoseg_python, "-m", "geoseg", "info", str(out), "--json"], check=True, capture_output=True, text=True
        ).stdout
    )
    assert info["arch"] == "ssnet"


def test_cancel_stops_training_within_a_batch_and_leaves_nothing(tmp_path: Path, scene: str, labels: str) -> None:
    """Cancel during epoch 2: training stops at the next batch (not at the end of the epoch), and the checkpoint
    and training state epoch 1 wrote are removed: nothing looks like a finished model."""
    out = tmp_path / "m.safetensors"
    feedback = RecordingFeedback(cancel_on="train: 1/20")
    with pytest.raises(QgsProcessingException, match="cancelled"):
        processing.run(
            "geoseg:trainmodel",
            {
                "INPUT": scene,
                "LABELS": labels,
                "ARCH": "tiny",
                "ARCH_KWARGS": '{"width": 8}',
                "EPOCHS": 20,
                "CHIP": 64,
                "CHIPS_PER_EPOCH": 160,
                "BATCH_SIZE": 8,
                "SELF_TRAINING": 0,
                "DEVICE": CPU,
                "OUTPUT": str(out),
            },
            feedback=feedback,
        )
    stopped = time.monotonic()
    epoch = feedback.when("train: 1/20") - feedback.when("train: 0/20")  # 20 batches and a validation
    assert feedback.cancelled_at is not None and stopped - feedback.cancelled_at < max(0.5 * epoch, 3.0), feedback.text
    assert "train: 2/20" not in feedback.text
    assert list(tmp_path.iterdir()) == []


def test_one_geoseg_process_per_run(
    tmp_path: Path, scene: str, checkpoint: str, backend_mode: str, geoseg_python: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "starts.log"
    wrapper = tmp_path / "python"
    path = geoseg_env().get("PYTHONPATH")
    export = f"export PYTHONPATH='{path}'\n" if path else ""
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {log}\n{export}exec {geoseg_python} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("GEOSEG_PYTHON", str(wrapper))
    processing.run(
        "geoseg:segmentraster",
        {
            "INPUT": scene,
            "MODEL": checkpoint,
            "DEVICE": CPU,
            "OUTPUT": str(tmp_path / "c.tif"),
            "POLYGONS": str(tmp_path / "p.gpkg"),
        },
    )
    starts = log.read_text().splitlines()
    assert len(starts) == 1 and "runner.py" in starts[0] and '"vectorize"' in starts[0], starts
