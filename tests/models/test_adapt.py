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

from geoseg.errors import CheckpointError, InputNotFoundError, InvalidParameterError
from geoseg.models import create_model
from geoseg.models.adapt import adapt_first_conv, load_encoder_weights
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
