"""Class colors on outputs: a paletted renderer for class rasters, a categorized one for polygons, .qml sidecars."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsPalettedRasterRenderer,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsSymbol,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QColor

Palette = list[tuple[int, tuple[int, int, int], str]]  # (class id, RGB, name)

_KEEP: list[QgsProcessingLayerPostProcessorInterface] = []  # post-processors must outlive the algorithm call


def palette_from_legend(
    classes: Sequence[str] | None, colors: Sequence[Sequence[int]] | None, nodata: float | None = None
) -> Palette:
    """(id, RGB, name) per class from a class legend: names and colors as geoseg reads them from a class raster
    (the backend's ``class_legend``) or as a model contract holds them. Classes without a color get a generated
    one; the nodata id is left out; empty when there are neither names nor colors."""
    names = [str(n) for n in classes or []]
    table = [tuple(int(v) for v in c[:3]) for c in colors or []]
    palette: Palette = []
    for i in range(len(names) or len(table)):
        if nodata is not None and i == int(nodata):
            continue
        rgb = table[i] if i < len(table) else ((31 * i) % 256, (97 * i) % 256, (151 * i) % 256)
        palette.append((i, (rgb[0], rgb[1], rgb[2]), names[i] if i < len(names) else str(i)))
    if not names and table:  # a plain color table: keep only the entries that are not black/empty
        palette = [p for p in palette if p[1] != (0, 0, 0)]
    return palette


def raster_renderer(layer: QgsRasterLayer, palette: Palette) -> QgsPalettedRasterRenderer:
    classes = [QgsPalettedRasterRenderer.Class(v, QColor(*rgb), name) for v, rgb, name in palette]
    return QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes)


def vector_renderer(layer: QgsVectorLayer, palette: Palette, field: str = "class_id") -> QgsCategorizedSymbolRenderer:
    cats = []
    for v, rgb, name in palette:
        sym = QgsSymbol.defaultSymbol(layer.geometryType() if layer.isValid() else QgsWkbTypes.PolygonGeometry)
        sym.setColor(QColor(*rgb))
        cats.append(QgsRendererCategory(v, sym, name))
    return QgsCategorizedSymbolRenderer(field, cats)


def style_layer(layer: object, palette: Palette) -> None:
    """Apply the class palette to a raster or vector layer."""
    if not palette:
        return
    if isinstance(layer, QgsRasterLayer):
        layer.setRenderer(raster_renderer(layer, palette))
    elif isinstance(layer, QgsVectorLayer):
        layer.setRenderer(vector_renderer(layer, palette))
    layer.triggerRepaint()


def write_qml(path: str, palette: Palette, *, vector: bool = False) -> str | None:
    """Save the class style as ``<output>.qml`` (QGIS loads it with the layer); returns its path."""
    if not palette:
        return None
    layer = QgsVectorLayer(path, "classes", "ogr") if vector else QgsRasterLayer(path, "classes", "gdal")
    if not layer.isValid():
        return None
    style_layer(layer, palette)
    qml = str(Path(path).with_suffix(".qml"))
    _, ok = layer.saveNamedStyle(qml)
    return qml if ok else None


class ClassStyler(QgsProcessingLayerPostProcessorInterface):
    """Applies the class palette when Processing loads an output into the project."""

    def __init__(self, palette: Palette) -> None:
        super().__init__()
        self.palette = palette

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802, ANN001
        style_layer(layer, self.palette)

    @classmethod
    def create(cls, palette: Palette) -> ClassStyler:
        styler = cls(palette)
        _KEEP.append(styler)
        del _KEEP[:-32]
        return styler
