"""Safe checkpoints: safetensors weights with the ModelConfig as JSON metadata. Never unpickles code."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from geoseg.errors import CheckpointError
from geoseg.io.write import atomic_path
from geoseg.models.config import CONFIG_KEY, ModelConfig, checkpoint_kind, read_config
from geoseg.models.registry import create_model, model_stride
from geoseg.models.safe_load import torch_load

__all__ = [
    "CONFIG_KEY",
    "check_output_channels",
    "load_checkpoint",
    "output_channels",
    "read_config",
    "read_torch_checkpoint",
    "save_checkpoint",
]


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, config: ModelConfig, *, overwrite: bool = True
) -> Path:
    """Write ``model`` weights and ``config`` to a ``.safetensors`` file atomically.

    Raises:
        CheckpointError: the model's output channels are not the contract's classes (:func:`check_output_channels`),
            so no checkpoint contradicting its own weights is ever written.
    """
    from safetensors.torch import save_file

    path = Path(path)
    config.output_stride = model_stride(model, config.arch)
    was_training = model.training
    check_output_channels(model.eval(), config, source=f"the model for {path}")
    model.train(was_training)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(state, str(tmp), metadata={CONFIG_KEY: config.to_json(), "format": "pt"})
    return path


def load_checkpoint(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelConfig]:
    """Rebuild the model described by a checkpoint and load its weights; model is in eval mode on ``device``.

    The contract is checked against the weights: tensor shapes (a field 'classes' or 'bands' that contradicts them
    is named) and the output channels of one forward pass on the meta device (:func:`check_output_channels`).

    Raises:
        InputNotFoundError: the file does not exist.
        CheckpointError: not a geoseg checkpoint, truncated, an invalid contract, or weights that do not fit its
            architecture, classes or bands.
    """
    p = Path(path)
    if checkpoint_kind(p) == "torch":
        state, config = read_torch_checkpoint(p)
    else:
        state, config = _read_safetensors(p)
    model = create_model(
        config.arch, in_channels=config.in_channels, num_classes=config.num_classes, **config.arch_kwargs
    )
    mismatch = _shape_mismatch(model, state, config, p)
    if mismatch is not None:
        raise mismatch
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{p}: weights do not match architecture {config.arch!r} "
            f"(missing {len(result.missing_keys)} tensor(s) e.g. {result.missing_keys[:3]}, unexpected "
            f"{len(result.unexpected_keys)} e.g. {result.unexpected_keys[:3]}); the checkpoint was made for another "
            f"architecture or options"
        )
    model.eval()
    check_output_channels(model, config, source=str(p))
    return model.to(device), config


def _shape_mismatch(
    model: nn.Module, state: dict[str, torch.Tensor], config: ModelConfig, p: Path
) -> CheckpointError | None:
    """A CheckpointError naming the contract field the weights contradict, or None when every shape fits."""
    own = model.state_dict()
    bad = [
        (k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if k in state and state[k].shape != v.shape
    ]
    if not bad:
        return None
    n, c = config.num_classes, config.in_channels
    for key, got, want in bad:
        if want and want[0] == n and got and got[0] != n and got[1:] == want[1:]:
            return CheckpointError(
                f"{p}: the model contract's field 'classes' lists {n} classes ({', '.join(config.classes[:8])}"
                f"{', ...' if n > 8 else ''}) but the weights output {got[0]} (tensor {key!r} is {got}); the contract "
                f"does not belong to these weights: use the checkpoint written by training"
            )
        if len(want) >= 2 and want[1] == c and got[1] != c and got[0] == want[0]:
            return CheckpointError(
                f"{p}: the model contract's field 'bands' lists {c} bands but the weights take {got[1]} (tensor "
                f"{key!r} is {got}); the contract does not belong to these weights: use the checkpoint written by "
                f"training"
            )
    key, got, want = bad[0]
    return CheckpointError(
        f"{p}: {len(bad)} weight tensor(s) do not fit architecture {config.arch!r} built from the model contract "
        f"(e.g. {key!r} is {got} in the file, {want} for the contract); its fields 'arch_kwargs', 'bands' or 'classes' "
        f"do not match the weights"
    )


def _meta_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` on the meta device: shapes only, no weights copied and no arithmetic done."""
    from torch.func import functional_call

    tensors = {k: torch.empty_like(v, device="meta") for k, v in [*model.named_parameters(), *model.named_buffers()]}
    return functional_call(model, tensors, (x.to("meta"),))


def output_channels(model: nn.Module, in_channels: int, *, size: int) -> int:
    """Channels of ``model``'s output for a ``(1, in_channels, size, size)`` input: one forward on the meta device
    (no computation), or, for a model whose operations have no meta kernel, one real forward on the CPU."""
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    x = torch.zeros(1, in_channels, size, size)
    with torch.inference_mode():
        try:
            out = _meta_forward(model, x)
        except Exception:  # an operation without a meta implementation: compute it for real, once, small
            out = model(x.to(device))
    if isinstance(out, dict):  # torchvision-style {"out": logits}
        out = out.get("out", next(iter(out.values())))
    return int(out.shape[1])


def check_output_channels(model: nn.Module, config: ModelConfig, *, source: str) -> None:
    """Refuse a model whose output channels differ from the contract's classes (a contract that lists 5 classes on
    weights that output 3 would label pixels with classes the model never predicts).

    The forward pass uses a small stride-aligned input (about 64 px), then the contract's tile if the model needs a
    larger one.

    Raises:
        CheckpointError: the output has another number of channels than ``config.classes``, or the model cannot run
            on its own tile size.
    """
    stride = max(1, config.output_stride)
    sizes = [-(-max(64, 2 * stride) // stride) * stride, max(config.tile, stride)]
    try:
        got = output_channels(model, config.in_channels, size=sizes[0])
    except Exception:
        try:
            got = output_channels(model, config.in_channels, size=sizes[1])
        except Exception as exc:
            raise CheckpointError(
                f"{source}: the model cannot run on a {sizes[1]}-px tile of {config.in_channels} band(s) as its "
                f"contract says ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})"
            ) from exc
    if got != config.num_classes:
        raise CheckpointError(
            f"{source}: the model contract's field 'classes' lists {config.num_classes} classes "
            f"({', '.join(config.classes[:8])}{', ...' if config.num_classes > 8 else ''}) but the model outputs "
            f"{got} channel(s); the contract does not belong to these weights: use the checkpoint written by training"
        )


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
    obj = torch_load(p, what="checkpoint")
    if not isinstance(obj, dict) or "state_dict" not in obj or CONFIG_KEY not in obj:
        raise CheckpointError(f"{p} is a torch file but not a geoseg checkpoint (needs state_dict and {CONFIG_KEY})")
    return obj["state_dict"], ModelConfig.from_json(obj[CONFIG_KEY])
