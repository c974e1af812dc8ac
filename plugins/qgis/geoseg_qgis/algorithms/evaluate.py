"""Evaluate against ground truth: per-class IoU/precision/recall/F1, mIoU, OA, kappa -> report files + a table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputHtml,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from .base import GeoSegAlgorithm, progress_callback, split_names
from .labels import CLASS_ID_RULE, add_truth_parameters, labels_file, one_of

SCORES = ("iou", "precision", "recall", "f1")


class EvaluateSegmentation(GeoSegAlgorithm):
    PREDICTION, TRUTH, TRUTH_POLYGONS, CLASS_FIELD, ID_FIELD = (
        "PREDICTION",
        "TRUTH",
        "TRUTH_POLYGONS",
        "CLASS_FIELD",
        "ID_FIELD",
    )
    CLASSES, IGNORE_INDEX, BACKGROUND = "CLASSES", "IGNORE_INDEX", "BACKGROUND"
    REPORT_FOLDER, TABLE, REPORT_HTML, REPORT_JSON = "REPORT_FOLDER", "TABLE", "REPORT_HTML", "REPORT_JSON"
    MIOU, OA, KAPPA = "MIOU", "OVERALL_ACCURACY", "KAPPA"
    terms = {
        "classes": "CLASSES",
        "ignore_index": "IGNORE_INDEX",
        "class_field": "CLASS_FIELD",
        "truth_class_field": "CLASS_FIELD",
        "id_field": "ID_FIELD",
        "truth_id_field": "ID_FIELD",
        "background": "BACKGROUND",
    }

    def name(self) -> str:
        return "evaluate"

    def displayName(self) -> str:  # noqa: N802
        return "Evaluate against ground truth"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Scores a class raster against ground truth: a class raster (resampled onto the prediction grid when "
            "needed) or label polygons. Writes report.json/csv/md/html into the report folder and a table with one "
            "row per class (IoU, precision, recall, F1, support). Nodata is left out; -1 for ignore index / "
            "background means none.\n\n"
            f"{CLASS_ID_RULE}"
        )

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.PREDICTION, "Class raster (prediction)"))
        add_truth_parameters(self, self.TRUTH, self.TRUTH_POLYGONS, "Ground truth")
        self.addParameter(
            QgsProcessingParameterString(
                self.CLASSES,
                "Class names, comma-separated (empty = stored on the prediction)",
                defaultValue="",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.IGNORE_INDEX,
                "Truth class id to ignore (-1 = none)",
                QgsProcessingParameterNumber.Integer,
                -1,
                minValue=-1,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.BACKGROUND,
                "Class id of pixels no polygon covers (-1 = not evaluated)",
                QgsProcessingParameterNumber.Integer,
                -1,
                minValue=-1,
            )
        )
        self.addParameter(QgsProcessingParameterFolderDestination(self.REPORT_FOLDER, "Report folder"))
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.TABLE,
                "Per-class scores",
                type=QgsProcessing.TypeVector,
            )
        )
        self.addOutput(QgsProcessingOutputHtml(self.REPORT_HTML, "Report"))
        self.addOutput(QgsProcessingOutputFile(self.REPORT_JSON, "Report (JSON)"))
        for key, label in ((self.MIOU, "mIoU"), (self.OA, "Overall accuracy"), (self.KAPPA, "Kappa")):
            self.addOutput(QgsProcessingOutputNumber(key, label))

    def checkParameterValues(  # noqa: N802
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[bool, str]:
        ok, message = super().checkParameterValues(parameters, context)
        if ok:
            message = one_of(self, parameters, self.TRUTH, self.TRUTH_POLYGONS)
        return not message, message

    def run_algorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        prediction = self.layer_path(self.parameterAsRasterLayer(parameters, self.PREDICTION, context), "Prediction")
        truth, class_field, id_field = labels_file(
            self, parameters, context, feedback, self.TRUTH, self.TRUTH_POLYGONS, self.CLASS_FIELD, self.ID_FIELD
        )
        ignore = self.parameterAsInt(parameters, self.IGNORE_INDEX, context)
        background = self.parameterAsInt(parameters, self.BACKGROUND, context)
        folder = self.parameterAsString(parameters, self.REPORT_FOLDER, context)
        self.output_file(str(Path(folder) / "report.json"), "Report folder")
        classes = split_names(self.parameterAsString(parameters, self.CLASSES, context))
        backend = self.backend(feedback)
        result = backend.evaluate(
            prediction,
            truth,
            folder,
            classes=classes,
            ignore_index=None if ignore < 0 else ignore,
            class_field=class_field,
            id_field=id_field,
            background=None if background < 0 else background,
            progress=progress_callback(feedback, 0, 95, "evaluate", terms=self.in_dialog_terms),
        )
        report = result["report"]
        fields = QgsFields()
        for name, kind in (
            ("class_id", "Int"),
            ("class_name", "QString"),
            *((s, "Double") for s in SCORES),
            ("support", "LongLong"),
            ("predicted", "LongLong"),
        ):
            fields.append(_field(name, kind))
        sink, dest = self.parameterAsSink(parameters, self.TABLE, context, fields, QgsWkbTypes.NoGeometry)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.TABLE))
        for row in report["classes"]:
            f = QgsFeature(fields)
            attrs = [int(row["id"]), str(row["name"])]
            attrs += [_num(row.get(s)) for s in SCORES]
            attrs += [int(row.get("support") or 0), int(row.get("predicted") or 0)]
            f.setAttributes(attrs)
            sink.addFeature(f, QgsFeatureSink.FastInsert)
        feedback.setProgress(100)
        feedback.pushInfo(
            f"mIoU {report.get('miou')}  OA {report.get('overall_accuracy')}  kappa {report.get('kappa')} "
            f"({report.get('pixels')} pixels); report in {folder}"
        )
        return {
            self.REPORT_FOLDER: folder,
            self.TABLE: dest,
            self.REPORT_HTML: str(Path(folder) / "report.html"),
            self.REPORT_JSON: str(Path(folder) / "report.json"),
            self.MIOU: _num(report.get("miou")),
            self.OA: _num(report.get("overall_accuracy")),
            self.KAPPA: _num(report.get("kappa")),
        }


def _field(name: str, kind: str) -> QgsField:
    """A field with a QMetaType type (QGIS >= 3.38) or a QVariant type (older)."""
    if Qgis.versionInt() >= 33800:
        from qgis.PyQt.QtCore import QMetaType

        return QgsField(name, getattr(QMetaType.Type, kind))
    return QgsField(name, getattr(QVariant, "String" if kind == "QString" else kind))


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x
