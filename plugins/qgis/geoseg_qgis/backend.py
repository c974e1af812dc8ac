"""How the plugin runs geoseg: in QGIS's own Python, or as the geoseg CLI of another Python environment.

This module imports nothing from QGIS (it is unit-testable without it). Selection:

* ``GEOSEG_QGIS_BACKEND`` (environment) or the ``geoseg/backend`` setting: ``inprocess``, ``subprocess`` or ``auto``
  (default). ``auto`` runs in-process when ``import geoseg`` (and, for prediction/training, ``import torch``) works
  in QGIS's Python, otherwise as a subprocess.
* ``GEOSEG_PYTHON`` (environment) or the ``geoseg/python`` setting: a python executable, or a virtual environment
  folder, whose ``python -m geoseg`` works.

Every long call takes ``progress(done, total, message) -> bool``; returning True cancels: in-process geoseg raises
its CancelledError, a subprocess gets SIGINT (then SIGKILL), and either way no output is left behind.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import re
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
BACKENDS = ("auto", "inprocess", "subprocess")
ENV_BACKEND = "GEOSEG_QGIS_BACKEND"
ENV_PYTHON = "GEOSEG_PYTHON"


class BackendError(Exception):
    """geoseg failed; the message is readable as is (no traceback)."""


class BackendCancelled(BackendError):
    """The user cancelled; no output was written."""


def _no_progress(done: int, total: int, message: str) -> bool:
    return False


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


def inprocess_available(needs_torch: bool) -> bool:
    """True when geoseg (and torch, if needed) import in this interpreter."""
    try:
        importlib.import_module("geoseg")
    except Exception:
        return False
    return not needs_torch or importlib.util.find_spec("torch") is not None


def bundled_gdal() -> list[str]:
    """The GDAL libraries that geoseg's rasterio/pyogrio wheels bundle (empty when they use the system's)."""
    found = []
    for pkg in ("rasterio", "pyogrio"):
        spec = importlib.util.find_spec(pkg)
        if spec is not None and spec.origin:
            libs = Path(spec.origin).parent.parent / f"{pkg}.libs"
            found += [f"{pkg} ({p.name})" for p in libs.glob("libgdal*")] if libs.is_dir() else []
    return found


def gdal_conflict() -> str | None:
    """Why in-process geoseg would clash with QGIS, or None.

    The QGIS application and qgis_process link GDAL themselves, so GDAL's symbols are global in the process; a
    rasterio/pyogrio wheel bundling its own GDAL then runs with QGIS's GDAL functions and can crash. A Python that
    imports qgis (PyQGIS scripts, tests) keeps them apart, and rasterio built against the system GDAL (Debian's
    python3-rasterio) is fine everywhere.
    """
    import ctypes

    bundled = bundled_gdal()
    try:
        global_gdal = hasattr(ctypes.CDLL(None), "GDALOpenEx")
    except OSError:  # pragma: no cover - no dlopen(NULL) (Windows)
        global_gdal = False
    if bundled and global_gdal:
        return f"{', '.join(bundled)} bundle their own GDAL, which clashes with the GDAL this QGIS process uses"
    return None


def select_backend(
    *, needs_torch: bool, mode: str | None = None, python: str | None = None
) -> InProcessBackend | SubprocessBackend:
    """The backend to use. ``mode``/``python`` default to the environment variables (the plugin passes settings).

    ``auto``: in-process when geoseg (and torch when needed) import here and cannot clash with QGIS's GDAL
    (:func:`gdal_conflict`); otherwise the configured environment. ``inprocess`` refuses a clash with a readable
    error instead of risking a crash of QGIS.
    """
    mode = (os.environ.get(ENV_BACKEND) or mode or "auto").strip().lower()
    if mode not in BACKENDS:
        raise BackendError(f"{ENV_BACKEND}={mode!r} is not valid; use one of {', '.join(BACKENDS)}")
    py = resolve_python(os.environ.get(ENV_PYTHON) or python)
    reason = ""
    if mode == "inprocess" and not inprocess_available(needs_torch):
        what = "geoseg and torch" if needs_torch else "geoseg"
        raise BackendError(
            f"the in-process backend needs {what} importable in QGIS's Python ({sys.executable}); install them "
            f"there, or set {ENV_BACKEND}=subprocess and {ENV_PYTHON} to a Python environment with geoseg"
        )
    if mode == "inprocess" or (mode == "auto" and inprocess_available(needs_torch)):
        conflict = gdal_conflict()
        if conflict is None:
            return InProcessBackend()
        if mode == "inprocess" or py is None:
            raise BackendError(
                f"geoseg cannot run inside this QGIS process: {conflict}. Set {ENV_PYTHON} (or the plugin's "
                f"'Python of the geoseg environment' option) to a Python environment with geoseg to run it as a "
                f"subprocess, or install rasterio built against QGIS's GDAL (e.g. Debian's python3-rasterio)"
            )
        reason = f"{conflict}; running the configured geoseg environment instead"
    elif mode == "auto":
        reason = "geoseg" + (" and torch are" if needs_torch else " is") + " not importable in QGIS's Python"
    if py is None:
        raise BackendError(
            f"geoseg is not importable in QGIS's Python ({sys.executable}) and no geoseg environment is configured: "
            f"set the environment variable {ENV_PYTHON} (or Settings > Options > Processing > Providers > geoseg > "
            f"'Python of the geoseg environment') to a python executable or venv where `python -m geoseg` works"
        )
    backend = SubprocessBackend(py)
    backend.reason = reason
    return backend


# ---------------------------------------------------------------------------------------------------- in-process


class InProcessBackend:
    """Calls geoseg's functions in this interpreter."""

    name = "inprocess"

    @contextlib.contextmanager
    def _errors(self) -> Any:
        from geoseg.errors import CancelledError, GeoSegError

        try:
            yield
        except CancelledError as exc:
            raise BackendCancelled(f"cancelled; no output was written ({exc})") from exc
        except GeoSegError as exc:
            raise BackendError(str(exc)) from exc

    def model_info(self, checkpoint: str) -> dict[str, Any]:
        from dataclasses import asdict

        from geoseg.models import read_config

        with self._errors():
            return asdict(read_config(checkpoint))

    def class_legend(self, raster: str) -> dict[str, Any]:
        """Class names, colors and nodata of a class raster (geoseg.io.tags.class_legend)."""
        from geoseg.io.read import open_dataset
        from geoseg.io.tags import class_legend

        with self._errors():
            ds = open_dataset(raster)
            try:
                return class_legend(ds)
            finally:
                ds.close()

    def predict(
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
        progress: Progress = _no_progress,
    ) -> dict[str, Any]:
        from geoseg.inference.predict import predict_raster

        with self._errors():
            res = predict_raster(
                raster,
                out,
                model=checkpoint,
                bands=bands or None,
                tile=tile,
                overlap=overlap,
                batch_size=batch_size,
                device=device,
                stitch=stitch,
                probabilities=probabilities,
                overwrite=True,
                progress=progress,
            )
        return {
            "output": str(res.output),
            "probabilities": str(res.probabilities) if res.probabilities else None,
            "tiles": res.tiles,
            "device": res.device,
            "class_counts": res.class_counts,
        }

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
        from geoseg.vectorization import vectorize

        with self._errors():
            res = vectorize(
                class_raster,
                out,
                classes=classes,
                min_area=min_area,
                simplify=simplify,
                connectivity=connectivity,
                overwrite=True,
                progress=progress,
            )
        return {"output": str(res.path), "features": res.features, "per_class": dict(res.per_class)}

    def evaluate(
        self,
        prediction: str,
        truth: str,
        report_dir: str,
        *,
        classes: Sequence[str] | None = None,
        ignore_index: int | None = None,
        class_field: str | None = None,
        background: int | None = None,
        progress: Progress = _no_progress,
    ) -> dict[str, Any]:
        from geoseg.evaluation import evaluate
        from geoseg.report import write_report

        with self._errors():
            rep = evaluate(
                prediction,
                truth,
                classes=classes,
                ignore_index=ignore_index,
                truth_class_field=class_field,
                background=background,
                progress=progress,
            )
            write_report(rep, report_dir)
        return json.loads(json.dumps(rep.to_dict()))

    def train(
        self,
        image: str,
        labels: str,
        out: str,
        *,
        arch: str,
        arch_kwargs: dict[str, Any] | None = None,
        classes: Sequence[str] | None = None,
        epochs: int = 20,
        chip: int = 128,
        batch_size: int = 8,
        chips_per_epoch: int = 256,
        device: str = "auto",
        max_seconds: float | None = None,
        class_field: str | None = None,
        progress: Progress = _no_progress,
    ) -> dict[str, Any]:
        from geoseg.train import train_model

        with self._errors():
            res = train_model(
                image,
                labels,
                out,
                arch=arch,
                arch_kwargs=arch_kwargs or {},
                classes=list(classes) if classes else None,
                class_field=class_field,
                epochs=epochs,
                chip=chip,
                batch_size=batch_size,
                chips_per_epoch=chips_per_epoch,
                device=device,
                max_seconds=max_seconds,
                overwrite=True,
                progress=progress,
            )
        return {"output": str(res.checkpoint), "best_miou": float(res.best_miou), "best_epoch": res.best_epoch}


# ---------------------------------------------------------------------------------------------------- subprocess


class SubprocessBackend:
    """Runs ``python -m geoseg ...`` of another environment, reading JSON-lines progress from its stderr."""

    name = "subprocess"
    poll_s = 0.1

    def __init__(self, python: str) -> None:
        self.python = python
        self.reason = ""  # why auto chose it

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # QGIS's own Python/GDAL settings must not leak into another interpreter
        for key in ("PYTHONPATH", "PYTHONHOME", "GDAL_DRIVER_PATH", "PROJ_LIB", "PROJ_DATA", "GDAL_DATA"):
            env.pop(key, None)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("PYTHONIOENCODING", "utf-8")
        return env

    def run(
        self,
        args: Sequence[str],
        progress: Progress = _no_progress,
        *,
        module: bool = True,
        outputs: Sequence[str | None] = (),
    ) -> str:
        """Run geoseg with ``args``; returns stdout. ``Error: ...`` becomes BackendError.

        Cancel stops the process; ``outputs`` it may already have completed are then removed.
        """
        cmd = [self.python, "-m", "geoseg", *args] if module else [self.python, *args]
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=self._env(),
                text=True,
                encoding="utf-8",
                errors="replace",
            )
        except OSError as exc:
            raise BackendError(f"cannot start the geoseg environment {self.python}: {exc}") from exc
        errors: list[str] = []
        tail: deque[str] = deque(maxlen=30)
        out_chunks: list[str] = []
        updates: deque[tuple[int, int, str]] = deque()

        def read_err() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                line = line.rstrip("\n")
                if line.startswith("{"):
                    try:
                        msg = json.loads(line)
                        updates.append((int(msg.get("done", 0)), int(msg.get("total", 0)), str(msg.get("message", ""))))
                        continue
                    except (ValueError, TypeError):
                        pass
                if line.startswith("Error:"):
                    errors.append(line[len("Error:") :].strip())
                elif line.strip():
                    tail.append(line)

        def read_out() -> None:
            assert proc.stdout is not None
            out_chunks.append(proc.stdout.read())

        threads = [threading.Thread(target=read_err, daemon=True), threading.Thread(target=read_out, daemon=True)]
        for t in threads:
            t.start()
        cancelled = False
        while True:
            while updates:
                if progress(*updates.popleft()):
                    cancelled = True
            if not cancelled and progress(-1, -1, ""):  # poll for cancel between updates
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
            progress(*updates.popleft())
        if cancelled:
            for path in filter(None, outputs):
                for p in (Path(path), Path(f"{path}.aux.xml")):
                    with contextlib.suppress(OSError):
                        p.unlink()
            raise BackendCancelled("cancelled; the geoseg process was stopped and no output was written")
        if proc.returncode != 0:
            if errors:
                raise BackendError(" ".join(errors))
            detail = "\n".join(tail) or "(no output)"
            raise BackendError(f"geoseg ({' '.join(cmd[:4])} ...) failed with exit status {proc.returncode}:\n{detail}")
        return "".join(out_chunks)

    @staticmethod
    def _stop(proc: subprocess.Popen[str]) -> None:
        """SIGINT first (geoseg removes its temporary outputs), then kill."""
        if proc.poll() is not None:
            return
        with contextlib.suppress(OSError):
            proc.send_signal(signal.SIGINT if os.name == "posix" else signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def model_info(self, checkpoint: str) -> dict[str, Any]:
        return json.loads(self.run(["info", checkpoint, "--json"]))

    def class_legend(self, raster: str) -> dict[str, Any]:
        """Class names, colors and nodata of a class raster (``geoseg info --json``)."""
        return dict(json.loads(self.run(["info", raster, "--json"]))["legend"])

    def predict(
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
        progress: Progress = _no_progress,
    ) -> dict[str, Any]:
        args = [
            "predict",
            raster,
            out,
            "-m",
            checkpoint,
            "--device",
            device,
            "--stitch",
            stitch,
            "--progress",
            "json",
            "--overwrite",
        ]
        for opt, val in (
            ("--bands", bands or None),
            ("--tile", tile),
            ("--overlap", overlap),
            ("--batch-size", batch_size),
            ("--probabilities", probabilities),
        ):
            if val is not None:
                args += [opt, str(val)]
        stdout = self.run(args, progress, outputs=(out, probabilities))
        m = re.search(r"\(([\d.]+) MPix/s on (\S+)\)", stdout)
        return {"output": out, "probabilities": probabilities, "device": m.group(2) if m else device}

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
        args = [
            "vectorize",
            class_raster,
            out,
            "--min-area",
            str(min_area),
            "--simplify",
            str(simplify),
            "--connectivity",
            str(connectivity),
            "--progress",
            "json",
            "--overwrite",
        ]
        if classes:
            args += ["--classes", ",".join(classes)]
        stdout = self.run(args, progress, outputs=(out,))
        m = re.search(r"wrote (\d+) polygons", stdout)
        return {"output": out, "features": int(m.group(1)) if m else None}

    def evaluate(
        self,
        prediction: str,
        truth: str,
        report_dir: str,
        *,
        classes: Sequence[str] | None = None,
        ignore_index: int | None = None,
        class_field: str | None = None,
        background: int | None = None,
        progress: Progress = _no_progress,
    ) -> dict[str, Any]:
        args = ["evaluate", prediction, truth, "--report-dir", report_dir, "--progress", "json"]
        for opt, val in (
            ("--classes", ",".join(classes) if classes else None),
            ("--ignore-index", ignore_index),
            ("--class-field", class_field),
            ("--background", background),
        ):
            if val is not None:
                args += [opt, str(val)]
        self.run(args, progress)
        return json.loads((Path(report_dir) / "report.json").read_text(encoding="utf-8"))

    def train(
        self,
        image: str,
        labels: str,
        out: str,
        *,
        arch: str,
        arch_kwargs: dict[str, Any] | None = None,
        classes: Sequence[str] | None = None,
        epochs: int = 20,
        chip: int = 128,
        batch_size: int = 8,
        chips_per_epoch: int = 256,
        device: str = "auto",
        max_seconds: float | None = None,
        class_field: str | None = None,
        progress: Progress = _no_progress,
    ) -> dict[str, Any]:
        args = [
            "train",
            image,
            labels,
            out,
            "--arch",
            arch,
            "--arch-kwargs",
            json.dumps(arch_kwargs or {}),
            "--epochs",
            str(epochs),
            "--chip",
            str(chip),
            "--batch-size",
            str(batch_size),
            "--chips-per-epoch",
            str(chips_per_epoch),
            "--device",
            device,
            "--progress",
            "json",
            "--overwrite",
        ]
        if classes:
            args += ["--classes", ",".join(classes)]
        if class_field:
            args += ["--class-field", class_field]
        if max_seconds:
            args += ["--max-seconds", str(max_seconds)]
        stdout = self.run(args, progress, outputs=(out,))
        m = re.search(r"best validation mIoU ([\d.naN]+) at epoch (\d+)", stdout)
        miou = float(m.group(1)) if m else float("nan")
        return {"output": out, "best_miou": miou, "best_epoch": int(m.group(2)) if m else None}
