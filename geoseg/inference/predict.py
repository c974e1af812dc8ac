"""predict_raster: stream a raster through a model into a georeferenced class map (and optional probabilities).

Pipeline (one process): reader threads (own GDAL handle each) read, pad and normalize tiles ahead of the model; the
main thread batches tiles to the device (bf16 autocast and channels_last on GPU) and takes argmax/softmax there;
a stitcher turns tiles into finished row bands; a writer thread writes block-aligned bands to temporary files that
are renamed into place only when complete. Memory is bounded by a few bands of tiles, whatever the raster height.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geoseg.errors import InvalidParameterError, ModelContractError, NotGeoreferencedWarning
from geoseg.inference.bands import match_bands
from geoseg.inference.stitch import RowBand, TileResult, make_stitcher
from geoseg.io.bands import BandSpec
from geoseg.io.normalize import Normalization
from geoseg.io.read import RasterSource, reflect_pad
from geoseg.io.write import RowBandWriter, atomic_path, check_output_path, geotiff_profile, write_class_metadata
from geoseg.models.checkpoint import load_checkpoint
from geoseg.models.config import ModelConfig
from geoseg.models.registry import model_stride
from geoseg.progress import ProgressCallback, report
from geoseg.tiling import Tile, TileGrid

ModelLike = str | os.PathLike[str] | tuple[nn.Module, ModelConfig]
PROB_DTYPES = ("uint8", "float32")
PROB_SCALE = 254.0  # uint8 probabilities: value / 254 (255 = nodata)


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


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return dev


def load_model(model: ModelLike, device: torch.device) -> tuple[nn.Module, ModelConfig]:
    """A (module, config) pair from a checkpoint path or an existing pair, in eval mode on ``device``."""
    if isinstance(model, tuple):
        net, config = model
        if not isinstance(config, ModelConfig):
            raise InvalidParameterError("model must be a checkpoint path or a (torch.nn.Module, ModelConfig) pair")
        return net.to(device).eval(), config
    return load_checkpoint(model, device=device)


def auto_batch_size(net: nn.Module, channels: int, tile: tuple[int, int], device: torch.device, *, amp: bool) -> int:
    """Batch size from free GPU memory (measured with one tile); 4 on CPU."""
    if device.type != "cuda":
        return 4
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    x = torch.zeros((1, channels, *tile), device=device)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        net(x)
    per_tile = max(torch.cuda.max_memory_allocated(device) - base, 1)
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(64, 0.5 * free // per_tile)))


class _TileReader:
    """Reads, normalizes and validity-checks tiles on a thread pool, yielding them in order with bounded look-ahead."""

    def __init__(self, source: RasterSource, norm: Normalization, workers: int, lookahead: int) -> None:
        self.source, self.norm = source, norm
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geoseg-read")
        self.lookahead = lookahead

    def _read(self, tile: Tile) -> tuple[Tile, np.ndarray | None, np.ndarray]:
        data, valid = self.source.read(tile.read)
        rs, cs = tile.core_slices
        padded_valid = np.pad(valid, ((0, tile.pad[0]), (0, tile.pad[1])), constant_values=False)
        if not padded_valid[rs, cs].any():
            return tile, None, padded_valid  # all-nodata core: skip the model
        self.norm.apply(data)
        if not valid.all():
            data[:, ~valid] = 0.0  # nodata -> band mean after normalization; masked again on output
        return tile, reflect_pad(data, tile.pad), padded_valid

    def __call__(self, tiles: Iterator[Tile]) -> Iterator[tuple[Tile, np.ndarray | None, np.ndarray]]:
        pending: deque[Future[tuple[Tile, np.ndarray | None, np.ndarray]]] = deque()
        for t in tiles:
            pending.append(self.pool.submit(self._read, t))
            if len(pending) >= self.lookahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Writer:
    """Writer thread: class map (+ probabilities) row bands to block-aligned GeoTIFF writers."""

    def __init__(self, class_writer: RowBandWriter, prob_writer: RowBandWriter | None, *, nodata: int, prob_dtype: str):
        self.cw, self.pw = class_writer, prob_writer
        self.nodata, self.prob_dtype = nodata, prob_dtype
        self.q: queue.Queue[RowBand | None] = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.counts: np.ndarray | None = None
        self.thread = threading.Thread(target=self._run, name="geoseg-write", daemon=True)
        self.thread.start()

    def put(self, band: RowBand) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.q.put(band, timeout=0.5)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            while (band := self.q.get()) is not None:
                self._write(band)
        except BaseException as exc:  # surfaced to the main thread
            self.error = exc
            while self.q.get() is not None:  # drain so the producer never blocks
                pass

    def _write(self, band: RowBand) -> None:
        dtype = self.cw.profile["dtype"]
        classes = band.classes.astype(dtype)
        classes[~band.valid] = self.nodata
        counts = np.bincount(band.classes[band.valid].ravel(), minlength=1)
        if self.counts is None or len(counts) > len(self.counts):
            counts[: 0 if self.counts is None else len(self.counts)] += 0 if self.counts is None else self.counts
            self.counts = counts
        else:
            self.counts[: len(counts)] += counts
        self.cw.write(band.row_start, classes[None])
        if self.pw is not None and band.probs is not None:
            if self.prob_dtype == "uint8":
                p = np.rint(band.probs * PROB_SCALE).astype(np.uint8)
                p[:, ~band.valid] = 255
            else:
                p = band.probs.astype(np.float32)
                p[:, ~band.valid] = np.nan
            self.pw.write(band.row_start, p)

    def finish(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _forward(
    net: nn.Module, batch: list[np.ndarray], device: torch.device, *, amp: bool, need_probs: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    x = torch.from_numpy(np.stack(batch))
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"),
    ):
        logits = net(x).float()
        classes = logits.argmax(1).to(torch.int32)
        probs = torch.softmax(logits, 1) if need_probs else None
    return classes.cpu().numpy(), (probs.cpu().numpy() if probs is not None else None)


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
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    compile: bool = False,
    tiles: tuple[range, range] | None = None,
) -> PredictResult:
    """Segment ``src`` into a class raster at ``dst`` (tiled GeoTIFF, same grid, CRS and transform as the input).

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
        tiles: (tile rows, tile cols) of the full tile grid (see :func:`plan_grid`): predict only that region; the
            output covers the union of their cores and equals the full prediction there (used by run_batch).
    """
    t_start = time.perf_counter()
    if prob_dtype not in PROB_DTYPES:
        raise InvalidParameterError(f"prob_dtype must be one of {PROB_DTYPES}, got {prob_dtype!r}")
    dst_path = check_output_path(dst, overwrite=overwrite, inputs=[src])
    prob_path = None
    if probabilities is not None:
        prob_path = check_output_path(probabilities, overwrite=overwrite, inputs=[src])
        if prob_path.resolve() == dst_path.resolve():
            raise InvalidParameterError("the probability raster path must differ from the class raster path")
    dev = resolve_device(device)
    # open the raster first: a bad input fails before a model is loaded
    probe = RasterSource(src, nodata=nodata)
    descriptions = probe.descriptions
    probe.close()
    net, config = load_model(model, dev)
    selection = match_bands(config, descriptions, bands)
    source = RasterSource(src, bands=selection, nodata=nodata, apply_scale_offset=config.scale_offset)
    with ExitStack() as stack:
        stack.callback(source.close)
        if not source.is_georeferenced:
            warnings.warn(
                f"{source.path} has no CRS or geotransform; the class map will be in pixel coordinates",
                NotGeoreferencedWarning,
                stacklevel=2,
            )
        if source.count != config.in_channels:
            raise ModelContractError(f"model expects {config.in_channels} bands, selection gives {source.count}")
        stride = model_stride(net, config.arch)
        grid = TileGrid(
            source.shape,
            tile or config.tile,
            config.overlap if overlap is None else overlap,
            align=stride,
            transform=source.transform,
        )
        if tiles is not None:
            if stitch != "center":
                raise InvalidParameterError(
                    f"region prediction (tiles=...) supports stitch='center' only, got {stitch!r}"
                )
            grid = grid.restrict(*tiles)
        if compile and dev.type == "cuda":
            net = torch.compile(net)
        if dev.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        bs = batch_size or auto_batch_size(net, source.count, grid.tile_shape, dev, amp=amp)
        if bs < 1:
            raise InvalidParameterError(f"batch_size must be >= 1, got {bs}")
        n_classes = config.num_classes
        out_dtype, out_nodata = ("uint8", 255) if n_classes < 255 else ("uint16", 65535)
        stitcher = make_stitcher(stitch, grid, n_classes, keep_probs=prob_path is not None)
        need_probs = stitcher.needs_probs or prob_path is not None
        h, w = grid.shape
        common = {"width": w, "height": h, "crs": source.crs, "transform": grid.transform}
        class_tmp = stack.enter_context(atomic_path(dst_path, overwrite=overwrite))
        class_writer = RowBandWriter(class_tmp, geotiff_profile(count=1, dtype=out_dtype, nodata=out_nodata, **common))
        stack.callback(class_writer.abort)
        write_class_metadata(class_writer.dataset, classes=config.classes, colors=config.colors, nodata=out_nodata)
        class_writer.dataset.update_tags(geoseg_model=config.arch, geoseg_bands=",".join(config.bands))
        prob_writer = None
        if prob_path is not None:
            prob_tmp = stack.enter_context(atomic_path(prob_path, overwrite=overwrite))
            pnd = 255 if prob_dtype == "uint8" else float("nan")
            prob_writer = RowBandWriter(
                prob_tmp, geotiff_profile(count=n_classes, dtype=prob_dtype, nodata=pnd, **common)
            )
            stack.callback(prob_writer.abort)
            for k, name in enumerate(config.classes, start=1):
                prob_writer.dataset.set_band_description(k, f"p({name})")
            if prob_dtype == "uint8":
                prob_writer.dataset.scales = [1 / PROB_SCALE] * n_classes
        writer = _Writer(class_writer, prob_writer, nodata=out_nodata, prob_dtype=prob_dtype)
        n_workers = workers or min(8, max(2, os.cpu_count() or 2))
        reader = _TileReader(
            source, Normalization.from_dict(config.normalization), n_workers, lookahead=2 * bs + n_workers
        )
        stack.callback(reader.close)
        total, done, skipped = len(grid), 0, 0
        report(progress, 0, total, "predicting")
        pending: list[tuple[Tile, np.ndarray | None, np.ndarray]] = []

        def flush() -> None:
            nonlocal done
            datas = [d for _, d, _ in pending if d is not None]
            classes, probs = (None, None)
            if datas:
                classes, probs = _forward(net, datas, dev, amp=amp, need_probs=need_probs)
            k = 0
            for t, d, valid in pending:
                res = TileResult(t, valid, None, None)
                if d is not None:
                    res.classes = classes[k]
                    res.probs = probs[k] if probs is not None else None
                    k += 1
                for band in stitcher.add(res):
                    writer.put(band)
            done += len(pending)
            pending.clear()
            report(progress, done, total, "predicting")

        try:
            for item in reader(iter(grid)):
                pending.append(item)
                if item[1] is None:
                    skipped += 1
                if sum(1 for _, d, _ in pending if d is not None) >= bs:
                    flush()
            flush()
        except BaseException:
            writer.error = writer.error or RuntimeError("aborted")
            writer.q.put(None) if writer.thread.is_alive() else None
            writer.thread.join(timeout=10)
            raise
        writer.finish()
        class_writer.close()
        if prob_writer is not None:
            prob_writer.close()
        counts = writer.counts if writer.counts is not None else np.zeros(0, np.int64)
        class_counts = {config.classes[i]: int(c) for i, c in enumerate(counts) if i < n_classes}
    return PredictResult(
        output=dst_path,
        probabilities=prob_path,
        tiles=total,
        tiles_skipped=skipped,
        pixels=h * w,
        seconds=time.perf_counter() - t_start,
        device=str(dev),
        class_counts=class_counts,
    )


def plan_grid(
    src: str | os.PathLike[str], *, model: ModelLike, tile: int | None = None, overlap: int | None = None
) -> TileGrid:
    """The tile grid ``predict_raster`` would use for ``src`` (to split a scene into regions)."""
    net, config = load_model(model, torch.device("cpu"))
    with RasterSource(src) as source:
        return TileGrid(
            source.shape,
            tile or config.tile,
            config.overlap if overlap is None else overlap,
            align=model_stride(net, config.arch),
            transform=source.transform,
        )


def predict_array(net: nn.Module, data: np.ndarray, *, stride: int, device: str = "cpu") -> np.ndarray:
    """Whole-image prediction of a small (bands, rows, cols) array, reflect-padded to ``stride`` (reference path)."""
    h, w = data.shape[-2:]
    pad = ((-h) % stride, (-w) % stride)
    x = reflect_pad(np.asarray(data, np.float32), pad)
    dev = torch.device(device)
    classes, _ = _forward(net.to(dev).eval(), [x], dev, amp=False, need_probs=False)
    return classes[0, :h, :w]


__all__ = ["PredictResult", "plan_grid", "predict_array", "predict_raster"]
