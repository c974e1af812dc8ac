"""Label inputs shared by Train model and Evaluate against ground truth: a class raster or label polygons.

They are two parameters, not one layer parameter accepting both: a field parameter whose parent may be a raster
crashes QGIS (3.40: QgsProcessingFieldWidgetWrapper::setParentLayerWrapperValue, signal 11) when the dialog opens
with a raster as the active layer. The class and id fields' parent is the polygon parameter only.
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterField,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorLayer,
    QgsRasterLayer,
    QgsVectorLayer,
    QgsWkbTypes,
)

from .base import GeoSegAlgorithm

CLASS_FIELD_CANDIDATES = "class_id, class, label, class_name, classname, category, value"  # geoseg.io.labels
CLASS_ID_RULE = (
    "Class ids of label polygons: a class field of integers holds the ids. A class field of names takes its ids from "
    "the class id field when one is chosen (the layer's own ids, e.g. class_id next to class_name); otherwise name "
    "i of the class names given has id i; otherwise the names, sorted alphabetically, get ids 0, 1, 2, ... Without "
    f"a class field, the first of {CLASS_FIELD_CANDIDATES} is used."
)


def add_truth_parameters(
    alg: GeoSegAlgorithm,
    raster: str,
    polygons: str,
    what: str,
    *,
    class_field: str = "CLASS_FIELD",
    id_field: str = "ID_FIELD",
) -> None:
    """Add ``raster`` (a class raster), ``polygons`` (label polygons) and their class/id field parameters."""
    alg.addParameter(QgsProcessingParameterRasterLayer(raster, f"{what}: class raster", optional=True))
    alg.addParameter(
        QgsProcessingParameterVectorLayer(
            polygons, f"{what}: label polygons", types=[QgsProcessing.TypeVectorPolygon], optional=True
        )
    )
    alg.addParameter(
        QgsProcessingParameterField(
            class_field,
            "Class field of the label polygons (ids or names)",
            parentLayerParameterName=polygons,
            optional=True,
        )
    )
    alg.addParameter(
        QgsProcessingParameterField(
            id_field,
            "Class id field (the ids of a class field of names)",
            parentLayerParameterName=polygons,
            type=QgsProcessingParameterField.Numeric,
            optional=True,
        )
    )


def _given(parameters: dict[str, Any], name: str) -> bool:
    return parameters.get(name) not in (None, "")


def one_of(alg: GeoSegAlgorithm, parameters: dict[str, Any], raster: str, polygons: str) -> str:
    """ "" when exactly one of the two label parameters is given, else what to do."""
    given = [n for n in (raster, polygons) if _given(parameters, n)]
    if len(given) == 1:
        return ""
    first, second = (alg.parameterDefinition(n).description() for n in (raster, polygons))
    return f"give '{first}' or '{second}'" + (", not both" if given else "")


def labels_file(
    alg: GeoSegAlgorithm,
    parameters: dict[str, Any],
    context: QgsProcessingContext,
    feedback: QgsProcessingFeedback,
    raster: str,
    polygons: str,
    class_field: str,
    id_field: str,
) -> tuple[str, str | None, str | None]:
    """(file geoseg reads, class field, id field) of the label parameters; fields only for polygons."""
    problem = one_of(alg, parameters, raster, polygons)
    if problem:
        raise QgsProcessingException(problem)
    if _given(parameters, raster):
        what = alg.parameterDefinition(raster).description()
        layer = alg.parameterAsRasterLayer(parameters, raster, context)
        if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
            given = alg.parameterAsString(parameters, raster, context)
            where = alg.parameterDefinition(polygons).description()
            raise QgsProcessingException(
                f"{what}: {given!r} is not a raster QGIS can open; give label polygons as '{where}'"
            )
        return alg.layer_path(layer, what), None, None
    what = alg.parameterDefinition(polygons).description()
    vlayer = alg.parameterAsVectorLayer(parameters, polygons, context)
    if not isinstance(vlayer, QgsVectorLayer) or not vlayer.isValid():
        raise QgsProcessingException(f"{what}: the layer cannot be opened")
    if vlayer.geometryType() != QgsWkbTypes.PolygonGeometry:
        raise QgsProcessingException(f"{what}: layer {vlayer.name()!r} holds no polygons")
    path = alg.vector_file(vlayer, what, context, feedback)
    return (
        path,
        alg.parameterAsString(parameters, class_field, context) or None,
        alg.parameterAsString(parameters, id_field, context) or None,
    )
