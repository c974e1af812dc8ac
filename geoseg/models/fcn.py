"""FCN-32s/16s/8s (Long et al. 2015) on a ResNet or MobileNetV2 encoder, learned transposed-conv upsampling."""

from __future__ import annotations

import torch
from torch import nn

from geoseg.models.backbones import build_encoder
from geoseg.models.layers import bilinear_kernel
from geoseg.models.registry import register_model


def _upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 2 * factor))
    return up


class FCN(nn.Module):
    """FCN with skip connections: 32s (none), 16s (stride-16 skip), 8s (stride-16 and stride-8 skips).

    ``encoder`` is any :func:`~geoseg.models.backbones.build_encoder` name (resnet18, resnet34, mobilenetv2, ...).

    Scores at stride 32 are upsampled by learned transposed convolutions (initialised bilinear) and summed with
    1x1 score layers on the shallower features, then upsampled to the input size.
    """

    output_stride = 32

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        variant: str = "8s",
        encoder: str = "resnet18",
        width: int | None = None,
    ) -> None:
        super().__init__()
        if variant not in ("32s", "16s", "8s"):
            raise ValueError(f"FCN variant must be 32s, 16s or 8s, got {variant!r}")
        self.variant = variant
        self.encoder = build_encoder(encoder, in_channels, width=width)
        c = self.encoder.channels
        self.score32 = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(c[3], num_classes, 1))
        if variant in ("16s", "8s"):
            self.score16 = nn.Conv2d(c[2], num_classes, 1)
            self.up32to16 = _upsampler(num_classes, 2)
        if variant == "8s":
            self.score8 = nn.Conv2d(c[1], num_classes, 1)
            self.up16to8 = _upsampler(num_classes, 2)
        final = {"32s": 32, "16s": 16, "8s": 8}[variant]
        self.up_final = _upsampler(num_classes, final)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, f8, f16, f32 = self.encoder(x)
        y = self.score32(f32)
        if self.variant != "32s":
            y = self.up32to16(y)[..., : f16.shape[-2], : f16.shape[-1]] + self.score16(f16)
        if self.variant == "8s":
            y = self.up16to8(y)[..., : f8.shape[-2], : f8.shape[-1]] + self.score8(f8)
        return self.up_final(y)[..., : x.shape[-2], : x.shape[-1]]


for _v in ("32s", "16s", "8s"):

    def _factory(in_channels: int, num_classes: int, *, _variant: str = _v, **kw: object) -> nn.Module:
        return FCN(in_channels, num_classes, variant=_variant, **kw)  # type: ignore[arg-type]

    register_model(
        f"fcn{_v}",
        output_stride=32,
        family="fcn",
        description=f"FCN-{_v} on a ResNet-18 (or MobileNetV2) encoder, learned transposed-conv upsampling",
    )(_factory)
