"""FC-DenseNet "Tiramisu" (Jegou et al. 2017): dense blocks in a U-shaped encoder-decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.models.registry import register_model


class DenseLayer(nn.Sequential):
    def __init__(self, cin: int, growth: int, dropout: float) -> None:
        super().__init__(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, growth, 3, padding=1), nn.Dropout2d(dropout)
        )


class DenseBlock(nn.Module):
    """``n`` layers, each fed the concatenation of the block input and all previous layers' outputs.

    Returns input + new features, or only the new features (``new_only``, used on the upsampling path so the number
    of channels does not explode).
    """

    def __init__(self, cin: int, growth: int, n: int, *, dropout: float, new_only: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth, dropout) for i in range(n))
        self.new_only = new_only
        self.out_channels = n * growth if new_only else cin + n * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = []
        for layer in self.layers:
            out = layer(x)
            x = torch.cat([x, out], dim=1)
            new.append(out)
        return torch.cat(new, dim=1) if self.new_only else x


class FCDenseNet(nn.Module):
    """Tiramisu: 3x3 stem, dense block + transition down (BN-ReLU-1x1-dropout-maxpool) per level, a bottleneck dense
    block, then transposed-conv transition up + skip + dense block per level, and a 1x1 classifier.

    ``layers`` gives the number of dense layers per level (paper's FC-DenseNet56: five levels of 4, growth 12,
    bottleneck 4; the defaults here are that model, about 1.4 M parameters, fine on CPU). Output stride
    ``2**len(layers)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        width: int = 48,
        growth: int = 12,
        layers: tuple[int, ...] = (4, 4, 4, 4, 4),
        bottleneck: int = 4,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if not layers or min(layers) < 1 or bottleneck < 1:
            raise ValueError(f"FC-DenseNet needs >= 1 level and >= 1 layer per block, got layers={layers}")
        self.output_stride = 2 ** len(layers)
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.down_blocks, self.trans_down = nn.ModuleList(), nn.ModuleList()
        c, skips = width, []
        for n in layers:
            block = DenseBlock(c, growth, n, dropout=dropout)
            c = block.out_channels
            skips.append(c)
            self.down_blocks.append(block)
            self.trans_down.append(
                nn.Sequential(
                    nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c, 1), nn.Dropout2d(dropout), nn.MaxPool2d(2)
                )
            )
        self.bottleneck = DenseBlock(c, growth, bottleneck, dropout=dropout, new_only=True)
        prev = self.bottleneck.out_channels
        self.trans_up, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(layers))):
            self.trans_up.append(nn.ConvTranspose2d(prev, prev, 3, stride=2, padding=1, output_padding=1))
            block = DenseBlock(prev + skips[i], growth, layers[i], dropout=dropout, new_only=i > 0)
            self.up_blocks.append(block)
            prev = block.out_channels
        self.classifier = nn.Conv2d(prev, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips = []
        for block, down in zip(self.down_blocks, self.trans_down):
            x = block(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for up, block in zip(self.trans_up, self.up_blocks):
            skip = skips.pop()
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:  # odd sizes: pad/crop to the skip
                x = F.pad(x, (0, skip.shape[-1] - x.shape[-1], 0, skip.shape[-2] - x.shape[-2]))
            x = block(torch.cat([x, skip], dim=1))
        return self.classifier(x)


@register_model(
    "fcdensenet",
    output_stride=32,
    family="densenet",
    description="FC-DenseNet (Tiramisu), FC-DenseNet56 layout by default (growth 12, 5 levels of 4 layers)",
)
def fcdensenet(in_channels: int, num_classes: int, **kw: object) -> nn.Module:
    return FCDenseNet(in_channels, num_classes, **kw)  # type: ignore[arg-type]
