"""Windowed raster writing: atomic outputs, rectangles assembled into whole blocks, colormaps, nodata."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from geoseg.errors import InvalidParameterError, OutputError, OutputExistsError
from geoseg.hints import option
from geoseg.io.georef import Georeference
from geoseg.io.lock import OWNER_PATTERN, owner_alive, owner_token

DEFAULT_BLOCK = 256
# files GDAL may create beside a file while writing it (statistics, masks, overviews being built)
TEMPORARY_SIDECARS = (".aux.xml", ".msk", ".ovr", ".ovr.tmp")


PathsLike = Iterable[str | os.PathLike[str] | None] | Mapping[Any, str]  # None entries (an absent option) are skipped


def _described(paths: PathsLike, default: str) -> list[tuple[str, str]]:
    """(path, description) pairs; entries that are not paths (None, "", open datasets, arrays) are skipped."""
    pairs = paths.items() if isinstance(paths, Mapping) else ((p, default) for p in paths)
    return [(os.fspath(p), str(what)) for p, what in pairs if isinstance(p, str | os.PathLike) and os.fspath(p)]


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def find_input_clash(outputs: PathsLike, inputs: PathsLike) -> tuple[Path, str, Path, str, str] | None:
    """The first output that is one of the inputs, or None.

    Two paths are the same file when they resolve to one path (symbolic links, ``..`` and relative paths followed)
    or, for files that exist, when they are one file on disk (a hard link, a bind mount, a case-insensitive
    filesystem: :func:`os.path.samefile`'s device and inode). Each of ``outputs`` and ``inputs`` is an iterable of
    paths or a mapping ``{path: description}`` (e.g. ``{"scene.tif": "input raster"}``); empty entries are skipped.

    Returns:
        ``(output, output description, input, input description, how)`` where ``how`` says why they are the same
        (``""`` for the same path, ``" (through a symbolic link)"``, ``" (a hard link to it)"``), or None.
    """
    by_real: dict[str, tuple[str, str]] = {}
    by_inode: dict[tuple[int, int], tuple[str, str]] = {}
    for path, what in _described(inputs, "input"):
        by_real.setdefault(os.path.normcase(os.path.realpath(path)), (path, what))
        ident = _identity(path)
        if ident is not None:
            by_inode.setdefault(ident, (path, what))
    if not by_real:
        return None
    for path, what in _described(outputs, "output"):
        real = os.path.normcase(os.path.realpath(path))
        hit = by_real.get(real)
        if hit is None:
            ident = _identity(path)
            hit = by_inode.get(ident) if ident is not None else None
            how = " (a hard link to it)" if hit is not None else ""
        elif os.path.normcase(os.path.abspath(path)) == os.path.normcase(os.path.abspath(hit[0])):
            how = ""
        else:
            how = " (through a symbolic link)"
        if hit is not None:
            return Path(path), what, Path(hit[0]), hit[1], how
    return None


def check_outputs_not_inputs(outputs: PathsLike, inputs: PathsLike, *, fix: str = "choose another output path") -> None:
    """Refuse, before any work starts, to write any of ``outputs`` over any of ``inputs``.

    Every file a command may create, replace or delete belongs in ``outputs`` (derived names too: mosaics, COGs,
    sidecars, reports, manifests, lock files); every file it reads belongs in ``inputs``. See
    :func:`find_input_clash` for what counts as the same file. ``overwrite`` never lifts this refusal.

    Raises:
        OutputError: naming the output, the input it would replace, and ``fix``.
    """
    clash = find_input_clash(outputs, inputs)
    if clash is not None:
        out, out_what, src, src_what, how = clash
        same = "" if Path(out) == Path(src) else f" {src}"
        raise OutputError(f"{out_what} {out} is the {src_what}{same}{how}; inputs are never overwritten: {fix}")


def check_output_path(
    dst: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: PathsLike = (),
    what: str = "output",
    parents: bool = False,
    companions: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Validate an output path before any work starts; return it as a Path.

    Refuses a path that is one of ``inputs`` (paths, or ``{path: description}``; see :func:`check_outputs_not_inputs`),
    an existing file without ``overwrite``, a directory, a missing or unwritable parent directory (with ``parents``,
    missing parents are allowed: the nearest existing one must be a writable directory). ``what`` names the output
    in messages (e.g. "class raster"). ``companions`` are files written with ``dst`` (a Shapefile's ``.dbf``, ...;
    see :func:`geoseg.io.formats.companion_files`): they are checked like ``dst``.

    Raises:
        OutputError: the path is an input, a directory, or its directory is missing or not writable.
        OutputExistsError: the path exists and ``overwrite`` is False.
    """
    path = Path(dst)
    check_outputs_not_inputs(
        {path: what, **{Path(c): f"{what} (written with {path.name})" for c in companions}}, inputs
    )
    if path.is_dir():
        raise OutputError(f"{what} {path} is a directory; give a file name, e.g. {path / 'classes.tif'}")
    for p in (path, *map(Path, companions)):
        if p.exists() and not overwrite:
            with_ = "" if p == path else f" (written with {path.name})"
            raise OutputExistsError(f"{what} {p}{with_} already exists; pass {option('overwrite', True)} to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if parents:
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    if not parent.is_dir():
        if parent.exists():
            raise OutputError(f"{parent} is a file, not a directory; choose another path for the {what} {path}")
        raise OutputError(f"output directory {parent} does not exist; create it first (mkdir -p {parent})")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {parent} is not writable; choose another output path or fix permissions")
    return path


# ------------------------------------------------------------------------------------------------ temporaries
# A file being written is named ".<final name>.<owner>-<8 random chars>.partial<suffix>" beside its final name (GDAL
# may add sidecars after it); <owner> is :func:`geoseg.io.lock.owner_token`. Names without an owner are those of
# earlier versions. A temporary can itself be the final name of a nested one (a command stages an output that a
# library call then writes atomically).
_TEMPORARY = re.compile(rf"^\.(?P<final>.+)\.(?:(?P<owner>{OWNER_PATTERN})-)?[A-Za-z0-9_]{{8}}\.partial")


def parse_temporary(name: str) -> tuple[str, list[str | None]] | None:
    """``(final name, owners)`` of a temporary file or folder name (see above), or None for any other name.

    The final name is that of the output the temporary would have become (outermost, for nested temporaries);
    ``owners`` lists the owner token of each level (None where the name carries none).
    """
    m = _TEMPORARY.match(name)
    if m is None:
        return None
    owners: list[str | None] = [m.group("owner")]
    final = m.group("final")
    while (inner := _TEMPORARY.match(final)) is not None:
        owners.append(inner.group("owner"))
        final = inner.group("final")
    return final, owners


def temporary_path(dst: str | os.PathLike[str], *, directory: bool = False) -> Path:
    """A new, unused temporary name beside ``dst`` that names this process as its owner (created, as an empty
    folder, with ``directory``; else only reserved: the name is free when this returns)."""
    path = Path(dst)
    folder = path.parent if str(path.parent) else Path(".")
    prefix = f".{path.name}.{owner_token()}-"
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=".partial", dir=folder))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".partial" + path.suffix, dir=folder)
    os.close(fd)
    os.unlink(tmp)
    return Path(tmp)


def remove_stale_temporaries(folder: str | os.PathLike[str], finals: Iterable[str] | None = None) -> list[Path]:
    """Remove the temporaries in ``folder`` (files, with GDAL's sidecars, or staged folders) that a killed process
    left behind: those whose every owner is a process of this host that no longer runs (a reused pid does not count
    as the owner). Temporaries of live processes, of other hosts, or without an owner in their name are kept.
    With ``finals``, only temporaries of outputs with those names are considered.

    Returns:
        The paths removed. Errors (a file removed meanwhile, no permission) are skipped.
    """
    wanted = set(finals) if finals is not None else None
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        parsed = parse_temporary(entry.name) if entry.name.startswith(".") else None
        if parsed is None or (wanted is not None and parsed[0] not in wanted):
            continue
        if not all(owner is not None and owner_alive(owner) is False for owner in parsed[1]):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(
    dst: str | os.PathLike[str], *, overwrite: bool = False, companions: Sequence[str] = ()
) -> Iterator[Path]:
    """Yield a temporary path beside ``dst``; rename it to ``dst`` only if the block completes without error.

    On any exception (including KeyboardInterrupt) the temporary file is removed and ``dst`` is untouched. The
    temporary names this process as its owner, and temporaries of ``dst`` that killed processes left behind are
    removed first (:func:`remove_stale_temporaries`). ``companions`` are the suffixes of files a driver writes
    beside the named one (a Shapefile's ``.shx``, ``.dbf``, ...): those written beside the temporary file are renamed
    with it, and ``dst``'s old ones that were not rewritten are removed, so the published set is complete and of one
    run. The published file gets the permissions of any new file in its folder (``0o666`` less the
    umask), also when the library that wrote it made a private file (safetensors writes 0600).

    Raises:
        OutputExistsError: ``dst`` appeared while writing and ``overwrite`` is False.
    """
    path = Path(dst)
    remove_stale_temporaries(path.parent if str(path.parent) else ".", [path.name])
    tmp_path = temporary_path(path)
    extra = [(tmp_path.with_suffix(s), path.with_suffix(s)) for s in companions]
    try:
        yield tmp_path
        if path.exists() and not overwrite:
            raise OutputExistsError(
                f"output {path} appeared while writing; pass {option('overwrite', True)} to replace it"
            )
        if tmp_path.is_file():
            os.chmod(tmp_path, _new_file_mode(tmp_path.parent))
        for tmp_part, final in extra:
            if tmp_part.exists():
                os.replace(tmp_part, final)
            else:
                with contextlib.suppress(FileNotFoundError):
                    final.unlink()
        os.replace(tmp_path, path)
    except BaseException:
        for p in [tmp_path, *(Path(str(tmp_path) + s) for s in TEMPORARY_SIDECARS), *(t for t, _ in extra)]:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        raise
    aux = Path(str(tmp_path) + ".aux.xml")
    if aux.exists():
        os.replace(aux, Path(str(path) + ".aux.xml"))


def _new_file_mode(folder: Path) -> int:
    """The permission bits a new file in ``folder`` gets (``0o666`` less the umask), found by creating one: reading
    the umask with :func:`os.umask` would change it for every thread for a moment."""
    fd, probe = tempfile.mkstemp(prefix=".mode-", dir=folder)
    os.close(fd)
    os.unlink(probe)
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        return os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)
        os.unlink(probe)


def _disk_nearly_full(path: Path, margin: int = 4 << 20) -> bool:
    try:
        return shutil.disk_usage(path.parent).free < margin
    except OSError:
        return False


#: how writers word a full disk: the OS, GDAL ("Write failed", "Cannot write feature"), SQLite ("database or disk is
#: full", a failed "ROLLBACK" after it), pyarrow ("IOError: ... No space left")
_DISK_FULL_TEXT = ("no space left", "disk is full", "disk full", "database or disk is full")


def output_error(exc: BaseException, path: str | os.PathLike[str]) -> OutputError:
    """An OutputError for a writer's failure on ``path``, worded for the user.

    Every writer (GDAL rasters, pyogrio/GDAL vectors, SQLite under GeoPackage, pyarrow) words a full disk its own
    way, often without saying so ("Write failed", "Cannot write feature", "sqlite3_exec(ROLLBACK) failed"): the
    cause is ENOSPC, one of those texts, or a filesystem left with (almost) no free space, and is then reported as
    "disk full". Anything else is "could not write PATH: <the writer's message>".
    """
    p = Path(path)
    text = str(exc)
    enospc = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if enospc or any(t in text.lower() for t in _DISK_FULL_TEXT) or _disk_nearly_full(p):
        return OutputError(
            f"disk full (no space left) while writing {p}: free space or write elsewhere (the partial file is removed)"
        )
    return OutputError(f"could not write {p}: {text}")


def geotiff_profile(
    *,
    width: int,
    height: int,
    count: int,
    dtype: str,
    crs: Any = None,
    transform: Affine | None = None,
    nodata: float | None,
    block: int = DEFAULT_BLOCK,
    compress: str = "deflate",
    georef: Georeference | None = None,
) -> dict[str, Any]:
    """A tiled, compressed GeoTIFF profile (BigTIFF when needed).

    The grid is georeferenced by ``georef`` (a CRS and geotransform, GCPs or RPCs; see
    :class:`geoseg.io.georef.Georeference`) or, without it, by ``crs`` and ``transform``.
    """
    block = max(16, block // 16 * 16)
    where = georef.creation_options() if georef is not None else {"crs": crs, "transform": transform}
    if where.get("transform") is None:
        where.pop("transform", None)
    prof: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        **where,
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


class BlockWriter:
    """Write a tiled GeoTIFF from non-overlapping rectangles that arrive in any order.

    Blocks a rectangle covers completely are written at once (one call for all of them); blocks it covers in part are
    assembled in memory and written when their last pixel arrives. Every block is therefore compressed exactly once,
    and memory holds only partly filled blocks: with tiles arriving row by row, about one block row of the width
    (256 px rows), whatever the raster size. :meth:`close` refuses to publish a raster with pixels never written.

    Raises:
        InvalidParameterError: (:meth:`write`) data of the wrong shape, outside the raster, or written twice.
        OutputError: the file cannot be created or written (disk full, ...), or (:meth:`close`) a pixel was never
            written.
    """

    def __init__(self, path: Path, profile: dict[str, Any]) -> None:
        self.path = path
        self.profile = profile
        self.height, self.width = int(profile["height"]), int(profile["width"])
        self.count = int(profile.get("count", 1))
        if profile.get("tiled"):
            self.block = (int(profile.get("blockysize", DEFAULT_BLOCK)), int(profile.get("blockxsize", DEFAULT_BLOCK)))
        else:
            self.block = (1, self.width)
        try:
            self._ds = rasterio.open(path, "w", **profile)
        except (rasterio.errors.RasterioIOError, OSError) as exc:
            raise output_error(exc, path) from exc
        # partly filled blocks: (block row, block col) -> (buffer, filled pixel count, rectangles written)
        self._partial: dict[tuple[int, int], tuple[np.ndarray, int, list[tuple[int, int, int, int]]]] = {}
        self._done = np.zeros((-(-self.height // self.block[0]), -(-self.width // self.block[1])), bool)

    @property
    def dataset(self) -> rasterio.io.DatasetWriter:
        return self._ds

    @property
    def pending_bytes(self) -> int:
        """Memory held by partly filled blocks."""
        return sum(buf.nbytes for buf, _, _ in self._partial.values())

    def _extent(self, bi: int, bj: int) -> tuple[int, int, int, int]:
        bh, bw = self.block
        return bi * bh, min((bi + 1) * bh, self.height), bj * bw, min((bj + 1) * bw, self.width)

    def write(self, row: int, col: int, data: np.ndarray) -> None:
        """Write ``data`` (bands, rows, cols) with its top-left pixel at (``row``, ``col``)."""
        if data.ndim != 3 or data.shape[0] != self.count:
            raise InvalidParameterError(f"expected ({self.count}, rows, cols) data, got shape {data.shape}")
        _, h, w = data.shape
        r1, c1 = row + h, col + w
        if row < 0 or col < 0 or r1 > self.height or c1 > self.width or not h or not w:
            raise InvalidParameterError(
                f"rectangle rows {row}:{r1}, cols {col}:{c1} is empty or outside the {self.height}x{self.width} raster"
            )
        bh, bw = self.block
        # block rows/cols this rectangle covers completely (a contiguous run; the raster edge counts as covered)
        full_r = range(-(-row // bh), r1 // bh if r1 < self.height else -(-self.height // bh))
        full_c = range(-(-col // bw), c1 // bw if c1 < self.width else -(-self.width // bw))
        if len(full_r) and len(full_c):
            y0, y1 = full_r.start * bh, min(full_r.stop * bh, self.height)
            x0, x1 = full_c.start * bw, min(full_c.stop * bw, self.width)
            clash = [k for k in self._partial if k[0] in full_r and k[1] in full_c]
            if clash or self._done[full_r.start : full_r.stop, full_c.start : full_c.stop].any():
                raise InvalidParameterError(f"rows {y0}:{y1}, cols {x0}:{x1} are written twice (rectangles overlap)")
            self._put(data[:, y0 - row : y1 - row, x0 - col : x1 - col], Window(x0, y0, x1 - x0, y1 - y0))
            self._done[full_r.start : full_r.stop, full_c.start : full_c.stop] = True
        for bi in range(row // bh, (r1 - 1) // bh + 1):
            for bj in range(col // bw, (c1 - 1) // bw + 1):
                if bi in full_r and bj in full_c:
                    continue
                by0, by1, bx0, bx1 = self._extent(bi, bj)
                y0, y1, x0, x1 = max(row, by0), min(r1, by1), max(col, bx0), min(c1, bx1)
                if self._done[bi, bj]:
                    raise InvalidParameterError(
                        f"rows {y0}:{y1}, cols {x0}:{x1} are written twice (rectangles overlap)"
                    )
                buf, filled, rects = self._partial.get((bi, bj)) or (
                    np.empty((self.count, by1 - by0, bx1 - bx0), data.dtype),
                    0,
                    [],
                )
                for ry0, ry1, rx0, rx1 in rects:
                    if y0 < ry1 and ry0 < y1 and x0 < rx1 and rx0 < x1:
                        raise InvalidParameterError(
                            f"pixels rows {max(y0, ry0)}:{min(y1, ry1)}, cols {max(x0, rx0)}:{min(x1, rx1)} are "
                            "written twice (rectangles overlap)"
                        )
                buf[:, y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0] = data[:, y0 - row : y1 - row, x0 - col : x1 - col]
                filled += (y1 - y0) * (x1 - x0)
                rects.append((y0, y1, x0, x1))
                if filled == buf.shape[1] * buf.shape[2]:
                    self._partial.pop((bi, bj), None)
                    self._put(buf, Window(bx0, by0, bx1 - bx0, by1 - by0))
                    self._done[bi, bj] = True
                else:
                    self._partial[bi, bj] = (buf, filled, rects)

    def _put(self, data: np.ndarray, window: Window) -> None:
        try:
            self._ds.write(data, window=window)
        except (rasterio.errors.RasterioIOError, OSError) as exc:
            raise output_error(exc, self.path) from exc

    def close(self) -> None:
        """Close the file; raise if any pixel was never written or a block failed to reach the disk."""
        try:
            self._ds.close()
        except (rasterio.errors.RasterioIOError, OSError) as exc:
            raise output_error(exc, self.path) from exc
        if not self._done.all():
            raise OutputError(
                f"{self.path}: {int((~self._done).sum())} of {self._done.size} blocks were never completely written "
                f"({len(self._partial)} partly); the raster is not published"
            )
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
        raise output_error(exc, path) from exc


def write_class_metadata(
    ds: rasterio.io.DatasetWriter, *, classes: Sequence[str], colors: Sequence[Sequence[int]] | None, nodata: int
) -> None:
    """Store class names (the ``geoseg_classes`` tag and the band description inside the file; category names and a
    raster attribute table in its PAM sidecar, see :mod:`geoseg.io.tags`) and a color table (uint8 rasters;
    ``nodata`` transparent) on a class raster ``ds`` open for writing."""
    from geoseg.io.tags import write_class_names, write_class_table

    write_class_names(ds, classes)
    write_class_table(ds.name, classes, colors)
    ds.set_band_description(1, "class")
    if colors and np.dtype(ds.dtypes[0]) == np.uint8:
        cmap = {i: tuple(int(v) for v in (list(c) + [255])[:4]) for i, c in enumerate(colors)}
        cmap[nodata] = (0, 0, 0, 0)
        ds.write_colormap(1, cmap)
