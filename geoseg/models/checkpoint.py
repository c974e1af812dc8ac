"""Safe checkpoints: safetensors weights with the ModelConfig as JSON metadata. Never unpickles code."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from geoseg.errors import CheckpointError, InputNotFoundError
from geoseg.io.write import atomic_path
from geoseg.models.config import ModelConfig
from geoseg.models.registry import create_model, model_stride

CONFIG_KEY = "geoseg_config"


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


def read_config(path: str | os.PathLike[str]) -> ModelConfig:
    """Read only the ModelConfig of a checkpoint (cheap: the header, not the weights)."""
    state, config = _read(Path(path), header_only=True)
    return config


def load_checkpoint(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelConfig]:
    """Rebuild the model described by a checkpoint and load its weights; model is in eval mode on ``device``."""
    p = Path(path)
    state, config = _read(p, header_only=False)
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


def _read(p: Path, *, header_only: bool) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    if not p.exists():
        raise InputNotFoundError(f"checkpoint not found: {p}")
    if p.is_dir() or p.stat().st_size == 0:
        raise CheckpointError(f"{p} is not a checkpoint file (empty or a directory)")
    with open(p, "rb") as fh:
        head = fh.read(8)
    if p.suffix == ".safetensors" or (
        len(head) == 8 and int.from_bytes(head, "little") < 100_000_000 and head[:2] != b"PK"
    ):
        return _read_safetensors(p, header_only=header_only)
    return _read_torch(p)


def _read_safetensors(p: Path, *, header_only: bool) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            state = {} if header_only else {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:
        raise CheckpointError(f"{p} is not a valid safetensors checkpoint ({exc}); was it truncated?") from exc
    if CONFIG_KEY not in meta:
        raise CheckpointError(
            f"{p} has weights but no geoseg model config; it was not written by geoseg (save with save_checkpoint)"
        )
    return state, ModelConfig.from_json(meta[CONFIG_KEY])


def _read_torch(p: Path) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """A ``torch.save`` file holding {"state_dict": ..., "geoseg_config": json}, loaded with weights_only=True."""
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
