"""Batch prediction on a Dask cluster: many scenes, or huge scenes split into regions; resumable.

``run_batch`` plans block-aligned regions (whole tiles of :func:`geoseg.inference.predict.plan_grid`), runs one task
per region on Dask workers (model loaded once per worker by a WorkerPlugin), records finished tasks with checksums
in a manifest, and builds a VRT mosaic (and optionally a COG) per scene. One run at a time per output folder (a lock
file); no output ever replaces an input; a scene that fails does so alone. Requires ``dask[distributed]``.
"""

from __future__ import annotations

from geoseg.distributed.cluster import (
    CLUSTERS,
    ClientHandle,
    available_cpus,
    gpu_worker_envs,
    make_client,
    parse_cluster_options,
    visible_gpus,
)
from geoseg.distributed.errors import (
    BatchTaskError,
    ManifestError,
    NoInputsError,
    NoWorkersError,
    SchedulerLostError,
    SchedulerUnreachableError,
)
from geoseg.distributed.jobs import Job, read_jobs_manifest, resolve_jobs
from geoseg.distributed.mosaic import build_cog, build_vrt
from geoseg.distributed.report import WorkerStats
from geoseg.distributed.run import BatchResult, SceneFailure, SceneResult, run_batch

__all__ = [
    "CLUSTERS",
    "BatchResult",
    "BatchTaskError",
    "ClientHandle",
    "Job",
    "ManifestError",
    "NoInputsError",
    "NoWorkersError",
    "SceneFailure",
    "SceneResult",
    "SchedulerLostError",
    "SchedulerUnreachableError",
    "WorkerStats",
    "available_cpus",
    "build_cog",
    "build_vrt",
    "gpu_worker_envs",
    "make_client",
    "parse_cluster_options",
    "read_jobs_manifest",
    "resolve_jobs",
    "run_batch",
    "visible_gpus",
]
