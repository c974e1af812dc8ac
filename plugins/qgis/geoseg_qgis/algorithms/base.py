"""Shared plumbing of the geoseg algorithms: backend choice, progress/cancel, signals, layer paths, temporary files,
errors in the dialog's terms, styles."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsMapLayer,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingUtils,
    QgsProviderRegistry,
    QgsRasterLayer,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from ..backend import WARNING, BackendCancelled, BackendError, SubprocessBackend, select_backend
from ..messages import in_dialog_terms
from ..styling import ClassStyler, Palette, save_style

STOP_SIGNALS = tuple(getattr(signal, s) for s in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, s))


def progress_callback(
    feedback: QgsProcessingFeedback | None,
    start: float = 0.0,
    end: float = 100.0,
    label: str = "",
    *,
    terms: Callable[[str], str] | None = None,
) -> Callable[[int, int, str], bool]:
    """geoseg's ``(done, total, message) -> cancel`` callback driving ``feedback`` in [start, end] percent.

    ``done`` = :data:`~geoseg_qgis.backend.WARNING` carries one of geoseg's warnings, pushed as a warning to the log
    (in the dialog's terms with ``terms``, an algorithm's ``in_dialog_terms``); any other ``done < 0`` is a pure
    cancel poll (the subprocess backend polls between updates).
    """
    state: dict[str, Any] = {"decile": -1, "message": None}

    def callback(done: int, total: int, message: str = "") -> bool:
        if feedback is None:
            return False
        if done == WARNING:
            feedback.pushWarning(f"{label or 'geoseg'}: {terms(message) if terms else message}")
        elif done >= 0:
            frac = done / total if total else 1.0
            feedback.setProgress(start + (end - start) * min(max(frac, 0.0), 1.0))
            decile = int(frac * 10)
            if decile != state["decile"] or (message and message != state["message"]):
                state["decile"], state["message"] = decile, message
                feedback.pushInfo(f"{label or 'geoseg'}: {done}/{total} {message}".rstrip())
        return feedback.isCanceled()

    return callback


@contextlib.contextmanager
def signals_cancel(feedback: QgsProcessingFeedback) -> Iterator[list[int]]:
    """While the block runs, SIGINT, SIGTERM and SIGHUP cancel ``feedback`` (yields the signals received).

    qgis_process runs algorithms on its main thread and otherwise dies on SIGTERM at once (leaving a geoseg
    subprocess running on) and ignores SIGINT. The previous handlers are restored afterwards. Off the main thread
    (the QGIS application runs algorithms in tasks) Python cannot handle signals, and Cancel is the way to stop.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        feedback.cancel()

    previous = {}
    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError, OSError):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, old in previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, old if old is not None else signal.SIG_DFL)


class GeoSegAlgorithm(QgsProcessingAlgorithm):
    """Base class: ``createInstance`` by type, the icon, errors, signals and temporary files around
    :meth:`run_algorithm`."""

    needs_torch = False
    #: geoseg's keyword (a CLI flag without dashes) -> the name of the parameter that sets it in this algorithm
    terms: dict[str, str] = {}

    def __init__(self) -> None:
        super().__init__()
        self._temporary: list[Path] = []

    def createInstance(self) -> GeoSegAlgorithm:  # noqa: N802
        return type(self)()

    def group(self) -> str:
        return ""

    def groupId(self) -> str:  # noqa: N802
        return ""

    def icon(self) -> QIcon:
        return QIcon(str(Path(__file__).parent.parent / "icon.svg"))

    def tr(self, text: str) -> str:
        return text

    # ---------------------------------------------------------------------------------------------- running

    def run_algorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        """What the algorithm does (``processAlgorithm`` wraps it); subclasses implement it."""
        raise NotImplementedError

    def processAlgorithm(  # noqa: N802
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        """:meth:`run_algorithm` with every failure as one readable line, signals as Cancel, temporaries removed."""
        with signals_cancel(feedback) as received:
            try:
                return self.run_algorithm(parameters, context, feedback)
            except QgsProcessingException:
                raise
            except BackendCancelled as exc:
                how = f" by {signal.Signals(received[0]).name}" if received else ""
                raise QgsProcessingException(f"geoseg: {exc}".replace("cancelled", f"cancelled{how}", 1)) from exc
            except BackendError as exc:
                if exc.detail:
                    feedback.pushInfo(exc.detail)
                raise QgsProcessingException(f"geoseg: {self.in_dialog_terms(str(exc))}") from exc
            except Exception as exc:  # a fault of the plugin itself: one line here, the traceback in the log
                feedback.pushInfo(traceback.format_exc())
                first = " ".join(str(exc).split()) or "(no message)"
                raise QgsProcessingException(
                    f"geoseg: the plugin failed unexpectedly ({type(exc).__name__}: {first}); the log holds the details"
                ) from exc
            finally:
                self.remove_temporary()

    def in_dialog_terms(self, message: str) -> str:
        """geoseg's message with its keywords and CLI flags named as this dialog's parameters."""
        labels = {}
        for keyword, name in self.terms.items():
            definition = self.parameterDefinition(name)
            if definition is not None:
                labels[keyword] = definition.description().split(" (")[0]
        return in_dialog_terms(message, labels)

    def backend(self, feedback: QgsProcessingFeedback) -> SubprocessBackend:
        from ..provider import configured_python

        try:
            backend = select_backend(needs_torch=self.needs_torch, python=configured_python())
        except BackendError as exc:
            raise QgsProcessingException(f"geoseg: {exc}") from exc
        reason = f" ({backend.reason})" if backend.reason else ""
        feedback.pushInfo(f"geoseg backend: subprocess {backend.python}{reason}")
        return backend

    # ---------------------------------------------------------------------------------------------- files

    @staticmethod
    def layer_path(layer: QgsMapLayer | None, what: str) -> str:
        """The file behind a GDAL/OGR layer (without provider options)."""
        if layer is None or not layer.isValid():
            raise QgsProcessingException(f"{what}: no layer given, or it cannot be opened")
        parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
        path = parts.get("path") or layer.source().split("|")[0]
        if not path or not os.path.exists(path):
            raise QgsProcessingException(
                f"{what}: geoseg reads files, but layer {layer.name()!r} comes from {layer.source()!r}; "
                f"save it to a file (GeoTIFF/GeoPackage) first"
            )
        return path

    def raster_path(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> str | None:
        """The file of a raster parameter (None when not given); a vector given instead is named as such."""
        if parameters.get(name) in (None, ""):
            return None
        what = self.parameterDefinition(name).description()
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
            given = self.parameterAsString(parameters, name, context)
            raise QgsProcessingException(
                f"{what}: {given!r} is not a raster QGIS can open; label polygons go into the polygons parameter"
            )
        return self.layer_path(layer, what)

    def temporary_path(self, name: str, context: QgsProcessingContext) -> str:
        """A new path ``name`` in QGIS's processing temporary folder, removed when the run ends."""
        path = Path(QgsProcessingUtils.generateTempFilename(name, context))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._temporary.append(path)
        return str(path)

    def remove_temporary(self) -> None:
        root = Path(QgsProcessingUtils.tempFolder()).resolve()
        for path in self._temporary:
            with contextlib.suppress(OSError):
                if path.is_file():
                    path.unlink()
                folder = path.parent.resolve()
                if folder != root and root in folder.parents:
                    shutil.rmtree(folder, ignore_errors=True)  # generateTempFilename's own folder
        self._temporary.clear()

    def vector_file(self, layer: QgsVectorLayer, what: str, context: QgsProcessingContext, feedback: Any) -> str:
        """A vector file geoseg can read: the layer's own single-layer file, else a temporary GeoPackage copy."""
        parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
        path = parts.get("path")
        if layer.providerType() == "ogr" and path and os.path.exists(path) and not layer.subsetString():
            from osgeo import ogr

            ds = ogr.Open(path)
            if ds is not None and ds.GetLayerCount() == 1:
                return path
        tmp = self.temporary_path("labels.gpkg", context)
        opts = QgsVectorFileWriter.SaveVectorOptions()
        opts.driverName = "GPKG"
        err = QgsVectorFileWriter.writeAsVectorFormatV3(layer, tmp, layer.transformContext(), opts)
        if err[0] != QgsVectorFileWriter.NoError:
            raise QgsProcessingException(f"{what}: cannot export layer {layer.name()!r} for geoseg: {err[1]}")
        feedback.pushInfo(f"{what}: exported {layer.name()!r} to a temporary GeoPackage for geoseg")
        return tmp

    @staticmethod
    def output_file(path: str, what: str) -> str:
        """A plain file path for an output, its folder created (geoseg writes files, not database tables)."""
        if not path or path.startswith(("memory:", "ogr:", "postgres:", "postgis:")):
            raise QgsProcessingException(f"{what}: choose a file output (got {path!r})")
        parent = Path(path).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocker = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
            why = f"{blocker} is a file, not a folder" if blocker else (exc.strerror or str(exc))
            raise QgsProcessingException(
                f"{what}: cannot write {path}: {why}; choose another file name or folder"
            ) from exc
        return path

    @staticmethod
    def is_temporary(value: Any) -> bool:
        """Whether a destination parameter value asks for a temporary file (QGIS deletes those on exit)."""
        if isinstance(value, QgsProcessingOutputLayerDefinition):
            value = value.sink.staticValue()
        text = str(value or "")
        tmp = QgsProcessingUtils.tempFolder()
        return not text or text == "TEMPORARY_OUTPUT" or (bool(tmp) and os.path.abspath(text).startswith(tmp))

    @staticmethod
    def style_output(
        path: str,
        palette: Palette,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
        *,
        vector: bool = False,
        layer_name: str | None = None,
    ) -> None:
        """Class colors and names: a style QGIS applies whenever it opens the output (:func:`save_style`) and a
        post-processor for the layer Processing loads now."""
        if not palette:
            return
        where, why = save_style(path, palette, vector=vector)
        feedback.pushInfo(f"class style saved {where}" if where else f"class style not saved with {path}: {why}")
        if context.willLoadLayerOnCompletion(path):
            details = context.layerToLoadOnCompletionDetails(path)
            if layer_name:
                details.name = layer_name
            details.setPostProcessor(ClassStyler.create(palette))


def split_names(text: str | None) -> list[str] | None:
    """Comma-separated class names (index = class id) as a list; None for an empty field.

    Empty and repeated names are kept, for geoseg to refuse with its message: dropping ``water,,forest``'s empty name
    would silently give forest the id of the missing class.
    """
    if not text or not text.strip():
        return None
    return [n.strip() for n in text.split(",")]
