"""U-Net (Ronneberger et al. 2015) with configurable depth and width."""

from __future__ import annotations

import torch
from torch import nn

from geoseg.models.layers import conv_bn_relu
from geoseg.models.registry import register_model


def _double(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(cin, cout), conv_bn_relu(cout, cout))


def receptive_field(depth: int) -> int:
    """Receptive field in pixels of :class:`UNet` with ``depth`` poolings (exact for its layers: two 3x3
    convolutions per level, 2x2 max-pooling down, 2x2 stride-2 transposed convolutions up, which widen nothing)."""
    r, jump = 5, 1  # the two full-resolution 3x3 convolutions
    for _ in range(depth):
        r += jump  # 2x2 pooling
        jump *= 2
        r += 4 * jump
    for _ in range(depth):
        jump //= 2
        r += 4 * jump
    return r


class UNet(nn.Module):
    """Encoder-decoder with skip connections; ``depth`` poolings, so output stride = 2**depth."""

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        if not 1 <= depth <= 6:
            raise ValueError(f"U-Net depth must be 1..6, got {depth}")
        widths = [width * 2**i for i in range(depth + 1)]
        self.output_stride = 2**depth
        # the tiled prediction's overlap (halo = half of it per side) must cover it for tiles to equal one whole image
        self.receptive_field = receptive_field(depth)
        self.inc = _double(in_channels, widths[0])
        self.down = nn.ModuleList(_double(widths[i], widths[i + 1]) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.dec = nn.ModuleList(_double(widths[i] * 2, widths[i]) for i in reversed(range(depth)))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(self.pool(skips[-1])))
        y = skips.pop()
        for up, dec in zip(self.up, self.dec):
            y = dec(torch.cat([skips.pop(), up(y)], dim=1))
        return self.classifier(y)


@register_model(
    "unet", output_stride=16, family="unet", description="U-Net, 4 levels, native (any band count; default for 1 band)"
)
def unet(in_channels: int, num_classes: int, *, width: int = 32, depth: int = 4) -> nn.Module:
    return UNet(in_channels, num_classes, width=width, depth=depth)
