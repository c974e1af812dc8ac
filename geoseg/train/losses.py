"""Segmentation losses with an ignore index: cross entropy (optionally class-weighted, label-smoothed), soft Dice,
CE+Dice and focal; and class weights from label frequencies."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.errors import InvalidParameterError
from geoseg.train.labels import IGNORE_INDEX
from geoseg.train.names import LOSSES

IGNORE = IGNORE_INDEX  # the one ignore label of training (negative: never a class id)


#: largest ratio between two automatic class weights
MAX_WEIGHT_RATIO = 10.0


def balanced_class_weights(
    counts: Sequence[int] | np.ndarray, *, power: float = 0.5, max_ratio: float = MAX_WEIGHT_RATIO
) -> torch.Tensor:
    """Class weights from per-class training pixel counts: ``(median frequency / frequency) ** power``, capped so
    no weight exceeds ``max_ratio`` times the smallest, then scaled so the mean weight per training pixel is 1.

    ``power=1`` without a cap is median-frequency balancing (Eigen & Fergus 2015); it lets a class with a handful of
    pixels dominate the loss (a 22-pixel class against 4,080 weighs ~190x and gets over-predicted), so the default
    takes the square root and caps the range. Absent classes get weight 0 (they never occur as targets).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise InvalidParameterError("class pixel counts must be a 1-D array of non-negative numbers")
    freq = counts / max(counts.sum(), 1)
    present = freq > 0
    w = np.zeros_like(freq)
    if not present.any():
        return torch.tensor(w, dtype=torch.float32)
    w[present] = (np.median(freq[present]) / freq[present]) ** power
    w[present] = np.minimum(w[present], w[present].min() * max_ratio)
    w[present] /= (w[present] * freq[present]).sum()
    return torch.tensor(w, dtype=torch.float32)


def check_class_weights(weights: Sequence[float], classes: Sequence[str]) -> None:
    """Refuse user class weights that are not one finite, non-negative number per class (not all zero)."""
    try:
        w = np.asarray([float(v) for v in weights], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(f"class weights must be numbers, one per class; got {weights!r}") from exc
    if w.shape != (len(classes),):
        raise InvalidParameterError(
            f"{w.size} class weight(s) given for {len(classes)} classes ({', '.join(classes)}); give one per class"
        )
    if not np.isfinite(w).all() or (w < 0).any() or not (w > 0).any():
        raise InvalidParameterError(f"class weights must be finite, >= 0 and not all 0; got {w.tolist()}")


def soft_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE,
    eps: float = 1.0,
    *,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in the batch (ignored pixels excluded; Milletari et al. 2016).

    ``logits`` are ``(N, classes, *spatial)`` (chips ``(N, C, H, W)`` or per-pixel ``(N, C)``) and ``target`` the
    class ids ``(N, *spatial)``; the sums run over every pixel of the batch. ``weights`` (one per class) make it a
    weighted mean over the present classes; a batch whose present classes all weigh 0 gives 0 (no gradient).
    """
    n = logits.shape[1]
    flat = logits.movedim(1, -1).reshape(-1, n)
    t = target.reshape(-1)
    valid = t != ignore_index
    probs = torch.softmax(flat, 1) * valid[:, None]
    onehot = F.one_hot(torch.where(valid, t, 0), n).float() * valid[:, None]
    inter = (probs * onehot).sum(0)
    denom = probs.sum(0) + onehot.sum(0)
    dice = (2 * inter + eps) / (denom + eps)
    present = (onehot.sum(0) > 0).float()
    if not present.any():
        present = torch.ones_like(present)
    w = present if weights is None else present * weights.to(dice.device, dice.dtype)
    if not (w > 0).any():
        return logits.sum() * 0.0
    return 1 - (w * dice).sum() / w.sum()


def _no_weighted_target(target: torch.Tensor, weights: torch.Tensor | None, ignore_index: int) -> bool:
    """Whether no pixel of ``target`` counts: all ignored, or all of classes weighing 0 (a weighted mean would be
    0/0 = NaN and poison the weights)."""
    valid = target != ignore_index
    if not valid.any():
        return True
    return weights is not None and not bool((weights.to(target.device)[target[valid]] > 0).any())


def make_loss(
    name: str, *, weights: torch.Tensor | None = None, ignore_index: int = IGNORE, label_smoothing: float = 0.0
) -> Callable:
    """Loss by name: ``ce``, ``weighted_ce``, ``dice``, ``ce_dice`` or ``focal``.

    ``weights`` (one per class) weigh every loss: the cross-entropy terms of ``ce``, ``ce_dice`` and ``weighted_ce``
    (which requires them), each class's Dice in the mean of ``dice`` and ``ce_dice``, and each pixel's term of
    ``focal`` (its class's weight, as the alpha of Lin et al. 2017). A batch without a pixel of positive weight
    gives a loss of 0 (no update) rather than NaN. ``label_smoothing`` (Szegedy et al. 2016) applies to the
    cross-entropy terms.
    """

    def w_on(lo: torch.Tensor) -> torch.Tensor | None:
        return weights.to(lo.device) if weights is not None else None

    def ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = w_on(logits)
        if _no_weighted_target(target, w, ignore_index):
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, weight=w, ignore_index=ignore_index, label_smoothing=label_smoothing)

    def dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_dice(logits, target, ignore_index, weights=w_on(logits))

    if name in ("ce", "weighted_ce"):
        if name == "weighted_ce" and weights is None:
            raise InvalidParameterError("weighted_ce needs class weights (computed from label frequencies)")
        return ce
    if name == "dice":
        return dice
    if name == "ce_dice":
        return lambda lo, t: ce(lo, t) + dice(lo, t)
    if name == "focal":
        return lambda lo, t: focal(lo, t, ignore_index, weights=w_on(lo))
    raise InvalidParameterError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


def focal(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE,
    gamma: float = 2.0,
    *,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): cross entropy down-weighting well-classified pixels; ``weights`` (one per class)
    weigh each pixel's term by its class (the paper's alpha), normalised by the weights' sum over the batch."""
    if _no_weighted_target(target, weights, ignore_index):
        return logits.sum() * 0.0
    valid = target != ignore_index
    logp = F.log_softmax(logits, 1)
    t = torch.where(valid, target, 0)
    lp = logp.gather(1, t[:, None])[:, 0]
    loss = (-((1 - lp.exp()) ** gamma) * lp)[valid]
    if weights is None:
        return loss.mean()
    alpha = weights.to(loss.device, loss.dtype)[t[valid]]
    return (alpha * loss).sum() / alpha.sum()
