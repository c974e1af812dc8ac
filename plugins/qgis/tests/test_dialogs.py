"""Every algorithm's dialog in the real QGIS desktop application under Xvfb, one QGIS process per dialog.

Each test starts ``qgis --code dialog_probe.py`` on a virtual X display (Debian's ``xvfb``; not the offscreen
platform, so widgets really paint), opens one dialog through Processing's GUI with an empty project, a raster or a
vector as the active layer, and checks QGIS is still alive afterwards; a crash fails that test only and names the
signal. Screenshots of the dialogs are test artefacts: their folder is printed (``-s`` shows it) and kept by pytest's
tmp_path retention; nothing is committed. Segment raster also runs from its dialog, end to end.

Opening a dialog does not involve geoseg's process, so those tests run in the configured-environment run of
run_tests.sh only (they cost one QGIS start each); Segment's run from the dialog runs in both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PLUGIN_ROOT

QGIS = shutil.which("qgis")
XVFB = shutil.which("Xvfb")
PROBE = Path(__file__).with_name("dialog_probe.py")
ALGORITHMS = ("geoseg:segmentraster", "geoseg:vectorizeclasses", "geoseg:evaluate", "geoseg:trainmodel")
SITUATIONS = ("none", "raster", "vector")
pytestmark = pytest.mark.skipif(QGIS is None, reason="the QGIS desktop application (qgis) is not installed")


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """A virtual X display (Xvfb) for the QGIS desktop application."""
    if XVFB is None:
        pytest.fail("Xvfb is not installed: apt-get install xvfb (plugins/qgis/ci_setup.sh installs it)")
    read, write = os.pipe()
    proc = subprocess.Popen(
        [XVFB, "-displayfd", str(write), "-screen", "0", "1600x1200x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as fh:
        number = fh.readline().strip()
    if not number:
        proc.kill()
        pytest.fail("Xvfb did not start")
    yield f":{number}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dialog_screenshots")
    sys.__stdout__.write(f"\ndialog screenshots: {folder}\n")
    return folder


@pytest.fixture(scope="module")
def vector_layer(tmp_path_factory: pytest.TempPathFactory, labels: str) -> str:
    """Label polygons made with GDAL alone (the dialogs only need a polygon layer to be active)."""
    from osgeo import gdal, ogr

    out = tmp_path_factory.mktemp("dialog_vec") / "label_polygons.gpkg"
    src = gdal.Open(labels)
    band = src.GetRasterBand(1)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(out))
    layer = ds.CreateLayer("labels", srs=src.GetSpatialRef(), geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    gdal.Polygonize(band, band.GetMaskBand(), layer, 0)
    ds = None
    return str(out)


def qgis_env(display: str, backend_mode: str) -> dict[str, str]:
    """The QGIS desktop's environment: the display, and geoseg as the run under test offers it (a configured
    environment, or importable in the Python QGIS embeds)."""
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "PYTHONHOME", "PYTHONPATH")}
    env["DISPLAY"] = display
    if backend_mode != "configured":
        import geoseg

        paths = [str(Path(geoseg.__file__).resolve().parents[1]), *(p for p in sys.path if p.endswith("-packages"))]
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def open_dialog(
    tmp_path: Path,
    display: str,
    backend_mode: str,
    algorithm: str,
    active: str,
    *,
    raster: str,
    vector: str,
    screenshot: Path,
    run: dict | None = None,
    timeout: float = 240,
) -> dict:
    """Run the probe in a fresh QGIS; fail with the signal when QGIS dies."""
    result = tmp_path / "probe.json"
    config = {
        "plugin_root": str(PLUGIN_ROOT),
        "algorithm": algorithm,
        "active": active,
        "raster": raster,
        "vector": vector,
        "screenshot": str(screenshot),
        "result": str(result),
        "run": run,
        "timeout_s": timeout,
    }
    env = qgis_env(display, backend_mode)
    env["GEOSEG_DIALOG_PROBE"] = json.dumps(config)
    args = [QGIS, "--nologo", "--noversioncheck", "--noplugins", "-S", str(tmp_path / "profiles"), "--code", str(PROBE)]
    try:
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout + 120)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"QGIS did not finish with the {algorithm} dialog ({active}) in {exc.timeout:.0f} s")
    output = proc.stdout + proc.stderr
    died = re.search(r"QGIS died on signal (\d+)", output)
    if died or proc.returncode < 0:
        number = int(died.group(1)) if died else -proc.returncode
        frames = "\n".join(re.findall(r"^#\d+ .*Qgs\w+::\w+.*$", output, re.M)[:4])
        pytest.fail(
            f"QGIS crashed with signal {signal.Signals(number).name} ({number}) opening the {algorithm} dialog with "
            f"active layer {active!r}:\n{frames}"
        )
    assert result.exists(), f"QGIS exited with status {proc.returncode} before the probe finished:\n{output[-3000:]}"
    report = json.loads(result.read_text())
    assert report.get("alive") and proc.returncode == 0, report.get("error") or output[-3000:]
    return report


@pytest.mark.parametrize("active", SITUATIONS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_dialog_opens_without_crashing(
    algorithm: str,
    active: str,
    tmp_path: Path,
    display: str,
    backend_mode: str,
    screenshots: Path,
    scene: str,
    vector_layer: str,
) -> None:
    if backend_mode != "configured":
        pytest.skip("opening a dialog does not involve geoseg's process: tested in the configured-environment run")
    shot = screenshots / f"{algorithm.split(':')[1]}-{active}.png"
    report = open_dialog(
        tmp_path, display, backend_mode, algorithm, active, raster=scene, vector=vector_layer, screenshot=shot
    )
    assert report.get("active_layer") == {"none": None, "raster": "scene", "vector": "label polygons"}[active]
    assert shot.stat().st_size > 5000, "the screenshot is empty: the dialog did not paint"
    sys.__stdout__.write(f"\n{shot}\n")


def test_segment_raster_runs_from_its_dialog(
    tmp_path: Path,
    display: str,
    backend_mode: str,
    screenshots: Path,
    scene: str,
    vector_layer: str,
    checkpoint: str,
) -> None:
    out, polys = tmp_path / "classes.tif", tmp_path / "classes.gpkg"
    shot = screenshots / f"segmentraster-run-{backend_mode}.png"
    report = open_dialog(
        tmp_path,
        display,
        backend_mode,
        "geoseg:segmentraster",
        "raster",
        raster=scene,
        vector=vector_layer,
        screenshot=shot,
        run={"INPUT": scene, "MODEL": checkpoint, "DEVICE": 1, "OUTPUT": str(out), "POLYGONS": str(polys)},
    )
    assert report["executed"], report.get("log")
    assert report["results"]["OUTPUT"] == str(out) and out.exists() and polys.exists(), report
    assert {"Classes", "Class polygons"} <= set(report["loaded_layers"]), report["loaded_layers"]
    assert "geoseg backend:" in report["log"] and f"wrote {out} on cpu" in report["log"], report["log"]
    sys.__stdout__.write(f"\n{shot}\n")
