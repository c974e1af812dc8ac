import numpy as np
import pytest
from affine import Affine
from rasters import TRANSFORM, class_scene, write_raster

from geoseg.errors import InvalidParameterError, NoOverlapError, OutputExistsError
from geoseg.inference import predict_raster
from geoseg.models import read_config
from geoseg.train import train_model
from geoseg.train.chips import block_split


def test_block_split_is_disjoint_and_seeded():
    s = block_split((300, 200), 64, 0.3, seed=1)
    assert set(s.train).isdisjoint(s.val) and len(s.val) >= 1
    assert s == block_split((300, 200), 64, 0.3, seed=1)
    assert len(s.train) + len(s.val) == len(range(0, 300 - 64 + 1, 64)) * len(range(0, 200 - 64 + 1, 64))


def test_train_learns_and_checkpoint_predicts(tmp_path):
    data, labels = class_scene(128, 128, bands=3, classes=3, seed=2)
    labels[:10, :10] = 255
    img = write_raster(tmp_path / "img.tif", data, descriptions=["b", "g", "r"])
    lab = write_raster(tmp_path / "lab.tif", labels, nodata=255)
    res = train_model(
        img,
        lab,
        tmp_path / "m.safetensors",
        arch="tiny",
        arch_kwargs={"width": 8},
        epochs=4,
        chip=32,
        batch_size=8,
        chips_per_epoch=64,
        block=32,
        seed=0,
        device="cpu",
    )
    assert res.best_miou > 0.6, res.history
    cfg = read_config(res.checkpoint)
    assert cfg.bands == ["b", "g", "r"] and cfg.classes == ["class_0", "class_1", "class_2"]
    assert cfg.normalization["method"] == "meanstd" and cfg.extra["validation"]["miou"] == pytest.approx(res.best_miou)
    out = predict_raster(img, tmp_path / "pred.tif", model=res.checkpoint, device="cpu")
    import rasterio

    with rasterio.open(out.output) as ds:
        pred = ds.read(1)
    assert (pred == labels)[labels != 255].mean() > 0.8
    # reproducible with the same seed
    res2 = train_model(
        img,
        lab,
        tmp_path / "m2.safetensors",
        arch="tiny",
        arch_kwargs={"width": 8},
        epochs=4,
        chip=32,
        batch_size=8,
        chips_per_epoch=64,
        block=32,
        seed=0,
        device="cpu",
    )
    assert np.isclose(res2.history[-1]["loss"], res.history[-1]["loss"])


def test_train_input_errors(tmp_path):
    data, labels = class_scene(64, 64, bands=2, classes=3)
    img = write_raster(tmp_path / "img.tif", data)
    away = write_raster(tmp_path / "lab_away.tif", labels, transform=Affine.translation(2000, 0) @ TRANSFORM)
    with pytest.raises(NoOverlapError, match="does not overlap the image"):
        train_model(img, away, tmp_path / "m.safetensors", arch="tiny", epochs=1, device="cpu")
    one = write_raster(tmp_path / "one.tif", np.zeros((64, 64), np.uint8))
    with pytest.raises(InvalidParameterError, match="at least 2 classes"):
        train_model(img, one, tmp_path / "m.safetensors", arch="tiny", epochs=1, device="cpu")
    lab = write_raster(tmp_path / "lab.tif", labels)
    with pytest.raises(InvalidParameterError, match="outside the class ids 0..1 of the 2 class names"):
        train_model(img, lab, tmp_path / "m.safetensors", arch="tiny", classes=["a", "b"], epochs=1, device="cpu")
    (tmp_path / "exists.safetensors").write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        train_model(img, lab, tmp_path / "exists.safetensors", arch="tiny", epochs=1, device="cpu")
    assert (tmp_path / "exists.safetensors").read_bytes() == b"keep"
