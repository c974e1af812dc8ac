import json
import re

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from rasterio.features import rasterize
from rasterio.windows import Window
from rasters import TRANSFORM, UTM, class_scene, write_raster
from shapely.geometry import box
from train_utils import assert_resume_matches_uninterrupted

from geoseg.cli.main import cli
from geoseg.errors import CancelledError, CheckpointError, InvalidParameterError
from geoseg.inference import predict_raster
from geoseg.io import RasterSource
from geoseg.models import load_checkpoint, read_config
from geoseg.train import load_train_config, train_model
from geoseg.train.augment import AUGMENTATIONS, augment, check_augmentations
from geoseg.train.chips import BlockSplit, ChipReader
from geoseg.train.labels import IGNORE_INDEX, LabelVector
from geoseg.train.loop import REFIT_TOLERANCE, refit_length
from geoseg.train.names import LOSSES

FAST = {
    "arch": "tiny",
    "arch_kwargs": {"width": 8},
    "chip": 32,
    "batch_size": 8,
    "chips_per_epoch": 32,
    "block": 32,
    "device": "cpu",
}


@pytest.fixture
def scene(tmp_path):
    data, labels = class_scene(96, 96, bands=3, classes=3, seed=4)
    return write_raster(tmp_path / "img.tif", data), write_raster(tmp_path / "lab.tif", labels), labels


def _polygons(tmp_path, crs="EPSG:4326"):
    """Three class rectangles in the image's UTM grid, stored in another CRS."""
    x0, y0 = TRANSFORM.c, TRANSFORM.f
    rects = [
        box(x0, y0 - 400, x0 + 500, y0),
        box(x0 + 500, y0 - 960, x0 + 960, y0 - 300),
        box(x0 + 100, y0 - 900, x0 + 400, y0 - 500),
    ]
    gdf = gpd.GeoDataFrame({"landcover": ["water", "forest", "urban"], "code": [0, 1, 2]}, geometry=rects, crs=UTM)
    path = tmp_path / "labels.geojson"
    gdf.to_crs(crs).to_file(path)
    return path, gdf


def test_vector_labels_are_reprojected_and_rasterized_per_window(tmp_path, scene):
    img, _, _ = scene
    path, gdf = _polygons(tmp_path)
    with RasterSource(img) as src:
        lv = LabelVector(path, src, class_field="landcover", classes=["water", "forest", "urban"])
        full = lv.read(Window(0, 0, 96, 96))
        part = lv.read(Window(40, 30, 20, 50))
    ref = rasterize(
        ((g, i) for g, i in zip(gdf.geometry, gdf.code)), out_shape=(96, 96), transform=TRANSFORM, fill=IGNORE_INDEX
    )
    assert (full == ref).mean() > 0.995  # reprojection round trip may move a border pixel
    np.testing.assert_array_equal(part, full[30:80, 40:60])
    with RasterSource(img) as src:
        with pytest.raises(InvalidParameterError, match="no attribute 'cls'.*landcover, code"):
            LabelVector(path, src, class_field="cls")
        with pytest.raises(InvalidParameterError, match=r"not among the classes"):
            LabelVector(path, src, class_field="landcover", classes=["water", "forest"])
        names = LabelVector(path, src, class_field="landcover", background=None)
        assert names.classes == ["forest", "urban", "water"]


def test_train_from_polygons_with_background(tmp_path, scene):
    img, _, _ = scene
    path, _ = _polygons(tmp_path, crs=UTM)
    res = train_model(
        img,
        path,
        tmp_path / "m.safetensors",
        class_field="code",
        classes=["bg", "a", "b"],
        background=0,
        epochs=1,
        val_fraction=0.0,
        **FAST,
    )
    assert read_config(res.checkpoint).classes == ["bg", "a", "b"]


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, scene):
    img, lab, _ = scene
    opts = dict(FAST, epochs=4, seed=3, patience=10)
    assert_resume_matches_uninterrupted(img, lab, tmp_path, opts, stop=2)
    with pytest.raises(CheckpointError, match="no training state"):
        train_model(img, lab, tmp_path / "never.safetensors", resume=True, **opts)


def test_cancel_is_asked_before_every_batch(tmp_path, scene):
    """A cancel stops training within one batch, not at the end of an epoch (a long epoch would otherwise run on)."""
    from geoseg.train.loop import state_path

    img, lab, _ = scene
    out = tmp_path / "m.safetensors"
    asked: list[int] = []

    def cancel_at_second_batch(done, total, message=""):
        asked.append(done)
        return len(asked) == 2

    with pytest.raises(CancelledError):
        train_model(img, lab, out, progress=cancel_at_second_batch, **dict(FAST, epochs=3, batch_size=4))
    assert asked == [0, 0]  # before the first and the second of 8 batches of epoch 1
    assert not out.exists() and not state_path(out).exists()  # no epoch finished: nothing was written


def test_balanced_sampling_evens_out_rare_classes(tmp_path):
    data, labels = class_scene(128, 128, bands=2, classes=2, seed=1)
    labels[:] = 0
    labels[100:116, 100:116] = 1  # a rare class in one corner
    img = write_raster(tmp_path / "i.tif", data)
    lab_path = write_raster(tmp_path / "l.tif", labels)
    from geoseg.io import Normalization
    from geoseg.train.labels import LabelRaster

    with RasterSource(img) as src:
        reader = ChipReader(src, LabelRaster(lab_path, src, None), Normalization(), 16, 32)
        blocks = [(r, c) for r in range(0, 128, 32) for c in range(0, 128, 32)]
        rng = np.random.default_rng(0)

        def rare_share(mode):
            origins = reader.origins(mode, blocks, 200, rng)
            return np.mean([(reader.read(r, c)[1] == 1).any() for r, c in origins])

        assert rare_share("balanced") > 0.35 > 0.15 > rare_share("random")


def test_augmentations_keep_image_and_labels_aligned():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (4, 32, 32))
    x = y[:, None].float().repeat(1, 2, 1, 1)
    for name in AUGMENTATIONS:
        xa, ya = augment(x.clone(), y.clone(), [name], gen)
        assert xa.shape == x.shape and ya.shape == y.shape and ya.dtype == torch.long
        assert set(ya.unique().tolist()) <= {0, 1, 2, IGNORE_INDEX}
        if name in ("flip", "rot90"):
            assert torch.equal(xa[:, 0].round().long(), ya)
    with pytest.raises(InvalidParameterError, match="unknown augmentation"):
        check_augmentations(["flip", "mixup"])


def test_hyperspectral_pca_stem_and_aux_loss(tmp_path):
    rng = np.random.default_rng(0)
    _, labels = class_scene(64, 64, bands=1, classes=3, seed=2)
    spectra = rng.uniform(0, 1, (3, 40))
    data = (spectra[labels].transpose(2, 0, 1) + rng.normal(0, 0.05, (40, 64, 64))).astype(np.float32)
    img = write_raster(tmp_path / "hsi.tif", data)
    lab = write_raster(tmp_path / "lab.tif", labels)
    res = train_model(
        img,
        lab,
        tmp_path / "m.safetensors",
        arch="pspnet",
        arch_kwargs={"width": 8, "spectral_reduction": 6, "spectral_init": "pca"},
        epochs=1,
        chip=32,
        batch_size=4,
        chips_per_epoch=8,
        block=32,
        device="cpu",
    )
    cfg = read_config(res.checkpoint)
    assert cfg.arch_kwargs["spectral_reduction"] == 6 and 0.5 < cfg.extra["spectral_pca_explained"] <= 1.0
    net, _ = load_checkpoint(res.checkpoint)
    assert net.stem.init == "pca"
    out = predict_raster(img, tmp_path / "p.tif", model=res.checkpoint, device="cpu")
    assert out.output.exists()


def test_encoder_weights_adapted_from_rgb(tmp_path, scene):
    from safetensors.torch import save_file

    from geoseg.models import create_model

    rgb = create_model("fcn8s", in_channels=3, num_classes=2, width=8)
    save_file({k: v.contiguous() for k, v in rgb.encoder.state_dict().items()}, str(tmp_path / "enc.safetensors"))
    data, labels = class_scene(64, 64, bands=5, classes=2, seed=1)
    img = write_raster(tmp_path / "i5.tif", data)
    lab = write_raster(tmp_path / "l.tif", labels)
    res = train_model(
        img,
        lab,
        tmp_path / "m.safetensors",
        arch="fcn8s",
        arch_kwargs={"width": 8},
        encoder_weights=tmp_path / "enc.safetensors",
        adapt="mean",
        epochs=1,
        chip=32,
        batch_size=4,
        chips_per_epoch=4,
        block=32,
        device="cpu",
    )
    record = read_config(res.checkpoint).extra["encoder_weights"]
    assert (record["adapt"], record["layout"], record["source_bands"], record["bands"]) == ("mean", "geoseg", 3, 5)


def test_cli_encoder_resnet50_from_public_weights(tmp_path, scene):
    """`--encoder resnet50 --encoder-weights` with torchvision/timm key names (as TorchGeo ships them)."""
    import hashlib

    from safetensors.torch import save_file

    from geoseg.models.backbones import build_encoder

    enc = build_encoder("resnet50", 3, width=4)
    public = {}
    for k, v in enc.state_dict().items():
        k = k.replace("stem.0.", "conv1.").replace("stem.1.", "bn1.").replace(".down.", ".downsample.")
        if k.startswith("layers."):
            _, stage, rest = k.split(".", 2)
            k = f"layer{int(stage) + 1}.{rest}"
        public["backbone." + k] = v.contiguous()
    weights = tmp_path / "ssl4eo_like.safetensors"
    save_file(public, str(weights))
    img, lab, _ = scene
    args = [
        "train",
        str(img),
        str(lab),
        str(tmp_path / "m.safetensors"),
        "--arch",
        "deeplabv3plus",
        "--encoder",
        "resnet50",
        "--arch-kwargs",
        '{"width": 4, "aspp_channels": 8}',
        "--encoder-weights",
        str(weights),
        "--epochs",
        "1",
        "--chip",
        "32",
        "--chips-per-epoch",
        "4",
        "--block",
        "32",
        "--device",
        "cpu",
        "--progress",
        "none",
    ]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    cfg = read_config(tmp_path / "m.safetensors")
    rec = cfg.extra["encoder_weights"]
    assert cfg.arch_kwargs["encoder"] == "resnet50"
    assert rec["file"] == weights.name and rec["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (rec["layout"], rec["prefix"], rec["encoder"], rec["adapt"]) == ("resnet", "backbone.", "resnet50", "none")
    info = CliRunner().invoke(cli, ["info", str(tmp_path / "m.safetensors")])
    assert f"pretrain  {weights.name} (sha256 {rec['sha256'][:12]}..., layout resnet, adapt none)" in info.output
    res = CliRunner().invoke(cli, [*args[:6], "--encoder", "resnet18", *args[8:], "--overwrite"])
    assert res.exit_code == 2 and "holds a resnet50" in res.output and "--encoder resnet50" in res.output


def test_config_files_and_cli(tmp_path, scene):
    img, lab, _ = scene
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        f"image: {img}\nlabels: {lab}\nout: {tmp_path / 'm.safetensors'}\narch: tiny\n"
        f"arch_kwargs: {{width: 8}}\nepochs: 1\nchip: 32\nchips-per-epoch: 16\nblock: 32\ndevice: cpu\n"
    )
    assert load_train_config(cfg)["chips_per_epoch"] == 16
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg), "--epochs", "2", "--progress", "none"])
    assert res.exit_code == 0, res.output
    assert "best validation mIoU" in res.output and "class_0" in res.output
    assert len(json.loads(json.dumps(read_config(tmp_path / "m.safetensors").extra))["training"]) > 3
    toml = tmp_path / "t.toml"
    toml.write_text('arch = "tiny"\nepochz = 3\n')
    with pytest.raises(InvalidParameterError, match=r"unknown option\(s\) \['epochz'\]"):
        load_train_config(toml)
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(InvalidParameterError, match="malformed"):
        load_train_config(bad)
    res = CliRunner().invoke(cli, ["train", "--config", str(bad)])
    assert res.exit_code == 2 and "malformed" in res.output
    # numbers in exponent form are numbers (YAML 1.2), not strings as YAML 1.1 reads them
    exp = tmp_path / "exp.yaml"
    exp.write_text("lr: 2e-3\npseudo_threshold: 5E-1\nweight_decay: 1.5e-2\nseed: 7\nclasses: [1e5x, a]\n")
    assert load_train_config(exp) == {
        "lr": 0.002, "pseudo_threshold": 0.5, "weight_decay": 0.015, "seed": 7, "classes": ["1e5x", "a"],
    }  # fmt: skip
    # an option given twice (the same key, or its two spellings) is refused, not decided by which comes last
    for text, message in (
        ("epochs: 3\nlr: 0.01\nepochs: 5\n", r"key 'epochs' is given twice \(lines 1 and 3\)"),
        ("arch_kwargs: {width: 8, width: 16}\n", r"key 'width' is given twice"),
        ("chips-per-epoch: 16\nchips_per_epoch: 32\n", r"option chips_per_epoch twice \('chips-per-epoch' and"),
        ("chips-per-epoch = 16\nchips_per_epoch = 32\n", r"option chips_per_epoch twice"),
    ):
        twice = tmp_path / ("twice.toml" if " = " in text else "twice.yaml")
        twice.write_text(text)
        with pytest.raises(InvalidParameterError, match=message):
            load_train_config(twice)
    res = CliRunner().invoke(cli, ["train", "--config", str(tmp_path / "twice.yaml")])
    assert res.exit_code == 2 and "chips_per_epoch twice" in res.output and "Traceback" not in res.output


def _half_scene(tmp_path):
    """Classes 0/1 on the left half of the columns, class 2 only on the right half."""
    data, labels = class_scene(64, 96, bands=3, classes=2, seed=5)
    labels[:, 48:] = 2
    data[:, :, 48:] = 2.0
    return write_raster(tmp_path / "img.tif", data), write_raster(tmp_path / "lab.tif", labels)


def test_training_area_window_and_exclusion_polygons(tmp_path):
    from geoseg.errors import ClassNotTrainedWarning

    img, lab = _half_scene(tmp_path)
    opts = dict(FAST, epochs=1, val_fraction=0.0, classes=["a", "b", "c"])
    with pytest.warns(ClassNotTrainedWarning, match="class 'c' .*no training pixel.*will not predict it"):
        res = train_model(img, lab, tmp_path / "w.safetensors", train_area=Window(0, 0, 48, 64), **opts)
    cfg = read_config(res.checkpoint)
    assert cfg.trained_classes == ["a", "b"] and cfg.extra["training"]["training_pixels"]["c"] == 0
    assert cfg.extra["training"]["train_area"] == "window 0,0,48,64"
    # the right half as polygons in another CRS, excluded: the same pixels are left out
    x0, y0 = TRANSFORM.c, TRANSFORM.f
    right = gpd.GeoDataFrame(geometry=[box(x0 + 480, y0 - 640, x0 + 960, y0)], crs=UTM).to_crs("EPSG:4326")
    right.to_file(tmp_path / "test_region.gpkg")
    with pytest.warns(ClassNotTrainedWarning, match="class 'c'"):
        res = train_model(img, lab, tmp_path / "p.safetensors", exclude_area=tmp_path / "test_region.gpkg", **opts)
    assert read_config(res.checkpoint).trained_classes == ["a", "b"]
    # and from the command line, a window string and a polygon file
    for flag, value in (("--train-area", "0,0,48,64"), ("--exclude-area", str(tmp_path / "test_region.gpkg"))):
        out = tmp_path / f"cli{flag}.safetensors"
        r = CliRunner().invoke(
            cli,
            [
                "train",
                str(img),
                str(lab),
                str(out),
                "--classes",
                "a,b,c",
                "--arch",
                "tiny",
                "--epochs",
                "1",
                "--chips-per-epoch",
                "8",
                "--chip",
                "32",
                "--val-fraction",
                "0",
                flag,
                value,
                "--device",
                "cpu",
                "--progress",
                "none",
            ],
        )
        assert r.exit_code == 0, r.output
        assert read_config(out).trained_classes == ["a", "b"]


def test_area_pixels_match_the_evaluation_area_rule(tmp_path):
    from geoseg.io.georef import Georeference
    from geoseg.io.labels import AreaOfInterest
    from geoseg.train.area import AreaLabels, PixelArea
    from geoseg.train.labels import LabelRaster

    img, lab = _half_scene(tmp_path)
    x0, y0 = TRANSFORM.c, TRANSFORM.f
    poly = gpd.GeoDataFrame(geometry=[box(x0 + 123, y0 - 517, x0 + 611, y0 - 38)], crs=UTM).to_crs("EPSG:3857")
    with RasterSource(img) as src, rasterio.open(img) as ds:
        area = PixelArea(poly, src)
        labels = AreaLabels(LabelRaster(lab, src, None), area, None, IGNORE_INDEX)
        win = Window(5, 7, 80, 50)
        inside = AreaOfInterest(poly, Georeference.of(ds)).mask(win)
        np.testing.assert_array_equal(area.mask(win), inside)
        y = labels.read(win)
        assert (y[~inside] == IGNORE_INDEX).all() and (y[inside] != IGNORE_INDEX).all()


def test_training_area_errors(tmp_path):
    from geoseg.errors import InputNotFoundError, NoOverlapError

    img, lab = _half_scene(tmp_path)
    opts = dict(FAST, epochs=1)
    with pytest.raises(NoOverlapError, match="training area window 100,0,10,10 lies outside the 96x64 px image"):
        train_model(img, lab, tmp_path / "m.safetensors", train_area="100,0,10,10", **opts)
    with pytest.raises(InvalidParameterError, match="width, height >= 1"):
        train_model(img, lab, tmp_path / "m.safetensors", train_area=(0, 0, 0, 10), **opts)
    with pytest.raises(InputNotFoundError, match="training area not found: .*nope.gpkg.*col_off,row_off"):
        train_model(img, lab, tmp_path / "m.safetensors", train_area=tmp_path / "nope.gpkg", **opts)
    far = gpd.GeoDataFrame(geometry=[box(0, 0, 10, 10)], crs=UTM)
    with pytest.raises(NoOverlapError, match="excluded area .* does not overlap the image"):
        train_model(img, lab, tmp_path / "m.safetensors", exclude_area=far, **opts)
    with pytest.raises(InvalidParameterError, match="cover no pixel .* inside the training area"):
        train_model(img, lab, tmp_path / "m.safetensors", exclude_area=(0, 0, 96, 64), **opts)
    assert not (tmp_path / "m.safetensors").exists()


def test_random_forest_baseline_on_the_same_pixels(tmp_path, scene, monkeypatch):
    from geoseg.errors import MissingDependencyError

    img, lab, _ = scene
    opts = dict(FAST, epochs=1, val_fraction=0.3)
    res = train_model(img, lab, tmp_path / "m.safetensors", baseline="rf", **opts)
    assert res.baseline is not None and [c.name for c in res.baseline.classes] == ["class_0", "class_1", "class_2"]
    assert res.baseline.pixels == res.report.pixels > 0  # scored on the same validation pixels
    assert res.baseline.miou > 0.8  # the scene's classes are spectrally separable
    r = CliRunner().invoke(
        cli,
        [
            "train",
            str(img),
            str(lab),
            str(tmp_path / "c.safetensors"),
            "--arch",
            "tiny",
            "--epochs",
            "1",
            "--chips-per-epoch",
            "8",
            "--chip",
            "32",
            "--block",
            "32",
            "--baseline",
            "rf",
            "--device",
            "cpu",
            "--progress",
            "none",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "network   forest" in r.output and "network - forest" in r.output
    monkeypatch.setitem(__import__("sys").modules, "sklearn", None)
    monkeypatch.setitem(__import__("sys").modules, "sklearn.ensemble", None)
    with pytest.raises(MissingDependencyError, match=r"scikit-learn: pip install 'geoseg\[baseline\]'"):
        train_model(img, lab, tmp_path / "x.safetensors", baseline="rf", overwrite=True, **opts)
    with pytest.raises(InvalidParameterError, match="unknown baseline 'svm'"):
        train_model(img, lab, tmp_path / "y.safetensors", baseline="svm", **opts)


def test_a_class_without_training_pixels_is_never_predicted(tmp_path):
    """Class 'c' fills the right half, which is kept out of training: however its output channel ended up, the map
    holds only trained classes and its tags name the class left out; a pair without trained_classes is unchanged."""
    from geoseg.errors import ClassNotTrainedWarning
    from geoseg.inference.predict import UntrainedClassMask

    img, lab = _half_scene(tmp_path)
    opts = dict(FAST, epochs=1, val_fraction=0.0, classes=["a", "b", "c"])
    with pytest.warns(ClassNotTrainedWarning):
        res = train_model(img, lab, tmp_path / "m.safetensors", train_area=Window(0, 0, 48, 64), **opts)
    net, cfg = load_checkpoint(res.checkpoint, device="cpu")
    with torch.no_grad():  # make the untrained class win everywhere, as a stale output layer can
        last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.bias[2] = 1e3
    predict_raster(img, tmp_path / "p.tif", model=(net, cfg), device="cpu")
    with rasterio.open(tmp_path / "p.tif") as ds:
        classes = ds.read(1)
        tags = ds.tags()
    assert set(np.unique(classes)) <= {0, 1}
    assert tags["geoseg_untrained_classes"] == "c"
    x = torch.randn(1, 3, 16, 16)
    masked = UntrainedClassMask(net.eval(), [2])(x)
    assert (masked.argmax(1) != 2).all() and torch.equal(masked[:, :2], net(x)[:, :2])


def test_validation_scores_the_map_prediction_makes_without_untrained_classes(tmp_path):
    """Validation masks the classes without training pixels as prediction does: an untrained class is never counted
    as predicted (which would score it IoU 0 and lower the validation mIoU and the comparison with the forest)."""
    from geoseg.errors import ClassNotTrainedWarning

    img, lab = _half_scene(tmp_path)
    opts = dict(FAST, epochs=1, val_fraction=0.3, classes=["a", "b", "c"])
    with pytest.warns(ClassNotTrainedWarning):
        res = train_model(img, lab, tmp_path / "m.safetensors", train_area=Window(0, 0, 48, 64), **opts)
    untrained = next(c for c in res.report.classes if c.name == "c")
    assert untrained.predicted == 0 and untrained.support == 0


@pytest.mark.parametrize("in_memory", [True, False])
def test_per_pixel_pretraining_learns_the_spectra(tmp_path, in_memory):
    """The per-pixel classifier is pre-trained on labelled training pixels, from memory or from chips read per step
    (rasters too large to hold), and separates classes by their spectra before any chip step."""
    from geoseg.io import Normalization
    from geoseg.models import create_model
    from geoseg.train.labels import LabelRaster
    from geoseg.train.loop import _pretrain_pixels
    from geoseg.train.losses import make_loss

    data, labels = class_scene(64, 64, bands=6, classes=3, seed=2)
    img, lab = write_raster(tmp_path / "i.tif", data), write_raster(tmp_path / "l.tif", labels)
    torch.manual_seed(0)
    net = create_model("ssnet", in_channels=6, num_classes=3, spectral=8, width=8, depth=2)
    pixels = torch.from_numpy(data.reshape(6, -1).T.copy())
    truth = torch.from_numpy(labels.reshape(-1).astype(np.int64))
    with RasterSource(img) as src:
        reader = ChipReader(
            src, LabelRaster(lab, src, None), Normalization(), 16, 32, in_memory_bytes=2**30 if in_memory else 0
        )
        assert reader.in_memory is in_memory
        blocks = [(r, c) for r in range(0, 64, 32) for c in range(0, 64, 32)]
        reader.set_roles(BlockSplit(32, blocks, []))
        done = _pretrain_pixels(
            net, reader, make_loss("ce"), np.random.default_rng(0), torch.Generator().manual_seed(0), steps=100,
            pixel_batch=256, lr=0.01, weight_decay=0.0, balance=0.5, augmentations=(), dev=torch.device("cpu"),
            progress=None, epochs=1, sampling="centered", train_blocks=blocks, batch_size=8,
        )  # fmt: skip
    assert done == 100
    with torch.no_grad():
        accuracy = (net.eval().forward_pixels(pixels).argmax(1) == truth).float().mean().item()
    assert accuracy > 0.95


def test_pixel_steps_are_recorded_and_need_a_per_pixel_classifier(tmp_path, scene):
    img, lab, _ = scene
    opts = dict(FAST, arch="ssnet", arch_kwargs={"spectral": 8, "width": 8, "depth": 2}, epochs=1, chips_per_epoch=8)
    train_model(img, lab, tmp_path / "a.safetensors", pixel_steps=7, **opts)
    assert read_config(tmp_path / "a.safetensors").extra["training"]["pixel_steps"] == 7
    train_model(img, lab, tmp_path / "b.safetensors", pixel_steps=0, **opts)
    assert read_config(tmp_path / "b.safetensors").extra["training"]["pixel_steps"] == 0
    with pytest.raises(InvalidParameterError, match="pixel_steps.*per-pixel classifier"):
        train_model(img, lab, tmp_path / "c.safetensors", pixel_steps=5, **FAST)
    assert not (tmp_path / "c.safetensors").exists()
    with pytest.raises(InvalidParameterError, match="pixel_steps"):
        train_model(img, lab, tmp_path / "d.safetensors", pixel_steps=-1, **opts)
    # a resumed run keeps the pre-training it was saved with: another pixel_steps is refused, none given is fine
    with pytest.raises(CheckpointError, match=r"pixel_steps 7 \(now 50\)"):
        train_model(img, lab, tmp_path / "a.safetensors", pixel_steps=50, resume=True, **opts)
    train_model(img, lab, tmp_path / "a.safetensors", resume=True, **opts)


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains_the_per_pixel_and_the_chip_networks(tmp_path, scene, loss):
    """The per-pixel pre-training gives the loss ``(N, classes)`` logits, the chips ``(N, classes, H, W)``."""
    img, lab, _ = scene
    ssnet = dict(FAST, arch="ssnet", arch_kwargs={"spectral": 8, "width": 8, "depth": 2}, epochs=1, chips_per_epoch=8)
    for name, opts in {"ssnet": ssnet, "tiny": dict(FAST, epochs=1, chips_per_epoch=8)}.items():
        extra = {"pixel_steps": 5} if name == "ssnet" else {}
        result = train_model(img, lab, tmp_path / f"{name}.safetensors", loss=loss, **extra, **opts)
        assert np.isfinite(result.history[-1]["loss"])
        assert read_config(tmp_path / f"{name}.safetensors").extra["training"]["loss"] == loss


def test_soft_dice_is_the_same_for_chips_and_their_pixels():
    from geoseg.train.losses import soft_dice

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=gen)
    target = torch.randint(0, 3, (2, 4, 5), generator=gen)
    target[0, 0, :] = IGNORE_INDEX
    flat_logits, flat_target = logits.movedim(1, -1).reshape(-1, 3), target.reshape(-1)
    assert torch.allclose(soft_dice(logits, target), soft_dice(flat_logits, flat_target))
    perfect = torch.nn.functional.one_hot(flat_target.clamp(min=0), 3).float() * 50
    assert soft_dice(perfect, flat_target).item() < 0.02


@pytest.mark.parametrize("loss", LOSSES)
def test_class_weights_weigh_every_loss_and_a_zero_weight_batch_is_no_nan(loss):
    from geoseg.train.losses import make_loss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
    only_class_1 = torch.ones(2, 4, 4, dtype=torch.long)
    weights = torch.tensor([1.0, 0.0, 2.0])
    value = make_loss(loss, weights=weights)(logits, only_class_1)
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(logits.grad).all()  # 0/0 was NaN and poisoned every weight
    mixed = torch.randint(0, 3, (2, 4, 4), generator=gen)
    weighted = make_loss(loss, weights=weights)(logits, mixed).item()
    if loss != "weighted_ce":  # it has no unweighted form
        assert weighted != pytest.approx(make_loss(loss)(logits, mixed).item())  # the weights change the loss
    if loss in ("ce", "weighted_ce", "focal"):  # per-pixel terms: a class of weight 0 counts as if ignored
        ignored = torch.where(mixed == 1, IGNORE_INDEX, mixed)
        assert weighted == pytest.approx(make_loss(loss, weights=weights)(logits, ignored).item(), rel=1e-5)
    if loss == "dice":  # per-class terms: the weighted mean of the classes' Dice losses
        one = [make_loss(loss, weights=torch.eye(3)[c])(logits, mixed).item() for c in (0, 2)]
        assert weighted == pytest.approx((one[0] + 2 * one[1]) / 3, rel=1e-5)


def test_a_batch_of_zero_weight_pixels_leaves_the_model_finite(tmp_path):
    """Chips of one class of weight 0 (batch size 1): the loss used to be 0/0 and every weight of the model NaN."""
    data, labels = class_scene(64, 64, bands=3, classes=3, seed=1)
    labels[:, :40] = 0
    img, lab = write_raster(tmp_path / "img.tif", data), write_raster(tmp_path / "lab.tif", labels)
    opts = dict(FAST, chip=16, batch_size=1, chips_per_epoch=8, epochs=2)
    result = train_model(img, lab, tmp_path / "m.safetensors", class_weights=[0, 1, 1], **opts)
    assert all(np.isfinite(h["loss"]) for h in result.history)
    net, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert all(torch.isfinite(p).all() for p in net.state_dict().values())


def test_a_class_of_weight_zero_is_not_trained_and_never_predicted(tmp_path):
    from geoseg.errors import ClassNotTrainedWarning
    from geoseg.inference import predict_raster
    from geoseg.models import read_config

    data, labels = class_scene(64, 64, bands=3, classes=3, seed=1)
    img, lab = write_raster(tmp_path / "img.tif", data), write_raster(tmp_path / "lab.tif", labels)
    opts = dict(FAST, chip=16, chips_per_epoch=8, epochs=1, classes=["a", "b", "c"])
    with pytest.warns(ClassNotTrainedWarning, match=r"class 'b' \(id 1\) has class weight 0"):
        result = train_model(img, lab, tmp_path / "m.safetensors", class_weights=[1, 0, 1], **opts)
    assert read_config(result.checkpoint).trained_classes == ["a", "c"]
    out = predict_raster(img, tmp_path / "map.tif", model=result.checkpoint, device="cpu")
    assert out.class_counts["b"] == 0 and out.class_counts["a"] + out.class_counts["c"] == 64 * 64
    with pytest.raises(InvalidParameterError, match=r"only 1 class\(es\) \(c\) have both training pixels and a "):
        train_model(img, lab, tmp_path / "x.safetensors", class_weights=[0, 0, 1], **opts)
    assert not (tmp_path / "x.safetensors").exists()


def test_a_diverging_loss_stops_training_before_a_nan_model_is_saved(tmp_path, scene, monkeypatch):
    import geoseg.models.registry as registry
    from geoseg.errors import TrainingDivergedError

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the test model leaves with the test

    class Overflowing(torch.nn.Module):
        """A model whose logits are infinite: its loss is NaN from the first batch."""

        def __init__(self, in_channels: int, num_classes: int) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(in_channels, num_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) * float("inf")

    registry.register_model("overflowing", output_stride=1)(Overflowing)
    img, lab, _ = scene
    with pytest.raises(
        TrainingDivergedError, match=r"loss became nan in epoch 1; lower lr \(now 0.002\).*no checkpoint"
    ):
        train_model(img, lab, tmp_path / "m.safetensors", **dict(FAST, arch="overflowing", arch_kwargs={}))
    assert not (tmp_path / "m.safetensors").exists()


def test_the_default_network_is_chosen_from_the_band_count(tmp_path):
    """One band: a U-Net (width 16) with cross entropy + Dice; more: ssnet with cross entropy. Options given apply
    to the choice, and a refusal the choice causes says so."""
    from geoseg.train.loop import default_network

    fast = dict(epochs=1, chips_per_epoch=8, chip=32, block=32, device="cpu", pixel_steps=0)
    made = {}
    for bands in (1, 3):
        data, labels = class_scene(64, 64, bands=bands, classes=3, seed=1)
        img, lab = write_raster(tmp_path / f"i{bands}.tif", data), write_raster(tmp_path / f"l{bands}.tif", labels)
        made[bands] = img, lab
        opts = fast if bands == 3 else {k: v for k, v in fast.items() if k != "pixel_steps"}
        result = train_model(img, lab, tmp_path / f"m{bands}.safetensors", **opts)
        cfg = read_config(tmp_path / f"m{bands}.safetensors")
        expected = default_network(bands)
        assert (cfg.arch, cfg.arch_kwargs, cfg.extra["training"]["loss"]) == (
            expected["arch"], expected["arch_kwargs"], expected["loss"]
        )  # fmt: skip
        assert result.plan["network"] == {**expected, "chosen_from_bands": True}
    assert default_network(1) == {"arch": "unet", "arch_kwargs": {"width": 16}, "loss": "ce_dice"}
    assert default_network(3)["arch"] == "ssnet"
    img, lab = made[1]
    # "default" is the spelling of the choice; a user's loss and options apply to the chosen network
    result = train_model(img, lab, tmp_path / "f.safetensors", arch="default", loss="focal",
                         arch_kwargs={"depth": 3}, **{k: v for k, v in fast.items() if k != "pixel_steps"})  # fmt: skip
    assert result.plan["network"] == {
        "arch": "unet", "arch_kwargs": {"width": 16, "depth": 3}, "loss": "focal", "chosen_from_bands": True,
    }  # fmt: skip
    explicit = train_model(img, lab, tmp_path / "u.safetensors", arch="unet", **{k: v for k, v in fast.items()
                           if k != "pixel_steps"})  # fmt: skip
    assert explicit.plan["network"] == {"arch": "unet", "arch_kwargs": {}, "loss": "ce", "chosen_from_bands": False}
    chosen = r"\(geoseg's default network for a 1-band image is unet \{'width': 16\} with loss ce_dice; give arch"
    for bad in ({"pixel_steps": 5}, {"arch_kwargs": {"spectral": 8}}, {"encoder_weights": "none.safetensors"}):
        with pytest.raises(InvalidParameterError, match=chosen):
            train_model(img, lab, tmp_path / "x.safetensors", **{**fast, "pixel_steps": None, **bad})
    assert not (tmp_path / "x.safetensors").exists()


def test_labels_too_sparse_to_validate_are_reported(tmp_path, scene):
    """Three short label runs, one per class, each in its own block: no validation block holds a labelled pixel."""
    img, _, _ = scene
    sparse = np.full((96, 96), 255, np.uint8)
    sparse[5, 5:8], sparse[40, 40:43], sparse[20, 70:73] = 0, 1, 2
    lab = write_raster(tmp_path / "sparse.tif", sparse, nodata=255)
    with pytest.warns(UserWarning, match=r"no labelled pixel fell in the validation blocks \(9 labelled pixels"):
        result = train_model(img, lab, tmp_path / "m.safetensors", **dict(FAST, epochs=1, chips_per_epoch=4))
    assert np.isnan(result.best_miou) and (tmp_path / "m.safetensors").exists()  # the last epoch is kept


def test_the_refit_trains_on_every_label_up_to_the_validated_epoch(tmp_path, scene):
    img, lab, labels = scene
    opts = dict(FAST, epochs=3, val_fraction=0.3)
    refit = train_model(img, lab, tmp_path / "r.safetensors", refit=True, **opts)
    validated = train_model(img, lab, tmp_path / "v.safetensors", **opts)  # the default: no refit
    assert validated.refit is None and "refit" not in read_config(validated.checkpoint).extra["training"]
    # the same validated run chose the epoch; the refit then trained on the validation blocks' labels too
    assert refit.best_miou == validated.best_miou and refit.best_epoch == validated.best_epoch
    assert refit.refit is not None and refit.refit["round"] == 0
    assert refit.refit["epochs"] == refit_length(refit.history, refit.best_epoch, 0, 3) >= refit.best_epoch
    contract = read_config(refit.checkpoint).extra
    assert contract["training"]["refit"] == refit.refit
    trained_on = sum(contract["training"]["training_pixels"].values())
    assert refit.refit["pixels"] == labels.size > trained_on  # every pixel of the scene is labelled
    assert contract["validation"] == read_config(validated.checkpoint).extra["validation"]  # the validated model's
    a, b = load_checkpoint(refit.checkpoint)[0].state_dict(), load_checkpoint(validated.checkpoint)[0].state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    # resuming the finished run leaves the refit model as it is
    before = refit.checkpoint.read_bytes()
    again = train_model(img, lab, tmp_path / "r.safetensors", resume=True, refit=True, **opts)
    assert again.checkpoint.read_bytes() == before and again.refit == refit.refit
    # what the CLI says and records
    args = ["train", str(img), str(lab), str(tmp_path / "c.safetensors"), "--arch", "tiny", "--arch-kwargs"]
    args += ['{"width": 8}', "--chip", "32", "--batch-size", "8", "--chips-per-epoch", "32", "--block", "32"]
    args += ["--epochs", "2", "--val-fraction", "0.3", "--device", "cpu"]
    out = CliRunner().invoke(cli, [*args, "--refit"])
    assert out.exit_code == 0, out.output
    assert "validation of the model before it was trained again (without the validation blocks):" in out.output
    info = CliRunner().invoke(cli, ["info", str(tmp_path / "c.safetensors")])
    assert re.search(r"refit +trained again on every label \(9216 px, validation blocks included\)", info.output)
    assert re.search(
        r"then trained again on every label \(9216 px, validation blocks included\) for \d epoch", out.output
    )
    out = CliRunner().invoke(cli, [*args[:3], str(tmp_path / "j.safetensors"), *args[4:], "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["refit"] is None


def test_no_refit_without_validation_and_a_time_limit_that_leaves_none_says_so(tmp_path, scene):
    img, lab, _ = scene
    with pytest.warns(UserWarning, match=r"refit=True trains again .* but val_fraction is 0: the model already"):
        plain = train_model(img, lab, tmp_path / "a.safetensors", refit=True, **dict(FAST, epochs=2, val_fraction=0))
    assert plain.refit is None and "refit" not in read_config(plain.checkpoint).extra["training"]
    with pytest.warns(UserWarning) as said:
        short = train_model(img, lab, tmp_path / "b.safetensors", refit=True, max_seconds=1e-6, **dict(FAST, epochs=3))
    assert short.refit is None and short.epochs_run == 1
    messages = [str(w.message) for w in said]
    assert any("max_seconds 1e-06 s after epoch 1 of 3; the best epoch so far is kept" in m for m in messages)
    assert any("max_seconds 1e-06 s before training again on every label; the validated" in m for m in messages)
    # the same when the time runs out before self-training rounds (which are skipped with their own warning)
    with pytest.warns(UserWarning, match=r"before training again on every label"):
        train_model(img, lab, tmp_path / "c.safetensors", refit=True, self_training=1, max_seconds=1e-6, **FAST)


def test_resuming_a_run_that_patience_stopped_trains_no_more_and_keeps_its_refit(tmp_path, scene):
    img, lab, _ = scene
    opts = dict(FAST, epochs=8, patience=1, val_fraction=0.3, refit=True, lr=0.5)  # a high rate: stops early
    first = train_model(img, lab, tmp_path / "m.safetensors", **opts)
    assert first.epochs_run < 8 and first.refit is not None
    saved, state = first.checkpoint.read_bytes(), first.state.read_bytes()
    again = train_model(img, lab, tmp_path / "m.safetensors", resume=True, **opts)
    assert again.epochs_run == first.epochs_run and again.refit == first.refit
    assert first.checkpoint.read_bytes() == saved and first.state.read_bytes() == state


def test_a_class_only_the_refit_trained_on_is_predicted_and_said(tmp_path):
    from geoseg.train.chips import block_split

    data, labels = class_scene(64, 64, bands=3, classes=2, seed=1)
    labels = labels.copy()
    labels[48:, 48:] = 2  # class 2 in one 16-px block only
    img, lab = write_raster(tmp_path / "img.tif", data), write_raster(tmp_path / "lab.tif", labels)
    # without stratification the block split is random: a seed that validates class 2's block
    seed = next(s for s in range(200) if (48, 48) in block_split((64, 64), 16, 0.2, s).val)
    opts = dict(FAST, block=16, epochs=2, seed=seed, stratify=False, refit=True, classes=["a", "b", "c"])
    with pytest.warns(UserWarning, match=r"class\(es\) 'c' had training pixels only in the validation blocks"):
        result = train_model(img, lab, tmp_path / "m.safetensors", **opts)
    assert result.refit["training_pixels"]["c"] == 256
    assert read_config(result.checkpoint).trained_classes == ["a", "b", "c"]


def test_the_refit_runs_to_the_latest_epoch_validation_cannot_tell_from_the_best():
    def history(*rounds):
        return [
            {"epoch": r * len(vals) + e, "round": r, "val_miou": v}
            for r, vals in enumerate(rounds)
            for e, v in enumerate(vals, 1)
        ]

    tol = REFIT_TOLERANCE
    assert refit_length(history([0.5, 0.9, 0.6, 0.6]), 2, 0, 4) == 2  # the curve falls after epoch 2
    assert refit_length(history([0.5, 0.9, 0.9 - tol / 2, 0.9 - tol / 2]), 2, 0, 4) == 4  # flat: the whole schedule
    assert refit_length(history([0.5, 0.9, 0.9 - 2 * tol, 0.9 - tol / 2]), 2, 0, 4) == 4  # the latest close one
    # self-training: epochs are numbered across rounds; the refit counts those of the kept round only
    rounds = history([0.5, 0.7, 0.7], [0.6, 0.8, 0.79])
    assert refit_length(rounds, 5, 1, 3) == 3 and refit_length(rounds, 2, 0, 3) == 3


def test_resuming_without_the_checkpoint_of_the_run_is_refused(tmp_path, scene):
    img, lab, _ = scene
    first = train_model(img, lab, tmp_path / "m.safetensors", **dict(FAST, epochs=1))
    first.checkpoint.unlink()
    with pytest.raises(CheckpointError, match=r"cannot resume: the checkpoint .*m.safetensors of the run that saved"):
        train_model(img, lab, tmp_path / "m.safetensors", resume=True, **dict(FAST, epochs=1))
    assert not first.checkpoint.exists()
