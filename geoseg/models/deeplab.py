"""DeepLab v2 (ASPP-L, LargeFOV), v3 (ASPP with image pooling) and v3+ (encoder-decoder) on a dilated encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.models.backbones import build_encoder
from geoseg.models.layers import conv_bn_relu, resize_to, separable_conv_bn_relu
from geoseg.models.registry import register_model

_DILATE = {8: (False, True, True), 16: (False, False, True)}


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3 branches and global image pooling, with BN."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, int, int], *, separable: bool = False) -> None:
        super().__init__()
        branch = (
            (lambda r: separable_conv_bn_relu(cin, cout, dilation=r))
            if separable
            else (lambda r: conv_bn_relu(cin, cout, dilation=r))
        )
        self.branches = nn.ModuleList([conv_bn_relu(cin, cout, k=1)] + [branch(r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(inplace=True))
        self.project = nn.Sequential(conv_bn_relu(cout * 5, cout, k=1), nn.Dropout2d(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(outs, dim=1))


class DeepLabV3(nn.Module):
    """DeepLab v3 (``plus=False``) or v3+ (``plus=True``: decoder fusing stride-4 features)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        plus: bool = False,
        output_stride: int = 16,
        encoder: str = "resnet18",
        width: int | None = None,
        aspp_channels: int = 128,
    ) -> None:
        super().__init__()
        if output_stride not in _DILATE:
            raise ValueError(f"DeepLab output_stride must be 8 or 16, got {output_stride}")
        self.encoder = build_encoder(encoder, in_channels, width=width, dilate=_DILATE[output_stride])
        self.output_stride = output_stride
        rates = (12, 24, 36) if output_stride == 8 else (6, 12, 18)
        c = self.encoder.channels
        self.aspp = ASPP(c[3], aspp_channels, rates, separable=plus)
        self.plus = plus
        if plus:
            self.low = conv_bn_relu(c[0], 48, k=1)
            self.decoder = nn.Sequential(
                separable_conv_bn_relu(aspp_channels + 48, aspp_channels),
                separable_conv_bn_relu(aspp_channels, aspp_channels),
            )
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f4, _, _, f_last = self.encoder(x)
        y = self.aspp(f_last)
        if self.plus:
            y = self.decoder(torch.cat([resize_to(y, f4.shape[-2:]), self.low(f4)], dim=1))
        return F.interpolate(self.classifier(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model(
    "deeplabv3",
    output_stride=16,
    family="deeplab",
    global_context=True,
    description="DeepLab v3: dilated ResNet-18 + ASPP with image pooling (output stride 16 or 8)",
)
def deeplabv3(in_channels: int, num_classes: int, **kw: object) -> nn.Module:
    return DeepLabV3(in_channels, num_classes, plus=False, **kw)  # type: ignore[arg-type]


@register_model(
    "deeplabv3plus",
    output_stride=16,
    family="deeplab",
    global_context=True,
    description="DeepLab v3+: ASPP encoder + stride-4 decoder, depthwise-separable convolutions",
)
def deeplabv3plus(in_channels: int, num_classes: int, **kw: object) -> nn.Module:
    return DeepLabV3(in_channels, num_classes, plus=True, **kw)  # type: ignore[arg-type]


class _V2Branch(nn.Sequential):
    """One DeepLab v2 branch: dilated 3x3 ("fc6"), 1x1 ("fc7"), 1x1 classifier, with dropout."""

    def __init__(self, cin: int, hidden: int, num_classes: int, rate: int) -> None:
        super().__init__(
            nn.Conv2d(cin, hidden, 3, padding=rate, dilation=rate),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),
            nn.Conv2d(hidden, num_classes, 1),
        )


class DeepLabV2(nn.Module):
    """DeepLab v2 ASPP (class scores of dilated 3x3 branches summed, no image pooling) or LargeFOV (one branch).

    Rates are those of the paper at output stride 8 (ASPP-L 6/12/18/24, LargeFOV 12) and halved at 16 so the field
    of view in input pixels stays the same.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        rates: tuple[int, ...] = (6, 12, 18, 24),
        output_stride: int = 8,
        encoder: str = "resnet18",
        width: int | None = None,
        head_channels: int = 256,
    ) -> None:
        super().__init__()
        if output_stride not in _DILATE:
            raise ValueError(f"DeepLab output_stride must be 8 or 16, got {output_stride}")
        self.encoder = build_encoder(encoder, in_channels, width=width, dilate=_DILATE[output_stride])
        self.output_stride = output_stride
        cin = self.encoder.channels[3]
        self.rates = tuple(r if output_stride == 8 else max(1, r // 2) for r in rates)
        self.branches = nn.ModuleList(_V2Branch(cin, head_channels, num_classes, r) for r in self.rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(x)[-1]
        y = self.branches[0](f)
        for branch in self.branches[1:]:
            y = y + branch(f)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model(
    "deeplabv2",
    output_stride=8,
    family="deeplab",
    description="DeepLab v2: dilated ResNet-18 + ASPP-L (sum of rate 6/12/18/24 branches, output stride 8 or 16)",
)
def deeplabv2(in_channels: int, num_classes: int, **kw: object) -> nn.Module:
    return DeepLabV2(in_channels, num_classes, rates=(6, 12, 18, 24), **kw)  # type: ignore[arg-type]


@register_model(
    "deeplab_largefov",
    output_stride=8,
    family="deeplab",
    description="DeepLab LargeFOV: dilated ResNet-18 + one rate-12 3x3 head (output stride 8 or 16)",
)
def deeplab_largefov(in_channels: int, num_classes: int, **kw: object) -> nn.Module:
    return DeepLabV2(in_channels, num_classes, rates=(12,), **kw)  # type: ignore[arg-type]
