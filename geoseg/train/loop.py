"""train_model: fit a registered architecture on an image raster and labels; keep the best checkpoint; resume."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoseg.errors import CheckpointError, InvalidParameterError, OutputExistsError
from geoseg.hints import option
from geoseg.io.bands import BandSpec
from geoseg.io.normalize import compute_normalization, sample_pixels
from geoseg.io.read import RasterSource
from geoseg.io.write import atomic_path, check_output_path
from geoseg.metrics import ConfusionMatrix, SegmentationReport
from geoseg.models.checkpoint import save_checkpoint
from geoseg.models.config import ModelConfig
from geoseg.models.device import resolve_device
from geoseg.models.layers import auxiliary_outputs
from geoseg.models.registry import create_model, model_stride
from geoseg.progress import ProgressCallback, report_progress
from geoseg.train.augment import augment as apply_augmentations
from geoseg.train.augment import check_augmentations
from geoseg.train.chips import SAMPLING_MODES, ChipReader, block_split
from geoseg.train.config import RESUME_OPTIONS, check_resume, check_train_arguments, saved_options
from geoseg.train.labels import IGNORE_INDEX, open_labels
from geoseg.train.losses import LOSSES, class_weights, make_loss


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
    state: Path | None = None


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def state_path(checkpoint: str | os.PathLike[str]) -> Path:
    """Where the resumable training state of ``checkpoint`` lives (weights of the last epoch, optimizer, RNGs)."""
    p = Path(checkpoint)
    return p.with_name(p.name + ".train-state.pt")


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
    class_field: str | None = None,
    background: int | None = None,
    id_field: str | None = None,
    label_nodata: float | None = None,
    layer: str | None = None,
    epochs: int = 20,
    chip: int = 128,
    batch_size: int = 8,
    chips_per_epoch: int = 256,
    sampling: str = "random",
    lr: float = 2e-3,
    loss: str = "ce",
    normalization: str = "meanstd",
    val_fraction: float = 0.2,
    block: int | None = None,
    stratify: bool = True,
    patience: int = 5,
    seed: int = 0,
    device: str | None = "auto",
    amp: bool = True,
    max_seconds: float | None = None,
    tile: int = 512,
    overlap: int = 64,
    augment: bool | str | list[str] = True,
    encoder: str | None = None,
    encoder_weights: str | os.PathLike[str] | None = None,
    adapt: str = "repeat",
    encoder_bands: list[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train ``arch`` on ``image`` + ``labels`` and write the best checkpoint to ``out``.

    Labels are an integer class raster (nodata, or ``label_nodata`` when the file declares none, ignored; warped
    with nearest neighbour onto the image grid when it lies on another one) or polygons (GeoPackage/GeoJSON/
    Shapefile/FlatGeobuf/GeoParquet; ``layer`` of a multi-layer file) with a ``class_field`` of ids or names,
    rasterized window by window onto the image grid (reprojected when CRSs differ); pixels outside polygons get
    ``background`` or are ignored. Label values must be class ids 0..K-1 (K = the number of ``classes`` when given;
    without names, exactly the values 0..K-1 found): a 0/255 mask or codes such as 11, 21 are refused with the
    values found, never turned into a model with hundreds of classes; at least 2 classes must be present. Names in
    ``class_field`` get their ids from ``id_field`` when given (a layer's own ids), else from their position in
    ``classes``, else alphabetically (:mod:`geoseg.io.labels`).

    Validation holds out whole ``block``-px blocks at random (``val_fraction``), so no validation pixel has a
    training neighbour; with ``stratify`` every class found in two or more blocks is in both sets. Chips are
    sampled ``random``ly, on a ``grid``, or class-``balanced``. ``augment`` is True (flip, rot90, spectral),
    False, or names from :data:`geoseg.train.augment.AUGMENTATIONS`. The checkpoint with
    the best validation mIoU is written to ``out`` (safetensors + ModelConfig), directly usable by
    ``predict_raster``; the last epoch's state goes to ``out + ".train-state.pt"`` so ``resume=True`` continues an
    interrupted run and ends exactly where an uninterrupted one would.

    ``arch_kwargs`` may hold ``spectral_reduction=K`` (1x1 spectral stem for many bands) with
    ``spectral_init="pca"`` (initialised from the training raster's principal components). ``encoder`` picks the
    encoder of encoder-based architectures (e.g. ``resnet50``; a timm name for smp-* models). ``encoder_weights``
    starts it from pretrained weights: a local file in a torchvision, timm/TorchGeo or geoseg layout, or
    ``torchvision:NAME`` / ``timm:NAME`` (see :func:`geoseg.models.adapt.load_encoder_weights`); its first layer is
    adapted to the band count by ``adapt``, or matched to the raster's bands by name when ``encoder_bands`` lists the
    weights' bands in order. The checkpoint's contract records the file, its sha256, layout and adaptation.

    Raises:
        InvalidParameterError: a bad option (loss, sampling, sizes, block), labels that cover no pixel, or too
            few classes; UnknownClassError (one of them) for label values that are not class ids, or label
            polygons without a usable class attribute.
        NoOverlapError: a label raster that does not overlap the image or cannot be placed on its grid.
        CheckpointError: ``resume`` without a saved training state, or one for another run.
        OutputExistsError, OutputError: ``out`` exists without ``overwrite``, or cannot be written.
        InputNotFoundError, NotARasterError, BandSelectionError: the image or labels cannot be read as given.
        ModelContractError: a label raster whose values are not whole numbers.
        UnknownModelError: ``arch`` is not registered.
        CancelledError: ``progress`` asked to stop; it is asked before every batch, so training stops within one
            batch (the best checkpoint of the epochs completed so far and their training state remain).
    """
    check_train_arguments(locals())
    t0 = time.perf_counter()
    if loss not in LOSSES:
        raise InvalidParameterError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if sampling not in SAMPLING_MODES:
        raise InvalidParameterError(f"unknown sampling {sampling!r}; choose one of {', '.join(SAMPLING_MODES)}")
    augmentations = check_augmentations(augment)
    state_file = state_path(out)
    inputs = {image: "image", labels: "labels", encoder_weights: "encoder weights"}
    saved_state = None
    if resume:
        if not state_file.exists():
            raise CheckpointError(f"cannot resume: no training state {state_file}; train without resume first")
        out_path = check_output_path(out, overwrite=True, inputs=inputs, what="checkpoint")
        saved_state = _load_state(state_file)
        _check_resume(state_file, saved_state, locals(), classes=classes)
    else:
        out_path = check_output_path(out, overwrite=overwrite, inputs=inputs, what="checkpoint")
        try:
            check_output_path(state_file, overwrite=overwrite, inputs=inputs, what="training state")
        except OutputExistsError as exc:
            raise OutputExistsError(f"{exc}, or {option('resume', True)} to continue the run that saved it") from exc
    gen = seed_everything(seed)
    dev = resolve_device(device)
    src = RasterSource(image, bands=bands)
    lab = None
    try:
        lab = open_labels(
            labels, src, classes=classes, class_field=class_field, background=background, nodata=label_nodata,
            layer=layer, id_field=id_field,
        )  # fmt: skip
        names = lab.classes
        n_classes = len(names)
        norm = compute_normalization(src, normalization, seed=seed)
        kwargs = dict(arch_kwargs or {})
        if encoder is not None:
            kwargs["encoder"] = encoder
        net = create_model(arch, in_channels=src.count, num_classes=n_classes, **kwargs)
        stride = model_stride(net, arch)
        chip = max(stride, chip // stride * stride)
        blk = block or 4 * chip
        if blk < chip:
            raise InvalidParameterError(f"block ({blk} px) must be at least the chip size ({chip} px)")
        reader = ChipReader(src, lab, norm, chip, blk)
        all_blocks = block_split(src.shape, blk, 0.0, seed).train
        hists = {o: reader.block_histogram(*o) for o in all_blocks}  # one pass over the labels, cached
        if sum(int(h.sum()) for h in hists.values()) == 0:
            raise InvalidParameterError(
                f"labels {labels} cover no pixel of the image {image} (every label pixel is nodata or outside it); "
                f"check that labels and image overlap (extent, CRS) and that class values are 0..K-1"
            )
        present = [names[k] for k, c in enumerate(np.sum(list(hists.values()), axis=0)) if c > 0]
        if len(present) < 2:
            raise InvalidParameterError(
                f"the labels of {image} hold only class {present} on the image's valid pixels: a model needs at least "
                f"2 classes present to learn; add labels of the other classes (or check nodata and --background)"
            )
        split = block_split(src.shape, blk, val_fraction, seed, histograms=hists if stratify else None)
        if not split.train:
            raise InvalidParameterError(
                f"the {src.height}x{src.width} raster holds no full {blk}-px block; use a smaller block/chip"
            )
        extra: dict[str, Any] = {
            "training": {
                "image": str(image),
                "labels": str(labels),
                "seed": seed,
                "loss": loss,
                "chip": chip,
                "block": blk,
                "val_fraction": val_fraction,
                "sampling": sampling,
                "augment": list(augmentations),
                "epochs": epochs,
                "lr": lr,
                "batch_size": batch_size,
                "chips_per_epoch": chips_per_epoch,
            }
        }
        if kwargs.get("spectral_init") == "pca" and not resume:
            from geoseg.models.spectral import pca_init

            px = sample_pixels(src, seed=seed)
            px = (px - np.asarray(norm.shift or 0.0)) / np.asarray(norm.scale or 1.0)
            extra["spectral_pca_explained"] = float(np.sum(pca_init(net, px.astype(np.float32))))
        if encoder_weights is not None and not resume:
            from geoseg.models.adapt import load_encoder_weights

            extra["encoder_weights"] = load_encoder_weights(
                net,
                encoder_weights,
                strategy=adapt,
                weights_bands=encoder_bands,
                model_bands=None if kwargs.get("spectral_reduction") else src.band_names,
            )
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
            extra=extra,
        )
        rng = np.random.default_rng(seed)
        counts = np.zeros(n_classes, np.int64)
        for b in split.train[:64]:
            counts += reader.block_histogram(*b)
        criterion = make_loss(loss, weights=class_weights(counts) if loss == "weighted_ce" else None)
        net = net.to(dev)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        steps_per_epoch = max(1, -(-chips_per_epoch // batch_size))
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
        )
        val_chips = [reader.read(r, c) for r, c in reader.grid_origins(split.val or split.train)]
        best, best_epoch, history, best_report, stale, start = -1.0, 0, [], None, 0, 1
        if saved_state is not None:
            _check_resume(state_file, saved_state, locals(), classes=names, bands=src.band_names)
            st = saved_state
            net.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            gen.set_state(st["torch_gen"])
            torch.set_rng_state(st["torch_rng"])
            rng.bit_generator.state = st["numpy_rng"]
            best, best_epoch, stale, start = st["best"], st["best_epoch"], st["stale"], st["epoch"] + 1
            history = list(st["history"])
            config = ModelConfig.from_json(st["config"])
        use_amp = amp and dev.type == "cuda"
        for epoch in range(start, epochs + 1):
            net.train()
            losses = []
            for group in _batches(reader.origins(sampling, split.train, chips_per_epoch, rng), batch_size):
                _poll_cancel(progress, epoch, epochs)
                xs, ys = zip(*(reader.read(r, c) for r, c in group))
                x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
                x, y = apply_augmentations(x, y, augmentations, gen)
                x, y = x.to(dev), y.to(dev)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                    logits = net(x)
                    aux = auxiliary_outputs(net)
                lval = criterion(logits.float(), y)
                for w, a in aux:
                    lval = lval + w * criterion(a.float(), y)
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
            if rep.miou > best + 1e-6:
                best, best_epoch, best_report, stale = rep.miou, epoch, rep, 0
                config.extra["validation"] = rep.to_dict()
                config.extra["training"]["best_epoch"] = epoch
                save_checkpoint(out_path, net, config, overwrite=True)
            else:
                stale += 1
            _save_state(
                state_file,
                net,
                opt,
                sched,
                gen,
                rng,
                config,
                epoch=epoch,
                best=best,
                best_epoch=best_epoch,
                stale=stale,
                history=history,
            )
            per_class = " ".join(f"{k}={v:.2f}" for k, v in history[-1]["per_class_iou"].items() if v == v)
            message = f"loss {history[-1]['loss']:.3f} val mIoU {rep.miou:.3f} [{per_class}]"
            report_progress(progress, epoch, epochs, message)
            if stale >= patience or (max_seconds is not None and time.perf_counter() - t0 > max_seconds):
                break
    finally:
        src.close()
        if lab is not None:
            lab.close()
    if best_report is None and out_path.exists():
        from geoseg.models.checkpoint import read_config

        val = read_config(out_path).extra.get("validation")
        best_report = SegmentationReport.from_matrix(np.asarray(val["confusion_matrix"]), names) if val else None
    return TrainResult(
        out_path, best, best_epoch, len(history), time.perf_counter() - t0, history, best_report, state_file
    )


def _poll_cancel(progress: ProgressCallback | None, epoch: int, epochs: int) -> None:
    """Before each batch: let ``progress`` stop training within one batch, not one epoch (it sees the epochs
    completed so far and no message).

    Raises:
        CancelledError: ``progress`` returned True.
    """
    report_progress(progress, epoch - 1, epochs)


def _save_state(
    path: Path, net: Any, opt: Any, sched: Any, gen: Any, rng: Any, config: ModelConfig, **info: Any
) -> None:
    state = {
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "torch_gen": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": rng.bit_generator.state,
        "config": config.to_json(),
        **info,
    }
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(state, tmp)


def _check_resume(
    state_file: Path,
    saved_state: dict[str, Any],
    args: dict[str, Any],
    *,
    classes: list[str] | None = None,
    bands: list[str] | None = None,
) -> None:
    """Refuse to resume ``saved_state`` with options other than those it was saved with (see
    :func:`geoseg.train.config.check_resume`); ``args`` are train_model's arguments."""
    saved = saved_options(saved_state["config"])
    stride = int(saved["output_stride"])
    chip = max(stride, int(args["chip"]) // stride * stride)
    kwargs = dict(args["arch_kwargs"] or {})
    if args["encoder"] is not None:
        kwargs["encoder"] = args["encoder"]
    requested = {k: args.get(k) for k in RESUME_OPTIONS} | {
        "arch_kwargs": kwargs,
        "chip": chip,
        "block": args["block"] or 4 * chip,
        "augment": list(check_augmentations(args["augment"])),
        "classes": classes,
        "bands": bands,
    }
    check_resume(state_file, saved, requested)


def _load_state(path: Path) -> dict[str, Any]:
    from geoseg.models.safe_load import torch_load

    try:
        return torch_load(path, what="training state")
    except CheckpointError as exc:
        raise CheckpointError(f"cannot resume: {exc}") from exc


def _validate(
    net: torch.nn.Module, chips: list, n_classes: int, names: list[str], dev: torch.device, bs: int
) -> SegmentationReport:
    net.eval()
    cm = ConfusionMatrix(n_classes)
    with torch.inference_mode():
        for group in _batches(chips, bs):
            x = torch.from_numpy(np.stack([g[0] for g in group])).to(dev)
            pred = net(x).argmax(1).cpu().numpy()
            for p, (_, y) in zip(pred, group):
                cm.update(p, y, y != IGNORE_INDEX)
    return cm.report(names)
