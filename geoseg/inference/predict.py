"""predict_raster: stream a raster through a model into a georeferenced class map (and optional probabilities).

The pipeline of ``../DESIGN.md``, one module per stage::

    RasterSource -> TileGrid -> TileReader -> BatchRunner (model) -> Stitcher -> PieceWriter
    (io/read.py)   (tiling.py)  (reader.py)   (engine.py)            (stitch.py)  (writer.py, outputs.py)

Tiles are grouped in grid order into batches; each batch has a slot (a host buffer, pinned on CUDA) that the tile
reader fills in place with normalized, padded tiles assembled from whole input blocks each decoded once. On CUDA the
model runs batch k while the reader threads fill batch k+1 and the main thread stitches batch k-1; on CPU the three
take turns on the calling thread, because the model already uses every core. A stitcher turns tiles into finished
pieces of the output (the tile cores, for center stitching); a writer thread assembles them into whole GeoTIFF
blocks in temporary files that are renamed into place only when complete. Memory is bounded by the slots, the decoded
input blocks still needed, the partly filled output blocks (one block row of the width) and a bounded GDAL block
cache, whatever the raster size.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geoseg.errors import InvalidParameterError, ModelContractError, NotGeoreferencedWarning, NoValidDataError
from geoseg.hints import option
from geoseg.inference.bands import match_bands
from geoseg.inference.crf import CRF_KERNEL
from geoseg.inference.engine import BatchRunner, auto_batch_size, class_dtype
from geoseg.inference.outputs import OutputPlan, open_outputs
from geoseg.inference.reader import TileReader, default_cache_mb, default_workers, keep_overlap_rows
from geoseg.inference.stitch import Stitcher, TileResult, make_stitcher
from geoseg.inference.writer import PieceWriter
from geoseg.io.bands import BandSpec
from geoseg.io.normalize import Normalization
from geoseg.io.read import RasterSource
from geoseg.models.checkpoint import check_output_channels, load_checkpoint
from geoseg.models.config import ModelConfig
from geoseg.models.device import resolve_device
from geoseg.models.registry import model_stride
from geoseg.options import check_numbers, plain_arguments
from geoseg.progress import ProgressCallback, report_progress
from geoseg.threads import check_threads, torch_threads
from geoseg.tiling import Tile, TileGrid

ModelLike = str | os.PathLike[str] | tuple[nn.Module, ModelConfig]


@dataclass
class PredictResult:
    """What a prediction wrote and how it went."""

    output: Path
    probabilities: Path | None
    tiles: int
    tiles_skipped: int
    pixels: int
    seconds: float
    device: str
    class_counts: dict[str, int] = field(default_factory=dict)

    @property
    def mpix_per_s(self) -> float:
        return self.pixels / 1e6 / self.seconds if self.seconds > 0 else float("inf")


def load_model(model: ModelLike, device: torch.device) -> tuple[nn.Module, ModelConfig]:
    """A (module, config) pair in eval mode on ``device``.

    ``model`` is a checkpoint (``.safetensors``/``.pt``), an exported ``.onnx`` model (run with onnxruntime), or an
    existing ``(torch.nn.Module, ModelConfig)`` pair.

    Raises:
        InvalidParameterError: a pair whose second item is not a :class:`ModelConfig`.
        CheckpointError, InputNotFoundError: the checkpoint is missing or unreadable, or its contract contradicts the
            weights (see :func:`geoseg.models.checkpoint.load_checkpoint`, :class:`geoseg.models.onnx.OnnxModel`).
    """
    if isinstance(model, tuple):
        net, config = model
        if not isinstance(config, ModelConfig):
            raise InvalidParameterError("model must be a checkpoint path or a (torch.nn.Module, ModelConfig) pair")
        check_output_channels(net.eval(), config, source="the (module, ModelConfig) pair")
        return net.to(device).eval(), config
    if str(model).lower().endswith(".onnx"):
        from geoseg.models.onnx import load_onnx

        return load_onnx(model)  # type: ignore[return-value]  # called like a module: model(x) -> logits
    return load_checkpoint(model, device=device)


class UntrainedClassMask(nn.Module):
    """Wraps a model so the classes it had no training pixel for (``ModelConfig.trained_classes``) never win:
    their logits are set to a large negative value (probability ~0, never the argmax). A class the model never saw
    has an output layer that only weight decay and the other classes' gradients shaped, and it can win on pixels
    unlike the training data; predicting it would be a guess."""

    def __init__(self, net: Any, class_ids: list[int]) -> None:
        super().__init__()
        self.net = net
        self.output_stride = getattr(net, "output_stride", None)
        self.register_buffer("class_ids", torch.as_tensor(class_ids, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x).clone()
        out[:, self.class_ids] = -1e4  # finite: bf16/fp16 softmax stays defined
        return out


@plain_arguments
def predict_raster(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    model: ModelLike,
    bands: BandSpec = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = "auto",
    stitch: str = "center",
    probabilities: str | os.PathLike[str] | None = None,
    prob_dtype: str = "uint8",
    nodata: float | None = None,
    amp: bool = True,
    workers: int | None = None,
    threads: int | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    compile: bool = False,
    tiles: tuple[range, range] | None = None,
    crf: bool | dict[str, Any] = False,
    tta: bool = False,
    cache_mb: float | None = None,
) -> PredictResult:
    """Segment ``src`` into a class raster at ``dst`` (tiled GeoTIFF, same grid and georeference as the input).

    Args:
        model: checkpoint path (``.safetensors``) or a ``(module, ModelConfig)`` pair.
        bands: raster bands for the model inputs, in model order (default: matched by name/index from the model's
            contract; never guessed).
        tile, overlap: tile edge and overlap in pixels (defaults from the model config); tile must be a multiple of
            the model's output stride.
        batch_size: tiles per forward pass (default: from free GPU memory, 4 on CPU).
        stitch: ``center``, ``mean`` or ``gaussian`` (see :mod:`geoseg.inference.stitch`).
        probabilities: optional path for a per-class probability raster (``prob_dtype`` uint8 = p*254, or float32).
        nodata: override the input nodata value. Output nodata is 255 (uint8 classes) or 65535 (uint16).
        progress: ``(done, total, message) -> bool`` callback; returning True cancels (no output is left).
        workers: reader threads (default: one per core beside a GPU, at most 32; 0 on CPU, where tiles are read
            between forward passes on the calling thread because the model already uses every core).
        threads: CPU threads for torch's operators while predicting (default:
            :func:`geoseg.threads.default_threads`, the cores not already busy; torch's setting is restored after).
        crf: refine each tile's probabilities with the convolutional CRF (:func:`geoseg.inference.crf.crf_refine`;
            True for its defaults or a dict of its options). Give an overlap of at least its kernel.
        tta: test-time augmentation: average each tile's class probabilities over its 8 flips and 90° rotations
            (4 flips for non-square tiles; :mod:`geoseg.inference.tta`), at 8x (4x) the model's cost. Seams stay
            exact: the tiles do not change.
        cache_mb: block-reuse budget in MiB: the decoded input blocks two consecutive tile rows share are held
            across the raster width (each block decoded once) only when they fit it, else decoded again for the
            next tile row. Peak memory is bounded by a small raster's plus this budget, whatever the raster size.
            Default (:func:`geoseg.inference.reader.default_cache_mb`): 64 MiB on the CPU, where the model bounds
            the speed; beside a GPU, where decoding does, 1/8 of the host memory available (cgroup limit
            included), between 64 MiB and 16 GiB. 0 never holds blocks across tile rows.
        tiles: (tile rows, tile cols) of the full tile grid (see :func:`plan_grid`): predict only that region; the
            output covers the union of their cores and equals the full prediction there (used by run_batch).

    On the CPU, call :func:`geoseg.allocator.configure_cpu_allocator` once first (the CLI does): about twice as fast
    for large tiles, at the price of a process-wide allocator setting, which is why this function does not make it.

    Raises:
        InvalidParameterError: a bad option (``prob_dtype``, ``workers``, ``cache_mb``, ``batch_size``, ``stitch``,
            ``tile``/``overlap`` not positive/non-negative integers or not fitting the model's stride, ``tiles`` with a
            stitch other than center, an unknown device or CUDA unavailable).
        OutputExistsError, OutputError: an output exists without ``overwrite``, is the input raster or the model
            file (refused even with ``overwrite``), or cannot be written.
        InputNotFoundError, NotARasterError, RasterReadError: the input raster is missing or unreadable.
        BandSelectionError, ModelContractError: the bands do not match the model's contract.
        NoValidDataError: every pixel of the input is nodata.
        CancelledError: ``progress`` asked to stop (no output is left).

    The outputs carry the input's georeference: its CRS and geotransform, or its ground control points (GCPs) and
    rational polynomial coefficients (RPCs) with their CRS (shifted to the region for ``tiles``).

    Warns:
        NotGeoreferencedWarning: the input has no georeference at all (no CRS, geotransform, GCPs or RPCs): the map
            is in pixel coordinates.
    """
    t_start = time.perf_counter()
    numbers = {"tile": tile, "overlap": overlap, "batch_size": batch_size, "workers": workers, "cache_mb": cache_mb}
    check_numbers(numbers)
    plan = OutputPlan.check(dst, probabilities, src=src, model=model, prob_dtype=prob_dtype, overwrite=overwrite)
    check_threads(threads)
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    # the input first: a bad raster fails before a model is loaded
    with RasterSource(src, nodata=nodata) as probe:
        descriptions = probe.descriptions
    net, config = load_model(model, dev)
    if config.untrained_class_ids:
        net = UntrainedClassMask(net, config.untrained_class_ids).to(dev)
    if tta:
        from geoseg.inference.tta import D4Average

        net = D4Average(net).to(dev)
    selection = match_bands(config, descriptions, bands, path=str(src))
    source = RasterSource(src, bands=selection, nodata=nodata, apply_scale_offset=config.scale_offset)
    with ExitStack() as stack:
        stack.callback(source.close)
        stack.enter_context(torch_threads(threads))
        if not source.is_georeferenced:
            warnings.warn(
                f"{source.path} has {source.georef.describe()}; the class map will be in pixel coordinates",
                NotGeoreferencedWarning,
                stacklevel=3,
            )
        if source.count != config.in_channels:
            raise ModelContractError(f"model expects {config.in_channels} bands, selection gives {source.count}")
        grid = _tile_grid(source, config, align=model_stride(net, config.arch), tile=tile, overlap=overlap)
        _warn_if_mostly_overlap(grid, source.shape)
        if tiles is not None:
            if stitch != "center":
                raise InvalidParameterError(
                    f"region prediction (tiles=...) supports stitch='center' only, got {stitch!r}"
                )
            grid = grid.restrict(*tiles)
        net = _prepare_model(net, dev, compile=compile)
        n_classes = config.num_classes
        stitcher = make_stitcher(stitch, grid, n_classes, keep_probs=plan.probabilities is not None)
        stitcher.classes_dtype = class_dtype(n_classes)[1]
        need_probs = stitcher.needs_probs or plan.probabilities is not None
        crf_options = ({} if crf is True else dict(crf)) if crf else None
        crf_kernel = int((crf_options or {}).get("kernel", CRF_KERNEL))
        multi_tile = grid.tile_shape[0] < source.height or grid.tile_shape[1] < source.width
        if crf_options is not None and multi_tile and grid.overlap < crf_kernel:
            warnings.warn(
                f"the CRF refines each tile over a {crf_kernel}-px window but tiles overlap by only {grid.overlap} px: "
                f"pixels at tile seams are refined from a cut window and the seams may show; give "
                f"{option('overlap')} {crf_kernel} or more",
                UserWarning,
                stacklevel=3,
            )
        slots = 3 if cuda else 2
        batch = batch_size or auto_batch_size(
            net, source.count, grid.tile_shape, dev, amp=amp, num_classes=n_classes, need_probs=need_probs,
            crf=crf_options, slots=slots,
        )  # fmt: skip
        if batch < 1:
            raise InvalidParameterError(f"batch_size must be >= 1, got {batch}")
        # tile pieces are small: queue two batches of them (not tied to the width); full-width pieces double-buffer
        queued = max(16, 2 * batch) if stitch == "center" else 1
        writer = open_outputs(stack, plan, grid=grid, georef=source.georef, config=config, queued=queued)
        runner = BatchRunner(
            net,
            dev,
            slots=slots,
            batch=batch,
            channels=source.count,
            tile=grid.tile_shape,
            n_classes=n_classes,
            amp=amp,
            need_probs=need_probs,
            crf=crf_options,
        )
        reader = TileReader(
            source,
            Normalization.from_dict(config.normalization),
            grid,
            workers=default_workers(cuda=cuda) if workers is None else workers,
            keep_rows=keep_overlap_rows(
                source, grid, cache_mb=default_cache_mb(cuda=cuda) if cache_mb is None else cache_mb
            ),
        )
        stack.enter_context(reader)
        stack.callback(runner.synchronize)  # no copy may still read a buffer when it is freed
        skipped = _stream(grid, reader, runner, stitcher, writer, batch=batch, progress=progress)
        if skipped == len(grid) and not grid.is_region:  # a region of a scene may legitimately be empty
            raise NoValidDataError(
                f"{source.path} has no valid pixel in bands {source.band_names} (all nodata/masked/NaN); check "
                f"the nodata value (override with nodata=..., CLI --nodata) and the band selection"
            )
        counts = writer.finish()
    h, w = grid.shape
    return PredictResult(
        output=plan.classes,
        probabilities=plan.probabilities,
        tiles=len(grid),
        tiles_skipped=skipped,
        pixels=h * w,
        seconds=time.perf_counter() - t_start,
        device=str(dev),
        class_counts={config.classes[i]: int(c) for i, c in enumerate(counts) if i < n_classes},
    )


def _tile_grid(
    source: RasterSource, config: ModelConfig, *, align: int, tile: int | None, overlap: int | None
) -> TileGrid:
    """The tile grid of ``source``: tile and overlap from the call, else from the model's contract."""
    return TileGrid(
        source.shape,
        config.tile if tile is None else tile,
        config.overlap if overlap is None else overlap,
        align=align,
        transform=source.transform,
    )


#: tiles whose padded area is more than this many times their core make prediction that much slower: warned about
OVERLAP_COST_WARNING = 4.0


def _warn_if_mostly_overlap(grid: TileGrid, shape: tuple[int, int]) -> None:
    """Warn when the overlap leaves each tile a small core (e.g. a 256-px tile with a model's 208-px overlap): the
    model then computes every pixel several times over, where a larger tile would be as seam-free and faster. An
    axis the raster fits in one tile along costs nothing."""
    (th, tw), (hy, hx) = grid.tile_shape, grid.halo

    def factor(tile: int, halo: int, extent: int) -> float:
        return 1.0 if tile >= extent else tile / max(tile - 2 * halo, 1)

    cost = factor(th, hy, shape[0]) * factor(tw, hx, shape[1])
    if cost > OVERLAP_COST_WARNING:
        warnings.warn(
            f"tiles of {th}x{tw} px with a {grid.overlap}-px overlap keep a core of only {max(th - 2 * hy, 0)}x"
            f"{max(tw - 2 * hx, 0)} px: the model computes every pixel about {cost:.0f} times; a larger "
            f"{option('tile')} (e.g. {4 * max(grid.overlap, 64)}) is as seam-free and faster",
            UserWarning,
            stacklevel=4,  # the caller of predict_raster (behind geoseg.options.plain_arguments)
        )


def _prepare_model(net: nn.Module, device: torch.device, *, compile: bool) -> nn.Module:
    """On CUDA: channels_last, and ``torch.compile`` when asked."""
    if device.type == "cuda":
        if compile:
            net = torch.compile(net)  # type: ignore[assignment]
        return net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return net


def _batches(tiles: Iterator[Tile], n: int) -> Iterator[list[Tile]]:
    """``tiles`` in grid order, ``n`` at a time (the last batch may be shorter)."""
    batch: list[Tile] = []
    for t in tiles:
        batch.append(t)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


_Reads = list[tuple[np.ndarray, bool]]  # per tile of a batch: (padded validity, whether its core has data)


def _stream(
    grid: TileGrid,
    reader: TileReader,
    runner: BatchRunner,
    stitcher: Stitcher,
    writer: PieceWriter,
    *,
    batch: int,
    progress: ProgressCallback | None,
) -> int:
    """Run every tile of ``grid`` through read -> model -> stitch -> write; return how many tiles were skipped
    (all-nodata cores). Every slot is either being read or run: on CUDA batch k+1 is read and batch k-1 stitched
    while batch k runs; on CPU each batch is stitched as soon as it ran."""
    total, done, skipped = len(grid), 0, 0
    report_progress(progress, 0, total, "predicting")
    batches = _batches(iter(grid), batch)
    free = deque(range(runner.slots))
    reading: deque[tuple[list[Tile], list[Future[tuple[np.ndarray, bool]]], int]] = deque()
    running: tuple[list[Tile], _Reads, int] | None = None

    def fill() -> None:
        while free and (tiles := next(batches, None)) is not None:
            slot = free.popleft()
            reading.append((tiles, reader.submit(tiles, runner.host_np[slot]), slot))

    def finish(item: tuple[list[Tile], _Reads, int]) -> None:
        nonlocal done
        tiles, reads, slot = item
        classes, probs = runner.collect(slot)
        k = 0
        for t, (valid, has_data) in zip(tiles, reads):
            res = TileResult(t, valid, None, None)
            if has_data and classes is not None:
                res.classes = classes[k]
                res.probs = probs[k] if probs is not None else None
                k += 1
            for piece in stitcher.add(res):
                writer.put(piece)
        free.append(slot)
        done += len(tiles)
        report_progress(progress, done, total, "predicting")

    fill()
    while reading:
        tiles, futures, slot = reading.popleft()
        reads = [f.result() for f in futures]
        keep = [k for k, (_, has_data) in enumerate(reads) if has_data]
        skipped += len(tiles) - len(keep)
        runner.launch(slot, len(tiles), keep)  # returns at once on CUDA
        if running is not None:
            finish(running)  # stitch and write the previous batch while this one runs
        running = (tiles, reads, slot)
        if not runner.cuda:
            finish(running)
            running = None
        fill()
    if running is not None:
        finish(running)
    return skipped


def plan_grid(
    src: str | os.PathLike[str], *, model: ModelLike, tile: int | None = None, overlap: int | None = None
) -> TileGrid:
    """The tile grid ``predict_raster`` would use for ``src`` (to split a scene into regions).

    Raises:
        InputNotFoundError, NotARasterError: ``src`` is missing or not a raster.
        CheckpointError: the model cannot be loaded.
        InvalidParameterError: ``tile``/``overlap`` are not positive/non-negative or do not fit the model's stride.
    """
    check_numbers({"tile": tile, "overlap": overlap})
    net, config = load_model(model, torch.device("cpu"))
    with RasterSource(src) as source:
        return _tile_grid(source, config, align=model_stride(net, config.arch), tile=tile, overlap=overlap)


__all__ = ["ModelLike", "PredictResult", "load_model", "plan_grid", "predict_raster"]
