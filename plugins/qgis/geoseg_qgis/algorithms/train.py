"""Train model: an image raster + labels (class raster, or polygons with a class field) -> a model checkpoint."""

from __future__ import annotations

import json
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsRasterLayer,
    QgsVectorLayer,
)

from ..choices import DEVICES
from .base import GeoSegAlgorithm, progress_callback, split_names


class TrainModel(GeoSegAlgorithm):
    INPUT, LABELS, CLASS_FIELD, CLASSES, ARCH, ARCH_KWARGS = (
        "INPUT",
        "LABELS",
        "CLASS_FIELD",
        "CLASSES",
        "ARCH",
        "ARCH_KWARGS",
    )
    EPOCHS, CHIP, BATCH_SIZE, CHIPS_PER_EPOCH, DEVICE, MAX_SECONDS = (
        "EPOCHS",
        "CHIP",
        "BATCH_SIZE",
        "CHIPS_PER_EPOCH",
        "DEVICE",
        "MAX_SECONDS",
    )
    OUTPUT, BEST_MIOU = "OUTPUT", "BEST_MIOU"
    needs_torch = True

    def name(self) -> str:
        return "trainmodel"

    def displayName(self) -> str:  # noqa: N802
        return "Train model"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Trains a segmentation model on an image and labels: a class raster on the image grid (ids 0..K-1, "
            "nodata ignored) or label polygons with a class field (ids or names; default: the first of class_id, "
            "class, label, class_name, classname, category, value), which geoseg rasterizes window by window onto "
            "the image grid (unlabelled pixels are ignored). Keeps the checkpoint with the best validation mIoU; the "
            "checkpoint carries the band list, classes, colors and normalization (use it in 'Segment raster')."
        )

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Image raster"))
        self.addParameter(
            QgsProcessingParameterMapLayer(
                self.LABELS,
                "Labels (class raster or label polygons)",
                types=[QgsProcessing.TypeRaster, QgsProcessing.TypeVectorPolygon],
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.CLASS_FIELD,
                "Class field of label polygons",
                parentLayerParameterName=self.LABELS,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.CLASSES,
                "Class names for ids 0..K-1, comma-separated (empty = from the labels)",
                defaultValue="",
                optional=True,
            )
        )
        self.addParameter(QgsProcessingParameterString(self.ARCH, "Architecture (see `geoseg models`)", "unet"))
        self.addParameter(
            QgsProcessingParameterNumber(
                self.EPOCHS,
                "Epochs",
                QgsProcessingParameterNumber.Integer,
                20,
                minValue=1,
            )
        )
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=list(DEVICES), defaultValue=0))
        advanced = [
            QgsProcessingParameterString(self.ARCH_KWARGS, "Architecture options (JSON)", "{}", optional=True),
            QgsProcessingParameterNumber(
                self.CHIP, "Chip size (pixels)", QgsProcessingParameterNumber.Integer, 128, minValue=8
            ),
            QgsProcessingParameterNumber(
                self.BATCH_SIZE, "Batch size", QgsProcessingParameterNumber.Integer, 8, minValue=1
            ),
            QgsProcessingParameterNumber(
                self.CHIPS_PER_EPOCH, "Chips per epoch", QgsProcessingParameterNumber.Integer, 256, minValue=1
            ),
            QgsProcessingParameterNumber(
                self.MAX_SECONDS,
                "Time budget in seconds (0 = none)",
                QgsProcessingParameterNumber.Double,
                0.0,
                minValue=0.0,
            ),
        ]
        for p in advanced:
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT,
                "Model checkpoint",
                fileFilter="Model checkpoints (*.safetensors)",
            )
        )
        self.addOutput(QgsProcessingOutputNumber(self.BEST_MIOU, "Best validation mIoU"))

    def processAlgorithm(  # noqa: N802
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        image = self.layer_path(self.parameterAsRasterLayer(parameters, self.INPUT, context), "Image raster")
        labels_layer = self.parameterAsLayer(parameters, self.LABELS, context)
        classes = split_names(self.parameterAsString(parameters, self.CLASSES, context))
        out = self.output_file(self.parameterAsFileOutput(parameters, self.OUTPUT, context), "Model checkpoint")
        try:
            arch_kwargs = json.loads(self.parameterAsString(parameters, self.ARCH_KWARGS, context) or "{}")
        except json.JSONDecodeError as exc:
            raise QgsProcessingException(f'Architecture options must be JSON, e.g. {{"width": 16}} ({exc})') from exc
        backend = self.backend(feedback)
        class_field = None
        if isinstance(labels_layer, QgsVectorLayer):
            labels = self.vector_file(labels_layer, "Labels", feedback)
            class_field = self.parameterAsString(parameters, self.CLASS_FIELD, context) or None
        elif isinstance(labels_layer, QgsRasterLayer):
            labels = self.layer_path(labels_layer, "Labels")  # geoseg reads class names stored on it
        else:
            raise QgsProcessingException("Labels: give a class raster or a polygon layer")
        with self.geoseg_errors():
            max_seconds = self.parameterAsDouble(parameters, self.MAX_SECONDS, context) or None
            res = backend.train(
                image,
                labels,
                out,
                arch=self.parameterAsString(parameters, self.ARCH, context).strip(),
                arch_kwargs=arch_kwargs,
                classes=classes,
                epochs=self.parameterAsInt(parameters, self.EPOCHS, context),
                chip=self.parameterAsInt(parameters, self.CHIP, context),
                batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
                chips_per_epoch=self.parameterAsInt(parameters, self.CHIPS_PER_EPOCH, context),
                device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                max_seconds=max_seconds,
                class_field=class_field,
                progress=progress_callback(feedback, 0, 100, "train"),
            )
        if isinstance(labels_layer, QgsVectorLayer):
            feedback.pushInfo(
                f"geoseg rasterized label polygons window by window onto the image grid (class field "
                f"{class_field or 'found by name'})"
            )
        feedback.pushInfo(f"best validation mIoU {res.get('best_miou')} at epoch {res.get('best_epoch')}; wrote {out}")
        return {self.OUTPUT: out, self.BEST_MIOU: res.get("best_miou")}
