"""`geoseg evaluate`."""

from __future__ import annotations

import os

import click

from geoseg.cli.common import handle_errors, progress_display, progress_option
from geoseg.cli.vectorize_cmd import split_classes


@click.command("evaluate")
@click.argument("prediction", type=click.Path(dir_okay=False))
@click.argument("truth", type=click.Path(dir_okay=False))
@click.option("--classes", default=None, help="Comma-separated class names (index = id) or the number of classes.")
@click.option("--ignore-index", type=int, default=None, help="Truth class id left out of the scores.")
@click.option("--class-field", default=None, help="Class attribute of polygon ground truth (ids or class names).")
@click.option(
    "--background", type=int, default=None, help="Class id for pixels no label polygon covers (default: not evaluated)."
)
@click.option("--aoi", type=click.Path(dir_okay=False), default=None, help="Polygons restricting the evaluation.")
@click.option("--layer", "truth_layer", default=None, help="Layer of polygon truth in a file with several layers.")
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
@progress_option
@handle_errors
def evaluate_command(
    prediction: str,
    truth: str,
    classes: str | None,
    ignore_index: int | None,
    class_field: str | None,
    background: int | None,
    aoi: str | None,
    truth_layer: str | None,
    aoi_layer: str | None,
    report_dir: str | None,
    formats: str,
    window: int,
    progress_kind: str,
) -> None:
    """Score PREDICTION (class raster) against TRUTH (class raster or label polygons) and print per-class IoU.

    IoU = TP / (TP + FP + FN) per class; mIoU is the mean over classes present in the truth or the prediction: a
    class absent from the truth but predicted scores IoU 0, a class absent from both is n/a and left out of the mean.
    """
    from geoseg.evaluation import evaluate
    from geoseg.report import REPORT_FORMATS, write_report

    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    bad = [f for f in fmts if f.lower().lstrip(".") not in (*REPORT_FORMATS, "markdown")]
    if bad:
        raise click.BadParameter(
            f"unsupported report format(s) {bad}; choose from {', '.join(REPORT_FORMATS)}", param_hint="--format"
        )
    with progress_display(progress_kind, "evaluate", unit="window") as progress:
        report = evaluate(
            prediction,
            truth,
            classes=split_classes(classes),
            ignore_index=ignore_index,
            aoi=aoi,
            truth_class_field=class_field,
            background=background,
            window=window,
            progress=progress,
            truth_layer=truth_layer,
            aoi_layer=aoi_layer,
        )
    click.echo(report.format_table())
    if report_dir:
        for path in write_report(report, report_dir, formats=fmts).values():
            click.echo(f"wrote {path}")


def vectorize_and_evaluate(
    class_raster: str | os.PathLike[str],
    *,
    vector: str | None = None,
    truth: str | None = None,
    report_dir: str | None = None,
    class_field: str | None = None,
    probabilities: str | os.PathLike[str] | None = None,
    classes: list[str] | None = None,
    overwrite: bool = False,
    progress_kind: str = "bar",
) -> None:
    """`geoseg predict --vector --truth --report` post-processing: vectorize, evaluate, print the table, write files."""
    if vector:
        from geoseg.vectorization import vectorize

        with progress_display(progress_kind, "vectorize", unit="window") as progress:
            res = vectorize(
                class_raster,
                vector,
                classes=classes,
                probabilities=probabilities,
                overwrite=overwrite,
                progress=progress,
            )
        click.echo(f"wrote {res.features} polygons to {res.path}")
    if truth:
        from geoseg.evaluation import evaluate
        from geoseg.report import write_report

        with progress_display(progress_kind, "evaluate", unit="window") as progress:
            report = evaluate(class_raster, truth, classes=classes, truth_class_field=class_field, progress=progress)
        click.echo(report.format_table())
        if report_dir:
            for path in write_report(report, report_dir, overwrite=overwrite).values():
                click.echo(f"wrote {path}")
