"""The outputs of one command, as a set: checked together before any work starts, written under temporary names, and
published together — all of them or none.

Every command that writes goes through one rule (:func:`geoseg.io.write.check_output_path`): no output may be one of
the command's inputs (same path, a symbolic or hard link to it), even with ``overwrite``; an existing output is
refused without ``overwrite``; its directory must exist and be writable. An :class:`OutputSet` applies that rule to
all outputs of a command at once, before the first step, and then stages them: each file is written under a hidden
temporary name beside its final one (:func:`geoseg.io.write.temporary_path`), each folder that does not exist yet
(a report folder, the demo's folder) as a hidden temporary folder. :meth:`OutputSet.publish` renames them into place;
if any rename fails, those already done are undone (files an output replaced are restored), so a failed, cancelled
(Ctrl-C, SIGTERM) or interrupted command leaves neither new files nor half a set, and replaces nothing. A process
killed outright (SIGKILL, power loss) leaves only hidden temporaries named after their owner; the next command that
writes the same outputs removes them once their owner no longer runs
(:func:`~geoseg.io.write.remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from geoseg.errors import InputNotFoundError, InputUnreadableError, OutputError, OutputExistsError
from geoseg.hints import option
from geoseg.io.write import (
    PathsLike,
    _described,
    check_output_path,
    check_outputs_not_inputs,
    find_input_clash,
    remove_stale_temporaries,
    temporary_path,
)

#: files GDAL keeps beside a raster; they follow the raster when it is published (and go when it is replaced)
SIDECARS = (".aux.xml", ".msk", ".ovr")


@dataclass
class _Output:
    path: Path
    what: str
    folder: bool = False
    files: tuple[str, ...] = ()
    companions: tuple[str, ...] = ()
    staged: Path | None = None


@dataclass
class _Published:
    """One rename done by :meth:`OutputSet.publish`, and how to undo it."""

    final: Path
    backup: Path | None = None
    folder: bool = False
    created: list[Path] = field(default_factory=list)


class OutputSet:
    """The outputs of one command (files, and folders of files), published all together or not at all.

    Use as a context manager: the outputs are published when the block ends without an error, and every staged file
    is removed when it ends with one (including KeyboardInterrupt)::

        outs = OutputSet({"scene.tif": "input raster", "m.safetensors": "model"}, overwrite=False)
        outs.add("classes.tif", "class raster")          # checked now: before any work starts
        outs.add_folder("report", "report", files=["report.json", "report.html"])
        with outs:
            write_classes(outs.stage("classes.tif"))     # write to the staged name
            write_reports(outs.stage("report"))          # a folder: write its files inside
        # both are in place now; after an error, neither is (and nothing they would have replaced was touched)

    Args:
        inputs: every path the command reads (paths, or ``{path: description}``); no output may be one of them.
        overwrite: replace existing outputs (never inputs).

    Raises:
        OutputError, OutputExistsError: (from :meth:`add`, :meth:`add_folder`, :meth:`publish`) see
            :func:`geoseg.io.write.check_output_path`; also two outputs that are the same file.
    """

    def __init__(self, inputs: PathsLike = (), *, overwrite: bool = False) -> None:
        self.inputs = dict(_described(inputs, "input"))
        self.overwrite = overwrite
        self._outputs: dict[Path, _Output] = {}
        self._claimed: dict[Path, str] = {}  # every output file (those inside output folders too) -> description
        self._created: list[Path] = []  # folders created for staged folders, outermost first

    # ------------------------------------------------------------------ declare
    def _claim(self, path: Path, what: str) -> None:
        clash = find_input_clash({path: what}, self._claimed)
        if clash is not None:
            raise OutputError(
                f"the {what} and the {clash[3]} are the same file {path}{clash[4]}; give each its own path"
            )
        self._claimed[path] = what

    def add(self, path: str | os.PathLike[str], what: str = "output", *, companions: Sequence[str] = ()) -> Path:
        """Declare an output file; check it now (see :func:`geoseg.io.write.check_output_path`).

        ``companions`` are the suffixes of files the writer puts beside it (a Shapefile's ``.shx``, ``.dbf``, ...;
        :data:`geoseg.io.formats.COMPANION_SUFFIXES`): they are checked, published and removed with it.
        """
        p = Path(path)
        known = self._outputs.get(p.absolute())
        if known is not None and known.what == what and not known.folder:
            return p
        extra = [p.with_suffix(c) for c in companions]
        check_output_path(p, overwrite=self.overwrite, inputs=self.inputs, what=what, companions=extra)
        self._claim(p, what)
        for c in extra:
            self._claim(c, f"{what} (written with {p.name})")
        remove_stale_temporaries(_folder(p), [p.name])
        self._outputs[p.absolute()] = _Output(p, what, companions=tuple(companions))
        return p

    def add_folder(self, path: str | os.PathLike[str], what: str, *, files: list[str]) -> Path:
        """Declare an output folder and the files (relative names) the command will write into it; check each now.

        ``what`` names the output in messages ("report": "report folder ...", "report file ..."). The folder may
        exist (its other files are kept) or not (it is created, with missing parents, on publish).
        """
        p = Path(path)
        known = self._outputs.get(p.absolute())
        if known is not None and not known.folder:
            raise OutputError(
                f"{what} folder {p} is the path of the {known.what} this command writes; choose another folder for "
                f"the {what}"
            )
        if p.exists() and not p.is_dir():
            raise OutputError(f"{what} folder {p} is a file; give a folder path")
        check_outputs_not_inputs({p: f"{what} folder"}, self.inputs)
        for name in files:
            f = p / name
            check_output_path(f, overwrite=self.overwrite, inputs=self.inputs, what=f"{what} file", parents=True)
            self._claim(f, f"{what} file")
        if p.is_dir():
            remove_stale_temporaries(p, [Path(n).name for n in files])
        remove_stale_temporaries(_folder(p), [p.name])
        self._outputs[p.absolute()] = _Output(p, f"{what} folder", folder=True, files=tuple(files))
        return p

    @property
    def paths(self) -> list[Path]:
        """The declared outputs (files and folders), in declaration order."""
        return [o.path for o in self._outputs.values()]

    # ------------------------------------------------------------------ stage
    def stage(self, path: str | os.PathLike[str]) -> Path:
        """The temporary path to write the declared output ``path`` to (the same one on every call).

        For a file, a hidden name beside it (not created: write it there). For a folder, a hidden folder beside it
        (created; missing parents are created too and removed again if nothing is published).
        """
        out = self._outputs.get(Path(path).absolute())
        if out is None:
            raise OutputError(f"{path} was not declared as an output of this command (add it first)")
        if out.staged is None:
            if out.folder:
                self._created += _make_dirs(_folder(out.path))
                out.staged = temporary_path(out.path, directory=True)
                for name in out.files:
                    (out.staged / name).parent.mkdir(parents=True, exist_ok=True)
            else:
                out.staged = temporary_path(out.path)
        return out.staged

    def final(self, staged: str | os.PathLike[str]) -> Path:
        """The final path of a staged path (or of a path inside a staged folder); other paths are returned as given."""
        s = Path(staged)
        for out in self._outputs.values():
            if out.staged is None:
                continue
            if s == out.staged:
                return out.path
            if out.folder and out.staged in s.parents:
                return out.path / s.relative_to(out.staged)
        return s

    # ------------------------------------------------------------------ publish / discard
    def publish(self) -> list[Path]:
        """Rename every staged output into place, all or none; return the final paths.

        A staged output that was never written is an error; an output that appeared meanwhile is refused without
        ``overwrite``. On any failure (or interrupt) the renames already done are undone.

        Raises:
            OutputError: a staged output is missing (the step that should write it did not).
            OutputExistsError: an output appeared while the command ran and ``overwrite`` is False.
        """
        done: list[_Published] = []
        try:
            for out in self._outputs.values():
                if out.staged is None or not out.staged.exists():
                    raise OutputError(f"the {out.what} {out.path} was not written; nothing was published")
                for name in out.files if out.folder else ():
                    if not (out.staged / name).exists():
                        raise OutputError(f"{out.path / name} was not written; nothing was published")
            for out in self._outputs.values():
                if out.folder:
                    self._publish_folder(out, done)
                else:
                    self._publish_file(Path(str(out.staged)), out.path, out.what, done, out.companions)
        except BaseException:
            _undo(done)
            self.discard()
            raise
        for step in done:
            if step.backup is not None:
                _remove(step.backup)
        self.discard()
        return self.paths

    def _publish_file(
        self, staged: Path, final: Path, what: str, done: list[_Published], companions: Sequence[str] = ()
    ) -> None:
        pairs = [(Path(f"{staged}{s}"), Path(f"{final}{s}"), s) for s in ("", *SIDECARS)]
        pairs += [(staged.with_suffix(c), final.with_suffix(c), c) for c in companions]
        for src, dst, suffix in pairs:
            if suffix and not src.exists() and not dst.exists():
                continue
            step = _Published(dst)
            if dst.exists() or dst.is_symlink():
                if not self.overwrite and not suffix:
                    raise OutputExistsError(
                        f"{what} {final} appeared while this command ran; pass {option('overwrite', True)} to "
                        f"replace it"
                    )
                step.backup = _set_aside(dst)
            done.append(step)
            if src.exists():
                os.replace(src, dst)
            else:  # a sidecar of the replaced file (statistics, mask, overviews): it described the old raster
                _remove(dst)

    def _publish_folder(self, out: _Output, done: list[_Published]) -> None:
        staged = Path(str(out.staged))
        if not out.path.exists():
            step = _Published(out.path, folder=True, created=_make_dirs(out.path.parent))
            done.append(step)
            os.rename(staged, out.path)
            return
        for src in sorted(p for p in staged.rglob("*") if not p.is_dir()):
            rel = src.relative_to(staged)
            dst = out.path / rel
            created = _make_dirs(dst.parent)
            if created:
                done.append(_Published(created[0], folder=True, created=created))
            self._publish_file(src, dst, f"{out.what.removesuffix(' folder')} file", done)

    def discard(self) -> None:
        """Remove every staged output (and the folders created for them); nothing is published."""
        for out in self._outputs.values():
            if out.staged is not None:
                _remove(out.staged)
                for suffix in SIDECARS:
                    _remove(Path(f"{out.staged}{suffix}"))
                for suffix in out.companions:
                    _remove(out.staged.with_suffix(suffix))
                out.staged = None
        for d in reversed(self._created):
            with contextlib.suppress(OSError):
                d.rmdir()
        self._created = []

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.publish()
        else:
            if exc is not None:
                self.unstage_message(exc)
            self.discard()

    def unstage_message(self, exc: BaseException) -> None:
        """Name the final outputs, not their hidden staged names, in the message of ``exc`` (changed in place).

        A step that fails while writing or reading a staged output (a report scoring the staged class raster, a
        writer refusing its path) names the path it was given; the user knows only the final one.
        """
        swaps = sorted(
            ((str(p), str(o.path)) for o in self._outputs.values() if o.staged is not None
             for p in {o.staged, o.staged.absolute()}),
            key=lambda s: -len(s[0]),
        )  # fmt: skip
        if not swaps or not exc.args or not isinstance(exc.args[0], str):
            return
        text = exc.args[0]
        for staged, final in swaps:
            text = text.replace(staged, final)
        if text != exc.args[0]:
            exc.args = (text, *exc.args[1:])


def check_input_files(inputs: PathsLike) -> None:
    """Check, before any work starts, that each input path (``{path: description}`` or paths) is an existing,
    readable file (GDAL virtual paths such as ``/vsicurl/...`` and URLs are left to the reader). Used by commands
    whose later steps read inputs (ground truth, an area of interest), so they fail before the first step.

    Raises:
        InputNotFoundError: a path does not exist, or is a folder.
        InputUnreadableError: a path cannot be read (permissions).
    """
    for path, what in _described(inputs, "input"):
        if path.startswith("/vsi") or "://" in path:
            continue
        p = Path(path)
        if not p.exists():
            raise InputNotFoundError(f"{what} not found: {p}; check the path (relative to {os.getcwd()})")
        if p.is_dir() and p.suffix.lower() not in (".gdb", ".zarr"):
            raise InputNotFoundError(f"{what} {p} is a folder; give the path of a file")
        if not os.access(p, os.R_OK):
            raise InputUnreadableError(f"{what} {p} is not readable by this user; fix its permissions")


def _folder(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def _make_dirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; return those created, outermost first."""
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            pass
        except OSError as exc:
            raise OutputError(f"cannot create the folder {d}: {exc.strerror or exc}") from exc
    return list(reversed(missing))


def _set_aside(path: Path) -> Path:
    """Keep the file ``path`` under a temporary name until publishing succeeds (a hard link where possible, so that
    ``path`` itself never disappears before its replacement takes its place)."""
    backup = temporary_path(path)
    try:
        os.link(path, backup, follow_symlinks=False)
    except OSError:
        os.rename(path, backup)
    return backup


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _undo(done: list[_Published]) -> None:
    """Undo publish steps in reverse order: remove what was put in place, restore what it replaced."""
    for step in reversed(done):
        with contextlib.suppress(OSError):
            if step.backup is not None:
                if _same_file(step.backup, step.final):  # never replaced: rename() between links is a no-op
                    step.backup.unlink()
                else:
                    os.replace(step.backup, step.final)
            else:
                _remove(step.final)
            for d in reversed(step.created):
                with contextlib.suppress(OSError):
                    d.rmdir()


__all__ = ["SIDECARS", "OutputSet", "check_input_files"]
