"""Batch augmentations on tensors; image (B, C, H, W) and labels (B, H, W) are transformed together.

Geometric: ``flip``, ``rot90``, ``crop`` (random resized crop), ``elastic`` (smooth random displacement).
Radiometric (image only): ``spectral`` (per-band gain/offset jitter), ``bands`` (band dropout: a random fifth of the
bands set to their mean), ``blur`` (Gaussian).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from geoseg.errors import InvalidParameterError
from geoseg.train.labels import IGNORE_INDEX

IGNORE = IGNORE_INDEX  # the one ignore label of training (negative: never a class id)
AUGMENTATIONS = ("flip", "rot90", "crop", "spectral", "bands", "blur", "elastic")
DEFAULT_AUGMENTATIONS = ("flip", "rot90", "spectral")


def _coin(gen: torch.Generator, p: float = 0.5) -> bool:
    return bool(torch.rand(1, generator=gen).item() < p)


def flip(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if _coin(gen):
        x, y = x.flip(-1), y.flip(-1)
    if _coin(gen):
        x, y = x.flip(-2), y.flip(-2)
    return x, y


def rot90(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    k = int(torch.randint(0, 4, (1,), generator=gen).item())
    if k and x.shape[-1] == x.shape[-2]:
        x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
    return x, y


def _warp(x: torch.Tensor, y: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xw = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    yw = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    inside = F.grid_sample(torch.ones_like(y[:, None], dtype=torch.float32), grid, mode="nearest", align_corners=False)
    yw = torch.where(inside > 0.5, yw, torch.full_like(yw, IGNORE))
    return xw, yw[:, 0].round().long()


def _identity_grid(b: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    theta = torch.eye(2, 3, device=device).expand(b, 2, 3)
    return F.affine_grid(theta, [b, 1, h, w], align_corners=False)


def crop(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, scale: tuple[float, float] = (0.6, 1.0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random resized crop per sample (zoom in on a random sub-window, resampled to the chip size)."""
    b, _, h, w = x.shape
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(b, generator=gen)
    tx = (1 - s) * (2 * torch.rand(b, generator=gen) - 1)
    ty = (1 - s) * (2 * torch.rand(b, generator=gen) - 1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = s, s, tx, ty
    grid = F.affine_grid(theta.to(x.device), [b, 1, h, w], align_corners=False)
    return _warp(x, y, grid)


def elastic(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, alpha: float = 0.03, grid_cells: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Elastic deformation: a coarse random displacement field (``alpha`` of the chip size), smoothly upsampled."""
    b, _, h, w = x.shape
    coarse = alpha * 2 * (torch.rand((b, 2, grid_cells, grid_cells), generator=gen) - 0.5)
    disp = F.interpolate(coarse.to(x.device), size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    return _warp(x, y, _identity_grid(b, h, w, x.device) + disp)


def spectral(x: torch.Tensor, gen: torch.Generator, scale: float = 0.05) -> torch.Tensor:
    """Per-sample, per-band gain and offset noise (normalized units)."""
    b, c = x.shape[:2]
    gain = 1 + scale * torch.randn((b, c, 1, 1), generator=gen)
    offset = scale * torch.randn((b, c, 1, 1), generator=gen)
    return x * gain.to(x.device) + offset.to(x.device)


def band_dropout(x: torch.Tensor, gen: torch.Generator, p: float = 0.2) -> torch.Tensor:
    """Set each band of each sample to 0 (its mean, in normalized units) with probability ``p`` (never all bands),
    so the model cannot lean on a few bands whose values may shift elsewhere in the scene."""
    b, c = x.shape[:2]
    if c < 2:
        return x
    keep = torch.rand((b, c), generator=gen) >= p
    keep[keep.sum(1) == 0, 0] = True
    return x * keep[:, :, None, None].to(x.device, x.dtype)


def blur(x: torch.Tensor, gen: torch.Generator, max_sigma: float = 1.0) -> torch.Tensor:
    """Gaussian blur with a random sigma in (0, max_sigma], applied with probability 1/2."""
    if not _coin(gen):
        return x
    sigma = max(0.1, float(torch.rand(1, generator=gen)) * max_sigma)
    r = max(1, int(round(2 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def check_augmentations(names: Sequence[str] | bool | None) -> tuple[str, ...]:
    """Normalize an augmentation option: True -> defaults, False/None -> none, else validated names."""
    if names is True:
        return DEFAULT_AUGMENTATIONS
    if not names:
        return ()
    names = tuple(names.split(",")) if isinstance(names, str) else tuple(names)
    bad = [n for n in names if n not in AUGMENTATIONS]
    if bad:
        raise InvalidParameterError(f"unknown augmentation(s) {bad}; choose from {', '.join(AUGMENTATIONS)}")
    return names


def augment(
    x: torch.Tensor, y: torch.Tensor, names: Sequence[str], gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the named augmentations in a fixed order (geometric first, then radiometric)."""
    if "flip" in names:
        x, y = flip(x, y, gen)
    if "rot90" in names:
        x, y = rot90(x, y, gen)
    if "crop" in names:
        x, y = crop(x, y, gen)
    if "elastic" in names:
        x, y = elastic(x, y, gen)
    if "spectral" in names:
        x = spectral(x, gen)
    if "bands" in names:
        x = band_dropout(x, gen)
    if "blur" in names:
        x = blur(x, gen)
    return x, y
