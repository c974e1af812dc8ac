"""End-to-end throughput of geoseg's predict_raster against the model alone, raw decode, a naive loop and TorchGeo.

    python benchmarks/throughput.py [--bands 4,13,200] [--size N] [--tile T] [--batch B] [--device cuda]

One run, one machine, one raster per band count (uint16, DEFLATE, 512-px blocks, generated window by window and
cached under --workdir). For every band count it measures, in MPix/s:

1. model only: forward + argmax on random tensors (batch B, tile T; bf16 autocast + channels_last on CUDA, fp32 on
   CPU);
2. decode: block-aligned windows read by N threads (own GDAL handle each), and by one thread;
3. naive loop: read tile -> model (batch 1) -> write core window, sequential, same TileGrid and center crop;
4. geoseg ``predict_raster`` with 64-px overlap, output written;
5. TorchGeo RasterDataset + GridGeoSampler + DataLoader with the same model (no stitching, nothing written), when
   torchgeo is importable.

Throughput counts raster pixels (output pixels) per second for 2-5 and input pixels for 1. It prints the ratios
(4)/min(1,2), (4)/(3), (4)/(5), the PASS/FAIL of the targets (GPU: (4) >= 0.7 min(1,2), >= 8x (3), >= 2x (5); CPU:
(4) >= 0.8 (1)), peak host RSS and peak GPU memory per stage, and checks that (4)'s class map equals (3)'s.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import resource
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.windows import Window

from geoseg.inference.engine import auto_batch_size, class_ids
from geoseg.inference.predict import predict_raster
from geoseg.io.normalize import Normalization
from geoseg.io.read import RasterSource
from geoseg.io.write import geotiff_profile
from geoseg.models.config import ModelConfig
from geoseg.models.device import resolve_device
from geoseg.models.registry import create_model, model_stride
from geoseg.tiling import TileGrid

BLOCK = 512
SHIFT, SCALE = 1000.0, 500.0  # normalization of the synthetic data (mean ~1000, spread ~500)


# --- memory ----------------------------------------------------------------------------------------------------------
class PeakRSS:
    """Samples the RSS of this process plus its children (DataLoader workers) in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        try:
            import psutil

            self._proc: Any = psutil.Process()
        except ImportError:  # /proc fallback: this process only
            self._proc = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        if self._proc is None:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            with contextlib.suppress(Exception):  # a worker can exit between listing and reading
                total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


@dataclass
class Stage:
    """One measurement: pixels per second plus memory."""

    name: str
    mpix_s: float | None = None
    seconds: float = 0.0
    rss: int = 0
    gpu: int | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def measure(stage: Stage, device: torch.device) -> Iterator[Stage]:
    """Time a block and record its peak host RSS and peak GPU memory."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        yield stage
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stage.seconds = time.perf_counter() - t0
    stage.rss = rss.peak
    if device.type == "cuda":
        stage.gpu = torch.cuda.max_memory_allocated(device)


def best_of(stage: Stage, device: torch.device, repeat: int, fn: Callable[[], Any]) -> list[Any]:
    """Run ``fn`` ``repeat`` times under :func:`measure`: keep the fastest time and the largest memory; all results
    (each run's seconds in ``stage.extra["seconds"]``)."""
    out, best = [], None
    stage.extra["seconds"] = []
    for _ in range(repeat):
        trial = Stage(stage.name)
        with measure(trial, device):
            out.append(fn())
        best = trial.seconds if best is None else min(best, trial.seconds)
        stage.extra["seconds"].append(trial.seconds)
        stage.rss = max(stage.rss, trial.rss)
        stage.gpu = trial.gpu if stage.gpu is None else max(stage.gpu, trial.gpu or 0)
    stage.seconds = best or 0.0
    return out


def best_rate(stage: Stage, device: torch.device, repeat: int, fn: Callable[[], tuple[int, Any]]) -> Any:
    """:func:`best_of` for a ``fn`` that returns (output pixels it covered, anything): sets ``stage.mpix_s`` to the
    best rate and ``stage.seconds`` to that run's time; returns that run's second value."""
    results = best_of(stage, device, repeat, fn)
    rates = [px / 1e6 / max(sec, 1e-9) for (px, _), sec in zip(results, stage.extra["seconds"])]
    k = int(np.argmax(rates))
    stage.mpix_s, stage.seconds = rates[k], stage.extra["seconds"][k]
    stage.note = f"{results[k][0] / 1e6:.1f} MPix in {stage.seconds:.1f} s" + stage.note
    return results[k][1]


# --- test raster -----------------------------------------------------------------------------------------------------
def _pattern(r0: int, c0: int, h: int, w: int, bands: int) -> np.ndarray:
    """Smooth per-band fields plus a little texture: compresses like real imagery, varied enough to segment."""
    y = np.arange(r0, r0 + h, dtype=np.float32)[:, None]
    x = np.arange(c0, c0 + w, dtype=np.float32)[None, :]
    out = np.empty((bands, h, w), np.uint16)
    texture = ((x.astype(np.int64) * 7919 + y.astype(np.int64) * 104729) % 97).astype(np.float32)
    for b in range(bands):
        f = 1000 + 600 * np.sin(x / (57 + 3 * b) + b) * np.cos(y / (71 + 5 * (b % 7)) - 0.5 * b) + texture * (1 + b % 3)
        out[b] = np.clip(f, 0, 65535).astype(np.uint16)
    return out


def make_raster(path: Path, size: int, bands: int) -> Path:
    """Generate (once) a ``size``² uint16 DEFLATE GeoTIFF with 512-px blocks, one 512-px block window at a time."""
    if path.exists():
        try:
            with rasterio.open(path) as ds:
                if ds.shape == (size, size) and ds.count == bands:
                    return path
        except rasterio.errors.RasterioIOError:
            pass
    tmp = path.with_name(path.name + ".partial.tif")
    prof = {
        "driver": "GTiff", "width": size, "height": size, "count": bands, "dtype": "uint16",
        "crs": "EPSG:32633", "transform": Affine(1.0, 0, 500000.0, 0, -1.0, 4600000.0), "tiled": True,
        "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate", "BIGTIFF": "IF_SAFER",
        "num_threads": "all_cpus",
    }  # fmt: skip
    t0 = time.perf_counter()

    def block(r0: int, c0: int) -> tuple[Window, np.ndarray]:
        h, w = min(BLOCK, size - r0), min(BLOCK, size - c0)
        return Window(c0, r0, w, h), _pattern(r0, c0, h, w, bands)

    # numpy releases the GIL: one block row is computed on all cores, then written in order (one row held)
    with rasterio.open(tmp, "w", **prof) as ds, ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        for r0 in range(0, size, BLOCK):
            for win, data in pool.map(lambda c0, r0=r0: block(r0, c0), range(0, size, BLOCK)):
                ds.write(data, window=win)
    os.replace(tmp, path)
    mb = path.stat().st_size / 2**20
    print(f"  generated {path} ({size}x{size}x{bands}, {mb:.0f} MiB) in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


# --- (1) model only --------------------------------------------------------------------------------------------------
def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bench_model(net: torch.nn.Module, bands: int, tile: int, batch: int, dev: torch.device, min_s: float) -> float:
    """Forward + argmax on a random batch, repeated for at least ``min_s`` seconds; input MPix/s."""
    cuda = dev.type == "cuda"
    x = torch.randn(batch, bands, tile, tile, device=dev)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
        for _ in range(2 if cuda else 1):
            class_ids(net(x))
        _sync(dev)
        n, t0 = 0, time.perf_counter()
        while True:
            class_ids(net(x))
            n += 1
            if n % 4 == 0 or not cuda:
                _sync(dev)
                if time.perf_counter() - t0 >= min_s:
                    break
        _sync(dev)
        dt = time.perf_counter() - t0
    return n * batch * tile * tile / dt / 1e6


# --- (2) decode ------------------------------------------------------------------------------------------------------
def block_windows(shape: tuple[int, int], size: int) -> list[Window]:
    """Windows of ``size`` px (a multiple of the block) on the block grid, covering the raster once."""
    h, w = shape
    return [Window(c, r, min(size, w - c), min(size, h - r)) for r in range(0, h, size) for c in range(0, w, size)]


def bench_decode(path: Path, threads: int, window: int, max_s: float | None = None) -> tuple[float, int]:
    """Raw decode of block-aligned windows by ``threads`` threads with their own handles: (MPix/s, pixels read)."""
    local = threading.local()
    handles: list[Any] = []
    lock = threading.Lock()

    def read(win: Window) -> int:
        ds = getattr(local, "ds", None)
        if ds is None:
            ds = local.ds = rasterio.open(path)
            with lock:
                handles.append(ds)
        return int(ds.read(window=win).shape[1] * win.width)

    with rasterio.open(path) as ds:
        wins = block_windows(ds.shape, window)
    pixels, t0 = 0, time.perf_counter()
    if threads == 1:
        for win in wins:
            pixels += read(win)
            if max_s is not None and time.perf_counter() - t0 > max_s:
                break
    else:
        with ThreadPoolExecutor(threads) as ex:
            pixels = sum(ex.map(read, wins))
    dt = time.perf_counter() - t0
    for ds in handles:
        ds.close()
    return pixels / dt / 1e6, pixels


# --- (3) naive loop --------------------------------------------------------------------------------------------------
def naive_loop(
    path: Path,
    out: Path,
    net: torch.nn.Module,
    config: ModelConfig,
    grid: TileGrid,
    dev: torch.device,
    max_s: float | None = None,
) -> tuple[int, list[Window]]:
    """Read a tile, run the model on it (batch 1), write its center-cropped core; one tile at a time, no threads.

    Stops after the first tile that ends past ``max_s`` seconds (a steady sequential rate needs no whole pass over a
    large raster). Returns (output pixels written, the core windows written)."""
    cuda = dev.type == "cuda"
    norm = Normalization.from_dict(config.normalization)
    src = RasterSource(path)
    h, w = src.shape
    prof = geotiff_profile(width=w, height=h, count=1, dtype="uint8", crs=src.crs, transform=src.transform, nodata=255)
    pixels, written, t0 = 0, [], time.perf_counter()
    with rasterio.open(out, "w", **prof) as dst, torch.inference_mode():
        for t in grid:
            data, _ = src.read(t.read_window, pad=t.pad)
            x = torch.from_numpy(norm.apply(data)[None]).to(dev)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                classes = class_ids(net(x))[0].to(torch.uint8).cpu().numpy()
            rs, cs = t.core_slices
            dst.write(classes[rs, cs][None], window=t.core)
            pixels += int(t.core.height * t.core.width)
            written.append(t.core)
            if max_s is not None and time.perf_counter() - t0 > max_s:
                break
    src.close()
    return pixels, written


def compare(a: Path, b: Path, windows: list[Window]) -> tuple[int, int]:
    """Pixels whose class differs between two class rasters within ``windows``, and the pixels compared."""
    diff = total = 0
    with rasterio.open(a) as da, rasterio.open(b) as db:
        for win in windows:
            diff += int(np.count_nonzero(da.read(1, window=win) != db.read(1, window=win)))
            total += int(win.height * win.width)
    return diff, total


# --- (5) TorchGeo ----------------------------------------------------------------------------------------------------
def torchgeo_loop(
    path: Path,
    net: torch.nn.Module,
    tile: int,
    overlap: int,
    batch: int,
    workers: int,
    dev: torch.device,
    max_s: float | None = None,
) -> tuple[int, int]:
    """TorchGeo RasterDataset + GridGeoSampler + DataLoader, normalize on device, forward + argmax.

    Returns (tiles done, tiles in the sampler); stops after the first batch that ends past ``max_s`` seconds."""
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler

    class Bench(RasterDataset):  # type: ignore[misc]
        filename_glob = path.name
        is_image = True

    cuda = dev.type == "cuda"
    ds = Bench(paths=[str(path.parent)])
    sampler = GridGeoSampler(ds, size=tile, stride=tile - overlap)
    # batches waiting in shared memory: workers x prefetch_factor (default 2); 200-band float32 batches of 16 x 512²
    # are 3.4 GB each, so keep one per worker there (the host's RAM, not TorchGeo, would be measured otherwise)
    with rasterio.open(path) as r:
        batch_bytes = batch * r.count * tile * tile * 4
    prefetch = 1 if workers and workers * 2 * batch_bytes > 16 * 2**30 else 2
    loader = DataLoader(
        ds,
        sampler=sampler,
        batch_size=batch,
        num_workers=workers,
        collate_fn=stack_samples,
        pin_memory=cuda,
        persistent_workers=False,
        prefetch_factor=prefetch if workers else None,
    )
    n, t0 = 0, time.perf_counter()
    with torch.inference_mode():
        batches = iter(loader)
        for sample in batches:
            x = sample["image"].to(dev, non_blocking=True)
            x = (x - SHIFT) / SCALE
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                class_ids(net(x)).to(torch.uint8).cpu()
            n += x.shape[0]
            if max_s is not None and time.perf_counter() - t0 > max_s:
                break
        del batches  # shuts the DataLoader workers down
    return n, len(sampler)


# --- driver ----------------------------------------------------------------------------------------------------------
def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MiB"


def _fmt(v: float | None) -> str:
    return "skipped" if v is None else f"{v:8.2f} MPix/s"


def run_bands(args: argparse.Namespace, bands: int, dev: torch.device, workdir: Path) -> dict[str, Any]:
    cuda = dev.type == "cuda"
    tile, overlap = args.tile, args.overlap
    torch.manual_seed(0)
    kwargs = {"width": args.width} if args.width else {}
    net = create_model(args.model, in_channels=bands, num_classes=args.classes, **kwargs).to(dev).eval()
    stride = model_stride(net, args.model)
    config = ModelConfig(
        arch=args.model,
        bands=[str(i) for i in range(1, bands + 1)],
        classes=[f"class{i}" for i in range(args.classes)],
        normalization={"method": "meanstd", "shift": [SHIFT] * bands, "scale": [SCALE] * bands},
        arch_kwargs=kwargs,
        tile=tile,
        overlap=overlap,
        output_stride=stride,
    )
    # huge band counts: shrink the raster so bands x pixels stays within --max-samples (disk and generation time)
    grid0 = TileGrid((args.size, args.size), tile, overlap, align=stride)
    core = grid0.tile_shape[0] - 2 * grid0.halo[0]
    size = args.size
    if bands * size * size > args.max_samples:
        size = max(core, int(math.sqrt(args.max_samples / bands)) // core * core)
    path = make_raster(workdir / f"bench_{size}_{bands}b.tif", size, bands)
    grid = TileGrid((size, size), tile, overlap, align=stride)
    if cuda:
        net = net.to(memory_format=torch.channels_last)
    batch = args.batch or auto_batch_size(net, bands, grid.tile_shape, dev, amp=cuda)
    mpix = size * size / 1e6
    efficiency = size * size / (len(grid) * tile * tile)
    print(
        f"\n== {bands} bands: raster {size}x{size} ({mpix:.1f} MPix), tile {tile}, overlap {overlap}, batch {batch}"
        f"{' (auto)' if not args.batch else ''}, {len(grid)} tiles; output/processed pixels {efficiency:.3f}; "
        f"geoseg reader threads {'default' if args.workers is None else args.workers}",
        flush=True,
    )
    st: dict[str, Stage] = {}

    s = st["model"] = Stage("(1) model only, forward+argmax")
    s.mpix_s = max(best_of(s, dev, args.repeat, lambda: bench_model(net, bands, tile, batch, dev, args.min_seconds)))
    print(f"  {s.name:<44}{_fmt(s.mpix_s)}", flush=True)

    s = st["decode"] = Stage(f"(2) decode, {args.readers} threads")
    with measure(s, dev):
        s.mpix_s, _ = bench_decode(path, args.readers, tile)
    print(f"  {s.name:<44}{_fmt(s.mpix_s)}", flush=True)
    s = st["decode1"] = Stage("    decode, 1 thread")
    with measure(s, dev):
        s.mpix_s, px = bench_decode(path, 1, tile, max_s=args.max_seconds)
    s.note = f"{px / 1e6:.1f} MPix read"
    print(f"  {s.name:<44}{_fmt(s.mpix_s)}  ({s.note})", flush=True)

    naive_out = workdir / f"naive_{size}_{bands}b.tif"
    s = st["naive"] = Stage("(3) naive loop (batch 1, sequential)")
    naive_windows = best_rate(
        s, dev, args.repeat, lambda: naive_loop(path, naive_out, net, config, grid, dev, args.max_seconds)
    )
    print(f"  {s.name:<44}{_fmt(s.mpix_s)}  ({s.note})", flush=True)

    geoseg_out = workdir / f"geoseg_{size}_{bands}b.tif"
    s = st["geoseg"] = Stage("(4) geoseg predict_raster (written)")
    res = best_of(
        s,
        dev,
        args.repeat,
        lambda: predict_raster(
            path,
            geoseg_out,
            model=(net, config),
            tile=tile,
            overlap=overlap,
            batch_size=batch,
            device=dev,
            amp=cuda,
            workers=args.workers,
            overwrite=True,
            compile=args.compile,
        ),
    )[-1]
    s.mpix_s = mpix / s.seconds
    print(f"  {s.name:<44}{_fmt(s.mpix_s)}  (internal {res.mpix_per_s:.2f})", flush=True)
    for n_readers in args.also_workers:  # informative: the same run with another number of reader threads
        alt = st[f"geoseg_w{n_readers}"] = Stage(f"    geoseg with {n_readers} reader threads")
        best_of(
            alt,
            dev,
            1,
            lambda n_readers=n_readers: predict_raster(
                path, geoseg_out, model=(net, config), tile=tile, overlap=overlap, batch_size=batch, device=dev,
                amp=cuda, workers=n_readers, overwrite=True, compile=args.compile,
            ),
        )  # fmt: skip
        alt.mpix_s = mpix / alt.seconds
        print(f"  {alt.name:<44}{_fmt(alt.mpix_s)}", flush=True)
    for budget in args.also_cache_mb:  # the cost of a smaller block-reuse budget: shared blocks decoded again
        alt = st[f"geoseg_c{budget:g}"] = Stage(f"    geoseg with cache_mb={budget:g}")
        best_of(
            alt,
            dev,
            args.repeat,
            lambda budget=budget: predict_raster(
                path, geoseg_out, model=(net, config), tile=tile, overlap=overlap, batch_size=batch, device=dev,
                amp=cuda, workers=args.workers, overwrite=True, compile=args.compile, cache_mb=budget,
            ),
        )  # fmt: skip
        alt.mpix_s = mpix / alt.seconds
        print(f"  {alt.name:<44}{_fmt(alt.mpix_s)}  ({alt.mpix_s / s.mpix_s:.3f} of the default budget's)", flush=True)
    mismatch, compared = compare(geoseg_out, naive_out, naive_windows)
    print(f"  class map (4) vs (3): {mismatch} mismatching pixels of {compared} (the tiles (3) wrote)", flush=True)

    s = st["torchgeo"] = Stage(f"(5) TorchGeo loop, {args.loader_workers} workers")
    if args.skip_torchgeo:
        s.note = "skipped: --skip-torchgeo"
    else:
        try:
            import torchgeo
            import torchgeo.datasets  # noqa: F401
            import torchgeo.samplers  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - ImportError, or a SyntaxError/RuntimeError from a mismatched install
            s.note = (
                f"skipped: torchgeo not importable ({type(exc).__name__}: {exc}); it needs Python >= 3.12 (0.10) "
                f"and torchvision matching this torch"
            )
        else:
            s.name += f", torchgeo {torchgeo.__version__}"
            stride_px = (tile - overlap) ** 2  # raster pixels per sampled tile, when the pass stops early

            def run_torchgeo() -> tuple[int, tuple[int, int]]:
                done, total = torchgeo_loop(
                    path, net, tile, overlap, batch, args.loader_workers, dev, args.torchgeo_seconds
                )
                return (size * size if 0 < total <= done else done * stride_px), (done, total)

            try:
                done, total = best_rate(s, dev, args.repeat, run_torchgeo)
                s.note += f", {done} of {total} tiles"
                if total == 0:
                    s.mpix_s, s.note = None, "skipped: TorchGeo's GridGeoSampler gave no tile (raster smaller than one)"
            except Exception as exc:  # noqa: BLE001 - e.g. a DataLoader worker killed for memory: report, go on
                s.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    print(f"  {s.name:<44}{_fmt(s.mpix_s)}  {s.note}", flush=True)

    print(f"  {'stage':<44}{'MPix/s':>10}{'seconds':>10}{'peak RSS':>14}{'peak GPU':>14}")
    for s in st.values():
        v = "-" if s.mpix_s is None else f"{s.mpix_s:.2f}"
        print(f"  {s.name:<44}{v:>10}{s.seconds:>10.1f}{_mb(s.rss):>14}{_mb(s.gpu):>14}")

    g, m, d, n, tg = (st[k].mpix_s for k in ("geoseg", "model", "decode", "naive", "torchgeo"))
    assert g and m and d and n
    bound = min(m, d)
    print(f"  (4)/min(1,2) = {g / bound:.3f}   (4)/(1) = {g / m:.3f}   (4)/(3) = {g / n:.2f}x   ", end="")
    print(f"(4)/(5) = {g / tg:.2f}x" if tg else "(4)/(5) = n/a (TorchGeo skipped)")
    checks: list[tuple[str, bool | None]] = []
    if cuda:
        checks += [(f"(4) >= 0.7 * min(1,2): {g:.1f} vs {0.7 * bound:.1f}", g >= 0.7 * bound)]
        checks += [(f"(4) >= 8 * (3): {g:.1f} vs {8 * n:.1f}", g >= 8 * n)]
        checks += [(f"(4) >= 2 * (5): {g:.1f} vs {2 * tg:.1f}" if tg else "(4) >= 2 * (5): TorchGeo skipped", None)]
        if tg:
            checks[-1] = (checks[-1][0], g >= 2 * tg)
        checks += [(f"class maps (4) == (3): {mismatch} mismatching pixels (bf16: informative)", None)]
    else:
        checks += [(f"(4) >= 0.8 * (1): {g:.3f} vs {0.8 * m:.3f}", g >= 0.8 * m)]
        checks += [(f"class maps (4) == (3): {mismatch} mismatching pixels", mismatch == 0)]
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL' if ok is not None else 'INFO'}  {text}")
    for p in (naive_out, geoseg_out):
        p.unlink(missing_ok=True)
    return {"bands": bands, "stages": st, "mismatch": mismatch, "checks": checks}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bands", default="4", help="comma-separated band counts, e.g. 4,13,200 (one run each)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--size", type=int, help="raster edge in px (default 16384 on GPU, 2880 on CPU)")
    p.add_argument("--tile", type=int, help="tile edge in px (default 512 on GPU, 1024 on CPU)")
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--batch", type=int, help="tiles per forward (default: from free GPU memory; 4 on CPU)")
    p.add_argument("--model", default="unet", help="registered architecture (default unet)")
    p.add_argument("--width", type=int, help="U-Net width (default 64 on GPU, 16 on CPU)")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--readers", type=int, default=os.cpu_count() or 2, help="decode threads for (2)")
    p.add_argument("--workers", type=int, help="predict_raster reader threads (default: its own choice)")
    p.add_argument(
        "--also-workers", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
        help="also time (4) with these reader thread counts, e.g. 8 (informative)",
    )  # fmt: skip
    p.add_argument(
        "--also-cache-mb", type=lambda v: [float(x) for x in v.split(",") if x], default=[],
        help="also time (4) with these block-reuse budgets in MiB, e.g. 0 (the cost of decoding shared blocks again)",
    )  # fmt: skip
    p.add_argument("--loader-workers", type=int, help="TorchGeo DataLoader workers (default min(8, cores))")
    p.add_argument("--max-samples", type=float, help="cap bands*pixels per raster (default 4e9 GPU, 1e9 CPU)")
    p.add_argument("--min-seconds", type=float, help="model-only timing length (default 5 GPU, 10 CPU)")
    p.add_argument("--repeat", type=int, help="timed runs per stage, the fastest kept (default 1 GPU, 2 CPU)")
    p.add_argument("--max-seconds", type=float, default=15.0, help="time cap of the single-thread decode and (3)")
    p.add_argument("--torchgeo-seconds", type=float, default=60.0, help="time cap of (5)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model inside predict_raster")
    p.add_argument("--skip-torchgeo", action="store_true")
    p.add_argument("--delete-rasters", action="store_true", help="delete each generated raster after its band count")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "geoseg-bench")
    args = p.parse_args(argv)
    dev = resolve_device(args.device)
    cuda = dev.type == "cuda"
    args.size = args.size or (16384 if cuda else 2880)
    args.tile = args.tile or (512 if cuda else 1024)
    if args.width is None and args.model == "unet":
        args.width = 64 if cuda else 16
    args.loader_workers = args.loader_workers or min(8, os.cpu_count() or 2)
    args.max_samples = args.max_samples or (4e9 if cuda else 1e9)
    args.min_seconds = args.min_seconds or (5.0 if cuda else 8.0)
    args.repeat = args.repeat or (1 if cuda else 2)
    args.workdir.mkdir(parents=True, exist_ok=True)
    allocator = "default"
    if cuda:
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(dev)
    else:
        name = platform.processor() or platform.machine()
        try:  # the allocator setting predict_raster uses on CPU, applied to every stage alike
            from geoseg.allocator import configure_cpu_allocator
        except ImportError:
            pass
        else:
            allocator = "glibc large blocks kept (configure_cpu_allocator)" if configure_cpu_allocator() else allocator
    print(
        f"geoseg throughput benchmark: device {dev} ({name}), {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"torch threads {torch.get_num_threads()}, rasterio {rasterio.__version__} (GDAL {rasterio.__gdal_version__}), "
        f"python {platform.python_version()}\nmodel {args.model} width {args.width}, {args.classes} classes; "
        f"{'bf16 autocast + channels_last' if cuda else 'fp32'}; allocator {allocator}; "
        f"fastest of {args.repeat} run(s) per stage; workdir {args.workdir}",
        flush=True,
    )
    results, crashed = [], []
    for b in (int(b) for b in str(args.bands).split(",") if b.strip()):
        try:  # one band count failing (out of memory, say) must not hide the others
            results.append(run_bands(args, b, dev, args.workdir))
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            crashed.append(b)
            print(f"  {b} bands: FAILED (traceback above)", flush=True)
        finally:
            if args.delete_rasters:
                for f in args.workdir.glob(f"*_{b}b.tif"):
                    f.unlink()
            if cuda:
                torch.cuda.empty_cache()
    print("\n== summary (MPix/s)")
    print(
        f"  {'bands':>5} {'model':>8} {'decodeN':>8} {'decode1':>8} {'naive':>8} {'geoseg':>8} {'torchgeo':>9}  ",
        end="",
    )
    print(f"{'4/min(1,2)':>10} {'4/1':>6} {'4/3':>6} {'4/5':>6} {'mismatch':>9}")
    for r in results:
        v = {k: s.mpix_s for k, s in r["stages"].items()}
        tg = v["torchgeo"]
        cells = [f"{v[k]:8.2f}" for k in ("model", "decode", "decode1", "naive", "geoseg")]
        print(f"  {r['bands']:>5} {' '.join(cells)} {tg if tg is None else round(tg, 2)!s:>9}  ", end="")
        print(f"{v['geoseg'] / min(v['model'], v['decode']):10.3f} {v['geoseg'] / v['model']:6.3f} ", end="")
        r54 = "n/a" if not tg else f"{v['geoseg'] / tg:.2f}"
        print(f"{v['geoseg'] / v['naive']:6.2f} {r54:>6} {r['mismatch']:>9}")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"  peak host RSS of the whole run (ru_maxrss): {_mb(maxrss)}", end="")
    print(f"; peak GPU memory: {_mb(torch.cuda.max_memory_reserved(dev))} reserved" if cuda else "")
    failed = [t for r in results for t, ok in r["checks"] if ok is False] + [f"{b} bands crashed" for b in crashed]
    print(f"  overall: {'PASS' if not failed else f'FAIL ({len(failed)} check(s))'}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
