"""Errors specific to batch runs (all are GeoSegErrors)."""

from __future__ import annotations

from typing import Any

from geoseg.errors import GeoSegError


class NoInputsError(GeoSegError, FileNotFoundError):
    """A batch was given no rasters (empty list, a glob that matched nothing, an empty manifest)."""


class ManifestError(GeoSegError, ValueError):
    """A line of a jobs manifest (text/CSV) cannot be parsed; the message names the file and line number."""


class SchedulerUnreachableError(GeoSegError, ConnectionError):
    """No Dask scheduler answered at the given address within the timeout."""


class NoWorkersError(GeoSegError, TimeoutError):
    """The Dask scheduler had no worker (or none with the resources the tasks need) within the wait timeout."""


class BatchTaskError(GeoSegError, RuntimeError):
    """Some scenes failed (unreadable input, missing truth, tasks failing after all retries); the others finished.

    ``result`` is the :class:`geoseg.distributed.BatchResult` of the run: finished scenes, and every failed scene with
    its reason (``result.failed``); it is also written to the JSON summary. Finished tasks are recorded in the
    manifest, so a re-run of the same command retries only what failed.
    """

    def __init__(self, message: str, *, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class SchedulerLostError(BatchTaskError):
    """The connection to the Dask scheduler was lost during the run; unfinished scenes are listed as failed."""


__all__ = [
    "BatchTaskError",
    "ManifestError",
    "NoInputsError",
    "NoWorkersError",
    "SchedulerLostError",
    "SchedulerUnreachableError",
]
