"""Peak RSS of `geoseg.predict_raster` along a curve of raster sizes: memory must not grow with the raster.

    python benchmarks/predict_memory.py [--sizes 4096 8192 16384 32768 65536x2048] [--bands 4] [--cache-mb MIB]
        [--load-sizes 4096 16384] [--tmp DIR]

A size ``N`` is an N x N raster, ``WxH`` a W-wide, H-high one; a ``:K`` suffix (``32768:16``) predicts only its
first K tile rows, across the full width (``predict_raster(tiles=...)``, the path ``geoseg batch`` regions take):
what the raster width can make grow (the blocks shared across the width, the output block row) is exercised in
full, in a fraction of the time on a busy machine.

Each raster is generated window by window (never whole) as a tiled (512 px), DEFLATE-compressed uint16 GeoTIFF of
smooth per-band fields, so the files stay small. The model is the registry's ``tiny`` FCN (width 4) saved with
``save_checkpoint`` and a ModelConfig (tile 512, overlap 64), so a 1-GPix run finishes on 2 CPU cores. Every size is
predicted on the CPU in a fresh subprocess that reports its own peak RSS (ru_maxrss = VmHWM); the parent prints each
against the smallest size, with the block-reuse budget in force (``cache_mb``, default
:data:`geoseg.inference.reader.CPU_CACHE_MB`) and whether each size holds its shared block rows within it. The
bound: peak <= the smallest size's + the budget, and <= 1.10x at every size. The ``--load-sizes`` are then predicted
again while one busy process per core runs (started here), against the smallest of them under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from memory_curve import (
    DEFAULT_SIZES,
    child_json,
    cpu_load,
    machine,
    parse_cap,
    parse_size,
    ratio_lines,
    size_name,
    versions,
)


def generate(path: Path, shape: tuple[int, int], bands: int, window: int = 2048, rows: int | None = None) -> None:
    """A ``shape`` (rows, cols) uint16 raster of smooth fields, written one ``window``² window at a time; with
    ``rows``, only the windows over its first ``rows`` rows (a sparse file: the rest is never read)."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    height, width = shape
    prof = {
        "driver": "GTiff", "width": width, "height": height, "count": bands, "dtype": "uint16",
        "crs": "EPSG:32633", "transform": Affine(10.0, 0, 500000.0, 0, -10.0, 4600000.0), "tiled": True,
        "blockxsize": 512, "blockysize": 512, "compress": "deflate", "zlevel": 1, "BIGTIFF": "IF_SAFER",
        "sparse_ok": True,
    }  # fmt: skip
    tmp = path.with_name(path.name + ".partial.tif")
    with rasterio.open(tmp, "w", **prof) as ds:
        for r0 in range(0, height if rows is None else min(height, rows), window):
            for c0 in range(0, width, window):
                h, w = min(window, height - r0), min(window, width - c0)
                y = np.arange(r0, r0 + h, dtype=np.float32)
                x = np.arange(c0, c0 + w, dtype=np.float32)
                block = np.empty((bands, h, w), np.uint16)
                for b in range(bands):
                    fy = 600 * np.sin(y / (300 + 40 * b) + b)
                    fx = 600 * np.cos(x / (350 + 30 * b) - b)
                    block[b] = (2000 + np.add.outer(fy, fx)).astype(np.uint16)
                ds.write(block, window=Window(c0, r0, w, h))
    os.replace(tmp, path)


def make_model(path: Path, bands: int) -> None:
    import torch

    from geoseg.models.checkpoint import save_checkpoint
    from geoseg.models.config import ModelConfig
    from geoseg.models.registry import create_model

    torch.manual_seed(0)
    net = create_model("tiny", in_channels=bands, num_classes=5, width=4)
    config = ModelConfig(
        arch="tiny",
        bands=[str(i) for i in range(1, bands + 1)],
        classes=[f"class{i}" for i in range(5)],
        normalization={"method": "meanstd", "shift": [2000.0] * bands, "scale": [600.0] * bands},
        arch_kwargs={"width": 4},
        tile=512,
        overlap=64,
    )
    save_checkpoint(path, net, config)


def child(raster: str, model: str, out: str, cache_mb: str, cap: str) -> None:
    """Run in a fresh process: predict on the CPU and print JSON with peak RSS and the budget decision."""
    from geoseg.allocator import configure_cpu_allocator
    from geoseg.inference import predict_raster
    from geoseg.inference.predict import plan_grid
    from geoseg.io.read import RasterSource

    budget = None if cache_mb == "default" else float(cache_mb)
    grid = plan_grid(raster, model=model)
    rows, cols = grid.full_grid_shape
    tiles = None if cap == "all" or int(cap) >= rows else (range(int(cap)), range(cols))
    configure_cpu_allocator()  # as the CLI does before predicting on the CPU
    t0 = time.perf_counter()
    res = predict_raster(raster, out, model=model, device="cpu", overwrite=True, cache_mb=budget, tiles=tiles)
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from geoseg.inference.reader import default_cache_mb, overlap_rows_bytes

    with RasterSource(raster) as src:
        held = overlap_rows_bytes(src, grid)
    used = default_cache_mb(cuda=False) if budget is None else budget
    print(
        json.dumps(
            {
                "tiles": res.tiles,
                "pixels": res.pixels,
                "seconds": seconds,
                "peak_rss_mib": peak_kib / 1024,
                "budget_mib": used,
                "shared_rows_mib": held / 2**20,
                "kept": held <= used * 2**20,
            }
        )
    )


def predict(raster: Path, model: Path, tmp: Path, cache_mb: str, cap: int | None) -> dict:
    out = tmp / f"classes_{raster.stem}.tif"
    cmd = [sys.executable, __file__, "--child", str(raster), str(model), str(out), cache_mb, str(cap or "all")]
    try:
        return child_json(cmd)
    finally:
        out.unlink(missing_ok=True)


def line(name: str, shape: tuple[int, int], r: dict) -> str:
    mpix = r["pixels"] / 1e6
    held = "held (decoded once)" if r["kept"] else "not held (decoded again)"
    part = "" if r["pixels"] >= shape[0] * shape[1] else f", first {r['tiles']} tiles (full width)"
    return (
        f"  {name:>11} ({mpix:7.1f} MPix{part}, {int(r['tiles']):>5} tiles): peak RSS {r['peak_rss_mib']:7.1f} MiB, "
        f"predict {r['seconds']:7.1f} s ({mpix / r['seconds']:.2f} MPix/s); shared block rows "
        f"{r['shared_rows_mib']:.0f} MiB {held}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="N (N x N) or WxH; the first is the base")
    ap.add_argument("--load-sizes", nargs="*", default=["4096", "16384"], help="sizes run again under CPU load")
    ap.add_argument("--bands", type=int, default=4)
    ap.add_argument("--cache-mb", default="default", help="block-reuse budget in MiB (default: predict_raster's)")
    ap.add_argument("--tmp", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--generate", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--shape", default="", help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=5, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate:
        generate(Path(args.generate), parse_size(args.shape), args.bands, rows=args.rows)
        return 0
    if args.child:
        child(*args.child)
        return 0
    t_start = time.perf_counter()
    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    print(
        f"model tiny (width 4), {args.bands} bands uint16 DEFLATE (512-px blocks), tile 512, overlap 64, device cpu, "
        f"cache_mb {args.cache_mb}",
        flush=True,
    )
    shapes = {size_name(parse_size(s)): parse_size(s) for s in args.sizes}
    caps = {size_name(parse_size(s)): parse_cap(s) for s in args.sizes}
    load_caps = {size_name(parse_size(s)): parse_cap(s) for s in args.load_sizes}
    small = next(iter(shapes))
    rows: dict[str, dict] = {}
    loaded: dict[str, dict] = {}
    ok = True
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        tmp = Path(d)
        model = tmp / "tiny.safetensors"
        make_model(model, args.bands)
        rasters = {}
        for name, shape in shapes.items():
            raster = rasters[name] = tmp / f"scene_{shape[1]}x{shape[0]}.tif"
            t0 = time.perf_counter()
            gen = [sys.executable, __file__, "--generate", str(raster), "--shape", f"{shape[1]}x{shape[0]}"]
            cap = max(caps[name] or 0, load_caps.get(name) or 0) if caps[name] else None
            if cap:  # rows the first ``cap`` tile rows read (tile 512, stride 448), rounded up to the window
                gen += ["--rows", str(cap * 448 + 512)]
            subprocess.run([*gen, "--bands", str(args.bands)], check=True)
            gen_s = time.perf_counter() - t0
            r = rows[name] = predict(raster, model, tmp, args.cache_mb, caps[name])
            print(f"{line(name, shape, r)}, generate {gen_s:.0f} s", flush=True)
            if name not in {size_name(parse_size(s)) for s in args.load_sizes}:
                raster.unlink()
        budget = rows[small]["budget_mib"]
        print(f"block-reuse budget in force: {budget:g} MiB")
        lines, ok = ratio_lines(rows, small, budget_mib=budget)
        print("\n".join(lines), flush=True)
        load_names = [size_name(parse_size(s)) for s in args.load_sizes]
        if len(load_names) > 1:
            with cpu_load() as n:
                print(f"under CPU load ({n} busy processes, one per core; {machine()}):", flush=True)
                for name in load_names:
                    r = loaded[name] = predict(rasters[name], model, tmp, args.cache_mb, load_caps[name])
                    print(line(name, shapes[name], r), flush=True)
            lines, ok_loaded = ratio_lines(loaded, load_names[0], budget_mib=budget)
            print("\n".join(lines))
            ok &= ok_loaded
    print(f"total {time.perf_counter() - t_start:.0f} s; {'PASS' if ok else 'FAIL'}: every size within 1.10x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
