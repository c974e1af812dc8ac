"""Which torch device runs a model. Importing this module does not import torch (the CLI lists :data:`DEVICES`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from geoseg.errors import InvalidParameterError
from geoseg.hints import option

if TYPE_CHECKING:
    import torch

#: the device names offered as choices; ``resolve_device`` also takes ``"cuda:N"``
DEVICES = ("auto", "cpu", "cuda")
_NAME = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_VALID = "auto, cpu, cuda or cuda:N"


def check_device(device: object) -> str:
    """Check the spelling of a device name without importing torch (e.g. before sending it to cluster workers);
    return it. None means ``"auto"``.

    Raises:
        InvalidParameterError: not one of auto, cpu, cuda, cuda:N.
    """
    if device is None:
        return "auto"
    if not isinstance(device, str) and type(device).__name__ == "device":  # a torch.device
        device = str(device)
    if not isinstance(device, str) or not _NAME.match(device.strip().lower()):
        hint = ""
        if isinstance(device, str) and device.strip().lower().startswith("mps"):
            hint = " (Apple's Metal backend is not supported)"
        raise InvalidParameterError(f"{option('device')} {device!r} is not a device geoseg runs on{hint}; use {_VALID}")
    return device.strip().lower()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` as given.

    Raises:
        InvalidParameterError: another name (``mps``, ``meta``, ``""``, ...; see :func:`check_device`), or a CUDA
            device that this machine does not have.
    """
    import torch

    name = check_device(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidParameterError(
                f"{option('device')} {name!r} requested but CUDA is not available on this machine; use "
                f"{option('device', 'cpu')}"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InvalidParameterError(
                f"{option('device')} {name!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}"
            )
    return dev


__all__ = ["DEVICES", "check_device", "resolve_device"]
