"""Loading pretrained encoder files: layouts, prefixes, first-layer adaptation, band names, and every error.

Equality with torchvision's and timm's own models is proven in tests/ecosystem (they need torchvision/timm); here the
files are written with torch alone, in geoseg's layout or with the public key names.
"""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from geoseg.errors import CheckpointError, InputNotFoundError, InvalidParameterError, MissingDependencyError
from geoseg.models import create_model
from geoseg.models.adapt import adapt_first_conv, adapt_first_conv_by_name, is_named_source, load_encoder_weights
from geoseg.models.backbones import build_encoder


@pytest.fixture
def rgb_weight() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(8, 3, 7, 7)


def test_repeat_cycles_and_rescales(rgb_weight: torch.Tensor) -> None:
    w = adapt_first_conv(rgb_weight, 13, "repeat")
    assert w.shape == (8, 13, 7, 7)
    for band in range(13):
        torch.testing.assert_close(w[:, band], rgb_weight[:, band % 3] * 3 / 13)
    # a grey image gets the same response when N is a multiple of 3 (sum over input channels preserved)
    torch.testing.assert_close(adapt_first_conv(rgb_weight, 12, "repeat").sum(dim=1), rgb_weight.sum(dim=1))


def test_mean_gives_every_band_the_rgb_mean(rgb_weight: torch.Tensor) -> None:
    w = adapt_first_conv(rgb_weight, 4, "mean")
    for band in range(4):
        torch.testing.assert_close(w[:, band], rgb_weight.mean(dim=1) * 3 / 4)
    torch.testing.assert_close(w.sum(dim=1), rgb_weight.sum(dim=1))


def test_random_keeps_rgb_and_initialises_extra_bands(rgb_weight: torch.Tensor) -> None:
    torch.manual_seed(1)
    w = adapt_first_conv(rgb_weight, 200, "random")
    torch.testing.assert_close(w[:, :3], rgb_weight)
    extra = w[:, 3:]
    assert extra.std().item() == pytest.approx((2 / (3 * 49)) ** 0.5, rel=0.1)
    assert adapt_first_conv(rgb_weight, 1, "random").shape == (8, 1, 7, 7)


def test_unknown_strategy(rgb_weight: torch.Tensor) -> None:
    with pytest.raises(InvalidParameterError, match=r"unknown first-layer adaptation strategy 'copy'.*repeat, mean"):
        adapt_first_conv(rgb_weight, 4, "copy")


def _pretrained_file(tmp_path, *, fmt: str, prefix: str = "") -> tuple[str, dict[str, torch.Tensor]]:
    torch.manual_seed(2)
    enc = build_encoder("resnet10", 3, width=8)
    for p in enc.parameters():
        torch.nn.init.normal_(p)
    state = {prefix + k: v.clone() for k, v in enc.state_dict().items()}
    path = tmp_path / f"rgb.{fmt}"
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, str(path))
    return str(path), {k[len(prefix) :]: v for k, v in state.items()}


@pytest.mark.parametrize(("fmt", "prefix"), [("safetensors", ""), ("pt", "encoder.")])
@pytest.mark.parametrize("strategy", ["repeat", "mean", "random"])
def test_load_encoder_weights(tmp_path, fmt: str, prefix: str, strategy: str) -> None:
    path, state = _pretrained_file(tmp_path, fmt=fmt, prefix=prefix)
    model = create_model("deeplabv3plus", in_channels=13, num_classes=4, encoder="resnet10", width=8, aspp_channels=8)
    record = load_encoder_weights(model, path, strategy=strategy)
    assert record == {
        "file": f"rgb.{fmt}",
        "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        "source": "file",
        "layout": "geoseg",
        "layout_title": "geoseg encoder (stem.0, layers.N, down)",
        "prefix": prefix,
        "encoder": None,
        "first_conv": "stem.0.weight",
        "adapt": strategy,
        "source_bands": 3,
        "bands": 13,
        "dropped_keys": 0,
        "ignored_keys": 0,
        "band_map": None,
    }
    own = model.encoder.state_dict()
    torch.testing.assert_close(own["layers.3.0.conv1.weight"], state["layers.3.0.conv1.weight"])
    if strategy == "random":
        torch.testing.assert_close(own["stem.0.weight"][:, :3], state["stem.0.weight"])
    else:
        torch.testing.assert_close(own["stem.0.weight"], adapt_first_conv(state["stem.0.weight"], 13, strategy))
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 13, 32, 32)).shape == (1, 4, 32, 32)


def test_load_encoder_weights_behind_spectral_stem(tmp_path) -> None:
    path, _ = _pretrained_file(tmp_path, fmt="safetensors")
    model = create_model("fcn8s", in_channels=100, num_classes=3, encoder="resnet10", width=8, spectral_reduction=3)
    assert load_encoder_weights(model, path)["adapt"] == "none"  # stem outputs 3 channels: no adaptation


def test_load_encoder_weights_mismatch_is_clear(tmp_path) -> None:
    path, _ = _pretrained_file(tmp_path, fmt="safetensors")
    wrong_depth = create_model("fcn8s", in_channels=4, num_classes=3, encoder="resnet18", width=8)
    with pytest.raises(CheckpointError, match=r"geoseg weights .* do not match this model's encoder.*missing \d+ key"):
        load_encoder_weights(wrong_depth, path)
    wrong_width = create_model("fcn8s", in_channels=4, num_classes=3, encoder="resnet10", width=16)
    with pytest.raises(CheckpointError, match=r"shapes differ.*stem\.0\.weight"):
        load_encoder_weights(wrong_width, path)
    with pytest.raises(InvalidParameterError, match=r"has no encoder to load pretrained weights into"):
        load_encoder_weights(create_model("unet", in_channels=4, num_classes=3, width=4), path)
    with pytest.raises(InputNotFoundError, match="encoder weights not found"):
        load_encoder_weights(wrong_depth, tmp_path / "nope.pt")
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "obj": datetime.date(2020, 1, 1)}, evil)  # a pickled object, not a tensor
    with pytest.raises(CheckpointError, match="refused to load"):
        load_encoder_weights(wrong_depth, evil)


def _public_resnet_state(encoder: torch.nn.Module, *, prefix: str = "") -> dict[str, torch.Tensor]:
    """A geoseg ResNet encoder's tensors under the torchvision/timm key names, plus a classifier (``fc``)."""
    out = {}
    for k, v in encoder.state_dict().items():
        k = k.replace("stem.0.", "conv1.").replace("stem.1.", "bn1.").replace(".down.", ".downsample.")
        if k.startswith("layers."):
            _, stage, rest = k.split(".", 2)
            k = f"layer{int(stage) + 1}.{rest}"
        out[prefix + k] = v.clone()
    out[prefix + "fc.weight"] = torch.zeros(10, encoder.channels[-1])
    out[prefix + "fc.bias"] = torch.zeros(10)
    return out


@pytest.mark.parametrize("prefix", ["", "model.", "backbone.", "encoder.", "module.", "net.backbone."])
def test_public_resnet_layout_with_any_prefix(tmp_path, prefix: str) -> None:
    torch.manual_seed(3)
    src = build_encoder("resnet50", 3, width=4)
    state = _public_resnet_state(src, prefix=prefix)
    state["decoder.head.weight"] = torch.zeros(2)  # outside the prefix (or an unknown key when there is none)
    if not prefix:
        del state["decoder.head.weight"]
    for k in [k for k in state if k.endswith("num_batches_tracked")]:  # old checkpoints lack the BN counters
        del state[k]
    save_file(state, str(tmp_path / "w.safetensors"))
    model = create_model("fcn8s", in_channels=3, num_classes=2, encoder="resnet50", width=4)
    record = load_encoder_weights(model, tmp_path / "w.safetensors")
    assert (record["layout"], record["prefix"], record["encoder"]) == ("resnet", prefix, "resnet50")
    assert record["dropped_keys"] == 2 and record["ignored_keys"] == (1 if prefix else 0) and record["adapt"] == "none"
    own, ref = model.encoder.state_dict(), src.state_dict()
    assert all(torch.equal(own[k], ref[k]) for k in ref if not k.endswith("num_batches_tracked"))


def test_public_layout_errors_name_what_was_expected(tmp_path) -> None:
    torch.manual_seed(4)
    r50 = tmp_path / "r50.pth"
    torch.save(_public_resnet_state(build_encoder("resnet50", 13, width=4)), r50)
    r18_model = create_model("deeplabv3", in_channels=13, num_classes=2, encoder="resnet18", width=4, aspp_channels=8)
    with pytest.raises(CheckpointError, match=r"holds a resnet50 .*encoder is resnet18.*encoder='resnet50'"):
        load_encoder_weights(r18_model, r50)
    wide = create_model("deeplabv3", in_channels=13, num_classes=2, encoder="resnet50", width=8, aspp_channels=8)
    with pytest.raises(CheckpointError, match=r"shapes differ.*another encoder width"):
        load_encoder_weights(wide, r50)
    odd = tmp_path / "odd.safetensors"
    save_file({"foo.weight": torch.zeros(2), "bar.bias": torch.zeros(2)}, str(odd))
    with pytest.raises(
        CheckpointError, match=r"fit no known encoder layout; expected one of geoseg: .*resnet: torchvision/timm ResNet"
    ):
        load_encoder_weights(r18_model, odd)
    deep = tmp_path / "resnet50d.safetensors"
    save_file({"conv1.0.weight": torch.zeros(2), "layer1.0.conv1.weight": torch.zeros(2)}, str(deep))
    with pytest.raises(CheckpointError, match=r"deep-stem ResNet .* smp-\* architecture"):
        load_encoder_weights(r18_model, deep)
    unknown_key = _public_resnet_state(build_encoder("resnet18", 3, width=4))
    unknown_key["layer1.0.se.fc1.weight"] = torch.zeros(1)  # an SE-ResNet: a key no rule maps
    save_file(unknown_key, str(tmp_path / "se.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"resnet weights .* unexpected 1 e\.g\. \['layer1\.0\.se\.fc1\.weight'\]"
    ):
        load_encoder_weights(r18_model, tmp_path / "se.safetensors")
    with pytest.raises(CheckpointError, match=r"is a directory"):
        load_encoder_weights(r18_model, tmp_path)


def test_band_names_match_filters_and_errors(tmp_path) -> None:
    weight = torch.randn(4, 3, 7, 7)
    out, mapping = adapt_first_conv_by_name(weight, ["B04", "B03", "B02"], ["b2", "B8", "B4"], "mean")
    torch.testing.assert_close(out[:, 0], weight[:, 2])
    torch.testing.assert_close(out[:, 1], weight.mean(1))  # B8 is not among the weights' bands
    torch.testing.assert_close(out[:, 2], weight[:, 0])
    assert mapping == {"b2": "B02", "B8": None, "B4": "B04"}
    with pytest.raises(InvalidParameterError, match=r"2 band name\(s\) given .* takes 3 band"):
        adapt_first_conv_by_name(weight, ["B1", "B2"], ["B1"])
    with pytest.raises(InvalidParameterError, match=r"band names repeat \['B01', 'B1'\]"):
        adapt_first_conv_by_name(weight, ["B1", "B01", "B2"], ["B1"])
    with pytest.raises(InvalidParameterError, match=r"no model band \(VV, VH\) is among the weights' bands"):
        adapt_first_conv_by_name(weight, ["B1", "B2", "B3"], ["VV", "VH"])
    path, _ = _pretrained_file(tmp_path, fmt="safetensors")
    model = create_model("fcn8s", in_channels=2, num_classes=3, encoder="resnet10", width=8)
    with pytest.raises(InvalidParameterError, match=r"needs the model's 2 band name\(s\) \(got None\)"):
        load_encoder_weights(model, path, weights_bands=["R", "G", "B"])
    record = load_encoder_weights(model, path, weights_bands=["R", "G", "B"], model_bands=["B", "NIR"])
    assert record["adapt"] == "by-name:repeat" and record["band_map"] == {"B": "B", "NIR": None}


def test_named_sources_need_their_library(tmp_path) -> None:
    model = create_model("fcn8s", in_channels=3, num_classes=2, encoder="resnet10", width=4)
    assert is_named_source("torchvision:resnet50") and is_named_source("timm:resnet50.a1_in1k")
    assert not is_named_source(tmp_path / "w.pth") and not is_named_source("weights.pth")
    with pytest.raises(InvalidParameterError, match=r"unknown first-layer adaptation strategy 'copy'"):
        load_encoder_weights(model, "torchvision:resnet50", strategy="copy")
    for lib in ("torchvision", "timm"):
        try:
            __import__(lib)
        except Exception:
            with pytest.raises(MissingDependencyError, match=rf"{lib}:resnet50 needs {lib}.*or pass a local file"):
                load_encoder_weights(model, f"{lib}:resnet50")
