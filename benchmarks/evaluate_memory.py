"""Peak RSS of `geoseg.evaluate` along a curve of raster sizes: memory must not grow with the raster.

    python benchmarks/evaluate_memory.py [--sizes 4096 8192 16384 32768 65536x2048] [--window 1024]
        [--load-sizes 4096 16384] [--tmp DIR]

The prediction and the truth are the class rasters of ``vectorize_memory.py`` (uint8, DEFLATE, 512-px blocks), the
truth with its cell boundaries shifted by 37 px so the two partly disagree; sizes and the ``:K`` suffix (classes in
the first K generator windows rows, 2048 rows each, the rest sparse and read as nodata) as there. Every size is
evaluated (raster truth on the same grid, ``evaluate(..., window=W)``) in a fresh subprocess that reports its own
peak RSS (ru_maxrss = VmHWM); the parent prints each against the smallest (target: within 1.10x). The
``--load-sizes`` are evaluated again while one busy process per core runs.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from memory_curve import DEFAULT_SIZES, child_json, cpu_load, machine, parse_cap, parse_size, ratio_lines, size_name
from memory_curve import versions as version_line
from vectorize_memory import generate_curve

GENERATOR_WINDOW = 2048


def child(pred: str, truth: str, window: int) -> None:
    """Run in a fresh process: evaluate and print JSON with peak RSS and the mIoU."""
    from geoseg.evaluation import evaluate

    t0 = time.perf_counter()
    rep = evaluate(pred, truth, window=window)
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f'{{"miou": {rep.miou}, "seconds": {seconds}, "peak_rss_mib": {peak_kib / 1024}}}')


def run(pred: Path, truth: Path, window: int) -> dict:
    return child_json([sys.executable, __file__, "--child", str(pred), str(truth), "--window", str(window)])


def line(name: str, shape: tuple[int, int], cap: int | None, r: dict) -> str:
    part = f", classes in the first {cap * GENERATOR_WINDOW} rows" if cap and cap * GENERATOR_WINDOW < shape[0] else ""
    mpix = shape[0] * shape[1] / 1e6
    return (
        f"  {name:>11} ({mpix:7.1f} MPix{part}): peak RSS {r['peak_rss_mib']:7.1f} MiB, mIoU {r['miou']:.4f}, "
        f"evaluate {r['seconds']:6.1f} s ({mpix / r['seconds']:.1f} MPix/s)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="N (N x N) or WxH; the first is the base")
    ap.add_argument("--load-sizes", nargs="*", default=["4096", "16384"], help="sizes run again under CPU load")
    ap.add_argument("--window", type=int, default=1024, help="evaluate's window (its default)")
    ap.add_argument("--tmp", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.window)
        return 0
    t_start = time.perf_counter()
    print(f"machine: {machine()}")
    print(f"versions: {version_line()}")
    print(
        f"uint8 class rasters (prediction and truth), DEFLATE, 512-px blocks; evaluate window {args.window}", flush=True
    )
    caps = {size_name(parse_size(s)): parse_cap(s) for s in args.sizes}
    gen_args = argparse.Namespace(sizes=args.sizes, load_sizes=args.load_sizes, window=GENERATOR_WINDOW)
    rows: dict[str, dict] = {}
    loaded: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        preds = generate_curve(gen_args, Path(d), "pred")
        truths = generate_curve(gen_args, Path(d), "truth", shift=37)
        for name, (shape, path, _) in preds.items():
            r = rows[name] = run(path, truths[name][1], args.window)
            print(line(name, shape, caps[name], r), flush=True)
        lines, ok = ratio_lines(rows, next(iter(rows)))
        print("\n".join(lines), flush=True)
        load_names = [size_name(parse_size(s)) for s in args.load_sizes]
        if len(load_names) > 1:
            with cpu_load() as n:
                print(f"under CPU load ({n} busy processes, one per core; {machine()}):", flush=True)
                for name in load_names:
                    shape, path, _ = preds[name]
                    r = loaded[name] = run(path, truths[name][1], args.window)
                    print(line(name, shape, caps[name], r), flush=True)
            lines, ok_loaded = ratio_lines(loaded, load_names[0])
            print("\n".join(lines))
            ok &= ok_loaded
    print(f"total {time.perf_counter() - t_start:.0f} s; {'PASS' if ok else 'FAIL'}: every size within 1.10x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
