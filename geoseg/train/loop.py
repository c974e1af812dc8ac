"""train_model: fit a registered architecture on an image raster and labels; keep the best checkpoint; resume.

The default recipe is decided from the data: chip size from the extent of the labelled pixels, validation block size
and the number of optimizer steps from the labelled pixel count, class balance of the chips from the class
frequencies. See :func:`train_model` and :func:`plan_training`.
"""

from __future__ import annotations

import copy
import math
import os
import random
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window

from geoseg.errors import (
    CheckpointError,
    ClassNotTrainedWarning,
    InvalidParameterError,
    OutputExistsError,
    SelfTrainingWarning,
    TrainingDivergedError,
)
from geoseg.hints import option
from geoseg.io.bands import BandSpec
from geoseg.io.normalize import compute_normalization, sample_pixels
from geoseg.io.read import RasterSource
from geoseg.io.write import atomic_path, check_output_path
from geoseg.metrics import ConfusionMatrix, SegmentationReport
from geoseg.models.checkpoint import save_checkpoint
from geoseg.models.config import ModelConfig, read_config
from geoseg.models.device import resolve_device
from geoseg.models.layers import auxiliary_outputs
from geoseg.models.registry import check_model_options, create_model, model_stride
from geoseg.options import plain_arguments
from geoseg.progress import ProgressCallback, report_progress
from geoseg.threads import torch_threads
from geoseg.train.area import AreaLabels, AreaSpec, PixelArea, describe_area
from geoseg.train.augment import augment as apply_augmentations
from geoseg.train.augment import check_augmentations
from geoseg.train.chips import SAMPLING_MODES, TRAIN, VAL, ChipReader, block_split
from geoseg.train.config import RESUME_OPTIONS, check_resume, check_train_arguments, saved_options
from geoseg.train.labels import IGNORE_INDEX, open_labels
from geoseg.train.losses import LOSSES, balanced_class_weights, check_class_weights, make_loss
from geoseg.train.names import BASELINES
from geoseg.train.pseudo import PSEUDO_THRESHOLD

#: default chip edge in pixels (smaller when the labelled area is smaller)
DEFAULT_CHIP = 64
#: validations (epochs) of an automatic schedule
AUTO_EPOCHS = 10
#: an automatic schedule shows each labelled training pixel about this many times (in chips of the chip size) ...
PIXEL_PASSES = 20
#: ... within these bounds on the number of optimizer steps
MIN_STEPS, MAX_STEPS = 200, 1000
#: optimizer steps of per-pixel pre-training (batches of ``pixel_batch`` labelled pixels) before the chip schedule
PIXEL_STEPS = 1000
#: self-training rounds of the default recipe (each trains a fresh model on real labels + the previous model's
#: confident pseudo-labels on the unlabelled pixels, :mod:`geoseg.train.pseudo`). Off by default: over two seeds of
#: benchmarks/accuracy.py one round changed the held-out mIoU by +0.002 on average (+0.030 to -0.009 per fold) at
#: twice the training time (benchmarks/results/accuracy_cpu.txt, runs 6 and 8)
SELF_TRAINING = 0
#: a self-training round's model replaces the previous round's unless its validation mIoU is lower by more than this
#: (validation blocks lie in the labelled region, which pseudo-labels cannot improve; a larger drop means the
#: pseudo-labels misled the new model)
SELF_TRAINING_TOLERANCE = 0.02
#: after validation has chosen the epoch, train the model again on every labelled pixel (the validation blocks too)
#: with the same schedule up to that epoch (or a later one as good, see REFIT_TOLERANCE), and save that model (the
#: reported validation is the first model's). Off
#: by default: over three seeds of benchmarks/accuracy.py it moved the held-out mIoU by +0.001 a fold on average
#: (+0.044 to -0.057 per fold) at up to twice the training time (benchmarks/results/accuracy_cpu.txt, runs 17-18)
REFIT = False
#: the refit trains up to the latest epoch of the kept round whose validation mIoU is within this of the best: among
#: epochs validation cannot tell apart, the one furthest along the schedule (a one-cycle schedule ends annealed)
REFIT_TOLERANCE = 0.01
#: labelled validation blocks an automatic block size aims at
TARGET_BLOCKS = 25
#: images with at most this many bands get the spatial network of the default recipe (:func:`default_network`)
SPATIAL_MAX_BANDS = 1
#: ``arch`` value (as None) asking for the default recipe's network
DEFAULT_ARCH = "default"
#: the default recipe's network for few bands, and for more (``arch``, ``arch_kwargs``, ``loss``)
SPATIAL_NETWORK: dict[str, Any] = {"arch": "unet", "arch_kwargs": {"width": 16}, "loss": "ce_dice"}
SPECTRAL_NETWORK: dict[str, Any] = {"arch": "ssnet", "arch_kwargs": {}, "loss": "ce"}


def default_network(bands: int) -> dict[str, Any]:
    """The network and loss the default recipe trains on an image of ``bands`` bands (after band selection).

    With many bands the spectrum of a pixel carries most of its class, and ``ssnet`` (a per-pixel spectral path
    beside a light context path, fused with a per-pixel classifier) beats a U-Net and a pixel-wise forest. From a
    single band (panchromatic, one SAR channel) a pixel's value says little and the class lies in the spatial
    pattern: there ssnet's context path learnt nothing in any setting tried (SpaceNet buildings and roads, level with
    the forest), while a U-Net (width 16) trained with cross entropy + soft Dice (Milletari et al. 2016; the Dice
    term keeps a 3-4 % object class from collapsing into the background) beat the forest by 0.06-0.20 mIoU on all
    four folds (``benchmarks/accuracy.py``, runs 13-14 in benchmarks/results/accuracy_cpu.txt).

    Returns a new dict: ``arch``, ``arch_kwargs`` and ``loss``.
    """
    chosen = SPATIAL_NETWORK if bands <= SPATIAL_MAX_BANDS else SPECTRAL_NETWORK
    return {"arch": chosen["arch"], "arch_kwargs": dict(chosen["arch_kwargs"]), "loss": chosen["loss"]}


@dataclass
class TrainResult:
    """The best checkpoint and how training went. ``baseline`` holds the pixel-wise forest's report on the same
    validation pixels when one was asked for. ``refit`` describes the final training on every label when one replaced
    the validated model (``epochs``, ``training_pixels`` per class, ``seconds``), else None; ``best_miou`` and
    ``report`` are then the validated model's, an estimate for the saved one (trained on the validation blocks too)."""

    checkpoint: Path
    best_miou: float
    best_epoch: int
    epochs_run: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    report: SegmentationReport | None = None
    state: Path | None = None
    baseline: SegmentationReport | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    refit: dict[str, Any] | None = None


def _check_band_names_distinct(src: RasterSource) -> None:
    """Refuse an image whose (selected) bands share a description: the model contract names its input bands so that
    prediction can find them by name, and two bands of one name could be swapped unnoticed.

    Raises:
        InvalidParameterError: naming the bands, the shared description and the fix.
    """
    seen: dict[str, int] = {}
    for index, name in zip(src.band_indexes, src.band_names, strict=True):
        key = name.strip().casefold()
        if key in seen:
            raise InvalidParameterError(
                f"image {src.path}: bands {seen[key]} and {index} are both described {name!r}; a model finds its "
                f"bands by name, so each needs its own: give the bands distinct descriptions (e.g. rasterio's "
                f"set_band_description, or a VRT with <Description> per band) or clear them to name bands by number"
            )
        seen[key] = index


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


def _round_up(x: float, m: int) -> int:
    return int(max(m, math.ceil(x / m) * m))


@dataclass
class LabelSurvey:
    """Labelled pixels per class and the bounding box (rows, cols) of all labelled pixels."""

    counts: np.ndarray
    bbox: tuple[int, int, int, int] | None  # row0, col0, row1, col1 (exclusive)

    @property
    def pixels(self) -> int:
        return int(self.counts.sum())


def survey_labels(labels: Any, shape: tuple[int, int], n_classes: int, window: int = 512) -> LabelSurvey:
    """One pass over a label source: class counts and the labelled bounding box."""
    counts = np.zeros(n_classes, np.int64)
    r0 = c0 = 1 << 62
    r1 = c1 = -1
    h, w = shape
    for r in range(0, h, window):
        for c in range(0, w, window):
            y = labels.read(Window(c, r, min(window, w - c), min(window, h - r)))
            m = y != IGNORE_INDEX
            if not m.any():
                continue
            counts += np.bincount(y[m].ravel(), minlength=n_classes)[:n_classes]
            rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
            r0, r1 = min(r0, r + int(rows[0])), max(r1, r + int(rows[-1]) + 1)
            c0, c1 = min(c0, c + int(cols[0])), max(c1, c + int(cols[-1]) + 1)
    return LabelSurvey(counts, (r0, c0, r1, c1) if r1 > 0 else None)


def plan_training(
    survey: LabelSurvey,
    *,
    stride: int,
    chip: int | None,
    block: int | None,
    batch_size: int,
    epochs: int | None,
    chips_per_epoch: int | None,
) -> dict[str, int]:
    """The automatic parts of the recipe, from the labels.

    * chip: :data:`DEFAULT_CHIP` px, or the short side of the labelled area when smaller (a multiple of ``stride``);
    * block (validation unit): about ``sqrt(labelled / TARGET_BLOCKS)`` px, so small scenes still have blocks to
      validate on, capped at 4 chips;
    * steps: :data:`PIXEL_PASSES` passes over the labelled pixels in chips of the chip size, within
      [:data:`MIN_STEPS`, :data:`MAX_STEPS`] optimizer steps, run as :data:`AUTO_EPOCHS` epochs.
    """
    if survey.bbox is not None:
        r0, c0, r1, c1 = survey.bbox
        short = min(r1 - r0, c1 - c0)
    else:
        short = DEFAULT_CHIP
    chip = chip or min(DEFAULT_CHIP, _round_up(short, stride))
    chip = max(stride, chip // stride * stride)
    if block is None:
        block = int(np.clip(_round_up(math.sqrt(max(survey.pixels, 1) / TARGET_BLOCKS), 8), 8, 4 * chip))
    if epochs is None or chips_per_epoch is None:
        steps = int(np.clip(math.ceil(PIXEL_PASSES * survey.pixels / (batch_size * chip * chip)), MIN_STEPS, MAX_STEPS))
        if epochs is None and chips_per_epoch is None:
            epochs = AUTO_EPOCHS
            chips_per_epoch = math.ceil(steps / epochs) * batch_size
        elif chips_per_epoch is not None:
            epochs = max(1, round(steps * batch_size / chips_per_epoch))
        elif epochs is not None:
            chips_per_epoch = max(batch_size, math.ceil(steps / epochs) * batch_size)
    assert epochs is not None and chips_per_epoch is not None  # set above for every combination
    return {"chip": chip, "block": block, "epochs": int(epochs), "chips_per_epoch": int(chips_per_epoch)}


@plain_arguments
def train_model(
    image: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    bands: BandSpec = None,
    classes: list[str] | None = None,
    colors: list[list[int]] | None = None,
    class_field: str | None = None,
    background: int | None = None,
    id_field: str | None = None,
    train_area: AreaSpec = None,
    exclude_area: AreaSpec = None,
    label_nodata: float | None = None,
    layer: str | None = None,
    epochs: int | None = None,
    chip: int | None = None,
    batch_size: int = 8,
    chips_per_epoch: int | None = None,
    sampling: str = "centered",
    balance: float = 0.5,
    pixel_batch: int = 2048,
    pixel_steps: int | None = None,
    self_training: int = SELF_TRAINING,
    pseudo_threshold: float | None = None,
    refit: bool = REFIT,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    loss: str | None = None,
    class_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.05,
    ema: bool = True,
    normalization: str = "meanstd",
    val_fraction: float = 0.2,
    block: int | None = None,
    stratify: bool = True,
    patience: int | None = None,
    seed: int = 0,
    device: str | None = "auto",
    threads: int | None = None,
    amp: bool = True,
    max_seconds: float | None = None,
    tile: int = 512,
    overlap: int | None = None,
    augment: bool | str | list[str] = True,
    encoder: str | None = None,
    encoder_weights: str | os.PathLike[str] | None = None,
    adapt: str = "repeat",
    baseline: str | None = None,
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
    ``train_area`` (polygons or a pixel window, see :mod:`geoseg.train.area`) restricts the labels used to an area;
    ``exclude_area`` keeps an area out (e.g. a test region).

    The default recipe decides from the data: the network and loss from the band count when ``arch`` is None or
    ``"default"`` (:func:`default_network`: ``ssnet`` with cross entropy, or a U-Net with cross entropy + Dice for
    single-band images; ``arch_kwargs`` and ``loss`` given apply to it; ``TrainResult.plan["network"]`` says what
    was trained), and (:func:`plan_training`) ``chip`` size, validation ``block`` size, and the number of steps
    (``epochs`` x ``chips_per_epoch``) from the labelled pixel count. Give any of them to fix it.
    Chips are ``centered`` on labelled pixels with classes drawn in proportion to the square root of their frequency
    (or ``random``, ``grid``, class-``balanced``); AdamW (``lr``, ``weight_decay``) with a one-cycle schedule;
    cross entropy with ``label_smoothing``; an exponential moving average of the weights (``ema``) is what is
    validated and saved. ``loss="weighted_ce"`` weighs classes by capped square-root inverse frequency over all
    training blocks, or by the user's ``class_weights`` (one per class), which weigh every loss
    (:func:`geoseg.train.losses.make_loss`; a class of weight 0 is not learnt, left out of ``trained_classes`` and never
    predicted).
    Models with a per-pixel classifier (``forward_pixels``, e.g. ``ssnet``) train it on batches of ``pixel_batch``
    labelled pixels drawn across all training blocks: first alone for ``pixel_steps`` steps (default
    :data:`PIXEL_STEPS`; 0 skips it; not repeated on ``resume``), then beside every chip batch. A pixel classifier
    trained on pixels from the whole training area is what a random forest is, and what generalises to another
    region; the chips' few steps alone leave it undertrained on small scenes (``benchmarks/accuracy.py``).

    ``self_training`` rounds (default :data:`SELF_TRAINING`: none, the real labels only) follow: the best model
    so far predicts the whole image (tiled, as ``predict_raster``), every valid pixel without a real label, outside
    the validation blocks and the excluded area, whose predicted class has a probability >= ``pseudo_threshold``
    (above 1/classes, else every pixel would qualify: InvalidParameterError) gets that class as a
    pseudo-label, and a fresh model (seed ``seed + round``) trains with the same plan on the real labels plus the
    pseudo-labels (:mod:`geoseg.train.pseudo`). Only the image of unlabelled pixels is used, including outside the
    training area (never their labels). It replaces the previous round's checkpoint unless its validation mIoU is
    more than :data:`SELF_TRAINING_TOLERANCE` below; ``TrainResult.history`` numbers the epochs of all rounds in
    sequence and records each one's ``round``. The pseudo-label raster lives in a temporary folder beside ``out``
    (removed at the end). Cost: one more training and one prediction of the image per round. A
    :class:`~geoseg.errors.SelfTrainingWarning` says when the rounds cannot change the model: ``pseudo_threshold``
    given (default None: :data:`~geoseg.train.pseudo.PSEUDO_THRESHOLD`) without rounds, a round that finds no pixel
    to pseudo-label (it and the rounds after it are skipped), or ``max_seconds`` reached before the rounds.

    Validation holds out whole blocks (``val_fraction`` of the labelled pixels; ``stratify``: every class in two or
    more blocks is validated and keeps at least half its pixels for training). The checkpoint with the best validation
    mIoU is written to ``out`` (safetensors + ModelConfig, which records ``trained_classes``: a named class with no
    training pixel triggers a :class:`~geoseg.errors.ClassNotTrainedWarning` and is never predicted). The last epoch's
    state goes to ``out + ".train-state.pt"`` so ``resume=True`` continues an interrupted run. ``patience`` stops
    after that many epochs without improvement (default: run the whole schedule). With ``refit`` (default
    :data:`REFIT`: off), once validation has chosen the epoch (and self-training round), a fresh model with the same
    seed trains on every labelled pixel, the validation blocks' included, with the same schedule up to the latest epoch
    validation cannot tell from the best (:func:`refit_length`), and replaces the checkpoint (``TrainResult.refit``;
    the contract's ``extra["training"]["refit"]``). The reported validation
    (``best_miou``, ``report``, the contract's ``validation``) stays the validated model's: trained without those
    blocks, it estimates the saved model's accuracy rather than measuring it. Costs up to one more training; skipped
    without validation pixels, and when ``max_seconds`` runs out first (a warning says so). ``threads``: CPU threads for
    torch (default: :func:`geoseg.threads.default_threads`). ``baseline="rf"`` also fits a pixel-wise random forest
    on the training pixels and scores it on the validation pixels (``TrainResult.baseline``; needs scikit-learn).

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
        TrainingDivergedError: the loss became NaN or infinite (checked before every update, so no NaN weights are
            saved; the best checkpoint of the epochs before it remains).
    """
    if arch == DEFAULT_ARCH:
        arch = None  # the spelling front ends use for "let the default recipe choose"
    check_train_arguments(locals())
    t0 = time.perf_counter()
    if loss is not None and loss not in LOSSES:
        raise InvalidParameterError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if sampling not in SAMPLING_MODES:
        raise InvalidParameterError(f"unknown sampling {sampling!r}; choose one of {', '.join(SAMPLING_MODES)}")
    for name, value, low in (
        ("epochs", epochs, 1),
        ("chip", chip, 8),
        ("batch_size", batch_size, 1),
        ("chips_per_epoch", chips_per_epoch, 1),
        ("block", block, 1),
        ("patience", patience, 1),
    ):
        if value is not None and value < low:
            raise InvalidParameterError(f"{name} must be >= {low}, got {value}")
    if not 0 <= balance <= 1:
        raise InvalidParameterError(
            f"balance must be in [0, 1] (0: classes as frequent as labelled, 1: equal), got {balance}"
        )
    if not 0 <= label_smoothing < 1:
        raise InvalidParameterError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if baseline is not None and baseline not in BASELINES:
        raise InvalidParameterError(f"unknown baseline {baseline!r}; choose rf (a pixel-wise random forest)")
    if baseline == "rf":
        from geoseg.train.baseline import require_sklearn

        require_sklearn()  # before training, not after
    augmentations = check_augmentations(augment)
    state_file = state_path(out)
    inputs = {image: "image", labels: "labels", encoder_weights: "encoder weights"}
    saved_state = None
    if resume:
        if not state_file.exists():
            raise CheckpointError(f"cannot resume: no training state {state_file}; train without resume first")
        out_path = check_output_path(out, overwrite=True, inputs=inputs, what="checkpoint")
        saved_state = _load_state(state_file)
        if not out_path.exists():  # a state is saved after an epoch, whose checkpoint was written before it
            raise CheckpointError(
                f"cannot resume: the checkpoint {out_path} of the run that saved {state_file} is missing (moved or "
                f"deleted); train again without {option('resume', True)}, with {option('overwrite', True)}"
            )
        _check_resume(state_file, saved_state, locals(), classes=classes)
    else:
        out_path = check_output_path(out, overwrite=overwrite, inputs=inputs, what="checkpoint")
        try:
            check_output_path(state_file, overwrite=overwrite, inputs=inputs, what="training state")
        except OutputExistsError as exc:
            raise OutputExistsError(f"{exc}, or {option('resume', True)} to continue the run that saved it") from exc
    with ExitStack() as stack:
        stack.enter_context(torch_threads(threads))
        gen = seed_everything(seed)
        dev = resolve_device(device)
        src = stack.enter_context(RasterSource(image, bands=bands))
        _check_band_names_distinct(src)
        lab: Any = open_labels(
            labels, src, classes=classes, class_field=class_field, background=background, nodata=label_nodata,
            layer=layer, id_field=id_field,
        )  # fmt: skip
        stack.callback(lambda: lab.close())
        if train_area is not None or exclude_area is not None:
            lab = AreaLabels(
                lab,
                PixelArea(train_area, src, what="training area") if train_area is not None else None,
                PixelArea(exclude_area, src, what="excluded area") if exclude_area is not None else None,
                IGNORE_INDEX,
            )
        names = lab.classes
        n_classes = len(names)
        if pseudo_threshold is not None and not self_training:
            warnings.warn(
                f"{option('pseudo_threshold')} {pseudo_threshold:g} has no effect without self-training rounds; "
                f"drop it or add rounds with {option('self_training')}",
                SelfTrainingWarning,
                stacklevel=3,
            )
        pseudo_threshold = PSEUDO_THRESHOLD if pseudo_threshold is None else pseudo_threshold
        if self_training and pseudo_threshold <= 1 / n_classes:
            raise InvalidParameterError(
                f"{option('pseudo_threshold')} {pseudo_threshold:g} is at most 1/{n_classes}: with {n_classes} classes "
                f"the most probable class of every pixel has a probability of at least 1/{n_classes}, so every "
                f"unlabelled pixel would be pseudo-labelled; choose a threshold above 1/{n_classes} (default "
                f"{PSEUDO_THRESHOLD})"
            )
        # label smoothing trains every class's probability towards at most 1 - eps + eps / K (Szegedy et al. 2016)
        most = 1 - label_smoothing + label_smoothing / n_classes
        if self_training and pseudo_threshold > most + 1e-9:
            raise InvalidParameterError(
                f"{option('pseudo_threshold')} {pseudo_threshold:g} is above {most:.3f}, the most probability a model "
                f"trained with {option('label_smoothing')} {label_smoothing:g} learns to give a class ({n_classes} "
                f"classes: 1 - {label_smoothing:g} + {label_smoothing:g}/{n_classes}), so no pixel would be "
                f"pseudo-labelled; choose a threshold at or below it (default {PSEUDO_THRESHOLD}) or less label "
                f"smoothing"
            )
        if class_weights is not None:
            check_class_weights(class_weights, names)
        survey = survey_labels(lab, src.shape, n_classes)
        if survey.pixels == 0:
            where = " inside the training area" if train_area is not None or exclude_area is not None else ""
            raise InvalidParameterError(
                f"labels {labels} cover no pixel of the image {image}{where} (every label pixel is nodata, ignored or "
                f"outside it); check that labels and image overlap (extent, CRS) and that class values are 0..K-1"
            )
        norm = compute_normalization(src, normalization, seed=seed)
        kwargs = dict(arch_kwargs or {})
        chosen_note = ""  # said with every refusal the default network's choice causes
        if arch is None:  # the default recipe's network for this band count; the user's arch_kwargs and loss win
            chosen = default_network(src.count)
            arch, kwargs, loss = chosen["arch"], {**chosen["arch_kwargs"], **kwargs}, loss or chosen["loss"]
            arch_kwargs = dict(kwargs)  # as saved: a resumed run compares the options the model was built with
            chosen_note = (
                f" (geoseg's default network for a {src.count}-band image is {arch} {chosen['arch_kwargs']} with "
                f"loss {chosen['loss']}; give {option('arch')} to choose another)"
            )
            try:
                check_model_options(arch, {**kwargs, **({"encoder": encoder} if encoder is not None else {})})
            except InvalidParameterError as exc:
                raise InvalidParameterError(f"{exc}{chosen_note}") from exc
        loss = loss or "ce"
        network = {"arch": arch, "arch_kwargs": dict(kwargs), "loss": loss, "chosen_from_bands": bool(chosen_note)}
        if encoder is not None:
            kwargs["encoder"] = encoder
        net = create_model(arch, in_channels=src.count, num_classes=n_classes, **kwargs)
        stride = model_stride(net, arch)
        plan = plan_training(
            survey,
            stride=stride,
            chip=chip,
            block=block,
            batch_size=batch_size,
            epochs=epochs,
            chips_per_epoch=chips_per_epoch,
        )
        chip, blk, epochs, chips_per_epoch = plan["chip"], plan["block"], plan["epochs"], plan["chips_per_epoch"]
        reader = ChipReader(src, lab, norm, chip, blk)
        all_blocks = block_split(src.shape, blk, 0.0, seed).train
        hists = {o: reader.block_histogram(*o) for o in all_blocks}  # one pass over the labels, cached
        present = [names[k] for k, c in enumerate(np.sum(list(hists.values()), axis=0)) if c > 0]
        if len(present) < 2:
            raise InvalidParameterError(
                f"labels {labels} hold only class {present} on the valid pixels of the image {image}"
                f"{' inside the training area' if train_area is not None or exclude_area is not None else ''}: a "
                f"model needs at least 2 classes present to learn; add labels of the other classes (or check the "
                f"label nodata, background, and the training or excluded area)"
            )
        split = block_split(src.shape, blk, val_fraction, seed, histograms=hists if stratify else None)
        if not stratify:  # blocks without labels are neither trained nor validated on
            split = type(split)(
                blk, [o for o in split.train if hists[o].sum()], [o for o in split.val if hists[o].sum()]
            )
        reader.set_roles(split)
        counts = np.zeros(n_classes, np.int64)
        for b in split.train:
            counts += hists[b]
        # a class the user weighs 0 contributes nothing to the loss: the model does not learn it, as if unlabelled
        unweighted = {i for i, w in enumerate(class_weights or []) if float(w) == 0}

        def learnt_classes(pixels: np.ndarray) -> list[str]:
            return [names[i] for i in range(n_classes) if pixels[i] > 0 and i not in unweighted]

        trained = learnt_classes(counts)
        if unweighted and len(trained) < 2:
            raise InvalidParameterError(
                f"only {len(trained)} class(es) ({', '.join(trained) or 'none'}) have both training pixels and a class "
                f"weight > 0; a model needs at least 2 classes to learn: give more classes a weight > 0 or add labels"
            )
        for k in sorted(unweighted):
            warnings.warn(
                f"class {names[k]!r} (id {k}) has class weight 0: the model does not learn it and will not predict it "
                f"(give it a weight > 0 to learn it)",
                ClassNotTrainedWarning,
                stacklevel=3,
            )
        for i in np.flatnonzero(counts == 0):
            warnings.warn(
                f"class {names[i]!r} (id {i}) has no training pixel{' in the training area' if train_area else ''}; "
                f"the model will not predict it (add labels for it or drop it from the classes)",
                ClassNotTrainedWarning,
                stacklevel=3,
            )
        rf = getattr(net, "receptive_field", None)
        auto_overlap = _round_up(rf, stride) if rf else 64
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
                "balance": balance,
                "pixel_batch": pixel_batch,
                "augment": list(augmentations),
                "epochs": epochs,
                "chips_per_epoch": chips_per_epoch,
                "batch_size": batch_size,
                "lr": lr,
                "weight_decay": weight_decay,
                "label_smoothing": label_smoothing,
                "ema": ema,
                "train_area": describe_area(train_area),
                "exclude_area": describe_area(exclude_area),
                # labels on valid image pixels (labels under image nodata are never read for training)
                "labelled_pixels": int(sum(int(h.sum()) for h in hists.values())),
                "training_pixels": {n: int(c) for n, c in zip(names, counts)},
            }
        }

        def initialise(model: torch.nn.Module) -> None:
            """The data- or file-dependent start of a fresh model: PCA spectral stem, pretrained encoder."""
            if kwargs.get("spectral_init") == "pca":
                from geoseg.models.spectral import pca_init

                sample = sample_pixels(src, seed=seed)
                sample = (sample - np.asarray(norm.shift or 0.0)) / np.asarray(norm.scale or 1.0)
                extra["spectral_pca_explained"] = float(np.sum(pca_init(model, sample.astype(np.float32))))
            if encoder_weights is not None:
                from geoseg.models.adapt import load_encoder_weights

                extra["encoder_weights"] = load_encoder_weights(
                    model,
                    encoder_weights,
                    strategy=adapt,
                    weights_bands=encoder_bands,
                    model_bands=None if kwargs.get("spectral_reduction") else src.band_names,
                )

        if not resume:
            try:
                initialise(net)
            except InvalidParameterError as exc:  # e.g. encoder weights for a network without an encoder
                raise InvalidParameterError(f"{exc}{chosen_note}") from exc
        config = ModelConfig(
            arch=arch,
            bands=src.band_names,
            classes=names,
            colors=colors or [],
            normalization=norm.to_dict(),
            arch_kwargs=kwargs,
            tile=max(tile // stride * stride, stride),
            overlap=auto_overlap if overlap is None else overlap,
            output_stride=stride,
            trained_classes=trained,
            extra=extra,
        )
        rng = np.random.default_rng(seed)

        def make_criterion(train_counts: np.ndarray) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
            weights = None
            if class_weights is not None:
                weights = torch.tensor([float(w) for w in class_weights], dtype=torch.float32)
            elif loss == "weighted_ce":
                weights = balanced_class_weights(train_counts)
            config.extra["training"]["class_weights"] = (
                None if weights is None else [round(float(w), 6) for w in weights]
            )
            return make_loss(loss, weights=weights, label_smoothing=label_smoothing)

        criterion = make_criterion(counts)
        net = net.to(dev)
        # the steps to run (the argument stays as given: a resumed run compares it with the saved one)
        pre_steps = pixel_steps
        if pre_steps is None:
            pre_steps = PIXEL_STEPS if pixel_batch and hasattr(net, "forward_pixels") else 0
        if pre_steps and not hasattr(net, "forward_pixels"):
            raise InvalidParameterError(
                f"{option('pixel_steps')} pre-trains a per-pixel classifier, which {arch!r} does not have; "
                f"drop {option('pixel_steps')} or use {option('arch')} ssnet{chosen_note}"
            )
        rounds = self_training
        # as progress shows them: the rounds one after the other, then the refit (its length once validation chose it)
        total_epochs = epochs * (1 + rounds + (refit and val_fraction > 0))
        config.extra["training"]["self_training"] = rounds
        config.extra["training"]["pseudo_threshold"] = pseudo_threshold
        history: list[dict[str, Any]]
        best, best_epoch, history, best_report, stale, start, first_round = -1.0, 0, [], None, 0, 1, 0
        teacher_state: dict[str, torch.Tensor] | None = None
        val_reads = reader.val_windows(split.val)
        if saved_state is not None:
            try:
                _check_resume(state_file, saved_state, {**locals(), "block": blk}, classes=names, bands=src.band_names)
            except CheckpointError as exc:
                raise CheckpointError(f"{exc}{chosen_note}") from exc
            first_round = int(saved_state.get("round", 0))
            teacher_state = saved_state.get("teacher")
        use_amp = amp and dev.type == "cuda"
        stopped = False
        labelled_reader, labelled_split = reader, split  # the real labels alone (the forest baseline's)
        round_data = {0: (reader, hists)}  # each round's labels: the refit trains on those of the kept round
        refit_info: dict[str, Any] | None = (saved_state or {}).get("refit")  # a finished run's, when resumed
        refit_epochs = 0
        rounds_over = False  # a self-training round found nothing to pseudo-label: the rounds after it are skipped

        def validated() -> bool:
            """Whether validation scored an epoch (and so chose the one the refit stops at)."""
            return any(not math.isnan(h["val_miou"]) for h in history)

        no_refit = option("refit", False, cli_flag="--no-refit")  # how the messages say to turn it off
        for rnd in range(first_round, rounds + 2):  # round rounds + 1: the refit on every label
            resuming = saved_state is not None and rnd == first_round
            refitting = rnd > rounds
            if rounds_over and not refitting:
                continue
            if refitting:
                if refit and refit_info is None and not validated():
                    warnings.warn(
                        f"{option('refit', True)} trains again on every label once validation has chosen the epoch, "
                        + (
                            f"but {option('val_fraction')} is 0"
                            if not val_fraction
                            else "but no labelled pixel fell in the validation blocks"
                        )
                        + ": the model already trained on every training label, so there is nothing to add",
                        UserWarning,
                        stacklevel=3,
                    )
                if not refit or refit_info is not None or not validated():
                    if refit and history:  # the planned refit does not run: progress ends at the last epoch
                        report_progress(progress, history[-1]["epoch"], history[-1]["epoch"])
                    break  # not asked for, nothing validated to choose the epoch, or done before an interruption
                kept = int(config.extra["training"].get("best_round", 0))
                if kept not in round_data:
                    warnings.warn(
                        f"the saved model is self-training round {kept}'s, whose pseudo-labels were lost with the "
                        f"interruption; it is kept as validated, without training again on every label",
                        UserWarning,
                        stacklevel=3,
                    )
                    break
                reader, hists = round_data[kept]
                split = type(split)(blk, [o for o in all_blocks if hists[o].sum()], [])
                reader.set_roles(split)
                counts = np.sum([hists[o] for o in split.train], axis=0)
                criterion = make_criterion(counts)
                gen = seed_everything(seed + kept)
                rng = np.random.default_rng(seed + kept)
                net = create_model(arch, in_channels=src.count, num_classes=n_classes, **kwargs)
                initialise(net)
                net = net.to(dev)
                refit_epochs = refit_length(history, best_epoch, kept, epochs)
                total_epochs = rnd * epochs + refit_epochs  # what progress counts from here on
                refit_t0 = time.perf_counter()
            elif rnd > 0:
                # self-training: the best model so far labels the pixels it is sure of; a fresh model trains on them
                # beside the real labels, validated on the same real-label blocks
                from geoseg.models import load_checkpoint
                from geoseg.train.pseudo import PseudoLabels, write_pseudo_labels

                if teacher_state is None or not resuming:
                    teacher_net, _ = load_checkpoint(out_path)
                    teacher_state = {k: v.detach().cpu() for k, v in teacher_net.state_dict().items()}
                teacher_net = create_model(arch, in_channels=src.count, num_classes=n_classes, **kwargs)
                teacher_net.load_state_dict(teacher_state)
                work = Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix=".geoseg-pseudo-", dir=out_path.parent))
                )
                pseudo_path, pseudo_counts, candidates = write_pseudo_labels(
                    image, (teacher_net.eval(), config), labelled_reader, work, threshold=pseudo_threshold, bands=bands,
                    device=device, threads=threads, exclude=lab.exclude if isinstance(lab, AreaLabels) else None,
                )  # fmt: skip
                del teacher_net
                if not pseudo_counts.sum():
                    why = (
                        f"none of the {candidates} unlabelled pixels reached {option('pseudo_threshold')} "
                        f"{pseudo_threshold:g} (the model is not that sure of any; a lower threshold takes more)"
                        if candidates
                        else "every valid pixel outside the validation blocks and the excluded area has a real label"
                    )
                    warnings.warn(
                        f"self-training round {rnd}: nothing to pseudo-label: {why}; round {rnd}"
                        + (" and any after it are skipped" if rnd < rounds else " is skipped")
                        + (
                            ", so the saved model is round 0's"
                            if rnd == 1
                            else f", so the saved model is the best of rounds 0-{rnd - 1}"
                        ),
                        SelfTrainingWarning,
                        stacklevel=3,
                    )
                    rounds_over = True
                    continue  # to the refit
                round_labels = PseudoLabels(lab, pseudo_path)
                stack.callback(round_labels.close)
                reader = ChipReader(src, round_labels, norm, chip, blk)
                val_set = set(split.val)
                hists = {o: reader.block_histogram(*o) for o in all_blocks}
                split = type(split)(blk, [o for o in all_blocks if o not in val_set and hists[o].sum()], split.val)
                reader.set_roles(split)
                round_data[rnd] = (reader, hists)
                counts = np.sum([hists[o] for o in split.train], axis=0)
                criterion = make_criterion(counts)
                config.extra["training"]["pseudo_pixels"] = {n: int(c) for n, c in zip(names, pseudo_counts)}
                gen = seed_everything(seed + rnd)
                rng = np.random.default_rng(seed + rnd)
                net = create_model(arch, in_channels=src.count, num_classes=n_classes, **kwargs)
                if not resuming:
                    initialise(net)
                net = net.to(dev)
                # the previous round's model stays unless this one validates within SELF_TRAINING_TOLERANCE of it
                if not resuming:
                    best, stale = best - SELF_TRAINING_TOLERANCE, 0
            if pre_steps and not resuming:
                pre_steps = _pretrain_pixels(
                    net, reader, criterion, rng, gen, steps=pre_steps, pixel_batch=pixel_batch or 2048, lr=lr,
                    weight_decay=weight_decay, balance=balance, augmentations=augmentations, dev=dev,
                    progress=progress, epochs=total_epochs, sampling=sampling, train_blocks=split.train,
                    batch_size=batch_size, shown=rnd * epochs + 1, kept=out_path if best_epoch else None,
                )  # fmt: skip
            if not resuming:
                config.extra["training"]["pixel_steps"] = pre_steps
            opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
            steps_per_epoch = max(1, -(-chips_per_epoch // batch_size))
            total_steps = epochs * steps_per_epoch
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps, pct_start=0.15)
            averaged = ExponentialAverage(net, total_steps) if ema else None
            start = 1
            if resuming:
                assert saved_state is not None
                st = saved_state
                net.load_state_dict(st["model"])
                opt.load_state_dict(st["optimizer"])
                sched.load_state_dict(st["scheduler"])
                gen.set_state(st["torch_gen"])
                torch.set_rng_state(st["torch_rng"])
                rng.bit_generator.state = st["numpy_rng"]
                if averaged is not None and "ema" in st:
                    averaged.model.load_state_dict(st["ema"])
                    averaged.updates = int(st.get("ema_updates", 0))
                best, best_epoch, stale, start = st["best"], st["best_epoch"], st["stale"], st["epoch"] + 1
                if patience is not None and stale >= patience:
                    start = epochs + 1  # the round had stopped early: an uninterrupted run trains no more of it
                history = list(st["history"])
                config = ModelConfig.from_json(st["config"])
            for epoch in range(start, (refit_epochs if refitting else epochs) + 1):
                shown = rnd * epochs + epoch  # the epoch as progress and the history count it
                net.train()
                losses = []
                origins = reader.origins(sampling, split.train, chips_per_epoch, rng, balance=balance)
                for group in _batches(origins, batch_size):
                    _poll_cancel(progress, shown, total_epochs)
                    xs, ys = zip(*(reader.read(r, c, role=TRAIN) for r, c in group))
                    x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
                    px: torch.Tensor | None = None
                    py: torch.Tensor | None = None
                    if pixel_batch and hasattr(net, "forward_pixels"):
                        batch = _pixel_batch(
                            reader, pixel_batch, rng, gen, balance=balance, augmentations=augmentations,
                            chips=(x.numpy(), y.numpy()),
                        )  # fmt: skip
                        if batch is not None:
                            px, py = batch[0].to(dev), batch[1].to(dev)
                    x, y = apply_augmentations(x, y, augmentations, gen)
                    x, y = x.to(dev), y.to(dev)
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                        logits = net(x)
                        aux = auxiliary_outputs(net)
                    lval = criterion(logits.float(), y)
                    for w, a in aux:
                        lval = lval + w * criterion(a.float(), y)
                    if px is not None and py is not None:
                        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                            plog = net.forward_pixels(px)  # type: ignore[operator]
                        lval = lval + _pixel_loss(criterion, plog, py)
                    _check_finite(lval, f"epoch {shown}", lr, out_path if best_epoch else None)
                    opt.zero_grad(set_to_none=True)
                    lval.backward()
                    opt.step()
                    sched.step()
                    if averaged is not None:
                        averaged.update(net)
                    losses.append(float(lval.detach()))
                model_to_use = averaged.model if averaged is not None else net
                if has_batchnorm(model_to_use):
                    recalibrate_batchnorm(model_to_use, reader, split.train, rng, batch_size, dev, sampling=sampling)
                if refitting:  # nothing left to validate on: every label trains
                    report_progress(
                        progress,
                        shown,
                        total_epochs,
                        f"loss {np.mean(losses) if losses else float('nan'):.3f} (training again on every label, "
                        f"epoch {epoch} of {refit_epochs})",
                    )
                    if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                        stopped = True
                        break
                    continue
                rep = _validate(
                    model_to_use, reader, val_reads or [], n_classes, names, dev, batch_size, config.untrained_class_ids
                )
                # no validation: the latest epoch is kept
                val_miou = rep.miou if val_reads and not math.isnan(rep.miou) else float(shown)
                if val_fraction > 0 and math.isnan(rep.miou) and not history:
                    warnings.warn(
                        f"no labelled pixel fell in the validation blocks ({survey.pixels} labelled pixels in "
                        f"{blk}-px blocks), so validation scores nothing and the last epoch is kept; label more "
                        f"pixels, spread over several blocks (validation takes whole blocks)",
                        UserWarning,
                        stacklevel=3,
                    )
                history.append(
                    {
                        "epoch": shown,
                        "round": rnd,
                        "loss": float(np.mean(losses)) if losses else float("nan"),
                        "val_miou": rep.miou,
                        "per_class_iou": {c.name: c.iou for c in rep.classes},
                    }
                )
                if val_miou > best + 1e-6:
                    best, best_epoch, best_report, stale = val_miou, shown, rep, 0
                    config.extra["validation"] = rep.to_dict()
                    config.extra["training"]["best_epoch"] = shown
                    config.extra["training"]["best_round"] = rnd
                    save_checkpoint(out_path, model_to_use, config, overwrite=True)
                else:
                    stale += 1
                _save_state(
                    state_file, net, opt, sched, gen, rng, config, averaged, epoch=epoch, round=rnd,
                    teacher=teacher_state if rnd else None, best=best, best_epoch=best_epoch, stale=stale,
                    history=history,
                )  # fmt: skip
                per_class = " ".join(f"{k}={v:.2f}" for k, v in history[-1]["per_class_iou"].items() if v == v)
                report_progress(
                    progress,
                    shown,
                    total_epochs,
                    f"loss {history[-1]['loss']:.3f} val mIoU {rep.miou:.3f} [{per_class}]"
                    + (f" (self-training round {rnd})" if rnd else ""),
                )
                if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                    stopped = True
                    break
                if patience is not None and stale >= patience:
                    break
            if refitting and not stopped:
                saved = read_config(out_path)  # the validated model's contract, validation report included
                learnt = learnt_classes(counts)
                newly = [n for n in learnt if n not in (saved.trained_classes or names)]
                if newly:
                    warnings.warn(
                        f"class(es) {', '.join(map(repr, newly))} had training pixels only in the validation blocks: "
                        f"the model trained again on every label learnt them and predicts them, although the "
                        f"validation report could not score them",
                        UserWarning,
                        stacklevel=3,
                    )
                saved.trained_classes = learnt
                refit_info = {
                    "epochs": refit_epochs,
                    "round": kept,
                    "pixels": int(counts.sum()),
                    "training_pixels": {n: int(c) for n, c in zip(names, counts)},
                    "class_weights": config.extra["training"]["class_weights"],
                    "seconds": round(time.perf_counter() - refit_t0, 3),
                }
                saved.extra["training"]["refit"] = refit_info
                save_checkpoint(out_path, model_to_use, saved, overwrite=True)
                _mark_refit(state_file, refit_info)
            if stopped and not refitting and epoch < epochs:
                warnings.warn(
                    f"training reached {option('max_seconds')} {max_seconds:g} s after epoch {epoch} of {epochs}"
                    + (f" of self-training round {rnd}" if rnd else "")
                    + "; the best epoch so far is kept (raise the time limit to train the whole schedule)",
                    UserWarning,
                    stacklevel=3,
                )
            if stopped:
                if refitting:
                    warnings.warn(
                        f"training reached {option('max_seconds')} {max_seconds:g} s while training again on every "
                        f"label; the validated model is kept (raise the time limit, or {no_refit})",
                        UserWarning,
                        stacklevel=3,
                    )
                elif refit and validated():
                    warnings.warn(
                        f"training reached {option('max_seconds')} {max_seconds:g} s before training again on every "
                        f"label; the validated model is kept (raise the time limit to run it)",
                        UserWarning,
                        stacklevel=3,
                    )
                if rnd < rounds:
                    warnings.warn(
                        f"training reached {option('max_seconds')} {max_seconds:g} s in "
                        + (f"self-training round {rnd}" if rnd else "the training on the real labels")
                        + f"; self-training round(s) {rnd + 1}..{rounds} did not run (raise the time limit to "
                        "run them)",
                        SelfTrainingWarning,
                        stacklevel=3,
                    )
                break
        forest_report = None
        if baseline == "rf":
            labelled_reader.set_roles(labelled_split)  # the refit may have made every block a training block
            forest_report = _forest_on_split(
                src, labelled_reader, labelled_split, names, val_reads, seed, threads
            )  # fmt: skip
    if best_report is None and out_path.exists():
        val = read_config(out_path).extra.get("validation")
        best_report = SegmentationReport.from_matrix(np.asarray(val["confusion_matrix"]), names) if val else None
    if best_report is not None:  # the saved checkpoint's (a self-training round's threshold is not a score)
        best = best_report.miou
    elif not val_reads:
        best = float("nan")
    return TrainResult(
        out_path,
        best,
        best_epoch,
        len(history),
        time.perf_counter() - t0,
        history,
        best_report,
        state_file,
        forest_report,
        {**plan, "network": network},
        refit_info,
    )


def refit_length(history: Sequence[dict[str, Any]], best_epoch: int, kept: int, epochs: int) -> int:
    """Epochs the refit trains: the latest epoch of self-training round ``kept`` (rounds of ``epochs`` epochs) whose
    validation mIoU is within :data:`REFIT_TOLERANCE` of the best epoch's (``best_epoch``, numbered across rounds as
    ``history`` numbers them), counted from the round's start. A validation curve that falls after its best epoch
    stops the refit there; a flat one lets it run the whole schedule."""
    best = next(h["val_miou"] for h in history if h["epoch"] == best_epoch)
    close = [h["epoch"] for h in history if h.get("round", 0) == kept and h["val_miou"] >= best - REFIT_TOLERANCE]
    return max(close) - kept * epochs


def _mark_refit(path: Path, info: dict[str, Any]) -> None:
    """Record in the training state that the refit replaced the checkpoint, so resuming the finished run leaves it."""
    from geoseg.models.safe_load import torch_load

    state = torch_load(path, what="training state")
    state["refit"] = info
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(state, tmp)


def _pixel_batch(
    reader: ChipReader,
    size: int,
    rng: np.random.Generator,
    gen: torch.Generator,
    *,
    balance: float,
    augmentations: Sequence[str],
    chips: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A batch of labelled training pixels, ``(N, bands)`` float32 and ``(N,)`` int64 class ids, with the spectral
    augmentation when asked for; None when the training blocks hold no labelled pixel."""
    pxn, pyn = reader.pixel_batch(size, rng, balance=balance, chips=chips)
    if not len(pyn):
        return None
    pt, yt = torch.from_numpy(pxn), torch.from_numpy(pyn)
    if "spectral" in augmentations:
        pt = apply_augmentations(pt[:, :, None, None], yt[:, None, None], ("spectral",), gen)[0][:, :, 0, 0]
    return pt, yt


def _pixel_loss(
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], logits: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """The loss of ``forward_pixels`` logits ``(k * N, classes)`` against ``(N,)`` class ids: an ensemble stacks its
    k members' logits (:mod:`geoseg.models.ensemble`), so the targets are repeated k times and the mean loss scaled
    by k, giving the sum of the members' losses (each member trains as it would alone)."""
    k = logits.shape[0] // max(1, targets.shape[0])
    if k > 1:
        targets = targets.repeat(k)
    return criterion(logits.float()[:, :, None], targets[:, None]) * max(1, k)


def _pretrain_pixels(
    net: torch.nn.Module,
    reader: ChipReader,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    rng: np.random.Generator,
    gen: torch.Generator,
    *,
    steps: int,
    pixel_batch: int,
    lr: float,
    weight_decay: float,
    balance: float,
    augmentations: Sequence[str],
    dev: torch.device,
    progress: ProgressCallback | None,
    epochs: int,
    sampling: str,
    train_blocks: list[tuple[int, int]],
    batch_size: int,
    shown: int = 1,
    kept: Path | None = None,
) -> int:
    """Train ``net``'s per-pixel classifier (``forward_pixels``) alone for ``steps`` AdamW steps with a one-cycle
    schedule peaking at ``lr``, on batches of ``pixel_batch`` labelled pixels from the training blocks (drawn from
    every training pixel when the raster is held in memory, else from ``batch_size`` chips read per step). Polls
    ``progress`` for a cancel every step, as chip training does (``shown``: the epoch of ``epochs`` it reports).
    Returns the steps run (0: no labelled pixel). Raises TrainingDivergedError at a non-finite loss (``kept``: the
    checkpoint a previous round left, for the message)."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    net.train()
    for step in range(steps):
        _poll_cancel(progress, shown, epochs)
        chips = None
        if not reader.in_memory:
            origins = reader.origins(sampling, train_blocks, batch_size, rng, balance=balance)
            xs, ys = zip(*(reader.read(r, c, role=TRAIN) for r, c in origins))
            chips = (np.stack(xs), np.stack(ys))
        batch = _pixel_batch(reader, pixel_batch, rng, gen, balance=balance, augmentations=augmentations, chips=chips)
        if batch is None:
            return step
        logits = net.forward_pixels(batch[0].to(dev))  # type: ignore[operator]
        loss = _pixel_loss(criterion, logits, batch[1].to(dev))
        _check_finite(loss, f"the per-pixel pre-training (step {step + 1})", lr, kept)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return steps


def _check_finite(loss: torch.Tensor, where: str, lr: float, kept: Path | None) -> None:
    """Stop training at a NaN or infinite loss: one more step would make every weight NaN, and the model saved
    after it would predict one class everywhere.

    Raises:
        TrainingDivergedError: saying where, what to change, and which checkpoint (if any) is kept.
    """
    if torch.isfinite(loss):
        return
    keep = f"the best checkpoint before it stays at {kept}" if kept else "no checkpoint was written"
    raise TrainingDivergedError(
        f"training diverged: the loss became {float(loss.detach())} in {where}; lower {option('lr')} (now {lr:g}) or "
        f"check the image for extreme or non-finite values outside its nodata; {keep}"
    )


def _poll_cancel(progress: ProgressCallback | None, epoch: int, epochs: int) -> None:
    """Before each batch: let ``progress`` stop training within one batch, not one epoch (it sees the epochs
    completed so far and no message).

    Raises:
        CancelledError: ``progress`` returned True.
    """
    report_progress(progress, epoch - 1, epochs)


class ExponentialAverage:
    """An exponential moving average of a model's weights (Polyak averaging), updated after every step.

    The decay grows with the step count, ``min(1 - 1/(0.1 * total_steps), (1 + n) / (10 + n))``, so early
    averages follow the weights closely and the last tenth of training is averaged (as in SWA/EMA practice:
    Izmailov et al. 2018; Polyak & Juditsky 1992). Buffers (BatchNorm statistics) are copied, not averaged.
    """

    def __init__(self, net: torch.nn.Module, total_steps: int) -> None:
        self.model = copy.deepcopy(net).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.max_decay = 1.0 - 1.0 / max(10.0, 0.1 * total_steps)
        self.updates = 0

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.max_decay, (1 + self.updates) / (10 + self.updates))
        for a, p in zip(self.model.parameters(), net.parameters()):
            a.lerp_(p.detach(), 1 - d)
        for mine, theirs in zip(self.model.buffers(), net.buffers()):
            mine.copy_(theirs)


def has_batchnorm(net: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


@torch.no_grad()
def recalibrate_batchnorm(
    net: torch.nn.Module,
    reader: ChipReader,
    blocks: list[tuple[int, int]],
    rng: np.random.Generator,
    batch_size: int,
    device: torch.device,
    *,
    sampling: str = "centered",
    batches: int = 8,
) -> None:
    """Recompute BatchNorm running statistics as plain averages over ``batches`` training batches ("precise BN",
    Wu & Johnson 2021), so evaluation uses the statistics of the data, not a momentum average that trailed the
    weights during training. Uses its own random generator state (the training stream is not disturbed)."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or not blocks:
        return
    local = np.random.default_rng(rng.integers(0, 2**63))
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = net.training
    net.train()
    for group in _batches(reader.origins(sampling, blocks, batches * batch_size, local), batch_size):
        x = torch.from_numpy(np.stack([reader.read(r, c, role=TRAIN)[0] for r, c in group])).to(device)
        net(x)
    for m, (momentum, _) in zip(bns, saved):
        m.momentum = momentum
    net.train(was_training)
    if not was_training:
        net.eval()


def _forest_on_split(
    src: RasterSource,
    reader: ChipReader,
    split: Any,
    names: list[str],
    val_reads: list,
    seed: int,
    threads: int | None,
) -> SegmentationReport:
    """The pixel-wise forest baseline on the training blocks, scored on the same validation pixels as the model."""
    from geoseg.train.baseline import FOREST_PIXELS, fit_forest, forest_classes, sample_labelled_pixels

    class _TrainLabels:
        def read(self, window: Window) -> np.ndarray:
            y = reader.labels.read(window)
            rr = np.arange(int(window.row_off), int(window.row_off + window.height)) // reader.block
            cc = np.arange(int(window.col_off), int(window.col_off + window.width)) // reader.block
            y[reader.roles[rr[:, None], cc[None, :]] != TRAIN] = IGNORE_INDEX
            return y

    windows = [reader.block_window(*b) for b in split.train]
    x, y = sample_labelled_pixels(src, _TrainLabels(), windows, FOREST_PIXELS, seed=seed)
    forest = fit_forest(x, y, seed=seed, threads=threads or torch.get_num_threads())
    cm = ConfusionMatrix(len(names))
    for _, _, _, keep in val_reads:
        yv = reader.labels.read(keep)
        data, valid = src.read(keep)
        m = (yv != IGNORE_INDEX) & valid
        rr = np.arange(int(keep.row_off), int(keep.row_off + keep.height)) // reader.block
        cc = np.arange(int(keep.col_off), int(keep.col_off + keep.width)) // reader.block
        m &= reader.roles[rr[:, None], cc[None, :]] == VAL
        if m.any():
            cm.update(forest_classes(forest, data)[m], yv[m])
    return cm.report(names)


def _save_state(
    path: Path, net: Any, opt: Any, sched: Any, gen: Any, rng: Any, config: ModelConfig, averaged: Any, **info: Any
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
    if averaged is not None:
        state["ema"] = {k: v.detach().cpu() for k, v in averaged.model.state_dict().items()}
        state["ema_updates"] = averaged.updates
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
    # None: decided from the data by the automatic plan (compared again once the plan has decided)
    chip = None if args["chip"] is None else max(stride, int(args["chip"]) // stride * stride)
    kwargs = dict(args["arch_kwargs"] or {})
    if args["encoder"] is not None:
        kwargs["encoder"] = args["encoder"]
    requested = {k: args.get(k) for k in RESUME_OPTIONS} | {
        # the default network's options are compared once the band count has chosen it
        "arch_kwargs": kwargs if args["arch"] is not None else None,
        "chip": chip,
        "block": args["block"],
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
    net: torch.nn.Module,
    reader: ChipReader,
    reads: list,
    n_classes: int,
    names: list[str],
    dev: torch.device,
    bs: int,
    untrained: Sequence[int] = (),
) -> SegmentationReport:
    """Confusion matrix of ``net`` on the validation pixels (each read: row, col, size, block window kept). The
    ``untrained`` class ids never win, as in prediction (:class:`geoseg.inference.predict.UntrainedClassMask`), so
    the validation scores the map that prediction will make."""
    net.eval()
    cm = ConfusionMatrix(n_classes)
    by_size: dict[int, list] = {}
    for item in reads:
        by_size.setdefault(item[2], []).append(item)
    with torch.inference_mode():
        for size, items in by_size.items():
            for group in _batches(items, bs):
                chips = [reader.read(r, c, role=VAL, keep=keep, size=size) for r, c, _, keep in group]
                x = torch.from_numpy(np.stack([g[0] for g in chips])).to(dev)
                logits = net(x)
                if untrained:
                    logits[:, list(untrained)] = -1e4
                pred = logits.argmax(1).cpu().numpy()
                for p, (_, y) in zip(pred, chips):
                    cm.update(p, y, y != IGNORE_INDEX)
    return cm.report(names)
