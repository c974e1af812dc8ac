"""Peak RSS of `geoseg.vectorize` along a curve of raster sizes: memory must not grow with the raster.

    python benchmarks/vectorize_memory.py [--sizes 4096 8192 16384 32768 65536x2048] [--window 2048]
        [--load-sizes 4096 16384] [--tmp DIR]

Each raster is generated window by window (never whole) as a tiled (512 px), DEFLATE-compressed uint8 GeoTIFF: wavy
cells of 256 px with one of 5 classes each (a hash of the cell), and a nodata stripe every 5000 rows. A size ``N``
is N x N, ``WxH`` W wide and H high; a ``:K`` suffix writes classes in its first K windows rows only (``window``
rows each) and leaves the rest of the full-size raster sparse, read as nodata: every window of the raster is still
read, labelled and polygonized, in a fraction of the time. Every size is vectorized into a GeoPackage in a fresh
subprocess that reports its own peak RSS (ru_maxrss = VmHWM); the parent prints each against the smallest
(target: within 1.10x). The ``--load-sizes`` are vectorized again while one busy process per core runs.
"""

from __future__ import annotations

import argparse
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


def class_block(r0: int, c0: int, h: int, w: int, shift: int = 0) -> np.ndarray:
    """Classes of the pixels [r0:r0+h, c0:c0+w] of the (infinite) synthetic scene; 255 = nodata. ``shift`` moves
    the cell boundaries (a second, partly disagreeing map of the same scene)."""
    y = np.arange(r0, r0 + h, dtype=np.float64)[:, None]
    x = np.arange(c0, c0 + w, dtype=np.float64)[None, :]
    ci = ((x + shift + 40 * np.sin(y / 50.0)) // 256).astype(np.int64)
    cj = ((y + shift + 40 * np.sin(x / 60.0)) // 256).astype(np.int64)
    cls = (((ci * 73856093) ^ (cj * 19349663)) % 5).astype(np.uint8)
    cls[((y % 5000) < 60) & np.ones_like(x, dtype=bool)] = 255  # a nodata stripe every 5000 rows
    return cls


def generate(path: Path, shape: tuple[int, int], window: int = 2048, rows: int | None = None, shift: int = 0) -> None:
    """A ``shape`` (rows, cols) class raster written one window at a time; with ``rows`` only its first ``rows``
    rows (a sparse file, read as nodata elsewhere)."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    height, width = shape
    prof = {
        "driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8", "nodata": 255,
        "crs": "EPSG:32633", "transform": Affine(1.0, 0, 500000.0, 0, -1.0, 4600000.0), "tiled": True,
        "blockxsize": 512, "blockysize": 512, "compress": "deflate", "zlevel": 1, "BIGTIFF": "IF_SAFER",
        "sparse_ok": True,
    }  # fmt: skip
    tmp = path.with_name(path.name + ".partial.tif")
    with rasterio.open(tmp, "w", **prof) as ds:
        for r0 in range(0, height if rows is None else min(height, rows), window):
            for c0 in range(0, width, window):
                h, w = min(window, height - r0), min(window, width - c0)
                ds.write(class_block(r0, c0, h, w, shift), 1, window=Window(c0, r0, w, h))
    os.replace(tmp, path)


def generate_curve(
    args: argparse.Namespace, tmp: Path, prefix: str, shift: int = 0
) -> dict[str, tuple[tuple[int, int], Path, float]]:
    """Generate every size of ``args.sizes`` (subprocesses); (shape, path, seconds) by size name."""
    load_caps = {size_name(parse_size(s)): parse_cap(s) for s in args.load_sizes}
    out = {}
    for text in args.sizes:
        shape, cap = parse_size(text), parse_cap(text)
        name = size_name(shape)
        path = tmp / f"{prefix}_{shape[1]}x{shape[0]}.tif"
        cmd = [sys.executable, __file__, "--generate", str(path), "--shape", f"{shape[1]}x{shape[0]}"]
        if cap:
            cmd += ["--rows", str(max(cap, load_caps.get(name) or 0) * args.window)]
        t0 = time.perf_counter()
        subprocess.run([*cmd, "--shift", str(shift), "--window", str(args.window)], check=True)
        out[name] = (shape, path, time.perf_counter() - t0)
    return out


def child(raster: str, out: str, window: int) -> None:
    """Run in a fresh process: vectorize and print JSON with peak RSS."""
    from geoseg.vectorization import vectorize

    t0 = time.perf_counter()
    res = vectorize(raster, out, window=window, overwrite=True)
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f'{{"features": {res.features}, "seconds": {seconds}, "peak_rss_mib": {peak_kib / 1024}}}')


def run(raster: Path, window: int) -> dict:
    out = raster.with_suffix(".gpkg")
    try:
        return child_json([sys.executable, __file__, "--child", str(raster), str(out), "--window", str(window)])
    finally:
        out.unlink(missing_ok=True)


def line(name: str, shape: tuple[int, int], cap: int | None, window: int, r: dict) -> str:
    part = f", classes in the first {cap * window} rows" if cap and cap * window < shape[0] else ""
    mpix = shape[0] * shape[1] / 1e6
    return (
        f"  {name:>11} ({mpix:7.1f} MPix{part}): peak RSS {r['peak_rss_mib']:7.1f} MiB, {int(r['features']):>6} "
        f"polygons, vectorize {r['seconds']:6.1f} s ({mpix / r['seconds']:.1f} MPix/s)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="N (N x N) or WxH; the first is the base")
    ap.add_argument("--load-sizes", nargs="*", default=["4096", "16384"], help="sizes run again under CPU load")
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--tmp", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--generate", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--shape", default="", help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--shift", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate:
        generate(Path(args.generate), parse_size(args.shape), args.window, rows=args.rows, shift=args.shift)
        return 0
    if args.child:
        child(args.child[0], args.child[1], args.window)
        return 0
    t_start = time.perf_counter()
    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    print(f"uint8 class rasters, DEFLATE, 512-px blocks; window {args.window}; output GeoPackage", flush=True)
    caps = {size_name(parse_size(s)): parse_cap(s) for s in args.sizes}
    rows: dict[str, dict] = {}
    loaded: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        rasters = generate_curve(args, Path(d), "classes")
        for name, (shape, path, gen_s) in rasters.items():
            r = rows[name] = run(path, args.window)
            print(f"{line(name, shape, caps[name], args.window, r)}, generate {gen_s:.0f} s", flush=True)
        lines, ok = ratio_lines(rows, next(iter(rows)))
        print("\n".join(lines), flush=True)
        load_names = [size_name(parse_size(s)) for s in args.load_sizes]
        if len(load_names) > 1:
            with cpu_load() as n:
                print(f"under CPU load ({n} busy processes, one per core; {machine()}):", flush=True)
                for name in load_names:
                    shape, path, _ = rasters[name]
                    r = loaded[name] = run(path, args.window)
                    print(line(name, shape, caps[name], args.window, r), flush=True)
            lines, ok_loaded = ratio_lines(loaded, load_names[0])
            print("\n".join(lines))
            ok &= ok_loaded
    print(f"total {time.perf_counter() - t_start:.0f} s; {'PASS' if ok else 'FAIL'}: every size within 1.10x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
