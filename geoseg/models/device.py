"""Which torch device runs a model."""

from __future__ import annotations

import torch

from geoseg.errors import InvalidParameterError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; anything else as :class:`torch.device` understands it
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``).

    Raises:
        InvalidParameterError: a CUDA device is requested but CUDA is not available.
    """
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return dev


__all__ = ["resolve_device"]
