"""Small models and checkpoints for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from geoseg.io.read import reflect_pad
from geoseg.models import ModelConfig, create_model, save_checkpoint


def random_tiny(in_channels: int, num_classes: int, *, seed: int = 0) -> nn.Module:
    """A tiny model with weights large enough that its argmax varies across the image."""
    torch.manual_seed(seed)
    net = create_model("tiny", in_channels=in_channels, num_classes=num_classes, width=8)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0, 1.0 / (m.in_channels * m.kernel_size[0] * m.kernel_size[1]) ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()
    return net.eval()


def tiny_checkpoint(
    path: Path, bands: list[str], classes: list[str] | None = None, *, tile: int = 64, overlap: int = 32, seed: int = 0
) -> Path:
    classes = classes or ["a", "b", "c"]
    net = random_tiny(len(bands), len(classes), seed=seed)
    cfg = ModelConfig(arch="tiny", bands=bands, classes=classes, arch_kwargs={"width": 8}, tile=tile, overlap=overlap)
    return save_checkpoint(path, net, cfg)


def predict_array(net: nn.Module, data: np.ndarray, *, stride: int, device: str = "cpu") -> np.ndarray:
    """Whole-image prediction of a small ``(bands, rows, cols)`` array, reflect-padded to ``stride``: the reference
    the tiled pipeline must reproduce. Returns ``(rows, cols)`` int32 class ids."""
    h, w = data.shape[-2:]
    pad = ((-h) % stride, (-w) % stride)
    x = torch.from_numpy(reflect_pad(np.asarray(data, np.float32), pad))[None]
    with torch.inference_mode():
        logits = net.to(torch.device(device)).eval()(x.to(device)).float()
    return logits.argmax(1).to(torch.int32).cpu().numpy()[0, :h, :w]
