"""Batch inputs: a list of rasters, a glob, or a text/CSV manifest (``path[,truth]`` per line)."""

from __future__ import annotations

import csv
import glob
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from geoseg.distributed.errors import ManifestError, NoInputsError
from geoseg.errors import InputNotFoundError, InvalidParameterError

MANIFEST_SUFFIXES = (".txt", ".csv", ".lst", ".list")
GLOB_CHARS = "*?["

JobsLike = str | os.PathLike[str] | Sequence["str | os.PathLike[str] | tuple[str | os.PathLike[str], str | None]"]
TruthLike = str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]] | None


@dataclass(frozen=True)
class Job:
    """One scene: its raster, optional ground truth, and a unique output name.

    With ``resolve_jobs(..., scene_errors=True)`` a scene whose raster or truth is missing is returned with ``error``
    (one line: what is missing and where it was looked for) instead of stopping the whole batch. ``listed_in`` is the
    jobs manifest (text/CSV) that named the scene, if any.
    """

    src: Path
    truth: Path | None
    name: str
    error: str | None = None
    listed_in: Path | None = None


@dataclass(frozen=True)
class _Entry:
    src: Path
    truth: Path | None
    listed_in: Path | None = None
    error: str | None = None


def _is_glob(s: str) -> bool:
    return any(ch in s for ch in GLOB_CHARS)


def _expand(item: str, *, scene_errors: bool = False) -> list[_Entry]:
    if _is_glob(item):
        found = sorted(Path(p) for p in glob.glob(os.path.expanduser(item), recursive=True) if os.path.isfile(p))
        if not found:
            raise NoInputsError(f"no file matches {item!r} (relative to {os.getcwd()}); check the pattern and quote it")
        return [_Entry(p, None) for p in found]
    p = Path(os.path.expanduser(item))
    if not p.is_file():
        message = f"input raster not found: {p}; check the path (relative to {os.getcwd()})"
        if not scene_errors:
            raise InputNotFoundError(message)
        return [_Entry(p, None, error=message)]
    return [_Entry(p, None)]


def _read_manifest(path: str | os.PathLike[str], *, scene_errors: bool) -> list[_Entry]:
    mpath = Path(path)
    base = mpath.parent
    out: list[_Entry] = []
    with open(mpath, newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            cells = [c.strip() for c in row]
            if not cells or not any(cells) or cells[0].startswith("#"):
                continue
            if lineno == 1 and cells[0].lower() in ("path", "raster", "scene", "src", "image"):
                continue  # header
            if len(cells) > 2 or not cells[0]:
                raise ManifestError(
                    f"{mpath}, line {lineno}: expected 'raster' or 'raster,truth', got {','.join(row)!r}"
                )
            src = base / os.path.expanduser(cells[0])
            truth = base / os.path.expanduser(cells[1]) if len(cells) > 1 and cells[1] else None
            error = None
            if not src.is_file():
                error = f"{mpath}, line {lineno}: raster not found: {src}"
            elif truth is not None and not truth.exists():
                error = f"{mpath}, line {lineno}: truth not found: {truth}"
            if error is not None and not scene_errors:
                raise InputNotFoundError(error)
            out.append(_Entry(src, truth, mpath, error))
    if not out:
        raise NoInputsError(f"manifest {mpath} lists no rasters")
    return out


def read_jobs_manifest(path: str | os.PathLike[str]) -> list[tuple[Path, Path | None]]:
    """Parse a manifest: one raster per line, optionally ``,truth`` (CSV; a ``path,truth`` header is allowed).

    Blank lines and lines starting with ``#`` are skipped; relative paths are relative to the manifest's folder.

    Raises:
        ManifestError: a line has more than two cells or no raster (the message names file and line).
        InputNotFoundError: a raster or truth file does not exist.
        NoInputsError: the manifest lists no raster.
    """
    return [(e.src, e.truth) for e in _read_manifest(path, scene_errors=False)]


def _truth_for(src: Path, truth: TruthLike) -> Path | None:
    if truth is None:
        return None
    if isinstance(truth, Mapping):
        for key in (str(src), src.name, src.stem):
            if key in truth:
                return Path(truth[key])
        return None
    folder = Path(truth)
    if not folder.is_dir():
        raise InputNotFoundError(f"truth directory not found: {folder}")
    exact = folder / src.name
    if exact.is_file():
        return exact
    candidates = folder.glob(glob.escape(src.stem) + ".*")
    same_stem = sorted(p for p in candidates if p.is_file() and not p.name.endswith(".aux.xml"))
    if not same_stem:
        raise InputNotFoundError(f"no truth for {src.name} in {folder} (looked for {src.name} or {src.stem}.*)")
    return same_stem[0]


def resolve_jobs(jobs: JobsLike, truth: TruthLike = None, *, scene_errors: bool = False) -> list[Job]:
    """Expand ``jobs`` into scenes with unique output names (stem, or stem-<hash> when stems collide).

    Args:
        jobs: raster paths, quoted globs, text/CSV manifests (``raster[,truth]`` per line), ``(raster, truth)``
            tuples, or a list of those.
        truth: truth rasters as a folder (same file name, or same stem) or a ``{raster: truth}`` mapping; manifest
            truth columns take precedence.
        scene_errors: return a scene whose raster or truth is missing as a :class:`Job` with ``error`` set (so that
            a batch can go on with the others) instead of raising.

    Raises:
        NoInputsError: nothing given, a glob that matches nothing, or an empty manifest.
        ManifestError: a malformed manifest line.
        InputNotFoundError: a missing raster, truth or manifest (raster and truth only when not ``scene_errors``);
            a missing truth folder.
    """
    if truth is not None and not isinstance(truth, Mapping) and not Path(truth).is_dir():
        raise InputNotFoundError(f"truth directory not found: {truth}; give the folder that holds the truth rasters")
    entries: list[_Entry] = []
    items: Sequence = [jobs] if isinstance(jobs, str | os.PathLike) else list(jobs)
    if not items:
        raise NoInputsError("no input rasters given")
    for item in items:
        if isinstance(item, tuple):
            if len(item) != 2:
                raise InvalidParameterError(f"a job tuple must be (raster, truth), got {item!r}")
            t = Path(item[1]) if item[1] else None
            for e in _expand(str(item[0]), scene_errors=scene_errors):
                error = e.error
                if error is None and t is not None and not t.exists():
                    error = f"truth not found: {t}"
                    if not scene_errors:
                        raise InputNotFoundError(error)
                entries.append(_Entry(e.src, t, None, error))
            continue
        s = str(item)
        if not _is_glob(s) and Path(s).suffix.lower() in MANIFEST_SUFFIXES:
            if not Path(s).is_file():
                raise InputNotFoundError(f"manifest not found: {s}")
            entries.extend(_read_manifest(s, scene_errors=scene_errors))
        else:
            entries.extend(_expand(s, scene_errors=scene_errors))
    seen: set[Path] = set()
    unique: list[_Entry] = []
    for e in entries:
        key = e.src.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(e)
    stems = [e.src.stem for e in unique]
    jobs_out = []
    for e in unique:
        name = e.src.stem
        if stems.count(name) > 1:
            name = f"{name}-{hashlib.sha1(str(e.src.resolve()).encode()).hexdigest()[:8]}"
        t, error = e.truth, e.error
        if t is None and error is None:
            try:
                t = _truth_for(e.src, truth)
            except InputNotFoundError as exc:
                if not scene_errors:
                    raise
                error = str(exc)
        jobs_out.append(Job(src=e.src, truth=t, name=name, error=error, listed_in=e.listed_in))
    return jobs_out


__all__ = ["Job", "read_jobs_manifest", "resolve_jobs"]
