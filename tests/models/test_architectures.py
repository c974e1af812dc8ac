"""Architecture specifics: encoders (ResNet / MobileNetV2), output strides, options and their errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geoseg.errors import InvalidParameterError, UnknownModelError
from geoseg.models import create_model, get_model_spec, model_stride
from geoseg.models.backbones import ENCODERS, InvertedResidual, MobileNetV2Encoder, build_encoder


@pytest.mark.parametrize("name", ["resnet10", "resnet18", "resnet34", "mobilenetv2"])
@pytest.mark.parametrize("dilate", [(False, False, False), (False, False, True), (False, True, True)])
def test_encoder_strides(name: str, dilate: tuple[bool, bool, bool]) -> None:
    enc = build_encoder(name, 7, width=8, dilate=dilate).eval()
    expected = 32 // 2 ** sum(dilate)
    assert enc.output_stride == expected and enc.strides[-1] == expected and len(enc.channels) == 4
    with torch.no_grad():
        feats = enc(torch.randn(1, 7, 64, 64))
    assert [f.shape[1] for f in feats] == enc.channels
    assert [64 // s for s in enc.strides] == [f.shape[-1] for f in feats]


def test_mobilenetv2_is_depthwise_separable() -> None:
    enc = build_encoder("mobilenetv2", 13, width=8)
    assert isinstance(enc, MobileNetV2Encoder)
    assert any(isinstance(m, InvertedResidual) for m in enc.modules())
    depthwise = [m for m in enc.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert set(ENCODERS) >= {"resnet18", "resnet34", "mobilenetv2"}


@pytest.mark.parametrize("name", ["fcn8s", "deeplabv3", "deeplabv3plus", "pspnet", "icnet", "deeplabv2"])
def test_mobilenetv2_encoder_selectable(name: str) -> None:
    kw = {"aspp_channels": 8} if name.startswith("deeplabv3") else {}
    model = create_model(name, in_channels=13, num_classes=4, encoder="mobilenetv2", width=8, **kw).eval()
    assert isinstance(model.encoder, MobileNetV2Encoder)
    s = model_stride(model, name)
    with torch.no_grad():
        assert model(torch.randn(1, 13, 2 * s, 2 * s)).shape == (1, 4, 2 * s, 2 * s)


@pytest.mark.parametrize("name", ["deeplabv2", "deeplab_largefov", "deeplabv3", "pspnet"])
@pytest.mark.parametrize("stride", [8, 16])
def test_dilated_output_stride(name: str, stride: int) -> None:
    model = create_model(name, in_channels=3, num_classes=2, width=4, encoder="resnet10", output_stride=stride)
    assert model_stride(model, name) == stride == model.encoder.output_stride


def test_deeplab_v2_rates_and_no_image_pooling() -> None:
    v2 = create_model("deeplabv2", in_channels=3, num_classes=2, width=4, head_channels=8)
    assert v2.rates == (6, 12, 18, 24) and len(v2.branches) == 4
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in v2.modules())
    fov = create_model("deeplab_largefov", in_channels=3, num_classes=2, width=4, head_channels=8, output_stride=16)
    assert fov.rates == (6,) and len(fov.branches) == 1
    assert get_model_spec("deeplabv2").output_stride == 8


def test_pspnet_pyramid_bins() -> None:
    model = create_model("pspnet", in_channels=3, num_classes=2, width=4, head_channels=8)
    bins = [m.output_size for m in model.ppm.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    assert bins == [1, 2, 3, 6]
    assert get_model_spec("pspnet").global_context


def test_segnet_unpools_with_indices() -> None:
    model = create_model("segnet", in_channels=3, num_classes=2, width=4, depth=2).eval()
    # odd sizes work too: unpooling restores the exact pre-pooling size
    with torch.no_grad():
        assert model(torch.randn(1, 3, 13, 19)).shape == (1, 2, 13, 19)


def test_unknown_encoder_is_a_clear_error() -> None:
    with pytest.raises(InvalidParameterError, match=r"unknown encoder 'vgg99'.*mobilenetv2"):
        create_model("deeplabv3", in_channels=3, num_classes=2, encoder="vgg99")
    with pytest.raises(InvalidParameterError, match=r"output_stride must be 8 or 16, got 4"):
        create_model("deeplabv2", in_channels=3, num_classes=2, output_stride=4)
    with pytest.raises(InvalidParameterError, match=r"cannot build model 'segnet' with options .*bogus.*segnet takes"):
        create_model("segnet", in_channels=3, num_classes=2, bogus=1)
    with pytest.raises(InvalidParameterError, match=r"SegNet depth must be 1..5"):
        create_model("segnet", in_channels=3, num_classes=2, depth=9)
    with pytest.raises(InvalidParameterError, match=r"encoder width must be a positive integer"):
        create_model("fcn8s", in_channels=3, num_classes=2, width=0)
    with pytest.raises(UnknownModelError, match=r"Did you mean icnet"):
        create_model("icnett", in_channels=3, num_classes=2)


def test_icnet_is_lighter_than_unet() -> None:
    icnet = create_model("icnet", in_channels=4, num_classes=5, encoder="mobilenetv2")
    unet = create_model("unet", in_channels=4, num_classes=5)
    n_icnet = sum(p.numel() for p in icnet.parameters())
    n_unet = sum(p.numel() for p in unet.parameters())
    assert n_icnet < n_unet / 2
