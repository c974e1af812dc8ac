"""The plugin object QGIS loads: registers the Processing provider."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication

from .provider import GeoSegProvider


class GeoSegPlugin:
    """Adds the "geoseg" Processing provider (also in qgis_process, through initProcessing)."""

    def __init__(self, iface: Any = None) -> None:
        self.iface = iface
        self.provider: GeoSegProvider | None = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS API name)
        if self.provider is None:
            self.provider = GeoSegProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (QGIS API name)
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
