"""Spectral-spatial network: a per-pixel spectral path beside a small multi-scale spatial-context path.

Pixel classifiers (random forests, per-pixel MLPs) are hard to beat on multispectral and hyperspectral scenes
because each pixel's spectrum carries most of the class; convolutional networks add spatial context but, trained on
few labelled pixels, tend to blur spectra and memorise layout. This architecture keeps both, in the spirit of the
two-branch spectral-spatial networks of the hyperspectral literature (e.g. Zhang et al., "Spectral-spatial
classification of hyperspectral imagery using a dual-channel CNN", Remote Sensing Letters 2017; Hong et al.,
"SpectralFormer", IEEE TGRS 2022, for the per-pixel spectral path):

* **spectral path** (full resolution): two 1x1 convolutions, i.e. an MLP applied to every pixel's spectrum; cost
  grows with the band count but not with context;
* **context path**: strided 3x3 convolutions on the spectral features down to 1/2**depth resolution, upsampled back
  with a 1x1 merge at each level (a light U-Net), giving a receptive field of about 2**(depth + 2) px;
* **head**: the two concatenated, dropout, a 1x1 hidden layer and the 1x1 classifier;
* **per-pixel head**: a 1x1 classifier on the spectral features alone, trained as an auxiliary output on the chips
  (loss weight ``spectral_aux``, default 0.5) and, with ``pixel_fuse`` = w > 0 (default 0.5), as what
  ``forward_pixels`` trains on pixels drawn across the whole training area; the prediction (eval mode) is
  log((1 - w) softmax(head) + w softmax(per-pixel head)): an average of the two classifiers' probabilities, a
  two-member ensemble, so the pixel classifier, which generalises across a scene as a random forest does, is kept
  where the context path learnt a layout of the training region that does not transfer to another region
  (measured in ``benchmarks/accuracy.py``). ``spectral_aux=0, pixel_fuse=0`` gives the plain two-path network.

Normalisation is per pixel over channels (``norm="ln"``, a LayerNorm across channels as in ConvNeXt), so training and
prediction compute the same function whatever the batch size, there are no running statistics to go stale, and a
tiled prediction equals a whole-image one (the output of each pixel depends only on its receptive field).
``norm="bn"`` (BatchNorm) and ``"none"`` are available for comparison.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.models.registry import register_model

NORMS = ("ln", "bn", "none")


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W), per pixel, with a learned per-channel scale and shift."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "ln":
        return ChannelNorm(channels)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def _conv(cin: int, cout: int, k: int, norm: str, *, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=norm == "none"), _norm(norm, cout), nn.GELU()
    )


def receptive_field(depth: int) -> int:
    """Receptive field in pixels of :class:`SpectralSpatialNet` with ``depth`` levels (exact for its layers)."""
    r, jump = 1, 1
    for _ in range(depth):  # stride-2 3x3 conv, then a 3x3 conv at the new resolution
        r += 2 * jump
        jump *= 2
        r += 2 * jump
    for _ in range(depth):  # decoder: 3x3 conv at each level before upsampling (bilinear spans one coarse pixel)
        r += 2 * jump + jump
        jump //= 2
    return r


class SpectralSpatialNet(nn.Module):
    """Per-pixel spectral MLP + multi-scale context; see the module docstring. Output stride 2**depth (padding only:
    the output is at full resolution)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        spectral: int = 32,
        width: int = 32,
        depth: int = 3,
        dropout: float = 0.1,
        norm: str = "ln",
        context_dropout: float = 0.5,
        spectral_aux: float = 0.5,
        pixel_fuse: float = 0.5,
    ) -> None:
        super().__init__()
        if not 0 <= pixel_fuse <= 1 or spectral_aux < 0:
            raise ValueError(f"pixel_fuse must be in [0, 1] and spectral_aux >= 0, got {pixel_fuse}, {spectral_aux}")
        # weight of the per-pixel head's probabilities in the prediction; when > 0, forward_pixels trains that head
        # (a pure per-pixel classifier) instead of the fused head with the context set to 0
        self.pixel_fuse = pixel_fuse
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if not 1 <= depth <= 5:
            raise ValueError(f"depth must be 1..5, got {depth}")
        if spectral < 1 or width < 1 or not 0 <= dropout < 1 or not 0 <= context_dropout < 1:
            raise ValueError("spectral and width must be >= 1 channels, dropout and context_dropout in [0, 1)")
        self.context_dropout = context_dropout
        self.aux_weights: tuple[float, ...] = (spectral_aux,) if spectral_aux else ()
        self.aux_outputs: list[torch.Tensor] = []
        self.output_stride = 2**depth
        self.receptive_field = receptive_field(depth)
        # full resolution layers carry no normalisation: they are 1x1 convolutions on standardized bands, and a
        # per-pixel norm at full resolution would cost more than the convolutions themselves
        self.spectral = nn.Sequential(_conv(in_channels, spectral, 1, "none"), _conv(spectral, spectral, 1, "none"))
        widths = [spectral] + [width * (2 + i) // 2 for i in range(depth)]  # e.g. 32, 48, 64
        self.down = nn.ModuleList(
            nn.Sequential(
                _conv(widths[i], widths[i + 1], 3, norm, stride=2), _conv(widths[i + 1], widths[i + 1], 3, norm)
            )
            for i in range(depth)
        )
        # decoder: at each level a 3x3 conv, then upsample and merge (1x1) with the next finer level's features
        self.smooth = nn.ModuleList(_conv(widths[i + 1], widths[i + 1], 3, norm) for i in range(depth))
        self.merge = nn.ModuleList(
            _conv(
                widths[i + 1] + (widths[i] if i > 0 else 0), widths[i] if i > 0 else width, 1, norm if i > 0 else "none"
            )
            for i in range(depth)
        )
        self.head = nn.Sequential(
            nn.Dropout2d(dropout) if dropout else nn.Identity(),
            _conv(spectral + width, spectral, 1, "none"),
            nn.Conv2d(spectral, num_classes, 1),
        )
        self.spectral_head = nn.Conv2d(spectral, num_classes, 1) if spectral_aux or pixel_fuse else None
        self.context_channels = width  # channels the context path hands the head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spectral(x)
        feats = [s]
        for down in self.down:
            feats.append(down(feats[-1]))
        y = feats[-1]
        for i in reversed(range(len(self.down))):
            y = self.smooth[i](y)
            finer = feats[i]
            y = F.interpolate(y, size=finer.shape[-2:], mode="bilinear", align_corners=False)
            y = self.merge[i](torch.cat([y, finer], 1) if i > 0 else y)
        if self.training and self.context_dropout:
            keep = (torch.rand(y.shape[0], 1, 1, 1, device=y.device) >= self.context_dropout).to(y.dtype)
            y = y * keep / (1 - self.context_dropout)
        if self.aux_weights and self.spectral_head is not None:
            self.aux_outputs = [self.spectral_head(s)] if self.training else []
        out = self.head(torch.cat([s, y], 1))
        if self.pixel_fuse and self.spectral_head is not None and not self.training:
            w = self.pixel_fuse
            p = (1 - w) * out.float().softmax(1) + w * self.spectral_head(s).float().softmax(1)
            return p.clamp_min(1e-8).log().to(out.dtype)
        return out

    def forward_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, classes) of N single pixels (N, bands) from their spectra alone (context set to 0): the
        per-pixel classifier inside the network, trained on pixels drawn across the whole training area."""
        s = self.spectral(x[:, :, None, None])
        if self.pixel_fuse and self.spectral_head is not None:
            return self.spectral_head(s)[:, :, 0, 0]
        ctx = s.new_zeros((s.shape[0], self.context_channels, 1, 1))
        return self.head(torch.cat([s, ctx], 1))[:, :, 0, 0]


@register_model(
    "ssnet",
    output_stride=8,
    family="spectral-spatial",
    description="spectral-spatial net: per-pixel spectral MLP beside a multi-scale context path (default, 2+ bands)",
)
def ssnet(
    in_channels: int,
    num_classes: int,
    *,
    spectral: int = 32,
    width: int = 32,
    depth: int = 3,
    dropout: float = 0.1,
    norm: str = "ln",
    context_dropout: float = 0.5,
    spectral_aux: float = 0.5,
    pixel_fuse: float = 0.5,
) -> nn.Module:
    return SpectralSpatialNet(
        in_channels,
        num_classes,
        spectral=spectral,
        width=width,
        depth=depth,
        dropout=dropout,
        norm=norm,
        context_dropout=context_dropout,
        spectral_aux=spectral_aux,
        pixel_fuse=pixel_fuse,
    )
