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
from pathlib import Path

import click
import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from model_utils import tiny_checkpoint
from rasters import class_scene, write_raster

from geoseg.cli.main import cli
from geoseg.errors import (
    CheckpointError,
    GeoSegError,
    InputNotFoundError,
    InvalidParameterError,
    ModelContractError,
    NotARasterError,
    NotGeoreferencedWarning,
    NoValidDataError,
    OutputError,
    RasterReadError,
    UnsupportedRasterError,
)
from geoseg.inference import predict_raster
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
    with pytest.raises(InvalidParameterError, match=r"label ids \[2\].*exceed the 2 class names"):
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
    with pytest.raises(ModelContractError, match="reproject"):
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
        (r50, CheckpointError, "holds a resnet50 .*--encoder resnet50"),
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
    x0, y1 = 500000, 4600000
    gpd.GeoDataFrame(
        {"class_id": [0, 1, 2]},
        geometry=[box(x0, y1 - 640, x0 + 200, y1), box(x0 + 200, y1 - 640, x0 + 400, y1), box(x0 + 400, y1 - 640,
                  x0 + 640, y1)],
        crs="EPSG:32633",
    ).to_file(tmp_path / "truth.gpkg")  # fmt: skip
    tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=8)
    (tmp_path / "old.tif").write_bytes(b"an earlier class map")
    (tmp_path / "t.safetensors.train-state.pt").write_bytes(b"an earlier run's training state")
    (tmp_path / "w.pth").write_bytes(b"pretrained encoder weights")
    (tmp_path / "p.gpkg").write_bytes(b"a probability raster")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    (tmp_path / "c.yaml").write_text("epochs: 2\n")
    (tmp_path / "ten.yaml").write_text("epochs: ten\n")
    (tmp_path / "classes3.yaml").write_text("classes: 3\n")
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
                 r"output p\.gpkg is the input", id="vectorize-out-is-probabilities"),
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
    pytest.param([*TRAIN, "--config", "ten.yaml"], r"config ten\.yaml: epochs must be an integer, got 'ten' \(str\)",
                 id="train-config-epochs-ten"),
    pytest.param([*TRAIN, "--config", "classes3.yaml"], r"config classes3\.yaml: classes must be a list of text",
                 id="train-config-classes-int"),
    pytest.param([*TRAIN, "--arch-kwargs", "[1,2]"], r"--arch-kwargs must be a JSON object", id="arch-kwargs-list"),
    pytest.param([*TRAIN, "--arch-kwargs", "{width: 4}"], r"--arch-kwargs is not valid JSON", id="arch-kwargs-json"),
    pytest.param([*TRAIN, "--arch-kwargs", '{"width": -4}'],
                 r"cannot build model 'tiny' with options \{'width': -4\}: .*negative.*; tiny takes width=16",
                 id="arch-kwargs-negative-width"),
    pytest.param([*TRAIN, "--arch-kwargs", '{"widht": 4}'],
                 r"model 'tiny' has no option 'widht' \(did you mean 'width'", id="arch-kwargs-unknown"),
    pytest.param([*TRAIN, "--arch-kwargs", '{"width": "4"}'], r"option 'width' of model 'tiny' must be int, got '4'",
                 id="arch-kwargs-type"),
    pytest.param([*TRAIN[:4], "--arch", "bogus"], r"no model architecture named 'bogus'", id="train-arch"),
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
]  # fmt: skip


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
    ("train", "--background"): ("0",),  # a class id
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
    ("evaluate", "--ignore-index"): ("0", "-1"),  # any class id of the truth (e.g. -1 for unlabelled)
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
    lab = write_raster(tmp_path / "lab.tif", class_scene(64, 64, bands=2)[1])
    for kwargs, message in [
        ({"epochs": "ten"}, r"^epochs must be an integer, got 'ten'"),
        ({"arch_kwargs": [1, 2]}, r"^arch_kwargs must be a mapping"),
        ({"classes": ["a", "a", "b"]}, r"^classes \['a', 'a', 'b'\]|classes 'a,a,b' names 'a' twice"),
        ({"lr": float("nan")}, r"^lr must be a positive number"),
        ({"adapt": "mean"}, r"^adapt needs encoder_weights"),
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
    data = np.random.default_rng(0).normal(size=(2, 768, 768)).astype(np.float32)
    src = write_raster(tmp_path / "in.tif", data, tiled=True, blockxsize=256, blockysize=256)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=8)
    args = [sys.executable, "-m", "geoseg", "predict", src, "out.tif", "-m", ck, "--device", "cpu", "--batch-size",
            "2", "--probabilities", "p.tif", "--progress", "json"]  # fmt: skip
    proc = subprocess.Popen(list(map(str, args)), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("{") and json.loads(line)["done"] >= 2:
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
    data = np.random.default_rng(1).normal(size=(2, 1024, 1024)).astype(np.float32)  # noise: many small polygons
    src = write_raster(tmp_path / "in.tif", data, tiled=True, blockxsize=256, blockysize=256)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=64, overlap=8)
    lab = write_raster(tmp_path / "lab.tif", class_scene(1024, 1024, bands=2)[1])
    before = _snapshot(tmp_path)
    args = [sys.executable, "-m", "geoseg", "predict", src, "out.tif", "-m", ck, "--device", "cpu", "--vector",
            "v.gpkg", "--truth", lab, "--report", "rep", "--progress", "json"]  # fmt: skip
    proc = subprocess.Popen(list(map(str, args)), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("{") and json.loads(line)["message"] == "vectorize":
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
