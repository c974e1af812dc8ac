"""Which torch device runs a model. Importing this module does not import torch (the CLI lists :data:`DEVICES`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoseg.errors import InvalidParameterError

if TYPE_CHECKING:
    import torch

#: the device names offered as choices; ``resolve_device`` also takes ``"cuda:N"`` and anything torch understands
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; anything else as :class:`torch.device` understands it
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``).

    Raises:
        InvalidParameterError: a CUDA device is requested but CUDA is not available.
    """
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return dev


__all__ = ["DEVICES", "resolve_device"]
