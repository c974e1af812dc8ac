"""Names of the model registries whose implementations need torch, importable without it (the CLI's choices).

The registry of each name is next to this module: first-convolution adaptation strategies in
:func:`geoseg.models.adapt.adapt_first_conv`. Devices are in :data:`geoseg.models.device.DEVICES`.
"""

from __future__ import annotations

#: how :func:`geoseg.models.adapt.adapt_first_conv` maps pretrained RGB filters onto N bands
ADAPT_STRATEGIES = ("repeat", "mean", "random")

__all__ = ["ADAPT_STRATEGIES"]
