"""run_batch: many scenes, or huge scenes cut into regions, predicted on a Dask cluster; resumable."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.distributed.cluster import ClientHandle, make_client
from geoseg.distributed.errors import BatchTaskError
from geoseg.distributed.jobs import Job, JobsLike, TruthLike, resolve_jobs
from geoseg.distributed.manifest import Manifest, sha256_file
from geoseg.distributed.mosaic import build_cog, build_vrt
from geoseg.distributed.regions import RegionTask, file_fingerprint, plan_regions
from geoseg.distributed.report import WorkerStats, combined_report, scene_report
from geoseg.errors import CancelledError, InputNotFoundError, InvalidParameterError, OutputExistsError
from geoseg.io.write import atomic_path
from geoseg.metrics import SegmentationReport
from geoseg.progress import ProgressCallback, report_progress
from geoseg.tiling import TileGrid

SUMMARY_NAME = "geoseg-batch-summary.json"


@dataclass
class SceneResult:
    name: str
    src: Path
    mosaic: Path
    cog: Path | None
    regions: list[Path]
    tasks: int
    skipped: int
    pixels: int
    truth: Path | None = None
    report: SegmentationReport | None = None


@dataclass
class BatchResult:
    """Outputs, accuracy (when truth was given) and throughput of a batch run."""

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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mpix_per_s(self) -> float:
        return self.pixels_computed / 1e6 / self.seconds if self.seconds > 0 else float("nan")

    def format_summary(self) -> str:
        lines = [
            f"{len(self.scenes)} scene(s), {self.tasks} task(s): {self.tasks - self.skipped} run, {self.skipped} "
            f"resumed from the manifest; {self.pixels_computed / 1e6:.2f} MPix in {self.seconds:.1f} s "
            f"({self.mpix_per_s:.2f} MPix/s)"
        ]
        for w in sorted(self.workers.values(), key=lambda s: s.address):
            lines.append(
                f"  worker {w.address}: {w.tasks} task(s), {w.pixels / 1e6:.2f} MPix, {w.seconds:.1f} s busy, "
                f"{w.mpix_per_s:.2f} MPix/s"
            )
        for s in self.scenes:
            miou = f", mIoU {s.report.miou:.3f}" if s.report is not None else ""
            lines.append(f"  {s.name}: {s.cog or s.mosaic} ({len(s.regions)} region(s){miou})")
        if self.report is not None:
            lines.append("combined accuracy:\n" + self.report.format_table())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
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
                    "mosaic": str(s.mosaic),
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
            "report": self.report.to_dict() if self.report is not None else None,
        }


@dataclass
class _Scene:
    job: Job
    grid: TileGrid
    tasks: list[RegionTask]

    @property
    def key(self) -> str:
        return hashlib.sha256("|".join(t.key for t in self.tasks).encode()).hexdigest()[:20]


def _plan(
    jobs: list[Job],
    checkpoint: Path,
    out_dir: Path,
    *,
    region_size: int,
    tile: int | None,
    overlap: int | None,
    batch_size: int | None,
    device: str,
    bands: Any,
    stitch: str,
) -> list[_Scene]:
    import torch

    from geoseg.inference.bands import match_bands
    from geoseg.inference.predict import load_model, plan_grid
    from geoseg.io.read import RasterSource

    net, config = load_model(str(checkpoint), torch.device("cpu"))
    bands_n = tuple(bands) if isinstance(bands, list) else bands
    scenes = []
    for job in jobs:
        with RasterSource(job.src) as probe:  # fails early on unreadable rasters and unmatched bands
            match_bands(config, probe.descriptions, bands)
        grid = plan_grid(job.src, model=(net, config), tile=tile, overlap=overlap)
        regions = plan_regions(grid, region_size)
        if len(regions) > 1 and stitch != "center":
            raise InvalidParameterError(
                f"{job.src.name} is split into {len(regions)} regions, which needs stitch='center' (got {stitch!r}); "
                f"use stitch='center' or a region_size >= the scene size ({max(grid.shape)} px)"
            )
        fp = file_fingerprint(job.src, checkpoint)
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
                )
            )
        scenes.append(_Scene(job, grid, tasks))
    return scenes


def _wants_gpu(device: str, gpus_per_task: float | None, cluster: str) -> bool:
    if gpus_per_task is not None:
        return gpus_per_task > 0
    if str(device).startswith("cuda"):
        return True
    if device == "auto":
        if cluster == "cuda":
            return True
        with contextlib.suppress(ImportError):
            import torch

            return torch.cuda.is_available()
    return False


def _torch_threads(client: Any) -> int | None:
    """Cores per worker process on the busiest host (so worker processes do not oversubscribe the CPU)."""
    try:
        cpus = client.run(os.cpu_count)
    except Exception:
        return None
    if not cpus:
        return None
    hosts: dict[str, list[int]] = {}
    for addr, n in cpus.items():
        hosts.setdefault(addr.rsplit(":", 1)[0], []).append(int(n or 1))
    return max(1, min(v[0] // len(v) for v in hosts.values()))


def _check_gpu_workers(client: Any) -> None:
    workers = client.scheduler_info().get("workers", {})
    if workers and not any(w.get("resources", {}).get("GPU", 0) for w in workers.values()):
        raise InvalidParameterError(
            "tasks ask for resources={'GPU': 1} but no worker declares a GPU resource, so they would wait forever; "
            "start workers with --resources GPU=1 (dask_cuda/LocalCluster(resources=...)) or use device='cpu'"
        )


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
    gpus_per_task: float | None = None,
    bands: Any = None,
    stitch: str = "center",
    truth: TruthLike = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    mosaic: bool = True,
    cog: bool = False,
    retries: int = 3,
    on_client: Callable[[Any], None] | None = None,
) -> BatchResult:
    """Predict many rasters (or huge ones, cut into regions of whole tiles) on a Dask cluster, resumably.

    Args:
        jobs: raster paths, a glob, or a text/CSV manifest (``raster[,truth]`` per line), or a list of those.
        model: checkpoint path, readable by every worker (shared filesystem); loaded once per worker.
        out_dir: outputs: ``<scene>/<region>.tif`` per task, ``<scene>.vrt`` mosaics, ``<scene>.tif`` COGs
            (``cog=True``), the resume manifest and a JSON summary.
        client: an existing ``distributed.Client`` (left open). Otherwise ``scheduler`` (address) or ``cluster``
            (``local``, ``slurm``, ``pbs``, ``cuda``) with ``workers`` and ``cluster_kwargs`` (see
            :func:`geoseg.distributed.make_client`); a cluster started here is closed at the end.
        region_size: approximate region edge in pixels (rounded to whole tile cores); a region = one task.
        gpus_per_task: GPU resource per task (default 1 when the device is CUDA, none on CPU).
        truth: truth rasters, as a folder (same file name or stem) or a ``{raster: truth}`` mapping; manifest
            truth columns take precedence. Gives per-scene and combined per-class IoU.
        overwrite: recompute everything (else finished tasks recorded in the manifest are reused).
        progress: ``(done, total, message)`` callback over tasks; returning True cancels.
        retries: extra attempts per task after an error; tasks of a dead worker are rescheduled by Dask.
        on_client: called with the ``distributed.Client`` once it is up (e.g. to show ``client.dashboard_link``);
            not called when every task is already finished.

    Raises:
        NoInputsError, InputNotFoundError: no rasters, or a missing raster, manifest or truth.
        InvalidParameterError: a bad option (region size, stitch, cluster).
        OutputExistsError: outputs of another run in ``out_dir`` without ``overwrite``.
        SchedulerUnreachableError: the scheduler cannot be reached.
        BatchTaskError: a task failed on every retry (the message names the region and the cause).
        CancelledError: ``progress`` asked to stop (finished regions stay recorded for a re-run).
    """
    t0 = time.perf_counter()
    checkpoint = Path(model)
    if not checkpoint.is_file():
        raise InputNotFoundError(f"model checkpoint not found: {checkpoint}")
    checkpoint = checkpoint.resolve()
    if retries < 0:
        raise InvalidParameterError(f"retries must be >= 0, got {retries}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidParameterError(f"out_dir {out} is a file; give a folder")
    job_list = resolve_jobs(jobs, truth)
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    scenes = _plan(
        job_list,
        checkpoint,
        out,
        region_size=region_size,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        bands=bands,
        stitch=stitch,
    )
    manifest = Manifest(out, fresh=overwrite)
    for sc in scenes:
        _check_scene_outputs(sc, out, manifest, overwrite=overwrite, cog=cog)
    all_tasks = [t for sc in scenes for t in sc.tasks]
    todo = []
    for t in all_tasks:
        if overwrite or manifest.finished(t.key, Path(t.dst), t.params) is None:
            todo.append(t)
    todo_keys = {t.key for t in todo}
    for sc in scenes:
        (out / sc.job.name).mkdir(exist_ok=True)
    total, done = len(all_tasks), len(all_tasks) - len(todo)
    report_progress(progress, done, total, "resumed" if done else "starting")
    stats: dict[str, WorkerStats] = {}
    failures: list[tuple[RegionTask, BaseException]] = []
    pixels = 0
    dashboard = None
    t_compute = time.perf_counter()
    if todo:
        handle = (
            ClientHandle(client, owned=False)
            if client is not None
            else make_client(
                cluster,
                scheduler=scheduler,
                workers=workers,
                gpu=_wants_gpu(device, gpus_per_task, cluster),
                **(cluster_kwargs or {}),
            )
        )
        dashboard = handle.dashboard_link
        try:
            if on_client is not None:
                on_client(handle.client)
            pixels = _compute(
                handle.client,
                todo,
                manifest,
                stats,
                failures,
                progress=progress,
                done=done,
                total=total,
                checkpoint=checkpoint,
                device=device,
                gpu=_wants_gpu(device, gpus_per_task, cluster) or _client_has_gpus(handle.client),
                gpus_per_task=gpus_per_task,
                retries=retries,
            )
        finally:
            handle.close()
    compute_seconds = time.perf_counter() - t_compute
    failed_scenes = {t.scene for t, _ in failures}
    results: list[SceneResult] = []
    reports: list[SegmentationReport] = []
    from geoseg.models import read_config

    classes = read_config(checkpoint).classes
    for sc in scenes:
        if sc.job.name in failed_scenes:
            continue
        _cleanup_partials(out / sc.job.name)
        res = _finish_scene(sc, out, manifest, mosaic=mosaic or cog, cog=cog, classes=classes)
        res.skipped = sum(1 for t in sc.tasks if t.key not in todo_keys)
        if res.report is not None:
            reports.append(res.report)
        results.append(res)
    result = BatchResult(
        scenes=results,
        workers=stats,
        tasks=total,
        skipped=total - len(todo),
        pixels_computed=pixels,
        seconds=compute_seconds if todo else time.perf_counter() - t0,
        manifest=manifest.path,
        summary=out / SUMMARY_NAME,
        report=combined_report(reports, classes),
        dashboard_link=dashboard,
    )
    with atomic_path(result.summary, overwrite=True) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    if failures:
        t, exc = failures[0]
        raise BatchTaskError(
            f"{len(failures)} task(s) failed after {retries} retries (scenes: {', '.join(sorted(failed_scenes))}); "
            f"first: {t.scene} {Path(t.dst).name}: {type(exc).__name__}: {exc}. Finished tasks are recorded in "
            f"{manifest.path}; re-run the same command to resume"
        ) from exc
    return result


def _client_has_gpus(client: Any) -> bool:
    with contextlib.suppress(Exception):
        workers = client.scheduler_info().get("workers", {})
        return any(w.get("resources", {}).get("GPU", 0) for w in workers.values())
    return False


def _compute(
    client: Any,
    todo: list[RegionTask],
    manifest: Manifest,
    stats: dict[str, WorkerStats],
    failures: list[tuple[RegionTask, BaseException]],
    *,
    progress: ProgressCallback | None,
    done: int,
    total: int,
    checkpoint: Path,
    device: str,
    gpu: bool,
    gpus_per_task: float | None,
    retries: int,
) -> int:
    from distributed import as_completed

    from geoseg.distributed.worker import ModelPlugin, predict_region

    if gpu:
        _check_gpu_workers(client)
    plugin = ModelPlugin(str(checkpoint), device, torch_threads=None if gpu else _torch_threads(client))
    client.register_plugin(plugin, name=f"geoseg-model-{hashlib.sha1(str(checkpoint).encode()).hexdigest()[:10]}")
    resources = {"GPU": gpus_per_task or 1} if gpu else None
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
    pixels = 0
    try:
        for fut in as_completed(list(futures)):
            task = futures.pop(fut)
            if fut.status != "finished":
                try:
                    fut.result()
                except Exception as exc:
                    failures.append((task, exc))
            else:
                r = fut.result()
                manifest.append(
                    {
                        "kind": "task",
                        "key": task.key,
                        "scene": task.scene,
                        "output": r.output,
                        "sha256": r.sha256,
                        "params": task.params,
                        "pixels": r.pixels,
                        "seconds": round(r.seconds, 4),
                        "worker": r.worker,
                        "device": r.device,
                    }
                )
                w = stats.setdefault(r.worker, WorkerStats(r.worker))
                w.tasks += 1
                w.pixels += r.pixels
                w.seconds += r.seconds
                pixels += r.pixels
            fut.release()
            done += 1
            report_progress(progress, done, total, f"{task.scene} {Path(task.dst).name}")
    except (CancelledError, KeyboardInterrupt):
        client.cancel(list(futures))
        raise
    return pixels


def _check_scene_outputs(sc: _Scene, out: Path, manifest: Manifest, *, overwrite: bool, cog: bool) -> None:
    """Refuse to replace a mosaic made by another run (other model/options) unless ``overwrite``."""
    if overwrite:
        return
    rec = manifest.records.get(f"scene:{sc.job.name}")
    for path in (out / f"{sc.job.name}.vrt", out / f"{sc.job.name}.tif" if cog else None):
        if path is not None and path.exists() and (rec is None or rec.get("scene_key") != sc.key):
            raise OutputExistsError(
                f"{path} exists and was not made by this batch configuration (model, options or input changed); "
                f"pass overwrite=True (CLI: --overwrite) or choose another out_dir"
            )


def _cleanup_partials(folder: Path) -> None:
    """Remove temporaries left by killed workers (atomic writes never leave a half-written final file)."""
    for p in folder.glob(".*.partial*"):
        with contextlib.suppress(OSError):
            p.unlink()


def _finish_scene(
    sc: _Scene, out: Path, manifest: Manifest, *, mosaic: bool, cog: bool, classes: list[str]
) -> SceneResult:
    name = sc.job.name
    regions = [Path(t.dst) for t in sc.tasks]
    vrt = out / f"{name}.vrt"
    if mosaic:
        build_vrt(vrt, [(Path(t.dst), t.origin) for t in sc.tasks], shape=sc.grid.shape, transform=sc.grid.transform)
    cog_path = out / f"{name}.tif" if cog else None
    rec = manifest.records.get(f"scene:{name}", {})
    if cog_path is not None:
        fresh = (
            rec.get("scene_key") == sc.key
            and cog_path.is_file()
            and rec.get("cog_sha256")
            and sha256_file(cog_path) == rec["cog_sha256"]
        )
        if not fresh:
            build_cog(vrt, cog_path, overwrite=True)
    manifest.append(
        {
            "kind": "scene",
            "key": f"scene:{name}",
            "scene_key": sc.key,
            "src": str(sc.job.src),
            "vrt": str(vrt),
            "cog": str(cog_path) if cog_path else None,
            "cog_sha256": sha256_file(cog_path) if cog_path else None,
        }
    )
    rep = None
    if sc.job.truth is not None:
        rep = scene_report(cog_path or vrt, sc.job.truth, classes)
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
        report=rep,
    )


__all__ = ["BatchResult", "SceneResult", "run_batch"]
