"""ONNX export with embedded ModelConfig, and onnxruntime prediction matching torch's class map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from geoseg.errors import CheckpointError, InvalidParameterError  # noqa: E402
from geoseg.models import ModelConfig, create_model, save_checkpoint  # noqa: E402
from geoseg.models.onnx import OnnxModel, export_onnx, load_onnx  # noqa: E402


def _config(arch: str, bands: int, **kw: object) -> ModelConfig:
    return ModelConfig(
        arch=arch,
        bands=[f"B{i}" for i in range(bands)],
        classes=["water", "forest", "urban"],
        arch_kwargs=dict(kw),
        tile=64,
    )


def _agreement(runner: OnnxModel, model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        ref = model(x)
    out = runner(x.numpy())
    assert isinstance(out, np.ndarray) and out.shape == tuple(ref.shape)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-3, atol=1e-3)
    # float differences (~1e-6) may flip argmax only where two logits tie; require >= 99.9 % agreement
    return float((out.argmax(1) == ref.numpy().argmax(1)).mean())


def test_tiny_from_checkpoint_torchscript_exporter(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("tiny", in_channels=4, num_classes=3, width=8).eval()
    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", model, _config("tiny", 4, width=8))
    path = export_onnx(ckpt, tmp_path / "tiny.onnx", exporter="torchscript")
    runner, config = load_onnx(path)
    assert config.arch == "tiny" and config.bands == ["B0", "B1", "B2", "B3"] and config.arch_kwargs == {"width": 8}
    assert runner.output_stride == 2
    for shape in [(1, 4, 64, 64), (3, 4, 38, 50)]:  # dynamic batch / height / width
        assert _agreement(runner, model, torch.randn(shape)) >= 0.999
    out = runner(torch.randn(1, 4, 16, 16))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 16, 16)


def test_unet_dynamo_exporter(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("unet", in_channels=13, num_classes=3, width=4, depth=3).eval()
    path = export_onnx(model, tmp_path / "unet.onnx", config=_config("unet", 13, width=4, depth=3))
    runner, config = load_onnx(path)
    assert config.output_stride == runner.output_stride == 8
    for shape in [(2, 13, 64, 64), (1, 13, 40, 72)]:
        assert _agreement(runner, model, torch.randn(shape)) >= 0.999
    with pytest.raises(InvalidParameterError, match=r"expects \(batch, 13, H, W\) input, got shape \(1, 4, 8, 8\)"):
        runner(np.zeros((1, 4, 8, 8), np.float32))


def test_export_errors(tmp_path) -> None:
    model = create_model("tiny", in_channels=3, num_classes=3)
    with pytest.raises(InvalidParameterError, match="needs config="):
        export_onnx(model, tmp_path / "m.onnx")
    with pytest.raises(InvalidParameterError, match="exporter must be one of dynamo, torchscript"):
        export_onnx(model, tmp_path / "m.onnx", config=_config("tiny", 3), exporter="jit")
    import onnx

    plain = tmp_path / "plain.onnx"
    proto = onnx.load(str(export_onnx(model, tmp_path / "m.onnx", config=_config("tiny", 3), exporter="torchscript")))
    del proto.metadata_props[:]
    onnx.save(proto, str(plain))
    with pytest.raises(CheckpointError, match="no geoseg model config"):
        load_onnx(plain)
    assert onnx.load(str(plain)).graph.input[0].name == "input"
