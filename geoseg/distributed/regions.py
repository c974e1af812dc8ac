"""Split a scene's tile grid into block-aligned regions: groups of whole tiles, one task each."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from geoseg.errors import InvalidParameterError
from geoseg.tiling import TileGrid


@dataclass(frozen=True)
class RegionTask:
    """Everything a worker needs to predict one region of one scene into its own file (picklable)."""

    scene: str
    src: str
    dst: str
    checkpoint: str
    rows: tuple[int, int] | None  # tile rows [start, stop) of the full grid; None = the whole scene
    cols: tuple[int, int] | None
    origin: tuple[int, int]  # pixel (row, col) of the region in the scene
    shape: tuple[int, int]  # region (rows, cols) in pixels
    tile: int | None
    overlap: int | None
    batch_size: int | None
    device: str
    bands: Any  # BandSpec (lists stored as tuples)
    stitch: str
    fingerprint: str  # source + checkpoint identity (path, size, mtime)
    cache_mb: float | None = None  # block-reuse budget of predict_raster (MiB; None = its default)

    @property
    def params(self) -> dict:
        """The parameters that decide the output bytes (recorded in the manifest)."""
        d = asdict(self)
        d.pop("dst")
        d.pop("device")  # CPU and GPU runs of the same model may differ in the last bit: still the same task
        d.pop("batch_size")
        d.pop("cache_mb")  # memory, not bytes
        return d

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.params, sort_keys=True, default=str).encode()).hexdigest()[:20]


def file_fingerprint(*paths: str | os.PathLike[str]) -> str:
    """Cheap identity of files: resolved path, size and mtime."""
    parts = []
    for p in paths:
        st = os.stat(p)
        parts.append(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def split_ranges(n: int, k: int) -> list[range]:
    """[0, n) in consecutive ranges of k (the last may be shorter)."""
    return [range(i, min(i + k, n)) for i in range(0, n, k)]


def plan_regions(grid: TileGrid, region_size: int) -> list[tuple[range, range] | None]:
    """Tile ranges of regions about ``region_size`` px on a side (whole tiles), or ``[None]`` for one region.

    Raises:
        InvalidParameterError: a region size below 1 pixel.
    """
    if region_size < 1:
        raise InvalidParameterError(f"region_size must be >= 1 pixel, got {region_size}")
    nr, nc = grid.full_grid_shape
    first = grid.tile(0, 0).core
    kr = max(1, round(region_size / int(first.height)))
    kc = max(1, round(region_size / int(first.width)))
    if kr >= nr and kc >= nc:
        return [None]
    return [(rows, cols) for rows in split_ranges(nr, kr) for cols in split_ranges(nc, kc)]


__all__ = ["RegionTask", "file_fingerprint", "plan_regions", "split_ranges"]
