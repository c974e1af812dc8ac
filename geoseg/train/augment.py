"""Batch augmentations on tensors (image (B,C,H,W) and label (B,H,W) transformed together)."""

from __future__ import annotations

import torch


def flips_rot90(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal/vertical flips and 90-degree rotations, per batch."""
    if torch.rand(1, generator=gen).item() < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    if torch.rand(1, generator=gen).item() < 0.5:
        x, y = x.flip(-2), y.flip(-2)
    k = int(torch.randint(0, 4, (1,), generator=gen).item())
    if k:
        x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
    return x, y


def spectral_jitter(x: torch.Tensor, gen: torch.Generator, scale: float = 0.05) -> torch.Tensor:
    """Per-sample, per-band gain and offset noise (normalized units)."""
    b, c = x.shape[:2]
    gain = 1 + scale * torch.randn((b, c, 1, 1), generator=gen)
    offset = scale * torch.randn((b, c, 1, 1), generator=gen)
    return x * gain.to(x.device) + offset.to(x.device)


AUGMENTATIONS = ("flip", "spectral")
