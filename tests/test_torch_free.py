"""The torch-free promise, checked in a real environment without torch (``.venv-notorch``, made by
``scripts/setup.sh --dev``): ``geoseg info`` on a raster and on a checkpoint, ``evaluate`` and ``vectorize`` work;
commands that need torch fail with one line saying how to install it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from model_utils import tiny_checkpoint
from rasters import TRANSFORM, UTM, write_raster
from shapely.geometry import box

ROOT = Path(__file__).resolve().parents[1]
NOTORCH = Path(os.environ.get("GEOSEG_NOTORCH_PYTHON", ROOT / ".venv-notorch" / "bin" / "python"))


@pytest.fixture(scope="module")
def notorch() -> Path:
    if not NOTORCH.exists():
        message = f"no torch-free environment at {NOTORCH}: run `bash scripts/setup.sh --dev`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    probe = subprocess.run([str(NOTORCH), "-c", "import torch"], capture_output=True)
    assert probe.returncode != 0, f"{NOTORCH} has torch installed; the torch-free checks would prove nothing"
    return NOTORCH


def geoseg(python: Path, *args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [str(python), "-m", "geoseg", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("notorch")
    rng = np.random.default_rng(0)
    truth = np.zeros((64, 64), np.uint8)
    truth[:, 32:] = 1
    truth[40:, :] = 2
    pred = truth.copy()
    pred[:4] = 0
    scene = rng.normal(size=(3, 64, 64)).astype(np.float32)
    polys = gpd.GeoDataFrame(
        {"class": [0, 1]},
        geometry=[
            box(*(TRANSFORM @ (0, 40)), *(TRANSFORM @ (32, 0))),
            box(*(TRANSFORM @ (32, 40)), *(TRANSFORM @ (64, 0))),
        ],
        crs=UTM.to_wkt(),
    )
    polys.to_file(d / "truth.gpkg")
    return {
        "dir": d,
        "scene": write_raster(d / "scene.tif", scene, descriptions=["B2", "B3", "B4"]),
        "truth": write_raster(d / "truth.tif", truth, nodata=255),
        "pred": write_raster(d / "pred.tif", pred, nodata=255),
        "model": tiny_checkpoint(d / "model.safetensors", ["B2", "B3", "B4"]),
        "polys": d / "truth.gpkg",
    }


def test_info_on_a_raster_and_on_a_checkpoint(notorch: Path, files: dict[str, Path]) -> None:
    r = geoseg(notorch, "info", files["scene"], cwd=files["dir"])
    assert r.returncode == 0, r.stderr
    assert "3 band(s)" in r.stdout and "B3" in r.stdout
    r = geoseg(notorch, "info", files["model"], "--json", cwd=files["dir"])
    assert r.returncode == 0, r.stderr
    contract = json.loads(r.stdout)
    assert (
        contract["arch"] == "tiny"
        and contract["bands"] == ["B2", "B3", "B4"]
        and contract["classes"] == ["a", "b", "c"]
    )


def test_evaluate_against_raster_and_polygon_truth(notorch: Path, files: dict[str, Path]) -> None:
    r = geoseg(
        notorch, "evaluate", files["pred"], files["truth"], "--report-dir", files["dir"] / "rep", cwd=files["dir"]
    )
    assert r.returncode == 0, r.stderr
    assert "mIoU" in r.stdout
    assert {p.suffix for p in (files["dir"] / "rep").iterdir()} >= {".json", ".csv", ".md", ".html"}
    r = geoseg(notorch, "evaluate", files["pred"], files["polys"], "--class-field", "class", cwd=files["dir"])
    assert r.returncode == 0, r.stderr
    assert "mIoU" in r.stdout


def test_vectorize(notorch: Path, files: dict[str, Path]) -> None:
    out = files["dir"] / "classes.gpkg"
    r = geoseg(notorch, "vectorize", files["pred"], out, cwd=files["dir"])
    assert r.returncode == 0, r.stderr
    assert len(gpd.read_file(out)) >= 3


@pytest.mark.parametrize("command", [["models"], ["predict", "scene.tif", "out.tif", "-m", "model.safetensors"]])
def test_commands_that_need_torch_say_so_in_one_line(notorch: Path, files: dict[str, Path], command: list[str]) -> None:
    r = geoseg(notorch, *command, cwd=files["dir"])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "torch" in lines[0].lower() and "install" in lines[0]
    assert not (files["dir"] / "out.tif").exists()
