"""Vectorize classes: a class raster -> polygons (merged across processing windows)."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from ..choices import CONNECTIVITIES
from ..styling import palette_from_legend
from .base import GeoSegAlgorithm, progress_callback, split_names

CONNECTIVITY = [f"{c} ({'edges' if c == 4 else 'edges and corners'})" for c in CONNECTIVITIES]


class VectorizeClasses(GeoSegAlgorithm):
    INPUT, CLASSES, MIN_AREA, SIMPLIFY, CONNECTIVITY = "INPUT", "CLASSES", "MIN_AREA", "SIMPLIFY", "CONNECTIVITY"
    OUTPUT, FEATURES = "OUTPUT", "FEATURES"
    terms = {"classes": "CLASSES", "min_area": "MIN_AREA", "simplify": "SIMPLIFY", "connectivity": "CONNECTIVITY"}

    def name(self) -> str:
        return "vectorizeclasses"

    def displayName(self) -> str:  # noqa: N802
        return "Vectorize classes"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Turns a class raster into polygons (class_id, class_name, pixels, area, area_m2), window by window, "
            "identical to polygonizing it whole. Nodata never becomes a polygon. Class names default to those "
            "stored on the raster by geoseg."
        )

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Class raster"))
        self.addParameter(
            QgsProcessingParameterString(
                self.CLASSES,
                "Class names, comma-separated (empty = stored on the raster)",
                defaultValue="",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_AREA,
                "Minimum polygon area (map units²)",
                QgsProcessingParameterNumber.Double,
                0.0,
                minValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.SIMPLIFY,
                "Simplification tolerance (map units)",
                QgsProcessingParameterNumber.Double,
                0.0,
                minValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.CONNECTIVITY,
                "Pixel connectivity",
                options=CONNECTIVITY,
                defaultValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.OUTPUT,
                "Class polygons",
                type=QgsProcessing.TypeVectorPolygon,
            )
        )
        self.addOutput(QgsProcessingOutputNumber(self.FEATURES, "Number of polygons"))

    def run_algorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        raster = self.layer_path(self.parameterAsRasterLayer(parameters, self.INPUT, context), "Class raster")
        out = self.output_file(self.parameterAsOutputLayer(parameters, self.OUTPUT, context), "Class polygons")
        # without names given, geoseg uses those stored on the raster
        classes = split_names(self.parameterAsString(parameters, self.CLASSES, context))
        backend = self.backend(feedback)
        res = backend.vectorize(
            raster,
            out,
            classes=classes,
            min_area=self.parameterAsDouble(parameters, self.MIN_AREA, context),
            simplify=self.parameterAsDouble(parameters, self.SIMPLIFY, context),
            connectivity=CONNECTIVITIES[self.parameterAsEnum(parameters, self.CONNECTIVITY, context)],
            progress=progress_callback(feedback, 0, 100, "vectorize", terms=self.in_dialog_terms),
        )
        features = res["vector"]["features"]
        feedback.pushInfo(f"wrote {features} polygons to {out}")
        legend = res["legend"]
        palette = palette_from_legend(classes or legend["classes"], legend["colors"], legend["nodata"])
        self.style_output(out, palette, context, feedback, vector=True, layer_name="Class polygons")
        return {self.OUTPUT: out, self.FEATURES: features}
