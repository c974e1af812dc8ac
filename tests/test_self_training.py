"""Self-training: pseudo-labels on the unlabelled pixels, a second round trained on them (geoseg.train.pseudo)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from rasters import class_scene, write_raster
from train_utils import assert_resume_matches_uninterrupted

from geoseg.errors import CheckpointError, InvalidParameterError, SelfTrainingWarning
from geoseg.inference import predict_raster
from geoseg.io import Normalization, RasterSource
from geoseg.models import load_checkpoint, read_config
from geoseg.train import train_model
from geoseg.train.area import PixelArea
from geoseg.train.chips import BlockSplit, ChipReader
from geoseg.train.labels import IGNORE_INDEX, LabelRaster
from geoseg.train.pseudo import PseudoLabels, write_pseudo_labels

FAST = {
    "arch": "ssnet",
    "arch_kwargs": {"spectral": 8, "width": 8, "depth": 2},
    "chip": 32,
    "block": 32,
    "batch_size": 4,
    "chips_per_epoch": 16,
    "pixel_steps": 20,
    "pixel_batch": 256,
    "device": "cpu",
    "epochs": 2,
}


@pytest.fixture
def half_labelled(tmp_path):
    """A 64 x 96 scene labelled on its left 64 columns only (the rest is nodata 255)."""
    data, labels = class_scene(64, 96, bands=4, classes=3, seed=5)
    labels = labels.copy()
    labels[:, 64:] = 255
    img = write_raster(tmp_path / "img.tif", data)
    lab = write_raster(tmp_path / "lab.tif", labels, nodata=255)
    return img, lab, labels


def test_pseudo_labels_fill_only_unlabelled_pixels_outside_validation(tmp_path, half_labelled):
    img, lab, labels = half_labelled
    model = tmp_path / "t.safetensors"
    train_model(img, lab, model, self_training=0, **dict(FAST, pixel_steps=200))
    pair = load_checkpoint(model)
    predict_raster(img, tmp_path / "c.tif", model=pair, probabilities=tmp_path / "p.tif", device="cpu")
    with rasterio.open(tmp_path / "c.tif") as f:
        teacher = f.read(1)
    with rasterio.open(tmp_path / "p.tif") as f:
        conf = f.read().max(0) / 254.0
    with RasterSource(img) as src:
        real = LabelRaster(lab, src, ["a", "b", "c"])
        reader = ChipReader(src, real, Normalization(), 32, 32)
        reader.set_roles(BlockSplit(32, [(0, 0), (32, 0), (0, 32)], [(32, 32)]))  # one validation block
        work = tmp_path / "work"
        work.mkdir()
        path, counts, candidates = write_pseudo_labels(img, pair, reader, work, threshold=0.45, device="cpu")
        with rasterio.open(path) as f:
            pseudo = f.read(1)
        merged = PseudoLabels(real, path).read(Window(0, 0, 96, 64))
    assert sorted(p.name for p in work.iterdir()) == ["pseudo.tif"]  # the teacher's maps are removed
    labelled = labels != 255
    in_val = np.zeros_like(labelled)
    in_val[32:64, 32:64] = True
    assert (pseudo[labelled] == IGNORE_INDEX).all()  # real labels are never replaced
    assert (pseudo[in_val] == IGNORE_INDEX).all()  # validation stays on real labels
    expect = ~labelled & ~in_val & (conf >= 0.45 - 1e-6)
    assert expect.sum() > 0
    assert candidates == (~labelled & ~in_val).sum()  # every unlabelled pixel outside validation, at any threshold
    np.testing.assert_array_equal(pseudo[expect], teacher[expect])
    assert (pseudo[~labelled & ~in_val & (conf < 0.45 - 0.005)] == IGNORE_INDEX).all()
    assert counts.sum() == (pseudo != IGNORE_INDEX).sum()
    np.testing.assert_array_equal(merged[labelled], labels[labelled])  # real labels where they exist
    np.testing.assert_array_equal(merged[~labelled], pseudo[~labelled])
    # an excluded area (a test region) gets no pseudo-label; elsewhere the same ones
    with RasterSource(img) as src:
        real = LabelRaster(lab, src, ["a", "b", "c"])
        reader = ChipReader(src, real, Normalization(), 32, 32)
        reader.set_roles(BlockSplit(32, [(0, 0), (32, 0), (0, 32)], [(32, 32)]))
        excluded = PixelArea(Window(80, 0, 16, 64), src, what="excluded area")
        (tmp_path / "w2").mkdir()
        path2, counts2, _ = write_pseudo_labels(img, pair, reader, tmp_path / "w2", threshold=0.45, device="cpu",
                                             exclude=excluded)  # fmt: skip
        with rasterio.open(path2) as f:
            pseudo2 = f.read(1)
    assert (pseudo[:, 80:] != IGNORE_INDEX).any() and (pseudo2[:, 80:] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(pseudo2[:, :80], pseudo[:, :80])
    assert counts2.sum() == (pseudo2 != IGNORE_INDEX).sum()


def test_a_threshold_every_pixel_or_no_pixel_passes_is_refused(tmp_path, half_labelled):
    """The most probable of K classes has probability >= 1/K: a threshold at or below it pseudo-labels every pixel."""
    img, lab, _ = half_labelled
    out = tmp_path / "m.safetensors"
    for value in (1 / 3, 0.01, 1e-300):
        with pytest.raises(InvalidParameterError, match=r"at most 1/3: with 3 classes"):
            train_model(img, lab, out, self_training=1, pseudo_threshold=value, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.tif", "lab.tif"]  # nothing written
    # label smoothing eps caps what a model learns to give a class at 1 - eps + eps/K: a threshold above it is never met
    with pytest.raises(InvalidParameterError, match=r"pseudo_threshold 0.99 is above 0.967, the most probability"):
        train_model(img, lab, out, self_training=1, pseudo_threshold=0.99, **FAST)
    with pytest.raises(InvalidParameterError, match=r"pseudo_threshold 1 is above 0.933"):
        train_model(img, lab, out, self_training=1, pseudo_threshold=1.0, label_smoothing=0.1, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.tif", "lab.tif"]


def test_a_self_training_round_trains_on_pseudo_labels_and_is_recorded(tmp_path, half_labelled):
    img, lab, _ = half_labelled
    opts = dict(FAST, pixel_steps=200, pseudo_threshold=0.45)
    result = train_model(img, lab, tmp_path / "m.safetensors", self_training=1, **opts)
    assert [h["round"] for h in result.history] == [0, 0, 1, 1]
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    st = read_config(tmp_path / "m.safetensors").extra["training"]
    assert st["self_training"] == 1 and st["pseudo_threshold"] == 0.45
    assert sum(st["pseudo_pixels"].values()) > 0  # the unlabelled third of the scene got pseudo-labels
    assert not list(tmp_path.glob(".geoseg-pseudo-*"))  # the pseudo-label raster is removed after training
    with pytest.warns(SelfTrainingWarning, match=r"pseudo_threshold 0.45 has no effect without self-training"):
        plain = train_model(img, lab, tmp_path / "p.safetensors", self_training=0, **opts)
    assert [h["round"] for h in plain.history] == [0, 0]
    assert "pseudo_pixels" not in read_config(tmp_path / "p.safetensors").extra["training"]


@pytest.mark.parametrize("stop", [1, 3])  # in the first round; in the self-training round
def test_resume_in_either_round_matches_the_uninterrupted_run(tmp_path, half_labelled, stop):
    img, lab, _ = half_labelled
    opts = dict(FAST, seed=2, self_training=1, pixel_steps=200, pseudo_threshold=0.45, refit=True)
    # 2 epochs in each round, then up to 2 more training again on every label (the kept round's pseudo-labels too)
    resumed = assert_resume_matches_uninterrupted(img, lab, tmp_path, opts, stop=stop, total=6)
    assert [h["round"] for h in resumed.history] == [0, 0, 1, 1]  # the second round ran on pseudo-labels
    with pytest.raises(CheckpointError, match=r"self_training 1 \(now 0\)"):
        train_model(img, lab, tmp_path / "cut.safetensors", resume=True, **dict(opts, self_training=0))


def test_the_threshold_of_a_run_without_rounds_does_not_block_its_resume():
    from geoseg.train.config import check_resume

    check_resume("s.pt", {"self_training": 0, "pseudo_threshold": 0.5}, {"self_training": 0, "pseudo_threshold": 0.3})
    with pytest.raises(CheckpointError, match=r"pseudo_threshold 0.5 \(now 0.3\)"):
        check_resume(
            "s.pt", {"self_training": 1, "pseudo_threshold": 0.5}, {"self_training": 1, "pseudo_threshold": 0.3}
        )


@pytest.mark.parametrize(
    ("option", "value"),
    [("self_training", -1), ("self_training", 6), ("pseudo_threshold", 0.0), ("pseudo_threshold", 1.5)],
)
def test_out_of_range_self_training_options_are_refused(tmp_path, half_labelled, option, value):
    img, lab, _ = half_labelled
    with pytest.raises(InvalidParameterError, match=option):
        train_model(img, lab, tmp_path / "m.safetensors", **{**FAST, option: value})
    assert not (tmp_path / "m.safetensors").exists()


def test_the_forest_baseline_sees_the_real_labels_only(tmp_path, half_labelled, monkeypatch):
    """``baseline="rf"`` fits the forest on the real training labels, never on the network's pseudo-labels."""
    pytest.importorskip("sklearn")
    import geoseg.train.baseline as baseline

    img, lab, labels = half_labelled
    fitted: list[np.ndarray] = []
    real_fit = baseline.fit_forest

    def recording_fit(x, y, **kwargs):
        fitted.append(np.asarray(y))
        return real_fit(x, y, **kwargs)

    monkeypatch.setattr(baseline, "fit_forest", recording_fit)
    opts = dict(FAST, baseline="rf", pseudo_threshold=0.4, pixel_steps=200, val_fraction=0.0)
    result = train_model(img, lab, tmp_path / "a.safetensors", self_training=1, **opts)
    assert sum(read_config(result.checkpoint).extra["training"]["pseudo_pixels"].values()) > 0
    assert len(fitted) == 1 and len(fitted[0]) == int((labels != 255).sum())  # every real label, nothing more


def test_rounds_that_cannot_change_the_model_are_skipped_with_a_warning(tmp_path, half_labelled):
    """No pixel left to pseudo-label, or the time limit reached first: the rounds do not run, and the user is told."""
    data, labels = class_scene(64, 64, bands=4, classes=3, seed=5)
    img, lab = write_raster(tmp_path / "full.tif", data), write_raster(tmp_path / "full_lab.tif", labels)
    with pytest.warns(SelfTrainingWarning, match=r"round 1: nothing to pseudo-label: every valid pixel outside the "
                      r"validation blocks and the excluded area has a real label; round 1 and any after it are "
                      r"skipped, so the saved model is round 0's"):  # fmt: skip
        result = train_model(img, lab, tmp_path / "full.safetensors", self_training=2, **FAST)
    assert [h["round"] for h in result.history] == [0, 0]  # every pixel has a real label: nothing to pseudo-label
    assert read_config(tmp_path / "full.safetensors").extra["training"]["best_round"] == 0

    img, lab, _ = half_labelled
    with pytest.warns(SelfTrainingWarning, match=r"max_seconds 0.001 s in the training on the real labels; "
                      r"self-training round\(s\) 1..2 did not run"):  # fmt: skip
        result = train_model(img, lab, tmp_path / "m.safetensors", self_training=2, max_seconds=0.001, **FAST)
    assert [h["round"] for h in result.history] == [0]


def test_the_cli_names_the_round_of_the_best_epoch(tmp_path, half_labelled):
    """Epochs are numbered across rounds; the summary line says which round's epoch the kept model is."""
    import json as _json

    from click.testing import CliRunner

    from geoseg.cli.main import cli

    img, lab, _ = half_labelled
    args = [
        "train", str(img), str(lab), str(tmp_path / "m.safetensors"), "--arch", "ssnet", "--arch-kwargs",
        _json.dumps(FAST["arch_kwargs"]), "--chip", "32", "--block", "32", "--batch-size", "4", "--chips-per-epoch",
        "16", "--pixel-steps", "200", "--epochs", "2", "--device", "cpu", "--self-training", "1",
        "--pseudo-threshold", "0.45", "--progress", "none",
    ]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    best = read_config(tmp_path / "m.safetensors").extra["training"]
    network, line = res.output.splitlines()[:2]
    assert network == "network ssnet (spectral=8, width=8, depth=2), loss ce"  # given, not chosen
    assert best["best_round"] == 1  # this seed's second round validates within the tolerance of the first
    assert f"at epoch {best['best_epoch']} (self-training round 1, its epoch {best['best_epoch'] - 2});" in line


def test_every_round_pseudo_labels_the_unlabelled_pixels_not_only_those_earlier_rounds_left(tmp_path, half_labelled):
    # each round's candidates are the pixels without a *real* label: round 1's pseudo-labels are not real labels, so
    # round 2 (a better teacher) labels the same unlabelled third of the scene again, not just what round 1 skipped
    img, lab, labels = half_labelled
    unlabelled = int((labels == 255).sum())
    opts = dict(FAST, pixel_steps=200, pseudo_threshold=0.4)
    one = read_config(train_model(img, lab, tmp_path / "1.safetensors", self_training=1, **opts).checkpoint)
    two = read_config(train_model(img, lab, tmp_path / "2.safetensors", self_training=2, **opts).checkpoint)
    first, second = (sum(c.extra["training"]["pseudo_pixels"].values()) for c in (one, two))
    assert unlabelled / 2 < first <= unlabelled and unlabelled / 2 < second <= unlabelled
