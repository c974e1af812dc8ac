"""Worker side: a plugin that loads the model once per worker, and the region task."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin, get_worker

from geoseg.allocator import configure_cpu_allocator
from geoseg.distributed.manifest import sha256_file
from geoseg.distributed.regions import RegionTask

CACHE_ATTR = "_geoseg_models"
_lock = threading.Lock()


def _cache_key(checkpoint: str, device: str) -> tuple[str, int, str]:
    p = Path(checkpoint).resolve()
    return str(p), os.stat(p).st_mtime_ns, device


class ModelPlugin(WorkerPlugin):
    """Loads ``checkpoint`` on ``device`` when a worker starts (and on workers that join later, e.g. restarts).

    The model is kept on the worker keyed by (checkpoint path, mtime, device); tasks fetch it with
    :func:`worker_model`. ``torch_threads`` caps intra-op threads so that the tasks running at once on one CPU set
    share its CPUs: an int for every worker, or ``{cpu-set key: threads}`` from
    :func:`geoseg.distributed.cluster.torch_threads_per_task`; a worker whose CPU set is not in the mapping (one that
    joined later) uses its usable CPUs (affinity and cgroup quota) divided by its Dask threads.
    """

    def __init__(
        self, checkpoint: str, device: str = "auto", torch_threads: int | dict[str, int] | None = None
    ) -> None:
        self.checkpoint, self.device, self.torch_threads = str(checkpoint), device, torch_threads

    def threads_for(self, worker: Any) -> int | None:
        if self.torch_threads is None or isinstance(self.torch_threads, int):
            return self.torch_threads
        from geoseg.distributed.cluster import cpu_budget

        key, cpus = cpu_budget()
        if key in self.torch_threads:
            return self.torch_threads[key]
        return max(1, cpus // max(1, int(getattr(worker.state, "nthreads", 1) or 1)))

    def setup(self, worker: Any) -> None:
        threads = self.threads_for(worker)
        if threads:
            import torch

            torch.set_num_threads(threads)
        from geoseg.models.device import resolve_device

        worker_model(self.checkpoint, self.device, worker=worker)
        if resolve_device(self.device).type == "cpu":  # this worker process predicts on the CPU: see geoseg.allocator
            configure_cpu_allocator()


def worker_model(checkpoint: str, device: str, *, worker: Any = None) -> tuple[Any, Any]:
    """The (module, config) for ``checkpoint`` on this worker, loaded on first use and cached."""
    from geoseg.inference.predict import load_model
    from geoseg.models.device import resolve_device

    worker = worker or get_worker()
    dev = resolve_device(device)
    key = _cache_key(checkpoint, str(dev))
    with _lock:
        cache: dict = getattr(worker, CACHE_ATTR, None) or {}
        setattr(worker, CACHE_ATTR, cache)
        if key not in cache:
            for old in [k for k in cache if k[0] == key[0]]:  # checkpoint replaced on disk: drop the stale copy
                del cache[old]
            cache[key] = load_model(checkpoint, dev)
        return cache[key]


@dataclass
class TaskResult:
    key: str
    output: str
    sha256: str
    pixels: int
    seconds: float
    worker: str
    device: str
    tiles: int


def predict_region(task: RegionTask) -> TaskResult:
    """Predict one region (or a whole scene) to ``task.dst`` atomically; return its checksum and timing."""
    from geoseg.inference.predict import predict_raster

    t0 = time.perf_counter()
    worker = get_worker()
    net, config = worker_model(task.checkpoint, task.device, worker=worker)
    tiles = None if task.rows is None or task.cols is None else (range(*task.rows), range(*task.cols))
    res = predict_raster(
        task.src,
        task.dst,
        model=(net, config),
        bands=task.bands,
        tile=task.tile,
        overlap=task.overlap,
        batch_size=task.batch_size,
        cache_mb=task.cache_mb,
        device=task.device,
        stitch=task.stitch,
        overwrite=True,
        tiles=tiles,
        workers=2,
    )
    return TaskResult(
        key=task.key,
        output=task.dst,
        sha256=sha256_file(task.dst),
        pixels=res.pixels,
        seconds=time.perf_counter() - t0,
        worker=worker.address,
        device=res.device,
        tiles=res.tiles,
    )


__all__ = ["ModelPlugin", "TaskResult", "predict_region", "worker_model"]
