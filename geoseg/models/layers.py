"""Small building blocks shared by the native architectures."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, k: int = 3, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def separable_conv_bn_relu(cin: int, cout: int, *, dilation: int = 1) -> nn.Sequential:
    """Depthwise-separable 3x3 convolution (depthwise then pointwise), as in DeepLab v3+ and MobileNet."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize (no-op when already the right size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def bilinear_kernel(channels: int, kernel: int) -> torch.Tensor:
    """Weights that make a ConvTranspose2d start as bilinear upsampling (FCN initialisation)."""
    factor = (kernel + 1) // 2
    center = factor - 1 if kernel % 2 == 1 else factor - 0.5
    og = torch.arange(kernel, dtype=torch.float32)
    filt = 1 - torch.abs(og - center) / factor
    w2d = filt[:, None] * filt[None, :]
    weight = torch.zeros(channels, channels, kernel, kernel)
    for c in range(channels):
        weight[c, c] = w2d
    return weight


def auxiliary_outputs(model: nn.Module) -> list[tuple[float, torch.Tensor]]:
    """``(weight, logits)`` pairs of the auxiliary heads from ``model``'s last train-mode forward (else ``[]``).

    Models with deep supervision (PSPNet, ICNet) keep ``forward`` returning one logits tensor, so every model has the
    same contract, and set ``aux_outputs`` (logits at input size) and ``aux_weights`` during a train-mode forward.
    Training adds them to the loss::

        logits = model(x)
        loss = criterion(logits, y) + sum(w * criterion(a, y) for w, a in auxiliary_outputs(model))

    Eval-mode forwards clear them, so no graph is kept alive during inference. Wrappers (the spectral stem) forward
    the attributes of the model they wrap.
    """
    outs = getattr(model, "aux_outputs", None) or []
    weights = getattr(model, "aux_weights", ()) or ()
    return [(float(w), o) for w, o in zip(weights, outs)]
