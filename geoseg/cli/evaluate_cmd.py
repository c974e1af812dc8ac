"""`geoseg evaluate`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from geoseg.cli.common import (
    check_option_pairs,
    emit_result,
    handle_errors,
    json_option,
    progress_display,
    progress_option,
)
from geoseg.cli.vectorize_cmd import split_classes, vectorize_summary
from geoseg.io.outputs import OutputSet, check_input_files


@click.command("evaluate")
@click.argument("prediction", type=click.Path(dir_okay=False))
@click.argument("truth", type=click.Path(dir_okay=False))
@click.option("--classes", default=None, help="Comma-separated class names (index = id) or the number of classes.")
@click.option("--ignore-index", type=int, default=None, help="Truth class id left out of the scores.")
@click.option("--class-field", default=None, help="Class attribute of polygon ground truth (ids or class names).")
@click.option(
    "--id-field", default=None, help="Attribute of polygon ground truth holding the ids of a --class-field of names."
)
@click.option(
    "--background", type=int, default=None, help="Class id for pixels no label polygon covers (default: not evaluated)."
)
@click.option("--aoi", type=click.Path(dir_okay=False), default=None, help="Polygons restricting the evaluation.")
@click.option(
    "--truth-layer",
    "--layer",
    "truth_layer",
    default=None,
    help="Layer of polygon truth in a file with several layers.",
)
@click.option("--aoi-layer", default=None, help="Layer of the --aoi file when it has several layers.")
@click.option("--report-dir", type=click.Path(file_okay=False), default=None, help="Write report files here.")
@click.option(
    "--format",
    "formats",
    default="json,csv,md,html",
    show_default=True,
    help="Report formats, comma-separated (json, csv, md, html).",
)
@click.option("--window", type=int, default=1024, show_default=True, help="Processing window in pixels.")
@click.option("--overwrite", is_flag=True, help="Replace existing report files.")
@progress_option
@json_option
@handle_errors
def evaluate_command(
    prediction: str,
    truth: str,
    classes: str | None,
    ignore_index: int | None,
    class_field: str | None,
    id_field: str | None,
    background: int | None,
    aoi: str | None,
    truth_layer: str | None,
    aoi_layer: str | None,
    report_dir: str | None,
    formats: str,
    window: int,
    overwrite: bool,
    progress_kind: str,
    as_json: bool,
) -> None:
    """Score PREDICTION (class raster) against TRUTH (class raster or label polygons) and print per-class IoU.

    IoU = TP / (TP + FP + FN) per class; mIoU is the mean over classes present in the truth or the prediction: a
    class absent from the truth but predicted scores IoU 0, a class absent from both is n/a and left out of the mean.
    """
    from geoseg.evaluation import evaluate
    from geoseg.report import report_paths, write_report

    check_option_pairs(requires={"formats": ("report_dir", "it chooses the formats of the report files")})
    outputs = OutputSet({prediction: "prediction", truth: "ground truth", aoi: "area of interest"}, overwrite=overwrite)
    files: dict[str, Path] = {}
    if report_dir:
        files = report_paths(report_dir, formats=[f.strip() for f in formats.split(",") if f.strip()])
        outputs.add_folder(report_dir, "report", files=[p.name for p in files.values()])
    with outputs:
        with progress_display(progress_kind, "evaluate", unit="window") as progress:
            report = evaluate(
                prediction,
                truth,
                classes=split_classes(classes),
                ignore_index=ignore_index,
                aoi=aoi,
                truth_class_field=class_field,
                truth_id_field=id_field,
                background=background,
                window=window,
                progress=progress,
                truth_layer=truth_layer,
                aoi_layer=aoi_layer,
            )
        if report_dir:
            write_report(report, outputs.stage(report_dir), formats=list(files), overwrite=True)

    def text() -> None:
        click.echo(report.format_table())
        for path in files.values():
            click.echo(f"wrote {path}")

    emit_result(as_json, {"report": report.to_dict(), "files": {k: str(v) for k, v in files.items()}}, text)


@dataclass
class PostProcessing:
    """The steps of `geoseg predict` after the class map (polygons, evaluation, report), planned before prediction
    starts: every input checked and every output declared in one :class:`~geoseg.io.outputs.OutputSet`, which the
    class map and probabilities join, so that all appear together or none does."""

    outputs: OutputSet
    output: Path
    vector: str | None
    truth: str | None
    report_dir: str | None

    @classmethod
    def plan(
        cls,
        output: str,
        *,
        raster: str,
        checkpoint: str,
        probabilities: str | None,
        vector: str | None,
        truth: str | None,
        report_dir: str | None,
        overwrite: bool,
        class_field: str | None = None,
        truth_layer: str | None = None,
    ) -> PostProcessing:
        """Check the inputs of the later steps and declare every output (raises before any work, see OutputSet);
        ground truth is checked against the raster's grid (:func:`geoseg.evaluation.check_truth`: readable, with
        classes, overlapping), so truth that cannot be scored is refused before the prediction is made."""
        from geoseg.io.formats import COMPANION_SUFFIXES, raster_driver, vector_driver
        from geoseg.report import report_paths

        if truth:
            check_input_files({truth: "ground truth"})
        driver = vector_driver(vector) if vector else ""
        outputs = OutputSet({raster: "input raster", checkpoint: "model", truth: "ground truth"}, overwrite=overwrite)
        path = outputs.add(output, "class raster")
        raster_driver(output, what="class raster")  # after the input check: an input named as output is told so
        if probabilities:
            outputs.add(probabilities, "probability raster")
            raster_driver(probabilities, what="probability raster")
        if vector:
            outputs.add(vector, "polygon file", companions=COMPANION_SUFFIXES.get(driver, ()))
        if report_dir:
            files = [p.name for p in report_paths(report_dir).values()]
            outputs.add_folder(report_dir, "report", files=files)
        if truth:
            from geoseg.errors import GeoSegError
            from geoseg.evaluation import check_truth
            from geoseg.models import read_config

            try:
                classes: list[str] | None = list(read_config(checkpoint).classes)
            except GeoSegError:  # a model it cannot read is refused by prediction, with its own words
                classes = None
            check_truth(truth, raster, classes=classes, truth_class_field=class_field, truth_layer=truth_layer)
        return cls(outputs, path, vector, truth, report_dir)

    def run(
        self,
        class_raster: str | os.PathLike[str],
        *,
        probabilities: str | os.PathLike[str] | None = None,
        class_field: str | None = None,
        truth_layer: str | None = None,
        classes: list[str] | None = None,
        progress_kind: str = "bar",
        quiet: bool = False,
    ) -> dict[str, Any]:
        """Vectorize and evaluate the (staged) class raster into the staged outputs; print the table (unless
        ``quiet``). Returns what was done as plain data: ``{"vector": {...}, "report": {...}, "files": {...}}`` (keys
        of the steps that ran; paths are the final names)."""
        done: dict[str, Any] = {}
        if self.vector:
            from geoseg.vectorization import vectorize

            with progress_display(progress_kind, "vectorize", unit="window") as progress:
                res = vectorize(
                    class_raster,
                    self.outputs.stage(self.vector),
                    classes=classes,
                    probabilities=probabilities,
                    overwrite=True,
                    progress=progress,
                )
            done["vector"] = vectorize_summary(res) | {"output": str(self.vector)}
            if not quiet:
                click.echo(f"made {res.features} polygons")
        if self.truth:
            from geoseg.evaluation import evaluate
            from geoseg.report import report_paths, write_report

            with progress_display(progress_kind, "evaluate", unit="window") as progress:
                report = evaluate(
                    class_raster,
                    self.truth,
                    classes=classes,
                    truth_class_field=class_field,
                    truth_layer=truth_layer,
                    progress=progress,
                    model_classes=True,
                )
            report.extra["prediction"] = str(self.output)
            done["report"] = report.to_dict()
            if not quiet:
                click.echo(report.format_table())
            if self.report_dir:
                write_report(report, self.outputs.stage(self.report_dir), overwrite=True)
                done["files"] = {k: str(v) for k, v in report_paths(self.report_dir).items()}
        return done
