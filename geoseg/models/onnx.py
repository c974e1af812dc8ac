"""ONNX export with the ModelConfig embedded, and an onnxruntime runner with the torch model's call contract.

Needs the ``onnx`` extra (``pip install geoseg[onnx]``: onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geoseg.errors import CheckpointError, InputNotFoundError, InvalidParameterError, MissingDependencyError
from geoseg.io.write import atomic_path
from geoseg.models.checkpoint import CONFIG_KEY, check_output_channels, load_checkpoint
from geoseg.models.config import ModelConfig
from geoseg.models.registry import model_stride

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXPORTERS = ("dynamo", "torchscript")


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"ONNX support needs {module!r}; install it with `pip install geoseg[onnx]` (onnx, onnxruntime, onnxscript)"
        ) from exc


def export_onnx(
    checkpoint_or_model: str | os.PathLike[str] | nn.Module,
    path: str | os.PathLike[str],
    *,
    config: ModelConfig | None = None,
    opset: int = 17,
    dynamic: bool = True,
    sample_size: int | None = None,
    exporter: str = "dynamo",
    overwrite: bool = True,
) -> Path:
    """Export a model (or a geoseg checkpoint) to ``path`` with ``config`` JSON in the ONNX ``metadata_props``.

    ``dynamic`` makes batch, height and width symbolic (heights/widths must still be multiples of the output stride,
    as for the torch model). ``sample_size`` is the traced tile size (default: the stride-aligned ``config.tile``,
    at most 256). ``exporter``: "dynamo" (torch.export-based, the default in torch >= 2.9) or "torchscript" (the
    legacy tracer, much faster to export). The model is exported in eval mode, on CPU, in float32.

    Raises:
        CheckpointError: the model's output channels are not ``config``'s classes.
        InvalidParameterError: an unknown ``exporter``, or a module without ``config``.
        MissingDependencyError: the ``onnx`` extra is not installed.
    """
    onnx = _require("onnx")
    if exporter not in EXPORTERS:
        raise InvalidParameterError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if isinstance(checkpoint_or_model, nn.Module):
        if config is None:
            raise InvalidParameterError("export_onnx(model, ...) needs config=ModelConfig(...) to embed in the file")
        model = checkpoint_or_model
    else:
        model, loaded = load_checkpoint(checkpoint_or_model)
        config = config or loaded
    stride = model_stride(model, config.arch)
    config.output_stride = stride
    was_training = model.training
    model = model.eval().float().to("cpu")
    check_output_channels(model, config, source=f"the model for {path}")
    size = sample_size or min(config.tile, 256)
    size = max(stride, -(-size // stride) * stride)
    x = torch.randn(1, config.in_channels, size, size)
    p = Path(path)
    try:
        with atomic_path(p, overwrite=overwrite) as tmp:
            _export(model, x, tmp, opset=opset, dynamic=dynamic, exporter=exporter)
            proto = onnx.load(str(tmp))
            entries = {e.key: e for e in proto.metadata_props}
            for key, value in ((CONFIG_KEY, config.to_json()), ("geoseg_output_stride", str(stride))):
                entry = entries.get(key) or proto.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.save(proto, str(tmp))
    finally:
        model.train(was_training)
    return p


def _export(model: nn.Module, x: torch.Tensor, path: Path, *, opset: int, dynamic: bool, exporter: str) -> None:
    import warnings

    names: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": opset}
    if exporter == "dynamo":
        _require("onnxscript")
        from torch.export import Dim

        shapes = ({0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO},) if dynamic else None
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecation noise
            torch.onnx.export(
                model, (x,), str(path), dynamo=True, external_data=False, dynamic_shapes=shapes, verbose=False, **names
            )
        return
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes} if dynamic else None,
            **names,
        )


class OnnxModel:
    """onnxruntime session called like a geoseg torch model: ``model(x) -> logits`` of shape (B, classes, H, W).

    The embedded contract is validated (:meth:`ModelConfig.from_json`) and checked against the graph: its input
    takes the contract's bands and its output has one channel per class.

    ``x`` may be a numpy array or a torch tensor; the result has the same type (a tensor on ``x``'s device).
    ``output_stride``, ``config``, ``eval()`` and ``to()`` are provided so inference code can treat it like a module.

    Raises:
        InputNotFoundError: the file does not exist.
        CheckpointError: not a loadable ONNX model, no geoseg contract, an invalid contract, or a contract the graph
            contradicts (named field).
        MissingDependencyError: onnxruntime is not installed.
    """

    def __init__(self, path: str | os.PathLike[str], *, providers: list[str] | None = None) -> None:
        ort = _require("onnxruntime")
        p = Path(path)
        if not p.exists():
            raise InputNotFoundError(f"ONNX model not found: {p}")
        try:
            self.session = ort.InferenceSession(str(p), providers=providers or ort.get_available_providers())
        except Exception as exc:
            raise CheckpointError(f"{p} is not a loadable ONNX model: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if CONFIG_KEY not in meta:
            raise CheckpointError(f"{p} has no geoseg model config in its metadata; export it with export_onnx")
        self.config = ModelConfig.from_json(meta[CONFIG_KEY])
        stride = str(meta.get("geoseg_output_stride", self.config.output_stride) or 1)
        if not stride.isdigit() or int(stride) < 1:
            raise CheckpointError(f"{p}: metadata geoseg_output_stride must be a positive integer, got {stride!r}")
        self.output_stride = int(stride)
        self.path = p
        self.training = False
        self._check_contract()

    def _check_contract(self) -> None:
        """The graph's input and output against the contract: names, input bands, output classes (from the
        declared shapes, or from one run on a small stride-aligned input when they are symbolic).

        Raises:
            CheckpointError: naming the contract field the graph contradicts.
        """
        p, cfg = self.path, self.config
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise CheckpointError(
                f"{p}: the graph's input/output are {list(inputs)}/{list(outputs)}, not {INPUT_NAME!r}/"
                f"{OUTPUT_NAME!r}; export the model with geoseg (export_onnx)"
            )
        declared = inputs[INPUT_NAME].shape
        if len(declared) == 4 and isinstance(declared[1], int) and declared[1] != cfg.in_channels:
            raise CheckpointError(
                f"{p}: the model contract's field 'bands' lists {cfg.in_channels} bands but the graph takes "
                f"{declared[1]}; the contract does not belong to this model: export it again with export_onnx"
            )
        out_shape = outputs[OUTPUT_NAME].shape
        channels = out_shape[1] if len(out_shape) == 4 else None
        if not isinstance(channels, int):
            size = -(-max(64, 2 * self.output_stride) // self.output_stride) * self.output_stride
            x = np.zeros((1, cfg.in_channels, size, size), np.float32)
            try:
                channels = int(self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0].shape[1])
            except Exception as exc:
                raise CheckpointError(
                    f"{p}: the model does not run on a (1, {cfg.in_channels}, {size}, {size}) input as its contract "
                    f"says ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})"
                ) from exc
        if channels != cfg.num_classes:
            raise CheckpointError(
                f"{p}: the model contract's field 'classes' lists {cfg.num_classes} classes "
                f"({', '.join(cfg.classes[:8])}{', ...' if cfg.num_classes > 8 else ''}) but the model outputs "
                f"{channels} channel(s); the contract does not belong to this model: export it again with export_onnx"
            )

    def eval(self) -> OnnxModel:
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxModel:
        return self

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        device = x.device if isinstance(x, torch.Tensor) else None
        if isinstance(x, torch.Tensor):
            arr = x.detach().to("cpu", torch.float32).numpy()
        else:
            arr = np.asarray(x, dtype=np.float32)
        if arr.ndim != 4 or arr.shape[1] != self.config.in_channels:
            raise InvalidParameterError(
                f"ONNX model expects (batch, {self.config.in_channels}, H, W) input, got shape {tuple(arr.shape)}"
            )
        out = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(arr)})[0]
        return torch.from_numpy(out).to(device) if device is not None else out


def load_onnx(path: str | os.PathLike[str], *, providers: list[str] | None = None) -> tuple[OnnxModel, ModelConfig]:
    """Open an exported model: ``(runner, config)``."""
    runner = OnnxModel(path, providers=providers)
    return runner, runner.config
