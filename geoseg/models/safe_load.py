"""The one way geoseg opens ``torch.save`` files: ``torch.load(weights_only=True)``, whose refusal is reworded.

torch's own refusal advises re-running ``torch.load`` with ``weights_only=False``, which executes whatever the file's
pickle asks for: sound advice for your own files, dangerous for a download. geoseg never passes that advice on; it
names what the file holds and says what to do instead (re-save the weights as safetensors where the file is trusted).
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from typing import Any

import torch

from geoseg.errors import CheckpointError

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_ADVICE = re.compile(r"weights_only|add_safe_globals|safe_globals|trusted source|trust", re.IGNORECASE)
_NOISE = re.compile(r"weights only load failed|pytorch\.org|file an issue|two options", re.IGNORECASE)


def refusal_detail(exc: BaseException) -> str:
    """What torch's refusal says about the file, without its advice to load it unsafely."""
    text = str(exc)
    m = _GLOBAL.search(text)
    if m:
        return f"it refers to the Python object {m.group(1)}, which unpickling would import or call"
    text = re.sub(r"\x1b\[[0-9;]*m", "", text).replace("WeightsUnpickler error:", "")
    lines = [ln.strip() for ln in text.splitlines()]
    keep = [ln for ln in lines if ln and not _ADVICE.search(ln) and not _NOISE.search(ln)]
    detail = keep[0][:160] if keep else type(exc).__name__
    return f"it is not a plain tensor file: {detail}"


def torch_load(path: str | os.PathLike[str], *, what: str = "checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors and plain data only, never code.

    Raises:
        CheckpointError: the file holds other pickled objects (named, when torch names them), or is not a readable
            ``torch.save`` file; the message says to re-save trusted weights as safetensors and never suggests
            ``weights_only=False``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not the user's business
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"refused to load {what} {path}: not a safe {what} ({refusal_detail(exc)}); geoseg reads only tensors "
            f"and plain data from torch.save files, so a {what} can never run code. If the file comes from a source "
            f"you trust, load it there and re-save its weights as safetensors (safetensors.torch.save_file("
            f"state_dict, 'weights.safetensors')); never loosen this check for a file you did not make"
        ) from exc


__all__ = ["refusal_detail", "torch_load"]
