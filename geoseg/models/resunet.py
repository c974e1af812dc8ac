"""Residual U-Net (Zhang et al. 2018, "ResUNet"): U-Net whose units are pre-activation residual blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.models.registry import register_model


class ResidualUnit(nn.Module):
    """BN-ReLU-conv3x3 (stride s), BN-ReLU-conv3x3, plus a 1x1 conv-BN shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, *, stride: int = 1, preact: bool = True) -> None:
        super().__init__()
        first: list[nn.Module] = [nn.BatchNorm2d(cin), nn.ReLU(inplace=True)] if preact else []
        self.body = nn.Sequential(
            *first,
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class ResUNet(nn.Module):
    """``depth`` stride-2 residual units down (widths ``width * 2**i``), nearest upsampling + skip + residual unit up.

    Output stride ``2**depth``.
    """

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        if not 1 <= depth <= 6:
            raise ValueError(f"ResUNet depth must be 1..6, got {depth}")
        widths = [width * 2**i for i in range(depth + 1)]
        self.output_stride = 2**depth
        self.inc = ResidualUnit(in_channels, widths[0], preact=False)
        self.down = nn.ModuleList(ResidualUnit(widths[i], widths[i + 1], stride=2) for i in range(depth))
        self.up = nn.ModuleList(ResidualUnit(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth)))
        self.classifier = nn.Sequential(
            nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True), nn.Conv2d(widths[0], num_classes, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.up:
            skip = skips.pop()
            y = up(torch.cat([skip, F.interpolate(y, size=skip.shape[-2:], mode="nearest")], dim=1))
        return self.classifier(y)


@register_model("resunet", output_stride=16, family="unet", description="Residual U-Net (ResUNet), 4 levels, native")
def resunet(in_channels: int, num_classes: int, *, width: int = 32, depth: int = 4) -> nn.Module:
    return ResUNet(in_channels, num_classes, width=width, depth=depth)
