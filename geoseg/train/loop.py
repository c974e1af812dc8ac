"""train_model: fit a registered architecture on an image raster and a label raster; keep the best checkpoint."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoseg.errors import InvalidParameterError
from geoseg.inference.predict import resolve_device
from geoseg.io.bands import BandSpec
from geoseg.io.normalize import compute_normalization
from geoseg.io.read import RasterSource
from geoseg.io.write import check_output_path
from geoseg.metrics import ConfusionMatrix, SegmentationReport
from geoseg.models.checkpoint import save_checkpoint
from geoseg.models.config import ModelConfig
from geoseg.models.registry import create_model, model_stride
from geoseg.progress import ProgressCallback, report
from geoseg.train.augment import flips_rot90, spectral_jitter
from geoseg.train.chips import IGNORE_INDEX, ChipReader, LabelRaster, block_split
from geoseg.train.losses import class_weights, make_loss


@dataclass
class TrainResult:
    """The best checkpoint and how training went."""

    checkpoint: Path
    best_miou: float
    best_epoch: int
    epochs_run: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    report: SegmentationReport | None = None


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def train_model(
    image: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    arch: str = "unet",
    arch_kwargs: dict[str, Any] | None = None,
    bands: BandSpec = None,
    classes: list[str] | None = None,
    colors: list[list[int]] | None = None,
    epochs: int = 20,
    chip: int = 128,
    batch_size: int = 8,
    chips_per_epoch: int = 256,
    lr: float = 2e-3,
    loss: str = "ce",
    normalization: str = "meanstd",
    val_fraction: float = 0.2,
    block: int | None = None,
    patience: int = 5,
    seed: int = 0,
    device: str | None = "auto",
    max_seconds: float | None = None,
    tile: int = 512,
    overlap: int = 64,
    augment: bool = True,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train ``arch`` on ``image`` + ``labels`` (integer class raster on the image grid; nodata ignored).

    Validation uses whole blocks of ``block`` px held out at random (``val_fraction``), so no validation pixel has
    a training neighbour. The checkpoint with the best validation mIoU is written to ``out`` (safetensors +
    ModelConfig), directly usable by ``predict_raster``.
    """
    t0 = time.perf_counter()
    out_path = check_output_path(out, overwrite=overwrite, inputs=[image, labels])
    if epochs < 1 or chip < 8 or batch_size < 1:
        raise InvalidParameterError("epochs >= 1, chip >= 8 and batch_size >= 1 are required")
    gen = seed_everything(seed)
    dev = resolve_device(device)
    src = RasterSource(image, bands=bands)
    lab = None
    try:
        ids = LabelRaster(labels, src, num_classes=10**9).class_ids()
        n_classes = len(classes) if classes else int(ids.max()) + 1 if ids.size else 0
        if n_classes < 2:
            raise InvalidParameterError(
                f"labels in {labels} hold {ids.tolist()}: need at least 2 classes (ids 0..K-1; nodata ignored)"
            )
        if classes and ids.size and int(ids.max()) >= n_classes:
            raise InvalidParameterError(
                f"label ids {sorted(int(i) for i in ids if i >= n_classes)} exceed the {n_classes} class names given; "
                f"give one name per class id 0..{int(ids.max())}"
            )
        names = list(classes) if classes else [f"class_{i}" for i in range(n_classes)]
        lab = LabelRaster(labels, src, num_classes=n_classes)
        norm = compute_normalization(src, normalization, seed=seed)
        kwargs = dict(arch_kwargs or {})
        net = create_model(arch, in_channels=src.count, num_classes=n_classes, **kwargs)
        stride = model_stride(net, arch)
        chip = max(stride, chip // stride * stride)
        blk = block or max(chip, 4 * chip)
        split = block_split(src.shape, blk, val_fraction, seed)
        reader = ChipReader(src, lab, norm, chip)
        config = ModelConfig(
            arch=arch,
            bands=src.band_names,
            classes=names,
            colors=colors or [],
            normalization=norm.to_dict(),
            arch_kwargs=kwargs,
            tile=max(tile // stride * stride, stride),
            overlap=overlap,
            output_stride=stride,
            extra={
                "training": {
                    "image": str(image),
                    "labels": str(labels),
                    "seed": seed,
                    "loss": loss,
                    "chip": chip,
                    "block": blk,
                    "val_fraction": val_fraction,
                }
            },
        )
        counts = np.zeros(n_classes, np.int64)
        rng = np.random.default_rng(seed)
        for r, c in reader.random_origins(split.train, blk, 32, rng):
            y = reader.read(r, c)[1]
            counts += np.bincount(y[y != IGNORE_INDEX].ravel(), minlength=n_classes)[:n_classes]
        criterion = make_loss(loss, weights=class_weights(counts) if loss == "weighted_ce" else None)
        net = net.to(dev)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=epochs * max(1, -(-chips_per_epoch // batch_size)), pct_start=0.15
        )
        val_origins = reader.grid_origins(split.val or split.train, blk)
        val_chips = [reader.read(r, c) for r, c in val_origins]
        best, best_epoch, history, best_report, stale = -1.0, 0, [], None, 0
        total_steps = epochs
        for epoch in range(1, epochs + 1):
            net.train()
            losses = []
            for group in _batches(reader.random_origins(split.train, blk, chips_per_epoch, rng), batch_size):
                xs, ys = zip(*(reader.read(r, c) for r, c in group))
                x = torch.from_numpy(np.stack(xs))
                y = torch.from_numpy(np.stack(ys))
                if augment:
                    x, y = flips_rot90(x, y, gen)
                    x = spectral_jitter(x, gen)
                x, y = x.to(dev), y.to(dev)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    logits = net(x)
                lval = criterion(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                lval.backward()
                opt.step()
                sched.step()
                losses.append(float(lval.detach()))
            rep = _validate(net, val_chips, n_classes, names, dev, batch_size)
            history.append(
                {
                    "epoch": epoch,
                    "loss": float(np.mean(losses)) if losses else float("nan"),
                    "val_miou": rep.miou,
                    "per_class_iou": {c.name: c.iou for c in rep.classes},
                }
            )
            improved = rep.miou > best + 1e-6
            if improved:
                best, best_epoch, best_report, stale = rep.miou, epoch, rep, 0
                config.extra["validation"] = rep.to_dict()
                config.extra["training"]["best_epoch"] = epoch
                save_checkpoint(out_path, net, config, overwrite=True)
            else:
                stale += 1
            report(progress, epoch, total_steps, f"loss {history[-1]['loss']:.3f} val mIoU {rep.miou:.3f}")
            if stale >= patience:
                break
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                break
    finally:
        src.close()
        if lab is not None:
            lab.close()
    return TrainResult(out_path, best, best_epoch, len(history), time.perf_counter() - t0, history, best_report)


def _validate(net: torch.nn.Module, chips: list, n_classes: int, names: list[str], dev: torch.device, bs: int):
    net.eval()
    cm = ConfusionMatrix(n_classes)
    with torch.inference_mode():
        for group in _batches(chips, bs):
            x = torch.from_numpy(np.stack([g[0] for g in group])).to(dev)
            pred = net(x).argmax(1).cpu().numpy()
            for p, (_, y) in zip(pred, group):
                cm.update(p, y, y != IGNORE_INDEX)
    return cm.report(names)
