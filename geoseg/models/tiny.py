"""A tiny fully convolutional network for tests, demos and CPU smoke runs (small receptive field, stride 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.models.layers import conv_bn_relu
from geoseg.models.registry import register_model


class TinyFCN(nn.Module):
    """conv -> pool -> 2 conv -> bilinear up -> fuse with full-res features -> 1x1 classifier.

    Receptive field about 15 px (radius 7): a 16-px halo makes tiled prediction exact.
    """

    output_stride = 2
    receptive_field = 15

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 16) -> None:
        super().__init__()
        self.enc1 = conv_bn_relu(in_channels, width)
        self.enc2 = nn.Sequential(conv_bn_relu(width, width * 2), conv_bn_relu(width * 2, width * 2))
        self.head = nn.Sequential(conv_bn_relu(width * 3, width, k=1), nn.Conv2d(width, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.enc1(x)
        f2 = self.enc2(F.max_pool2d(f1, 2))
        up = F.interpolate(f2, size=f1.shape[-2:], mode="nearest")
        return self.head(torch.cat([f1, up], dim=1))


@register_model("tiny", output_stride=2, family="fcn", description="tiny 3-layer FCN for tests and CPU demos")
def tiny(in_channels: int, num_classes: int, *, width: int = 16) -> nn.Module:
    return TinyFCN(in_channels, num_classes, width=width)
