"""Convolutional CRF refinement (Teichmann & Cipolla 2019): mean-field inference of the fully connected CRF of
DeepLab v1/v2 (Krähenbühl & Koltun 2011) restricted to a local ``kernel`` x ``kernel`` window, in torch (CPU or GPU).

Pairwise kernel between pixel i and a neighbour j in the window::

    k(i, j) = w_appearance * exp(-|p_i - p_j|^2 / (2 theta_alpha^2) - |I_i - I_j|^2 / (2 theta_beta^2))
            + w_smooth     * exp(-|p_i - p_j|^2 / (2 theta_gamma^2))

with Potts compatibility. ``|I_i - I_j|^2`` is the *mean* squared difference over bands, so ``theta_beta`` is in the
units of one (normalized) band whatever the band count (3 or 200). Each iteration:
``Q <- softmax(log(probs) + sum_j k(i, j) Q_j)``. Runs tile-wise: give it a tile with a halo of ``kernel // 2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from geoseg.errors import InvalidParameterError


def _shift(x: torch.Tensor, dy: int, dx: int, r: int) -> torch.Tensor:
    """View of ``x`` (padded by ``r`` per side) at offset (dy, dx): ``out[..., y, x] = orig[..., y + dy, x + dx]``."""
    h, w = x.shape[-2] - 2 * r, x.shape[-1] - 2 * r
    return x[..., r + dy : r + dy + h, r + dx : r + dx + w]


#: the default window of the CRF's messages, in pixels (odd): tiles should overlap by at least this much
CRF_KERNEL = 7


def crf_refine(
    probs: torch.Tensor,
    image: torch.Tensor,
    *,
    iterations: int = 5,
    kernel: int = CRF_KERNEL,
    theta_alpha: float = 3.0,
    theta_beta: float = 0.5,
    theta_gamma: float = 1.0,
    w_appearance: float = 4.0,
    w_smooth: float = 3.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Refine class probabilities ``probs`` (B, C, H, W) with the image ``image`` (B, bands, H, W).

    ``image`` should be normalized per band (as the model sees it), for ``theta_beta`` to mean anything. Returns
    refined probabilities (B, C, H, W), float32, on ``probs``' device. ``iterations=0`` returns ``probs`` renormalized.
    """
    if probs.ndim != 4 or image.ndim != 4:
        raise InvalidParameterError(
            f"crf_refine needs probs (B, C, H, W) and image (B, bands, H, W), got {tuple(probs.shape)} and "
            f"{tuple(image.shape)}"
        )
    if probs.shape[0] != image.shape[0] or probs.shape[-2:] != image.shape[-2:]:
        raise InvalidParameterError(
            f"probs {tuple(probs.shape)} and image {tuple(image.shape)} must have the same batch size, height, width"
        )
    if kernel < 1 or kernel % 2 == 0:
        raise InvalidParameterError(f"kernel must be a positive odd window size (e.g. 7), got {kernel}")
    if iterations < 0:
        raise InvalidParameterError(f"iterations must be >= 0, got {iterations}")
    if min(theta_alpha, theta_beta, theta_gamma) <= 0:
        raise InvalidParameterError("theta_alpha, theta_beta and theta_gamma must be > 0")
    probs = probs.float()
    image = image.to(probs.device, torch.float32)
    unary = torch.log(probs.clamp_min(eps))
    if iterations == 0:
        return torch.softmax(unary, dim=1)
    r = kernel // 2
    offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if (dy, dx) != (0, 0)]
    img_pad = F.pad(image, (r, r, r, r), mode="replicate")
    valid = F.pad(torch.ones_like(image[:, :1]), (r, r, r, r))  # neighbours outside the tile contribute nothing
    weights = []
    for dy, dx in offsets:
        d2 = float(dy * dy + dx * dx)
        app = ((_shift(img_pad, dy, dx, r) - image) ** 2).mean(dim=1, keepdim=True)
        k = w_appearance * torch.exp(-d2 / (2 * theta_alpha**2) - app / (2 * theta_beta**2))
        k = k + w_smooth * torch.exp(torch.tensor(-d2 / (2 * theta_gamma**2)))
        weights.append(k * _shift(valid, dy, dx, r))
    q = torch.softmax(unary, dim=1)
    for _ in range(iterations):
        q_pad = F.pad(q, (r, r, r, r))
        message = torch.zeros_like(q)
        for (dy, dx), k in zip(offsets, weights):
            message += k * _shift(q_pad, dy, dx, r)
        q = torch.softmax(unary + message, dim=1)  # Potts: -sum_{l' != l} m_l' = m_l - const
    return q
