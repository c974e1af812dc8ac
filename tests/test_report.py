"""Report writers: JSON, CSV, Markdown, HTML with embedded charts."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from geoseg.errors import InvalidParameterError, OutputExistsError
from geoseg.metrics import ConfusionMatrix
from geoseg.report import REPORT_FORMATS, report_markdown, write_report


def make_report():
    cm = ConfusionMatrix(4)
    rng = np.random.default_rng(0)
    t = rng.integers(0, 3, 500)
    p = np.where(rng.random(500) < 0.8, t, rng.integers(0, 3, 500))
    cm.update(p, t)
    rep = cm.report(["water", "forest", "urban & <roads>", "absent"])
    rep.set_support_area(rep.matrix.sum(1) * 100.0, rep.matrix.sum(1) * 100.0)
    rep.extra.update({"prediction": "p.tif", "truth": "t.tif"})
    return rep


def test_write_all_formats(tmp_path: Path) -> None:
    rep = make_report()
    paths = write_report(rep, tmp_path / "out")
    assert set(paths) == set(REPORT_FORMATS)
    data = json.loads(paths["json"].read_text())
    assert data["miou"] == pytest.approx(rep.miou, abs=1e-6)
    assert data["confusion_matrix"] == rep.matrix.tolist()
    assert data["classes"][3]["iou"] is None and data["classes"][0]["support_area"] == rep.classes[0].support * 100
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["class_name"] for r in rows] == ["water", "forest", "urban & <roads>", "absent"]
    assert float(rows[0]["iou"]) == pytest.approx(rep.classes[0].iou, abs=1e-6) and rows[3]["iou"] == ""
    md = paths["md"].read_text()
    assert "| mIoU |" in md and "Confusion matrix" in md and "| water |" in md
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 2 and "urban &amp; &lt;roads&gt;" in page
    png = page.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "out").iterdir() if ".partial" in p.name]


def test_formats_subset_and_errors(tmp_path: Path) -> None:
    rep = make_report()
    paths = write_report(rep, tmp_path, formats=["json", "markdown"], stem="eval")
    assert sorted(p.name for p in paths.values()) == ["eval.json", "eval.md"]
    with pytest.raises(InvalidParameterError, match=r"unsupported report format.*'pdf'.*json, csv, md, html"):
        write_report(rep, tmp_path, formats=["pdf"])
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_report(rep, tmp_path, formats=["json"], stem="eval", overwrite=False)


def test_markdown_handles_empty_classes() -> None:
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 0]), np.array([0, 0]))
    md = report_markdown(cm.report())
    assert "n/a" in md


def test_miou_convention_is_stated_everywhere_and_absent_differs_from_zero(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from geoseg.cli.main import cli
    from geoseg.metrics import MIOU_CONVENTION
    from geoseg.report import iou_bar_figure

    # truth: classes 0 and 1; class 1 never predicted right (IoU 0); class 2 only predicted; class 3 absent
    cm = ConfusionMatrix(4)
    cm.update(np.array([0, 0, 2, 2]), np.array([0, 0, 1, 1]))
    rep = cm.report(["hit", "zero", "only_predicted", "absent"])
    assert [c.iou for c in rep.classes][:3] == [1.0, 0.0, 0.0] and np.isnan(rep.classes[3].iou)
    assert rep.miou == pytest.approx(1 / 3)  # the absent class is left out, the predicted-only one counts 0
    assert "absent from the truth but predicted scores IoU 0" in MIOU_CONVENTION
    table = rep.format_table()
    assert MIOU_CONVENTION[1:] in table and "(absent from truth, predicted)" in table and "(absent)" in table
    paths = write_report(rep, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["miou_convention"] == MIOU_CONVENTION
    assert [c["status"] for c in data["classes"]] == ["scored", "scored", "absent_from_truth", "absent"]
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["status"] for r in rows] == ["scored", "scored", "absent_from_truth", "absent"]
    assert MIOU_CONVENTION[1:] in paths["md"].read_text() and MIOU_CONVENTION[1:] in paths["html"].read_text()
    # the bar chart: an absent class is a hatched outline labelled "absent"; a 0.000 class keeps its value label
    ax = iou_bar_figure(rep).axes[0]
    bars = {p.get_gid(): p for p in ax.patches}
    assert bars["absent"].get_hatch() == "//" and bars["absent"].get_height() == 1.0
    assert bars["absent_from_truth"].get_facecolor() != bars["scored"].get_facecolor()
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["1.000", "0.000", "0.000", "absent"]
    help_text = CliRunner().invoke(cli, ["evaluate", "--help"]).output
    assert "absent from the truth but predicted" in " ".join(help_text.split())
