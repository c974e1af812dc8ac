"""Streaming confusion matrix and per-class IoU / precision / recall / F1, mIoU, OA and kappa. No torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoseg.errors import InvalidParameterError


class ConfusionMatrix:
    """Accumulates a ``num_classes x num_classes`` matrix (rows = truth, cols = prediction) window by window.

    The one place pixels become counts (evaluation, training validation, batch reports). A pixel counts when it is in
    ``valid``, both values are finite (NaN/inf are nodata, like a nodata value or a masked pixel) and both ids are
    in ``0..num_classes-1``. Valid pixels with other ids are left out of the matrix and, with ``track_unknown``,
    counted per id in :attr:`unknown_truth` / :attr:`unknown_pred` so the caller can say which labels are wrong.
    With ``num_classes=None`` the matrix grows to the largest id seen (classes not known up front).

    Raises:
        InvalidParameterError: ``num_classes`` below 1.
    """

    def __init__(self, num_classes: int | None, *, track_unknown: bool = False) -> None:
        if num_classes is not None and num_classes < 1:
            raise InvalidParameterError(f"num_classes must be >= 1, got {num_classes}")
        self.grow = num_classes is None
        n = num_classes or 0
        self.matrix = np.zeros((n, n), dtype=np.int64)
        self.track_unknown = track_unknown
        self.unknown_truth: dict[int, int] = {}
        self.unknown_pred: dict[int, int] = {}
        self.truth_area = np.zeros(n)  # per truth class: sum of the ``truth_area`` given to update()

    @property
    def num_classes(self) -> int:
        return int(self.matrix.shape[0])

    def update(
        self,
        pred: np.ndarray,
        truth: np.ndarray,
        valid: np.ndarray | None = None,
        *,
        truth_area: np.ndarray | None = None,
    ) -> None:
        """Add one window of class ids (any shape, the same for all arrays; integer or float).

        ``truth_area``: per-pixel weights (e.g. pixel area in m² on a geographic grid) summed per truth class into
        :attr:`truth_area`.

        Raises:
            InvalidParameterError: the arrays differ in size.
        """
        shape = np.shape(pred)
        pred = np.asarray(pred).ravel()
        truth = np.asarray(truth).ravel()
        if pred.shape != truth.shape:
            raise InvalidParameterError(f"prediction and truth windows differ in size: {pred.size} vs {truth.size}")
        keep = np.ones(pred.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).ravel().copy()
        for a in (pred, truth):
            if a.dtype.kind == "f":
                keep &= np.isfinite(a)
        pv = pred[keep].astype(np.int64)
        tv = truth[keep].astype(np.int64)
        if self.grow and pv.size:
            self._grow(int(max(pv.max(), tv.max())) + 1)
        n = self.num_classes
        ok = (tv >= 0) & (tv < n) & (pv >= 0) & (pv < n)
        if self.track_unknown and not ok.all():
            for ids, store in (
                (tv[(tv < 0) | (tv >= n)], self.unknown_truth),
                (pv[(pv < 0) | (pv >= n)], self.unknown_pred),
            ):
                for i, c in zip(*(x.tolist() for x in np.unique(ids, return_counts=True))):
                    store[i] = store.get(i, 0) + c
        if not n:
            return
        tk = tv[ok]
        self.matrix += np.bincount(tk * n + pv[ok], minlength=n * n).reshape(n, n)
        if truth_area is not None:
            w = np.broadcast_to(np.asarray(truth_area, dtype=np.float64), shape).ravel()[keep][ok]
            self.truth_area += np.bincount(tk, weights=w, minlength=n)

    def _grow(self, n: int) -> None:
        if n > self.num_classes:
            k = n - self.num_classes
            self.matrix = np.pad(self.matrix, ((0, k), (0, k)))
            self.truth_area = np.pad(self.truth_area, (0, k))

    def add_matrix(self, matrix: np.ndarray) -> None:
        """Add another confusion matrix over the same class ids (the overlapping classes when sizes differ)."""
        m = np.asarray(matrix, dtype=np.int64)
        if self.grow:
            self._grow(m.shape[0])
        k = min(self.num_classes, m.shape[0])
        self.matrix[:k, :k] += m[:k, :k]

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add ``other`` (same classes) into this matrix; returns self.

        Raises:
            InvalidParameterError: the matrices have different class counts (and this one does not grow).
        """
        if other.num_classes != self.num_classes and not self.grow:
            raise InvalidParameterError(
                f"cannot merge a {other.num_classes}-class matrix into a {self.num_classes}-class one"
            )
        self.add_matrix(other.matrix)
        return self

    def report(self, classes: Sequence[str] | None = None) -> SegmentationReport:
        """Scores of the matrix (see :meth:`SegmentationReport.from_matrix`)."""
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
    prediction get NaN scores and are left out of the means; a class only predicted has IoU 0.

    Raises:
        InvalidParameterError: (:meth:`from_matrix`) class names that do not match the matrix.
    """

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
            ClassScores(
                names[i],
                float(iou[i]),
                float(precision[i]),
                float(recall[i]),
                float(f1[i]),
                int(truth[i]),
                int(pred[i]),
            )
            for i in range(n)
        ]
        return cls(scores, np.asarray(matrix, dtype=np.int64), miou, fwiou, oa, float(kappa), int(total))

    def set_support_area(
        self, area: Sequence[float] | np.ndarray, area_m2: Sequence[float] | np.ndarray | None = None
    ) -> None:
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
                {
                    "id": i,
                    "name": c.name,
                    "iou": f(c.iou),
                    "precision": f(c.precision),
                    "recall": f(c.recall),
                    "f1": f(c.f1),
                    "support": c.support,
                    "predicted": c.predicted,
                    "support_area": f(c.support_area),
                    "support_m2": f(c.support_m2),
                    "status": class_status(c.support, c.predicted),
                }
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
            lines.append(
                f"{c.name:<{w}}  {p(c.iou)}  {p(c.precision)}  {p(c.recall)}  {p(c.f1)}  {c.support:>10d}"
                + notes.get(class_status(c.support, c.predicted), "")
            )
        lines.append("-" * len(lines[0]))
        lines.append(
            f"mIoU {p(self.miou).strip()}   fwIoU {p(self.fwiou).strip()}   OA {p(self.overall_accuracy).strip()}   "
            f"kappa {p(self.kappa).strip()}   pixels {self.pixels}"
        )
        lines.append(MIOU_CONVENTION[0].upper() + MIOU_CONVENTION[1:] + ".")
        return "\n".join(lines)
