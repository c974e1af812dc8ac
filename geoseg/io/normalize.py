"""Per-band normalization: ``(x - shift) / scale``, from given values or statistics sampled from a raster."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.errors import InvalidParameterError
from geoseg.options import plain_arguments

if TYPE_CHECKING:
    from geoseg.io.read import RasterSource

NORMALIZATION_METHODS = ("meanstd", "percentile", "minmax", "none")


@dataclass
class Normalization:
    """``(x - shift) / scale`` per band. ``method`` records where the numbers came from.

    Raises:
        InvalidParameterError: an unknown ``method``, or ``shift`` and ``scale`` of different lengths;
            :meth:`apply` to data with another band count.
    """

    method: str = "none"
    shift: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.method not in NORMALIZATION_METHODS:
            raise InvalidParameterError(
                f"unknown normalization {self.method!r}; choose one of {', '.join(NORMALIZATION_METHODS)}"
            )
        if len(self.shift) != len(self.scale):
            raise InvalidParameterError("normalization shift and scale must have one value per band")
        self.scale = [s if s and np.isfinite(s) and abs(s) > 1e-12 else 1.0 for s in self.scale]

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Normalize a (bands, rows, cols) float32 array in place and return it."""
        if self.method == "none" or not self.shift:
            return data
        if len(self.shift) != data.shape[0]:
            raise InvalidParameterError(
                f"normalization has {len(self.shift)} band(s) but the data has {data.shape[0]}; recompute statistics "
                f"for the selected bands"
            )
        shift = np.asarray(self.shift, dtype=np.float32)[:, None, None]
        scale = np.asarray(self.scale, dtype=np.float32)[:, None, None]
        data -= shift
        data /= scale
        return data

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "shift": list(map(float, self.shift)), "scale": list(map(float, self.scale))}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Normalization:
        if not d:
            return cls()
        return cls(method=d.get("method", "none"), shift=list(d.get("shift", [])), scale=list(d.get("scale", [])))


def sample_pixels(source: RasterSource, *, max_pixels: int = 200_000, window: int = 64, seed: int = 0) -> np.ndarray:
    """Valid pixels (n, bands) drawn from random windows of a raster, never reading it whole."""
    rng = np.random.default_rng(seed)
    h, w = source.height, source.width
    win = min(window, h), min(window, w)
    n_windows = max(1, min(max_pixels // (win[0] * win[1]) + 1, 4096))
    if h * w <= max_pixels:
        starts = [(0, 0)]
        win = (h, w)
    else:
        starts = list(zip(rng.integers(0, h - win[0] + 1, n_windows), rng.integers(0, w - win[1] + 1, n_windows)))
    from rasterio.windows import Window

    chunks = []
    for r, c in starts:
        data, valid = source.read(Window(int(c), int(r), win[1], win[0]))
        ok = valid & np.isfinite(data).all(axis=0)
        if ok.any():
            chunks.append(data[:, ok].T)
    if not chunks:
        raise InvalidParameterError(
            f"{source.path}: no valid pixel found while sampling statistics (raster all nodata?); pass normalization "
            f"values explicitly or check the nodata value"
        )
    return np.concatenate(chunks)[:max_pixels]


@plain_arguments
def compute_normalization(
    source: RasterSource, method: str = "meanstd", *, percentiles: tuple[float, float] = (2.0, 98.0), **kw: Any
) -> Normalization:
    """Statistics for ``method`` sampled from ``source`` (meanstd, percentile, minmax or none).

    Raises:
        InvalidParameterError: an unknown ``method``.
        RasterReadError: the raster cannot be read while sampling.
    """
    if method == "none":
        return Normalization()
    if method not in NORMALIZATION_METHODS:
        raise InvalidParameterError(
            f"unknown normalization {method!r}; choose one of {', '.join(NORMALIZATION_METHODS)}"
        )
    px = sample_pixels(source, **kw).astype(np.float64)
    if method == "meanstd":
        shift, scale = px.mean(0), px.std(0)
    elif method == "minmax":
        lo, hi = px.min(0), px.max(0)
        shift, scale = lo, hi - lo
    else:
        lo, hi = np.percentile(px, percentiles, axis=0)
        shift, scale = lo, hi - lo
    return Normalization(method=method, shift=shift.tolist(), scale=scale.tolist())
