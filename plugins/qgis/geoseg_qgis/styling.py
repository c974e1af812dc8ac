"""Class colors on outputs: a paletted renderer for class rasters, a categorized one for polygons, saved styles."""

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


def style_kind(qml: Path) -> str | None:
    """``"raster"`` or ``"vector"``: the kind of layer a QGIS style file styles (None when unknown)."""
    try:
        text = qml.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if "<renderer-v2" in text:
        return "vector"
    if "<pipe" in text or "rasterrenderer" in text:
        return "raster"
    return None


def save_style(path: str, palette: Palette, *, vector: bool = False) -> tuple[str | None, str]:
    """Save the class style where QGIS finds it whenever ``path`` is opened; returns (where, why not).

    A class raster gets ``<name>.qml`` beside it (its names and colors are also in the raster itself, see
    ``geoseg.io.tags``). A GeoPackage keeps its style inside, as the layer's default style, so polygons next to a
    raster of the same name (``classes.tif`` + ``classes.gpkg``) never share, or overwrite, one ``classes.qml``.
    Other vector formats get ``<name>.qml`` unless a raster's style already has that name.
    """
    if not palette:
        return None, "no classes"
    layer = QgsVectorLayer(path, "classes", "ogr") if vector else QgsRasterLayer(path, "classes", "gdal")
    if not layer.isValid():
        return None, "QGIS cannot open it"
    style_layer(layer, palette)
    if vector and Path(path).suffix.lower() == ".gpkg":
        error = layer.saveStyleToDatabase("geoseg classes", "class colors and names written by geoseg", True, "")
        return (None, error) if error else ("inside the GeoPackage (its default style)", "")
    qml = Path(path).with_suffix(".qml")
    kind = "vector" if vector else "raster"
    other = style_kind(qml) if qml.exists() else None
    if other is not None and other != kind:
        return None, f"{qml} is the style of a {other} of the same name; rename one of them to keep both styles"
    _, ok = layer.saveNamedStyle(str(qml))
    return (str(qml), "") if ok else (None, f"cannot write {qml}")


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
