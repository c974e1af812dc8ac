"""Peak RSS of `geoseg.predict_raster` on a large vs a small generated raster (memory must not grow with size).

    python benchmarks/predict_memory.py [--large 32768] [--small 4096] [--also 16384] [--bands 4] [--tmp DIR]

Each raster is generated window by window (never whole) as a tiled (512 px), DEFLATE-compressed uint16 GeoTIFF of
smooth per-band fields, so the files stay small. The model is the registry's ``tiny`` FCN (width 4) saved with
``save_checkpoint`` and a ModelConfig (tile 512, overlap 64), so a 1-GPix run finishes on 2 CPU cores. Every size is
predicted on the CPU in a fresh subprocess that reports its own peak RSS (ru_maxrss); the parent prints both and the
ratio (target: within 10%).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def generate(path: Path, size: int, bands: int, window: int = 2048) -> None:
    """A ``size``² uint16 raster of smooth fields, written one ``window``² window at a time."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    prof = {
        "driver": "GTiff", "width": size, "height": size, "count": bands, "dtype": "uint16",
        "crs": "EPSG:32633", "transform": Affine(10.0, 0, 500000.0, 0, -10.0, 4600000.0), "tiled": True,
        "blockxsize": 512, "blockysize": 512, "compress": "deflate", "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    tmp = path.with_name(path.name + ".partial.tif")
    with rasterio.open(tmp, "w", **prof) as ds:
        for r0 in range(0, size, window):
            for c0 in range(0, size, window):
                h, w = min(window, size - r0), min(window, size - c0)
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


def child(raster: str, model: str, out: str) -> None:
    """Run in a fresh process: predict on the CPU and print JSON with peak RSS."""
    from geoseg.allocator import configure_cpu_allocator
    from geoseg.inference import predict_raster

    configure_cpu_allocator()  # as the CLI does before predicting on the CPU
    t0 = time.perf_counter()
    res = predict_raster(raster, out, model=model, device="cpu", overwrite=True)
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"tiles": res.tiles, "seconds": seconds, "peak_rss_mib": peak_kib / 1024}))


def measure(size: int, bands: int, model: Path, tmp: Path) -> dict[str, float]:
    raster = tmp / f"scene_{size}.tif"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--generate", str(raster), "--size", str(size), "--bands", str(bands)], check=True
    )
    gen_s = time.perf_counter() - t0
    out = tmp / f"classes_{size}.tif"
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(raster), str(model), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["generate_seconds"] = gen_s
    result["megapixels"] = size * size / 1e6
    for p in (raster, out):
        p.unlink(missing_ok=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", type=int, default=32768)
    ap.add_argument("--small", type=int, default=4096)
    ap.add_argument("--also", type=int, nargs="*", default=[], help="further sizes to report (e.g. 16384)")
    ap.add_argument("--bands", type=int, default=4)
    ap.add_argument("--tmp", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--generate", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate:
        generate(Path(args.generate), args.size, args.bands)
        return 0
    if args.child:
        child(*args.child)
        return 0
    import torch

    machine = platform.processor() or platform.machine()
    print(
        f"machine: {machine}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}, torch {torch.__version__}; "
        f"model tiny (width 4), {args.bands} bands uint16 DEFLATE, tile 512, overlap 64, device cpu",
        flush=True,
    )
    rows: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        model = Path(d) / "tiny.safetensors"
        make_model(model, args.bands)
        for size in (args.small, *args.also, args.large):
            r = rows[size] = measure(size, args.bands, model, Path(d))
            print(
                f"{size:>6}² ({r['megapixels']:8.1f} MPix, {int(r['tiles']):>5} tiles): peak RSS "
                f"{r['peak_rss_mib']:7.1f} MiB, predict {r['seconds']:7.1f} s ({r['megapixels'] / r['seconds']:.1f} "
                f"MPix/s), generate {r['generate_seconds']:.1f} s",
                flush=True,
            )
    small = rows[args.small]["peak_rss_mib"]
    ok = True
    for size in (*args.also, args.large):
        ratio = rows[size]["peak_rss_mib"] / small
        ok &= ratio <= 1.10
        print(
            f"peak RSS ratio {size}² / {args.small}²: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%; "
            f"{(size / args.small) ** 2:.0f}x the pixels): {'PASS' if ratio <= 1.10 else 'FAIL'} (target <= 1.10)"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
