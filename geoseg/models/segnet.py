"""SegNet (Badrinarayanan et al. 2017): VGG-style encoder whose max-pooling indices drive the decoder's unpooling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.models.layers import conv_bn_relu
from geoseg.models.registry import register_model

_CONVS = (2, 2, 3, 3, 3)  # convolutions per VGG-16 stage


def _stage(cin: int, cout: int, n: int) -> nn.Sequential:
    return nn.Sequential(*(conv_bn_relu(cin if i == 0 else cout, cout) for i in range(n)))


class SegNet(nn.Module):
    """``depth`` encoder stages (conv-BN-ReLU x n, 2x2 max-pool keeping the argmax indices) mirrored by a decoder that
    unpools with those indices (sparse upsampling, no learned upsampling weights) then convolves.

    Output stride is ``2**depth``; unpooling restores the exact pre-pooling size, so odd sizes work as well.
    """

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 32, depth: int = 5) -> None:
        super().__init__()
        if not 1 <= depth <= 5:
            raise ValueError(f"SegNet depth must be 1..5, got {depth}")
        widths = [width * min(2**i, 8) for i in range(depth)]
        convs = _CONVS[:depth]
        self.output_stride = 2**depth
        self.enc = nn.ModuleList(
            _stage(in_channels if i == 0 else widths[i - 1], widths[i], convs[i]) for i in range(depth)
        )
        dec = []
        for i in reversed(range(depth)):
            cout = widths[i - 1] if i > 0 else widths[0]
            mods = [conv_bn_relu(widths[i], widths[i]) for _ in range(convs[i] - 1)] + [conv_bn_relu(widths[i], cout)]
            dec.append(nn.Sequential(*mods))
        self.dec = nn.ModuleList(dec)
        self.classifier = nn.Conv2d(widths[0], num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stack = []
        for enc in self.enc:
            x = enc(x)
            size = x.shape[-2:]
            x, idx = F.max_pool2d(x, 2, stride=2, ceil_mode=True, return_indices=True)
            stack.append((idx, size))
        for dec in self.dec:
            idx, size = stack.pop()
            x = dec(F.max_unpool2d(x, idx, (2, 2), stride=(2, 2), output_size=size))
        return self.classifier(x)


@register_model(
    "segnet", output_stride=32, family="segnet", description="SegNet: VGG-style encoder, pooling-index decoder"
)
def segnet(in_channels: int, num_classes: int, *, width: int = 32, depth: int = 5) -> nn.Module:
    return SegNet(in_channels, num_classes, width=width, depth=depth)
