"""The algorithms through the `qgis_process` command line (the plugin loaded from QGIS_PLUGINPATH)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
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
    if not env.get("GEOSEG_PYTHON"):
        # qgis_process embeds the system Python: make geoseg importable there (this venv's packages), so that the
        # plugin runs it with QGIS's own Python in a process of its own
        import geoseg

        paths = [str(Path(geoseg.__file__).resolve().parents[1]), *(p for p in sys.path if p.endswith("-packages"))]
        env["PYTHONPATH"] = os.pathsep.join(paths)
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
    # geoseg never runs inside qgis_process (its GDAL would clash with QGIS's): a process of its own
    where = "subprocess " + (qp_env["GEOSEG_PYTHON"] if backend_mode == "configured" else "/usr/bin/python3")
    assert any(f"geoseg backend: {where}" in line for line in result["log"]["info"]), result["log"]
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


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    found.append(int(child))
                    todo.append(int(child))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_qgis_process_train_stops_on_a_signal_and_leaves_nothing(
    qp_env: dict[str, str], tmp_path: Path, scene: str, labels: str, sig: signal.Signals
) -> None:
    """A signal to qgis_process during training (epoch 2, after epoch 1 wrote its checkpoint and training state)
    reaches geoseg's process: it stops within a few seconds, not at the end of the epoch or the run, no geoseg
    process is left running, and neither the checkpoint nor the training state is left."""
    out = tmp_path / "model.safetensors"
    params = {
        "INPUT": scene,
        "LABELS": labels,
        "ARCH": "tiny",
        "ARCH_KWARGS": '{"width": 8}',
        "EPOCHS": 50,
        "CHIP": 64,
        "CHIPS_PER_EPOCH": 400,
        "BATCH_SIZE": 8,
        "DEVICE": 1,
        "OUTPUT": out,
    }
    args = [QGIS_PROCESS, "run", "geoseg:trainmodel", "--"] + [f"{k}={v}" for k, v in params.items()]
    proc = subprocess.Popen(args, env=qp_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the end of epoch 1: its checkpoint is written
        assert proc.poll() is None and out.exists(), "training did not reach epoch 2"
        time.sleep(1.0)
        geoseg = _children(proc.pid)
        assert geoseg, "no geoseg process under qgis_process"
        sent = time.monotonic()
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
        stopped = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    lingering = [pid for pid in geoseg if _alive(pid)]
    for pid in lingering:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not lingering, f"geoseg processes {lingering} kept running after {sig.name} to qgis_process"
    assert stopped < 10.0, f"{sig.name}: qgis_process took {stopped:.1f} s to stop\n{output[-2000:]}"
    assert proc.returncode != 0
    assert "cancelled" in output, output[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [], output[-2000:]
