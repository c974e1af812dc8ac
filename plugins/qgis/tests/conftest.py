"""Fixtures for the plugin tests: a headless QGIS with Processing and the geoseg provider, sample data, a model.

Run with a QGIS Python (see ../run_tests.sh). geoseg always runs in a process of its own; the run under test is
"configured" when GEOSEG_PYTHON names the geoseg environment (QGIS's Python without geoseg), else "host": geoseg is
importable in this Python and runs in QGIS's own interpreter, in another process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
PLUGIN_ROOT = Path(__file__).resolve().parents[1]  # plugins/qgis
REPO = PLUGIN_ROOT.parents[1]
SAMPLE = REPO / "sample_data"
CLASSES = ["water", "forest", "cropland", "urban", "bare_soil"]
sys.path.insert(0, str(PLUGIN_ROOT))
for _p in ("/usr/share/qgis/python/plugins", "/usr/lib/qgis/python/plugins"):
    if os.path.isdir(_p) and _p not in sys.path:
        sys.path.append(_p)

from qgis.core import QgsApplication  # noqa: E402

_STATUS = {"code": 0}


@pytest.fixture(scope="session")
def qgis_app() -> QgsApplication:
    """QGIS initialised headless, Processing initialised, the geoseg provider added."""
    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    from geoseg_qgis.provider import GeoSegProvider

    provider = GeoSegProvider()
    assert QgsApplication.processingRegistry().addProvider(provider)
    yield app
    QgsApplication.processingRegistry().removeProvider(provider)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _STATUS["code"] = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without QGIS's C++ teardown: with two GDAL builds loaded (QGIS's and rasterio's wheel) it can crash at
    interpreter exit after every test has passed, which would turn a green run red."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_STATUS["code"])


def geoseg_env() -> dict[str, str]:
    """The environment to run ``geoseg_python -m geoseg`` in: a configured environment's python gets none of this
    Python's paths; this Python (host run) gets its sys.path, as the plugin gives it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    if not os.environ.get("GEOSEG_PYTHON"):
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


@pytest.fixture(scope="session")
def backend_mode() -> str:
    return "configured" if os.environ.get("GEOSEG_PYTHON") else "host"


@pytest.fixture(scope="session")
def geoseg_python() -> str:
    """A python whose ``-m geoseg`` works (GEOSEG_PYTHON, else this interpreter)."""
    return os.environ.get("GEOSEG_PYTHON") or sys.executable


@pytest.fixture(scope="session")
def scene() -> str:
    return str(SAMPLE / "scene.tif")


@pytest.fixture(scope="session")
def labels() -> str:
    return str(SAMPLE / "labels.tif")


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("geoseg_qgis")


@pytest.fixture(scope="session")
def checkpoint(workdir: Path, geoseg_python: str, scene: str, labels: str) -> str:
    """A tiny model (arch tiny, width 8) trained for 2 short epochs on the sample scene with geoseg's CLI."""
    out = workdir / "tiny.safetensors"
    cmd = [
        geoseg_python,
        "-m",
        "geoseg",
        "train",
        scene,
        labels,
        str(out),
        "--arch",
        "tiny",
        "--arch-kwargs",
        json.dumps({"width": 8}),
        "--classes",
        ",".join(CLASSES),
        "--epochs",
        "2",
        "--chip",
        "64",
        "--chips-per-epoch",
        "32",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--progress",
        "none",
        "--seed",
        "0",
    ]
    env = geoseg_env()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return str(out)


@pytest.fixture(scope="session")
def model_config(checkpoint: str, geoseg_python: str) -> dict:
    env = geoseg_env()
    out = subprocess.run(
        [geoseg_python, "-m", "geoseg", "info", checkpoint, "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout)
