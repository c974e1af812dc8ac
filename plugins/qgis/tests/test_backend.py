"""Backend selection and the subprocess protocol (JSON-lines progress, errors, cancel)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from geoseg_qgis import backend as bk


def test_missing_python_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(bk.ENV_PYTHON, str(tmp_path / "nope" / "python"))
    with pytest.raises(bk.BackendError, match="does not exist"):
        bk.select_backend(needs_torch=True)


def test_python_from_venv_folder(tmp_path: Path) -> None:
    py = tmp_path / "venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text("")
    assert bk.resolve_python(str(tmp_path / "venv")) == str(py)


def test_selected_backend_matches_environment(backend_mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """geoseg always runs in a process of its own: the configured environment, else QGIS's own Python with QGIS's
    sys.path when geoseg is importable there, else a readable error."""
    chosen = bk.select_backend(needs_torch=True)
    assert isinstance(chosen, bk.SubprocessBackend)
    if backend_mode == "configured":
        assert chosen.python == bk.resolve_python(os.environ[bk.ENV_PYTHON]) and not chosen.reason and not chosen.path
        monkeypatch.delenv(bk.ENV_PYTHON)
        assert not bk.importable_here(False)  # the configured run really is without geoseg in QGIS's Python
        with pytest.raises(bk.BackendError, match=r"not importable in QGIS's Python \(/.*python3[.0-9]*\) and no"):
            bk.select_backend(needs_torch=True)
    else:
        assert chosen.python == bk.host_python() and "importable in QGIS's Python" in chosen.reason
        assert [p for p in sys.path if p] == chosen.path


FAKE = r"""
import json, os, subprocess, sys, time
mode = sys.argv[-1]
if mode == "group":  # a grandchild in the same process group, as geoseg's workers would be
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    if len(sys.argv) > 2:
        with open(sys.argv[-2], "w") as fh:
            fh.write(str(child.pid))
for i in range(1, 51):
    sys.stderr.write(json.dumps({"progress": i / 50, "done": i, "total": 50, "message": "step"}) + "\n")
    sys.stderr.flush()
    time.sleep(0.02 if mode not in ("slow", "group") else 0.2)
if mode == "warn":
    sys.stderr.write("Warning: class 'x' (id 2) has no training pixel; add labels for it\n")
if mode == "fail":
    sys.stderr.write("Error: model expects 6 bands; raster has 4; pass --bands\n")
    print(json.dumps([{"error": "model expects 6 bands; raster has 4; pass --bands", "type": "ModelContractError"}]))
    sys.exit(2)
if mode == "crash":
    sys.stderr.write("Traceback (most recent call last):\n  File x\nZeroDivisionError: boom\n")
    sys.exit(1)
print(json.dumps([{"ok": True}]))
"""


@pytest.fixture()
def fake(tmp_path: Path) -> tuple[bk.SubprocessBackend, str]:
    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    return bk.SubprocessBackend(sys.executable), str(script)


def test_subprocess_progress_results_and_errors(fake: tuple[bk.SubprocessBackend, str]) -> None:
    backend, script = fake
    seen: list[tuple[int, int, str]] = []

    def progress(done: int, total: int, message: str) -> bool:
        if done >= 0:
            seen.append((done, total, message))
        return False

    assert backend.run([], [progress], script=[script, "ok"]) == [{"ok": True}]
    assert seen[-1] == (50, 50, "step") and len(seen) == 50
    seen.clear()
    warned: list[tuple[int, int, str]] = []
    assert backend.run(
        [], [lambda *u: warned.append(u) if u[0] == bk.WARNING else progress(*u)], script=[script, "warn"]
    )
    assert warned == [(bk.WARNING, 0, "class 'x' (id 2) has no training pixel; add labels for it")]
    assert len(seen) == 50  # the progress lines still arrive
    with pytest.raises(bk.BackendError, match=r"^model expects 6 bands; raster has 4; pass --bands$") as err:
        backend.run([], script=[script, "fail"])
    assert err.value.kind == "ModelContractError"
    with pytest.raises(
        bk.BackendError, match=r"^geoseg failed with exit status 1: ZeroDivisionError: boom; the log"
    ) as e:
        backend.run([], script=[script, "crash"])
    assert "Traceback" in e.value.detail and "\n" not in str(e.value)
    assert backend.started == 4  # one process per call


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_subprocess_cancel_stops_the_process_group_and_removes_outputs(
    fake: tuple[bk.SubprocessBackend, str], tmp_path: Path
) -> None:
    backend, script = fake
    out = tmp_path / "out.tif"
    for p in (out, tmp_path / "out.tif.aux.xml", tmp_path / "out.tif.train-state.pt", tmp_path / ".out.tif.x.partial"):
        p.write_text("finished by a racing process")
    (tmp_path / "other.tif").write_text("not an output")

    def progress(done: int, total: int, message: str) -> bool:
        return done >= 2

    t0 = time.monotonic()
    with pytest.raises(bk.BackendCancelled, match="cancelled"):
        backend.run([], [progress], outputs=[str(out)], script=[script, "group"])
    assert time.monotonic() - t0 < 5  # 50 x 0.2 s if it had not been stopped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.py", "other.tif"]


@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_cancel_reaches_the_whole_process_group(fake: tuple[bk.SubprocessBackend, str], tmp_path: Path) -> None:
    backend, script = fake
    pid_file = tmp_path / "grandchild.pid"
    with pytest.raises(bk.BackendCancelled):
        backend.run([], [lambda d, t, m: d >= 2], script=[script, str(pid_file), "group"])
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild), "the geoseg process's own children must stop with it"


def test_host_python_is_this_interpreter() -> None:
    """The python named in messages runs this very interpreter (inside QGIS sys.executable may be another one)."""
    exe = bk.host_python()
    out = subprocess.run(
        [exe, "-c", "import sys; print(sys.exec_prefix, sys.version_info[:2])"], capture_output=True, text=True
    ).stdout.split(" ", 1)
    assert out[0] == sys.exec_prefix and out[1].strip() == str(sys.version_info[:2])


def test_errors_in_dialog_terms() -> None:
    from geoseg_qgis.messages import in_dialog_terms

    terms = {"bands": "Band mapping", "classes": "Class names", "class_field": "Class field", "overwrite": "X"}
    terms["truth_class_field"] = "Class field"
    assert in_dialog_terms(
        "model expects 6 band(s) B1,B2,B3,B4,B5,B6; the raster has 8 band(s) (1,2,3,4,5,6,7,8) and lacks "
        "B1,B2,B3,B4,B5,B6. Pass bands=... (CLI: --bands) listing 6 raster bands (1-based indexes or names) in "
        "the model's order, e.g. bands='1-6' (CLI: --bands 1-6)",
        terms,
    ) == (
        "model expects 6 band(s) B1,B2,B3,B4,B5,B6; the raster has 8 band(s) (1,2,3,4,5,6,7,8) and lacks "
        "B1,B2,B3,B4,B5,B6. Set 'Band mapping' listing 6 raster bands (1-based indexes or names) in the model's "
        "order, e.g. 'Band mapping' = 1-6"
    )
    assert in_dialog_terms("holds class names (a, b); pass classes=[...] (CLI: --classes) to map", terms) == (
        "holds class names (a, b); set 'Class names' to map"
    )
    # placeholders of the command line's spelling (geoseg.hints.placeholder) are not values
    assert in_dialog_terms("holds class names (a, b); pass --classes NAMES to map", terms) == (
        "holds class names (a, b); set 'Class names' to map"
    )
    assert in_dialog_terms("no class attribute; pass the class field (--class-field NAME)", terms) == (
        "no class attribute; set the class field ('Class field')"
    )
    # a bare flag is not followed by its value: the next word stays the sentence's
    assert in_dialog_terms("out.tif already exists; pass --overwrite to replace it", terms) == (
        "out.tif already exists; set 'X' to replace it"
    )
    assert in_dialog_terms("Pass --bands listing 6 raster bands, e.g. --bands 1-6", terms) == (
        "Set 'Band mapping' listing 6 raster bands, e.g. 'Band mapping' = 1-6"
    )
    assert (
        in_dialog_terms(
            "no class attribute; pass the class field (class_field=... in training, truth_class_field=... in "
            "evaluation; CLI: --class-field)",
            terms,
        )
        == "no class attribute; set the class field ('Class field')"
    )
    # options the dialog does not offer keep geoseg's words; the message stays one line
    text = "the nodata value (override with nodata=..., CLI --nodata)\n and --workers 2"
    assert in_dialog_terms(text, terms) == "the nodata value (override with nodata=..., CLI --nodata) and --workers 2"


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
    required_files = (
        "metadata.txt",
        "__init__.py",
        "icon.svg",
        "provider.py",
        "backend.py",
        "runner.py",
        "messages.py",
    )
    for required in (*required_files, "algorithms/segment.py", "algorithms/labels.py"):
        assert f"geoseg_qgis/{required}" in names
    assert not [n for n in names if "__pycache__" in n or not n.startswith("geoseg_qgis/")]
