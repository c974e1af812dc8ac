"""run_batch: many scenes, or huge scenes cut into regions, predicted on a Dask cluster; resumable.

What a run writes into its output folder, and in which order:

1. ``geoseg-batch.lock``: one run per folder (:class:`geoseg.io.lock.FolderLock`); a second run is refused.
2. Nothing is written before every output name (region files, VRT, COG, summary, manifest, lock, and with
   ``overwrite`` every file of the previous configuration to be removed) has been checked against every input
   (rasters, truth, jobs manifests, checkpoint): an input is never replaced, whatever the options.
3. Region files: ``<scene>/<region>.tif``, one task each, recorded in ``geoseg-batch.jsonl`` as "writing" before
   they are submitted and "done" (with sha256) when finished.
4. Finishing steps per scene (VRT, COG with its overviews) and the JSON summary: each published atomically between a
   "writing" and a "done" record, so that a run killed between two steps is repaired by the next run.

A scene that cannot be read, lacks its truth, or whose tasks fail after all retries fails alone: the others finish,
the summary lists every failed scene with its reason, and :class:`BatchTaskError` (carrying the result) is raised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.distributed.cluster import (
    ClientHandle,
    check_cluster_options,
    cpu_budget,
    make_client,
    requests_gpus,
    torch_threads_per_task,
    visible_gpus,
)
from geoseg.distributed.errors import BatchTaskError, NoWorkersError, SchedulerLostError
from geoseg.distributed.jobs import Job, JobsLike, TruthLike, resolve_jobs
from geoseg.distributed.manifest import MANIFEST_NAME, Manifest, sha256_file
from geoseg.distributed.mosaic import build_cog, build_vrt
from geoseg.distributed.regions import RegionTask, file_fingerprint, plan_regions
from geoseg.distributed.report import WorkerStats, combined_report, scene_report
from geoseg.errors import (
    CancelledError,
    GeoSegError,
    InputNotFoundError,
    InvalidParameterError,
    OutputExistsError,
)
from geoseg.hints import option, placeholder
from geoseg.io.lock import FolderLock
from geoseg.io.write import atomic_path, check_outputs_not_inputs, parse_temporary
from geoseg.metrics import SegmentationReport
from geoseg.models.device import check_device
from geoseg.options import BOUNDS, Bound, check_number, check_numbers, plain_arguments
from geoseg.progress import ProgressCallback, report_progress
from geoseg.tiling import TileGrid

SUMMARY_NAME = "geoseg-batch-summary.json"
LOCK_NAME = "geoseg-batch.lock"
WORKER_TIMEOUT_S = 600.0
_POLL_S = 0.05
_LOST = "lost the connection to the Dask scheduler at"
_HEALTH_S = 2.0
# seconds to wait for the result of a future reported complete: a result lost with its worker after completion makes
# the future pending again, and a blocking wait would then hang until a worker computes it (never, if none is left)
_RESULT_WAIT_S = 5.0
_PENDING_AGAIN = object()


def _completed_result(fut: Any, wait_s: float) -> Any:
    """The result of a Dask future that ``as_completed`` reported complete, or :data:`_PENDING_AGAIN` when it is
    pending again: its result was lost with its worker in between, and the scheduler will compute it again when a
    worker is there. Waits at most ``wait_s`` seconds, so the caller's checks for lost workers keep running.

    Raises:
        BaseException: the task's own error, or the cancellation of the future.
    """
    try:
        return fut.result(timeout=wait_s)
    except TimeoutError:  # distributed raises the builtin on a timeout; a task's own TimeoutError leaves it done
        if not fut.done():
            return _PENDING_AGAIN
        raise


def _fix() -> str:
    return f"choose another output folder ({option('out_dir')})"


@dataclass
class SceneFailure:
    """A scene that did not finish: its name, raster, the stage that failed and why (one line)."""

    name: str
    src: Path
    stage: str  # "input", "plan", "compute", "mosaic", "report"
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "src": str(self.src), "stage": self.stage, "reason": self.reason}


@dataclass
class SceneResult:
    name: str
    src: Path
    mosaic: Path | None
    cog: Path | None
    regions: list[Path]
    tasks: int
    skipped: int
    pixels: int
    truth: Path | None = None
    report: SegmentationReport | None = None


@dataclass
class BatchResult:
    """Outputs, failures, accuracy (when truth was given) and throughput of a batch run."""

    scenes: list[SceneResult]
    workers: dict[str, WorkerStats]
    tasks: int
    skipped: int
    pixels_computed: int
    seconds: float
    manifest: Path
    summary: Path
    report: SegmentationReport | None = None
    dashboard_link: str | None = None
    failed: list[SceneFailure] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mpix_per_s(self) -> float:
        return self.pixels_computed / 1e6 / self.seconds if self.seconds > 0 else float("nan")

    @property
    def computed(self) -> int:
        """Tasks computed by this run (the others were resumed, failed or not computed)."""
        return sum(w.tasks for w in self.workers.values())

    def format_summary(self) -> str:
        n_scenes = len({s.name for s in self.scenes} | {f.name for f in self.failed})
        left = self.tasks - self.computed - self.skipped
        lines = [
            f"{n_scenes} scene(s), {self.tasks} task(s): {self.computed} computed, {self.skipped} resumed from the "
            f"manifest{f', {left} failed or not computed' if left else ''}; {self.pixels_computed / 1e6:.2f} MPix in "
            f"{self.seconds:.1f} s ({self.mpix_per_s:.2f} MPix/s)"
        ]
        for w in sorted(self.workers.values(), key=lambda s: s.address):
            lines.append(
                f"  worker {w.address}: {w.tasks} task(s), {w.pixels / 1e6:.2f} MPix, {w.seconds:.1f} s busy, "
                f"{w.mpix_per_s:.2f} MPix/s"
            )
        for s in self.scenes:
            miou = f", mIoU {s.report.miou:.3f}" if s.report is not None else ""
            lines.append(f"  {s.name}: {s.cog or s.mosaic or s.regions[0].parent} ({len(s.regions)} region(s){miou})")
        if self.failed:
            lines.append(f"{len(self.failed)} scene(s) FAILED:")
            lines += [f"  FAILED {f.name} ({f.src}) at {f.stage}: {f.reason}" for f in self.failed]
        if self.report is not None:
            lines.append("combined accuracy:\n" + self.report.format_table())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "computed": self.computed,
            "skipped": self.skipped,
            "pixels_computed": self.pixels_computed,
            "seconds": round(self.seconds, 3),
            "mpix_per_s": round(self.mpix_per_s, 4) if self.seconds > 0 else None,
            "workers": {
                a: {
                    "tasks": w.tasks,
                    "pixels": w.pixels,
                    "seconds": round(w.seconds, 3),
                    "mpix_per_s": round(w.mpix_per_s, 4) if w.seconds > 0 else None,
                }
                for a, w in sorted(self.workers.items())
            },
            "scenes": [
                {
                    "name": s.name,
                    "src": str(s.src),
                    "mosaic": str(s.mosaic) if s.mosaic else None,
                    "cog": str(s.cog) if s.cog else None,
                    "regions": len(s.regions),
                    "tasks": s.tasks,
                    "skipped": s.skipped,
                    "pixels": s.pixels,
                    "truth": str(s.truth) if s.truth else None,
                    "report": s.report.to_dict() if s.report is not None else None,
                }
                for s in self.scenes
            ],
            "failed": [f.to_dict() for f in self.failed],
            "report": self.report.to_dict() if self.report is not None else None,
        }


@dataclass
class _Scene:
    job: Job
    grid: TileGrid
    tasks: list[RegionTask]

    @property
    def key(self) -> str:
        """The scene's configuration: model, options, input identity and region plan."""
        return hashlib.sha256("|".join(t.key for t in self.tasks).encode()).hexdigest()[:20]


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, GeoSegError) and text else f"{type(exc).__name__}: {text}".rstrip(": ")


def _plan(
    jobs: list[Job],
    checkpoint: Path,
    out_dir: Path,
    failures: list[SceneFailure],
    *,
    region_size: int,
    tile: int | None,
    overlap: int | None,
    batch_size: int | None,
    device: str,
    bands: Any,
    stitch: str,
    cache_mb: float | None = None,
) -> list[_Scene]:
    """Regions of every readable scene; a scene that cannot be planned is added to ``failures`` (the others go on).

    Raises:
        InvalidParameterError: an option that is wrong for the batch (e.g. a non-center stitch on a split scene).
    """
    import torch

    from geoseg.inference.bands import match_bands
    from geoseg.inference.predict import load_model, plan_grid
    from geoseg.io.read import RasterSource

    net, config = load_model(str(checkpoint), torch.device("cpu"))
    bands_n = tuple(bands) if isinstance(bands, list) else bands
    scenes = []
    for job in jobs:
        try:
            with RasterSource(job.src) as probe:  # fails early on unreadable rasters and unmatched bands
                match_bands(config, probe.descriptions, bands, path=str(job.src))
            grid = plan_grid(job.src, model=(net, config), tile=tile, overlap=overlap)
            regions = plan_regions(grid, region_size)
            fp = file_fingerprint(job.src, checkpoint)
        except InvalidParameterError:
            raise
        except Exception as exc:  # this scene fails alone
            failures.append(SceneFailure(job.name, job.src, "plan", _reason(exc)))
            continue
        if len(regions) > 1 and stitch != "center":
            raise InvalidParameterError(
                f"{job.src.name} is split into {len(regions)} regions, which needs stitch='center' (got {stitch!r}); "
                f"use stitch='center' or a region_size >= the scene size ({max(grid.shape)} px)"
            )
        tasks = []
        for reg in regions:
            if reg is None:
                origin, shape, rows, cols, fname = (0, 0), grid.shape, None, None, "scene.tif"
            else:
                sub = grid.restrict(*reg)
                origin, shape = sub.origin, sub.shape
                rows, cols = (reg[0].start, reg[0].stop), (reg[1].start, reg[1].stop)
                fname = f"r{rows[0]:05d}-{rows[1]:05d}_c{cols[0]:05d}-{cols[1]:05d}.tif"
            tasks.append(
                RegionTask(
                    scene=job.name,
                    src=str(job.src.resolve()),
                    dst=str(out_dir / job.name / fname),
                    checkpoint=str(checkpoint),
                    rows=rows,
                    cols=cols,
                    origin=(int(origin[0]), int(origin[1])),
                    shape=(int(shape[0]), int(shape[1])),
                    tile=tile,
                    overlap=overlap,
                    batch_size=batch_size,
                    device=device,
                    bands=bands_n,
                    stitch=stitch,
                    fingerprint=fp,
                    cache_mb=cache_mb,
                )
            )
        scenes.append(_Scene(job, grid, tasks))
    return scenes


def _decide_gpu(
    device: str, gpus_per_task: float | None, cluster: str, *, remote: bool, cluster_kwargs: dict[str, Any]
) -> bool | None:
    """Whether tasks ask for a GPU, decided for the workers: None = ask the workers once connected.

    ``device='auto'`` is never decided from the driver's own hardware unless the workers run on it (local cluster):
    on SLURM/PBS it follows the job request (``--gres=gpu``...), on an existing scheduler the workers' resources.
    """
    if gpus_per_task is not None:
        return gpus_per_task > 0
    if str(device).startswith("cuda"):
        return True
    if device != "auto":
        return False
    if remote:
        return None
    if cluster == "cuda":
        return True
    if cluster in ("slurm", "pbs"):
        return requests_gpus(cluster_kwargs)
    return bool(visible_gpus())


def _task_device(device: str, gpu: bool) -> str:
    """The device tasks run on: a GPU task with ``device='auto'`` runs on 'cuda' (fails loudly without CUDA)."""
    return "cuda" if gpu and device == "auto" else device


def _torch_threads(client: Any) -> dict[str, int] | None:
    """Intra-op threads per task for each worker CPU set (usable CPUs / tasks running at once on them)."""
    try:
        budgets = client.run(cpu_budget)
        nthreads = client.nthreads()
    except Exception:
        return None
    return torch_threads_per_task(budgets, nthreads) if budgets else None


def _client_has_gpus(client: Any) -> bool:
    with contextlib.suppress(Exception):
        workers = client.scheduler_info().get("workers", {})
        return any(w.get("resources", {}).get("GPU", 0) for w in workers.values())
    return False


def _check_gpu_workers(client: Any) -> None:
    workers = client.scheduler_info().get("workers", {})
    if workers and not any(w.get("resources", {}).get("GPU", 0) for w in workers.values()):
        raise InvalidParameterError(
            "tasks ask for resources={'GPU': 1} but no worker declares a GPU resource, so they would wait forever; "
            "start workers with --resources GPU=1 (dask_cuda/LocalCluster(resources=...)) or use device='cpu'"
        )


def _scheduler_address(client: Any) -> str:
    with contextlib.suppress(Exception):
        return str(client.scheduler.address)
    return "(unknown address)"


def _wait_for_workers(client: Any, timeout: float | None, say: Callable[[str], None]) -> None:
    """Return once the scheduler has a worker; raise NoWorkersError after ``timeout`` seconds (None: wait forever)."""
    if client.nthreads():
        return
    addr = _scheduler_address(client)
    limit = "no time limit" if timeout is None else f"up to {timeout:g} s"
    say(f"waiting for Dask workers to join the scheduler at {addr} ({limit}; {option('worker_timeout')})")
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError as exc:
        raise NoWorkersError(
            f"no Dask worker joined the scheduler at {addr} within {timeout:g} s; start workers (dask worker {addr}), "
            f"check that their jobs are running, or wait longer ({option('worker_timeout', placeholder('SECONDS'))}, "
            f"0 = no limit)"
        ) from exc


def _inputs(jobs: Iterable[Job], checkpoint: Path) -> dict[Path, str]:
    """Every file the batch reads, with what it is (for the output-versus-input check)."""
    inputs: dict[Path, str] = {checkpoint: "model checkpoint"}
    for j in jobs:
        if j.listed_in is not None:
            inputs.setdefault(j.listed_in, "jobs manifest")
        if j.truth is not None:
            inputs.setdefault(j.truth, f"truth raster of {j.name}")
        inputs.setdefault(j.src, "input raster")
    return inputs


def _planned_outputs(sc: _Scene, out: Path, *, mosaic: bool, cog: bool) -> dict[Path, str]:
    name = sc.job.name
    outputs = {Path(t.dst): f"region file of {name}" for t in sc.tasks}
    if mosaic or cog:
        outputs[out / f"{name}.vrt"] = f"VRT mosaic of {name}"
    if cog:
        outputs[out / f"{name}.tif"] = f"COG of {name}"
    return outputs


def _recorded_by_scene(manifest: Manifest) -> dict[str, dict[Path, dict[str, Any]]]:
    """Files the manifest records, by scene name and path (any configuration)."""
    found: dict[str, dict[Path, dict[str, Any]]] = {}
    for rec in manifest.records.values():
        if rec.get("kind") in ("task", "file") and rec.get("scene"):
            p = manifest.output_path(rec)
            if p is not None:
                found.setdefault(str(rec["scene"]), {})[p] = rec
        elif rec.get("kind") == "scene" and str(rec.get("key", "")).startswith("scene:"):
            name = str(rec["key"])[len("scene:") :]
            for k in ("vrt", "cog"):  # records written before "file" records existed
                if rec.get(k):
                    found.setdefault(name, {})[Path(rec[k])] = rec
    return found


def _recorded_paths(manifest: Manifest, names: set[str]) -> dict[Path, dict[str, Any]]:
    """Files the manifest records for scenes ``names`` (any configuration), by path."""
    by_scene = _recorded_by_scene(manifest)
    return {p: rec for name in names for p, rec in by_scene.get(name, {}).items()}


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
    except (ValueError, OSError):
        return False
    return True


def _check_ownership(manifest: Manifest, scenes: list[_Scene], planned: dict[str, dict[Path, str]]) -> None:
    """Without ``overwrite``: refuse to mix a scene with files of another configuration or with foreign files."""
    owners = manifest.by_output()
    by_scene = _recorded_by_scene(manifest)
    for sc in scenes:
        name = sc.job.name
        for path, rec in by_scene.get(name, {}).items():
            if rec.get("config") != sc.key and path.exists():
                raise OutputExistsError(
                    f"{path} belongs to an earlier run of scene {name} with another configuration (model, options "
                    f"such as region size, or the input changed); pass {option('overwrite', True)} to replace "
                    f"that run (its files are removed), or {_fix()}"
                )
        for path, what in planned[name].items():
            if path.exists() and path.resolve() not in owners:
                raise OutputExistsError(
                    f"{what} {path} exists but was not written by a geoseg batch run in this folder (no record in "
                    f"{manifest.path}); pass {option('overwrite', True)} to replace it, or {_fix()}"
                )


def _with_sidecars(path: Path) -> list[Path]:
    """A file and the sidecars GDAL may have written beside it (statistics, external overviews)."""
    return [path, Path(str(path) + ".aux.xml"), Path(str(path) + ".ovr")]


def _remove_previous(
    manifest: Manifest, scenes: list[_Scene], out: Path, to_remove: dict[Path, dict[str, Any]]
) -> list[Path]:
    """``overwrite``: delete every file the manifest records for these scenes, then drop their records."""
    removed = []
    own = {(out / MANIFEST_NAME).resolve(), (out / LOCK_NAME).resolve()}
    for path in sorted(to_remove):
        for p in _with_sidecars(path):
            if _inside(p, out) and p.is_file() and p.resolve() not in own:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    names = {sc.job.name for sc in scenes}
    dropped = {f"scene:{n}" for n in names}
    keep = [
        r
        for r in manifest.records.values()
        if not (r.get("kind") in ("task", "file") and r.get("scene") in names) and r.get("key") not in dropped
    ]
    if len(keep) != len(manifest.records):
        manifest.rewrite(keep)
    return removed


def _cleanup_temporaries(folders: Iterable[Path], known: set[Path], inputs: dict[Path, str]) -> list[Path]:
    """Remove temporaries of atomic writes (and GDAL's sidecars such as ``.ovr.tmp``) that a killed run left beside
    its outputs. Only names derived from this batch's outputs are touched, and never an input."""
    protected = {p.resolve() for p in inputs}
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in folder.glob(".*.partial*"):
            parsed = parse_temporary(p.name)  # the owner does not matter: this run holds the folder's lock
            if parsed is None or (folder / parsed[0]).resolve() not in known or p.resolve() in protected:
                continue
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
    return removed


def _check_options(args: dict[str, Any]) -> None:
    """run_batch's options, before anything starts (see :mod:`geoseg.options`)."""
    check_device(args["device"])
    names = ("region_size", "tile", "overlap", "batch_size", "cache_mb", "retries", "worker_timeout")
    check_numbers({k: args[k] for k in names})
    # a local cluster starts one process per worker, each with a copy of the model: bounded like threads
    local = args["cluster"] == "local"
    high = BOUNDS["threads"].high if local else 100_000
    unit = "worker processes" if local else "jobs"
    check_number("workers", args["workers"], Bound(integer=True, low=1, high=high, unit=unit))
    if args["client"] is not None or args["scheduler"]:
        ignored = [
            option(k)
            for k, v in (("cluster", args["cluster"] != "local"), ("workers", args["workers"] is not None))
            if v
        ] + ([option("cluster_kwargs")] if args["cluster_kwargs"] else [])
        if ignored:
            given = "client" if args["client"] is not None else option("scheduler")
            raise InvalidParameterError(
                f"{', '.join(ignored)} configure a cluster that geoseg starts; with {given} the existing cluster is "
                f"used as it is: drop {', '.join(ignored)}"
            )
    else:
        check_cluster_options(args["cluster"], args["cluster_kwargs"] or {})


@plain_arguments
def run_batch(
    jobs: JobsLike,
    *,
    model: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    client: Any = None,
    scheduler: str | None = None,
    cluster: str = "local",
    workers: int | None = None,
    cluster_kwargs: dict[str, Any] | None = None,
    region_size: int = 4096,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    cache_mb: float | None = None,
    gpus_per_task: float | None = None,
    bands: Any = None,
    stitch: str = "center",
    truth: TruthLike = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    mosaic: bool = True,
    cog: bool = False,
    retries: int = 3,
    worker_timeout: float | None = WORKER_TIMEOUT_S,
    on_client: Callable[[Any], None] | None = None,
    on_message: Callable[[str], None] | None = None,
) -> BatchResult:
    """Predict many rasters (or huge ones, cut into regions of whole tiles) on a Dask cluster, resumably.

    Args:
        jobs: raster paths, a glob, or a text/CSV manifest (``raster[,truth]`` per line), or a list of those.
        model: checkpoint path, readable by every worker (shared filesystem); loaded once per worker.
        out_dir: outputs: ``<scene>/<region>.tif`` per task, ``<scene>.vrt`` mosaics, ``<scene>.tif`` COGs
            (``cog=True``), the resume manifest, a lock file while running, and a JSON summary. No output ever
            replaces an input: a folder where one would is refused, with or without ``overwrite``.
        client: an existing ``distributed.Client`` (left open). Otherwise ``scheduler`` (address) or ``cluster``
            (``local``, ``slurm``, ``pbs``, ``cuda``) with ``workers`` and ``cluster_kwargs`` (see
            :func:`geoseg.distributed.make_client`); a cluster started here is closed at the end.
        region_size: approximate region edge in pixels (rounded to whole tile cores); a region = one task.
        device: ``cpu``, ``cuda`` or ``auto``; ``auto`` is decided for the workers: GPUs of this machine for a local
            cluster, the job's GPU request on SLURM/PBS (``--gres=gpu:1`` in ``job_extra_directives``), the workers'
            ``GPU`` resources on an existing scheduler. Tasks that ask for a GPU run with ``cuda``.
        cache_mb: block-reuse budget of each task in MiB (see :func:`geoseg.inference.predict_raster`; default: 64
            on CPU workers, 1/8 of the worker host's available memory beside a GPU).
        gpus_per_task: GPU resource per task (default 1 when tasks run on a GPU, none on CPU).
        truth: truth rasters, as a folder (same file name or stem) or a ``{raster: truth}`` mapping; manifest
            truth columns take precedence. Gives per-scene and combined per-class IoU.
        overwrite: recompute everything; files the manifest records for these scenes from an earlier run (another
            region size, model or options) are removed first. Without it, finished tasks are reused and a folder
            holding another configuration's files, or files no batch run recorded, is refused.
        progress: ``(done, total, message)`` callback over tasks; returning True cancels.
        retries: extra attempts per task after an error; tasks of a dead worker are rescheduled by Dask.
        worker_timeout: seconds to wait for a first worker (and for workers to come back when all left during the
            run) before giving up with :class:`NoWorkersError`; None waits forever.
        on_client: called with the ``distributed.Client`` once it is up (e.g. to show ``client.dashboard_link``);
            not called when every task is already finished.
        on_message: called with one line for events a user should see (waiting for workers, a stale lock taken
            over, files of an earlier configuration removed).

    Raises:
        BatchTaskError: some scenes failed (``exc.result`` is the BatchResult; ``result.failed`` gives each scene's
            reason); the others finished and the summary was written. :class:`SchedulerLostError` (a subclass)
            when the connection to the scheduler was lost.
        NoWorkersError: no worker joined within ``worker_timeout``.
        OutputError: an output would replace an input. OutputLockedError: another run holds the folder.
        OutputExistsError: the folder holds another configuration's or unrecorded files (without ``overwrite``).
        InputNotFoundError, NoInputsError, ManifestError, InvalidParameterError: bad inputs or options.
    """
    t0 = time.perf_counter()
    checkpoint = Path(model)
    if not checkpoint.is_file():
        raise InputNotFoundError(f"model checkpoint not found: {checkpoint}")
    checkpoint = checkpoint.resolve()
    _check_options(locals())
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidParameterError(f"out_dir {out} is a file; give a folder")
    job_list = resolve_jobs(jobs, truth, scene_errors=True)
    inputs = _inputs(job_list, checkpoint)
    fixed = {out / MANIFEST_NAME: "resume manifest", out / LOCK_NAME: "lock file", out / SUMMARY_NAME: "summary"}
    check_outputs_not_inputs(fixed, inputs, fix=_fix())
    _check_band_selection(job_list, checkpoint, bands)
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    say = on_message or (lambda message: None)
    with FolderLock(out / LOCK_NAME, what="geoseg batch", on_message=say):
        return _run_locked(
            job_list,
            inputs,
            checkpoint,
            out,
            t0=t0,
            client=client,
            scheduler=scheduler,
            cluster=cluster,
            workers=workers,
            cluster_kwargs=dict(cluster_kwargs or {}),
            region_size=region_size,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            device=device,
            cache_mb=cache_mb,
            gpus_per_task=gpus_per_task,
            bands=bands,
            stitch=stitch,
            overwrite=overwrite,
            progress=progress,
            mosaic=mosaic or cog,
            cog=cog,
            retries=retries,
            worker_timeout=worker_timeout,
            on_client=on_client,
            say=say,
        )


def _check_band_selection(jobs: list[Job], checkpoint: Path, bands: Any) -> None:
    """An explicit band selection is one option for every scene: check it against the model and each readable
    scene (count, range, names) before the output folder or a cluster exists, so a wrong ``bands`` is refused at
    once instead of failing every scene after the cluster started.

    Raises:
        ModelContractError, BandSelectionError: see :func:`geoseg.inference.bands.match_bands`.
    """
    if bands is None:
        return
    from geoseg.inference.bands import match_bands
    from geoseg.io.read import RasterSource
    from geoseg.models import read_config

    config = read_config(str(checkpoint))
    for job in jobs:
        if job.error:
            continue
        try:
            probe = RasterSource(job.src)
        except Exception:  # an unreadable scene fails alone, in planning
            continue
        with probe:
            match_bands(config, probe.descriptions, bands, path=str(job.src))


def _run_locked(
    job_list: list[Job],
    inputs: dict[Path, str],
    checkpoint: Path,
    out: Path,
    *,
    t0: float,
    client: Any,
    scheduler: str | None,
    cluster: str,
    workers: int | None,
    cluster_kwargs: dict[str, Any],
    region_size: int,
    tile: int | None,
    overlap: int | None,
    batch_size: int | None,
    device: str,
    cache_mb: float | None,
    gpus_per_task: float | None,
    bands: Any,
    stitch: str,
    overwrite: bool,
    progress: ProgressCallback | None,
    mosaic: bool,
    cog: bool,
    retries: int,
    worker_timeout: float | None,
    on_client: Callable[[Any], None] | None,
    say: Callable[[str], None],
) -> BatchResult:
    manifest = Manifest(out)
    failures = [SceneFailure(j.name, j.src, "input", j.error) for j in job_list if j.error]
    scenes = _plan(
        [j for j in job_list if not j.error],
        checkpoint,
        out,
        failures,
        region_size=region_size,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        bands=bands,
        stitch=stitch,
        cache_mb=cache_mb,
    )
    planned = {sc.job.name: _planned_outputs(sc, out, mosaic=mosaic, cog=cog) for sc in scenes}
    previous = _recorded_paths(manifest, set(planned)) if overwrite else {}
    outputs: dict[Path, str] = {p: what for outs in planned.values() for p, what in outs.items()}
    for p, r in previous.items():
        for q in _with_sidecars(p):
            outputs.setdefault(q, f"file of an earlier run of {r.get('scene', 'a scene')}")
    check_outputs_not_inputs(outputs, inputs, fix=_fix())
    if overwrite:
        removed = _remove_previous(manifest, scenes, out, previous)
        if removed:
            say(f"overwrite: removed {len(removed)} file(s) that an earlier run recorded for these scenes")
    else:
        _check_ownership(manifest, scenes, planned)
    known = {p.resolve() for p in outputs} | {p for p in manifest.by_output()} | {(out / SUMMARY_NAME).resolve()}
    folders = {out, *(out / sc.job.name for sc in scenes)}
    _cleanup_temporaries(folders, known, inputs)

    configs = {sc.job.name: sc.key for sc in scenes}
    all_tasks = [t for sc in scenes for t in sc.tasks]
    todo = [t for t in all_tasks if overwrite or manifest.finished(t.key, Path(t.dst), t.params) is None]
    todo_keys = {t.key for t in todo}
    for sc in scenes:
        (out / sc.job.name).mkdir(exist_ok=True)
    total, done = len(all_tasks), len(all_tasks) - len(todo)
    report_progress(progress, done, total, "resumed" if done else "starting")
    stats: dict[str, WorkerStats] = {}
    task_failures: dict[str, tuple[RegionTask, str]] = {}
    finished_keys: set[str] = {t.key for t in all_tasks} - todo_keys
    pixels = 0
    dashboard = None
    lost: str | None = None
    t_compute = time.perf_counter()
    if todo:
        remote = client is not None or bool(scheduler)
        gpu = _decide_gpu(device, gpus_per_task, cluster, remote=remote, cluster_kwargs=cluster_kwargs)
        handle = (
            ClientHandle(client, owned=False)
            if client is not None
            else make_client(cluster, scheduler=scheduler, workers=workers, gpu=bool(gpu), **cluster_kwargs)
        )
        dashboard = handle.dashboard_link
        try:
            if on_client is not None:
                on_client(handle.client)
            _wait_for_workers(handle.client, worker_timeout, say)
            if gpu is None:
                gpu = _client_has_gpus(handle.client)
            todo = [dataclasses.replace(t, device=_task_device(device, gpu)) for t in todo]
            pixels, lost = _compute(
                handle.client,
                todo,
                manifest,
                stats,
                task_failures,
                finished_keys,
                configs,
                progress=progress,
                done=done,
                total=total,
                checkpoint=checkpoint,
                device=_task_device(device, gpu),
                gpu=gpu,
                gpus_per_task=gpus_per_task,
                retries=retries,
                worker_timeout=worker_timeout,
                say=say,
            )
        finally:
            handle.close()
    compute_seconds = time.perf_counter() - t_compute
    _cleanup_temporaries(folders, known, inputs)  # left by workers killed during this run

    from geoseg.models import read_config

    classes = read_config(checkpoint).classes
    results: list[SceneResult] = []
    reports: list[SegmentationReport] = []
    for sc in scenes:
        name = sc.job.name
        missing = [t for t in sc.tasks if t.key not in finished_keys]
        if missing:
            failed = [task_failures[t.key] for t in missing if t.key in task_failures]
            if failed:
                t, why = failed[0]
                reason = (
                    f"{len(failed)} of {len(sc.tasks)} region task(s) failed after {retries} retries; first: "
                    f"{Path(t.dst).name}: {why}"
                )
            else:
                reason = f"{len(missing)} of {len(sc.tasks)} region task(s) not computed: {lost or 'cancelled'}"
            failures.append(SceneFailure(name, sc.job.src, "compute", reason))
            continue
        try:
            res = _finish_scene(sc, out, manifest, mosaic=mosaic, cog=cog)
        except Exception as exc:
            failures.append(SceneFailure(name, sc.job.src, "mosaic", _reason(exc)))
            continue
        res.skipped = sum(1 for t in sc.tasks if t.key not in todo_keys)
        results.append(res)
        if sc.job.truth is not None:
            try:
                res.report = scene_report(res.cog or res.mosaic or res.regions[0], sc.job.truth, classes)
            except Exception as exc:
                failures.append(SceneFailure(name, sc.job.src, "report", _reason(exc)))
            else:
                reports.append(res.report)
    order = {j.name: i for i, j in enumerate(job_list)}
    failures.sort(key=lambda f: order.get(f.name, len(order)))
    result = BatchResult(
        scenes=results,
        workers=stats,
        tasks=total,
        skipped=total - len(todo_keys),
        pixels_computed=pixels,
        seconds=compute_seconds if todo else time.perf_counter() - t0,
        manifest=manifest.path,
        summary=out / SUMMARY_NAME,
        report=combined_report(reports, classes),
        dashboard_link=dashboard,
        failed=failures,
    )
    _publish(manifest, result.summary, None, "", lambda tmp: tmp.write_text(json.dumps(result.to_dict(), indent=2)))
    if failures:
        failed_names = {f.name for f in failures}
        first = "; ".join(f"{f.name}: {f.reason}" for f in failures[:3])
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        n_done = sum(1 for r in results if r.name not in failed_names)
        finished = f"The other {n_done} scene(s) finished; every" if n_done else "Every"
        lost_scheduler = lost is not None and lost.startswith(_LOST)
        cls = SchedulerLostError if lost_scheduler else BatchTaskError
        raise cls(
            f"{f'{lost}, so ' if lost_scheduler else ''}{len(failed_names)} of {n_done + len(failed_names)} scene(s) "
            f"failed: {first}{more}. {finished} failure is listed in {result.summary}. Finished tasks are recorded "
            f"in {manifest.path}: re-run the same command to retry what failed",
            result=result,
        )
    return result


def _compute(
    client: Any,
    todo: list[RegionTask],
    manifest: Manifest,
    stats: dict[str, WorkerStats],
    failures: dict[str, tuple[RegionTask, str]],
    finished: set[str],
    configs: dict[str, str],
    *,
    progress: ProgressCallback | None,
    done: int,
    total: int,
    checkpoint: Path,
    device: str,
    gpu: bool,
    gpus_per_task: float | None,
    retries: int,
    worker_timeout: float | None,
    say: Callable[[str], None],
) -> tuple[int, str | None]:
    """Run ``todo`` on the cluster; return (pixels computed, why the run stopped early or None)."""
    from distributed import as_completed

    from geoseg.distributed.worker import ModelPlugin, predict_region

    if gpu:
        _check_gpu_workers(client)
    plugin = ModelPlugin(str(checkpoint), device, torch_threads=None if gpu else _torch_threads(client))
    try:
        client.register_plugin(plugin, name=f"geoseg-model-{hashlib.sha1(str(checkpoint).encode()).hexdigest()[:10]}")
    except GeoSegError as exc:  # e.g. device 'cuda' on workers without CUDA: every task would fail the same way
        raise type(exc)(f"loading {checkpoint.name} on the Dask workers (device {device!r}) failed: {exc}") from exc
    resources = {"GPU": gpus_per_task or 1} if gpu else None
    manifest.append_many(
        {
            "kind": "task",
            "key": t.key,
            "scene": t.scene,
            "config": configs[t.scene],
            "output": manifest.relative(t.dst),
            "params": t.params,
            "state": "writing",
        }
        for t in todo
    )
    run_id = uuid.uuid4().hex[:8]
    futures = {}
    for t in todo:
        fut = client.submit(
            predict_region,
            t,
            key=f"geoseg-{t.scene}-{t.key}-{run_id}",
            resources=resources,
            retries=retries,
            pure=False,
        )
        futures[fut] = t
    address = _scheduler_address(client)
    pixels = 0
    stopped: str | None = None
    ac = as_completed(list(futures))
    next_check = time.monotonic() + _HEALTH_S
    no_workers_since: float | None = None
    try:
        while futures and stopped is None:
            batch = ac.next_batch(block=False)
            if not batch:
                if client.status != "running":
                    stopped = f"{_LOST} {address}"
                elif time.monotonic() >= next_check:
                    next_check = time.monotonic() + _HEALTH_S
                    try:
                        n_workers = len(client.nthreads())
                    except Exception:
                        n_workers = -1  # the scheduler did not answer; client.status tells on the next pass
                    if n_workers == 0:
                        now = time.monotonic()
                        if no_workers_since is None:
                            no_workers_since = now
                            say(f"all Dask workers left the scheduler at {address}; waiting for workers to come back")
                        elif worker_timeout is not None and now - no_workers_since > worker_timeout:
                            stopped = f"no Dask worker at {address} for {worker_timeout:g} s (worker_timeout)"
                    elif n_workers > 0:
                        no_workers_since = None
                time.sleep(_POLL_S)
                continue
            for fut in batch:
                task = futures.pop(fut)
                if fut.status in ("pending", "lost"):  # its result was lost with a worker: computed again
                    futures[fut] = task
                    ac.add(fut)
                    continue
                if fut.status == "cancelled" and (client.status != "running" or _connection_lost(fut)):
                    stopped = f"{_LOST} {address}"
                    futures[fut] = task  # not computed
                    break
                try:
                    r = _completed_result(fut, _RESULT_WAIT_S)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:  # the task's error, or a cancellation (asyncio's is a BaseException)
                    failures[task.key] = (task, _reason(exc) or "cancelled")
                else:
                    if r is _PENDING_AGAIN:  # completed, then lost with its worker before it was read: computed again
                        futures[fut] = task
                        ac.add(fut)
                        continue
                    manifest.append(
                        {
                            "kind": "task",
                            "key": task.key,
                            "scene": task.scene,
                            "config": configs[task.scene],
                            "output": manifest.relative(r.output),
                            "sha256": r.sha256,
                            "params": task.params,
                            "state": "done",
                            "pixels": r.pixels,
                            "seconds": round(r.seconds, 4),
                            "worker": r.worker,
                            "device": r.device,
                        }
                    )
                    finished.add(task.key)
                    w = stats.setdefault(r.worker, WorkerStats(r.worker))
                    w.tasks += 1
                    w.pixels += r.pixels
                    w.seconds += r.seconds
                    pixels += r.pixels
                fut.release()
                done += 1
                report_progress(progress, done, total, f"{task.scene} {Path(task.dst).name}")
    except (CancelledError, KeyboardInterrupt):
        with contextlib.suppress(Exception):
            client.cancel(list(futures))
        raise
    if stopped is not None:
        say(f"stopped: {stopped}; {len(futures)} task(s) not computed")
        with contextlib.suppress(Exception):
            if client.status == "running":
                client.cancel(list(futures))
    return pixels, stopped


def _connection_lost(fut: Any) -> bool:
    """Whether a cancelled future was cancelled because the client lost its scheduler."""
    try:
        fut.result(timeout=5)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # FutureCancelledError derives from asyncio.CancelledError (a BaseException)
        return getattr(exc, "reason", None) == "scheduler-connection-lost"
    return False


def _publish(manifest: Manifest, path: Path, scene: str | None, config: str, write: Callable[[Path], Any]) -> None:
    """Write one finishing-step file atomically between a "writing" and a "done" manifest record."""
    rel = manifest.relative(path)
    base = {"kind": "file", "key": f"file:{rel}", "scene": scene, "config": config, "output": rel}
    manifest.append({**base, "state": "writing"})
    with atomic_path(path, overwrite=True) as tmp:
        write(tmp)
    manifest.append({**base, "state": "done", "sha256": sha256_file(path)})


def _finish_scene(sc: _Scene, out: Path, manifest: Manifest, *, mosaic: bool, cog: bool) -> SceneResult:
    """VRT mosaic and COG of a scene whose regions are all finished; a step already recorded as done for this
    configuration (and unchanged on disk) is kept, any other is (re)done."""
    name, config = sc.job.name, sc.key
    regions = [Path(t.dst) for t in sc.tasks]
    vrt = out / f"{name}.vrt" if mosaic else None
    cog_path = out / f"{name}.tif" if cog else None
    if vrt is not None and manifest.file_done(vrt, config) is None:
        sources = [(Path(t.dst), t.origin) for t in sc.tasks]
        _publish(
            manifest,
            vrt,
            name,
            config,
            lambda tmp: build_vrt(tmp, sources, shape=sc.grid.shape, transform=sc.grid.transform, atomic=False),
        )
    if vrt is not None and cog_path is not None and manifest.file_done(cog_path, config) is None:
        _publish(manifest, cog_path, name, config, lambda tmp: build_cog(vrt, tmp, atomic=False))
    h, w = sc.grid.shape
    return SceneResult(
        name=name,
        src=sc.job.src,
        mosaic=vrt,
        cog=cog_path,
        regions=regions,
        tasks=len(sc.tasks),
        skipped=0,
        pixels=h * w,
        truth=sc.job.truth,
    )


__all__ = ["BatchResult", "SceneFailure", "SceneResult", "run_batch"]
