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
    """One scene: its raster, optional ground truth, and a unique output name."""

    src: Path
    truth: Path | None
    name: str


def _is_glob(s: str) -> bool:
    return any(ch in s for ch in GLOB_CHARS)


def _expand(item: str) -> list[Path]:
    if _is_glob(item):
        found = sorted(Path(p) for p in glob.glob(os.path.expanduser(item), recursive=True) if os.path.isfile(p))
        if not found:
            raise NoInputsError(f"no file matches {item!r} (relative to {os.getcwd()}); check the pattern and quote it")
        return found
    p = Path(os.path.expanduser(item))
    if not p.is_file():
        raise InputNotFoundError(f"input raster not found: {p}; check the path (relative to {os.getcwd()})")
    return [p]


def read_jobs_manifest(path: str | os.PathLike[str]) -> list[tuple[Path, Path | None]]:
    """Parse a manifest: one raster per line, optionally ``,truth`` (CSV; a ``path,truth`` header is allowed).

    Blank lines and lines starting with ``#`` are skipped; relative paths are relative to the manifest's folder.

    Raises:
        InputNotFoundError: the manifest does not exist.
        ManifestError: a malformed line.
        NoInputsError: it lists no raster.
    """
    mpath = Path(path)
    base = mpath.parent
    out: list[tuple[Path, Path | None]] = []
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
            if not src.is_file():
                raise InputNotFoundError(f"{mpath}, line {lineno}: raster not found: {src}")
            if truth is not None and not truth.exists():
                raise InputNotFoundError(f"{mpath}, line {lineno}: truth not found: {truth}")
            out.append((src, truth))
    if not out:
        raise NoInputsError(f"manifest {mpath} lists no rasters")
    return out


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


def resolve_jobs(jobs: JobsLike, truth: TruthLike = None) -> list[Job]:
    """Expand ``jobs`` into scenes with unique output names (stem, or stem-<hash> when stems collide).

    Raises:
        NoInputsError: nothing to do.
        InputNotFoundError: a raster, glob or manifest matches no file.
        InvalidParameterError: a job tuple that is not (raster, truth).
    """
    pairs: list[tuple[Path, Path | None]] = []
    items: Sequence = [jobs] if isinstance(jobs, str | os.PathLike) else list(jobs)
    if not items:
        raise NoInputsError("no input rasters given")
    for item in items:
        if isinstance(item, tuple):
            if len(item) != 2:
                raise InvalidParameterError(f"a job tuple must be (raster, truth), got {item!r}")
            pairs.extend((p, Path(item[1]) if item[1] else None) for p in _expand(str(item[0])))
            continue
        s = str(item)
        if not _is_glob(s) and Path(s).suffix.lower() in MANIFEST_SUFFIXES:
            if not Path(s).is_file():
                raise InputNotFoundError(f"manifest not found: {s}")
            pairs.extend(read_jobs_manifest(s))
        else:
            pairs.extend((p, None) for p in _expand(s))
    seen: dict[Path, int] = {}
    unique: list[tuple[Path, Path | None]] = []
    for src, t in pairs:
        key = src.resolve()
        if key not in seen:
            seen[key] = len(unique)
            unique.append((src, t))
    stems = [p.stem for p, _ in unique]
    jobs_out = []
    for src, t in unique:
        name = src.stem
        if stems.count(name) > 1:
            name = f"{name}-{hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:8]}"
        jobs_out.append(Job(src=src, truth=t if t is not None else _truth_for(src, truth), name=name))
    return jobs_out


__all__ = ["Job", "read_jobs_manifest", "resolve_jobs"]
