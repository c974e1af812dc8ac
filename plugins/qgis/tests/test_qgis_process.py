"""The algorithms through the `qgis_process` command line (the plugin loaded from QGIS_PLUGINPATH)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, PLUGIN_ROOT
from helpers import polygons, raster, same_crs

QGIS_PROCESS = shutil.which("qgis_process")
pytestmark = pytest.mark.skipif(QGIS_PROCESS is None, reason="qgis_process is not installed")


@pytest.fixture(scope="module")
def qp_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for qgis_process: a throw-away profile, the plugin folder, the backend under test."""
    env = dict(os.environ)
    env["QT_QPA_PLATFORM"] = "offscreen"
    env["QGIS_PLUGINPATH"] = str(PLUGIN_ROOT)
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(tmp_path_factory.mktemp("qgis_profile"))
    if env.get("GEOSEG_QGIS_BACKEND") != "subprocess":
        # qgis_process embeds the system Python: make geoseg importable there (this venv's packages) and leave the
        # choice to "auto". qgis_process links QGIS's GDAL itself, so with pip wheels bundling another GDAL, auto
        # must pick the configured environment (in-process would crash there); with a matching GDAL, in-process.
        import geoseg

        paths = [str(Path(geoseg.__file__).resolve().parents[1]), *(p for p in sys.path if p.endswith("-packages"))]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["GEOSEG_QGIS_BACKEND"] = "auto"
        env["GEOSEG_PYTHON"] = sys.executable
    proc = subprocess.run(
        [QGIS_PROCESS, "plugins", "enable", "geoseg_qgis"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return env


def qgis_process_run(env: dict[str, str], alg: str, **params: object) -> subprocess.CompletedProcess[str]:
    args = [QGIS_PROCESS, "--json", "run", alg, "--"] + [f"{k}={v}" for k, v in params.items()]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def test_qgis_process_lists_provider(qp_env: dict[str, str]) -> None:
    proc = subprocess.run([QGIS_PROCESS, "list"], env=qp_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for alg in ("geoseg:segmentraster", "geoseg:vectorizeclasses", "geoseg:evaluate", "geoseg:trainmodel"):
        assert alg in proc.stdout


def test_qgis_process_segment_and_evaluate(
    qp_env: dict[str, str], tmp_path: Path, scene: str, labels: str, checkpoint: str, backend_mode: str
) -> None:
    out, polys = tmp_path / "classes.tif", tmp_path / "polygons.gpkg"
    proc = qgis_process_run(
        qp_env,
        "geoseg:segmentraster",
        INPUT=scene,
        MODEL=checkpoint,
        DEVICE=1,
        TILE=96,
        OVERLAP=16,
        OUTPUT=out,
        POLYGONS=polys,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    from geoseg_qgis.backend import bundled_gdal

    # qgis_process links QGIS's GDAL: auto runs in-process only when geoseg's rasterio/pyogrio use that GDAL too
    inprocess = backend_mode != "subprocess" and not bundled_gdal()
    backend = "in-process" if inprocess else "subprocess"
    assert any(f"geoseg backend: {backend}" in line for line in result["log"]["info"]), result["log"]
    assert result["results"]["OUTPUT"] == str(out)
    arr, crs, size, _ = raster(str(out))
    _, scene_crs, scene_size, _ = raster(scene)
    assert size == scene_size and same_crs(crs, scene_crs)
    assert set(np.unique(arr).tolist()) <= set(range(len(CLASSES))) | {255}
    rows, vcrs = polygons(str(polys))
    assert rows and same_crs(vcrs, scene_crs) and {r["class_name"] for r in rows} <= set(CLASSES)
    assert out.with_suffix(".qml").exists()

    report_dir = tmp_path / "report"
    proc = qgis_process_run(
        qp_env, "geoseg:evaluate", PREDICTION=out, TRUTH=labels, REPORT_FOLDER=report_dir, TABLE=tmp_path / "scores.csv"
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads(proc.stdout)["results"]
    report = json.loads((report_dir / "report.json").read_text())
    assert res["MIOU"] == pytest.approx(report["miou"], abs=1e-6)
    assert [c["name"] for c in report["classes"]] == CLASSES
    assert (report_dir / "report.html").exists()
    assert (tmp_path / "scores.csv").read_text().splitlines()[0].startswith("class_id,class_name,iou")


def test_qgis_process_error_message(qp_env: dict[str, str], tmp_path: Path, scene: str) -> None:
    missing = tmp_path / "missing.safetensors"
    missing.write_bytes(b"not a checkpoint")
    proc = qgis_process_run(qp_env, "geoseg:segmentraster", INPUT=scene, MODEL=missing, OUTPUT=tmp_path / "o.tif")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "geoseg: " in text and "missing.safetensors" in text
    assert not (tmp_path / "o.tif").exists()


def test_qgis_process_inprocess_clash_is_refused(
    qp_env: dict[str, str], tmp_path: Path, scene: str, checkpoint: str, backend_mode: str
) -> None:
    """Forcing in-process where geoseg's GDAL would clash with QGIS's gives an error, not a crash."""
    from geoseg_qgis.backend import bundled_gdal

    if backend_mode == "subprocess" or not bundled_gdal():
        pytest.skip("only where geoseg is importable with wheels that bundle their own GDAL")
    env = dict(qp_env, GEOSEG_QGIS_BACKEND="inprocess")
    proc = qgis_process_run(env, "geoseg:segmentraster", INPUT=scene, MODEL=checkpoint, OUTPUT=tmp_path / "o.tif")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "geoseg cannot run inside this QGIS process" in proc.stdout + proc.stderr
    assert not (tmp_path / "o.tif").exists()
