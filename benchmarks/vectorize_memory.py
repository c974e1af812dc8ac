"""Peak RSS of `geoseg.vectorize` on a large vs a small generated class raster (memory must not grow with size).

    python benchmarks/vectorize_memory.py [--large 32768] [--small 4096] [--window 2048] [--tmp DIR]

Each raster is generated window by window (never whole) as a tiled, DEFLATE-compressed uint8 GeoTIFF: wavy cells of
256 px with one of 5 classes each (a hash of the cell), plus a nodata band. Vectorization runs in a fresh
subprocess per size, writing a GeoPackage; the child reports its own peak RSS (ru_maxrss).
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


def class_block(r0: int, c0: int, h: int, w: int) -> np.ndarray:
    """Classes of the pixels [r0:r0+h, c0:c0+w] of the (infinite) synthetic scene; 255 = nodata."""
    y = np.arange(r0, r0 + h, dtype=np.float64)[:, None]
    x = np.arange(c0, c0 + w, dtype=np.float64)[None, :]
    ci = ((x + 40 * np.sin(y / 50.0)) // 256).astype(np.int64)
    cj = ((y + 40 * np.sin(x / 60.0)) // 256).astype(np.int64)
    cls = (((ci * 73856093) ^ (cj * 19349663)) % 5).astype(np.uint8)
    cls[((y % 5000) < 60) & np.ones_like(x, dtype=bool)] = 255  # a nodata stripe every 5000 rows
    return cls


def generate(path: Path, size: int, window: int = 2048) -> None:
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    prof = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "uint8",
        "nodata": 255,
        "crs": "EPSG:32633",
        "transform": Affine(1.0, 0, 500000.0, 0, -1.0, 4600000.0),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    with rasterio.open(path, "w", **prof) as ds:
        for r0 in range(0, size, window):
            for c0 in range(0, size, window):
                h, w = min(window, size - r0), min(window, size - c0)
                ds.write(class_block(r0, c0, h, w), 1, window=Window(c0, r0, w, h))


def child(raster: str, out: str, window: int) -> None:
    """Run in a fresh process: vectorize and print JSON with peak RSS."""
    from geoseg.vectorization import vectorize

    t0 = time.perf_counter()
    res = vectorize(raster, out, window=window, overwrite=True)
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"features": res.features, "seconds": seconds, "peak_rss_mib": peak_kib / 1024}))


def measure(size: int, window: int, tmp: Path) -> dict[str, float]:
    raster = tmp / f"classes_{size}.tif"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--generate", str(raster), "--size", str(size)], check=True)
    gen_s = time.perf_counter() - t0
    out = tmp / f"polygons_{size}.gpkg"
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(raster), str(out), "--window", str(window)],
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", type=int, default=32768)
    ap.add_argument("--small", type=int, default=4096)
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--tmp", default=None, help="Scratch directory (default: a temporary one).")
    ap.add_argument("--generate", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate:
        generate(Path(args.generate), args.size)
        return
    if args.child:
        child(args.child[0], args.child[1], args.window)
        return
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        rows = {}
        for size in (args.small, args.large):
            r = measure(size, args.window, Path(d))
            rows[size] = r
            print(
                f"{size:>6}² ({r['megapixels']:8.1f} MPix): peak RSS {r['peak_rss_mib']:7.1f} MiB, "
                f"{r['features']:>7} polygons, vectorize {r['seconds']:7.1f} s "
                f"({r['megapixels'] / r['seconds']:.1f} MPix/s), generate {r['generate_seconds']:.1f} s",
                flush=True,
            )
    small, large = rows[args.small]["peak_rss_mib"], rows[args.large]["peak_rss_mib"]
    print(
        f"peak RSS ratio {args.large}² / {args.small}²: {large / small:.3f} "
        f"({(large / small - 1) * 100:+.1f}%; {(args.large / args.small) ** 2:.0f}x the pixels), "
        f"window {args.window}"
    )


if __name__ == "__main__":
    main()
