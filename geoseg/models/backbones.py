"""Native encoders that accept any number of input bands."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


RESNET_DEPTHS: dict[str, Sequence[int]] = {"resnet10": (1, 1, 1, 1), "resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


class ResNetEncoder(nn.Module):
    """ResNet-18/34-style encoder for N input bands.

    Returns features at strides 4, 8, 16, 32 (or less with ``dilate``: layers listed there keep their resolution
    and use dilated convolutions instead, as DeepLab does for output stride 8/16).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        depth: str = "resnet18",
        width: int = 64,
        dilate: tuple[bool, bool, bool] = (False, False, False),
    ) -> None:
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"unknown encoder depth {depth!r}; choose one of {', '.join(RESNET_DEPTHS)}")
        blocks = RESNET_DEPTHS[depth]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        widths = [width, width * 2, width * 4, width * 8]
        self.channels = widths
        layers = []
        cin, dilation, stride_total = width, 1, 4
        self.strides = []
        for i, (n, cout) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            if i > 0 and dilate[i - 1]:
                dilation *= stride
                stride = 1
            stride_total *= stride
            self.strides.append(stride_total)
            mods = [BasicBlock(cin, cout, stride=stride, dilation=dilation if stride == 1 else 1)]
            mods += [BasicBlock(cout, cout, dilation=dilation) for _ in range(n - 1)]
            layers.append(nn.Sequential(*mods))
            cin = cout
        self.layers = nn.ModuleList(layers)
        self.output_stride = stride_total

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats
