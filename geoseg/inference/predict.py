"""predict_raster: stream a raster through a model into a georeferenced class map (and optional probabilities).

Pipeline (one process): tiles are grouped in grid order into batches of ``batch_size``; each batch has a slot (a
host buffer, pinned on CUDA) that is filled in place with normalized, padded tiles, assembled from whole input blocks
each decoded once (:mod:`geoseg.io.blocks`). Beside a GPU reader threads (own GDAL handle each) fill the slots; on CPU
tiles are read on the calling thread between forward passes, because the model already uses every core. On CUDA the
host->device copy of batch k+1 runs on a copy stream while batch k computes (bf16 autocast, channels_last); argmax
runs on the device and only uint8 class ids come back (softmax only when a strategy or the probability output needs
it); the main thread stitches batch k-1 while batch k runs. On CPU the forward runs straight on the host buffer. A
stitcher turns tiles into finished pieces of the output (the tile cores, for center stitching); a writer thread
assembles them into whole GeoTIFF blocks (multi-threaded DEFLATE) in temporary files that are renamed into place only
when complete. Memory is bounded by the slots, the decoded input blocks still needed, the partly filled output blocks
(one block row of the width) and a bounded GDAL block cache, whatever the raster size.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geoseg.errors import InvalidParameterError, ModelContractError, NotGeoreferencedWarning, NoValidDataError
from geoseg.inference.bands import match_bands
from geoseg.inference.stitch import Piece, TileResult, make_stitcher
from geoseg.io.bands import BandSpec
from geoseg.io.blocks import BlockCache
from geoseg.io.normalize import Normalization
from geoseg.io.read import RasterSource, reflect_fill, reflect_pad
from geoseg.io.write import BlockWriter, atomic_path, check_output_path, geotiff_profile, write_class_metadata
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
    """A (module, config) pair from a checkpoint (``.safetensors``/``.pt``), an exported ``.onnx`` model (run with
    onnxruntime), or an existing pair, in eval mode on ``device``."""
    if isinstance(model, tuple):
        net, config = model
        if not isinstance(config, ModelConfig):
            raise InvalidParameterError("model must be a checkpoint path or a (torch.nn.Module, ModelConfig) pair")
        return net.to(device).eval(), config
    if str(model).lower().endswith(".onnx"):
        from geoseg.models.onnx import load_onnx

        return load_onnx(model)  # type: ignore[return-value]  # called like a module: model(x) -> logits
    return load_checkpoint(model, device=device)


def auto_batch_size(
    net: nn.Module,
    channels: int,
    tile: tuple[int, int],
    device: torch.device,
    *,
    amp: bool,
    num_classes: int = 2,
    need_probs: bool = False,
    crf: dict[str, Any] | None = None,
    slots: int = 3,
) -> int:
    """Batch size from free GPU memory (half of it over :func:`device_bytes_per_tile`, at most 64); 4 on CPU; either
    capped so the pipeline's host batch buffers (3 x batch x tile, float32) stay within :data:`HOST_BATCH_BUDGET`
    bytes (hyperspectral tiles are big). The options are those of :func:`device_bytes_per_tile`."""
    if device.type != "cuda":
        return _cap_batch(4, channels, tile)
    per_tile = device_bytes_per_tile(
        net, channels, tile, device, amp=amp, num_classes=num_classes, need_probs=need_probs, crf=crf, slots=slots
    )
    free, _ = torch.cuda.mem_get_info(device)
    return _cap_batch(int(max(1, min(64, 0.5 * free // per_tile))), channels, tile)


def device_bytes_per_tile(
    net: nn.Module,
    channels: int,
    tile: tuple[int, int],
    device: torch.device,
    *,
    amp: bool,
    num_classes: int = 2,
    need_probs: bool = False,
    crf: dict[str, Any] | None = None,
    slots: int = 3,
) -> int:
    """GPU memory (bytes) one tile of a batch takes in the prediction pipeline on CUDA ``device``.

    Measured by running the pipeline's own device step on one (channels, *tile) tile: forward (bf16 autocast when
    ``amp``), argmax, and the softmax and CRF when ``need_probs``/``crf`` ask for them (the CRF holds
    ``kernel² - 1`` pairwise weights and several probability maps per pixel, often more than a small model needs),
    plus the ``slots - 1`` other float32 input buffers the pipeline keeps on the device.
    """
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    probe = _Engine(
        net, device, slots=1, batch=1, channels=channels, tile=tile, n_classes=num_classes, amp=amp,
        need_probs=need_probs, crf=crf,
    )  # fmt: skip
    probe.host[0].zero_()
    probe.launch(0, 1, [0])
    probe.collect(0)
    measured = torch.cuda.max_memory_allocated(device) - base
    return max(measured, 1) + (slots - 1) * channels * tile[0] * tile[1] * 4


HOST_BATCH_BUDGET = 4 * 2**30  # bytes of host batch buffers an automatic batch size may use


def _cap_batch(batch: int, channels: int, tile: tuple[int, int], budget: int = HOST_BATCH_BUDGET) -> int:
    """Limit an automatic batch size so 3 batch buffers (float32) fit ``budget`` bytes."""
    per_tile = 3 * channels * tile[0] * tile[1] * 4
    return max(1, min(batch, budget // per_tile))


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters
_allocator_tuned: bool | None = None


def configure_cpu_allocator() -> bool:
    """Make glibc keep large freed blocks for reuse instead of unmapping them (once per process; Linux/glibc only).

    CPU inference allocates activations of tens to hundreds of MB per layer; by default glibc serves each with a fresh
    ``mmap`` and returns it with ``munmap``, so every forward pass page-faults all of its memory again (measured: half
    the CPU time of a U-Net forward on 1024-px tiles). Serving them from the heap and not trimming it removes that;
    the process keeps its peak working set instead of returning it between passes. Set ``GEOSEG_MALLOC_TUNING=0`` to
    leave the allocator alone. Returns whether the tuning is active.
    """
    global _allocator_tuned
    if _allocator_tuned is not None:
        return _allocator_tuned
    _allocator_tuned = False
    if os.environ.get("GEOSEG_MALLOC_TUNING", "1") != "0" and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            if hasattr(libc, "mallopt"):
                _allocator_tuned = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
                    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
                )
        except OSError:  # not glibc (musl, ...)
            pass
    return _allocator_tuned


def class_ids(logits: torch.Tensor) -> torch.Tensor:
    """Argmax over the class axis (dim 1). On CPU ``max(1).indices`` (same result, first maximum, NaN counts as the
    maximum) is about 10x faster than ``argmax(1)`` on NCHW tensors."""
    return logits.argmax(1) if logits.is_cuda else logits.max(1).indices


SMALL_CACHE = 128 * 2**20  # CPU: blocks shared by consecutive tile rows are kept across the width when they fit this
LARGE_CACHE = 2 * 2**30  # GPU (decode is the bound): the same, up to this


def keep_overlap_rows(source: RasterSource, grid: TileGrid, *, cuda: bool) -> bool:
    """Whether the blocks two consecutive tile rows share (at most two block rows of the width) are kept, so no block
    is decoded twice. On CPU the model is the bound, so they are decoded again rather than held when they exceed
    :data:`SMALL_CACHE`; memory then no longer grows with the raster width."""
    bh, _ = source.block_shapes[0]
    per_px = source.count * max(np.dtype(d).itemsize for d in source.dtypes)
    overlap = 2 * grid.halo[0]  # rows two consecutive tile rows both read
    held_rows = (-(-overlap // bh) + 1) * bh  # the block rows under that overlap, however it is aligned
    return held_rows * source.width * per_px <= (LARGE_CACHE if cuda else SMALL_CACHE)


def bounded_gdal_cache(
    source: RasterSource, grid: TileGrid, *, keep_overlap_rows: bool = True, block_reuse: bool = False
) -> contextlib.AbstractContextManager[Any]:
    """A rasterio.Env sizing GDAL's block cache for one pass of tile reads, unless GDAL_CACHEMAX is set.

    GDAL's default cache (5% of RAM) fills with blocks a one-pass read never revisits, so peak RSS would grow with the
    raster. With ``block_reuse`` (geoseg holds decoded blocks itself, :class:`BlockCache`) GDAL only needs room for
    the blocks being decoded. Otherwise neighbouring tiles of a row share a column of blocks and consecutive tile rows
    share the blocks under their overlap: ``keep_overlap_rows`` keeps two rows of blocks across the width, without it
    only the blocks of two neighbouring tiles. Striped files always keep a tile row of strips.
    """
    import rasterio.env

    if "GDAL_CACHEMAX" in os.environ or (rasterio.env.hasenv() and "GDAL_CACHEMAX" in rasterio.env.getenv()):
        return contextlib.nullcontext()
    bh, bw = source.block_shapes[0]
    th, tw = grid.tile_shape
    per_px = int(source.profile.get("count", source.count)) * max(np.dtype(d).itemsize for d in source.dtypes) + 1
    if block_reuse:
        need = 4 * bh * min(bw, source.width) * per_px
    elif bw >= source.width:
        need = (th + bh) * source.width * per_px
    else:
        need = 2 * bh * source.width * per_px if keep_overlap_rows else 0
        # at least the blocks two neighbouring tiles read (hyperspectral blocks are ~100 MB each)
        need = max(need, min(th + 2 * bh, source.height) * min(tw + 2 * bw, source.width) * per_px)
    return rasterio.Env(GDAL_CACHEMAX=max(16, int(need * 1.25 / 2**20) + 1))


def _class_dtype(n_classes: int) -> tuple[torch.dtype, type[np.integer]]:
    """Smallest dtype for class ids on device and host (argmax is transferred in it)."""
    return (torch.uint8, np.uint8) if n_classes <= 256 else (torch.int32, np.int32)


def _chunks(tiles: Iterator[Tile], n: int) -> Iterator[list[Tile]]:
    chunk: list[Tile] = []
    for t in tiles:
        chunk.append(t)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _default_workers(device: torch.device) -> int:
    """Reader threads: one per usable core beside a GPU (at least 2, at most 32): there decoding is the bound (DESIGN:
    ~24 MPix/s per thread against ~370 MPix/s for the model), so 8 threads on a 16-core machine would cap the
    pipeline at half the machine's decode rate. On CPU none: the model's intra-op threads already use every core, and
    a reader thread running beside them stalls every parallel op it delays (measured on 2 cores: 13-band tiles read on
    the side ran the pipeline 15% slower than reading them between forward passes)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
    return min(32, max(2, cores)) if device.type == "cuda" else 0


class _Engine:
    """Batch slots (host buffers the readers fill in place) and the model run on them.

    On CUDA each slot owns a pinned host buffer, a device buffer and pinned output buffers; :meth:`launch` queues the
    host->device copy on a copy stream (overlapping the previous forward), the forward, argmax (and softmax) and the
    device->host copy of uint8 class ids on the compute stream, and returns at once; :meth:`collect` waits for it. On
    CPU :meth:`launch` runs the forward directly on the host buffer (no copy).
    """

    def __init__(
        self,
        net: nn.Module,
        device: torch.device,
        *,
        slots: int,
        batch: int,
        channels: int,
        tile: tuple[int, int],
        n_classes: int,
        amp: bool,
        need_probs: bool,
        crf: dict[str, Any] | None = None,
    ) -> None:
        self.net, self.device, self.need_probs, self.crf = net, device, need_probs, crf
        self.cuda = device.type == "cuda"
        self.amp = amp and self.cuda
        self.cls_torch, self.cls_np = _class_dtype(n_classes)
        shape = (batch, channels, *tile)
        self.host = [torch.empty(shape, dtype=torch.float32, pin_memory=self.cuda) for _ in range(slots)]
        self.host_np = [h.numpy() for h in self.host]
        self.launched: list[tuple[int, int, list[int]] | None] = [None] * slots
        if self.cuda:
            self.dev_in = [torch.empty(shape, dtype=torch.float32, device=device) for _ in range(slots)]
            self.out_cls = [torch.empty((batch, *tile), dtype=self.cls_torch, pin_memory=True) for _ in range(slots)]
            self.out_probs = [
                torch.empty((batch, n_classes, *tile), dtype=torch.float32, pin_memory=True) if need_probs else None
                for _ in range(slots)
            ]
            self.copy_stream = torch.cuda.Stream(device)
            self.done = [torch.cuda.Event() for _ in range(slots)]
        self.cpu_results: list[tuple[np.ndarray, np.ndarray | None] | None] = [None] * slots

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.net(x).float()
            if self.crf is not None:
                from geoseg.inference.crf import crf_refine

                refined = crf_refine(torch.softmax(logits, 1), x.float(), **self.crf)
                return class_ids(refined).to(self.cls_torch), (refined if self.need_probs else None)
            classes = class_ids(logits).to(self.cls_torch)
            probs = torch.softmax(logits, 1) if self.need_probs else None
        return classes, probs

    def launch(self, slot: int, n: int, keep: list[int]) -> None:
        """Run the model on tiles ``keep`` (indexes < n) of slot ``slot``."""
        self.launched[slot] = (n, len(keep), keep)
        if not keep:
            return
        sel = None if len(keep) == n else torch.tensor(keep)
        if not self.cuda:
            x = torch.from_numpy(self.host_np[slot][:n])
            classes, probs = self._run(x if sel is None else x[sel])
            self.cpu_results[slot] = (classes.numpy(), probs.numpy() if probs is not None else None)
            return
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.copy_stream):
            self.copy_stream.wait_event(self.done[slot])  # the previous forward on this device buffer has finished
            self.dev_in[slot][:n].copy_(self.host[slot][:n], non_blocking=True)
        compute.wait_stream(self.copy_stream)
        x = self.dev_in[slot][:n]
        if sel is not None:
            x = x[sel.to(self.device, non_blocking=True)]
        classes, probs = self._run(x.contiguous(memory_format=torch.channels_last))
        k = len(keep)
        self.out_cls[slot][:k].copy_(classes, non_blocking=True)
        out_probs = self.out_probs[slot]
        if probs is not None and out_probs is not None:
            out_probs[:k].copy_(probs, non_blocking=True)
        self.done[slot].record(compute)

    def collect(self, slot: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Class ids (k, h, w) and probabilities (k, C, h, w) of the tiles launched on ``slot`` (views, reused)."""
        launched = self.launched[slot]
        if launched is None or launched[1] == 0:
            return None, None
        k = launched[1]
        if not self.cuda:
            res = self.cpu_results[slot]
            self.cpu_results[slot] = None
            assert res is not None
            return res
        self.done[slot].synchronize()
        out_probs = self.out_probs[slot]
        return self.out_cls[slot][:k].numpy(), (out_probs[:k].numpy() if out_probs is not None else None)


class _TileReader:
    """Reads, normalizes and validity-checks tiles straight into the engine's batch slots, on a thread pool (or on the
    calling thread when ``workers`` is 0).

    When the source allows it, tiles are assembled from whole blocks decoded once (:class:`BlockCache`): per tile row,
    or for the whole pass when ``keep_rows`` (the blocks consecutive tile rows share are then held across the width).
    """

    def __init__(
        self, source: RasterSource, norm: Normalization, workers: int, grid: TileGrid, *, keep_rows: bool
    ) -> None:
        self.source, self.norm = source, norm
        self.blocks = BlockCache.for_grid(source, grid, per_row=not keep_rows) if BlockCache.supports(source) else None
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geoseg-read") if workers else None

    def _read(self, tile: Tile, out: np.ndarray) -> tuple[np.ndarray, bool]:
        """Fill ``out`` (C, th, tw) with the normalized, padded tile; (padded validity, whether the core has data)."""
        h, w = int(tile.read.height), int(tile.read.width)
        if self.blocks is not None:
            valid = self.blocks.read_into(tile.index[0], tile.read, out)
        else:
            valid = self.source.read_into(tile.read, out)  # decoded straight into the batch slot
        rs, cs = tile.core_slices
        padded_valid = np.pad(valid, ((0, tile.pad[0]), (0, tile.pad[1])), constant_values=False)
        if not padded_valid[rs, cs].any():
            return padded_valid, False  # all-nodata core: skip the model
        data = self.norm.apply(out[:, :h, :w])
        if not valid.all():
            data[:, ~valid] = 0.0  # nodata -> band mean after normalization; masked again on output
        if tile.pad[0] or tile.pad[1]:
            reflect_fill(out, h, w)
        return padded_valid, True

    def submit(self, tiles: list[Tile], buf: np.ndarray) -> list[Future[tuple[np.ndarray, bool]]]:
        if self.pool is not None:
            return [self.pool.submit(self._read, t, buf[k]) for k, t in enumerate(tiles)]
        done: list[Future[tuple[np.ndarray, bool]]] = []
        for k, t in enumerate(tiles):  # no reader threads: read on the calling thread
            done.append(Future())
            done[-1].set_result(self._read(t, buf[k]))
        return done

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


class _Writer:
    """Writer thread: finished pieces of the class map (+ probabilities) into block-assembling GeoTIFF writers."""

    def __init__(
        self, class_writer: BlockWriter, prob_writer: BlockWriter | None, *, nodata: int, prob_dtype: str, queued: int
    ):
        self.cw, self.pw = class_writer, prob_writer
        self.nodata, self.prob_dtype = nodata, prob_dtype
        self.q: queue.Queue[Piece | None] = queue.Queue(maxsize=queued)
        self.error: BaseException | None = None
        self.hist = np.zeros(nodata + 1, np.int64)
        self.thread = threading.Thread(target=self._run, name="geoseg-write", daemon=True)
        self.thread.start()

    @property
    def counts(self) -> np.ndarray:
        """Pixels per class id over valid pixels, up to the largest id seen (at least one entry)."""
        h = self.hist[: self.nodata]
        nz = np.flatnonzero(h)
        return h[: max(1, int(nz[-1]) + 1 if len(nz) else 1)].copy()

    def put(self, piece: Piece) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.q.put(piece, timeout=0.5)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            while (piece := self.q.get()) is not None:
                self._write(piece)
        except BaseException as exc:  # surfaced to the main thread
            self.error = exc
            while self.q.get() is not None:  # drain so the producer never blocks
                pass

    def _write(self, piece: Piece) -> None:
        dtype = self.cw.profile["dtype"]
        classes = piece.classes.astype(dtype, copy=False)  # the piece owns it (see Piece)
        invalid = ~piece.valid
        classes[invalid] = self.nodata
        flat = classes.ravel()
        for i in range(0, flat.size, 1 << 20):  # bincount makes an int64 copy: keep it small
            self.hist += np.bincount(flat[i : i + (1 << 20)], minlength=self.nodata + 1)[: self.nodata + 1]
        self.cw.write(piece.row, piece.col, classes[None])
        if self.pw is not None and piece.probs is not None:
            if self.prob_dtype == "uint8":
                p = np.rint(piece.probs * PROB_SCALE).astype(np.uint8)
                p[:, invalid] = 255
            else:
                p = piece.probs.astype(np.float32)
                p[:, invalid] = np.nan
            self.pw.write(piece.row, piece.col, p)

    def finish(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _forward(
    net: nn.Module, batch: list[np.ndarray], device: torch.device, *, amp: bool, need_probs: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Synchronous forward of a list of tiles (reference path)."""
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
    crf: bool | dict[str, Any] = False,
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
        workers: reader threads (default: one per core beside a GPU, at most 32; 0 on CPU, where tiles are read
            between forward passes on the calling thread because the model already uses every core).
        crf: refine each tile's probabilities with the convolutional CRF (:func:`geoseg.inference.crf.crf_refine`;
            True for its defaults or a dict of its options). Give an overlap of at least its kernel.
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
        if dev.type == "cpu":
            configure_cpu_allocator()
        n_classes = config.num_classes
        out_dtype, out_nodata = ("uint8", 255) if n_classes < 255 else ("uint16", 65535)
        stitcher = make_stitcher(stitch, grid, n_classes, keep_probs=prob_path is not None)
        stitcher.classes_dtype = _class_dtype(n_classes)[1]
        need_probs = stitcher.needs_probs or prob_path is not None
        crf_options = ({} if crf is True else dict(crf)) if crf else None
        slots = 3 if dev.type == "cuda" else 2
        bs = batch_size or auto_batch_size(
            net, source.count, grid.tile_shape, dev, amp=amp, num_classes=n_classes, need_probs=need_probs,
            crf=crf_options, slots=slots,
        )  # fmt: skip
        if bs < 1:
            raise InvalidParameterError(f"batch_size must be >= 1, got {bs}")
        h, w = grid.shape
        # GDAL compresses the written blocks on several threads
        common = {"width": w, "height": h, "crs": source.crs, "transform": grid.transform}
        threads = {"num_threads": str(min(8, os.cpu_count() or 1))}
        class_tmp = stack.enter_context(atomic_path(dst_path, overwrite=overwrite))
        class_writer = BlockWriter(
            class_tmp, geotiff_profile(count=1, dtype=out_dtype, nodata=out_nodata, **common) | threads
        )
        stack.callback(class_writer.abort)
        write_class_metadata(class_writer.dataset, classes=config.classes, colors=config.colors, nodata=out_nodata)
        class_writer.dataset.update_tags(geoseg_model=config.arch, geoseg_bands=",".join(config.bands))
        prob_writer = None
        if prob_path is not None:
            prob_tmp = stack.enter_context(atomic_path(prob_path, overwrite=overwrite))
            pnd = 255 if prob_dtype == "uint8" else float("nan")
            prob_writer = BlockWriter(
                prob_tmp, geotiff_profile(count=n_classes, dtype=prob_dtype, nodata=pnd, **common) | threads
            )
            stack.callback(prob_writer.abort)
            for k, name in enumerate(config.classes, start=1):
                prob_writer.dataset.set_band_description(k, f"p({name})")
            if prob_dtype == "uint8":
                prob_writer.dataset.scales = [1 / PROB_SCALE] * n_classes
        # tile pieces are small: queue two batches of them (not tied to the width); full-width pieces double-buffer
        queued = max(16, 2 * bs) if stitch == "center" else 1
        writer = _Writer(class_writer, prob_writer, nodata=out_nodata, prob_dtype=prob_dtype, queued=queued)
        if workers is not None and workers < 0:
            raise InvalidParameterError(f"workers must be >= 0 (0 = read on the calling thread), got {workers}")
        n_workers = _default_workers(dev) if workers is None else workers
        engine = _Engine(
            net,
            dev,
            slots=slots,
            batch=bs,
            channels=source.count,
            tile=grid.tile_shape,
            n_classes=n_classes,
            amp=amp,
            need_probs=need_probs,
            crf=crf_options,
        )
        keep_rows = keep_overlap_rows(source, grid, cuda=dev.type == "cuda")
        norm = Normalization.from_dict(config.normalization)
        reader = _TileReader(source, norm, n_workers, grid, keep_rows=keep_rows)
        stack.enter_context(
            bounded_gdal_cache(source, grid, keep_overlap_rows=keep_rows, block_reuse=reader.blocks is not None)
        )
        stack.callback(reader.close)
        if dev.type == "cuda":
            stack.callback(torch.cuda.synchronize, dev)  # no copy may still read a buffer when it is freed
        total, done, skipped = len(grid), 0, 0
        report(progress, 0, total, "predicting")
        chunks = _chunks(iter(grid), bs)
        free = deque(range(slots))
        reading: deque[tuple[list[Tile], list[Future[tuple[np.ndarray, bool]]], int]] = deque()
        running: tuple[list[Tile], list[tuple[np.ndarray, bool]], int] | None = None

        def fill() -> None:
            while free and (chunk := next(chunks, None)) is not None:
                slot = free.popleft()
                reading.append((chunk, reader.submit(chunk, engine.host_np[slot]), slot))

        def finish(item: tuple[list[Tile], list[tuple[np.ndarray, bool]], int]) -> None:
            nonlocal done
            chunk, read, slot = item
            classes, probs = engine.collect(slot)
            k = 0
            for t, (valid, has_data) in zip(chunk, read):
                res = TileResult(t, valid, None, None)
                if has_data:
                    assert classes is not None
                    res.classes = classes[k]
                    res.probs = probs[k] if probs is not None else None
                    k += 1
                for piece in stitcher.add(res):
                    writer.put(piece)
            free.append(slot)
            done += len(chunk)
            report(progress, done, total, "predicting")

        try:
            fill()
            while reading:
                chunk, futures, slot = reading.popleft()
                read = [f.result() for f in futures]
                keep = [k for k, (_, has_data) in enumerate(read) if has_data]
                skipped += len(chunk) - len(keep)
                engine.launch(slot, len(chunk), keep)  # returns at once on CUDA
                if running is not None:
                    finish(running)  # stitch and write the previous batch while this one runs
                running = (chunk, read, slot)
                if dev.type != "cuda":
                    finish(running)
                    running = None
                fill()
            if running is not None:
                finish(running)
            if skipped == total and not grid.is_region:  # a region of a scene may legitimately be empty
                raise NoValidDataError(
                    f"{source.path} has no valid pixel in bands {source.band_names} (all nodata/masked/NaN); check "
                    f"the nodata value (override with nodata=..., CLI --nodata) and the band selection"
                )
        except BaseException:
            writer.error = writer.error or RuntimeError("aborted")
            writer.q.put(None) if writer.thread.is_alive() else None
            writer.thread.join(timeout=10)
            raise
        writer.finish()
        class_writer.close()
        if prob_writer is not None:
            prob_writer.close()
        counts = writer.counts
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
