"""The "geoseg" Processing provider and its settings."""

from __future__ import annotations

import os
from pathlib import Path

from qgis.core import QgsProcessingProvider, QgsSettings
from qgis.PyQt.QtGui import QIcon

from .algorithms import ALGORITHMS

SETTING_PYTHON = "geoseg/python"
# the same value as an editable Processing option (Settings > Options > Processing > Providers > geoseg)
OPTION_PYTHON = "GEOSEG_PYTHON"


def _option(name: str) -> str | None:
    try:
        from processing.core.ProcessingConfig import ProcessingConfig
    except ImportError:  # pragma: no cover - Processing plugin missing
        return None
    value = ProcessingConfig.getSetting(name)
    return str(value) if value else None


def configured_python() -> str | None:
    """The geoseg environment's python: GEOSEG_PYTHON, else QgsSettings geoseg/python, else the Processing option."""
    return os.environ.get("GEOSEG_PYTHON") or QgsSettings().value(SETTING_PYTHON, "") or _option(OPTION_PYTHON)


class GeoSegProvider(QgsProcessingProvider):
    """Segment raster, Vectorize classes, Evaluate against ground truth, Train model."""

    def id(self) -> str:
        return "geoseg"

    def name(self) -> str:
        return "geoseg"

    def longName(self) -> str:  # noqa: N802
        return "geoseg: semantic segmentation of multiband rasters"

    def icon(self) -> QIcon:
        return QIcon(str(Path(__file__).with_name("icon.svg")))

    def svgIconPath(self) -> str:  # noqa: N802
        return str(Path(__file__).with_name("icon.svg"))

    def load(self) -> bool:
        try:
            from processing.core.ProcessingConfig import ProcessingConfig, Setting

            ProcessingConfig.settingIcons[self.name()] = self.icon()
            ProcessingConfig.addSetting(
                Setting(
                    self.name(),
                    OPTION_PYTHON,
                    "Python of the geoseg environment (python file or venv folder)",
                    "",
                    valuetype=Setting.FILE,
                )
            )
            ProcessingConfig.readSettings()
        except ImportError:  # pragma: no cover
            pass
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        try:
            from processing.core.ProcessingConfig import ProcessingConfig

            ProcessingConfig.removeSetting(OPTION_PYTHON)
        except (ImportError, KeyError):  # pragma: no cover
            pass

    def loadAlgorithms(self) -> None:  # noqa: N802
        for cls in ALGORITHMS:
            self.addAlgorithm(cls())

    def supportedOutputVectorLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["gpkg", "geojson", "fgb", "parquet"]

    def supportedOutputTableExtensions(self) -> list[str]:  # noqa: N802
        return ["gpkg", "csv"]

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["tif"]
