"""Adapting a locally stored pretrained RGB encoder to N input bands (never downloads anything).

Strategies for the first convolution (named, so the choice can be recorded in ``ModelConfig.extra``):

* ``"repeat"``: cycle the source (RGB) filters over the N bands and scale by ``3 / N``, so a grey input gives the same
  response as before;
* ``"mean"``: every band gets the mean of the RGB filters, scaled by ``3 / N`` for the same reason;
* ``"random"``: the first (up to) 3 bands keep the RGB filters, extra bands get Kaiming-normal weights.
"""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geoseg.errors import CheckpointError, InputNotFoundError, InvalidParameterError
from geoseg.models.names import ADAPT_STRATEGIES


def adapt_first_conv(weight: torch.Tensor, in_channels: int, strategy: str = "repeat") -> torch.Tensor:
    """Turn a ``(out, src_bands, kh, kw)`` conv weight into ``(out, in_channels, kh, kw)`` by ``strategy``."""
    if strategy not in ADAPT_STRATEGIES:
        raise InvalidParameterError(
            f"unknown first-layer adaptation strategy {strategy!r}; choose one of {', '.join(ADAPT_STRATEGIES)}"
        )
    if weight.ndim != 4:
        raise InvalidParameterError(f"expected a 4-d conv weight (out, in, kh, kw), got shape {tuple(weight.shape)}")
    if in_channels < 1:
        raise InvalidParameterError(f"in_channels must be >= 1, got {in_channels}")
    src = weight.shape[1]
    w = weight.detach().float()
    if strategy == "repeat":
        idx = torch.arange(in_channels) % src
        out = w[:, idx] * (src / in_channels)
    elif strategy == "mean":
        out = w.mean(dim=1, keepdim=True).expand(-1, in_channels, -1, -1) * (src / in_channels)
    else:
        # Kaiming-normal (ReLU gain) with the original layer's fan-in, so new and RGB filters have similar scales
        std = math.sqrt(2.0 / (src * w.shape[2] * w.shape[3]))
        out = torch.empty(w.shape[0], in_channels, *w.shape[2:]).normal_(0.0, std)
        keep = min(src, in_channels)
        out[:, :keep] = w[:, :keep]
    return out.to(weight.dtype).contiguous()


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise InputNotFoundError(f"encoder weights not found: {path}")
    with open(path, "rb") as fh:
        head = fh.read(8)
    is_zip = head[:2] == b"PK"
    if path.suffix == ".safetensors" or (not is_zip and len(head) == 8 and int.from_bytes(head, "little") < 10**8):
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    try:
        obj: Any = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"refused to load {path}: not a safe weights file (only tensors and plain data are accepted). "
            f"Details: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return obj


def _encoder_of(model: nn.Module) -> nn.Module:
    inner = getattr(model, "inner", model)  # SpectralStemModel
    encoder = getattr(inner, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise InvalidParameterError(
            f"{type(inner).__name__} has no `encoder` module to load pretrained weights into; use an encoder-based "
            f"architecture (fcn*, deeplab*, pspnet, icnet)"
        )
    return encoder


def load_encoder_weights(
    model: nn.Module, path: str | os.PathLike[str], *, strategy: str = "repeat", prefix: str | None = None
) -> dict[str, Any]:
    """Load a LOCAL file of pretrained encoder weights into ``model.encoder``, adapting the first convolution.

    The file is safetensors or a ``torch.save`` state dict (loaded with ``weights_only=True``). Keys are encoder
    relative (``stem.0.weight``) or carry a prefix that is stripped (``prefix``, default: ``encoder.`` when every key
    has it). Keys must match exactly (strict); the first conv's input channels are adapted by ``strategy`` (see
    :func:`adapt_first_conv`). Returns a record to store in ``ModelConfig.extra["encoder_weights"]``.
    """
    if strategy not in ADAPT_STRATEGIES:
        raise InvalidParameterError(
            f"unknown adaptation strategy {strategy!r}; choose one of {', '.join(ADAPT_STRATEGIES)}"
        )
    p = Path(path)
    state = _read_state(p)
    if prefix is None and state and all(k.startswith("encoder.") for k in state):
        prefix = "encoder."
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    encoder = _encoder_of(model)
    own = encoder.state_dict()
    first = next(name for name, m in encoder.named_modules() if isinstance(m, nn.Conv2d)) + ".weight"
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{p}: encoder weights do not match this model's encoder ({type(encoder).__name__}): missing "
            f"{len(missing)} key(s) e.g. {missing[:3]}, unexpected {len(unexpected)} e.g. {unexpected[:3]}; the file "
            f"was made for another encoder or width (strict key matching; pass prefix= if its keys are prefixed)"
        )
    source_bands = int(state[first].shape[1])
    target_bands = int(own[first].shape[1])
    if source_bands != target_bands:
        state = dict(state)
        state[first] = adapt_first_conv(state[first], target_bands, strategy)
    bad = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if state[k].shape != v.shape
    ]
    if bad:
        raise CheckpointError(f"{p}: encoder tensor shapes differ ({len(bad)}), e.g. {'; '.join(bad[:3])}")
    encoder.load_state_dict(state, strict=True)
    return {
        "path": p.name,
        "first_conv": first,
        "strategy": strategy if source_bands != target_bands else "none",
        "source_bands": source_bands,
        "bands": target_bands,
    }
