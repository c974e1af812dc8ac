"""DeepLab v3 (ASPP with image pooling) and v3+ (encoder-decoder, separable convolutions) on a dilated ResNet."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.models.backbones import ResNetEncoder
from geoseg.models.layers import conv_bn_relu, resize_to, separable_conv_bn_relu
from geoseg.models.registry import register_model

_DILATE = {8: (False, True, True), 16: (False, False, True)}


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3 branches and global image pooling, with BN."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, int, int], *, separable: bool = False) -> None:
        super().__init__()
        branch = (lambda r: separable_conv_bn_relu(cin, cout, dilation=r)) if separable else (
            lambda r: conv_bn_relu(cin, cout, dilation=r)
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
        width: int = 64,
        aspp_channels: int = 128,
    ) -> None:
        super().__init__()
        if output_stride not in _DILATE:
            raise ValueError(f"DeepLab output_stride must be 8 or 16, got {output_stride}")
        self.encoder = ResNetEncoder(in_channels, depth=encoder, width=width, dilate=_DILATE[output_stride])
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
    "deeplabv3", output_stride=16, family="deeplab", global_context=True,
    description="DeepLab v3: dilated ResNet-18 + ASPP with image pooling (output stride 16 or 8)",
)
def deeplabv3(in_channels: int, num_classes: int, **kw: object) -> nn.Module:
    return DeepLabV3(in_channels, num_classes, plus=False, **kw)  # type: ignore[arg-type]


@register_model(
    "deeplabv3plus", output_stride=16, family="deeplab", global_context=True,
    description="DeepLab v3+: ASPP encoder + stride-4 decoder, depthwise-separable convolutions",
)
def deeplabv3plus(in_channels: int, num_classes: int, **kw: object) -> nn.Module:
    return DeepLabV3(in_channels, num_classes, plus=True, **kw)  # type: ignore[arg-type]
