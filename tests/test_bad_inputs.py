"""Catalogue of bad inputs: each gives a specific GeoSegError with an actionable message and leaves no output."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from model_utils import tiny_checkpoint
from rasters import TRANSFORM, class_scene, write_raster

from geoseg.cli.main import cli
from geoseg.errors import (
    BandSelectionError,
    CheckpointError,
    GeoSegError,
    GridMismatchWarning,
    InputNotFoundError,
    InvalidParameterError,
    ModelContractError,
    NodataWarning,
    NoOverlapError,
    NotARasterError,
    NotGeoreferencedWarning,
    NoValidDataError,
    OutputError,
    RasterReadError,
    UnknownClassError,
    UnsupportedRasterError,
)
from geoseg.inference import predict_raster
from geoseg.models import load_checkpoint, read_config
from geoseg.train import train_model


@pytest.fixture
def ck(tmp_path):
    return tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=8)


@pytest.fixture
def good(tmp_path):
    data, _ = class_scene(64, 64, bands=2)
    return write_raster(tmp_path / "good.tif", data, tiled=True, blockxsize=16, blockysize=16, compress="deflate")


def _no_output(d, name="out.tif"):
    return not (d / name).exists() and not [p for p in d.iterdir() if ".partial" in p.name]


def _predict(tmp_path, src, ck, **kw):
    return predict_raster(src, tmp_path / "out.tif", model=ck, device="cpu", **kw)


def test_truncated_geotiff(tmp_path, good, ck):
    raw = good.read_bytes()
    bad = tmp_path / "trunc.tif"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RasterReadError, match="truncated or corrupt"):
        _predict(tmp_path, bad, ck)
    assert _no_output(tmp_path)


def test_header_only_garbage_and_zero_byte(tmp_path, ck):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00" + os.urandom(200))
    with pytest.raises(NotARasterError, match="not a raster GDAL can read"):
        _predict(tmp_path, junk, ck)
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(NotARasterError, match="0-byte"):
        _predict(tmp_path, empty, ck)
    with pytest.raises(InputNotFoundError):
        _predict(tmp_path, tmp_path / "missing.tif", ck)
    assert _no_output(tmp_path)


def test_png_renamed_tif_is_read_by_content(tmp_path, ck):
    png = tmp_path / "x.png"
    with rasterio.open(png, "w", driver="PNG", width=20, height=10, count=2, dtype="uint8") as ds:
        ds.write(np.random.default_rng(0).integers(0, 255, (2, 10, 20), dtype=np.uint8))
    renamed = tmp_path / "renamed.tif"
    shutil.copy(png, renamed)
    with pytest.warns(NotGeoreferencedWarning):
        out = _predict(tmp_path, renamed, ck)
    with rasterio.open(out.output) as ds:
        assert ds.shape == (10, 20)


def test_rotated_transform_is_kept(tmp_path, ck):
    data, _ = class_scene(40, 40, bands=2)
    rot = Affine.translation(500000, 4600000) @ Affine.rotation(30) @ Affine.scale(10, -10)
    src = write_raster(tmp_path / "rot.tif", data, transform=rot)
    out = _predict(tmp_path, src, ck)
    with rasterio.open(out.output) as ds:
        assert ds.transform.almost_equals(rot)


def test_nan_inf_are_nodata_and_all_nodata_is_an_error(tmp_path, ck):
    data, _ = class_scene(40, 40, bands=2)
    data[0, :5] = np.nan
    data[1, 10:12] = np.inf
    src = write_raster(tmp_path / "nan.tif", data)
    out = _predict(tmp_path, src, ck)
    with rasterio.open(out.output) as ds:
        arr = ds.read(1)
    assert (arr[:5] == 255).all() and (arr[10:12] == 255).all() and (arr[20:] < 3).all()
    empty = write_raster(tmp_path / "allnd.tif", np.full((2, 40, 40), -1, np.int16), nodata=-1)
    with pytest.raises(NoValidDataError, match="no valid pixel"):
        predict_raster(empty, tmp_path / "o2.tif", model=ck, device="cpu")
    assert _no_output(tmp_path, "o2.tif")


@pytest.mark.parametrize("shape", [(1, 1), (1, 20_000), (20_000, 1)])
def test_degenerate_shapes_are_predicted(tmp_path, ck, shape):
    data = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    src = write_raster(tmp_path / "deg.tif", data)
    out = predict_raster(src, tmp_path / "out.tif", model=ck, device="cpu", tile=512 if 1 in shape else 32)
    with rasterio.open(out.output) as ds:
        assert ds.shape == shape and (ds.read(1) < 3).all()


def test_complex_dtype(tmp_path, ck):
    src = write_raster(tmp_path / "c.tif", np.ones((2, 8, 8), np.complex64))
    with pytest.raises(UnsupportedRasterError, match="complex"):
        _predict(tmp_path, src, ck)


def test_band_mismatch_and_class_ids_beyond_classes(tmp_path, ck):
    data, labels = class_scene(64, 64, bands=3, classes=3)
    src = write_raster(tmp_path / "three.tif", data, descriptions=["r", "g", "b"])
    ck3 = tiny_checkpoint(tmp_path / "m3.safetensors", ["r", "g", "nir"])
    with pytest.raises(ModelContractError, match="lacks nir"):
        predict_raster(src, tmp_path / "out.tif", model=ck3, device="cpu")
    lab = write_raster(tmp_path / "lab.tif", labels)
    with pytest.raises(InvalidParameterError, match=r"values \{2\} outside the class ids 0\.\.1 of the 2 class names"):
        train_model(src, lab, tmp_path / "t.safetensors", arch="tiny", classes=["a", "b"], device="cpu")
    assert _no_output(tmp_path)


def test_labels_not_overlapping_or_other_crs(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    data, labels = class_scene(64, 64, bands=2, classes=3)
    src = write_raster(tmp_path / "img.tif", data)
    far = gpd.GeoDataFrame({"c": [0, 1]}, geometry=[box(0, 0, 10, 10), box(20, 20, 30, 30)], crs="EPSG:32633")
    far.to_file(tmp_path / "far.gpkg")
    with pytest.raises(InvalidParameterError, match="cover no pixel of the image"):
        train_model(src, tmp_path / "far.gpkg", tmp_path / "t.safetensors", arch="tiny", class_field="c", device="cpu")
    other = write_raster(tmp_path / "lab4326.tif", labels, crs="EPSG:4326")
    with pytest.raises(NoOverlapError, match="cannot be placed in EPSG:32633"):
        train_model(src, other, tmp_path / "t.safetensors", arch="tiny", device="cpu")
    assert _no_output(tmp_path, "t.safetensors")


def test_checkpoint_of_another_architecture_and_malicious_pickle(tmp_path, good):
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": Boom(), "geoseg_config": "{}"}))
    with pytest.raises(CheckpointError, match="refused"):
        _predict(tmp_path, good, evil)
    assert not (tmp_path / "ran").exists() and _no_output(tmp_path)


def test_a_raster_or_other_file_given_as_the_model(tmp_path, good):
    """A raster picked as the model file is named as such (not a torch unpickling error, not a TypeError)."""
    from geoseg.models import read_config

    for path, what in ((good, "a TIFF/GeoTIFF raster"), (tmp_path / "notes.txt", "of no checkpoint format")):
        if not path.exists():
            path.write_text("some notes")
        for call in (lambda p=path: _predict(tmp_path, good, p), lambda p=path: read_config(p)):
            with pytest.raises(CheckpointError, match=f"is not a model checkpoint: it is {what}.*geoseg train") as err:
                call()
            assert "\n" not in str(err.value)
    assert _no_output(tmp_path)


def test_bad_encoder_weights_leave_no_checkpoint(tmp_path, good):
    import pickle

    import torch
    from safetensors.torch import save_file

    labels = write_raster(tmp_path / "lab.tif", class_scene(64, 64, bands=2)[1])

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"conv1.weight": Boom()}))
    odd = tmp_path / "odd.safetensors"
    save_file({"foo.weight": torch.zeros(1)}, str(odd))
    r50 = tmp_path / "r50.safetensors"
    save_file({"conv1.weight": torch.zeros(4, 3, 7, 7), "bn1.weight": torch.zeros(4),
               **{f"layer1.{i}.conv3.weight": torch.zeros(1) for i in range(3)},
               **{f"layer{j}.{i}.conv1.weight": torch.zeros(1) for j, n in ((1, 3), (2, 4), (3, 6), (4, 3))
                  for i in range(n)}}, str(r50))  # fmt: skip
    cases = [
        (tmp_path / "missing.pth", InputNotFoundError, "encoder weights not found"),
        (evil, CheckpointError, "refused to load"),
        (odd, CheckpointError, "fit no known encoder layout; expected one of"),
        (r50, CheckpointError, "holds a resnet50 .*encoder='resnet50'"),
        ("torchvision:resnet50", GeoSegError, "torchvision"),
    ]
    for weights, error, message in cases:
        with pytest.raises(error, match=message):
            train_model(
                good, labels, tmp_path / "m.safetensors", arch="fcn8s", arch_kwargs={"width": 4},
                encoder="resnet18", encoder_weights=weights, epochs=1, chip=32, block=32, device="cpu",
            )  # fmt: skip
        assert not (tmp_path / "ran").exists() and _no_output(tmp_path, "m.safetensors")


def test_output_equal_to_input(tmp_path, good, ck):
    before = good.read_bytes()
    with pytest.raises(OutputError, match="is the input raster"):
        predict_raster(good, good, model=ck, device="cpu", overwrite=True)
    assert good.read_bytes() == before


def test_batch_output_folder_holding_the_inputs(tmp_path, good, ck):
    pytest.importorskip("distributed")
    from geoseg.distributed import run_batch

    before = good.read_bytes()
    # the COG is named after the scene: the scene's own folder as output folder would replace it
    with pytest.raises(OutputError, match=r"COG of good .*good\.tif is the input raster; inputs are never overwritten"):
        run_batch([good], model=ck, out_dir=tmp_path, cog=True, overwrite=True, scheduler="tcp://127.0.0.1:9")
    assert good.read_bytes() == before and not (tmp_path / "good").exists()


def _mount_tmpfs(path, opts):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()}); the failing-writer test covers this")


def test_disk_full_on_a_small_tmpfs(tmp_path, ck):
    data = np.random.default_rng(0).normal(size=(2, 512, 512)).astype(np.float32)
    src = write_raster(tmp_path / "in.tif", data)
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "size=48k")
    try:
        with pytest.raises(OutputError, match="disk full|No space left"):
            predict_raster(
                src, mnt / "out.tif", model=ck, device="cpu", probabilities=mnt / "p.tif", prob_dtype="float32"
            )
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)])


def test_read_only_output_directory(tmp_path, good, ck):
    mnt = tmp_path / "ro"
    _mount_tmpfs(mnt, "size=1m,ro")
    try:
        with pytest.raises(OutputError, match="not writable"):
            predict_raster(good, mnt / "out.tif", model=ck, device="cpu")
    finally:
        subprocess.run(["umount", str(mnt)])


def test_every_error_is_a_geoseg_error_and_a_builtin():
    import inspect

    import geoseg.errors as E

    for name, cls in inspect.getmembers(E, inspect.isclass):
        if issubclass(cls, E.GeoSegError) and cls is not E.GeoSegError:
            assert any(issubclass(cls, b) for b in (ValueError, OSError, LookupError, ImportError, RuntimeError)), name
    with warnings.catch_warnings():
        assert issubclass(E.NotARasterError, GeoSegError)


# ------------------------------------------------------------------------------------------------------------------
# Commands: inputs never replaced, one overwrite rule, options checked before any work, one line per bad input.
# Each row is one command line; every row must exit with status 2 and one line "Error: ..." matching its message,
# and leave the folder exactly as it was (no file added, removed or changed: bytes and modification times).
# ------------------------------------------------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, object]:
    """Every file and folder under ``root``: content hash and modification time (links: their target)."""
    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = "dir"
        else:
            st = p.stat()
            out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns)
    return out


def _changes(before: dict[str, object], after: dict[str, object]) -> list[str]:
    return sorted(
        [f"added {k}" for k in after.keys() - before.keys()]
        + [f"removed {k}" for k in before.keys() - after.keys()]
        + [f"changed {k}" for k in before.keys() & after.keys() if before[k] != after[k]]
    )


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with the inputs and earlier outputs the rows refer to (relative paths, as a user types them)."""
    import geopandas as gpd
    from shapely.geometry import box

    data, labels = class_scene(64, 64, bands=2, classes=3)
    write_raster(tmp_path / "in.tif", data, tiled=True, blockxsize=16, blockysize=16)
    write_raster(tmp_path / "lab.tif", labels)
    write_raster(tmp_path / "dupdesc.tif", data, descriptions=["B2", "b2"])  # one name for two bands
    x0, y1 = 500000, 4600000
    thirds = [box(x0 + a, y1 - 640, x0 + b, y1) for a, b in ((0, 200), (200, 400), (400, 640))]  # columns of the grid
    gpd.GeoDataFrame({"class_id": [0, 1, 2]}, geometry=thirds, crs="EPSG:32633").to_file(tmp_path / "truth.gpkg")
    gpd.GeoDataFrame({"class_id": [0]}, geometry=[box(x0 + 9000, y1 - 640, x0 + 9640, y1)], crs="EPSG:32633").to_file(
        tmp_path / "far.gpkg"
    )
    gpd.GeoDataFrame({"class_id": []}, geometry=[], crs="EPSG:32633").to_file(tmp_path / "empty.gpkg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyogrio's warning about a layer without CRS
        gpd.GeoDataFrame({"class_id": [0]}, geometry=[box(0, 0, 640, 640)]).to_file(tmp_path / "nocrs.gpkg")
    write_raster(tmp_path / "far.tif", labels, transform=Affine.translation(9000, 0) @ TRANSFORM)
    write_raster(tmp_path / "nd1.tif", labels, nodata=1)  # ids 0, 1, 2 with 1 declared nodata
    write_raster(tmp_path / "allnd.tif", np.full((64, 64), 255, np.uint8), nodata=255)
    lab9 = labels.copy()
    lab9[:5, :5] = 9  # an id beyond the model's 3 classes
    write_raster(tmp_path / "lab9.tif", lab9)
    tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=8)
    (tmp_path / "old.tif").write_bytes(b"an earlier class map")
    (tmp_path / "t.safetensors.train-state.pt").write_bytes(b"an earlier run's training state")
    (tmp_path / "w.pth").write_bytes(b"pretrained encoder weights")
    (tmp_path / "p.gpkg").write_bytes(b"a probability raster")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    (tmp_path / "c.yaml").write_text("epochs: 2\n")
    (tmp_path / "ten.yaml").write_text("epochs: ten\n")
    (tmp_path / "refit3.yaml").write_text("refit: 3\n")
    (tmp_path / "classes3.yaml").write_text("classes: 3\n")
    (tmp_path / "negsteps.yaml").write_text("pixel_steps: -3\n")
    (tmp_path / "utm.geojson").write_text(  # projected coordinates in a GeoJSON without a CRS (read as lon/lat)
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": {"type": '
        '"Polygon", "coordinates": [[[500000, 4599000], [500600, 4599000], [500600, 4599600], [500000, 4599000]]]}}]}'
    )
    (tmp_path / "latin1.yaml").write_bytes("classes: [eau, forêt]\n".encode("latin-1"))  # not UTF-8
    gpd.GeoDataFrame({"class_id": [0.0, 1.5, 2.0]}, geometry=thirds, crs="EPSG:32633").to_file(
        tmp_path / "fractional.gpkg"
    )
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "report.json").write_text("{}")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "model.safetensors").write_bytes(b"the user's own model")
    (tmp_path / "link.tif").symlink_to("m.safetensors")
    os.link(tmp_path / "in.tif", tmp_path / "hard.tif")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cli(args: list[str]):
    return CliRunner().invoke(cli, [str(a) for a in args])


PREDICT = ["predict", "in.tif", "o.tif", "-m", "m.safetensors", "--device", "cpu", "--progress", "none"]
TRAIN = ["train", "in.tif", "lab.tif", "new.safetensors", "--arch", "tiny", "--device", "cpu", "--progress", "none"]
BATCH = ["batch", "in.tif", "-m", "m.safetensors", "-o", "out", "--device", "cpu", "--progress", "none"]

BAD_COMMAND_LINES = [
    # --- A: an input is never an output, even with --overwrite; one overwrite rule for every command
    pytest.param(["predict", "in.tif", "m.safetensors", "-m", "m.safetensors", "--overwrite"],
                 r"class raster m\.safetensors is the model; inputs are never overwritten", id="predict-out-is-model"),
    pytest.param([*PREDICT, "--probabilities", "m.safetensors", "--overwrite"],
                 r"probability raster m\.safetensors is the model", id="predict-probabilities-is-model"),
    pytest.param(["predict", "in.tif", "link.tif", "-m", "m.safetensors", "--overwrite"],
                 r"link\.tif is the model m\.safetensors \(through a symbolic link\)", id="predict-out-links-to-model"),
    pytest.param(["predict", "in.tif", "hard.tif", "-m", "m.safetensors", "--overwrite"],
                 r"hard\.tif is the input raster in\.tif \(a hard link to it\)", id="predict-out-hard-links-to-raster"),
    pytest.param([*PREDICT, "--truth", "truth.gpkg", "--vector", "truth.gpkg", "--overwrite"],
                 r"polygon file truth\.gpkg is the ground truth", id="predict-vector-is-truth"),
    pytest.param([*PREDICT, "--probabilities", "./o.tif"],
                 r"the probability raster and the class raster are the same file", id="predict-two-outputs-one-file"),
    pytest.param(["predict", "in.tif", "old.tif", "-m", "m.safetensors"],
                 r"class raster old\.tif already exists; pass --overwrite to replace it$", id="predict-existing"),
    pytest.param([*PREDICT, "--truth", "lab.tif", "--report", "rep"],
                 r"report file rep/report\.json already exists; pass --overwrite", id="predict-existing-report"),
    pytest.param(["train", "in.tif", "lab.tif", "lab.tif", "--overwrite"],
                 r"checkpoint lab\.tif is the labels", id="train-out-is-labels"),
    pytest.param(["train", "in.tif", "lab.tif", "c.yaml", "--config", "c.yaml", "--overwrite"],
                 r"checkpoint c\.yaml is the training config", id="train-out-is-config"),
    pytest.param(["train", "in.tif", "lab.tif", "w.pth", "--arch", "fcn8s", "--encoder", "resnet18",
                  "--encoder-weights", "w.pth", "--overwrite"],
                 r"checkpoint w\.pth is the encoder weights", id="train-out-is-encoder-weights"),
    pytest.param(["train", "in.tif", "lab.tif", "t.safetensors"],
                 r"training state t\.safetensors\.train-state\.pt already exists; pass --overwrite to replace it, or "
                 r"--resume to continue", id="train-earlier-state"),
    pytest.param(["train", "in.tif", "lab.tif", "t.safetensors", "--resume", "--overwrite"],
                 r"--resume continues the saved run and --overwrite starts over; choose one",
                 id="train-resume-overwrite"),
    pytest.param(["evaluate", "lab.tif", "lab.tif", "--report-dir", "rep"],
                 r"report file rep/report\.json already exists; pass --overwrite", id="evaluate-existing-report"),
    pytest.param(["vectorize", "lab.tif", "p.gpkg", "--probabilities", "p.gpkg", "--overwrite"],
                 r"polygon file p\.gpkg is the probability raster; inputs are never overwritten",
                 id="vectorize-out-is-probabilities"),
    pytest.param(["demo", "--out", "d", "--device", "cpu"],
                 r"demo file d/model\.safetensors already exists; pass --overwrite", id="demo-user-files"),
    pytest.param([*BATCH[:5], ".", "--cog", "--overwrite", "--device", "cpu"],
                 r"COG of in .*in\.tif is the input raster in\.tif; inputs are never overwritten",
                 id="batch-cog-is-input"),
    # --- D: every input and output of a multi-step command is checked before the first step; a failing later step
    # leaves nothing (the class map, polygons and report appear together or not at all)
    pytest.param([*PREDICT, "--vector", "nodir/p.gpkg"],
                 r"output directory nodir does not exist", id="predict-vector-in-missing-folder"),
    pytest.param([*PREDICT, "--truth", "missing.tif"], r"ground truth not found: missing\.tif", id="predict-no-truth"),
    pytest.param([*PREDICT, "--vector", "v.shp.zip"], r"unsupported vector output format", id="predict-vector-format"),
    pytest.param([*PREDICT, "--vector", "v.gpkg", "--truth", "junk.tif", "--report", "new-rep"],
                 r"junk\.tif is not a raster GDAL can read", id="predict-truth-fails-after-predicting"),
    pytest.param(["demo", "--out", "d2", "--epochs", "0"], r"--epochs must be a positive integer", id="demo-epochs-0"),
    pytest.param(["demo", "--out", "d2", "--arch", "bogus"], r"no model architecture named 'bogus'", id="demo-arch"),
    # --- C: options checked before any work starts
    *[pytest.param([*cmd, "--device", dev], rf"--device '{dev}' is not a device geoseg runs on", id=f"{cmd[0]}-{dev}")
      for cmd in (PREDICT, TRAIN, BATCH) for dev in ("mps", "bogus", "meta", "")],
    pytest.param([*PREDICT, "--device", "cuda:99"], r"--device 'cuda:99'", id="predict-cuda-99"),
    pytest.param([*TRAIN, "--config", "ten.yaml"], r"config ten\.yaml: epochs must be an integer .*, got 'ten' \(str\)",
                 id="train-config-epochs-ten"),
    pytest.param([*TRAIN, "--config", "refit3.yaml"],
                 r"config refit3\.yaml: refit must be true or false, got 3 \(int\)", id="train-config-refit-not-bool"),
    pytest.param([*TRAIN, "--config", "negsteps.yaml"], r"config negsteps\.yaml: pixel_steps must be an integer in "
                 r"\[0, 10000000\]", id="train-config-number-out-of-range"),
    pytest.param([TRAIN[0], "dupdesc.tif", *TRAIN[2:]],
                 r"image dupdesc\.tif: bands 1 and 2 are both described 'b2'; a model finds its bands by name, so each "
                 r"needs its own: give the bands distinct descriptions", id="train-band-descriptions-repeat"),
    pytest.param([*TRAIN, "--config", "latin1.yaml"],
                 r"config latin1\.yaml is not UTF-8 text \(byte 18: invalid continuation byte\); save it as UTF-8",
                 id="train-config-not-utf8"),
    pytest.param([*TRAIN[:2], "fractional.gpkg", *TRAIN[3:]],
                 r"attribute 'class_id' of vector labels fractional\.gpkg holds numbers that are not whole \(1\.5\); "
                 r"class ids are integers", id="train-polygon-class-ids-fractional"),
    pytest.param([*TRAIN, "--config", "classes3.yaml"], r"config classes3\.yaml: classes must be a list of text",
                 id="train-config-classes-int"),
    pytest.param([*TRAIN, "--arch-kwargs", "[1,2]"], r"--arch-kwargs must be a JSON object", id="arch-kwargs-list"),
    pytest.param([*TRAIN, "--arch-kwargs", "{width: 4}"], r"--arch-kwargs is not valid JSON", id="arch-kwargs-json"),
    pytest.param([*TRAIN, "--arch-kwargs", '{"width": -4}'],
                 r"cannot build model 'tiny' with options \{'width': -4\}: .*negative.*; tiny takes width=16",
                 id="arch-kwargs-negative-width"),
    pytest.param([*TRAIN, "--arch-kwargs", '{"width": 0}'],
                 r"cannot build model 'tiny' with options \{'width': 0\}: layer '.*' would have no weights \(a width "
                 r"or channel count of 0\); tiny takes width=16", id="arch-kwargs-zero-width"),
    pytest.param([*TRAIN[:4], "--arch", "ssnet", "--arch-kwargs", '{"spectral": 0}'],
                 r"cannot build model 'ssnet' with options \{'spectral': 0\}", id="arch-kwargs-zero-spectral"),
    pytest.param([*TRAIN, "--arch-kwargs", '{"widht": 4}'],
                 r"model 'tiny' has no option 'widht' \(did you mean 'width'", id="arch-kwargs-unknown"),
    pytest.param([*TRAIN, "--arch-kwargs", '{"width": 4, "width": 8}'],
                 r'--arch-kwargs is not valid JSON \(key "width" is given twice', id="arch-kwargs-key-twice"),
    pytest.param([*BATCH, "--cluster-option", 'env_extra={"A": "1", "A": "2"}'],
                 r'--cluster-option env_extra: .* is not valid JSON \(key "A" is given twice',
                 id="batch-cluster-key-twice"),
    pytest.param([*TRAIN, "--arch-kwargs", '{"width": "4"}'], r"option 'width' of model 'tiny' must be int, got '4'",
                 id="arch-kwargs-type"),
    pytest.param([*TRAIN[:4], "--arch", "bogus"], r"no model architecture named 'bogus'", id="train-arch"),
    pytest.param([*BATCH, "--cluster-option", "n_workers=1", "--cluster-option", "n-workers=2"],
                 r"--cluster-option n_workers is given twice \('n_workers=1' and 'n-workers=2'\); keep one",
                 id="batch-cluster-option-twice"),
    pytest.param([*BATCH, "--cluster-option", "bogus_key=1"],
                 r"--cluster-option bogus_key is not an option of a local cluster", id="batch-cluster-option"),
    pytest.param([*BATCH, "--cluster-option", "n_worker=2"], r"did you mean n_workers", id="batch-cluster-option-typo"),
    pytest.param([*BATCH, "--scheduler", "tcp://127.0.0.1:9", "--workers", "2"],
                 r"--workers cannot be used with --scheduler", id="batch-scheduler-workers"),
    pytest.param([*BATCH, "--scheduler", "tcp://127.0.0.1:9", "--cluster-option", "memory_limit=4GB"],
                 r"--cluster-option cannot be used with --scheduler", id="batch-scheduler-cluster-option"),
    pytest.param(["vectorize", "lab.tif", "v.gpkg", "--crs", "bogus"],
                 r"--crs 'bogus' is not a coordinate reference system", id="vectorize-crs"),
    pytest.param([*PREDICT, "--tile", "abc"], r"Invalid value for '--tile': 'abc' is not a valid integer",
                 id="usage-error-is-one-line"),
    # --- F: options that only make sense with another; class names
    pytest.param([*PREDICT, "--report", "rep2"], r"--report needs --truth", id="predict-report-without-truth"),
    pytest.param([*PREDICT, "--class-field", "c"], r"--class-field needs --truth", id="predict-class-field-alone"),
    pytest.param([*PREDICT, "--prob-dtype", "float32"], r"--prob-dtype needs --probabilities", id="predict-prob-dtype"),
    pytest.param(["evaluate", "lab.tif", "lab.tif", "--format", "json"], r"--format needs --report-dir",
                 id="evaluate-format-alone"),
    pytest.param(["evaluate", "lab.tif", "lab.tif", "--background", "0"],
                 r"--background names the class of pixels outside of label polygons, but the truth lab\.tif is a class "
                 r"raster", id="evaluate-background-raster-truth"),
    pytest.param(["evaluate", "lab.tif", "lab.tif", "--class-field", "c"], r"--class-field names the class attribute",
                 id="evaluate-class-field-raster-truth"),
    pytest.param(["evaluate", "lab.tif", "lab.tif", "--layer", "fields"],
                 r"--truth-layer names the layer of label polygons", id="evaluate-layer-raster-truth"),
    pytest.param(["evaluate", "lab.tif", "truth.gpkg", "--aoi-layer", "fields"], r"--aoi-layer needs --aoi",
                 id="evaluate-aoi-layer-alone"),
    pytest.param([*TRAIN, "--class-field", "c"], r"--class-field names the class attribute of label polygons, but "
                 r"lab\.tif is a label raster", id="train-class-field-raster-labels"),
    pytest.param([*TRAIN, "--background", "0"], r"--background names the class of pixels outside",
                 id="train-background"),
    pytest.param([*TRAIN, "--adapt", "mean"], r"--adapt needs --encoder-weights", id="train-adapt-alone"),
    pytest.param([*TRAIN, "--encoder-bands", "B2,B3"], r"--encoder-bands needs --encoder-weights",
                 id="train-encoder-bands-alone"),
    pytest.param([*TRAIN, "--classes", "water,water,forest"], r"--classes 'water,water,forest' names 'water' twice",
                 id="train-classes-twice"),
    pytest.param([*TRAIN, "--classes", "water,,forest"], r"--classes 'water,,forest' has an empty name at position 2",
                 id="train-classes-empty"),
    pytest.param([*TRAIN, "--classes", "Water,water,forest"], r"names 'water' twice", id="train-classes-case"),
    pytest.param([*TRAIN, "--classes", ""], r"has an empty name", id="train-classes-blank"),
    pytest.param(["evaluate", "lab.tif", "lab.tif", "--classes", "a,,b"], r"--classes 'a,,b' has an empty name",
                 id="evaluate-classes-empty"),
    pytest.param(["vectorize", "lab.tif", "v.gpkg", "--classes", "a,b,a"], r"--classes 'a,b,a' names 'a' twice",
                 id="vectorize-classes-twice"),
    # lab.tif holds ids 0, 1, 2: two names leave id 2 without one (evaluate refuses the same)
    pytest.param(["vectorize", "lab.tif", "v.gpkg", "--classes", "a,b"],
                 r"class ids \{2\} that are not among the 2 class", id="vectorize-ids-beyond-names"),
    pytest.param(["vectorize", "lab.tif", "v.gpkg", "--probabilities", "in.tif"],
                 r"probability raster in\.tif band 1 holds values .*not probabilities in \[0, 1\]",
                 id="vectorize-image-as-probabilities"),
    pytest.param([*TRAIN, "--label-nodata", "nan"], r"label_nodata nan cannot occur in lab\.tif.*--label-nodata",
                 id="train-label-nodata-nan-on-integers"),
    pytest.param([*TRAIN, "--threads", "100000"], r"--threads must be .*, got 100000", id="train-threads-huge"),
    pytest.param([*PREDICT, "--threads", "100000"], r"--threads must be .*, got 100000", id="predict-threads-huge"),
    pytest.param([*PREDICT, "--workers", "100000"],
                 r"--workers must be an integer in \[0, \d+\] \(reader threads\), got 100000",
                 id="predict-workers-huge"),
    pytest.param([*BATCH, "--workers", "100000"], r"--workers must be .*\(worker processes\), got 100000",
                 id="batch-local-workers-huge"),
    pytest.param(["vectorize", "lab.tif", "v.gpkg", "--classes", ""], r"--classes '' has an empty name",
                 id="vectorize-classes-blank"),
    pytest.param(["evaluate", "lab.tif", "lab.tif", "--classes", ""], r"--classes '' has an empty name",
                 id="evaluate-classes-blank"),
    pytest.param(["evaluate", "lab.tif", "lab.tif", "--ignore-index", "-5"],
                 r"--ignore-index -5 cannot occur in truth lab\.tif: it holds uint8 values \(0\.\.255\)",
                 id="evaluate-ignore-index-beyond-dtype"),
    pytest.param(["evaluate", "lab.tif", "truth.gpkg", "--ignore-index", "-1"],
                 r"--ignore-index -1 cannot occur in polygon truth", id="evaluate-ignore-index-negative-polygons"),
    # --- nodata vs class ids; class rasters with nothing to vectorize
    pytest.param(["evaluate", "nd1.tif", "lab.tif"], r"prediction nd1\.tif declares nodata 1, which is within its "
                 r"class ids 0\.\.2.*gdal_edit -a_nodata 255 nd1\.tif", id="evaluate-prediction-nodata-is-a-class"),
    pytest.param(["vectorize", "nd1.tif", "v.gpkg"], r"class raster nd1\.tif declares nodata 1",
                 id="vectorize-nodata-is-a-class"),
    pytest.param(["vectorize", "lab.tif", "v.gpkg", "--min-area", "1e300", "--progress", "none"],
                 r"--min-area 1e\+300 drops all \d+ polygons of lab\.tif \(the largest covers \d+ pixels.*lower "
                 r"--min-area$", id="vectorize-min-area-drops-everything"),
    # --- integers beyond any use fail allocating (or overflow a seed): refused with the range instead
    pytest.param([*PREDICT, "--batch-size", "1000000000"], r"--batch-size must be an integer in \[1, 65536\]",
                 id="predict-batch-size-huge"),
    pytest.param([*TRAIN, "--batch-size", "1000000000"], r"--batch-size must be an integer in \[1, 65536\]",
                 id="train-batch-size-huge"),
    pytest.param([*TRAIN, "--chip", "1000000000"], r"--chip must be an integer in \[8, 16384\]", id="train-chip-huge"),
    pytest.param([*TRAIN, "--chips-per-epoch", "1000000000"],
                 r"--chips-per-epoch must be an integer in \[1, 10000000\]", id="train-chips-per-epoch-huge"),
    pytest.param([*TRAIN, "--lr", "10"], r"--lr must be a number in \(0, 1\) \(AdamW learning rate\), got 10\.0",
                 id="train-lr-diverging"),
    pytest.param([*BATCH, "--retries", "1000000"], r"--retries must be an integer in \[0, 100\]",
                 id="batch-retries-huge"),
    # found in the prediction's value sample, before a full pass (pixels the sample misses: while scoring)
    pytest.param(["evaluate", "lab.tif", "lab.tif", "--classes", "a,b"],
                 r"prediction lab\.tif holds class ids \{2\} that are not among the 2 class names given \(a, b\): "
                 r"name every id 0\.\.K-1 \(--classes NAMES\)", id="evaluate-prediction-ids-beyond-classes"),
    pytest.param([*TRAIN, "--seed", str(2**70)], r"--seed must be an integer in \[0, 4294967295\]",
                 id="train-seed-huge"),
    pytest.param(["vectorize", "allnd.tif", "v.gpkg", "--progress", "none"],
                 r"class raster allnd\.tif holds no valid pixel", id="vectorize-all-nodata"),
    pytest.param(["vectorize", "lab.tif", "v.geojson", "--layer", "foo"],
                 r"--layer names the layer of a GeoPackage or FlatGeobuf output, but v\.geojson is GeoJSON, which "
                 r"holds one unnamed layer; drop --layer", id="vectorize-layer-without-layers"),
    # --- predict --truth: checked against the image before predicting (the message names the image, not the map)
    pytest.param([*PREDICT, "--truth", "far.gpkg"], r"truth polygons far\.gpkg \(bounds .*\) lie outside the image "
                 r"in\.tif \(the class map's grid\)", id="predict-truth-polygons-elsewhere"),
    pytest.param([*PREDICT, "--truth", "empty.gpkg"], r"truth polygons empty\.gpkg hold no polygon",
                 id="predict-truth-polygons-empty"),
    pytest.param([*PREDICT, "--truth", "nocrs.gpkg"], r"truth polygons nocrs\.gpkg have no CRS .*the image in\.tif.*"
                 r"ogr2ogr -a_srs EPSG:XXXX fixed\.gpkg nocrs\.gpkg", id="predict-truth-polygons-without-crs"),
    pytest.param([*PREDICT, "--truth", "far.tif"], r"truth far\.tif .* does not overlap the image in\.tif",
                 id="predict-truth-raster-elsewhere"),
    pytest.param(["evaluate", "lab.tif", "far.gpkg"], r"truth polygons far\.gpkg .* lie outside the prediction",
                 id="evaluate-truth-polygons-elsewhere"),
    pytest.param(["evaluate", "lab.tif", "lab.tif", "--aoi", "nocrs.gpkg"],
                 r"area of interest nocrs\.gpkg .* covers no pixel .*; it has no CRS, so its coordinates were taken to "
                 r"be in EPSG:32633: set the CRS it was drawn in", id="evaluate-aoi-without-crs-elsewhere"),
    pytest.param(["evaluate", "lab.tif", "empty.gpkg"], r"truth polygons empty\.gpkg hold no polygon",
                 id="evaluate-truth-polygons-empty"),
    pytest.param(["evaluate", "lab.tif", "lab.tif", "--aoi", "empty.gpkg"],
                 r"area of interest empty\.gpkg holds no geometry \(no polygon, or only empty ones\); draw the area "
                 r"to score in it, or drop --aoi to score every pixel", id="evaluate-aoi-empty"),
    pytest.param(["evaluate", "lab.tif", "lab.tif", "--aoi", "utm.geojson"],
                 r"area of interest utm\.geojson cannot be placed on the prediction's grid: its coordinates are not "
                 r"valid in the CRS it declares \(EPSG:4326; a GeoJSON file without a CRS is read as "
                 r"longitude/latitude\)", id="evaluate-aoi-geojson-projected-coordinates"),
    pytest.param(["info", "truth.gpkg"], r"truth\.gpkg is a vector file \(features, no raster bands\), not a raster",
                 id="info-vector-file"),
    # --- the advice fits the command, and messages name the user's paths, never a staged temporary
    pytest.param([*PREDICT, "--truth", "lab9.tif"], r"truth lab9\.tif holds class ids \[9\] .* the model predicts; "
                 r"mark those pixels as nodata in the truth, or use a model trained with those classes$",
                 id="predict-truth-ids-beyond-model-classes"),
    pytest.param([*PREDICT, "--truth", "allnd.tif"], r"no pixel is valid in both prediction o\.tif and truth "
                 r"allnd\.tif", id="predict-truth-all-nodata-names-the-output"),
    pytest.param([*PREDICT, "--truth", "lab.tif", "--report", "o.tif"], r"report folder o\.tif is the path of the "
                 r"class raster this command writes; choose another folder for the report",
                 id="predict-report-is-the-class-raster"),
    # --- a band selection: each band checked before the count; batch refuses it before any folder or cluster
    pytest.param([*PREDICT, "--bands", "0"], r"band index 0 is out of range", id="predict-bands-zero"),
    pytest.param([*PREDICT, "--bands", "1-"], r"no band named '1-'", id="predict-bands-open-range"),
    pytest.param([*BATCH, "--bands", "1"], r"model expects 2 band\(s\) .* the band selection '1' gives 1",
                 id="batch-bands-count"),
    pytest.param([*BATCH, "--bands", "1,7"], r"band index 7 is out of range", id="batch-bands-range"),
]  # fmt: skip


def test_batch_scene_truth_beyond_the_model_classes_gets_advice_batch_can_follow(workdir):
    """`geoseg batch --truth-dir` scores each mosaic against the model's classes: it has no --classes or
    --ignore-index, so the advice is about the truth or the model."""
    from geoseg.distributed.report import scene_report

    with pytest.raises(UnknownClassError, match=r"lab9\.tif holds class ids \[9\] .* the model predicts; mark those "
                       r"pixels as nodata in the truth, or use a model trained with those classes$"):  # fmt: skip
        scene_report("lab.tif", "lab9.tif", ["a", "b", "c"])


def test_batch_error_is_the_only_stderr_line_besides_the_bar(workdir):
    """A failed scene: the Dask dashboard address goes to stdout (with the bar only), never before the error."""
    Path("scenes.txt").write_text("in.tif\nmissing.tif\n")
    args = ["batch", "--manifest", "scenes.txt", "-m", "m.safetensors", "--device", "cpu", "--workers", "1"]
    for progress in ("none", "bar"):
        res = subprocess.run(
            [sys.executable, "-m", "geoseg", *args, "-o", f"out-{progress}", "--progress", progress],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert res.returncode == 1, res.stderr
        assert "Dask dashboard" not in res.stderr
        assert ("Dask dashboard: http" in res.stdout) == (progress == "bar"), res.stdout
        lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "task/s" not in ln and "batch:" not in ln]
        assert len(lines) == 1 and lines[0].startswith("Error: 1 of 2 scene(s) failed"), res.stderr


@pytest.mark.parametrize(("args", "message"), BAD_COMMAND_LINES)
def test_bad_command_line_is_one_line_and_changes_nothing(workdir, args, message):
    before = _snapshot(workdir)
    res = _cli(args)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert re.search(message, lines[0]), lines[0]
    assert "overwrite=True" not in lines[0] and "Traceback" not in res.output
    assert _changes(before, _snapshot(workdir)) == []


# Every numeric option of every command, tried at 0, -1, NaN and infinity: each value is either valid (listed here,
# with what it means) or refused before any work with one line naming the option. None silently means "default".
NUMERIC_BASE = {
    "predict": PREDICT,
    "train": ["train", "in.tif", "truth.gpkg", "new.safetensors", "--arch", "tiny", "--device", "cpu"],
    "evaluate": ["evaluate", "lab.tif", "truth.gpkg"],
    "vectorize": ["vectorize", "lab.tif", "v.gpkg"],
    "batch": BATCH,
    "demo": ["demo", "--out", "d2", "--device", "cpu"],
}
NUMERIC_VALID = {
    ("predict", "--tile"): (),
    ("predict", "--overlap"): ("0",),  # no overlap
    ("predict", "--batch-size"): (),
    ("predict", "--nodata"): ("0", "-1", "nan", "inf"),  # any value the raster's dtype holds (NaN for float rasters)
    ("predict", "--workers"): ("0",),  # read on the calling thread
    ("predict", "--threads"): (),
    ("predict", "--cache-mb"): ("0", "inf"),  # 0: no input blocks held across tile rows; inf: no limit
    ("batch", "--cache-mb"): ("0", "inf"),
    ("train", "--threads"): (),
    ("train", "--weight-decay"): ("0",),
    ("train", "--label-smoothing"): ("0",),
    ("train", "--pixel-steps"): ("0",),  # no per-pixel pre-training
    ("train", "--self-training"): ("0",),  # real labels only
    ("train", "--pseudo-threshold"): (),
    ("train", "--background"): ("0",),  # a class id
    ("train", "--label-nodata"): ("0", "-1", "nan", "inf"),  # any value; one the label dtype cannot hold is refused
    ("train", "--epochs"): (),
    ("train", "--chip"): (),
    ("train", "--batch-size"): (),
    ("train", "--chips-per-epoch"): (),
    ("train", "--lr"): (),
    ("train", "--val-fraction"): ("0",),  # no held-out blocks
    ("train", "--block"): (),
    ("train", "--patience"): (),
    ("train", "--seed"): ("0",),
    ("train", "--max-seconds"): ("inf",),  # no limit
    # a value the truth can hold: -1 in int16 label rasters, never in polygon truth (the base row's)
    ("evaluate", "--ignore-index"): ("0",),
    ("evaluate", "--background"): ("0",),
    ("evaluate", "--window"): (),
    ("vectorize", "--min-area"): ("0",),
    ("vectorize", "--simplify"): ("0",),  # exact pixel outlines
    ("vectorize", "--window"): (),
    ("batch", "--workers"): (),
    ("batch", "--worker-timeout"): ("0", "inf"),  # wait forever
    ("batch", "--region-size"): (),
    ("batch", "--tile"): (),
    ("batch", "--overlap"): ("0",),
    ("batch", "--batch-size"): (),
    ("batch", "--retries"): ("0",),  # no retry
    ("demo", "--epochs"): (),
    ("demo", "--max-seconds"): ("inf",),
}


def _numeric_options() -> list[tuple[str, str]]:
    found = []
    for name, cmd in sorted(cli.commands.items()):
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.is_flag and isinstance(p.type, click.types._NumberParamTypeBase):
                found.append((name, max(p.opts, key=len)))
    return found


def test_every_numeric_option_is_classified():
    assert sorted(_numeric_options()) == sorted(NUMERIC_VALID)


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [(c, f, v) for (c, f), valid in sorted(NUMERIC_VALID.items()) for v in ("0", "-1", "nan", "inf") if v not in valid],
)
def test_invalid_numbers_are_refused_before_any_work(workdir, command, flag, value):
    before = _snapshot(workdir)
    res = _cli([*NUMERIC_BASE[command], flag, value])
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("Error: ") and flag in lines[0], res.stderr
    assert _changes(before, _snapshot(workdir)) == []


def test_the_library_spells_options_as_python_arguments(tmp_path, good, ck):
    existing = tmp_path / "old.tif"
    existing.write_bytes(b"x")
    with pytest.raises(GeoSegError, match=r"pass overwrite=True to replace it$"):
        predict_raster(good, existing, model=ck, device="cpu")
    with pytest.raises(OutputError, match=r"class raster .*m\.safetensors is the model; inputs are never overwritten"):
        predict_raster(good, ck, model=ck, device="cpu", overwrite=True)
    with pytest.raises(InvalidParameterError, match=r"^tile must be a positive integer \(pixels\), got 0"):
        predict_raster(good, tmp_path / "o.tif", model=ck, device="cpu", tile=0)
    with pytest.raises(InvalidParameterError, match=r"^device 'mps' is not a device"):
        predict_raster(good, tmp_path / "o.tif", model=ck, device="mps")
    for kwargs, message in [  # argument types the annotations do not allow: refused before any work
        ({"nodata": "0"}, r"^nodata must be a number \(or null to use the default\), got '0' \(str\)$"),
        ({"model": None}, r"^model must be text or a path or a tuple \(Module, ModelConfig\), got None"),
        ({"tile": 64.0}, r"^tile must be an integer \(or null to use the default\), got 64\.0 \(float\)$"),
        ({"probabilities": 3}, r"^probabilities must be text or a path"),
    ]:
        with pytest.raises(InvalidParameterError, match=message):
            predict_raster(good, tmp_path / "o.tif", **{"model": ck, "device": "cpu", **kwargs})
    with pytest.raises(InvalidParameterError, match=r"^src must be text or a path, got an array of shape \(2, 8, 8\)"):
        predict_raster(np.zeros((2, 8, 8), np.float32), tmp_path / "o.tif", model=ck, device="cpu")
    with pytest.raises(InvalidParameterError, match=r"^src must be text or a path, got b'.*' \(bytes\)$"):
        predict_raster(str(good).encode(), tmp_path / "o.tif", model=ck, device="cpu")
    from geoseg.evaluation import evaluate

    with pytest.raises(InvalidParameterError, match=r"^ignore_index must be an integer"):
        evaluate(good, good, ignore_index="255")
    lab = write_raster(tmp_path / "lab.tif", class_scene(64, 64, bands=2)[1])
    for kwargs, message in [
        ({"epochs": "ten"}, r"^epochs must be an integer \(or null to use the default\), got 'ten'"),
        ({"arch_kwargs": [1, 2]}, r"^arch_kwargs must be a mapping"),
        ({"classes": ["a", "a", "b"]}, r"^classes \['a', 'a', 'b'\]|classes 'a,a,b' names 'a' twice"),
        ({"lr": float("nan")}, r"^lr must be a number in \(0, 1\) \(AdamW learning rate\), got nan"),
        ({"adapt": "mean"}, r"^adapt needs encoder_weights"),
        ({"refit": "yes"}, r"^refit must be true or false, got 'yes'"),
    ]:
        with pytest.raises(InvalidParameterError, match=message):
            train_model(good, lab, tmp_path / "t.safetensors", arch="tiny", device="cpu", **kwargs)
    assert _no_output(tmp_path, "o.tif") and not (tmp_path / "t.safetensors").exists()


def test_resume_with_other_options_is_refused_and_keeps_the_state(tmp_path, good):
    lab = write_raster(tmp_path / "lab.tif", class_scene(64, 64, bands=2)[1])
    out = tmp_path / "t.safetensors"
    common = {"arch_kwargs": {"width": 4}, "epochs": 2, "chip": 32, "block": 32, "chips_per_epoch": 8, "device": "cpu"}
    train_model(good, lab, out, arch="tiny", **common)
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=r"cannot resume .*arch 'tiny' \(now 'unet'\).*overwrite=True"):
        train_model(good, lab, out, arch="unet", resume=True, **{**common, "arch_kwargs": None})
    with pytest.raises(CheckpointError, match=r"arch_kwargs \{'width': 4\} \(now \{'width': 8\}\); epochs 2 \(now 3\)"):
        train_model(good, lab, out, arch="tiny", resume=True, **{**common, "arch_kwargs": {"width": 8}, "epochs": 3})
    with pytest.raises(CheckpointError, match=r"classes \['class_0', 'class_1', 'class_2'\] \(now \['a', 'b', 'c'\]\)"):
        train_model(good, lab, out, arch="tiny", resume=True, classes=["a", "b", "c"], **common)
    assert _changes(before, _snapshot(tmp_path)) == []
    res = CliRunner().invoke(cli, ["train", str(good), str(lab), str(out), "--resume", "--arch", "unet"])
    assert res.exit_code == 2 and "--arch 'tiny' (now 'unet')" in res.stderr and "--overwrite" in res.stderr


def _holder(tmp_path, code):
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_stale_temporaries_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    from geoseg.io.lock import owner_token
    from geoseg.io.write import parse_temporary, remove_stale_temporaries, temporary_path

    # a process that dies leaves a temporary file and a staged folder; one that lives keeps its own
    dead = subprocess.run(
        [sys.executable, "-c", "from geoseg.io.write import temporary_path as t; a = t('out.tif'); a.write_text('x');"
         "t('rep', directory=True); print(a.name)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    live = _holder(
        tmp_path, "import time; from geoseg.io.write import temporary_path as t; t('out.tif').write_text('x'); "
        "print('ready', flush=True); time.sleep(60)",
    )  # fmt: skip
    try:
        mine = temporary_path(tmp_path / "out.tif")
        mine.write_text("mine")
        other_host = tmp_path / f".out.tif.{os.getpid()}-1-00000000-abcdefgh.partial.tif"
        legacy = tmp_path / ".out.tif.k3j2h1g0.partial.tif"
        other_output = tmp_path / f".notes.txt.{owner_token().replace(str(os.getpid()), '999999', 1)}-abcdefgh.partial"
        for p in (other_host, legacy, other_output):
            p.write_text("x")
        temps = sorted(p.name for p in tmp_path.iterdir())
        assert all(parse_temporary(n) is not None for n in temps), temps
        assert parse_temporary(dead.stdout.strip()) == ("out.tif", [dead.stdout.strip().split(".")[3][:-9]])
        removed = {p.name for p in remove_stale_temporaries(tmp_path, ["out.tif", "rep"])}
        kept = {p.name for p in tmp_path.iterdir()}
        assert dead.stdout.strip() in removed and any(n.startswith(".rep.") for n in removed) and len(removed) == 2
        assert {mine.name, other_host.name, legacy.name, other_output.name} <= kept
        assert len([n for n in kept if n.startswith(".out.tif.")]) == 4  # mine, the live holder's, other host, legacy
    finally:
        live.kill()
        live.wait()


def test_a_run_after_sigkill_removes_the_temporaries_the_killed_run_left(tmp_path):
    data = np.random.default_rng(0).normal(size=(2, 256, 256)).astype(np.float32)  # ~120 tiles: killed midway
    src = write_raster(tmp_path / "in.tif", data, tiled=True, blockxsize=128, blockysize=128)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=8)
    args = [sys.executable, "-m", "geoseg", "predict", src, "out.tif", "-m", ck, "--device", "cpu", "--batch-size",
            "2", "--probabilities", "p.tif", "--progress", "json"]  # fmt: skip
    proc = subprocess.Popen(list(map(str, args)), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("{") and json.loads(line).get("done", 0) >= 2:
            break
    proc.kill()
    proc.wait()
    left = [p.name for p in tmp_path.iterdir() if ".partial" in p.name]
    assert left and not (tmp_path / "out.tif").exists()  # SIGKILL cannot be caught: hidden temporaries remain
    done = subprocess.run(list(map(str, args)), cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in tmp_path.iterdir() if ".partial" in p.name] == []
    assert (tmp_path / "out.tif").exists() and (tmp_path / "p.tif").exists()


def test_sigint_while_vectorizing_leaves_no_output(tmp_path):
    # noise: many small polygons, so vectorizing lasts long enough (seconds) for the signal to arrive during it even
    # when this process is slow to send it on a loaded machine
    data = np.random.default_rng(1).normal(size=(2, 1024, 1024)).astype(np.float32)
    src = write_raster(tmp_path / "in.tif", data, tiled=True, blockxsize=256, blockysize=256)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=128, overlap=8)
    lab = write_raster(tmp_path / "lab.tif", class_scene(1024, 1024, bands=2)[1])
    before = _snapshot(tmp_path)
    args = [sys.executable, "-m", "geoseg", "predict", src, "out.tif", "-m", ck, "--device", "cpu", "--vector",
            "v.gpkg", "--truth", lab, "--report", "rep", "--progress", "json"]  # fmt: skip
    # Ctrl-C as a terminal delivers it: a child inherits an ignored SIGINT (a test run started in the background,
    # or by a harness that ignores it) and Python then keeps ignoring it, so restore the default in the child
    proc = subprocess.Popen(
        list(map(str, args)),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in proc.stderr:
        if line.startswith("{") and json.loads(line).get("message") == "vectorize":
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, rest
    assert "no partial output was left behind" in rest
    assert _changes(before, _snapshot(tmp_path)) == []


def test_publishing_is_all_or_nothing(tmp_path):
    from geoseg.io.outputs import OutputSet

    (tmp_path / "a.tif").write_text("old a")
    (tmp_path / "a.tif.aux.xml").write_text("statistics of the old a")
    (tmp_path / "b.tif").write_text("old b")
    before = _snapshot(tmp_path)
    outputs = OutputSet({tmp_path / "in.tif": "input raster"}, overwrite=True)
    outputs.add(tmp_path / "a.tif", "class raster")
    outputs.add(tmp_path / "b.tif", "probability raster")
    outputs.add_folder(tmp_path / "rep", "report", files=["report.json"])
    with pytest.raises(OSError), outputs:
        outputs.stage(tmp_path / "a.tif").write_text("new a")
        (outputs.stage(tmp_path / "rep") / "report.json").write_text("{}")
        outputs.stage(tmp_path / "b.tif").mkdir()  # b cannot replace a file: its rename fails after a's succeeded
    assert _changes(before, _snapshot(tmp_path)) == []  # a and its sidecar restored, no report folder, no temporary
    with outputs:
        outputs.stage(tmp_path / "a.tif").write_text("new a")
        outputs.stage(tmp_path / "b.tif").write_text("new b")
        (outputs.stage(tmp_path / "rep") / "report.json").write_text("{}")
    assert (tmp_path / "a.tif").read_text() == "new a" and (tmp_path / "rep" / "report.json").exists()
    assert not (tmp_path / "a.tif.aux.xml").exists()  # it described the replaced raster
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif", "rep"]


def test_warnings_of_third_party_libraries_do_not_reach_users(workdir):
    from geoseg.cli.common import is_own_warning
    from geoseg.errors import GridMismatchWarning

    assert is_own_warning(NotGeoreferencedWarning, "/anywhere.py") and is_own_warning(GridMismatchWarning, "x.py")
    assert not is_own_warning(DeprecationWarning, __file__) and not is_own_warning(RuntimeWarning, "numpy/x.py")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PendingDeprecationWarning)  # affine's "Use @ matmul instead of *"
        res = _cli(["evaluate", "lab.tif", "truth.gpkg", "--progress", "none"])
    assert res.exit_code == 0 and "Warning" not in res.stderr and "matmul" not in res.output, res.output
    plain = write_raster(workdir / "plain.tif", class_scene(16, 16, bands=2)[0], crs=None, transform=None)
    res = _cli(["predict", plain, "o.tif", "-m", "m.safetensors", "--device", "cpu", "--progress", "none"])
    assert res.exit_code == 0 and "Warning: " in res.stderr and "no CRS" in res.stderr  # geoseg's own: shown
    import geopandas as gpd
    from shapely.geometry import Polygon, box

    x0, y1 = 500000, 4600000
    gpd.GeoDataFrame(
        {"class_id": [0, 1, 2]}, geometry=[box(x0, y1 - 640, x0 + 300, y1), Polygon(), box(x0 + 300, y1 - 640, x0 + 640,
        y1)], crs="EPSG:32633",
    ).to_file(workdir / "with_empty.gpkg")  # fmt: skip
    res = _cli(["evaluate", "lab.tif", "with_empty.gpkg", "--progress", "none"])
    assert res.exit_code == 0 and res.stderr == "", res.stderr  # geopandas' notna() notice stays inside
    nocrs = write_raster(workdir / "nocrs_map.tif", class_scene(32, 32, bands=1)[1], crs=None)
    res = _cli(["vectorize", nocrs.name, "v_nocrs.gpkg", "--progress", "none"])
    assert res.exit_code == 0 and res.stderr.splitlines() == [
        "Warning: nocrs_map.tif has a geotransform but no CRS; the polygons are in its map coordinates and carry no "
        "CRS (set the raster's CRS, e.g. gdal_edit.py -a_srs EPSG:32633, to place them)"
    ], res.stderr  # geoseg's own warning, not pyogrio's


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    from geoseg.cli.common import handle_errors
    from geoseg.cli.main import Geoseg

    @click.group(cls=Geoseg)
    @click.option("--debug", is_flag=True)
    @click.pass_context
    def group(ctx, debug):
        ctx.ensure_object(dict)["debug"] = debug

    @group.command("boom")
    @click.argument("raster", type=click.Path())
    @handle_errors
    def boom(raster):
        raise RuntimeError(f"kaput\nsecond line of {raster}")

    @group.command("stop")
    @handle_errors
    def stop():
        raise KeyboardInterrupt

    @group.command("train")
    @handle_errors
    def alloc():  # torch's CPU allocator fails with a RuntimeError, not a MemoryError
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried")

    res = CliRunner().invoke(group, ["boom", "scene.tif"])
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 1 and len(lines) == 1, res.stderr
    assert re.match(r"Error: geoseg boom failed on scene\.tif: RuntimeError: kaput second line of scene\.tif .*--debug",
                    lines[0])  # fmt: skip
    res = CliRunner().invoke(group, ["--debug", "boom", "scene.tif"])
    assert res.exit_code == 1 and "Traceback" in res.stderr and "Error: geoseg boom failed" in res.stderr
    monkeypatch.setenv("GEOSEG_DEBUG", "1")
    assert "Traceback" in CliRunner().invoke(group, ["boom", "x"]).stderr
    assert CliRunner().invoke(group, ["stop"]).exit_code == 130
    monkeypatch.delenv("GEOSEG_DEBUG")
    res = CliRunner().invoke(group, ["train"])
    assert res.exit_code == 1 and res.stderr.strip() == (
        "Error: geoseg train ran out of memory; use smaller tiles or batches (--chip, --batch-size) or free memory"
    )


# ====================================================================================================================
# Data semantics: nothing silently wrong. One row per input: the call, the error class and message, and a check that
# nothing was left behind or replaced. Kinds: output formats, georeference (GCPs/RPCs), band names, the model contract
# (schema and weights), class rasters, polygon layers, rotated grids, label values, label grids, nodata values, VRT
# sources, full disks, unsafe pickles.
# ====================================================================================================================


def _scene(tmp_path: Path, name: str = "img.tif", **kw: Any) -> Path:
    data, _ = class_scene(64, 64, bands=2)
    return write_raster(tmp_path / name, data, **kw)


def _ck(tmp_path: Path, bands=("1", "2"), classes=None, name="m.safetensors") -> Path:
    return tiny_checkpoint(tmp_path / name, list(bands), classes, tile=32, overlap=8)


def _labels(tmp_path: Path, values: np.ndarray, name: str = "lab.tif", **kw: Any) -> Path:
    return write_raster(tmp_path / name, values, **kw)


def _train(img: Path, labels: Path, out: Path, **kw: Any) -> Any:
    opts = {"arch": "tiny", "epochs": 1, "chip": 16, "block": 32, "chips_per_epoch": 4, "device": "cpu"} | kw
    return train_model(img, labels, out, **opts)


def _two_layers(tmp_path: Path, name: str = "two.gpkg") -> Path:
    import geopandas as gpd
    from shapely.geometry import box

    x0, y0 = TRANSFORM.c, TRANSFORM.f
    path = tmp_path / name
    top, bottom = box(x0, y0 - 320, x0 + 640, y0), box(x0, y0 - 640, x0 + 640, y0 - 320)
    gpd.GeoDataFrame({"class_id": [0, 1]}, geometry=[top, bottom], crs="EPSG:32633").to_file(path, layer="fields")
    gpd.GeoDataFrame({"class_id": [1]}, geometry=[top], crs="EPSG:32633").to_file(path, layer="roads")
    return path


def _contract_file(
    tmp_path: Path, change: dict[str, Any] | None = None, *, drop: str | None = None, name: str = "bad.safetensors"
) -> Path:
    """A tiny checkpoint whose contract JSON is edited (the weights stay those of a 2-band, 3-class model)."""
    from safetensors.torch import load_file, save_file

    from geoseg.models.config import CONFIG_KEY, safetensors_metadata

    good = _ck(tmp_path, name="good_" + name)
    meta = json.loads(safetensors_metadata(good)[CONFIG_KEY])
    meta.update(change or {})
    if drop:
        meta.pop(drop)
    path = tmp_path / name
    save_file(load_file(str(good)), str(path), metadata={CONFIG_KEY: json.dumps(meta), "format": "pt"})
    good.unlink()
    return path


@dataclass
class Row:
    """One bad input: ``build(tmp_path)`` makes the inputs and returns the call that must fail."""

    build: Any
    error: type[BaseException]
    match: str


def _predict_to(out: str, **kw: Any) -> Any:
    def build(tmp_path: Path) -> Any:
        img, ck = _scene(tmp_path), _ck(tmp_path)
        return lambda: predict_raster(img, tmp_path / out, model=ck, device="cpu", **kw)

    return build


def _vectorize(make: Any, out: str = "polys.gpkg", **kw: Any) -> Any:
    def build(tmp_path: Path) -> Any:
        from geoseg.vectorization import vectorize

        src = make(tmp_path)
        return lambda: vectorize(src, tmp_path / out, **kw)

    return build


def _evaluate(make_pred: Any, make_truth: Any, **kw: Any) -> Any:
    def build(tmp_path: Path) -> Any:
        from geoseg.evaluation import evaluate

        pred, truth = make_pred(tmp_path), make_truth(tmp_path)
        return lambda: evaluate(pred, truth, **kw)

    return build


def _train_on(make_labels: Any, **kw: Any) -> Any:
    def build(tmp_path: Path) -> Any:
        img = _scene(tmp_path)
        labels = make_labels(tmp_path)
        return lambda: _train(img, labels, tmp_path / "out.safetensors", **kw)

    return build


def _classmap(tmp_path: Path, name: str = "classes.tif", **kw: Any) -> Path:
    _, labels = class_scene(64, 64, bands=1)
    return write_raster(tmp_path / name, labels, **kw)


def _float_probabilities(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return write_raster(tmp_path / "probs.tif", rng.random((64, 64)).astype(np.float32))


def _reflectance(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "s2.tif", class_scene(64, 64, bands=6)[0])


def _dem(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    return write_raster(tmp_path / "dem.tif", rng.integers(0, 3000, (64, 64)).astype(np.int16))


def _uint16_band(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    return write_raster(tmp_path / "b8.tif", rng.integers(0, 10000, (64, 64)).astype(np.uint16))


def _duplicate_band_names(tmp_path: Path) -> Path:
    data = class_scene(64, 64, bands=4)[0]
    return write_raster(tmp_path / "dup.tif", data, descriptions=["B2", "B3", "B4", "B2"])


def _vrt_without_source(tmp_path: Path) -> Path:
    src = _classmap(tmp_path, "tile_a.tif")
    vrt = tmp_path / "mosaic.vrt"
    subprocess.run(["gdalbuildvrt", "-q", str(vrt), str(src)], check=True)
    src.unlink()
    return vrt


def _labels_values(values: list[int], dtype: str = "int16", **kw: Any) -> Any:
    def make(tmp_path: Path) -> Path:
        _, lab = class_scene(64, 64, bands=1, classes=len(values))
        return _labels(tmp_path, np.asarray(values, dtype)[lab], **kw)

    return make


def _named_bands(tmp_path: Path, names: Sequence[str] = ("r", "g")) -> Path:
    data = class_scene(64, 64, bands=len(names))[0]
    return write_raster(tmp_path / "named.tif", data, descriptions=list(names))


def _predict_named(bands: Any, raster_names: Sequence[str] = ("r", "g")) -> Any:
    """predict_raster with ``bands`` on a raster whose bands are named ``raster_names``, model bands r, g."""

    def build(tmp_path: Path) -> Any:
        img, ck = _named_bands(tmp_path, raster_names), _ck(tmp_path, bands=("r", "g"))
        return lambda: predict_raster(img, tmp_path / "out.tif", model=ck, device="cpu", bands=bands)

    return build


def _negative_ids(tmp_path: Path) -> Path:
    """A class map of ids -1, 0, 1 (int16, no nodata declared)."""
    return write_raster(tmp_path / "neg.tif", np.asarray([-1, 0, 1], np.int16)[class_scene(64, 64, bands=1)[1]])


def _truth_polygons(ids: list[int], *, dx: float = 0.0, crs: Any = "EPSG:32633", name: str = "truth.gpkg") -> Any:
    """Polygon truth: ``ids`` in horizontal strips over the scene of :func:`_classmap`, shifted ``dx`` map units."""

    def make(tmp_path: Path) -> Path:
        import geopandas as gpd
        from shapely.geometry import box

        x0, y0 = TRANSFORM.c + dx, TRANSFORM.f
        n = max(len(ids), 1)
        geoms = [box(x0, y0 - 640 * (i + 1) / n, x0 + 640, y0 - 640 * i / n) for i in range(len(ids))]
        path = tmp_path / name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyogrio's warning about a layer without CRS
            gpd.GeoDataFrame({"class_id": ids}, geometry=geoms, crs=crs).to_file(path)
        return path

    return make


def _polygon_labels(ids: list[int]) -> Any:
    def make(tmp_path: Path) -> Path:
        import geopandas as gpd
        from shapely.geometry import box

        x0, y0 = TRANSFORM.c, TRANSFORM.f
        geoms = [
            box(x0, y0 - 640 + 640 * i / len(ids), x0 + 640, y0 - 640 + 640 * (i + 1) / len(ids))
            for i in range(len(ids))
        ]
        path = tmp_path / "labels.gpkg"
        gpd.GeoDataFrame({"class_id": ids}, geometry=geoms, crs="EPSG:32633").to_file(path)
        return path

    return make


class Payload:
    """Any pickled Python object: torch refuses to unpickle it with weights_only=True."""


def _pt_with_pickled_object(tmp_path: Path, name: str) -> Path:
    import torch

    path = tmp_path / name
    torch.save({"state_dict": {"w": torch.zeros(1)}, "geoseg_config": "{}", "extra": Payload()}, path)
    return path


# fmt: off
SILENTLY_WRONG = {
    # -- output formats: chosen by extension, never a GeoTIFF under another name ---------------------------------
    "predict-png": Row(_predict_to("classes.png"), InvalidParameterError,
                       r"unsupported class raster format '\.png'.*geoseg writes GeoTIFF.*classes\.tif"),
    "predict-jp2": Row(_predict_to("classes.jp2"), InvalidParameterError, r"format '\.jp2'"),
    "predict-gpkg": Row(_predict_to("classes.gpkg"), InvalidParameterError, r"format '\.gpkg'"),
    "predict-no-extension": Row(_predict_to("classes"), InvalidParameterError, r"'\(no extension\)'"),
    # -- the block-reuse budget: NaN would compare false and quietly hold nothing --------------------------------
    "predict-cache-mb-negative": Row(_predict_to("ok.tif", cache_mb=-1), InvalidParameterError,
                                     r"cache_mb must be a number >= 0 \(MiB; .*got -1"),
    "predict-cache-mb-nan": Row(_predict_to("ok.tif", cache_mb=float("nan")), InvalidParameterError,
                                r"cache_mb must be a number >= 0 \(MiB; .*got nan"),
    "predict-probabilities-png": Row(_predict_to("ok.tif", probabilities="p.png"), InvalidParameterError,
                                     r"unsupported probability raster format '\.png'"),
    "vectorize-png": Row(_vectorize(_classmap, "polys.png"), InvalidParameterError,
                         r"unsupported vector output format '\.png'.*\.gpkg.*\.shp"),
    "vectorize-kml": Row(_vectorize(_classmap, "polys.kml"), InvalidParameterError, r"format '\.kml'"),
    "vectorize-no-extension": Row(_vectorize(_classmap, "polys"), InvalidParameterError, r"'\(no extension\)'"),
    # -- band names that several bands share ---------------------------------------------------------------------
    "bands-duplicate-name": Row(
        lambda t: (lambda img=_duplicate_band_names(t), ck=_ck(t): predict_raster(
            img, t / "out.tif", model=ck, device="cpu", bands="B2,B3")),
        BandSelectionError, r"band name 'B2' is ambiguous.*bands 1, 4 are all named 'B2'.*bands='1,B3'"),
    "bands-duplicate-name-any-case": Row(
        lambda t: (lambda img=_duplicate_band_names(t), ck=_ck(t): predict_raster(
            img, t / "out.tif", model=ck, device="cpu", bands="b2,3")),
        BandSelectionError, r"'b2' is ambiguous.*bands 1, 4"),
    "contract-band-duplicated-in-raster": Row(
        lambda t: (lambda img=_duplicate_band_names(t), ck=_ck(t, bands=("B2", "B3")): predict_raster(
            img, t / "out.tif", model=ck, device="cpu")),
        BandSelectionError, r"'B2' is ambiguous"),
    # -- class rasters: vectorize and evaluate refuse images, probabilities and continuous data -------------------
    "vectorize-6-band-reflectance": Row(_vectorize(_reflectance), UnsupportedRasterError,
                                        r"has 6 bands; a class raster has one band"),
    "vectorize-float-probabilities": Row(_vectorize(_float_probabilities), UnsupportedRasterError,
                                         r"non-integer values \(e\.g\. 0\.\d+\)"),
    "vectorize-dem-int16": Row(_vectorize(_dem), UnsupportedRasterError,
                               r"distinct values.*no class names: it looks like continuous data"),
    "vectorize-uint16-band": Row(_vectorize(_uint16_band), UnsupportedRasterError, r"looks like continuous data"),
    "evaluate-float-prediction": Row(_evaluate(_float_probabilities, _classmap), UnsupportedRasterError,
                                     r"prediction .*probs\.tif holds non-integer values"),
    "evaluate-float-truth": Row(_evaluate(_classmap, _float_probabilities), UnsupportedRasterError,
                                r"truth .*probs\.tif holds non-integer values"),
    "evaluate-multiband-prediction": Row(_evaluate(_reflectance, _classmap), UnsupportedRasterError,
                                         r"prediction .*s2\.tif has 6 bands"),
    # -- polygon files with several layers -----------------------------------------------------------------------
    "train-labels-two-layers": Row(_train_on(_two_layers), InvalidParameterError,
                                   r"holds 2 layers \('fields', 'roads'\); choose one with layer=NAME$"),
    "evaluate-truth-two-layers": Row(_evaluate(_classmap, _two_layers), InvalidParameterError,
                                     r"holds 2 layers .*truth_layer=NAME$"),
    "evaluate-aoi-two-layers": Row(
        lambda t: (lambda p=_classmap(t), a=_two_layers(t, "aoi.gpkg"): __import__("geoseg.evaluation").evaluation
                   .evaluate(p, p, aoi=a)),
        InvalidParameterError, r"area of interest .*holds 2 layers .*aoi_layer=NAME$"),
    "evaluate-truth-unknown-layer": Row(_evaluate(_classmap, _two_layers, truth_layer="nope"), InvalidParameterError,
                                        r"has no layer 'nope'; its layers are 'fields', 'roads'"),
    # -- label values: ids 0..K-1, the rest declared nodata or refused ------------------------------------------
    "labels-0-1-255-300": Row(_train_on(_labels_values([0, 1, 255, 300])), UnknownClassError,
                              r"hold values \{0, 1, 255, 300\}: ids \{2, 3, .*\} are missing.*label_nodata=VALUE"),
    "labels-0-1-255-300-named": Row(_train_on(_labels_values([0, 1, 255, 300]), classes=["a", "b", "c"]),
                                    UnknownClassError, r"values \{255, 300\} outside the class ids 0\.\.2"),
    "labels-0-255-mask": Row(_train_on(_labels_values([0, 255], "uint8")), UnknownClassError,
                             r"hold values \{0, 255\}.*a 0/255 mask to 0/1.*gdal_edit -a_nodata"),
    "labels-1-2-no-zero": Row(_train_on(_labels_values([1, 2], "uint8")), UnknownClassError,
                              r"hold values \{1, 2\}: ids \{0\} are missing"),
    "labels-minus-one-undeclared": Row(_train_on(_labels_values([-1, 0, 1])), UnknownClassError,
                                       r"\{-1, 0, 1\}: negative values are not class ids"),
    "labels-mask-255-declared-nodata": Row(_train_on(_labels_values([0, 255], "uint8", nodata=255)),
                                           InvalidParameterError, r"need at least 2 classes"),
    "labels-one-class-present": Row(_train_on(_labels_values([0], "uint8"), classes=["water", "land"]),
                                    InvalidParameterError, r"hold only class \['water'\].*at least 2 classes present"),
    "polygon-labels-0-255": Row(_train_on(_polygon_labels([0, 255])), UnknownClassError,
                                r"vector labels .*hold values \{0, 255\}"),
    "polygon-labels-background-outside": Row(_train_on(_polygon_labels([0, 1]), classes=["a", "b", "c"],
                                                       background=7),
                                             UnknownClassError, r"values \{7\} outside the class ids 0\.\.2"),
    # -- label rasters on another grid ---------------------------------------------------------------------------
    "labels-2km-away": Row(_train_on(lambda t: _labels(t, class_scene(64, 64, bands=1)[1],
                                                       transform=Affine.translation(2000, 0) @ TRANSFORM)),
                           NoOverlapError, r"label raster .* does not overlap the image"),
    "truth-2km-away": Row(_evaluate(_classmap, lambda t: _classmap(
        t, "truth.tif", transform=Affine.translation(0, -2000) @ TRANSFORM)), NoOverlapError,
        r"truth .*truth\.tif .* does not overlap the prediction"),
    "truth-gcps-vs-affine-prediction": Row(_evaluate(_classmap, lambda t: _classmap(
        t, "truth.tif", transform=None, gcps=_gcps(64, 64))), NoOverlapError,
        r"placed only by GCPs or RPCs is aligned only with the same grid.*gdalwarp"),
    "truth-no-crs-elsewhere": Row(_evaluate(_classmap, lambda t: _classmap(
        t, "truth.tif", crs=None, transform=Affine.translation(0, -2000) @ TRANSFORM)), NoOverlapError,
        r"truth .*truth\.tif .* does not overlap .*truth\.tif has no CRS, so its coordinates were taken to be in "
        r"EPSG:32633: set the CRS it is in \(gdal_edit -a_srs"),
    # -- band selections that contradict the raster's band names, or repeat a band ------------------------------
    "bands-reversed-against-names": Row(
        _predict_named("2,1"), BandSelectionError, r"'2,1' feeds band 2 \('g'\) to model input 1 \('r'\), but the "
        r"raster's band 1 is named 'r'; pass bands='1,2', or omit bands: the raster's band names match"),
    "bands-names-reversed": Row(_predict_named("g,r"), BandSelectionError, r"pass bands='1,2'"),
    "bands-other-band-for-a-named-input": Row(
        _predict_named("1,3", ("r", "g", "x")), BandSelectionError,
        r"feeds band 3 \('x'\) to model input 2 \('g'\), but the raster's band 2"),
    "bands-repeated": Row(_predict_named("1,1"), BandSelectionError,
                          r"band selection '1,1' selects band 1 \('r'\) twice \(positions 1 and 2\)"),
    "bands-repeated-name-and-index": Row(_predict_named("r,1"), BandSelectionError, r"selects band 1 \('r'\) twice"),
    "bands-repeated-in-training": Row(lambda t: (lambda img=_scene(t), lab=_classmap(t, "lab.tif"): _train(
        img, lab, t / "m.safetensors", bands=[2, 2])), BandSelectionError, r"'2,2' selects band 2 twice"),
    # -- a declared nodata that is a class id: that class would vanish from scores and polygons ---------------
    "evaluate-prediction-nodata-is-a-class": Row(
        _evaluate(lambda t: _classmap(t, "pred.tif", nodata=1), _classmap, classes=["a", "b", "c"]),
        UnsupportedRasterError, r"prediction .*pred\.tif declares nodata 1, which is class id 1 \(b\).*gdal_edit "
        r"-a_nodata 255 .*gdal_edit -unsetnodata"),
    "evaluate-prediction-nodata-inside-unnamed-ids": Row(
        _evaluate(lambda t: write_raster(t / "pred.tif", class_scene(64, 64, bands=1, classes=4)[1], nodata=1),
                  _classmap), UnsupportedRasterError, r"declares nodata 1, which is within its class ids 0\.\.3"),
    "vectorize-nodata-is-a-class": Row(_vectorize(lambda t: _classmap(t, nodata=2), classes=["a", "b", "c"]),
                                       UnsupportedRasterError, r"declares nodata 2, which is class id 2 \(c\)"),
    # -- degenerate class rasters: nothing to vectorize, values that are no class ids ----------------------------
    "vectorize-all-nodata": Row(_vectorize(lambda t: write_raster(t / "nd.tif", np.full((64, 64), 255, np.uint8),
                                                                  nodata=255)),
                                NoValidDataError, r"class raster .*nd\.tif holds no valid pixel.*nothing to vectorize"),
    "vectorize-all-masked-float": Row(_vectorize(lambda t: write_raster(t / "nan.tif",
                                                                        np.full((64, 64), np.nan, np.float32))),
                                      NoValidDataError, r"holds no valid pixel"),
    "vectorize-negative-ids": Row(_vectorize(_negative_ids), UnknownClassError,
                                  r"neg\.tif holds negative values \{-1\}, which are not class ids"),
    "evaluate-negative-prediction-ids": Row(
        _evaluate(_negative_ids, _classmap), UnknownClassError, r"prediction .*neg\.tif holds negative values"),
    # -- polygon truth that cannot be scored: the reason, not "no pixel is valid in both" ----------------------
    "truth-polygons-empty": Row(_evaluate(_classmap, _truth_polygons([])), NoValidDataError,
                                r"truth polygons .*truth\.gpkg hold no polygon"),
    "truth-polygons-elsewhere": Row(_evaluate(_classmap, _truth_polygons([0, 1], dx=5000)), NoOverlapError,
                                    r"truth polygons .*\(bounds \(505000, .* in EPSG:32633\) lie outside the "
                                    r"prediction \(bounds \(500000"),
    "truth-polygons-without-crs": Row(
        _evaluate(_classmap, lambda t: _truth_polygons([0, 1], dx=-500000, crs=None)(t)), NoOverlapError,
        r"truth polygons .* have no CRS and their coordinates .* do not fall on the prediction .*EPSG:32633.*"
        r"ogr2ogr -a_srs EPSG:XXXX fixed\.gpkg .*truth\.gpkg"),
    # -- ignore_index that no truth pixel can hold would ignore nothing ----------------------------------------
    "evaluate-ignore-index-beyond-dtype": Row(_evaluate(_classmap, lambda t: _classmap(t, "truth.tif"),
                                                        ignore_index=-5), InvalidParameterError,
                                              r"ignore_index=-5 cannot occur in truth .*truth\.tif: it holds uint8 "
                                              r"values \(0\.\.255\)"),
    "evaluate-ignore-index-300-in-uint8": Row(_evaluate(_classmap, lambda t: _classmap(t, "truth.tif"),
                                                        ignore_index=300), InvalidParameterError,
                                              r"ignore_index=300 cannot occur"),
    "evaluate-ignore-index-negative-polygons": Row(_evaluate(_classmap, _truth_polygons([0, 1]), ignore_index=-1),
                                                   InvalidParameterError,
                                                   r"ignore_index=-1 cannot occur in polygon truth"),
}
# fmt: on


def _gcps(rows: int, cols: int) -> list:
    from rasterio.control import GroundControlPoint as G

    x0, y0 = TRANSFORM.c, TRANSFORM.f
    return [
        G(0, 0, x0, y0),
        G(0, cols, x0 + 10 * cols, y0),
        G(rows, 0, x0, y0 - 10 * rows),
        G(rows, cols, x0 + 10 * cols, y0 - 10 * rows),
    ]


# fmt: off
MODEL_CONTRACT = {
    # -- a malformed contract: one CheckpointError naming the field ----------------------------------------------
    "tile-big": Row(lambda t: (lambda p=_contract_file(t, {"tile": "big"}): load_checkpoint(p)), CheckpointError,
                    r"field 'tile': expected a positive integer \(pixels\), got 'big'"),
    "tile-bool": Row(lambda t: (lambda p=_contract_file(t, {"tile": True}): load_checkpoint(p)), CheckpointError,
                     r"field 'tile'"),
    "format-version-string": Row(lambda t: (lambda p=_contract_file(t, {"format_version": "1"}): read_config(p)),
                                 CheckpointError, r"field 'format_version': expected a positive integer, got '1'"),
    "classes-integers": Row(lambda t: (lambda p=_contract_file(t, {"classes": [1, 2, 3]}): read_config(p)),
                            CheckpointError, r"field 'classes': expected a list of class names \(strings\)"),
    "classes-repeat": Row(lambda t: (lambda p=_contract_file(t, {"classes": ["a", "a", "b"]}): read_config(p)),
                          CheckpointError, r"field 'classes': names \['a'\] repeat"),
    "colors-names": Row(lambda t: (lambda p=_contract_file(t, {"colors": [["red"]] * 3}): read_config(p)),
                        CheckpointError, r"field 'colors': expected a list of \[r, g, b\] integers 0\.\.255"),
    "colors-out-of-range": Row(lambda t: (lambda p=_contract_file(t, {"colors": [[0, 0, 300]] * 3}): read_config(p)),
                               CheckpointError, r"field 'colors'"),
    "colors-count": Row(lambda t: (lambda p=_contract_file(t, {"colors": [[0, 0, 0]]}): read_config(p)),
                        CheckpointError, r"field 'colors': 1 colors given for 3 classes"),
    "overlap-negative": Row(lambda t: (lambda p=_contract_file(t, {"overlap": -8}): read_config(p)),
                            CheckpointError, r"field 'overlap': expected an integer >= 0"),
    "bands-empty": Row(lambda t: (lambda p=_contract_file(t, {"bands": []}): read_config(p)),
                       CheckpointError, r"field 'bands'"),
    "bands-repeat": Row(lambda t: (lambda p=_contract_file(t, {"bands": ["1", "1"]}): read_config(p)),
                        CheckpointError, r"field 'bands': names \['1'\] repeat"),
    "arch-number": Row(lambda t: (lambda p=_contract_file(t, {"arch": 5}): read_config(p)),
                       CheckpointError, r"field 'arch'"),
    "stride-zero": Row(lambda t: (lambda p=_contract_file(t, {"output_stride": 0}): read_config(p)),
                       CheckpointError, r"field 'output_stride'"),
    "scale-offset-text": Row(lambda t: (lambda p=_contract_file(t, {"scale_offset": "yes"}): read_config(p)),
                             CheckpointError, r"field 'scale_offset': expected true or false"),
    "normalization-per-band": Row(
        lambda t: (lambda p=_contract_file(t, {"normalization": {"method": "meanstd", "shift": [0.0],
                                                                 "scale": [1.0]}}): read_config(p)),
        CheckpointError, r"field 'normalization': 1 shift value\(s\) for 2 band\(s\)"),
    "normalization-text": Row(
        lambda t: (lambda p=_contract_file(t, {"normalization": {"method": "meanstd", "shift": ["a", "b"],
                                                                 "scale": [1, 1]}}): read_config(p)),
        CheckpointError, r"field 'normalization'.*'shift' as a list of finite numbers"),
    "extra-list": Row(lambda t: (lambda p=_contract_file(t, {"extra": []}): read_config(p)),
                      CheckpointError, r"field 'extra'"),
    "classes-missing": Row(lambda t: (lambda p=_contract_file(t, drop="classes"): read_config(p)),
                           CheckpointError, r"lacks classes"),
    "predict-with-malformed-contract": Row(
        lambda t: (lambda img=_scene(t), p=_contract_file(t, {"tile": "big"}): predict_raster(
            img, t / "out.tif", model=p, device="cpu")),
        CheckpointError, r"field 'tile'"),
    # -- a contract the weights contradict ----------------------------------------------------------------------
    "more-classes-than-the-weights-output": Row(
        lambda t: (lambda p=_contract_file(t, {"classes": list("abcde"), "colors": []}): load_checkpoint(p)),
        CheckpointError, r"field 'classes' lists 5 classes \(a, b, c, d, e\) but the weights output 3"),
    "fewer-classes-than-the-weights-output": Row(
        lambda t: (lambda p=_contract_file(t, {"classes": ["a", "b"], "colors": []}): load_checkpoint(p)),
        CheckpointError, r"field 'classes' lists 2 classes .* but the weights output 3"),
    "more-bands-than-the-weights-take": Row(
        lambda t: (lambda p=_contract_file(t, {"bands": ["1", "2", "3"], "normalization": {}}): load_checkpoint(p)),
        CheckpointError, r"field 'bands' lists 3 bands but the weights take 2"),
}
# fmt: on


@pytest.mark.parametrize("name", list(SILENTLY_WRONG))
def test_silently_wrong_inputs_are_refused(tmp_path, name):
    row = SILENTLY_WRONG[name]
    call = row.build(tmp_path)
    before = _snapshot(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GridMismatchWarning)
        with pytest.raises(row.error, match=row.match):
            call()
    assert _snapshot(tmp_path) == before  # nothing left behind, nothing replaced


@pytest.mark.parametrize("name", list(MODEL_CONTRACT))
def test_model_contract_is_validated_when_loading(tmp_path, name):
    row = MODEL_CONTRACT[name]
    call = row.build(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(row.error, match=row.match):
        call()
    assert _snapshot(tmp_path) == before


def _onnx_with_contract(tmp_path: Path, change: dict[str, Any]) -> Path:
    """An exported tiny model (2 bands, 3 classes) whose embedded contract is edited afterwards."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from geoseg.models.config import CONFIG_KEY
    from geoseg.models.onnx import export_onnx

    path = export_onnx(_ck(tmp_path, name="src.safetensors"), tmp_path / "m.onnx", exporter="torchscript")
    proto = onnx.load(str(path))
    for entry in proto.metadata_props:
        if entry.key == CONFIG_KEY:
            entry.value = json.dumps(json.loads(entry.value) | change)
    onnx.save(proto, str(path))
    (tmp_path / "src.safetensors").unlink()
    return path


def _onnx_row(change: dict[str, Any]) -> Any:
    def build(tmp_path: Path) -> Any:
        from geoseg.models.onnx import load_onnx

        path = _onnx_with_contract(tmp_path, change)
        return lambda: load_onnx(path)

    return build


def _pair_row(tmp_path: Path) -> Any:
    from model_utils import random_tiny

    from geoseg.models import ModelConfig

    img = _scene(tmp_path)
    cfg = ModelConfig(arch="tiny", bands=["1", "2"], classes=list("abcde"), arch_kwargs={"width": 8})
    return lambda: predict_raster(img, tmp_path / "out.tif", model=(random_tiny(2, 3), cfg), device="cpu")


def _arch_ignoring_classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A third-party architecture whose factory ignores ``num_classes`` (always 3 outputs), with a checkpoint whose
    contract lists 5 classes: its weights load, so only the output check can tell."""
    import torch
    from safetensors.torch import save_file

    from geoseg.models import ModelConfig, registry
    from geoseg.models.config import CONFIG_KEY

    def factory(in_channels: int, num_classes: int, **kw: Any) -> torch.nn.Module:
        return torch.nn.Conv2d(in_channels, 3, 1)

    monkeypatch.setitem(registry._REGISTRY, "fixed3", registry.ModelSpec(name="fixed3", factory=factory,
                                                                          output_stride=1))  # fmt: skip
    cfg = ModelConfig(arch="fixed3", bands=["1", "2"], classes=list("abcde"))
    path = tmp_path / "fixed3.safetensors"
    state = {k: v.contiguous() for k, v in factory(2, 5).state_dict().items()}
    save_file(state, str(path), metadata={CONFIG_KEY: cfg.to_json(), "format": "pt"})
    return path


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"classes": list("abcde"), "colors": []}, r"field 'classes' lists 5 classes .* but the model outputs 3"),
        ({"classes": ["a", "b"], "colors": []}, r"field 'classes' lists 2 classes .* but the model outputs 3"),
        ({"bands": ["1", "2", "3"], "normalization": {}}, r"field 'bands' lists 3 bands but the graph takes 2"),
        ({"tile": "big"}, r"field 'tile': expected a positive integer"),
        ({"format_version": "1"}, r"field 'format_version'"),
        ({"classes": [1, 2, 3]}, r"field 'classes'"),
    ],
    ids=["more-classes", "fewer-classes", "more-bands", "tile-big", "format-version-string", "classes-integers"],
)
def test_onnx_contract_is_validated_against_the_graph(tmp_path, change, match):
    call = _onnx_row(change)(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=match):
        call()
    assert _snapshot(tmp_path) == before


def test_contract_checked_against_a_module_pair_and_a_foreign_architecture(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match=r"the \(module, ModelConfig\) pair: .*'classes' lists 5 .*outputs 3"):
        _pair_row(tmp_path)()
    assert _no_output(tmp_path)
    path = _arch_ignoring_classes(tmp_path, monkeypatch)
    with pytest.raises(CheckpointError, match=r"field 'classes' lists 5 classes .* but the model outputs 3 channel"):
        load_checkpoint(path)
    from model_utils import random_tiny

    from geoseg.models import ModelConfig, save_checkpoint

    cfg = ModelConfig(arch="tiny", bands=["1", "2"], classes=list("abcde"), arch_kwargs={"width": 8})
    with pytest.raises(CheckpointError, match=r"'classes' lists 5 classes .* outputs 3"):
        save_checkpoint(tmp_path / "never.safetensors", random_tiny(2, 3), cfg)
    assert not (tmp_path / "never.safetensors").exists()


# --- georeference by GCPs or RPCs: carried to every output, used where pixels are placed on a map ---------------


def _rpcs(rows: int, cols: int) -> Any:
    """RPCs of a north-up grid near 15°E 41.5°N: line from latitude, sample from longitude (linear terms only)."""
    from rasterio.rpc import RPC

    zeros = [0.0] * 20
    line_num, samp_num, den = list(zeros), list(zeros), list(zeros)
    line_num[2], samp_num[1], den[0] = -1.0, 1.0, 1.0  # coefficient order 1, L, P, H, ...
    return RPC(height_off=100.0, height_scale=500.0, lat_off=41.5, lat_scale=0.01, line_den_coeff=den,
               line_num_coeff=line_num, line_off=rows / 2, line_scale=rows / 2, long_off=15.0, long_scale=0.01,
               samp_den_coeff=den, samp_num_coeff=samp_num, samp_off=cols / 2, samp_scale=cols / 2)  # fmt: skip


def test_gcps_and_rpcs_are_carried_to_class_map_probabilities_and_mosaic(tmp_path):
    from geoseg.distributed.mosaic import build_vrt
    from geoseg.inference.predict import plan_grid

    data, _ = class_scene(64, 64, bands=2)
    ck = _ck(tmp_path)
    gcp_src = write_raster(tmp_path / "gcp.tif", data, transform=None, gcps=_gcps(64, 64))
    rpc_src = write_raster(tmp_path / "rpc.tif", data, crs=None, transform=None, rpcs=_rpcs(64, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotGeoreferencedWarning)  # GCPs and RPCs are a georeference: no warning
        predict_raster(gcp_src, tmp_path / "g.tif", model=ck, device="cpu", probabilities=tmp_path / "gp.tif")
        predict_raster(rpc_src, tmp_path / "r.tif", model=ck, device="cpu")
    with rasterio.open(gcp_src) as src:
        want = [(g.row, g.col, g.x, g.y) for g in src.gcps[0]], src.gcps[1]
    for name in ("g.tif", "gp.tif"):
        with rasterio.open(tmp_path / name) as ds:
            assert ([(g.row, g.col, g.x, g.y) for g in ds.gcps[0]], ds.gcps[1]) == want
    with rasterio.open(tmp_path / "r.tif") as ds:
        kept = {k: v for k, v in ds.rpcs.to_dict().items() if not k.startswith("err_")}
        assert kept == {k: v for k, v in _rpcs(64, 64).to_dict().items() if not k.startswith("err_")}
    # regions of a batch: each file holds its own shifted GCPs, the VRT the scene's, and the mosaic equals the whole
    grid = plan_grid(gcp_src, model=ck)
    nr, nc = grid.full_grid_shape
    assert nr > 1
    regions = []
    for k, rows in enumerate((range(0, 1), range(1, nr))):
        out = tmp_path / f"region{k}.tif"
        predict_raster(gcp_src, out, model=ck, device="cpu", tiles=(rows, range(0, nc)))
        regions.append((out, grid.restrict(rows, range(0, nc)).origin))
    r0 = regions[1][1][0]
    with rasterio.open(regions[1][0]) as ds:
        assert [(g.row + r0, g.col) for g in ds.gcps[0]] == [(r, c) for r, c, _, _ in want[0]]
    vrt = build_vrt(tmp_path / "mosaic.vrt", regions, shape=grid.shape, transform=grid.transform)
    with rasterio.open(vrt) as ds, rasterio.open(tmp_path / "g.tif") as whole:
        assert ([(g.row, g.col, g.x, g.y) for g in ds.gcps[0]], ds.gcps[1]) == want
        np.testing.assert_array_equal(ds.read(1), whole.read(1))


def test_no_georeference_warning_names_what_is_missing(tmp_path):
    data, _ = class_scene(32, 32, bands=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = write_raster(tmp_path / "plain.tif", data, crs=None, transform=None)
    with pytest.warns(NotGeoreferencedWarning, match=r"no georeference \(no CRS, geotransform, GCPs or RPCs\)"):
        predict_raster(src, tmp_path / "o.tif", model=_ck(tmp_path), device="cpu")


def test_gcp_class_maps_are_vectorized_and_evaluated_through_their_gcps(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    from geoseg.evaluation import evaluate
    from geoseg.vectorization import vectorize

    a = np.zeros((40, 50), np.uint8)
    a[10:20, 5:25] = 1
    x0, y0 = TRANSFORM.c, TRANSFORM.f
    gcp = write_raster(tmp_path / "gcp.tif", a, transform=None, gcps=_gcps(40, 50))
    polys = vectorize(gcp)
    assert polys.crs.to_epsg() == 32633
    one = polys[polys.class_id == 1].geometry.iloc[0]
    assert (
        one.equals_exact(box(x0 + 50, y0 - 200, x0 + 250, y0 - 100).normalize(), 1e-6)
        or abs(one.symmetric_difference(box(x0 + 50, y0 - 200, x0 + 250, y0 - 100)).area) < 1e-6
    )
    assert polys[polys.class_id == 1]["area"].iloc[0] == pytest.approx(200 * 100)
    truth = tmp_path / "truth.gpkg"
    gpd.GeoDataFrame({"class_id": [1]}, geometry=[box(x0 + 50, y0 - 200, x0 + 250, y0 - 100)],
                     crs="EPSG:32633").to_file(truth)  # fmt: skip
    rep = evaluate(gcp, truth, classes=["bg", "one"], background=0)
    assert rep.miou == 1.0 and rep.pixels == 40 * 50
    with pytest.raises(NoOverlapError, match="GCPs"):
        evaluate(gcp, write_raster(tmp_path / "affine_truth.tif", a))


# --- rotated, flipped and sheared grids: windows from all four corners ------------------------------------------

GRIDS = {
    "rotated-30": Affine.translation(500000, 4600000) @ Affine.rotation(30) @ Affine.scale(10, -10),
    "rotated-45": Affine.translation(500000, 4600000) @ Affine.rotation(45) @ Affine.scale(10, -10),
    "rotated-90": Affine.translation(500000, 4600000) @ Affine.rotation(90) @ Affine.scale(10, -10),
    "south-up": Affine(10, 0, 500000, 0, 10, 4600000),
    "east-west-flip": Affine(-10, 0, 500000, 0, -10, 4600000),
    "sheared": Affine(10, 4, 500000, 3, -10, 4600000),
}


@pytest.mark.parametrize("grid", list(GRIDS))
def test_polygons_on_rotated_flipped_sheared_grids_cover_what_gdal_rasterizes(tmp_path, grid):
    import geopandas as gpd
    from rasterio.features import rasterize
    from rasterio.windows import Window
    from shapely.geometry import Polygon

    from geoseg.evaluation import evaluate
    from geoseg.io import RasterSource
    from geoseg.train.labels import LabelVector

    t = GRIDS[grid]
    h = w = 6
    # two polygons splitting the grid's footprint along its own diagonal: every pixel is covered by one of them
    corners = [t @ (0, 0), t @ (w, 0), t @ (w, h), t @ (0, h)]
    polys = [Polygon([corners[0], corners[1], corners[2]]), Polygon([corners[0], corners[2], corners[3]])]
    gdf = gpd.GeoDataFrame({"class_id": [0, 1]}, geometry=polys, crs="EPSG:32633")
    truth = tmp_path / "truth.gpkg"
    gdf.to_file(truth)
    ref = rasterize(zip(polys, [1, 2]), out_shape=(h, w), transform=t, fill=0, dtype="int32")
    assert (ref > 0).sum() >= 30  # GDAL covers (nearly) every pixel
    pred = write_raster(tmp_path / "pred.tif", np.zeros((h, w), np.uint8), transform=t)
    rep = evaluate(pred, truth, classes=["a", "b"])
    assert rep.pixels == int((ref > 0).sum())  # was 18 of 36 with a two-corner window lookup
    img = write_raster(tmp_path / "img.tif", np.zeros((2, h, w), np.float32), transform=t)
    with RasterSource(img) as src:
        lv = LabelVector(truth, src)
        whole = lv.read(Window(0, 0, w, h))
        np.testing.assert_array_equal(whole, np.where(ref > 0, ref - 1, -1))
        for r0, c0 in ((0, 0), (2, 3), (4, 1)):  # every window agrees with the whole
            win = Window(c0, r0, min(3, w - c0), min(3, h - r0))
            np.testing.assert_array_equal(lv.read(win), whole[r0 : r0 + int(win.height), c0 : c0 + int(win.width)])


# --- label rasters and polygon layers that are fine once declared ---------------------------------------------


def test_declared_label_values_train_and_real_ids_above_254_are_classes(tmp_path):
    from geoseg.io import RasterSource
    from geoseg.train.labels import IGNORE_INDEX, LabelRaster

    img = _scene(tmp_path)
    minus_one = _labels_values([-1, 0, 1])(tmp_path)
    res = _train(img, minus_one, tmp_path / "m.safetensors", label_nodata=-1)
    assert len(read_config(res.checkpoint).classes) == 2
    values = np.arange(300, dtype=np.int16).repeat(14)[: 64 * 64].reshape(64, 64)
    many = _labels(tmp_path, values, name="many.tif")
    names = [f"c{i}" for i in range(300)]
    with RasterSource(img) as src:
        lab = LabelRaster(many, src, names)
        read = lab.read(rasterio.windows.Window(0, 0, 64, 64))
    np.testing.assert_array_equal(read, values)  # 255 is class c255, never the ignore label
    assert IGNORE_INDEX < 0


def test_label_raster_on_a_shifted_grid_is_warped_onto_the_image(tmp_path):
    from geoseg.io import RasterSource
    from geoseg.train.labels import IGNORE_INDEX, LabelRaster

    img = _scene(tmp_path)
    _, labels = class_scene(64, 64, bands=1)
    shifted = _labels(tmp_path, labels, transform=Affine.translation(80, 0) @ TRANSFORM)  # 8 px east
    with RasterSource(img) as src, pytest.warns(GridMismatchWarning, match="resampling it with nearest"):
        lab = LabelRaster(shifted, src, None)
    got = lab.read(rasterio.windows.Window(0, 0, 64, 64))
    lab.close()
    assert (got[:, :8] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(got[:, 8:], labels[:, :56])


def test_chosen_layers_are_used(tmp_path):
    from click.testing import CliRunner

    from geoseg.cli.main import cli
    from geoseg.evaluation import evaluate

    pred = _classmap(tmp_path)
    two = _two_layers(tmp_path)
    rep = evaluate(pred, two, truth_layer="fields", aoi=two, aoi_layer="roads")
    assert rep.pixels == 32 * 64
    res = CliRunner().invoke(cli, ["evaluate", str(pred), str(two), "--progress", "none"])
    assert res.exit_code == 2 and "choose one with --truth-layer NAME" in res.output
    res = CliRunner().invoke(cli, ["evaluate", str(pred), str(two), "--layer", "fields", "--progress", "none"])
    assert res.exit_code == 0, res.output  # --layer, the older spelling, stays
    # predict --truth takes the same advice: the option it names exists there too
    data = class_scene(64, 64, bands=2)[0]
    img = write_raster(tmp_path / "img.tif", data)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=8)
    args = ["predict", str(img), str(tmp_path / "o.tif"), "-m", str(ck), "--device", "cpu", "--truth", str(two),
            "--progress", "none"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2 and "choose one with --truth-layer NAME" in res.output, res.output
    assert not (tmp_path / "o.tif").exists()
    res = CliRunner().invoke(cli, [*args, "--truth-layer", "fields"])
    assert res.exit_code == 0, res.output


# --- nodata values a band cannot hold, VRT sources, full disks, unsafe pickles ------------------------------------

# fmt: off
NODATA = {
    "1e40-on-uint16": (np.uint16, 1e40, r"nodata 1e\+40 cannot occur .*band\(s\) 1,2 are uint16 \(integers 0\.\.65535"),
    "minus-1-on-uint8": (np.uint8, -1, r"nodata -1 cannot occur .*uint8 \(integers 0\.\.255\)"),
    "fraction-on-uint8": (np.uint8, 0.5, r"nodata 0\.5 cannot occur"),
    "nan-on-int16": (np.int16, float("nan"), r"nodata nan cannot occur .*int16"),
    "1e39-on-float32": (np.float32, 1e39, r"nodata 1e\+39 cannot occur .*float32"),
}
# fmt: on


@pytest.mark.parametrize("name", list(NODATA))
def test_nodata_override_the_bands_cannot_hold(tmp_path, name):
    dtype, value, match = NODATA[name]
    src = write_raster(tmp_path / "in.tif", (class_scene(32, 32, bands=2)[0] * 100).astype(dtype))
    ck = _ck(tmp_path)
    before = _snapshot(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy overflow warning instead of the message
        with pytest.raises(InvalidParameterError, match=match):
            predict_raster(src, tmp_path / "out.tif", model=ck, device="cpu", nodata=value)
    assert _snapshot(tmp_path) == before


def _declare_nodata(tif: Path, value: float) -> Path:
    """A VRT over ``tif`` whose bands declare nodata ``value``, as written, whatever the dtype."""
    import xml.etree.ElementTree as ET

    import rasterio.shutil

    vrt = tif.with_suffix(".vrt")
    rasterio.shutil.copy(str(tif), str(vrt), driver="VRT")
    root = ET.parse(vrt).getroot()
    for band in root.iter("VRTRasterBand"):
        ET.SubElement(band, "NoDataValue").text = f"{value:g}"
    ET.ElementTree(root).write(vrt)
    return vrt


def test_declared_nodata_the_dtype_cannot_hold_is_reported(tmp_path):
    from geoseg.evaluation import evaluate
    from geoseg.vectorization import vectorize

    data = (class_scene(32, 32, bands=2)[0] * 100).astype(np.uint16)
    # GDAL keeps a declared nodata the dtype cannot hold (other software writes such files); rasterio hides it
    src = _declare_nodata(write_raster(tmp_path / "in.tif", data), -9999)
    classes = _declare_nodata(
        write_raster(tmp_path / "c.tif", class_scene(32, 32, bands=1)[1].astype(np.uint16)), -9999
    )
    with rasterio.open(src) as ds:
        assert ds.nodata is None
    match = r"declared nodata -9999 of band\(s\) 1.* cannot occur in uint16 data, so no pixel is masked"
    with pytest.warns(NodataWarning, match=match):
        predict_raster(src, tmp_path / "out.tif", model=_ck(tmp_path), device="cpu")
    with pytest.warns(NodataWarning, match=match):
        vectorize(classes)
    with pytest.warns(NodataWarning, match=match):
        evaluate(classes, classes)


def test_vrt_with_a_deleted_source_names_it(tmp_path):
    from geoseg.evaluation import evaluate
    from geoseg.vectorization import vectorize

    vrt = _vrt_without_source(tmp_path)
    missing = str(tmp_path / "tile_a.tif")
    img = _scene(tmp_path)
    before = _snapshot(tmp_path)
    calls = {
        "predict": lambda: predict_raster(
            vrt, tmp_path / "o.tif", model=_ck(tmp_path, name="k.safetensors"), device="cpu"
        ),  # fmt: skip
        "vectorize": lambda: vectorize(vrt, tmp_path / "o.gpkg"),
        "evaluate": lambda: evaluate(vrt, vrt),
        "train": lambda: _train(img, vrt, tmp_path / "o.safetensors"),
    }
    for name, call in calls.items():
        with pytest.raises(InputNotFoundError, match=rf"mosaic\.vrt is a VRT whose source file\(s\) {missing} do not"):
            call()
        assert set(_snapshot(tmp_path)) - {"k.safetensors"} == set(before), name


@pytest.mark.parametrize("ext", [".gpkg", ".fgb", ".geojson", ".shp", ".parquet"])
def test_vectorize_on_a_full_disk_says_so(tmp_path, ext):
    from geoseg.vectorization import vectorize

    a = np.random.default_rng(0).integers(0, 4, (300, 300)).astype(np.uint8)
    src = write_raster(tmp_path / "c.tif", a)
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "size=64k")
    try:
        with pytest.raises(OutputError, match=r"disk full \(no space left\) while writing") as info:
            vectorize(src, mnt / f"polys{ext}", window=64)
        assert "sqlite3_exec" not in str(info.value) and "Cannot write feature" not in str(info.value)
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)])


def test_unsafe_pickles_are_refused_without_unsafe_advice(tmp_path):
    from geoseg.models.adapt import load_encoder_weights

    img, lab = _scene(tmp_path), _labels(tmp_path, class_scene(64, 64, bands=1)[1])
    ck_pt = _pt_with_pickled_object(tmp_path, "model.pt")
    enc = _pt_with_pickled_object(tmp_path, "encoder.pth")
    out = tmp_path / "resumed.safetensors"
    out.write_bytes(b"")
    state = _pt_with_pickled_object(tmp_path, "resumed.safetensors.train-state.pt")
    before = _snapshot(tmp_path)
    calls = [
        lambda: predict_raster(img, tmp_path / "o.tif", model=ck_pt, device="cpu"),
        lambda: load_encoder_weights(
            __import__("geoseg.models", fromlist=["create_model"]).create_model(
                "fcn8s", in_channels=2, num_classes=2, width=4
            ),
            enc,
        ),
        lambda: _train(img, lab, out, resume=True),
    ]
    for call in calls:
        with pytest.raises(
            CheckpointError, match=r"refused to load .*Payload.*re-save its weights as safetensors"
        ) as e:
            call()
        assert "weights_only=False" not in str(e.value) and "add_safe_globals" not in str(e.value)
    assert _snapshot(tmp_path) == before and state.exists()
