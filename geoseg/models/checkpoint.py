"""Safe checkpoints: safetensors weights with the ModelConfig as JSON metadata. Never unpickles code."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from geoseg.errors import CheckpointError
from geoseg.io.write import atomic_path
from geoseg.models.config import CONFIG_KEY, ModelConfig, checkpoint_kind, read_config
from geoseg.models.registry import create_model, model_stride

__all__ = ["CONFIG_KEY", "load_checkpoint", "read_config", "read_torch_checkpoint", "save_checkpoint"]


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, config: ModelConfig, *, overwrite: bool = True
) -> Path:
    """Write ``model`` weights and ``config`` to a ``.safetensors`` file atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    config.output_stride = model_stride(model, config.arch)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(state, str(tmp), metadata={CONFIG_KEY: config.to_json(), "format": "pt"})
    return path


def load_checkpoint(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelConfig]:
    """Rebuild the model described by a checkpoint and load its weights; model is in eval mode on ``device``.

    Raises:
        InputNotFoundError: the file does not exist.
        CheckpointError: not a geoseg checkpoint, truncated, or weights that do not fit its architecture.
    """
    p = Path(path)
    if checkpoint_kind(p) == "torch":
        state, config = read_torch_checkpoint(p)
    else:
        state, config = _read_safetensors(p)
    model = create_model(
        config.arch, in_channels=config.in_channels, num_classes=config.num_classes, **config.arch_kwargs
    )
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{p}: weights do not match architecture {config.arch!r} "
            f"(missing {len(result.missing_keys)} tensor(s) e.g. {result.missing_keys[:3]}, unexpected "
            f"{len(result.unexpected_keys)} e.g. {result.unexpected_keys[:3]}); the checkpoint was made for another "
            f"architecture or options"
        )
    return model.to(device).eval(), config


def _read_safetensors(p: Path) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:
        raise CheckpointError(f"{p} is not a valid safetensors checkpoint ({exc}); was it truncated?") from exc
    if CONFIG_KEY not in meta:
        raise CheckpointError(
            f"{p} has weights but no geoseg model config; it was not written by geoseg (save with save_checkpoint)"
        )
    return state, ModelConfig.from_json(meta[CONFIG_KEY])


def read_torch_checkpoint(p: Path) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """A ``torch.save`` file holding {"state_dict": ..., "geoseg_config": json}, loaded with weights_only=True.

    Raises:
        CheckpointError: the file is not a geoseg ``torch.save`` checkpoint or cannot be loaded safely.
    """
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"refused to load {p}: it is not a safe checkpoint (only tensors and plain data are accepted; "
            f"arbitrary pickled objects are never executed). Details: {str(exc).splitlines()[0][:200]}"
        ) from exc
    if not isinstance(obj, dict) or "state_dict" not in obj or CONFIG_KEY not in obj:
        raise CheckpointError(f"{p} is a torch file but not a geoseg checkpoint (needs state_dict and {CONFIG_KEY})")
    return obj["state_dict"], ModelConfig.from_json(obj[CONFIG_KEY])
