import numpy as np
import pytest
import rasterio.windows
import torch
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
    assert len(s.train) + len(s.val) == 5 * 4  # the last row/column of blocks is smaller


def _hists(rows):
    """Per-block class histograms keyed like block_split's origins (one row of blocks of 10 px)."""
    return {(0, 10 * i): np.asarray(h, np.int64) for i, h in enumerate(rows)}


@pytest.mark.parametrize("seed", range(40))
def test_stratified_split_never_starves_a_class(seed):
    # class 2 lives in two blocks only; the random fill-up used to take both for validation
    rows = [[50, 0, 0]] * 6 + [[30, 20, 0]] * 3 + [[40, 0, 5], [40, 0, 5]]
    hist = _hists(rows)
    s = block_split((10, 10 * len(rows)), 10, 0.3, seed, histograms=hist)
    train = sum(hist[o] for o in s.train)
    val = sum(hist[o] for o in s.val)
    total = train + val
    assert (train > 0).all(), (s, train)  # every class keeps training pixels ...
    assert (train >= 0.5 * total).all(), (train, total)  # ... at least half of them
    assert (val > 0).all()  # and every class in two or more blocks is validated


@pytest.mark.parametrize("seed", range(20))
def test_val_fraction_is_a_share_of_labelled_pixels(seed):
    # a few blocks hold most labels: counting blocks, 30% of them could hold far more than 30% of the pixels
    rows = [[400, 400]] * 3 + [[5, 5]] * 12
    hist = _hists(rows)
    s = block_split((10, 10 * len(rows)), 10, 0.3, seed, histograms=hist)
    val_px = sum(int(hist[o].sum()) for o in s.val)
    assert 0 < val_px <= 0.3 * sum(int(h.sum()) for h in hist.values())


def test_blocks_without_labels_are_neither_trained_nor_validated(tmp_path):
    rows = [[0, 0]] * 5 + [[30, 30]] * 5
    hist = _hists(rows)
    s = block_split((10, 100), 10, 0.3, 0, histograms=hist)
    assert all(hist[o].sum() > 0 for o in s.train + s.val)
    assert len(s.train) + len(s.val) == 5
    # and training chips are never drawn from an all-ignore half of the raster
    data, labels = class_scene(64, 128, bands=2, classes=2, seed=3)
    labels[:, 64:] = 255
    img = write_raster(tmp_path / "img.tif", data)
    lab = write_raster(tmp_path / "lab.tif", labels, nodata=255)
    from geoseg.io import Normalization, RasterSource
    from geoseg.train.chips import TRAIN, ChipReader
    from geoseg.train.labels import LabelRaster

    with RasterSource(img) as src:
        reader = ChipReader(src, LabelRaster(lab, src, None), Normalization(), 16, 16)
        hists = {(r, c): reader.block_histogram(r, c) for r in range(0, 64, 16) for c in range(0, 128, 16)}
        split = block_split(src.shape, 16, 0.2, 0, histograms=hists)
        reader.set_roles(split)
        rng = np.random.default_rng(0)
        for mode in ("random", "centered", "balanced", "grid"):
            chips = [reader.read(r, c, role=TRAIN)[1] for r, c in reader.origins(mode, split.train, 40, rng)]
            assert all((y != 255).any() for y in chips), mode


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


def test_class_weights_are_capped_from_all_blocks_and_user_weights_accepted(tmp_path):
    from geoseg.train.losses import balanced_class_weights

    w = balanced_class_weights([4080, 22])
    assert w[1] / w[0] <= 10.0 + 1e-6  # median-frequency weights made this ~185x
    assert float((w * torch.tensor([4080.0, 22.0])).sum() / 4102) == pytest.approx(1.0)
    assert balanced_class_weights([100, 0, 50])[1] == 0
    # a class found only after the first 64 training blocks still gets a weight
    data = np.zeros((1, 8 * 9, 8 * 10), np.float32)
    labels = np.zeros((8 * 9, 8 * 10), np.uint8)
    labels[-8:, -8:] = 1  # the last block
    data[0] = labels * 2.0 + np.random.default_rng(0).normal(0, 0.1, labels.shape)
    img = write_raster(tmp_path / "img.tif", data)
    lab = write_raster(tmp_path / "lab.tif", labels)
    opts = {
        "arch": "tiny",
        "arch_kwargs": {"width": 4},
        "chip": 8,
        "block": 8,
        "epochs": 1,
        "chips_per_epoch": 8,
        "val_fraction": 0.0,
        "device": "cpu",
    }
    res = train_model(img, lab, tmp_path / "m.safetensors", loss="weighted_ce", **opts)
    cw = read_config(res.checkpoint).extra["training"]["class_weights"]
    assert cw[1] > cw[0] > 0 and cw[1] / cw[0] <= 10.0 + 1e-6
    res = train_model(img, lab, tmp_path / "u.safetensors", class_weights=[1.0, 3.0], **opts)
    assert read_config(res.checkpoint).extra["training"]["class_weights"] == [1.0, 3.0]
    with pytest.raises(InvalidParameterError, match="1 class weight.*for 2 classes"):
        train_model(img, lab, tmp_path / "x.safetensors", class_weights=[1.0], **opts)


def test_batchnorm_statistics_match_the_data_after_few_steps(tmp_path):
    """With few steps, momentum running statistics still sit near their initial values (mean 0, var 1), so the
    evaluated model sees shifted activations; an unseen class can then win the argmax. They are recomputed."""
    from geoseg.io import Normalization, RasterSource
    from geoseg.models import load_checkpoint

    data, labels = class_scene(64, 64, bands=3, classes=3, seed=1)
    data = data * 50.0 + 200.0
    img = write_raster(tmp_path / "img.tif", data)
    lab = write_raster(tmp_path / "lab.tif", labels)
    res = train_model(
        img,
        lab,
        tmp_path / "m.safetensors",
        arch="tiny",
        arch_kwargs={"width": 4},
        chip=32,
        block=32,
        epochs=1,
        chips_per_epoch=16,
        batch_size=8,
        ema=False,
        augment=False,
        device="cpu",
    )
    net, cfg = load_checkpoint(res.checkpoint)
    with RasterSource(img) as src:
        x, _ = src.read(rasterio.windows.Window(0, 0, 64, 64))
    x = torch.from_numpy(Normalization.from_dict(cfg.normalization).apply(x))[None]
    conv, bn = net.enc1[0], net.enc1[1]
    with torch.no_grad():
        feats = conv(x)
    mean, var = feats.mean((0, 2, 3)), feats.var((0, 2, 3))
    assert torch.allclose(bn.running_mean, mean, atol=0.25 * float(var.sqrt().mean())), (bn.running_mean, mean)
    assert torch.allclose(bn.running_var, var, rtol=0.35), (bn.running_var, var)


def test_labelled_pixels_in_the_contract_leave_out_labels_under_image_nodata(tmp_path):
    data, labels = class_scene(64, 64, bands=2)
    data[:, :, :16] = -9999  # the image has no data in its first 16 columns; the labels cover them
    img = write_raster(tmp_path / "img.tif", data, nodata=-9999)
    lab = write_raster(tmp_path / "lab.tif", labels[None])
    res = train_model(img, lab, tmp_path / "m.safetensors", arch="tiny", epochs=1, device="cpu", progress=None)
    training = read_config(res.checkpoint).extra["training"]
    assert training["labelled_pixels"] == 64 * 48
    assert sum(training["training_pixels"].values()) <= training["labelled_pixels"]
