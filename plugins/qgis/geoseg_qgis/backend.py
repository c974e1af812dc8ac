"""How the plugin runs geoseg: one geoseg process per algorithm run, never inside the QGIS process.

This module imports nothing from QGIS (it is unit-testable without it). The process runs

* the Python named by ``GEOSEG_PYTHON`` (environment) or the ``geoseg/python`` setting: a python executable, or a
  virtual environment folder, whose ``python -m geoseg`` works; else
* QGIS's own Python interpreter (:func:`host_python`) when geoseg (and torch, for prediction and training) is
  importable in QGIS's Python, with QGIS's ``sys.path``.

geoseg never runs inside the QGIS process itself: pip's rasterio, pyogrio, shapely and pyproj bundle their own GDAL,
GEOS and PROJ, which clash with the copies QGIS links (a crash of QGIS, and the user's unsaved work with it), and
building them against QGIS's libraries is not an option most QGIS installations have (README, "QGIS"). A process of
its own also contains any crash of geoseg or torch, and can always be stopped.

:class:`SubprocessBackend` offers one call per algorithm (:meth:`~SubprocessBackend.segment`,
:meth:`~SubprocessBackend.vectorize`, :meth:`~SubprocessBackend.evaluate`, :meth:`~SubprocessBackend.train`),
each returning what geoseg's CLI prints with ``--json``; every step of a call runs in the one process
(:mod:`geoseg_qgis.runner`), so torch is imported once per run.

Every call takes one ``progress(done, total, message) -> bool`` per step; returning True cancels: the process group
gets SIGTERM (then SIGKILL) and the outputs of the call are removed (:func:`remove_outputs`): a cancelled run leaves
no file that looks finished.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Progress = Callable[[int, int, str], bool]
ENV_PYTHON = "GEOSEG_PYTHON"
RUNNER = Path(__file__).with_name("runner.py")


class BackendError(Exception):
    """geoseg failed; the message is one readable line. ``kind`` is geoseg's error class name (or "")."""

    def __init__(self, message: str, kind: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.detail = detail  # a traceback for the log, when geoseg failed in an unexpected way


class BackendCancelled(BackendError):
    """The user cancelled; no output was left."""


#: the ``done`` a progress callback gets with one of geoseg's warnings as its message (a ``Warning: ...`` line)
WARNING = -2


def _no_progress(done: int, total: int, message: str) -> bool:
    return False


def host_python() -> str:
    """The python executable of the interpreter running this code.

    Inside QGIS, Python is embedded and ``sys.executable`` names whatever ``python3`` is first on the PATH (e.g. a
    pyenv shim) or the QGIS program itself; the interpreter's own executable lives in ``sys.exec_prefix``.
    """
    prefix = Path(sys.exec_prefix)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for cand in (prefix / "bin" / f"python{version}", prefix / "bin" / "python3", prefix / "python.exe"):
        if cand.is_file():
            return str(cand)
    exe = Path(sys.executable or "")
    same = exe.name.startswith("python") and Path(os.path.realpath(exe)).is_relative_to(os.path.realpath(prefix))
    return str(exe) if same else f"the Python {version} of {prefix}"


def remove_outputs(paths: Sequence[str | None]) -> None:
    """Remove ``paths`` and what geoseg writes beside them (GDAL's ``.aux.xml``, a QGIS ``.qml``, a training state,
    temporary ``.<name>.*.partial*`` files), so that a cancelled or failed run leaves nothing that looks finished."""
    for path in filter(None, paths):
        p = Path(path)
        for q in (p, Path(f"{p}.aux.xml"), Path(f"{p}.train-state.pt"), p.with_suffix(".qml")):
            with contextlib.suppress(OSError):
                if q.is_file():
                    q.unlink()
        with contextlib.suppress(OSError):
            for partial in p.parent.glob(f".{p.name}.*partial*"):
                partial.unlink()


# ---------------------------------------------------------------------------------------------------- selection


def resolve_python(value: str | None) -> str | None:
    """A python executable from a path to one or to a virtual environment folder (None when unset)."""
    if not value:
        return None
    p = Path(value).expanduser()
    if p.is_dir():
        for cand in (p / "bin" / "python", p / "bin" / "python3", p / "Scripts" / "python.exe"):
            if cand.exists():
                return str(cand)
        raise BackendError(f"geoseg Python environment {p} has no bin/python; point it at a venv or a python file")
    if not p.exists():
        raise BackendError(f"geoseg Python {p} does not exist; set {ENV_PYTHON} or the plugin setting to a python")
    return str(p)


def importable_here(needs_torch: bool) -> bool:
    """True when geoseg (and torch, if needed) can be imported by this interpreter (nothing is imported)."""
    return importlib.util.find_spec("geoseg") is not None and (
        not needs_torch or importlib.util.find_spec("torch") is not None
    )


def select_backend(*, needs_torch: bool, python: str | None = None) -> SubprocessBackend:
    """The geoseg process to run: ``GEOSEG_PYTHON`` or ``python`` (the plugin's setting), else QGIS's own Python
    when geoseg is importable there (:func:`importable_here`).

    Raises:
        BackendError: the configured python does not exist, or none is configured and geoseg is not importable in
            QGIS's Python.
    """
    py = resolve_python(os.environ.get(ENV_PYTHON) or python)
    if py is not None:
        return SubprocessBackend(py)
    host = host_python()
    if importable_here(needs_torch) and Path(host).is_file():
        backend = SubprocessBackend(host, path=[p for p in sys.path if p])
        backend.reason = "no geoseg environment is configured; geoseg is importable in QGIS's Python"
        return backend
    what = "geoseg and torch are" if needs_torch else "geoseg is"
    raise BackendError(
        f"{what} not importable in QGIS's Python ({host}) and no geoseg environment is configured: set the "
        f"environment variable {ENV_PYTHON} (or Settings > Options > Processing > Providers > geoseg > 'Python of the "
        f"geoseg environment') to a python executable or venv where `python -m geoseg` works"
    )


# ---------------------------------------------------------------------------------------------------- commands


def _opt(args: list[str], flag: str, value: object) -> None:
    if value is not None and value != "":
        args += [flag, str(value)]


def segment_commands(
    raster: str,
    out: str,
    *,
    checkpoint: str,
    bands: str | None,
    tile: int | None,
    overlap: int | None,
    batch_size: int | None,
    device: str,
    stitch: str,
    probabilities: str | None,
    polygons: str | None,
    min_area: float,
    simplify: float,
) -> list[list[str]]:
    """The geoseg commands of Segment raster: predict, then vectorize when ``polygons`` is given."""
    predict = ["predict", raster, out, "-m", checkpoint, "--device", device, "--stitch", stitch, "--overwrite"]
    for flag, value in (
        ("--bands", bands),
        ("--tile", tile),
        ("--overlap", overlap),
        ("--batch-size", batch_size),
        ("--probabilities", probabilities),
    ):
        _opt(predict, flag, value)
    commands = [predict]
    if polygons:
        commands.append(vectorize_command(out, polygons, min_area=min_area, simplify=simplify))
    return commands


def vectorize_command(
    raster: str,
    out: str,
    *,
    classes: Sequence[str] | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    connectivity: int = 4,
) -> list[str]:
    args = ["vectorize", raster, out, "--min-area", str(min_area), "--simplify", str(simplify)]
    args += ["--connectivity", str(connectivity), "--overwrite"]
    _opt(args, "--classes", ",".join(classes) if classes else None)
    return args


def evaluate_command(
    prediction: str,
    truth: str,
    report_dir: str,
    *,
    classes: Sequence[str] | None,
    ignore_index: int | None,
    class_field: str | None,
    id_field: str | None,
    background: int | None,
) -> list[str]:
    args = ["evaluate", prediction, truth, "--report-dir", report_dir, "--overwrite"]
    for flag, value in (
        ("--classes", ",".join(classes) if classes else None),
        ("--ignore-index", ignore_index),
        ("--class-field", class_field),
        ("--id-field", id_field),
        ("--background", background),
    ):
        _opt(args, flag, value)
    return args


def train_command(image: str, labels: str, out: str, **opts: Any) -> list[str]:
    kwargs = json.dumps(opts.pop("arch_kwargs", None) or {})
    args = ["train", image, labels, out, "--arch-kwargs", kwargs, "--overwrite"]
    classes = opts.pop("classes", None)
    _opt(args, "--classes", ",".join(classes) if classes else None)
    for key, value in opts.items():
        _opt(args, "--" + key.replace("_", "-"), value)
    return args


# ---------------------------------------------------------------------------------------------------- subprocess


class SubprocessBackend:
    """Runs geoseg commands in one process of another environment (:mod:`geoseg_qgis.runner`), reading JSON-lines
    progress from its stderr and the commands' ``--json`` results from its stdout."""

    name = "subprocess"
    poll_s = 0.1
    grace_s = 10.0  # after SIGTERM, before SIGKILL

    def __init__(self, python: str, *, path: Sequence[str] = ()) -> None:
        self.python = python
        self.path = list(path)  # the child's sys.path (QGIS's, when geoseg runs in QGIS's own Python)
        self.reason = ""  # why this python was chosen, when it was not configured
        self.started = 0  # processes started (one per call)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # QGIS's own Python/GDAL settings must not leak into another interpreter
        for key in ("PYTHONPATH", "PYTHONHOME", "GDAL_DRIVER_PATH", "PROJ_LIB", "PROJ_DATA", "GDAL_DATA"):
            env.pop(key, None)
        if self.path:
            env["PYTHONPATH"] = os.pathsep.join(self.path)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("PYTHONIOENCODING", "utf-8")
        return env

    def run(
        self,
        commands: Sequence[Sequence[str]],
        progress: Sequence[Progress] = (),
        *,
        outputs: Sequence[str | None] = (),
        script: Sequence[str] | None = None,
    ) -> list[Any]:
        """Run geoseg ``commands`` (each with ``--json`` added) in one process; returns their JSON results.

        ``progress[i]`` follows command ``i``; it also gets each warning of its command (a ``{"warning": ...}`` JSON
        line, or a plain ``Warning: ...`` one) as ``(WARNING, 0, message)``. Errors (``{"error": ...}`` or
        ``Error: ...``) become a BackendError. Cancel stops the process
        group and removes ``outputs``. ``script`` replaces the runner (tests).
        """
        full = [[*c, "--json"] + (["--progress", "json"] if c[0] != "info" else []) for c in commands]
        owned = [str(o) for o in outputs if o]
        argv = list(script) if script else [str(RUNNER), str(os.getpid()), json.dumps(full), json.dumps(owned)]
        callbacks = list(progress) or [_no_progress]
        try:
            proc = subprocess.Popen(
                [self.python, *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=self._env(),
                text=True,
                encoding="utf-8",
                errors="replace",
                start_new_session=os.name == "posix",  # its own process group: a stop reaches all it started
            )
        except OSError as exc:
            raise BackendError(f"cannot start the geoseg environment {self.python}: {exc}") from exc
        self.started += 1
        errors: list[str] = []
        tail: deque[str] = deque(maxlen=30)
        out_chunks: list[str] = []
        updates: deque[tuple[int, int, int, str]] = deque()
        step = [0]

        def read_err() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                line = line.rstrip("\n")
                if line.startswith("{"):
                    try:
                        msg = json.loads(line)
                        if "command" in msg:
                            step[0] = int(msg["command"])
                        elif "error" in msg:  # --progress json writes errors, warnings and notes as JSON too
                            errors.append(str(msg["error"]))
                        elif "warning" in msg:
                            tail.append(f"Warning: {msg['warning']}")
                            updates.append((step[0], WARNING, 0, str(msg["warning"])))
                        elif "done" not in msg and "message" in msg:
                            tail.append(str(msg["message"]))
                        else:
                            updates.append((step[0], int(msg["done"]), int(msg["total"]), str(msg.get("message", ""))))
                        continue
                    except (ValueError, TypeError, KeyError):
                        pass
                if line.startswith("Error:"):
                    errors.append(line[len("Error:") :].strip())
                elif line.strip():
                    tail.append(line)
                    if line.startswith("Warning:"):
                        updates.append((step[0], WARNING, 0, line[len("Warning:") :].strip()))

        def read_out() -> None:
            assert proc.stdout is not None
            out_chunks.append(proc.stdout.read())

        threads = [threading.Thread(target=read_err, daemon=True), threading.Thread(target=read_out, daemon=True)]
        for t in threads:
            t.start()

        def callback(i: int) -> Progress:
            return callbacks[min(i, len(callbacks) - 1)]

        cancelled = False
        while True:
            while updates:
                i, done, total, message = updates.popleft()
                if callback(i)(done, total, message):
                    cancelled = True
            if not cancelled and callback(step[0])(-1, -1, ""):  # poll for cancel between updates
                cancelled = True
            if cancelled:
                self._stop(proc)
                break
            if proc.poll() is not None:
                break
            time.sleep(self.poll_s)
        for t in threads:
            t.join(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        while updates and not cancelled:
            i, done, total, message = updates.popleft()
            callback(i)(done, total, message)
        if cancelled:
            remove_outputs(outputs)
            raise BackendCancelled("cancelled; the geoseg process was stopped and no output was left", "CancelledError")
        results = self._results("".join(out_chunks))
        if proc.returncode != 0:
            remove_outputs(outputs)
            last = results[-1] if results and isinstance(results[-1], dict) else {}
            if last.get("error"):
                raise BackendError(" ".join(str(last["error"]).split()), str(last.get("type", "")))
            if errors:
                raise BackendError(" ".join(" ".join(errors).split()))
            detail = "\n".join(tail) or "(no output)"
            first = next((line for line in reversed(tail) if not line.startswith(" ")), "(no output)")
            raise BackendError(
                f"geoseg failed with exit status {proc.returncode}: {first}; the log holds the details", "", detail
            )
        return results

    @staticmethod
    def _results(stdout: str) -> list[Any]:
        for line in reversed(stdout.splitlines()):
            if line.startswith("["):
                with contextlib.suppress(ValueError):
                    return list(json.loads(line))
        return []

    def _stop(self, proc: subprocess.Popen[str]) -> None:
        """SIGTERM to the process group (geoseg removes its temporary outputs), then SIGKILL after a grace time."""
        if proc.poll() is not None:
            return
        group = os.name == "posix"
        with contextlib.suppress(OSError):
            if group:
                os.killpg(proc.pid, signal.SIGTERM)
            else:  # pragma: no cover - Windows
                proc.terminate()
        try:
            proc.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                if group:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:  # pragma: no cover
                    proc.kill()
            proc.wait()
        if group:  # anything the process left running in its group
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)

    def segment(
        self,
        raster: str,
        out: str,
        *,
        checkpoint: str,
        bands: str | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        batch_size: int | None = None,
        device: str = "auto",
        stitch: str = "center",
        probabilities: str | None = None,
        polygons: str | None = None,
        min_area: float = 0.0,
        simplify: float = 0.0,
        progress: Sequence[Progress] = (_no_progress, _no_progress),
    ) -> dict[str, Any]:
        commands = segment_commands(
            raster,
            out,
            checkpoint=checkpoint,
            bands=bands,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            device=device,
            stitch=stitch,
            probabilities=probabilities,
            polygons=polygons,
            min_area=min_area,
            simplify=simplify,
        )
        results = self.run(commands, progress, outputs=(out, probabilities, polygons))
        return {"predict": results[0], "vector": results[1] if polygons else None}

    def vectorize(
        self,
        class_raster: str,
        out: str,
        *,
        classes: Sequence[str] | None = None,
        min_area: float = 0.0,
        simplify: float = 0.0,
        connectivity: int = 4,
        progress: Progress = _no_progress,
    ) -> dict[str, Any]:
        command = vectorize_command(
            class_raster, out, classes=classes, min_area=min_area, simplify=simplify, connectivity=connectivity
        )
        vector, info = self.run([command, ["info", class_raster]], [progress], outputs=(out,))
        return {"vector": vector, "legend": info["legend"]}

    def evaluate(
        self,
        prediction: str,
        truth: str,
        report_dir: str,
        *,
        classes: Sequence[str] | None = None,
        ignore_index: int | None = None,
        class_field: str | None = None,
        id_field: str | None = None,
        background: int | None = None,
        progress: Progress = _no_progress,
    ) -> dict[str, Any]:
        command = evaluate_command(
            prediction,
            truth,
            report_dir,
            classes=classes,
            ignore_index=ignore_index,
            class_field=class_field,
            id_field=id_field,
            background=background,
        )
        return dict(self.run([command], [progress])[0])

    def train(
        self, image: str, labels: str, out: str, *, progress: Progress = _no_progress, **opts: Any
    ) -> dict[str, Any]:
        return dict(self.run([train_command(image, labels, out, **opts)], [progress], outputs=(out,))[0])
