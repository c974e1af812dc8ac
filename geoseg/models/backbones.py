"""Native encoders that accept any number of input bands: ResNet-10/18/34 (basic blocks), ResNet-50/101/152
(bottleneck blocks) and MobileNetV2.

Every encoder has the same interface: ``stem`` (stride 2 or 4), ``layers`` (four stages ending at strides 4, 8, 16
and 32, or less where ``dilate`` keeps a stage's resolution), ``channels`` (per stage), ``strides`` and
``output_stride``; ``forward(x)`` returns the four stage outputs. Use :func:`build_encoder` to pick one by name.

The ResNets and MobileNetV2 compute exactly what torchvision's and timm's models of the same name compute (He et al.
2016, ResNet v1.5 with the stride on the 3x3 convolution; Sandler et al. 2018), so their public weights load with
:func:`geoseg.models.adapt.load_encoder_weights`; ``tests/ecosystem`` checks every stage against both libraries.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

Dilate = tuple[bool, bool, bool]


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


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce to ``planes``, 3x3 (stride, dilation), 1x1 expand to ``4 * planes``.

    The stride sits on the 3x3 convolution (ResNet v1.5, as in torchvision and timm).
    """

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# Blocks per stage; the deeper three use bottleneck blocks (4x wider stage outputs).
RESNET_DEPTHS: dict[str, Sequence[int]] = {
    "resnet10": (1, 1, 1, 1),
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
}
BOTTLENECK_DEPTHS = ("resnet50", "resnet101", "resnet152")


class _Encoder(nn.Module):
    name: str  # the build_encoder name, e.g. "resnet50"
    stem: nn.Module
    layers: nn.ModuleList
    channels: list[int]
    strides: list[int]
    output_stride: int

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class ResNetEncoder(_Encoder):
    """ResNet encoder for N input bands: basic blocks (ResNet-10/18/34) or bottlenecks (ResNet-50/101/152).

    ``width`` = stem channels (64 in the paper); stage ``i`` has ``width * 2**i`` channels (times 4 for
    bottlenecks). In a dilated stage the first block keeps the previous dilation and the others use the new one, as
    in torchvision's and timm's ``replace_stride_with_dilation`` / ``output_stride``.
    """

    def __init__(self, in_channels: int, *, depth: str = "resnet18", width: int = 64, dilate: Dilate = (False,) * 3):
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"unknown encoder depth {depth!r}; choose one of {', '.join(RESNET_DEPTHS)}")
        self.name = depth
        blocks = RESNET_DEPTHS[depth]
        bottleneck = depth in BOTTLENECK_DEPTHS
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        widths = [width, width * 2, width * 4, width * 8]
        layers = []
        cin, dilation, stride_total = width, 1, 4
        self.strides, self.channels = [], []
        for i, (n, planes) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            first_dilation = dilation
            if i > 0 and dilate[i - 1]:
                dilation *= stride
                stride = 1
            stride_total *= stride
            self.strides.append(stride_total)
            if bottleneck:
                cout = planes * Bottleneck.expansion
                mods: list[nn.Module] = [Bottleneck(cin, planes, stride=stride, dilation=first_dilation)]
                mods += [Bottleneck(cout, planes, dilation=dilation) for _ in range(n - 1)]
            else:
                cout = planes
                mods = [BasicBlock(cin, cout, stride=stride, dilation=dilation if stride == 1 else 1)]
                mods += [BasicBlock(cout, cout, dilation=dilation) for _ in range(n - 1)]
            layers.append(nn.Sequential(*mods))
            self.channels.append(cout)
            cin = cout
        self.layers = nn.ModuleList(layers)
        self.output_stride = stride_total


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion, depthwise 3x3, linear 1x1 projection; residual when shapes match."""

    def __init__(self, cin: int, cout: int, *, stride: int = 1, expand: int = 6, dilation: int = 1) -> None:
        super().__init__()
        hidden = cin * expand
        mods: list[nn.Module] = []
        if expand != 1:
            mods += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        mods += [
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=dilation, dilation=dilation, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*mods)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


# (expansion, channels at width 32, repeats, stride) per MobileNetV2 stage, grouped into the four encoder stages (the
# first inverted residual, expansion 1, is part of the stem).
_MBV2_STAGES: tuple[tuple[tuple[int, int, int, int], ...], ...] = (
    ((6, 24, 2, 2),),
    ((6, 32, 3, 2),),
    ((6, 64, 4, 2), (6, 96, 3, 1)),
    ((6, 160, 3, 2), (6, 320, 1, 1)),
)


def _scaled(c: int, mult: float, divisor: int = 4) -> int:
    return max(divisor, int(c * mult + divisor / 2) // divisor * divisor)


class MobileNetV2Encoder(_Encoder):
    """MobileNetV2 encoder (inverted residuals, depthwise-separable convolutions) for N input bands.

    ``width`` is the stem width (32 in the paper); every stage scales with ``width / 32``.
    """

    def __init__(self, in_channels: int, *, width: int = 32, dilate: Dilate = (False,) * 3) -> None:
        super().__init__()
        self.name = "mobilenetv2"
        mult = width / 32
        c0, c1 = _scaled(32, mult), _scaled(16, mult)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c0, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c0),
            nn.ReLU6(inplace=True),
            InvertedResidual(c0, c1, expand=1),
        )
        cin, dilation, stride_total = c1, 1, 2
        layers, self.channels, self.strides = [], [], []
        for i, stage in enumerate(_MBV2_STAGES):
            mods: list[nn.Module] = []
            for t, c, n, s in stage:
                cout = _scaled(c, mult)
                for j in range(n):
                    stride = s if j == 0 else 1
                    block_dilation = dilation
                    if stride == 2 and i > 0 and dilate[i - 1]:
                        stride, dilation = 1, dilation * 2
                    stride_total *= stride
                    mods.append(InvertedResidual(cin, cout, stride=stride, expand=t, dilation=block_dilation))
                    cin = cout
            layers.append(nn.Sequential(*mods))
            self.channels.append(cin)
            self.strides.append(stride_total)
        self.layers = nn.ModuleList(layers)
        self.output_stride = stride_total


ENCODERS = (*RESNET_DEPTHS, "mobilenetv2")


def build_encoder(
    name: str, in_channels: int, *, width: int | None = None, dilate: Dilate = (False, False, False)
) -> _Encoder:
    """Encoder ``name`` (one of :data:`ENCODERS`) for ``in_channels`` bands; ``width`` None = the encoder default.

    ``dilate[i]`` replaces the stride of stage ``i + 1`` by dilation (DeepLab output stride 16: ``(F, F, T)``,
    8: ``(F, T, T)``).
    """
    if width is not None and (not isinstance(width, int) or width < 1):
        raise ValueError(f"encoder width must be a positive integer, got {width!r}")
    if name in RESNET_DEPTHS:
        return ResNetEncoder(in_channels, depth=name, width=width or 64, dilate=dilate)
    if name == "mobilenetv2":
        return MobileNetV2Encoder(in_channels, width=width or 32, dilate=dilate)
    raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
