"""Dask clients for batch runs: a LocalCluster, an existing scheduler, SLURM/PBS (dask-jobqueue), or local GPUs."""

from __future__ import annotations

import os
from contextlib import suppress
from typing import Any

from geoseg.distributed.errors import SchedulerUnreachableError
from geoseg.errors import InvalidParameterError, MissingDependencyError

CLUSTERS = ("local", "slurm", "pbs", "cuda")


def _worker_environ() -> Any:
    """Dask config for spawning local workers without ``MALLOC_TRIM_THRESHOLD_``.

    Dask sets it to 64 KiB for worker processes; any explicit trim threshold turns off glibc's dynamic mmap threshold,
    so every large torch activation is mmapped and unmapped again: CPU inference measured ~1.8x slower. Dask itself
    also exports it into this process's environment when it spawns workers; it is removed there too when it holds
    Dask's value.
    """
    import dask

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", None) or {})
    trim = env.pop("MALLOC_TRIM_THRESHOLD_", None)
    if trim is not None and os.environ.get("MALLOC_TRIM_THRESHOLD_") == str(trim):
        os.environ.pop("MALLOC_TRIM_THRESHOLD_")
    return dask.config.set({"distributed.nanny.pre-spawn-environ": env})


def _optional(module: str, extra: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{what} needs {module}, which is not installed: pip install 'geoseg[{extra}]' (or pip install "
            f"{module.replace('_', '-')})"
        ) from exc


class ClientHandle:
    """A client and whatever we created for it (closed by :meth:`close` only if we created it)."""

    def __init__(self, client: Any, cluster: Any = None, *, owned: bool) -> None:
        self.client, self.cluster, self.owned = client, cluster, owned

    @property
    def dashboard_link(self) -> str | None:
        with suppress(Exception):
            return self.client.dashboard_link
        return None

    def close(self) -> None:
        if not self.owned:
            return
        with suppress(Exception):
            self.client.close()
        if self.cluster is not None:
            with suppress(Exception):
                self.cluster.close()


def make_client(
    cluster: str = "local",
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    gpu: bool = False,
    timeout: float = 30.0,
    **cluster_kwargs: Any,
) -> ClientHandle:
    """Connect to ``scheduler`` or start a cluster of ``workers`` worker processes (one thread each).

    * ``local``: ``distributed.LocalCluster`` (default: one worker per GPU when ``gpu`` else per 2 cores, >= 1).
    * ``slurm``/``pbs``: ``dask_jobqueue.SLURMCluster``/``PBSCluster`` scaled to ``workers`` jobs; ``cluster_kwargs``
      (cores, memory, queue, account, walltime, job_extra_directives...) go to the cluster. With ``gpu`` each worker
      declares the resource ``GPU=1``.
    * ``cuda``: ``dask_cuda.LocalCUDACluster`` (one worker per visible GPU, each declaring ``GPU=1``).

    Raises:
        InvalidParameterError: an unknown ``cluster`` or a bad worker count.
        MissingDependencyError: the extra the cluster kind needs is not installed.
        SchedulerUnreachableError: ``scheduler`` cannot be reached.
    """
    Client = _optional("distributed", "distributed", "run_batch").Client  # noqa: N806

    if scheduler:
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise SchedulerUnreachableError(
                f"no Dask scheduler answered at {scheduler!r} within {timeout:g} s ({exc}); check the address "
                f"(tcp://HOST:8786) and that `dask scheduler` runs there"
            ) from exc
        return ClientHandle(client, owned=True)
    if cluster not in CLUSTERS:
        raise InvalidParameterError(f"unknown cluster type {cluster!r}; use one of {', '.join(CLUSTERS)}")
    if workers is not None and workers < 1:
        raise InvalidParameterError(f"workers must be >= 1, got {workers}")
    resources = {"GPU": 1} if gpu else None
    if cluster == "local":
        from distributed import LocalCluster

        n = workers or (_gpu_count() if gpu else max(1, (os.cpu_count() or 2) // 2))
        kwargs: dict[str, Any] = {
            "n_workers": n,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": ":0",
            "resources": resources,
        }
        kwargs.update(cluster_kwargs)
        with _worker_environ():
            cl = LocalCluster(**kwargs)
    elif cluster == "cuda":
        dask_cuda = _optional("dask_cuda", "cuda", "cluster='cuda'")
        kwargs = {"threads_per_worker": 1, "resources": {"GPU": 1}, "dashboard_address": ":0"}
        if workers:
            kwargs["n_workers"] = workers
        kwargs.update(cluster_kwargs)
        with _worker_environ():
            cl = dask_cuda.LocalCUDACluster(**kwargs)
    else:
        jq = _optional("dask_jobqueue", "jobqueue", f"cluster={cluster!r}")
        cls = jq.SLURMCluster if cluster == "slurm" else jq.PBSCluster
        kwargs = dict(cluster_kwargs)
        if gpu:
            kwargs.setdefault("worker_extra_args", []).extend(["--resources", "GPU=1"])
        kwargs.setdefault("processes", 1)
        try:
            cl = cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(f"cannot configure a {cluster} cluster: {exc}") from exc
        cl.scale(jobs=workers or 1)
    return ClientHandle(Client(cl), cl, owned=True)


def _gpu_count() -> int:
    try:
        import torch

        return max(1, torch.cuda.device_count())
    except ImportError:
        return 1


__all__ = ["CLUSTERS", "ClientHandle", "make_client"]
