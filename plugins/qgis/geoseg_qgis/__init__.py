"""geoseg QGIS plugin: a Processing provider for geoseg (segment, vectorize, evaluate, train)."""

from __future__ import annotations

from typing import Any


def classFactory(iface: Any) -> Any:  # noqa: N802 (QGIS API name)
    """QGIS entry point."""
    from .plugin import GeoSegPlugin

    return GeoSegPlugin(iface)
