"""Streaming confusion matrix and per-class IoU / precision / recall / F1, mIoU, OA and kappa. No torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoseg.errors import InvalidParameterError


class ConfusionMatrix:
    """Accumulates a ``num_classes x num_classes`` matrix (rows = truth, cols = prediction) window by window."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise InvalidParameterError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one window. Pixels outside ``valid`` or with ids outside ``0..num_classes-1`` are ignored."""
        pred = np.asarray(pred).ravel()
        truth = np.asarray(truth).ravel()
        if pred.shape != truth.shape:
            raise InvalidParameterError(f"prediction and truth windows differ in size: {pred.size} vs {truth.size}")
        keep = (truth >= 0) & (truth < self.num_classes) & (pred >= 0) & (pred < self.num_classes)
        if valid is not None:
            keep &= np.asarray(valid, dtype=bool).ravel()
        idx = truth[keep].astype(np.int64) * self.num_classes + pred[keep].astype(np.int64)
        self.matrix += np.bincount(idx, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self.matrix += other.matrix
        return self

    def report(self, classes: Sequence[str] | None = None) -> SegmentationReport:
        return SegmentationReport.from_matrix(self.matrix, classes)


@dataclass
class ClassScores:
    name: str
    iou: float
    precision: float
    recall: float
    f1: float
    support: int
    predicted: int = 0
    support_area: float = float("nan")
    support_m2: float = float("nan")


#: How IoU and mIoU are computed; printed with every report (table, JSON, CSV, Markdown, HTML) and in ``--help``.
MIOU_CONVENTION = (
    "IoU = TP / (TP + FP + FN) per class; mIoU = mean over classes present in the truth or the prediction: a class "
    "absent from the truth but predicted scores IoU 0, a class absent from both is n/a and left out of the mean"
)


def class_status(truth: int, predicted: int) -> str:
    """``scored`` (in the truth), ``absent_from_truth`` (only predicted: IoU 0) or ``absent`` (n/a, not in mIoU)."""
    if truth > 0:
        return "scored"
    return "absent_from_truth" if predicted > 0 else "absent"


@dataclass
class SegmentationReport:
    """Scores derived from a confusion matrix, by :data:`MIOU_CONVENTION`: classes absent from both truth and
    prediction get NaN scores and are left out of the means; a class only predicted has IoU 0."""

    classes: list[ClassScores]
    matrix: np.ndarray
    miou: float
    fwiou: float
    overall_accuracy: float
    kappa: float
    pixels: int
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, classes: Sequence[str] | None = None) -> SegmentationReport:
        m = np.asarray(matrix, dtype=np.float64)
        n = m.shape[0]
        names = list(classes) if classes is not None else [str(i) for i in range(n)]
        if len(names) != n:
            raise InvalidParameterError(f"{len(names)} class names for a {n}-class confusion matrix")
        tp = np.diag(m)
        truth = m.sum(1)
        pred = m.sum(0)
        union = truth + pred - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            precision = np.where(pred > 0, tp / pred, np.nan)
            recall = np.where(truth > 0, tp / truth, np.nan)
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), np.nan)
            f1 = np.where((pred > 0) | (truth > 0), np.nan_to_num(f1, nan=0.0), np.nan)
        total = m.sum()
        oa = float(tp.sum() / total) if total else float("nan")
        pe = float((truth * pred).sum() / total**2) if total else float("nan")
        kappa = (oa - pe) / (1 - pe) if total and pe < 1 else (1.0 if total else float("nan"))
        present = ~np.isnan(iou)
        miou = float(np.nanmean(iou)) if present.any() else float("nan")
        fwiou = float(np.nansum(truth / total * np.nan_to_num(iou))) if total else float("nan")
        scores = [
            ClassScores(names[i], float(iou[i]), float(precision[i]), float(recall[i]), float(f1[i]), int(truth[i]),
                        int(pred[i]))
            for i in range(n)
        ]
        return cls(scores, np.asarray(matrix, dtype=np.int64), miou, fwiou, oa, float(kappa), int(total))

    def set_support_area(self, area: Sequence[float], area_m2: Sequence[float] | None = None) -> None:
        """Attach each class's truth support as an area (map units) and in m² (NaN when unknown)."""
        for i, c in enumerate(self.classes):
            c.support_area = float(area[i])
            c.support_m2 = float(area_m2[i]) if area_m2 is not None else float("nan")

    def to_dict(self) -> dict[str, Any]:
        def f(x: float) -> float | None:
            return None if np.isnan(x) else round(float(x), 6)

        return {
            "miou": f(self.miou),
            "miou_convention": MIOU_CONVENTION,
            "fwiou": f(self.fwiou),
            "overall_accuracy": f(self.overall_accuracy),
            "kappa": f(self.kappa),
            "pixels": self.pixels,
            "classes": [
                {"id": i, "name": c.name, "iou": f(c.iou), "precision": f(c.precision), "recall": f(c.recall),
                 "f1": f(c.f1), "support": c.support, "predicted": c.predicted,
                 "support_area": f(c.support_area), "support_m2": f(c.support_m2),
                 "status": class_status(c.support, c.predicted)}
                for i, c in enumerate(self.classes)
            ],
            "confusion_matrix": self.matrix.tolist(),
            **self.extra,
        }

    def format_table(self) -> str:
        """A fixed-width text table for terminals and logs."""
        w = max(8, *(len(c.name) for c in self.classes))
        lines = [f"{'class':<{w}}  {'IoU':>6}  {'prec':>6}  {'recall':>6}  {'F1':>6}  {'support':>10}"]
        lines.append("-" * len(lines[0]))

        def p(x: float) -> str:
            return "   n/a" if np.isnan(x) else f"{x:6.3f}"

        notes = {"absent_from_truth": "  (absent from truth, predicted)", "absent": "  (absent)"}
        for c in self.classes:
            lines.append(f"{c.name:<{w}}  {p(c.iou)}  {p(c.precision)}  {p(c.recall)}  {p(c.f1)}  {c.support:>10d}"
                         + notes.get(class_status(c.support, c.predicted), ""))
        lines.append("-" * len(lines[0]))
        lines.append(
            f"mIoU {p(self.miou).strip()}   fwIoU {p(self.fwiou).strip()}   OA {p(self.overall_accuracy).strip()}   "
            f"kappa {p(self.kappa).strip()}   pixels {self.pixels}"
        )
        lines.append(MIOU_CONVENTION[0].upper() + MIOU_CONVENTION[1:] + ".")
        return "\n".join(lines)
