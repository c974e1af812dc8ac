"""Catalogue of bad inputs: each gives a specific GeoSegError with an actionable message and leaves no output."""

import os
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from model_utils import tiny_checkpoint
from rasters import class_scene, write_raster

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
