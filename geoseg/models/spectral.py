"""Spectral stem for hyperspectral input: reduce N bands to K channels by a learned 1x1 convolution (+BN+ReLU).

Any registered model becomes hyperspectral-friendly with ``create_model(name, ..., spectral_reduction=K)``: the
registry builds the model for K input channels and wraps it as ``SpectralStemModel(stem, inner)``. Both options live
in ``arch_kwargs``, so a checkpoint rebuilds the same wrapper. :func:`pca_init` initialises the stem from a pixel
sample (whitened principal components); record it with ``spectral_init="pca"`` (informational: the weights carry the
values).
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from torch import nn

from geoseg.errors import InvalidParameterError

SPECTRAL_INITS = ("random", "pca")


class SpectralStem(nn.Module):
    """1x1 convolution from ``in_channels`` bands to ``out_channels`` channels, BatchNorm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, init: str = "random") -> None:
        super().__init__()
        if init not in SPECTRAL_INITS:
            raise InvalidParameterError(f"spectral_init must be one of {', '.join(SPECTRAL_INITS)}, got {init!r}")
        self.in_channels, self.out_channels, self.init = in_channels, out_channels, init
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class SpectralStemModel(nn.Module):
    """``inner(stem(x))``; exposes the inner model's ``output_stride``, ``receptive_field`` and auxiliary outputs."""

    def __init__(self, stem: SpectralStem, inner: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.inner = inner
        self.output_stride = int(getattr(inner, "output_stride", 1) or 1)
        rf = getattr(inner, "receptive_field", None)
        if rf is not None:
            self.receptive_field = rf
        self.aux_weights = getattr(inner, "aux_weights", ())

    @property
    def aux_outputs(self) -> list[torch.Tensor]:
        return list(getattr(self.inner, "aux_outputs", None) or [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.stem(x))


def pca_init(stem: nn.Module, pixels: np.ndarray, *, whiten: bool = True) -> np.ndarray:
    """Initialise ``stem`` so that, in eval mode and before the ReLU, it outputs the top-K principal components.

    ``pixels`` is a ``(n_pixels, bands)`` sample (rows with NaN/inf are dropped; use normalized values, as the model
    sees them). The 1x1 weights become the principal axes (divided by their standard deviation when ``whiten``) and
    the BatchNorm running statistics the projected mean and variance, with unit scale and zero shift. Returns the
    explained-variance ratio of the K components. Sets ``stem.init = "pca"``.

    Raises:
        InvalidParameterError: ``stem`` is neither a :class:`SpectralStem` nor a model with one, or ``pixels`` has the
            wrong shape or too few finite rows.
    """
    from geoseg.models.ensemble import ProbabilityEnsemble

    if isinstance(stem, ProbabilityEnsemble):  # every member's stem from the same sample
        return [pca_init(m, pixels, whiten=whiten) for m in stem.members][0]
    if isinstance(stem, SpectralStemModel):
        stem = stem.stem
    if not isinstance(stem, SpectralStem):
        raise InvalidParameterError(
            f"pca_init needs a spectral stem (arch_kwargs spectral_reduction=K), got a {type(stem).__name__}"
        )
    x = np.asarray(pixels, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != stem.in_channels:
        raise InvalidParameterError(
            f"pca_init needs a (n_pixels, {stem.in_channels}) array of band values, got shape {x.shape}"
        )
    x = x[np.isfinite(x).all(axis=1)]
    k = stem.out_channels
    if x.shape[0] < k + 1:
        raise InvalidParameterError(
            f"pca_init needs more than {k} valid pixels to estimate {k} components, got {x.shape[0]}; sample more"
        )
    if k > stem.in_channels:
        raise InvalidParameterError(f"cannot take {k} principal components of {stem.in_channels} bands")
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s**2 / (x.shape[0] - 1)
    comps = vt[:k]
    # deterministic sign: largest-magnitude loading positive
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    std = np.sqrt(np.maximum(var[:k], 1e-12))
    weight = comps / std[:, None] if whiten else comps
    proj_mean = weight @ mean
    proj_var = (var[:k] / std**2) if whiten else var[:k]
    with torch.no_grad():
        stem.conv.weight.copy_(torch.as_tensor(weight, dtype=torch.float32)[:, :, None, None])
        cast(torch.Tensor, stem.bn.running_mean).copy_(torch.as_tensor(proj_mean, dtype=torch.float32))
        cast(torch.Tensor, stem.bn.running_var).copy_(torch.as_tensor(proj_var, dtype=torch.float32))
        stem.bn.weight.fill_(1.0)
        stem.bn.bias.zero_()
    stem.init = "pca"
    total = var.sum()
    return (var[:k] / total) if total > 0 else np.zeros(k)
