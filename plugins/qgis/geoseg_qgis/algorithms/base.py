"""Shared plumbing of the geoseg algorithms: backend choice, progress/cancel, layer paths, errors."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from qgis.core import (
    QgsMapLayer,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProviderRegistry,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from ..backend import BackendCancelled, BackendError, InProcessBackend, SubprocessBackend, select_backend
from ..styling import ClassStyler, Palette, write_qml


def progress_callback(
    feedback: QgsProcessingFeedback | None, start: float = 0.0, end: float = 100.0, label: str = ""
) -> Callable[[int, int, str], bool]:
    """geoseg's ``(done, total, message) -> cancel`` callback driving ``feedback`` in [start, end] percent.

    ``done < 0`` is a pure cancel poll (the subprocess backend polls between updates).
    """
    state = {"decile": -1, "message": None}

    def callback(done: int, total: int, message: str = "") -> bool:
        if feedback is None:
            return False
        if done >= 0:
            frac = done / total if total else 1.0
            feedback.setProgress(start + (end - start) * min(max(frac, 0.0), 1.0))
            decile = int(frac * 10)
            if decile != state["decile"] or (message and message != state["message"]):
                state["decile"], state["message"] = decile, message
                feedback.pushInfo(f"{label or 'geoseg'}: {done}/{total} {message}".rstrip())
        return feedback.isCanceled()

    return callback


class GeoSegAlgorithm(QgsProcessingAlgorithm):
    """Base class: ``createInstance`` by type, a group, the icon, and helpers."""

    needs_torch = False

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

    # ---------------------------------------------------------------------------------------------- helpers

    def backend(self, feedback: QgsProcessingFeedback) -> InProcessBackend | SubprocessBackend:
        from ..provider import configured_backend, configured_python

        try:
            backend = select_backend(
                needs_torch=self.needs_torch, mode=configured_backend(), python=configured_python()
            )
        except BackendError as exc:
            raise QgsProcessingException(str(exc)) from exc
        where = "in-process"
        if isinstance(backend, SubprocessBackend):
            where = f"subprocess {backend.python}" + (f" ({backend.reason})" if backend.reason else "")
        feedback.pushInfo(f"geoseg backend: {where}")
        return backend

    @staticmethod
    @contextlib.contextmanager
    def geoseg_errors() -> Iterator[None]:
        """BackendError -> QgsProcessingException with geoseg's readable message."""
        try:
            yield
        except BackendCancelled as exc:
            raise QgsProcessingException(str(exc)) from exc
        except BackendError as exc:
            raise QgsProcessingException(f"geoseg: {exc}") from exc

    @staticmethod
    def layer_path(layer: QgsMapLayer | None, what: str) -> str:
        """The file behind a GDAL/OGR layer (without provider options)."""
        if layer is None:
            raise QgsProcessingException(f"{what}: no layer given")
        parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
        path = parts.get("path") or layer.source().split("|")[0]
        if not path or not os.path.exists(path):
            raise QgsProcessingException(
                f"{what}: geoseg reads files, but layer {layer.name()!r} comes from {layer.source()!r}; "
                f"save it to a file (GeoTIFF/GeoPackage) first"
            )
        return path

    def vector_file(self, layer: QgsVectorLayer, what: str, feedback: QgsProcessingFeedback) -> str:
        """A vector file geoseg can read: the layer's own single-layer file, else a temporary GeoPackage copy."""
        parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
        path = parts.get("path")
        if layer.providerType() == "ogr" and path and os.path.exists(path) and not layer.subsetString():
            from osgeo import ogr

            ds = ogr.Open(path)
            if ds is not None and ds.GetLayerCount() == 1:
                return path
        tmp = os.path.join(tempfile.mkdtemp(prefix="geoseg_qgis_"), "layer.gpkg")
        opts = QgsVectorFileWriter.SaveVectorOptions()
        opts.driverName = "GPKG"
        err = QgsVectorFileWriter.writeAsVectorFormatV3(layer, tmp, layer.transformContext(), opts)
        if err[0] != QgsVectorFileWriter.NoError:
            raise QgsProcessingException(f"{what}: cannot export layer {layer.name()!r} for geoseg: {err[1]}")
        feedback.pushInfo(f"{what}: exported {layer.name()!r} to {tmp}")
        return tmp

    @staticmethod
    def output_file(path: str, what: str) -> str:
        """A plain file path for an output (geoseg writes files, not database tables)."""
        if not path or path.startswith(("memory:", "ogr:", "postgres:", "postgis:")):
            raise QgsProcessingException(f"{what}: choose a file output (got {path!r})")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def style_output(
        path: str,
        output_name: str,
        palette: Palette,
        context: QgsProcessingContext,
        *,
        vector: bool = False,
        layer_name: str | None = None,
    ) -> None:
        """Class colors: a .qml beside the output and a post-processor for the loaded layer."""
        if not palette:
            return
        write_qml(path, palette, vector=vector)
        if context.willLoadLayerOnCompletion(path):
            details = context.layerToLoadOnCompletionDetails(path)
            if layer_name:
                details.name = layer_name
            details.setPostProcessor(ClassStyler.create(palette))
        _ = output_name


def split_names(text: str | None) -> list[str] | None:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return names or None
