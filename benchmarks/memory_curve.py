"""Shared parts of the peak-memory benchmarks (predict_memory.py, vectorize_memory.py, evaluate_memory.py).

The curve: every raster size in its own fresh subprocess (peak RSS = the child's ``ru_maxrss``, i.e. ``VmHWM``),
each compared with the smallest; the versions the run used; and a CPU load the benchmark starts itself (one busy
process per core) for the run that shows the bound does not depend on timing.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

DEFAULT_SIZES = ("4096", "8192", "16384", "32768", "65536x2048")
TARGET = 1.10


def parse_size(text: str) -> tuple[int, int]:
    """``"4096"`` -> (4096, 4096); ``"65536x2048"`` -> (rows 2048, cols 65536): width x height, as GDAL writes it.
    A ``:N`` suffix (a cap on the rows processed, see :func:`parse_cap`) is ignored here."""
    text = text.split(":")[0]
    if "x" in text:
        w, h = text.lower().split("x")
        return int(h), int(w)
    return int(text), int(text)


def parse_cap(text: str) -> int | None:
    """``"32768:16"`` -> 16 (process only the first 16 tile rows or windows rows, full width); None without."""
    return int(text.split(":")[1]) if ":" in text else None


def size_name(shape: tuple[int, int]) -> str:
    h, w = shape
    return f"{w}²" if h == w else f"{w}x{h}"


def versions() -> str:
    """geoseg commit, python, numpy, rasterio, GDAL, glibc (and torch when importable without cost to the caller)."""
    import numpy
    import rasterio

    repo = Path(__file__).resolve().parent.parent
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    libc = " ".join(platform.libc_ver()) or "unknown"
    parts = [
        f"geoseg {commit}",
        f"python {sys.version.split()[0]}",
        f"numpy {numpy.__version__}",
        f"rasterio {rasterio.__version__}",
        f"GDAL {rasterio.__gdal_version__}",
        f"glibc {libc.removeprefix('glibc ')}",
    ]
    with contextlib.suppress(ImportError):
        import torch

        parts.insert(2, f"torch {torch.__version__}")
    return ", ".join(parts)


def machine() -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load} (1, 5, 15 min)"


def _spin() -> None:  # pragma: no cover - runs in the busy processes
    while True:
        pass


@contextlib.contextmanager
def cpu_load(processes: int | None = None) -> Iterator[int]:
    """One busy process per core (``processes``) while the block runs; yields their number."""
    n = processes or os.cpu_count() or 2
    ctx = multiprocessing.get_context("spawn")
    busy = [ctx.Process(target=_spin, daemon=True) for _ in range(n)]
    for p in busy:
        p.start()
    try:
        yield n
    finally:
        for p in busy:
            p.terminate()
        for p in busy:
            p.join()


def child_json(cmd: list[str]) -> dict:
    """Run ``cmd`` (a fresh Python process) and parse the JSON of its last output line."""
    import json

    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratio_lines(rows: dict[str, dict], small: str, *, budget_mib: float = 0.0) -> tuple[list[str], bool]:
    """One line per size: its peak over the smallest's, PASS within :data:`TARGET`; with ``budget_mib`` also the
    bound ``peak <= small + budget``."""
    base = rows[small]["peak_rss_mib"]
    ok, lines = True, []
    for name, r in rows.items():
        if name == small:
            continue
        ratio = r["peak_rss_mib"] / base
        passed = ratio <= TARGET
        bound = ""
        if budget_mib:
            within = r["peak_rss_mib"] <= base + budget_mib
            passed &= within
            bound = f"; bound small + budget = {base + budget_mib:.0f} MiB: {'within' if within else 'EXCEEDED'}"
        ok &= passed
        lines.append(
            f"  peak RSS {name} / {small}: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%){bound}: "
            f"{'PASS' if passed else 'FAIL'} (target <= {TARGET:.2f})"
        )
    return lines, ok
