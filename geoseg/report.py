"""Report writers for a :class:`~geoseg.metrics.SegmentationReport`: JSON, CSV, Markdown and HTML. No torch."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import InvalidParameterError, OutputError
from geoseg.io.outputs import OutputSet
from geoseg.metrics import SegmentationReport

REPORT_FORMATS = ("json", "csv", "md", "html")


def _fmt(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def report_json(report: SegmentationReport) -> str:
    """The machine-readable report (``report.to_dict()``) as JSON."""
    return json.dumps(report.to_dict(), indent=2, default=str) + "\n"


def report_csv(report: SegmentationReport) -> str:
    """One row per class: id, name, IoU, precision, recall, F1, support (pixels, area, m²), predicted pixels."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "class_id",
            "class_name",
            "iou",
            "precision",
            "recall",
            "f1",
            "support_pixels",
            "support_area",
            "support_m2",
            "predicted_pixels",
        ]
    )
    for i, c in enumerate(report.classes):
        w.writerow(
            [
                i,
                c.name,
                *(("" if math.isnan(v) else f"{v:.6f}") for v in (c.iou, c.precision, c.recall, c.f1)),
                c.support,
                *(("" if math.isnan(v) else f"{v:.6g}") for v in (c.support_area, c.support_m2)),
                c.predicted,
            ]
        )
    return buf.getvalue()


def _summary_rows(report: SegmentationReport) -> list[tuple[str, str]]:
    return [
        ("mIoU", _fmt(report.miou)),
        ("frequency-weighted IoU", _fmt(report.fwiou)),
        ("overall accuracy", _fmt(report.overall_accuracy)),
        ("Cohen's kappa", _fmt(report.kappa)),
        ("pixels evaluated", str(report.pixels)),
    ]


def report_markdown(report: SegmentationReport, *, title: str = "Segmentation report") -> str:
    """A human-readable Markdown report: summary, per-class table and confusion matrix."""
    lines = [f"# {title}", ""]
    for k in ("prediction", "truth", "crs"):
        if report.extra.get(k):
            lines.append(f"- {k}: `{report.extra[k]}`")
    lines += ["", "| metric | value |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in _summary_rows(report)]
    lines += [
        "",
        "## Per class",
        "",
        "| id | class | IoU | precision | recall | F1 | support (px) | support (m²) | predicted (px) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, c in enumerate(report.classes):
        m2 = "n/a" if math.isnan(c.support_m2) else f"{c.support_m2:.6g}"
        lines.append(
            f"| {i} | {c.name} | {_fmt(c.iou)} | {_fmt(c.precision)} | {_fmt(c.recall)} | {_fmt(c.f1)} | "
            f"{c.support} | {m2} | {c.predicted} |"
        )
    names = [c.name for c in report.classes]
    lines += [
        "",
        "## Confusion matrix (rows = truth, columns = prediction)",
        "",
        "| truth \\ pred | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for name, row in zip(names, report.matrix):
        lines.append(f"| **{name}** | " + " | ".join(str(int(v)) for v in row) + " |")
    lines.append("")
    return "\n".join(lines)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(report: SegmentationReport) -> tuple[str, str]:
    """Base64 PNGs: confusion-matrix heat map (row-normalized, counts annotated) and per-class IoU bars."""
    from matplotlib.figure import Figure  # no pyplot: rendered by the Agg canvas, whatever the user's backend

    names = [c.name for c in report.classes]
    n = len(names)
    m = report.matrix.astype(np.float64)
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    size = min(14.0, 2.5 + 0.6 * n)
    fig = Figure(figsize=(size, size * 0.85))
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of truth row")
    ax.set_xticks(range(n), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    ax.set_title("Confusion matrix")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{int(m[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    heat = _png(fig)
    fig = Figure(figsize=(max(4.0, 0.5 * n + 2), 3.5))
    ax = fig.add_subplot()
    iou = np.array([c.iou for c in report.classes])
    ax.bar(range(n), np.nan_to_num(iou), color=["#999999" if math.isnan(v) else "#2b7bba" for v in iou])
    if not math.isnan(report.miou):
        ax.axhline(report.miou, color="#d62728", linestyle="--", label=f"mIoU {report.miou:.3f}")
        ax.legend(loc="upper right")
    ax.set_xticks(range(n), labels=names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    ax.set_title("IoU per class (grey: class absent)")
    return heat, _png(fig)


def report_html(report: SegmentationReport, *, title: str = "Segmentation report") -> str:
    """A self-contained HTML page: summary, per-class table, heat map and IoU bar chart (embedded PNGs)."""
    heat, bars = _figures(report)
    e = html.escape
    meta = "".join(
        f"<li>{e(k)}: <code>{e(str(report.extra[k]))}</code></li>"
        for k in ("prediction", "truth", "crs")
        if report.extra.get(k)
    )
    summary = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _summary_rows(report))
    rows = "".join(
        f"<tr><td>{i}</td><td>{e(c.name)}</td><td>{_fmt(c.iou)}</td><td>{_fmt(c.precision)}</td>"
        f"<td>{_fmt(c.recall)}</td><td>{_fmt(c.f1)}</td><td>{c.support}</td>"
        f"<td>{'n/a' if math.isnan(c.support_m2) else f'{c.support_m2:.6g}'}</td><td>{c.predicted}</td></tr>"
        for i, c in enumerate(report.classes)
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f4f4f4}}img{{max-width:100%}}</style>
</head><body>
<h1>{e(title)}</h1><ul>{meta}</ul>
<table>{summary}</table>
<h2>Per class</h2>
<table><tr><th>id</th><th>class</th><th>IoU</th><th>precision</th><th>recall</th><th>F1</th><th>support (px)</th>
<th>support (m²)</th><th>predicted (px)</th></tr>{rows}</table>
<h2>Confusion matrix</h2><img alt="confusion matrix heat map" src="data:image/png;base64,{heat}">
<h2>IoU per class</h2><img alt="IoU per class bar chart" src="data:image/png;base64,{bars}">
</body></html>
"""


_WRITERS = {"json": report_json, "csv": report_csv, "md": report_markdown, "html": report_html}


def report_paths(
    out_dir: str | os.PathLike[str], *, formats: Sequence[str] = REPORT_FORMATS, stem: str = "report"
) -> dict[str, Path]:
    """The files :func:`write_report` writes: format -> ``<out_dir>/<stem>.<format>`` (``markdown`` is ``md``).

    Raises:
        InvalidParameterError: an unknown format, or none.
    """
    fmts = [str(f).lower().lstrip(".") for f in formats]
    fmts = ["md" if f == "markdown" else f for f in fmts]
    bad = [f for f in fmts if f not in _WRITERS]
    if bad or not fmts:
        raise InvalidParameterError(
            f"unsupported report format(s) {bad or '(none)'}; choose from {', '.join(REPORT_FORMATS)}"
        )
    out = Path(out_dir)
    return {f: out / f"{stem}.{f}" for f in dict.fromkeys(fmts)}


def write_report(
    report: SegmentationReport,
    out_dir: str | os.PathLike[str],
    *,
    formats: Sequence[str] = REPORT_FORMATS,
    stem: str = "report",
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``report`` as ``<out_dir>/<stem>.{json,csv,md,html}``; return format -> path.

    ``out_dir`` is created if missing (other files in it are kept). The files appear together or not at all
    (:class:`geoseg.io.outputs.OutputSet`); existing ones are replaced only with ``overwrite``.

    Raises:
        InvalidParameterError: an unknown format.
        OutputExistsError, OutputError: a report file exists without ``overwrite``, ``out_dir`` is a file, or the
            files cannot be written.
    """
    paths = report_paths(out_dir, formats=formats, stem=stem)
    texts = {f: _WRITERS[f](report) for f in paths}
    outputs = OutputSet(overwrite=overwrite)
    folder = outputs.add_folder(out_dir, "report", files=[p.name for p in paths.values()])
    try:
        with outputs:
            staged = outputs.stage(folder)
            for f, path in paths.items():
                (staged / path.name).write_text(texts[f], encoding="utf-8")
    except OSError as exc:
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"cannot write the report into {folder}: {exc.strerror or exc}") from exc
    return paths
