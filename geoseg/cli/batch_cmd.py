"""`geoseg batch`: many rasters (or huge ones, in regions) on a Dask cluster, resumable."""

from __future__ import annotations

import sys
from typing import Any

import click

from geoseg.cli.common import (
    cache_mb_option,
    check_option_pairs,
    echo_json,
    echo_status,
    handle_errors,
    progress_display,
    progress_option,
)
from geoseg.distributed.cluster import CLUSTERS


def _parse_cluster_options(items: tuple[str, ...], cluster: str | None = None) -> dict[str, Any]:
    from geoseg.distributed import parse_cluster_options

    return parse_cluster_options(items, cluster=cluster)


@click.command("batch")
@click.argument("inputs", nargs=-1)
@click.option("-m", "--model", "checkpoint", required=True, type=click.Path(dir_okay=False), help="Model checkpoint.")
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--manifest",
    "manifests",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Text/CSV list of rasters ('raster[,truth]' per line); repeatable.",
)
@click.option("--scheduler", default=None, help="Address of a running Dask scheduler (tcp://HOST:8786).")
@click.option(
    "--cluster",
    type=click.Choice(CLUSTERS),
    default="local",
    show_default=True,
    help="Cluster to start when no --scheduler is given.",
)
@click.option("--workers", type=int, default=None, help="Worker processes (local) or jobs (slurm/pbs).")
@click.option(
    "--cluster-option",
    "cluster_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra cluster argument, e.g. cores=8, memory=32GB, queue=gpu, walltime=04:00:00; repeatable. List options "
    "(job_extra_directives=--gres=gpu:1, worker_extra_args, job_script_prologue) take one entry per repetition or a "
    "JSON list.",
)
@click.option(
    "--worker-timeout",
    type=click.FloatRange(min=0),
    default=600,
    show_default=True,
    help="Seconds to wait for Dask workers to join (and to come back if all leave); 0 waits forever.",
)
@click.option("--region-size", type=int, default=4096, show_default=True, help="Region edge in pixels (one task).")
@click.option("--tile", type=int, default=None, help="Tile size in pixels (default: the model's).")
@click.option("--overlap", type=int, default=None, help="Overlap between tiles in pixels (default: the model's).")
@click.option("--batch-size", type=int, default=None, help="Tiles per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda (on the workers).")
@cache_mb_option
@click.option("--bands", default=None, help="Raster bands for the model inputs, in model order.")
@click.option(
    "--truth-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of truth rasters (same file name or stem as each input): per-class IoU report.",
)
@click.option("--cog", is_flag=True, help="Also write one Cloud-Optimized GeoTIFF per scene.")
@click.option("--retries", type=int, default=3, show_default=True, help="Attempts per failed task.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Recompute everything and remove the files an earlier run recorded for these scenes (default: resume).",
)
@progress_option
@handle_errors
def batch_command(
    inputs: tuple[str, ...],
    checkpoint: str,
    out_dir: str,
    manifests: tuple[str, ...],
    scheduler: str | None,
    cluster: str,
    workers: int | None,
    cluster_options: tuple[str, ...],
    worker_timeout: float,
    region_size: int,
    tile: int | None,
    overlap: int | None,
    batch_size: int | None,
    device: str,
    cache_mb: float | None,
    bands: str | None,
    truth_dir: str | None,
    cog: bool,
    retries: int,
    as_json: bool,
    overwrite: bool,
    progress_kind: str,
) -> None:
    """Segment INPUTS (files, quoted globs or .txt/.csv manifests) into OUT_DIR on a Dask cluster.

    Each scene is cut into regions of whole tiles (one task each); outputs are one file per region, a VRT mosaic per
    scene (and a COG with --cog). Re-running the same command resumes after a crash. A scene that fails (unreadable,
    truth missing, tasks failing) fails alone: the summary lists it with its reason and the exit status is 1; bad
    options, or inputs so bad that no scene can start, exit with 2.
    """
    from geoseg.distributed import BatchTaskError, NoInputsError, run_batch

    jobs = [*inputs, *manifests]
    if not jobs:
        raise NoInputsError("no inputs: give raster paths, a quoted glob ('scenes/*.tif') or --manifest FILE")
    check_option_pairs(
        conflicts={
            "cluster": ("scheduler", "--cluster starts a cluster; --scheduler uses a running one"),
            "workers": ("scheduler", "the running scheduler's workers are used as they are"),
            "cluster_options": ("scheduler", "they configure a cluster that geoseg starts"),
        }
    )

    def show_dashboard(client: Any) -> None:
        # with the progress bar only, and on stdout: stderr stays for the one line of an error
        link = getattr(client, "dashboard_link", None)
        if link and progress_kind == "bar" and not as_json:
            click.echo(f"Dask dashboard: {link}")

    def show(message: str) -> None:
        echo_status(message)

    failure: BatchTaskError | None = None
    with progress_display(progress_kind, "batch", unit="task") as progress:
        try:
            result = run_batch(
                jobs,
                model=checkpoint,
                out_dir=out_dir,
                scheduler=scheduler,
                cluster=cluster,
                workers=workers,
                cluster_kwargs=_parse_cluster_options(cluster_options, cluster),
                region_size=region_size,
                tile=tile,
                overlap=overlap,
                batch_size=batch_size,
                device=device,
                cache_mb=cache_mb,
                bands=bands,
                truth=truth_dir,
                cog=cog,
                retries=retries,
                overwrite=overwrite,
                progress=progress,
                on_client=show_dashboard,
                on_message=show,
                worker_timeout=worker_timeout or None,
            )
        except BatchTaskError as exc:
            if exc.result is None:
                raise
            failure, result = exc, exc.result
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(result.format_summary())
        click.echo(f"summary: {result.summary}")
    if failure is not None:
        echo_status(f"Error: {failure}")
        # 2 when no scene could even start (every input bad), as for any bad input; 1 when some scenes failed
        nothing_started = not result.scenes and all(f.stage in ("input", "plan") for f in result.failed)
        sys.exit(2 if nothing_started else 1)
