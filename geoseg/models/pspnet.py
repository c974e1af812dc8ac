"""PSPNet (Zhao et al. 2017): pyramid pooling module on a dilated encoder, with an auxiliary training head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.models.backbones import build_encoder
from geoseg.models.layers import conv_bn_relu
from geoseg.models.registry import register_model

_DILATE = {8: (False, True, True), 16: (False, False, True)}


class PyramidPooling(nn.Module):
    """Average-pool to ``bins`` x ``bins`` grids, 1x1 conv-BN-ReLU each, upsample and concatenate with the input."""

    def __init__(self, cin: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        branch = max(1, cin // len(bins))
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), conv_bn_relu(cin, branch, k=1)) for b in bins
        )
        self.out_channels = cin + branch * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(s(x), size=size, mode="bilinear", align_corners=False) for s in self.stages]
        return torch.cat([x, *pooled], dim=1)


class PSPNet(nn.Module):
    """Dilated encoder (output stride 8 or 16) + pyramid pooling (bins 1/2/3/6) + 3x3 head.

    Auxiliary head on the stride-16 stage (the paper's res4b22): in train mode ``forward`` still returns the main
    logits and stores the auxiliary logits (input size) in ``aux_outputs`` with weight 0.4 in ``aux_weights``; see
    :func:`geoseg.models.layers.auxiliary_outputs`.
    """

    aux_weights = (0.4,)

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        encoder: str = "resnet18",
        width: int | None = None,
        output_stride: int = 8,
        bins: tuple[int, ...] = (1, 2, 3, 6),
        head_channels: int = 128,
        aux: bool = True,
    ) -> None:
        super().__init__()
        if output_stride not in _DILATE:
            raise ValueError(f"PSPNet output_stride must be 8 or 16, got {output_stride}")
        self.encoder = build_encoder(encoder, in_channels, width=width, dilate=_DILATE[output_stride])
        self.output_stride = output_stride
        c = self.encoder.channels
        self.ppm = PyramidPooling(c[3], tuple(bins))
        self.head = nn.Sequential(
            conv_bn_relu(self.ppm.out_channels, head_channels),
            nn.Dropout2d(0.1),
            nn.Conv2d(head_channels, num_classes, 1),
        )
        self.aux_head = (
            nn.Sequential(
                conv_bn_relu(c[2], max(8, head_channels // 2)),
                nn.Dropout2d(0.1),
                nn.Conv2d(max(8, head_channels // 2), num_classes, 1),
            )
            if aux
            else None
        )
        self.aux_outputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feats = self.encoder(x)
        y = F.interpolate(self.head(self.ppm(feats[3])), size=size, mode="bilinear", align_corners=False)
        self.aux_outputs = []
        if self.training and self.aux_head is not None:
            aux = self.aux_head(feats[2])
            self.aux_outputs = [F.interpolate(aux, size=size, mode="bilinear", align_corners=False)]
        return y


@register_model(
    "pspnet",
    output_stride=8,
    family="pspnet",
    global_context=True,
    description="PSPNet: dilated ResNet-18 + pyramid pooling (1/2/3/6 bins), auxiliary loss head",
)
def pspnet(in_channels: int, num_classes: int, **kw: object) -> nn.Module:
    return PSPNet(in_channels, num_classes, **kw)  # type: ignore[arg-type]
