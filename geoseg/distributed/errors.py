"""Errors specific to batch runs (all are GeoSegErrors)."""

from __future__ import annotations

from geoseg.errors import GeoSegError


class NoInputsError(GeoSegError, FileNotFoundError):
    """A batch was given no rasters (empty list, a glob that matched nothing, an empty manifest)."""


class ManifestError(GeoSegError, ValueError):
    """A line of a jobs manifest (text/CSV) cannot be parsed; the message names the file and line number."""


class SchedulerUnreachableError(GeoSegError, ConnectionError):
    """No Dask scheduler answered at the given address within the timeout."""


class BatchTaskError(GeoSegError, RuntimeError):
    """Some tasks failed after all retries; finished tasks are recorded and a re-run resumes from them."""


__all__ = ["BatchTaskError", "ManifestError", "NoInputsError", "SchedulerUnreachableError"]
