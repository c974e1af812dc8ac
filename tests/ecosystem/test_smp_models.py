"""smp models end to end like the native ones: train (from a timm weights file), checkpoint + contract, tiled
prediction with the band contract, ONNX export, the CLI; and named weight sources failing clearly offline."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from ecosystem_utils import ecosystem_import
from rasters import class_scene, write_raster
from safetensors.torch import save_file

timm = ecosystem_import("timm")
ecosystem_import("segmentation_models_pytorch")

from geoseg.cli.main import cli  # noqa: E402
from geoseg.errors import InputNotFoundError, InvalidParameterError, ModelContractError  # noqa: E402
from geoseg.inference import predict_raster  # noqa: E402
from geoseg.models import load_checkpoint, read_config  # noqa: E402
from geoseg.models.adapt import file_sha256, load_encoder_weights  # noqa: E402
from geoseg.models.onnx import export_onnx, load_onnx  # noqa: E402

pytestmark = pytest.mark.ecosystem

BANDS = ["B2", "B3", "B4", "B8", "B11"]
ENCODER = "mobilenetv2_035"
DECODER = {"decoder_channels": [16, 8, 8, 8, 8]}


@pytest.fixture
def scene(tmp_path):
    data, labels = class_scene(64, 64, bands=len(BANDS), classes=3, seed=2)
    img = write_raster(tmp_path / "s2.tif", data, descriptions=BANDS)
    lab = write_raster(tmp_path / "labels.tif", labels)
    return img, lab


@pytest.fixture
def timm_weights(tmp_path):
    """A 3-band timm MobileNetV2 state dict (random, seeded) as a public file would hold it, with its classifier."""
    torch.manual_seed(0)
    model = timm.create_model(ENCODER, pretrained=False)
    path = tmp_path / f"{ENCODER}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model.state_dict()


def test_train_predict_export_smp_unetplusplus(tmp_path, scene, timm_weights) -> None:
    img, lab = scene
    weights, ref_state = timm_weights
    res = CliRunner().invoke(
        cli,
        [
            "train", str(img), str(lab), str(tmp_path / "m.safetensors"), "--arch", "smp-unetplusplus",
            "--encoder", ENCODER, "--arch-kwargs", '{"decoder_channels": [16, 8, 8, 8, 8]}',
            "--encoder-weights", str(weights), "--adapt", "mean", "--epochs", "1", "--chip", "32",
            "--chips-per-epoch", "4", "--batch-size", "2", "--block", "32", "--device", "cpu", "--progress", "none",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg = read_config(tmp_path / "m.safetensors")
    assert cfg.arch == "smp-unetplusplus" and cfg.bands == BANDS and cfg.output_stride == 32
    assert cfg.arch_kwargs == {"encoder": ENCODER, **DECODER}
    rec = cfg.extra["encoder_weights"]
    assert rec["file"] == weights.name and rec["sha256"] == file_sha256(weights)
    assert (rec["layout"], rec["adapt"], rec["source_bands"], rec["bands"]) == ("timm", "mean", 3, 5)
    assert rec["first_conv"] == "conv_stem.weight" and rec["dropped_keys"] > 0

    net, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert type(net).__name__ == "SmpModel" and net.encoder_name == ENCODER
    out = predict_raster(img, tmp_path / "classes.tif", model=tmp_path / "m.safetensors", tile=64, device="cpu")
    assert out.output.exists() and sum(out.class_counts.values()) == 64 * 64

    # the band contract: bands are picked by name from a raster that has them in another order, refused otherwise
    data, _ = class_scene(64, 64, bands=5, classes=3, seed=2)
    shuffled = write_raster(tmp_path / "shuffled.tif", data[::-1].copy(), descriptions=BANDS[::-1])
    predict_raster(shuffled, tmp_path / "c2.tif", model=tmp_path / "m.safetensors", tile=64, device="cpu")
    four = write_raster(tmp_path / "four.tif", data[:4], descriptions=BANDS[:4])
    with pytest.raises(ModelContractError, match=r"model expects 5 band\(s\) B2,B3,B4,B8,B11; the raster has only 4"):
        predict_raster(four, tmp_path / "c3.tif", model=tmp_path / "m.safetensors", tile=64, device="cpu")

    onnx_path = export_onnx(tmp_path / "m.safetensors", tmp_path / "m.onnx", exporter="torchscript")
    runner, onnx_cfg = load_onnx(onnx_path)
    assert onnx_cfg.arch == "smp-unetplusplus" and runner.output_stride == 32
    x = torch.randn(1, 5, 64, 96)
    with torch.no_grad():
        np.testing.assert_allclose(runner(x.numpy()), net(x).numpy(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("arch", ["smp-fpn", "smp-segformer", "smp-upernet"])
def test_smp_encoder_weights_load_unchanged_when_bands_agree(tmp_path, arch: str) -> None:
    torch.manual_seed(1)
    ref = timm.create_model("resnet18", pretrained=False, in_chans=5)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in ref.state_dict().items()}}, path)
    from geoseg.models import create_model

    model = create_model(arch, in_channels=5, num_classes=3, encoder="resnet18")
    record = load_encoder_weights(model, path)
    assert record["adapt"] == "none" and record["prefix"] == "model." and record["encoder"] == "resnet18"
    own = model.timm_encoder.state_dict()
    assert all(torch.equal(own[k], ref.state_dict()[k]) for k in own)


def test_torchvision_named_source_fails_offline_in_one_line(tmp_path, monkeypatch) -> None:
    ecosystem_import("torchvision")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty cache: it must try the network
    from geoseg.models import create_model

    model = create_model("fcn8s", in_channels=3, num_classes=2, encoder="resnet50", width=4)
    with pytest.raises(InputNotFoundError, match=r"cannot fetch torchvision:resnet50 .*offline\? .*local file"):
        load_encoder_weights(model, "torchvision:resnet50")
    with pytest.raises(InvalidParameterError, match=r"torchvision has no weights 'resnet50\.NOPE'"):
        load_encoder_weights(model, "torchvision:resnet50.NOPE")
    with pytest.raises(InvalidParameterError, match=r"timm has no pretrained weights named 'nonet_b9'"):
        load_encoder_weights(model, "timm:nonet_b9")


def test_timm_named_source_fails_offline_on_the_cli(tmp_path, scene) -> None:
    img, lab = scene
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    args = [str(img), str(lab), str(tmp_path / "m.safetensors"), "--arch", "smp-fpn", "--encoder", "resnet50"]
    res = subprocess.run(
        [sys.executable, "-m", "geoseg", "train", *args, "--encoder-weights", "timm:resnet50.a1_in1k", "--epochs", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("Error: cannot fetch timm:resnet50.a1_in1k") and "local file" in lines[-1]
    assert not (tmp_path / "m.safetensors").exists()
