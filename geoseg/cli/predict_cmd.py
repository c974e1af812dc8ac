"""`geoseg predict`."""

from __future__ import annotations

import contextlib
from typing import Any

import click

from geoseg.cli.common import (
    cache_mb_option,
    check_option_pairs,
    emit_result,
    handle_errors,
    json_option,
    progress_display,
    progress_option,
    tune_cpu_allocator,
)
from geoseg.cli.evaluate_cmd import PostProcessing
from geoseg.inference.stitch import STITCH_METHODS
from geoseg.inference.writer import PROB_DTYPES
from geoseg.models.device import DEVICES


@click.command("predict")
@click.argument("raster", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("-m", "--model", "checkpoint", required=True, type=click.Path(dir_okay=False), help="Model checkpoint.")
@click.option(
    "--bands", default=None, help="Raster bands for the model inputs, in model order: '1,2,3', '2-5', 'B04,B08'."
)
@click.option("--tile", type=int, default=None, help="Tile size in pixels (default: the model's).")
@click.option("--overlap", type=int, default=None, help="Overlap between tiles in pixels (default: the model's).")
@click.option("--batch-size", type=int, default=None, help="Tiles per forward pass (default: from free GPU memory).")
@click.option("--device", default="auto", show_default=True, help=f"{', '.join(DEVICES)} or cuda:N.")
@click.option("--stitch", type=click.Choice(list(STITCH_METHODS)), default="center", show_default=True)
@click.option("--probabilities", type=click.Path(dir_okay=False), default=None, help="Also write class probabilities.")
@click.option("--prob-dtype", type=click.Choice(PROB_DTYPES), default="uint8", show_default=True)
@click.option("--nodata", type=float, default=None, help="Override the input nodata value.")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Reader threads (default: one per core with a GPU, at most 32; 0 on CPU, reading between forward passes).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads for torch. [default: the cores this process may use that are not already busy]",
)
@cache_mb_option
@click.option("--no-amp", is_flag=True, help="Disable bf16 autocast on GPU.")
@click.option("--crf", is_flag=True, help="Refine probabilities with the convolutional CRF (use overlap >= 8).")
@click.option("--tta", is_flag=True, help="Average each tile over its 8 flips and 90-degree rotations (8x the cost).")
@click.option("--vector", type=click.Path(dir_okay=False), default=None, help="Also vectorize classes to this file.")
@click.option("--truth", type=click.Path(dir_okay=False), default=None, help="Ground truth raster/vector to evaluate.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None, help="Report directory.")
@click.option("--class-field", default=None, help="Class attribute of vector ground truth.")
@click.option("--truth-layer", default=None, help="Layer of polygon truth in a file with several layers.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@progress_option
@json_option
@handle_errors
def predict_command(
    raster: str,
    output: str,
    checkpoint: str,
    bands: str | None,
    tile: int | None,
    overlap: int | None,
    batch_size: int | None,
    device: str,
    stitch: str,
    probabilities: str | None,
    prob_dtype: str,
    nodata: float | None,
    workers: int | None,
    threads: int | None,
    cache_mb: float | None,
    no_amp: bool,
    crf: bool,
    tta: bool,
    vector: str | None,
    truth: str | None,
    report_dir: str | None,
    class_field: str | None,
    truth_layer: str | None,
    overwrite: bool,
    progress_kind: str,
    as_json: bool,
) -> None:
    """Segment RASTER with a model into a class map OUTPUT (GeoTIFF on the same grid).

    With --vector, --truth and --report, the polygons and the report are made from the class map in the same run;
    every input and output is checked before prediction starts, and the outputs appear together at the end, or
    none of them (an error or Ctrl-C leaves nothing, and replaces nothing).
    """
    from geoseg.inference.predict import predict_raster

    check_option_pairs(
        requires={
            "report_dir": ("truth", "the report scores the class map against ground truth"),
            "class_field": ("truth", "it names the class attribute of polygon ground truth"),
            "truth_layer": ("truth", "it names the layer of polygon ground truth"),
            "prob_dtype": ("probabilities", "it is the data type of the probability raster"),
        }
    )
    plan = PostProcessing.plan(
        output,
        raster=raster,
        checkpoint=checkpoint,
        probabilities=probabilities,
        vector=vector,
        truth=truth,
        report_dir=report_dir,
        overwrite=overwrite,
        class_field=class_field,
        truth_layer=truth_layer,
    )
    tune_cpu_allocator(device)
    with plan.outputs:
        with progress_display(progress_kind, "predict") as progress:
            result = predict_raster(
                raster,
                plan.outputs.stage(output),
                model=checkpoint,
                bands=bands,
                tile=tile,
                overlap=overlap,
                batch_size=batch_size,
                device=device,
                stitch=stitch,
                probabilities=plan.outputs.stage(probabilities) if probabilities else None,
                prob_dtype=prob_dtype,
                nodata=nodata,
                workers=workers,
                threads=threads,
                cache_mb=cache_mb,
                amp=not no_amp,
                crf=crf,
                tta=tta,
                overwrite=True,  # staged names: the checks against existing outputs were made above
                progress=progress,
            )
        summary = predict_summary(result) if as_json else {}
        if not as_json:
            click.echo(
                f"predicted {result.tiles} tiles ({result.tiles_skipped} all-nodata skipped, "
                f"{result.mpix_per_s:.2f} MPix/s on {result.device})"
            )
        summary |= plan.run(
            result.output,
            probabilities=result.probabilities,
            class_field=class_field,
            truth_layer=truth_layer,
            progress_kind=progress_kind,
            quiet=as_json,
        )
    if as_json:
        # the staged names are published now: report the final ones
        summary["output"] = str(plan.output)
        summary["probabilities"] = str(probabilities) if probabilities else None

    def text() -> None:
        for path in plan.outputs.paths:
            click.echo(f"wrote {path}")

    emit_result(as_json, summary, text)


def predict_summary(result: Any) -> dict[str, Any]:
    """``geoseg predict --json``: the :class:`~geoseg.inference.predict.PredictResult`, the class raster's legend
    (:func:`geoseg.io.tags.class_legend`: names, colors, nodata) and the model's architecture and bands as written on
    the class raster, as plain data."""
    from geoseg.io.read import open_dataset
    from geoseg.io.tags import class_legend

    with contextlib.closing(open_dataset(result.output)) as ds:
        legend = class_legend(ds)
        tags = ds.tags()
    model = {"arch": tags.get("geoseg_model"), "bands": [b for b in tags.get("geoseg_bands", "").split(",") if b]}
    return {
        "output": result.output,
        "probabilities": result.probabilities,
        "tiles": result.tiles,
        "tiles_skipped": result.tiles_skipped,
        "pixels": result.pixels,
        "seconds": result.seconds,
        "mpix_per_s": result.mpix_per_s,
        "device": result.device,
        "class_counts": dict(result.class_counts),
        "legend": legend,
        "model": model,
    }
