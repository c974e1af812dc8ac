"""geoseg's encoders compute what torchvision's and timm's compute, once their state dicts are loaded from files.

The references are the libraries' own models (random seeded weights; nothing is downloaded) and their own feature
extractors (``torchvision.models.feature_extraction``, ``timm.create_model(..., features_only=True)``). Every
parameter and BatchNorm statistic is randomised, so a mapping that swaps two layers cannot pass by symmetry.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ecosystem_utils import ecosystem_import
from safetensors.torch import save_file
from torch import nn

torchvision = ecosystem_import("torchvision")
timm = ecosystem_import("timm")

from torchvision.models.feature_extraction import create_feature_extractor  # noqa: E402

from geoseg.models import create_model  # noqa: E402
from geoseg.models.adapt import load_encoder_weights  # noqa: E402

pytestmark = pytest.mark.ecosystem

TOL = 1e-5
TV_NODES = {
    "resnet18": ["layer1", "layer2", "layer3", "layer4"],
    "resnet34": ["layer1", "layer2", "layer3", "layer4"],
    "resnet50": ["layer1", "layer2", "layer3", "layer4"],
    "mobilenet_v2": ["features.3", "features.6", "features.13", "features.17"],
}
GEOSEG_ENCODER = {"resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50", "mobilenet_v2": "mobilenetv2"}
TIMM_ENCODER = {"resnet18": "resnet18", "resnet50": "resnet50", "mobilenetv2_100": "mobilenetv2"}


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Seeded random weights, BatchNorm affine and running statistics all away from their defaults; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.num_batches_tracked.fill_(7)
    return model.eval()


def save_state(model: nn.Module, path: Path, *, prefix: str = "") -> Path:
    state = {prefix + k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, str(path))
    return path


def geoseg_features(encoder: str, path: Path, in_channels: int, **kw: object) -> tuple[nn.Module, dict, nn.Module]:
    """(encoder, record, model) of an FCN-8s (undilated encoder) whose encoder was loaded from ``path``."""
    torch.manual_seed(123)  # geoseg's own init must not matter: every encoder tensor comes from the file
    model = create_model("fcn8s", in_channels=in_channels, num_classes=3, encoder=encoder)
    record = load_encoder_weights(model, path, **kw)
    model.eval()
    return model.encoder, record, model


def assert_stages_equal(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    assert len(ours) == len(ref) == 4
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape, f"stage {i}: {tuple(a.shape)} vs {tuple(b.shape)}"
        scale = max(1.0, float(b.abs().max()))
        err = float((a - b).abs().max())
        assert err <= TOL * scale, f"stage {i}: max |difference| {err:.3g} exceeds {TOL} x {scale:.3g}"


@pytest.mark.parametrize(
    ("name", "fmt", "prefix"),
    [
        ("resnet18", "pth", ""),
        ("resnet34", "safetensors", "backbone."),
        ("resnet50", "safetensors", ""),
        ("resnet50", "pth", "model."),
        ("mobilenet_v2", "pth", ""),
        ("mobilenet_v2", "safetensors", "encoder."),
    ],
)
def test_torchvision_stages_equal(tmp_path, name: str, fmt: str, prefix: str) -> None:
    ref_model = randomise(torchvision.models.get_model(name, weights=None), seed=1)
    path = save_state(ref_model, tmp_path / f"{name}.{fmt}", prefix=prefix)
    encoder, record, _ = geoseg_features(GEOSEG_ENCODER[name], path, 3)
    extractor = create_feature_extractor(ref_model, return_nodes=TV_NODES[name]).eval()
    x = torch.randn(2, 3, 96, 80, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = list(extractor(x).values())
        ours = encoder(x)
    assert_stages_equal(ours, ref)
    layout = "resnet" if name.startswith("resnet") else "torchvision-mobilenetv2"
    assert record["layout"] == layout and record["prefix"] == prefix and record["adapt"] == "none"
    assert record["encoder"] == GEOSEG_ENCODER[name] and record["dropped_keys"] >= 2  # fc / classifier (+ head conv)


@pytest.mark.parametrize(("name", "prefix"), [("resnet18", ""), ("resnet50", "model."), ("mobilenetv2_100", "")])
def test_timm_stages_equal(tmp_path, name: str, prefix: str) -> None:
    full = randomise(timm.create_model(name, pretrained=False), seed=3)
    path = save_state(full, tmp_path / f"{name}.safetensors", prefix=prefix)
    features = timm.create_model(name, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4)).eval()
    features.load_state_dict({k: v for k, v in full.state_dict().items() if k in features.state_dict()}, strict=True)
    encoder, record, _ = geoseg_features(TIMM_ENCODER[name], path, 3)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert_stages_equal(encoder(x), features(x))
    assert record["layout"] == ("resnet" if name.startswith("resnet") else "timm-mobilenetv2")


@pytest.mark.parametrize(("tv_dilation", "output_stride"), [([False, False, True], 16), ([False, True, True], 8)])
def test_dilated_resnet50_matches_torchvision(tmp_path, tv_dilation: list[bool], output_stride: int) -> None:
    """DeepLab's dilated encoder equals torchvision's ``replace_stride_with_dilation`` ResNet-50."""
    ref_model = randomise(torchvision.models.resnet50(weights=None, replace_stride_with_dilation=tv_dilation), seed=5)
    path = save_state(ref_model, tmp_path / "r50.pth")
    model = create_model("deeplabv3plus", in_channels=3, num_classes=2, encoder="resnet50", output_stride=output_stride)
    load_encoder_weights(model, path)
    extractor = create_feature_extractor(ref_model, return_nodes=TV_NODES["resnet50"]).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert_stages_equal(model.eval().encoder(x), list(extractor(x).values()))


def test_dilated_mobilenetv2_matches_timm_output_stride(tmp_path) -> None:
    full = randomise(timm.create_model("mobilenetv2_100", pretrained=False), seed=7)
    path = save_state(full, tmp_path / "mbv2.safetensors")
    ref = timm.create_model("mobilenetv2_100", features_only=True, out_indices=(1, 2, 3, 4), output_stride=8).eval()
    ref.load_state_dict({k: v for k, v in full.state_dict().items() if k in ref.state_dict()}, strict=True)
    model = create_model("pspnet", in_channels=3, num_classes=2, encoder="mobilenetv2", output_stride=8)
    load_encoder_weights(model, path)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        assert_stages_equal(model.eval().encoder(x), ref(x))


def test_sentinel2_13_band_timm_resnet50_loads_unchanged(tmp_path) -> None:
    """TorchGeo's Sentinel-2 ResNet-50s are timm ResNet-50s with 13 input bands: on a 13-band model nothing adapts."""
    full = randomise(timm.create_model("resnet50", pretrained=False, in_chans=13, num_classes=0), seed=9)
    path = save_state(full, tmp_path / "ssl4eo_s2_resnet50.pth", prefix="backbone.")
    ref = timm.create_model("resnet50", pretrained=False, in_chans=13, features_only=True, out_indices=(1, 2, 3, 4))
    ref.load_state_dict(full.state_dict(), strict=True)
    encoder, record, _ = geoseg_features("resnet50", path, 13)
    x = torch.randn(1, 13, 64, 64, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        assert_stages_equal(encoder(x), ref.eval()(x))
    assert record["adapt"] == "none" and record["source_bands"] == record["bands"] == 13
    assert record["prefix"] == "backbone." and record["dropped_keys"] == 0


def test_band_names_select_the_weights_filters(tmp_path) -> None:
    """4 raster bands matched by name to a 13-band file = the 13-band model on an input zero outside those bands."""
    s2 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    full = randomise(timm.create_model("resnet50", pretrained=False, in_chans=13), seed=11)
    path = save_state(full, tmp_path / "s2.safetensors")
    ref = timm.create_model("resnet50", pretrained=False, in_chans=13, features_only=True, out_indices=(1, 2, 3, 4))
    ref.load_state_dict({k: v for k, v in full.state_dict().items() if k in ref.state_dict()}, strict=True)
    raster_bands = ["B08", "B04", "B03", "B02"]  # another order and zero-padded names
    encoder, record, _ = geoseg_features("resnet50", path, 4, weights_bands=s2, model_bands=raster_bands)
    x4 = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(12))
    x13 = torch.zeros(1, 13, 64, 64)
    for j, band in enumerate(["B8", "B4", "B3", "B2"]):
        x13[:, s2.index(band)] = x4[:, j]
    with torch.no_grad():
        assert_stages_equal(encoder(x4), ref.eval()(x13))
    assert record["adapt"] == "by-name:repeat"
    assert record["band_map"] == {"B08": "B8", "B04": "B4", "B03": "B3", "B02": "B2"}


@pytest.mark.parametrize(("source", "encoder"), [("torchvision", "resnet50"), ("timm", "mobilenetv2_100")])
def test_smp_timm_encoder_loads_public_weights(tmp_path, source: str, encoder: str) -> None:
    """An smp model's timm encoder takes torchvision/timm files (prefixed or not) and equals the reference."""
    ecosystem_import("segmentation_models_pytorch")
    if source == "torchvision":
        full = randomise(torchvision.models.resnet50(weights=None), seed=13)
    else:
        full = randomise(timm.create_model(encoder, pretrained=False), seed=13)
    path = save_state(full, tmp_path / "w.pth", prefix="encoder.")
    ref = timm.create_model(encoder, pretrained=False, features_only=True).eval()
    ref.load_state_dict({k: v for k, v in full.state_dict().items() if k in ref.state_dict()}, strict=True)
    model = create_model("smp-fpn", in_channels=3, num_classes=2, encoder=encoder)
    record = load_encoder_weights(model, path)
    assert record["layout"] == "timm" and record["prefix"] == "encoder." and record["dropped_keys"] >= 2
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        ours = model.eval().timm_encoder(x)
        for a, b in zip(ours, ref(x)):
            torch.testing.assert_close(a, b, rtol=TOL, atol=TOL * max(1.0, float(b.abs().max())))
