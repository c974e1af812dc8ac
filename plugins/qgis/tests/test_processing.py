"""The geoseg algorithms run through processing.run / runAndLoadResults in a real headless QGIS."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import numpy as np
import processing
import pytest
from conftest import CLASSES
from helpers import RecordingFeedback, polygons, raster, same_crs
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsPalettedRasterRenderer,
    QgsProcessingException,
    QgsProject,
    QgsVectorLayer,
)

pytestmark = pytest.mark.usefixtures("qgis_app")
CPU = 1  # index of "cpu" in the Device enum


def expected_backend_line(mode: str) -> str:
    return "geoseg backend: subprocess" if mode == "subprocess" else "geoseg backend: in-process"


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
    # the model's class colors travel with the outputs (.qml next to them)
    qml = Path(res["OUTPUT"]).with_suffix(".qml").read_text()
    for r, g, b in model_config["colors"]:
        assert f"#{r:02x}{g:02x}{b:02x}" in qml.lower()
    assert Path(res["POLYGONS"]).with_suffix(".qml").exists()


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
    assert Path(label_polygons).with_suffix(".qml").exists()


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
            "TRUTH": label_polygons,
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
            "LABELS": label_polygons,
            "CLASS_FIELD": "class_name",
            "CLASSES": ",".join(CLASSES),
            "ARCH": "tiny",
            "ARCH_KWARGS": '{"width": 8}',
            "EPOCHS": 1,
            "CHIP": 64,
            "CHIPS_PER_EPOCH": 16,
            "BATCH_SIZE": 8,
            "DEVICE": CPU,
            "OUTPUT": str(out),
        },
        feedback=feedback,
    )
    assert out.exists() and res["OUTPUT"] == str(out)
    assert 0.0 <= res["BEST_MIOU"] <= 1.0
    assert "rasterized label polygons" in feedback.text
    import subprocess

    info = json.loads(
        subprocess.run(
            [geoseg_python, "-m", "geoseg", "info", str(out), "--json"], check=True, capture_output=True, text=True
        ).stdout
    )
    assert info["classes"] == CLASSES and info["arch"] == "tiny" and len(info["bands"]) == 6
    assert not glob.glob(str(tmp_path / ".*partial*"))
