"""Segmentation losses with an ignore index: cross entropy, class-weighted CE, soft Dice and CE+Dice."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.errors import InvalidParameterError
from geoseg.train.labels import IGNORE_INDEX
from geoseg.train.names import LOSSES

IGNORE = IGNORE_INDEX  # the one ignore label of training (negative: never a class id)


def class_weights(counts: np.ndarray) -> torch.Tensor:
    """Median-frequency balancing weights from per-class pixel counts (absent classes get weight 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    freq = counts / max(counts.sum(), 1)
    present = freq > 0
    w = np.zeros_like(freq)
    w[present] = np.median(freq[present]) / freq[present]
    return torch.tensor(w, dtype=torch.float32)


def soft_dice(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over classes present in the batch (ignored pixels excluded)."""
    n = logits.shape[1]
    valid = target != ignore_index
    probs = torch.softmax(logits, 1) * valid[:, None]
    onehot = F.one_hot(torch.where(valid, target, 0), n).permute(0, 3, 1, 2).float() * valid[:, None]
    inter = (probs * onehot).sum((0, 2, 3))
    denom = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = (2 * inter + eps) / (denom + eps)
    present = onehot.sum((0, 2, 3)) > 0
    return 1 - (dice[present].mean() if present.any() else dice.mean())


def make_loss(name: str, *, weights: torch.Tensor | None = None, ignore_index: int = IGNORE) -> Callable:
    """Loss by name: ``ce``, ``weighted_ce``, ``dice`` or ``ce_dice``."""

    def ce(logits: torch.Tensor, target: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        if not (target != ignore_index).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, weight=w, ignore_index=ignore_index)

    if name == "ce":
        return lambda lo, t: ce(lo, t)
    if name == "weighted_ce":
        if weights is None:
            raise InvalidParameterError("weighted_ce needs class weights (computed from label frequencies)")
        return lambda lo, t: ce(lo, t, weights.to(lo.device))
    if name == "dice":
        return lambda lo, t: soft_dice(lo, t, ignore_index)
    if name == "ce_dice":
        return lambda lo, t: ce(lo, t) + soft_dice(lo, t, ignore_index)
    if name == "focal":
        return lambda lo, t: focal(lo, t, ignore_index)
    raise InvalidParameterError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


def focal(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): cross entropy down-weighting well-classified pixels."""
    valid = target != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    logp = F.log_softmax(logits, 1)
    t = torch.where(valid, target, 0)
    lp = logp.gather(1, t[:, None])[:, 0]
    loss = -((1 - lp.exp()) ** gamma) * lp
    return loss[valid].mean()
