"""Dask clients for batch runs: a LocalCluster, an existing scheduler, SLURM/PBS (dask-jobqueue), or local GPUs.

Also the facts about the machine that decide how workers are laid out: the CPUs a process may really use (affinity
and cgroup quota, not ``os.cpu_count()``), the GPUs visible to it, and whether a job-queue request asks for GPUs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from geoseg.distributed.errors import SchedulerUnreachableError
from geoseg.errors import InvalidParameterError, MissingDependencyError
from geoseg.hints import option
from geoseg.options import loads_json

CLUSTERS = ("local", "slurm", "pbs", "cuda")

# dask-jobqueue options whose value is a list (repeat --cluster-option KEY=VALUE to add entries); the deprecated
# names are kept so that older dask-jobqueue configurations still parse. Completed from the installed dask-jobqueue's
# defaults (every option whose default is a list) by :func:`list_options`.
LIST_OPTIONS = frozenset(
    {
        "job_extra_directives",
        "job_directives_skip",
        "job_script_prologue",
        "worker_extra_args",
        "job_extra",
        "env_extra",
        "extra",
    }
)
DICT_OPTIONS = frozenset({"scheduler_options", "resources"})

# A job request that asks for GPUs: SLURM --gres=gpu..., --gpus..., -G N; PBS ngpus=N / gpus=N; a GPU resource
_GPU_REQUEST = re.compile(
    r"(--gres[= ]\S*gpu|--gpus(-per-[a-z]+)?[= ]|(^|\s)-G\s*\d|(^|[\s:,])n?gpus?=\d"
    r"|(^|\s)GPU=\d|--resources\s+\S*GPU=)",
    re.IGNORECASE,
)


# ------------------------------------------------------------------------------------------------ CPUs


def _ancestors(mount: Path, path: str) -> list[Path]:
    parts = [p for p in path.strip("/").split("/") if p and p != ".."]
    return [d for d in (mount.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)) if d.is_dir()]


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(
    *, root: str | os.PathLike[str] = "/sys/fs/cgroup", proc_cgroup: str | os.PathLike[str] = "/proc/self/cgroup"
) -> float | None:
    """The CPU quota of this process's cgroup (and its ancestors), in CPUs (e.g. 1.5), or None when unlimited.

    cgroup v2 reads ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD"); cgroup v1 reads ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` (quota -1 = unlimited). The tightest limit along the hierarchy wins. ``root`` and
    ``proc_cgroup`` are parameters so that the parsing can be tested on a fake hierarchy.
    """
    text = _read_text(Path(proc_cgroup))
    if not text:
        return None
    limits: list[float] = []
    base = Path(root)
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":  # cgroup v2 (unified)
            for d in _ancestors(base, path):
                value = _read_text(d / "cpu.max")
                if value:
                    quota, _, period = value.partition(" ")
                    with suppress(ValueError):
                        if quota != "max" and float(period or 100000) > 0:
                            limits.append(float(quota) / float(period or 100000))
        elif "cpu" in controllers.split(","):  # cgroup v1
            for mount in (base / controllers, base / "cpu", base / "cpu,cpuacct", base / "cpuacct,cpu"):
                if not mount.is_dir():
                    continue
                for d in _ancestors(mount, path):
                    quota_us, period_us = _read_text(d / "cpu.cfs_quota_us"), _read_text(d / "cpu.cfs_period_us")
                    with suppress(TypeError, ValueError):
                        if int(quota_us or 0) > 0 and int(period_us or 0) > 0:
                            limits.append(int(quota_us or 0) / int(period_us or 0))
                break
    return min(limits) if limits else None


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def available_cpus(
    *,
    affinity: Iterable[int] | None = None,
    cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup",
    proc_cgroup: str | os.PathLike[str] = "/proc/self/cgroup",
) -> int:
    """CPUs this process may use: its CPU affinity (``os.sched_getaffinity``, e.g. a SLURM cpuset or ``taskset``),
    capped by its cgroup CPU quota (a container or job limit, rounded down), at least 1.

    ``os.cpu_count()`` counts the machine's CPUs and ignores both, so threads sized from it oversubscribe a job.
    """
    n = len(set(affinity) if affinity is not None else _affinity()) or 1
    quota = cgroup_cpu_limit(root=cgroup_root, proc_cgroup=proc_cgroup)
    if quota is not None:
        n = min(n, max(1, math.floor(quota + 1e-9)))
    return max(1, n)


def cpu_budget() -> tuple[str, int]:
    """(key, CPUs) of the CPU set this process runs on: processes with the same key share the same CPUs.

    The key is the host, the affinity set and the cgroup, so two SLURM jobs on one node (separate cpusets) are told
    apart while the worker processes of one LocalCluster are grouped. Runs on workers (``client.run``).
    """
    cgroup = _read_text(Path("/proc/self/cgroup")) or ""
    key = f"{socket.gethostname()}|{sorted(_affinity())}|{cgroup}"
    return hashlib.sha1(key.encode()).hexdigest()[:16], available_cpus()


def torch_threads_per_task(budgets: Mapping[str, tuple[str, int]], nthreads: Mapping[str, int]) -> dict[str, int]:
    """Intra-op threads per task for each CPU set, so that concurrent tasks together use its CPUs once.

    Args:
        budgets: worker address -> :func:`cpu_budget` of that worker.
        nthreads: worker address -> Dask threads of that worker (tasks it runs at once).

    Returns:
        CPU-set key -> threads per task (>= 1).
    """
    cpus: dict[str, int] = {}
    tasks: dict[str, int] = {}
    for addr, (key, n) in budgets.items():
        cpus[key] = min(cpus.get(key, n), int(n))
        tasks[key] = tasks.get(key, 0) + max(1, int(nthreads.get(addr, 1)))
    return {key: max(1, cpus[key] // tasks[key]) for key in cpus}


# ------------------------------------------------------------------------------------------------ GPUs


def visible_gpus(environ: Mapping[str, str] | None = None, count: int | None = None) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (indices or ``GPU-<uuid>``).

    From ``CUDA_VISIBLE_DEVICES`` when it is set (an empty value or ``-1`` hides every GPU), else ``0..count-1``
    where ``count`` defaults to ``torch.cuda.device_count()`` (0 without torch).
    """
    env = os.environ if environ is None else environ
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        devices = []
        for item in value.split(","):
            item = item.strip()
            if not item or item.startswith("-"):
                break  # CUDA stops at the first invalid entry
            devices.append(item)
        return devices
    if count is None:
        count = _gpu_count()
    return [str(i) for i in range(count)]


def gpu_worker_envs(devices: Sequence[str], n_workers: int | None = None) -> list[dict[str, str]]:
    """The environment of each GPU worker: ``CUDA_VISIBLE_DEVICES`` pinned to one device each.

    One worker per device by default; with more workers than devices they are dealt round-robin (several workers
    share a device), with fewer the first devices are used. Each worker then sees its device as ``cuda:0``.

    Raises:
        InvalidParameterError: no device, or ``n_workers`` < 1.
    """
    if not devices:
        raise InvalidParameterError("no GPU to pin workers to; use device='cpu' or make GPUs visible")
    n = len(devices) if n_workers is None else n_workers
    if n < 1:
        raise InvalidParameterError(f"workers must be >= 1, got {n}")
    return [{"CUDA_VISIBLE_DEVICES": str(devices[i % len(devices)])} for i in range(n)]


def requests_gpus(cluster_kwargs: Mapping[str, Any]) -> bool:
    """Whether dask-jobqueue options ask for GPUs (``--gres=gpu:N``, ``--gpus=N``, ``-G N``, ``ngpus=N``, a
    ``GPU`` worker resource) in the job directives, resource spec or worker arguments."""
    texts = []
    for key in ("job_extra_directives", "job_extra", "resource_spec", "worker_extra_args", "extra", "job_cpu"):
        value = cluster_kwargs.get(key)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, Iterable):
            texts.append(" ".join(str(v) for v in value))
    return any(_GPU_REQUEST.search(t) for t in texts)


# ------------------------------------------------------------------------------------------------ options


def list_options(cluster: str | None = None) -> frozenset[str]:
    """Cluster options whose value is a list: :data:`LIST_OPTIONS` plus every option whose default in the
    installed dask-jobqueue configuration (``jobqueue.<cluster>``) is a list."""
    names = set(LIST_OPTIONS)
    if cluster in ("slurm", "pbs"):
        with suppress(Exception):
            import dask
            import dask_jobqueue  # noqa: F401  (registers its configuration)

            for key, value in dask.config.get(f"jobqueue.{cluster}").items():
                if isinstance(value, list):
                    names.add(key.replace("-", "_"))
    return frozenset(names)


def _scalar(value: str) -> Any:
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            continue
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    return value


# the classes whose constructors receive the options of each cluster type (a cluster passes unknown options on to
# its workers or jobs, which fail only once started: on a worker, in a job script, or never visibly)
_OPTION_CLASSES = {
    "local": ("distributed.LocalCluster", "distributed.Nanny", "distributed.Worker"),
    "cuda": ("dask_cuda.LocalCUDACluster", "distributed.LocalCluster", "distributed.Nanny", "distributed.Worker"),
    "slurm": ("dask_jobqueue.SLURMCluster", "dask_jobqueue.slurm.SLURMJob"),
    "pbs": ("dask_jobqueue.PBSCluster", "dask_jobqueue.pbs.PBSJob"),
}


def cluster_option_names(cluster: str) -> frozenset[str] | None:
    """Every keyword the ``cluster`` type accepts: the named parameters of its cluster class and of the worker or
    job classes it passes the others on to (all classes in their MRO), or None when a class is not installed."""
    import importlib
    import inspect

    names: set[str] = set()
    for dotted in _OPTION_CLASSES.get(cluster, ()):
        module, _, attr = dotted.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return None
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            with suppress(TypeError, ValueError):
                for p in inspect.signature(init).parameters.values():
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                        names.add(p.name)
    return frozenset(names) if names else None


def check_cluster_options(cluster: str, options: Mapping[str, Any]) -> None:
    """Refuse options the ``cluster`` type does not take, before any cluster starts (see
    :func:`cluster_option_names`; nothing is checked when its classes are not installed).

    Raises:
        InvalidParameterError: naming the option, the closest valid ones and the classes that define them.
    """
    import difflib

    valid = cluster_option_names(cluster)
    if valid is None:
        return
    unknown = sorted(set(options) - valid)
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], sorted(valid), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    classes = ", ".join(_OPTION_CLASSES[cluster])
    raise InvalidParameterError(
        f"{option('cluster_kwargs')} {unknown[0]} is not an option of a {cluster} cluster{hint} (its options are the "
        f"parameters of {classes})"
    )


def parse_cluster_options(items: Iterable[str], *, cluster: str | None = None) -> dict[str, Any]:
    """``KEY=VALUE`` strings (CLI ``--cluster-option``) as cluster keyword arguments.

    Keys use ``_`` or ``-``. Values are ints, floats, true/false/none, or strings; a value starting with ``[`` or
    ``{`` is JSON. A list-valued option (:func:`list_options`: ``job_extra_directives``, ``worker_extra_args``, ...)
    always becomes a list, and repeating it appends: ``job_extra_directives=--gres=gpu:1`` gives
    ``["--gres=gpu:1"]``, never one entry per character.

    Raises:
        InvalidParameterError: an item without ``=``, invalid JSON (a key twice in an object too), a scalar option
            given twice (in either spelling), a list/dict value for a scalar option, or (with ``cluster``) a key that
            cluster type does not take.
    """
    lists = list_options(cluster)
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise InvalidParameterError(f"--cluster-option expects KEY=VALUE (e.g. memory=32GB), got {item!r}")
        if key in given and key not in lists:  # a scalar given twice: the later one would silently win
            raise InvalidParameterError(
                f"--cluster-option {key} is given twice ({given[key]!r} and {item!r}); keep one of them (only list "
                f"options such as job_extra_directives take repeats)"
            )
        given[key] = item
        parsed: Any
        if value.lstrip().startswith(("[", "{")):
            try:
                parsed = loads_json(value)
            except json.JSONDecodeError as exc:
                hint = (
                    "keep one of them"
                    if "given twice" in exc.msg
                    else 'write lists as \'["a", "b"]\' or repeat the option'
                )
                raise InvalidParameterError(
                    f"--cluster-option {key}: {value!r} is not valid JSON ({exc.msg}); {hint}"
                ) from exc
        else:
            parsed = value if key in lists else _scalar(value)
        if key in lists:
            entries = parsed if isinstance(parsed, list) else [parsed]
            out.setdefault(key, []).extend(str(e) for e in entries)
        elif key in DICT_OPTIONS and not isinstance(parsed, dict):
            raise InvalidParameterError(
                f'--cluster-option {key} takes a JSON object, e.g. {key}=\'{{"dashboard_address": ":8787"}}\''
            )
        else:
            out[key] = parsed
    if cluster is not None:
        check_cluster_options(cluster, out)
    return out


# ------------------------------------------------------------------------------------------------ clusters


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


def _pinned_gpu_cluster(devices: Sequence[str], n_workers: int | None, kwargs: dict[str, Any]) -> Any:
    """A LocalCluster whose workers each see one GPU (``CUDA_VISIBLE_DEVICES``) and declare ``GPU=1``."""
    from distributed import LocalCluster

    envs = gpu_worker_envs(devices, n_workers)

    class PinnedGPUCluster(LocalCluster):
        """LocalCluster with one pinned GPU per worker (workers are named gpu-0, gpu-1, ...)."""

        def new_worker_spec(self) -> dict[str, Any]:
            i = 0
            while f"gpu-{i}" in self.worker_spec:
                i += 1
            spec = copy.deepcopy(self.new_spec)
            options = spec.setdefault("options", {})
            options["env"] = {**(options.get("env") or {}), **envs[i % len(envs)]}
            return {f"gpu-{i}": spec}

    cl = PinnedGPUCluster(n_workers=0, **kwargs)
    cl.scale(len(envs))
    cl.wait_for_workers(len(envs), timeout=300)
    return cl


def jobqueue_cluster(cluster: str, *, gpu: bool = False, **cluster_kwargs: Any) -> Any:
    """A dask-jobqueue ``SLURMCluster``/``PBSCluster`` (no job submitted yet: call ``.scale(jobs=N)``).

    List-valued options given as a single string are wrapped in a list. With ``gpu`` each worker declares the
    resource ``GPU=1`` (so that one GPU task runs at a time per worker).

    Raises:
        MissingDependencyError: dask-jobqueue is not installed.
        InvalidParameterError: the options are rejected by dask-jobqueue.
    """
    jq = _optional("dask_jobqueue", "jobqueue", f"cluster={cluster!r}")
    cls = jq.SLURMCluster if cluster == "slurm" else jq.PBSCluster
    kwargs = dict(cluster_kwargs)
    for key in list_options(cluster):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = [kwargs[key]]
    if gpu:
        extra = [str(a) for a in kwargs.get("worker_extra_args") or []]
        if not _GPU_REQUEST.search(" ".join(extra)):
            extra += ["--resources", "GPU=1"]
        kwargs["worker_extra_args"] = extra
    kwargs.setdefault("processes", 1)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(f"cannot configure a {cluster} cluster: {exc}") from exc


def make_client(
    cluster: str = "local",
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    gpu: bool = False,
    gpu_devices: Sequence[str] | None = None,
    timeout: float = 30.0,
    **cluster_kwargs: Any,
) -> ClientHandle:
    """Connect to ``scheduler`` or start a cluster of ``workers`` worker processes (one thread each).

    * ``local``: ``distributed.LocalCluster``; default one worker per 2 usable CPUs (:func:`available_cpus`), or with
      ``gpu`` one worker per GPU. With more than one GPU (``gpu_devices``, default :func:`visible_gpus`) the workers
      are ``dask_cuda.LocalCUDACluster`` when dask-cuda is installed, else a LocalCluster whose workers are each
      pinned to one GPU through ``CUDA_VISIBLE_DEVICES`` (:func:`gpu_worker_envs`); every GPU worker declares
      ``GPU=1``.
    * ``slurm``/``pbs``: ``dask_jobqueue.SLURMCluster``/``PBSCluster`` scaled to ``workers`` jobs; ``cluster_kwargs``
      (cores, memory, queue, account, walltime, job_extra_directives...) go to the cluster. With ``gpu`` each worker
      declares the resource ``GPU=1``.
    * ``cuda``: ``dask_cuda.LocalCUDACluster`` (one worker per visible GPU, each declaring ``GPU=1``).

    Raises:
        SchedulerUnreachableError: no scheduler answered at ``scheduler`` within ``timeout`` seconds.
        InvalidParameterError: unknown cluster type, workers < 1, options the cluster rejects.
        MissingDependencyError: the cluster type needs dask-jobqueue or dask-cuda.
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

        devices = (list(gpu_devices) if gpu_devices is not None else visible_gpus()) if gpu else []
        kwargs: dict[str, Any] = {
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": ":0",
            "resources": resources,
        }
        kwargs.update(cluster_kwargs)
        n_workers = kwargs.pop("n_workers", None) or workers
        with _worker_environ():
            if len(devices) > 1:
                try:
                    import dask_cuda
                except ImportError:
                    cl = _pinned_gpu_cluster(devices, n_workers, kwargs)
                else:
                    kwargs.pop("processes", None)
                    cl = dask_cuda.LocalCUDACluster(
                        CUDA_VISIBLE_DEVICES=",".join(devices), n_workers=n_workers, **kwargs
                    )
            else:
                n = n_workers or (max(1, len(devices)) if gpu else max(1, available_cpus() // 2))
                cl = LocalCluster(n_workers=n, **kwargs)
    elif cluster == "cuda":
        dask_cuda = _optional("dask_cuda", "cuda", "cluster='cuda'")
        kwargs = {"threads_per_worker": 1, "resources": {"GPU": 1}, "dashboard_address": ":0"}
        if workers:
            kwargs["n_workers"] = workers
        if gpu_devices is not None:
            kwargs["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_devices)
        kwargs.update(cluster_kwargs)
        with _worker_environ():
            cl = dask_cuda.LocalCUDACluster(**kwargs)
    else:
        cl = jobqueue_cluster(cluster, gpu=gpu, **cluster_kwargs)
        cl.scale(jobs=workers or 1)
    return ClientHandle(Client(cl), cl, owned=True)


def _gpu_count() -> int:
    try:
        import torch

        return int(torch.cuda.device_count())
    except ImportError:
        return 0


__all__ = [
    "CLUSTERS",
    "ClientHandle",
    "available_cpus",
    "cgroup_cpu_limit",
    "check_cluster_options",
    "cluster_option_names",
    "cpu_budget",
    "gpu_worker_envs",
    "jobqueue_cluster",
    "make_client",
    "parse_cluster_options",
    "requests_gpus",
    "torch_threads_per_task",
    "visible_gpus",
]
