"""`geoseg vectorize`."""

from __future__ import annotations

from typing import Any

import click

from geoseg.cli.common import emit_result, handle_errors, json_option, progress_display, progress_option
from geoseg.vectorization import CONNECTIVITIES


def split_classes(value: str | None) -> list[str] | None:
    """``"water,forest,urban"`` -> names; an integer -> that many classes named by id. An empty ``--classes ""`` is
    passed on as one empty name, which the library refuses (:func:`geoseg.options.check_class_names`) as for
    ``train``: it never silently means "no names"."""
    if value is None:
        return None
    if value.strip().isdigit():
        return [str(i) for i in range(int(value))]
    return [v.strip() for v in value.split(",")]


@click.command("vectorize")
@click.argument("class_raster", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option(
    "--min-area",
    type=float,
    default=0.0,
    show_default=True,
    help="Drop polygons smaller than this (square map units of the raster CRS).",
)
@click.option(
    "--simplify",
    type=float,
    default=0.0,
    show_default=True,
    help="Simplification tolerance in map units (0: exact pixel outlines).",
)
@click.option(
    "--connectivity",
    type=click.Choice([str(c) for c in CONNECTIVITIES]),
    default=str(CONNECTIVITIES[0]),
    show_default=True,
    help="Pixels join by edges (4) or also by corners (8).",
)
@click.option("--crs", default=None, help="Write polygons in this CRS (e.g. EPSG:4326); default: the raster's.")
@click.option(
    "--probabilities",
    type=click.Path(dir_okay=False),
    default=None,
    help="Probability raster (one band per class) to add each polygon's mean class probability.",
)
@click.option("--classes", default=None, help="Comma-separated class names (default: stored on the raster).")
@click.option("--window", type=int, default=2048, show_default=True, help="Processing window in pixels.")
@click.option("--layer", default=None, help="Layer name (GeoPackage/FlatGeobuf).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@progress_option
@json_option
@handle_errors
def vectorize_command(
    class_raster: str,
    out: str,
    min_area: float,
    simplify: float,
    connectivity: str,
    crs: str | None,
    probabilities: str | None,
    classes: str | None,
    window: int,
    layer: str | None,
    overwrite: bool,
    progress_kind: str,
    as_json: bool,
) -> None:
    """Turn CLASS_RASTER into polygons in OUT (.gpkg, .geojson, .fgb, .shp, .parquet), window by window."""
    from geoseg.vectorization import vectorize

    with progress_display(progress_kind, "vectorize", unit="window") as progress:
        res = vectorize(
            class_raster,
            out,
            classes=split_classes(classes),
            min_area=min_area,
            simplify=simplify,
            connectivity=int(connectivity),
            crs=crs,
            probabilities=probabilities,
            window=window,
            overwrite=overwrite,
            progress=progress,
            layer=layer,
        )
    per_class = ", ".join(f"{k}: {v}" for k, v in sorted(res.per_class.items()))
    emit_result(
        as_json,
        vectorize_summary(res),
        lambda: click.echo(
            f"wrote {res.features} polygons to {res.path} ({res.driver}){' — ' + per_class if per_class else ''}"
        ),
    )


def vectorize_summary(res: Any) -> dict[str, Any]:
    """``geoseg vectorize --json``: the :class:`~geoseg.vectorization.VectorizeResult` as plain data."""
    return {
        "output": res.path,
        "driver": res.driver,
        "features": res.features,
        "crs": res.crs,
        "per_class": dict(res.per_class),
    }
