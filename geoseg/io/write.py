"""Windowed raster writing: atomic outputs, block-aligned row bands, colormaps, nodata."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from geoseg.errors import InvalidParameterError, OutputError, OutputExistsError

DEFAULT_BLOCK = 256


def check_output_path(
    dst: str | os.PathLike[str], *, overwrite: bool = False, inputs: Sequence[str | os.PathLike[str]] = ()
) -> Path:
    """Validate an output path before any work starts; return it as a Path.

    Refuses an existing file without ``overwrite``, a path equal to an input, a missing or unwritable directory.
    """
    path = Path(dst)
    for src in inputs:
        if src and os.path.exists(src) and path.exists() and os.path.samefile(src, path):
            raise OutputError(
                f"output {path} is the input raster; choose another output path (inputs are never overwritten)"
            )
        if src and Path(src).resolve() == path.resolve():
            raise OutputError(
                f"output {path} is the input raster; choose another output path (inputs are never overwritten)"
            )
    if path.is_dir():
        raise OutputError(f"output {path} is a directory; give a file name, e.g. {path / 'classes.tif'}")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output {path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output directory {parent} does not exist; create it first (mkdir -p {parent})")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {parent} is not writable; choose another output path or fix permissions")
    return path


@contextlib.contextmanager
def atomic_path(dst: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dst``; rename it to ``dst`` only if the block completes without error.

    On any exception (including KeyboardInterrupt) the temporary file is removed and ``dst`` is untouched.
    """
    path = Path(dst)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial" + path.suffix, dir=path.parent or ".")
    os.close(fd)
    os.unlink(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if path.exists() and not overwrite:
            raise OutputExistsError(f"output {path} appeared while writing; pass overwrite=True to replace it")
        os.replace(tmp_path, path)
    except BaseException:
        for p in (tmp_path, Path(str(tmp_path) + ".aux.xml"), Path(str(tmp_path) + ".msk")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        raise
    aux = Path(str(tmp_path) + ".aux.xml")
    if aux.exists():
        os.replace(aux, Path(str(path) + ".aux.xml"))


def _disk_nearly_full(path: Path, margin: int = 4 << 20) -> bool:
    try:
        return shutil.disk_usage(path.parent).free < margin
    except OSError:
        return False


def _oserror_to_output(exc: BaseException, path: Path) -> OutputError:
    """An OutputError naming the cause; GDAL reports ENOSPC only as "Write failed", so check free space too."""
    text = str(exc)
    enospc = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    if enospc or "No space left" in text or _disk_nearly_full(path):
        return OutputError(
            f"disk full while writing {path.parent}: free space or write elsewhere (the partial file is removed)"
        )
    return OutputError(f"could not write {path}: {text}")


def geotiff_profile(
    *,
    width: int,
    height: int,
    count: int,
    dtype: str,
    crs: Any,
    transform: Affine,
    nodata: float | None,
    block: int = DEFAULT_BLOCK,
    compress: str = "deflate",
) -> dict[str, Any]:
    """A tiled, compressed GeoTIFF profile (BigTIFF when needed)."""
    block = max(16, block // 16 * 16)
    prof: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": compress,
        "BIGTIFF": "IF_SAFER",
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
    }
    if compress in ("deflate", "lzw", "zstd") and np.dtype(dtype).kind == "f":
        prof["predictor"] = 3  # floating-point predictor: probabilities compress far better
    return prof


class RowBandWriter:
    """Write a raster top to bottom in full-width row bands, buffering to whole block rows.

    Rows arrive in order via :meth:`write`; they are written only in multiples of the block height, so no block is
    compressed twice. :meth:`close` flushes the rest. Memory: one block row of the full width.
    """

    def __init__(self, path: Path, profile: dict[str, Any]) -> None:
        self.path = path
        self.profile = profile
        self.height = profile["height"]
        self.block_h = profile.get("blockysize", DEFAULT_BLOCK) if profile.get("tiled") else 1
        try:
            self._ds = rasterio.open(path, "w", **profile)
        except (rasterio.errors.RasterioIOError, OSError) as exc:
            raise _oserror_to_output(exc, path) from exc
        self._next = 0
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    @property
    def dataset(self) -> rasterio.io.DatasetWriter:
        return self._ds

    def write(self, row_start: int, data: np.ndarray) -> None:
        """Queue rows ``[row_start, row_start + data.shape[-2])``; ``data`` is (bands, rows, width)."""
        if row_start != self._next + self._pending_rows:
            raise InvalidParameterError(
                f"rows must arrive in order: expected row {self._next + self._pending_rows}, got {row_start}"
            )
        self._pending.append(data)
        self._pending_rows += data.shape[-2]
        full = (self._pending_rows // self.block_h) * self.block_h
        if self._next + self._pending_rows >= self.height:
            full = self._pending_rows
        if full:
            self._flush(full)

    def _flush(self, nrows: int) -> None:
        buf = np.concatenate(self._pending, axis=-2) if len(self._pending) > 1 else self._pending[0]
        out, rest = buf[..., :nrows, :], buf[..., nrows:, :]
        try:
            self._ds.write(out, window=Window(0, self._next, out.shape[-1], nrows))
        except (rasterio.errors.RasterioIOError, OSError) as exc:
            raise _oserror_to_output(exc, self.path) from exc
        self._next += nrows
        self._pending = [rest] if rest.shape[-2] else []
        self._pending_rows = rest.shape[-2]

    def close(self) -> None:
        """Flush remaining rows and close the file (raises if rows are missing)."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        try:
            self._ds.close()
        except (rasterio.errors.RasterioIOError, OSError) as exc:
            raise _oserror_to_output(exc, self.path) from exc
        if self._next != self.height:
            raise OutputError(f"{self.path}: only {self._next} of {self.height} rows were written")
        verify_complete(self.path)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._ds.close()


def verify_complete(path: Path) -> None:
    """Check that every block of a just-written GeoTIFF reached the disk.

    GDAL flushes blocks lazily and only *logs* write failures (a full disk, a vanished share), so a file can close
    "successfully" with blocks missing. Every block of a non-sparse GeoTIFF has a non-zero byte count; a missing one
    (or an unreadable header) means the write failed.
    """
    size = os.path.getsize(path)
    try:
        with rasterio.open(path) as ds:
            rows = -(-ds.height // ds.block_shapes[0][0])
            cols = -(-ds.width // ds.block_shapes[0][1])
            for b in range(1, ds.count + 1):
                for i in range(rows):
                    for j in range(cols):
                        offset = ds.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=b)
                        nbytes = ds.block_size(b, i, j)
                        if not nbytes or offset is None or int(offset) + nbytes > size:
                            raise OSError(f"block ({i}, {j}) of band {b} never reached the disk")
    except (rasterio.errors.RasterioIOError, rasterio.errors.RasterioError, OSError) as exc:
        raise _oserror_to_output(exc, path) from exc


def write_class_metadata(
    ds: rasterio.io.DatasetWriter, *, classes: Sequence[str], colors: Sequence[Sequence[int]] | None, nodata: int
) -> None:
    """Store class names (tags + band description) and a color table on a class raster."""
    import json

    ds.update_tags(geoseg_classes=json.dumps(list(classes)))
    ds.set_band_description(1, "class")
    if colors and np.dtype(ds.dtypes[0]) == np.uint8:
        cmap = {i: tuple(int(v) for v in (list(c) + [255])[:4]) for i, c in enumerate(colors)}
        cmap[nodata] = (0, 0, 0, 0)
        ds.write_colormap(1, cmap)
