"""Segment raster: a model checkpoint applied tile by tile -> class raster (+ probabilities, + polygons)."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from ..choices import DEVICES, STITCH_METHODS
from ..styling import palette_from_legend
from .base import GeoSegAlgorithm, progress_callback


class SegmentRaster(GeoSegAlgorithm):
    INPUT, MODEL, BANDS, TILE, OVERLAP, DEVICE = "INPUT", "MODEL", "BANDS", "TILE", "OVERLAP", "DEVICE"
    STITCH, BATCH_SIZE, MIN_AREA, SIMPLIFY = "STITCH", "BATCH_SIZE", "MIN_AREA", "SIMPLIFY"
    OUTPUT, PROBABILITIES, POLYGONS = "OUTPUT", "PROBABILITIES", "POLYGONS"
    needs_torch = True
    terms = {
        "bands": "BANDS",
        "model": "MODEL",
        "checkpoint": "MODEL",
        "tile": "TILE",
        "overlap": "OVERLAP",
        "device": "DEVICE",
        "stitch": "STITCH",
        "batch_size": "BATCH_SIZE",
        "probabilities": "PROBABILITIES",
        "min_area": "MIN_AREA",
        "simplify": "SIMPLIFY",
    }

    def name(self) -> str:
        return "segmentraster"

    def displayName(self) -> str:  # noqa: N802
        return "Segment raster"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Segments a multiband raster into classes with a geoseg model checkpoint, tile by tile with overlap, "
            "into a class raster on the same grid (nodata where the input is nodata), colored with the model's "
            "class colors. Optionally writes per-class probabilities and class polygons.\n\n"
            "Band mapping: raster bands for the model inputs in model order ('1,2,3', '2-5', 'B04,B08'); empty "
            "uses the model's band contract (bands matched by name/index, never guessed). Tile size 0 and overlap "
            "-1 use the model's defaults.\n\n"
            "Legend: the class raster holds its class names and colors (GDAL category names and a raster attribute "
            "table, read by QGIS, ArcGIS and gdalinfo) and gets a .qml style of the same name; polygons in a "
            "GeoPackage keep their style inside the GeoPackage, so a raster and polygons of the same name keep "
            "both legends. Cancel removes every output of the run."
        )

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"))
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL,
                "Model checkpoint",
                behavior=QgsProcessingParameterFile.File,
                fileFilter="Model checkpoints (*.safetensors *.pt *.pth *.ckpt);;All files (*)",
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.BANDS,
                "Band mapping (empty = the model's bands)",
                defaultValue="",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.TILE,
                "Tile size in pixels (0 = the model's)",
                QgsProcessingParameterNumber.Integer,
                0,
                minValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.OVERLAP,
                "Overlap in pixels (-1 = the model's)",
                QgsProcessingParameterNumber.Integer,
                -1,
                minValue=-1,
            )
        )
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=list(DEVICES), defaultValue=0))
        advanced = [
            QgsProcessingParameterEnum(self.STITCH, "Stitching", options=list(STITCH_METHODS), defaultValue=0),
            QgsProcessingParameterNumber(
                self.BATCH_SIZE, "Batch size (0 = automatic)", QgsProcessingParameterNumber.Integer, 0, minValue=0
            ),
            QgsProcessingParameterNumber(
                self.MIN_AREA,
                "Polygons: minimum area (map units²)",
                QgsProcessingParameterNumber.Double,
                0.0,
                minValue=0.0,
            ),
            QgsProcessingParameterNumber(
                self.SIMPLIFY,
                "Polygons: simplification tolerance (map units)",
                QgsProcessingParameterNumber.Double,
                0.0,
                minValue=0.0,
            ),
        ]
        for p in advanced:
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Classes"))
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.PROBABILITIES,
                "Class probabilities",
                optional=True,
                createByDefault=False,
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.POLYGONS,
                "Class polygons",
                type=QgsProcessing.TypeVectorPolygon,
                optional=True,
                createByDefault=False,
            )
        )

    def run_algorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        raster = self.layer_path(layer, "Input raster")
        checkpoint = self.parameterAsFile(parameters, self.MODEL, context)
        bands = self.parameterAsString(parameters, self.BANDS, context).strip() or None
        tile = self.parameterAsInt(parameters, self.TILE, context) or None
        overlap = self.parameterAsInt(parameters, self.OVERLAP, context)
        device = DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]
        stitch = STITCH_METHODS[self.parameterAsEnum(parameters, self.STITCH, context)]
        batch_size = self.parameterAsInt(parameters, self.BATCH_SIZE, context) or None
        out = self.output_file(self.parameterAsOutputLayer(parameters, self.OUTPUT, context), "Classes")
        probs = self.parameterAsOutputLayer(parameters, self.PROBABILITIES, context) or None
        polys = self.parameterAsOutputLayer(parameters, self.POLYGONS, context) or None
        probs = self.output_file(probs, "Class probabilities") if probs else None
        polys = self.output_file(polys, "Class polygons") if polys else None

        backend = self.backend(feedback)
        if bands:
            feedback.pushInfo(f"band mapping: {bands}")
        end = 85.0 if polys else 100.0
        res = backend.segment(
            raster,
            out,
            checkpoint=checkpoint,
            bands=bands,
            tile=tile,
            overlap=None if overlap < 0 else overlap,
            batch_size=batch_size,
            device=device,
            stitch=stitch,
            probabilities=probs,
            polygons=polys,
            min_area=self.parameterAsDouble(parameters, self.MIN_AREA, context),
            simplify=self.parameterAsDouble(parameters, self.SIMPLIFY, context),
            progress=(
                progress_callback(feedback, 0, end, "segment", terms=self.in_dialog_terms),
                progress_callback(feedback, end, 100.0, "vectorize", terms=self.in_dialog_terms),
            ),
        )
        pred = res["predict"]
        model, legend = pred.get("model") or {}, pred["legend"]
        feedback.pushInfo(
            f"model {model.get('arch')}: bands {','.join(model.get('bands') or [])} -> classes "
            f"{','.join(legend.get('classes') or [])}"
        )
        feedback.pushInfo(
            f"wrote {out} on {pred['device']} ({pred['tiles']} tiles, {pred['tiles_skipped']} all-nodata skipped, "
            f"{pred['mpix_per_s']:.2f} MPix/s)"
        )
        palette = palette_from_legend(legend["classes"], legend["colors"], legend["nodata"])
        self.style_output(out, palette, context, feedback, layer_name="Classes")
        if polys:
            feedback.pushInfo(f"wrote {res['vector']['features']} polygons to {polys}")
            self.style_output(polys, palette, context, feedback, vector=True, layer_name="Class polygons")
        feedback.setProgress(100)
        return {self.OUTPUT: out, self.PROBABILITIES: probs, self.POLYGONS: polys}
