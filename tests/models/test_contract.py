"""One contract for every registered architecture (tiny widths so the whole file runs in seconds on CPU)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from geoseg.models import ModelConfig, create_model, list_models, load_checkpoint, model_stride, save_checkpoint
from geoseg.models.layers import auxiliary_outputs

# Smallest sensible build of each architecture; a registered model missing here must build with width=4.
TINY: dict[str, dict[str, Any]] = {
    "tiny": {"width": 4},
    "ssnet": {"width": 4, "spectral": 8},
    "unet": {"width": 4, "depth": 3},
    "resunet": {"width": 4, "depth": 3},
    "segnet": {"width": 4, "depth": 3},
    "fcdensenet": {"width": 8, "growth": 4, "layers": (1, 2, 2), "bottleneck": 2},
    "fcn8s": {"width": 4, "encoder": "resnet10"},
    "fcn16s": {"width": 4, "encoder": "resnet10"},
    "fcn32s": {"width": 4, "encoder": "resnet10"},
    "deeplabv3": {"width": 4, "encoder": "resnet10", "aspp_channels": 8},
    "deeplabv3plus": {"width": 4, "encoder": "resnet10", "aspp_channels": 8},
    "deeplabv2": {"width": 4, "encoder": "resnet10", "head_channels": 8, "output_stride": 16},
    "deeplab_largefov": {"width": 4, "encoder": "resnet10", "head_channels": 8},
    "pspnet": {"width": 4, "encoder": "resnet10", "head_channels": 8},
    "icnet": {"width": 4, "encoder": "resnet10", "branch_channels": 8},
    # smp-* on the smallest timm MobileNetV2 with narrow decoders
    "smp-unet": {"encoder": "mobilenetv2_035", "decoder_channels": [16, 8, 8, 8, 8]},
    "smp-unetplusplus": {"encoder": "mobilenetv2_035", "decoder_channels": [16, 8, 8, 8, 8]},
    "smp-manet": {"encoder": "mobilenetv2_035", "decoder_channels": [16, 8, 8, 8, 8], "decoder_pab_channels": 8},
    "smp-linknet": {"encoder": "mobilenetv2_035"},
    "smp-fpn": {"encoder": "mobilenetv2_035", "decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32},
    "smp-deeplabv3": {"encoder": "mobilenetv2_035", "decoder_channels": 16},
    "smp-deeplabv3plus": {"encoder": "mobilenetv2_035", "decoder_channels": 16},
    "smp-upernet": {"encoder": "mobilenetv2_035", "decoder_channels": 32},
    "smp-segformer": {"encoder": "mobilenetv2_035", "decoder_segmentation_channels": 16},
}
NAMES = [spec.name for spec in list_models()]
# Models that need an extra (smp-*) are ecosystem tests: they run in .venv-eco and skip where the extra is missing.
MODELS = [
    pytest.param(
        spec.name,
        marks=[pytest.mark.ecosystem, pytest.mark.skipif(not spec.available, reason=f"needs geoseg[{spec.extra}]")],
    )
    if spec.requires
    else spec.name
    for spec in list_models()
]
BIG_BANDS = ["tiny", "unet", "deeplabv3plus", "icnet"]  # the 200-band case, for a representative subset
NUM_CLASSES = 3


def build(name: str, in_channels: int, **extra: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, in_channels=in_channels, num_classes=NUM_CLASSES, **TINY.get(name, {"width": 4}), **extra)


def pad_to_stride(x: torch.Tensor, stride: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % stride, 0, -h % stride), mode="reflect")


def test_every_registered_model_has_a_tiny_build() -> None:
    assert set(TINY) <= set(NAMES)
    assert len(NAMES) >= 14


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("in_channels", [3, 13])
def test_forward_shape_odd_sizes(name: str, in_channels: int) -> None:
    model = build(name, in_channels).eval()
    stride = model_stride(model, name)
    assert stride == getattr(model, "output_stride", stride) and stride >= 1
    x = pad_to_stride(torch.randn(2, in_channels, 37, 45), stride)
    assert x.shape[-2] % stride == 0 and x.shape[-1] % stride == 0
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor)
    assert y.shape == (2, NUM_CLASSES, *x.shape[-2:])
    assert torch.isfinite(y).all()
    assert y[..., :37, :45].shape == (2, NUM_CLASSES, 37, 45)


@pytest.mark.parametrize("name", BIG_BANDS)
def test_hyperspectral_200_bands(name: str) -> None:
    model = build(name, 200).eval()
    x = pad_to_stride(torch.randn(1, 200, 33, 33), model_stride(model, name))
    with torch.no_grad():
        assert model(x).shape == (1, NUM_CLASSES, *x.shape[-2:])


@pytest.mark.parametrize("name", MODELS)
def test_gradients_flow_and_aux_outputs(name: str) -> None:
    model = build(name, 4).train()
    stride = model_stride(model, name)
    x = torch.randn(2, 4, max(stride * 2, 32), max(stride * 2, 32))
    target = torch.randint(0, NUM_CLASSES, (2, *x.shape[-2:]))
    logits = model(x)
    aux = auxiliary_outputs(model)
    loss = F.cross_entropy(logits, target) + sum(w * F.cross_entropy(a, target) for w, a in aux)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if name in ("pspnet", "icnet"):
        assert aux and all(a.shape == logits.shape for _, a in aux)
    model.eval()
    with torch.no_grad():
        model(x)
    assert auxiliary_outputs(model) == []


@pytest.mark.parametrize("name", MODELS)
def test_eval_deterministic_and_checkpoint_round_trip(name: str, tmp_path) -> None:
    model = build(name, 5).eval()
    x = pad_to_stride(torch.randn(1, 5, 40, 40), model_stride(model, name))
    with torch.no_grad():
        y1, y2 = model(x), model(x)
    assert torch.equal(y1, y2)
    config = ModelConfig(
        arch=name, bands=[f"b{i}" for i in range(5)], classes=["a", "b", "c"], arch_kwargs=dict(TINY.get(name, {}))
    )
    path = save_checkpoint(tmp_path / "m.safetensors", model, config)
    loaded, cfg = load_checkpoint(path)
    assert cfg.output_stride == model_stride(model, name)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), y1, rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("name", MODELS)
def test_cuda_matches_cpu(name: str, strict_fp32: None) -> None:
    model = build(name, 4).eval()
    x = pad_to_stride(torch.randn(1, 4, 40, 40), model_stride(model, name))
    with torch.no_grad():
        ref = model(x)
        out = model.cuda()(x.cuda())
    assert out.is_cuda and out.shape == ref.shape
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-3, atol=1e-3)


def test_ssnet_pixel_fuse_averages_the_two_heads_and_trains_the_pixel_head() -> None:
    """With ``pixel_fuse`` the prediction is the log of the weighted mean of the fused and per-pixel heads'
    probabilities, and ``forward_pixels`` returns the per-pixel head's logits; bad values are refused."""
    net = build("ssnet", 5, spectral_aux=0.5, pixel_fuse=0.25).eval()
    x = torch.randn(2, 5, 16, 16)
    with torch.no_grad():
        s = net.spectral(x)
        plain = net.pixel_fuse
        net.pixel_fuse = 0.0
        fused_head = net(x).softmax(1)
        net.pixel_fuse = plain
        expected = (0.75 * fused_head + 0.25 * net.spectral_head(s).softmax(1)).log()
        torch.testing.assert_close(net(x), expected)
        px = x[:, :, 3, 4]
        torch.testing.assert_close(net.forward_pixels(px), net.spectral_head(net.spectral(x))[:, :, 3, 4])
    with pytest.raises(ValueError, match="spectral_aux"):
        build("ssnet", 5, spectral_aux=-0.5)
    with pytest.raises(ValueError, match="pixel_fuse"):
        build("ssnet", 5, spectral_aux=0.5, pixel_fuse=1.5)
