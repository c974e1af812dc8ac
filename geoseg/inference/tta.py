"""Test-time augmentation: the model's class probabilities averaged over the dihedral group D4 (flips and 90°
rotations of each tile), as in the segmentation competitions' standard practice (e.g. Buslaev et al.,
"Albumentations", Information 2020, and the ``ttach`` library's D4 transform set).

Each transform is undone on the output before averaging, so every pixel's probability is the mean of the model's
answers to the same neighbourhood seen in eight orientations (four flips for non-square tiles). Land cover has no
preferred orientation, so this removes some of the model's orientation-specific errors at 8x (4x) the forward
cost. The tiles themselves do not change, so seam handling (overlap, centre crop) is exact as without it: a tiled
prediction equals the whole-image prediction wherever the model's output stride divides the tile origins.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Transform = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def _rot(k: int) -> Transform:
    return (lambda t: torch.rot90(t, k, (-2, -1)), lambda t: torch.rot90(t, -k, (-2, -1)))


def _flip(dims: tuple[int, ...]) -> Transform:
    return (lambda t: torch.flip(t, dims), lambda t: torch.flip(t, dims))


def _flip_rot(k: int) -> Transform:
    return (
        lambda t: torch.rot90(torch.flip(t, (-1,)), k, (-2, -1)),
        lambda t: torch.flip(torch.rot90(t, -k, (-2, -1)), (-1,)),
    )


def d4_transforms(square: bool) -> list[Transform]:
    """(forward, inverse) pairs on ``(..., rows, cols)`` tensors: the 8 elements of D4 for square inputs, the 4
    flips (identity, left-right, up-down, both) otherwise (a 90° rotation would change the shape)."""
    if not square:
        return [_flip(()), _flip((-1,)), _flip((-2,)), _flip((-2, -1))]
    return [_rot(0), _rot(1), _rot(2), _rot(3), _flip_rot(0), _flip_rot(1), _flip_rot(2), _flip_rot(3)]


class D4Average(nn.Module):
    """Wraps a model ``(N, bands, rows, cols) -> (N, classes, rows, cols)`` logits so its output is the log of the
    class probabilities averaged over :func:`d4_transforms` of the input (log-probabilities: their argmax and
    softmax are those of the averaged probabilities). Classes the wrapped model rules out (probability 0) stay 0."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net
        self.output_stride = getattr(net, "output_stride", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        transforms = d4_transforms(x.shape[-2] == x.shape[-1])
        logp = [back(torch.log_softmax(self.net(forward(x)).float(), 1)) for forward, back in transforms]
        return torch.logsumexp(torch.stack(logp), 0) - math.log(len(transforms))
