"""Names of the training registries whose implementations need torch, importable without it (the CLI's choices).

The registry of each name is next to this module: losses in :func:`geoseg.train.losses.make_loss`. Sampling modes
(:data:`geoseg.train.chips.SAMPLING_MODES`) need no torch and stay with their implementation.
"""

from __future__ import annotations

#: loss names accepted by :func:`geoseg.train.losses.make_loss` and ``train_model(loss=...)``
LOSSES = ("ce", "weighted_ce", "dice", "ce_dice", "focal")

#: baselines ``train_model(baseline=...)`` / ``geoseg train --baseline`` fits beside the network (``rf``: a pixel-wise
#: random forest, :mod:`geoseg.train.baseline`)
BASELINES = ("rf",)

__all__ = ["BASELINES", "LOSSES"]
