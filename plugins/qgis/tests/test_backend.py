"""Backend selection and the subprocess protocol (JSON-lines progress, errors, cancel)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from geoseg_qgis import backend as bk


def test_invalid_mode_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(bk.ENV_BACKEND, "gpu")
    with pytest.raises(bk.BackendError, match="GEOSEG_QGIS_BACKEND='gpu' is not valid; use one of auto"):
        bk.select_backend(needs_torch=False)


def test_missing_python_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(bk.ENV_BACKEND, "subprocess")
    monkeypatch.setenv(bk.ENV_PYTHON, str(tmp_path / "nope" / "python"))
    with pytest.raises(bk.BackendError, match="does not exist"):
        bk.select_backend(needs_torch=True)
    monkeypatch.delenv(bk.ENV_PYTHON)
    with pytest.raises(bk.BackendError, match="GEOSEG_PYTHON"):
        bk.select_backend(needs_torch=True)


def test_python_from_venv_folder(tmp_path: Path) -> None:
    py = tmp_path / "venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text("")
    assert bk.resolve_python(str(tmp_path / "venv")) == str(py)


def test_selected_backend_matches_environment(backend_mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = bk.select_backend(needs_torch=True)
    if backend_mode == "subprocess":
        assert isinstance(chosen, bk.SubprocessBackend)
        # the subprocess run really is without geoseg in QGIS's Python
        assert importlib.util.find_spec("geoseg") is None or not bk.inprocess_available(False)
        monkeypatch.setenv(bk.ENV_BACKEND, "inprocess")
        with pytest.raises(bk.BackendError, match="in-process backend needs"):
            bk.select_backend(needs_torch=True)
    else:
        assert isinstance(chosen, bk.InProcessBackend)
        monkeypatch.setenv(bk.ENV_BACKEND, "auto")
        monkeypatch.delenv(bk.ENV_PYTHON, raising=False)
        assert isinstance(bk.select_backend(needs_torch=True), bk.InProcessBackend)
        # with an environment configured, auto avoids a GDAL clash (pip rasterio vs QGIS's GDAL)
        monkeypatch.setenv(bk.ENV_PYTHON, sys.executable)
        auto = bk.select_backend(needs_torch=True)
        if bk.gdal_conflict():
            assert isinstance(auto, bk.SubprocessBackend) and "GDAL" in auto.reason
        else:
            assert isinstance(auto, bk.InProcessBackend)


FAKE = r"""
import json, sys, time
mode = sys.argv[-1]
for i in range(1, 51):
    sys.stderr.write(json.dumps({"progress": i / 50, "done": i, "total": 50, "message": "step"}) + "\n")
    sys.stderr.flush()
    time.sleep(0.02 if mode != "slow" else 0.2)
if mode == "fail":
    sys.stderr.write("Error: model expects 6 bands; raster has 4; pass --bands\n")
    sys.exit(2)
if mode == "crash":
    sys.stderr.write("Traceback (most recent call last):\nZeroDivisionError: boom\n")
    sys.exit(1)
print("ok")
"""


@pytest.fixture()
def fake(tmp_path: Path) -> bk.SubprocessBackend:
    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    b = bk.SubprocessBackend(sys.executable)
    b.script = str(script)  # type: ignore[attr-defined]
    return b


def test_subprocess_progress_and_errors(fake: bk.SubprocessBackend) -> None:
    seen: list[tuple[int, int, str]] = []

    def progress(done: int, total: int, message: str) -> bool:
        if done >= 0:
            seen.append((done, total, message))
        return False

    assert fake.run([fake.script, "ok"], progress, module=False).strip() == "ok"  # type: ignore[attr-defined]
    assert seen[-1] == (50, 50, "step") and len(seen) == 50
    with pytest.raises(bk.BackendError, match=r"^model expects 6 bands; raster has 4; pass --bands$"):
        fake.run([fake.script, "fail"], module=False)  # type: ignore[attr-defined]
    with pytest.raises(bk.BackendError, match="ZeroDivisionError: boom"):
        fake.run([fake.script, "crash"], module=False)  # type: ignore[attr-defined]


def test_subprocess_cancel_stops_and_removes_outputs(fake: bk.SubprocessBackend, tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    out.write_text("finished by a racing process")
    calls = {"n": 0}

    def progress(done: int, total: int, message: str) -> bool:
        calls["n"] += 1
        return done >= 2

    import time

    t0 = time.monotonic()
    with pytest.raises(bk.BackendCancelled, match="cancelled"):
        fake.run([fake.script, "slow"], progress, module=False, outputs=[str(out)])  # type: ignore[attr-defined]
    assert time.monotonic() - t0 < 5  # 50 x 0.2 s if it had not been stopped
    assert not out.exists()


def test_backend_imports_nothing_from_qgis() -> None:
    text = Path(bk.__file__).read_text()
    assert "from qgis" not in text and "import qgis" not in text
    assert os.path.basename(bk.__file__) == "backend.py"


def test_package_zip(tmp_path: Path) -> None:
    import subprocess
    import zipfile

    root = Path(__file__).resolve().parents[1]
    subprocess.run(["bash", str(root / "package.sh"), str(tmp_path)], check=True, capture_output=True)
    version = next(
        line.split("=", 1)[1].strip()
        for line in (root / "geoseg_qgis" / "metadata.txt").read_text().splitlines()
        if line.startswith("version=")
    )
    names = zipfile.ZipFile(tmp_path / f"geoseg_qgis-{version}.zip").namelist()
    for required in ("metadata.txt", "__init__.py", "icon.svg", "provider.py", "backend.py", "algorithms/segment.py"):
        assert f"geoseg_qgis/{required}" in names
    assert not [n for n in names if "__pycache__" in n or not n.startswith("geoseg_qgis/")]
