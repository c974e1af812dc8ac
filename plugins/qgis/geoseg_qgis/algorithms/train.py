"""Train model: an image raster + labels (class raster, or polygons with a class field) -> a model checkpoint."""

from __future__ import annotations

import json
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..choices import ARCHITECTURES, DEFAULT_ARCH, DEVICES, MAX_SELF_TRAINING, SELF_TRAINING
from .base import GeoSegAlgorithm, progress_callback, split_names
from .labels import CLASS_ID_RULE, add_truth_parameters, labels_file, one_of


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict, refusing a key given twice (Python's parser would keep the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"give {json.dumps(key)} twice")
        out[key] = value
    return out


class TrainModel(GeoSegAlgorithm):
    INPUT, LABELS, LABEL_POLYGONS, CLASS_FIELD, ID_FIELD, CLASSES = (
        "INPUT",
        "LABELS",
        "LABEL_POLYGONS",
        "CLASS_FIELD",
        "ID_FIELD",
        "CLASSES",
    )
    ARCH, ARCH_OTHER, ARCH_KWARGS = "ARCH", "ARCH_OTHER", "ARCH_KWARGS"
    EPOCHS, CHIP, BATCH_SIZE, CHIPS_PER_EPOCH, DEVICE, MAX_SECONDS, SELF_TRAINING = (
        "EPOCHS",
        "CHIP",
        "BATCH_SIZE",
        "CHIPS_PER_EPOCH",
        "DEVICE",
        "MAX_SECONDS",
        "SELF_TRAINING",
    )
    OUTPUT, BEST_MIOU = "OUTPUT", "BEST_MIOU"
    needs_torch = True
    terms = {
        "arch": "ARCH",
        "arch_kwargs": "ARCH_KWARGS",
        "classes": "CLASSES",
        "class_field": "CLASS_FIELD",
        "id_field": "ID_FIELD",
        "epochs": "EPOCHS",
        "chip": "CHIP",
        "batch_size": "BATCH_SIZE",
        "chips_per_epoch": "CHIPS_PER_EPOCH",
        "device": "DEVICE",
        "max_seconds": "MAX_SECONDS",
        "self_training": "SELF_TRAINING",
        "out": "OUTPUT",
    }

    def name(self) -> str:
        return "trainmodel"

    def displayName(self) -> str:  # noqa: N802
        return "Train model"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Trains a segmentation model on an image and labels: a class raster on the image grid (ids 0..K-1, "
            "nodata ignored) or label polygons, which geoseg rasterizes window by window onto the image grid "
            "(unlabelled pixels are ignored). Keeps the checkpoint with the best validation mIoU; the checkpoint "
            "carries the band list, classes, colors and normalization (use it in 'Segment raster'). Beside it, "
            "<checkpoint>.train-state.pt holds the last epoch's training state (for `geoseg train --resume`).\n\n"
            f"{CLASS_ID_RULE}\n\n"
            "Cancel stops training within one batch and removes the checkpoint and training state of the cancelled "
            "run: nothing is left that looks like a finished model. The checkpoint must be saved to a file of your "
            "choice (a temporary file would be deleted with the model when QGIS closes).\n\n"
            "Self-training rounds (advanced): after the epochs on your labels, each round trains a fresh model on "
            "them plus the previous model's confident predictions on the unlabelled pixels, for the same epochs "
            "again (progress counts the epochs of all rounds); 0 trains on your labels only."
        )

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Image raster"))
        add_truth_parameters(self, self.LABELS, self.LABEL_POLYGONS, "Labels")
        self.addParameter(
            QgsProcessingParameterString(
                self.CLASSES,
                "Class names for ids 0..K-1, comma-separated (empty = from the labels)",
                defaultValue="",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.ARCH,
                "Architecture (default: geoseg's default recipe chooses from the bands)",
                options=[DEFAULT_ARCH, *ARCHITECTURES],
                defaultValue=DEFAULT_ARCH,
                usesStaticStrings=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.EPOCHS,
                "Epochs (empty: from the labelled pixels)",
                QgsProcessingParameterNumber.Integer,
                None,
                optional=True,
                minValue=1,
            )
        )
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=list(DEVICES), defaultValue=0))
        advanced = [
            QgsProcessingParameterString(
                self.ARCH_OTHER,
                "Other architecture (a name registered by a geoseg.models plugin; overrides the list)",
                "",
                optional=True,
            ),
            QgsProcessingParameterString(self.ARCH_KWARGS, "Architecture options (JSON)", "{}", optional=True),
            QgsProcessingParameterNumber(
                self.CHIP,
                "Chip size in pixels (empty: from the labelled area)",
                QgsProcessingParameterNumber.Integer,
                None,
                optional=True,
                minValue=8,
            ),
            QgsProcessingParameterNumber(
                self.BATCH_SIZE, "Batch size", QgsProcessingParameterNumber.Integer, 8, minValue=1
            ),
            QgsProcessingParameterNumber(
                self.CHIPS_PER_EPOCH,
                "Chips per epoch (empty: from the labelled pixels)",
                QgsProcessingParameterNumber.Integer,
                None,
                optional=True,
                minValue=1,
            ),
            QgsProcessingParameterNumber(
                self.SELF_TRAINING,
                "Self-training rounds (0 = your labels only)",
                QgsProcessingParameterNumber.Integer,
                SELF_TRAINING,
                minValue=0,
                maxValue=MAX_SELF_TRAINING,
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

    def checkParameterValues(  # noqa: N802
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[bool, str]:
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        message = one_of(self, parameters, self.LABELS, self.LABEL_POLYGONS)
        if not message and self.is_temporary(parameters.get(self.OUTPUT)):
            message = (
                "Model checkpoint: choose a file to save the model to; a temporary file is deleted when QGIS closes, "
                "and the trained model with it"
            )
        return not message, message

    def _optional_int(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> int | None:
        """An optional integer parameter's value, None when left empty (geoseg then decides it from the data)."""
        if parameters.get(name) in (None, ""):
            return None
        return self.parameterAsInt(parameters, name, context)

    def run_algorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        image = self.layer_path(self.parameterAsRasterLayer(parameters, self.INPUT, context), "Image raster")
        classes = split_names(self.parameterAsString(parameters, self.CLASSES, context))
        out = self.output_file(self.parameterAsFileOutput(parameters, self.OUTPUT, context), "Model checkpoint")
        arch: str | None = self.parameterAsString(
            parameters, self.ARCH_OTHER, context
        ).strip() or self.parameterAsEnumString(parameters, self.ARCH, context)
        if arch == DEFAULT_ARCH:
            arch = None  # geoseg chooses the network from the image's bands
        try:
            arch_kwargs = json.loads(
                self.parameterAsString(parameters, self.ARCH_KWARGS, context) or "{}", object_pairs_hook=_unique_keys
            )
        except json.JSONDecodeError as exc:
            raise QgsProcessingException(
                f'Architecture options must be JSON, e.g. {{"width": 16}} ({exc.msg}, column {exc.colno})'
            ) from exc
        except ValueError as exc:  # a key given twice
            raise QgsProcessingException(f"Architecture options {exc}; keep one of them") from exc
        labels, class_field, id_field = labels_file(
            self, parameters, context, feedback, self.LABELS, self.LABEL_POLYGONS, self.CLASS_FIELD, self.ID_FIELD
        )
        backend = self.backend(feedback)
        device = DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]
        res = backend.train(
            image,
            labels,
            out,
            arch=arch,
            arch_kwargs=arch_kwargs,
            classes=classes,
            class_field=class_field,
            id_field=id_field,
            epochs=self._optional_int(parameters, self.EPOCHS, context),
            chip=self._optional_int(parameters, self.CHIP, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            chips_per_epoch=self._optional_int(parameters, self.CHIPS_PER_EPOCH, context),
            device=device,
            max_seconds=self.parameterAsDouble(parameters, self.MAX_SECONDS, context) or None,
            self_training=self.parameterAsInt(parameters, self.SELF_TRAINING, context),
            progress=progress_callback(feedback, 0, 100, "train", terms=self.in_dialog_terms),
        )
        if class_field or id_field or self.parameterAsString(parameters, self.LABEL_POLYGONS, context):
            ids = f"from {id_field}" if id_field else "by the rule in the help"
            feedback.pushInfo(
                f"geoseg rasterized label polygons window by window onto the image grid (class field "
                f"{class_field or 'found by name'}, ids {ids})"
            )
        feedback.pushInfo(f"best validation mIoU {res.get('best_miou')} at epoch {res.get('best_epoch')}; wrote {out}")
        return {self.OUTPUT: out, self.BEST_MIOU: res.get("best_miou")}
