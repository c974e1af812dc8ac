"""ICNet (Zhao et al. 2018): image cascade network, the light model for CPU and real-time use.

Three branches see the image at full, 1/2 and 1/4 resolution: the heavy encoder runs only on the small ones (its first
stages shared between them), a three-conv branch keeps full-resolution detail, and cascade feature fusion (CFF) units
merge them coarse to fine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.models.backbones import build_encoder
from geoseg.models.layers import conv_bn_relu
from geoseg.models.registry import register_model


class CascadeFeatureFusion(nn.Module):
    """Upsample ``low`` 2x, dilated 3x3 conv-BN; 1x1 conv-BN on ``high``; sum + ReLU. Also class scores of ``low``."""

    def __init__(self, c_low: int, c_high: int, cout: int, num_classes: int) -> None:
        super().__init__()
        self.low = nn.Sequential(nn.Conv2d(c_low, cout, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(cout))
        self.high = nn.Sequential(nn.Conv2d(c_high, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.aux = nn.Conv2d(c_low, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = F.interpolate(low, size=high.shape[-2:], mode="bilinear", align_corners=False)
        return F.relu(self.low(low) + self.high(high)), self.aux(low)


class ICNet(nn.Module):
    """ICNet on any :func:`~geoseg.models.backbones.build_encoder` encoder (ResNet-18 by default; MobileNetV2 works).

    * 1/2 image: encoder stem + stages 1-2 -> features at 1/16;
    * 1/4 (those features pooled 2x): dilated stages 3-4 + summed pyramid pooling -> 1/32;
    * full image: three stride-2 conv-BN-ReLU -> 1/8.
    CFF(1/32, 1/16) then CFF(., 1/8), classifier at 1/8, bilinear to input size. Output stride 32. In train mode the
    two CFF auxiliary scores (weights 0.4, 0.4 as in the paper's cascade label guidance) are stored in
    ``aux_outputs`` at input size; see :func:`geoseg.models.layers.auxiliary_outputs`.
    """

    output_stride = 32
    aux_weights = (0.4, 0.4)

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        encoder: str = "resnet18",
        width: int | None = None,
        branch_channels: int = 64,
        bins: tuple[int, ...] = (1, 2, 3, 6),
    ) -> None:
        super().__init__()
        self.encoder = build_encoder(encoder, in_channels, width=width, dilate=(False, True, True))
        c = self.encoder.channels
        w = branch_channels
        self.sub1 = nn.Sequential(
            conv_bn_relu(in_channels, max(4, w // 2), stride=2),
            conv_bn_relu(max(4, w // 2), max(4, w // 2), stride=2),
            conv_bn_relu(max(4, w // 2), w, stride=2),
        )
        self.bins = tuple(bins)
        self.reduce = conv_bn_relu(c[3], 2 * w, k=1)
        self.cff_32_16 = CascadeFeatureFusion(2 * w, c[1], 2 * w, num_classes)
        self.cff_16_8 = CascadeFeatureFusion(2 * w, w, 2 * w, num_classes)
        self.classifier = nn.Conv2d(2 * w, num_classes, 1)
        self.aux_outputs: list[torch.Tensor] = []

    def _pyramid_sum(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        out = x
        for b in self.bins:
            out = out + F.interpolate(F.adaptive_avg_pool2d(x, b), size=size, mode="bilinear", align_corners=False)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        half = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False, recompute_scale_factor=False)
        enc = self.encoder
        f16 = enc.layers[1](enc.layers[0](enc.stem(half)))
        f32 = F.avg_pool2d(f16, 3, stride=2, padding=1, count_include_pad=False)
        f32 = self.reduce(self._pyramid_sum(enc.layers[3](enc.layers[2](f32))))
        y16, aux32 = self.cff_32_16(f32, f16)
        y8, aux16 = self.cff_16_8(y16, self.sub1(x))
        out = F.interpolate(self.classifier(y8), size=size, mode="bilinear", align_corners=False)
        self.aux_outputs = []
        if self.training:
            self.aux_outputs = [
                F.interpolate(a, size=size, mode="bilinear", align_corners=False) for a in (aux32, aux16)
            ]
        return out


@register_model(
    "icnet",
    output_stride=32,
    family="icnet",
    global_context=True,
    description="ICNet: multi-resolution cascade with cascade feature fusion; light, fast (CPU / real time)",
)
def icnet(in_channels: int, num_classes: int, **kw: object) -> nn.Module:
    return ICNet(in_channels, num_classes, **kw)  # type: ignore[arg-type]
