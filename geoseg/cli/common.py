"""Shared CLI plumbing: error reporting, progress bars, option types."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from geoseg.errors import GeoSegError

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn GeoSegErrors into ``Error: <message>`` on stderr and exit status 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _terminate_as_interrupt()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                warnings.showwarning = _show_warning
                return func(*args, **kwargs)
        except GeoSegError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except ModuleNotFoundError as exc:
            from geoseg.deps import IMPORT_TO_DIST, missing_dependency_message

            if not exc.name or exc.name.split(".")[0] not in IMPORT_TO_DIST:
                raise
            click.echo(f"Error: {missing_dependency_message(exc.name)}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("Interrupted: no partial output was left behind.", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _terminate_as_interrupt() -> None:
    """Make SIGTERM unwind like Ctrl-C, so temporary outputs are removed instead of left behind."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    click.echo(f"Warning: {message}", err=True)


@contextlib.contextmanager
def progress_display(kind: str, desc: str, unit: str = "tile") -> Iterator[Any]:
    """A progress callback for ``--progress bar|json|none``, closed (bar finished) when the block ends."""
    from geoseg.progress import JsonLinesProgress, TqdmProgress

    progress = JsonLinesProgress(sys.stderr) if kind == "json" else TqdmProgress(desc, unit, disable=kind == "none")
    try:
        yield progress
    finally:
        progress.close()


progress_option = click.option(
    "--progress",
    "progress_kind",
    type=click.Choice(["bar", "json", "none"]),
    default="bar",
    show_default=True,
    help="Progress display: a bar, JSON lines on stderr (for other programs), or nothing.",
)


def tune_cpu_allocator(device: str | None) -> None:
    """Before predicting on the CPU: let glibc keep large freed blocks
    (:func:`geoseg.allocator.configure_cpu_allocator`: a process-wide setting the CLI makes on behalf of the user; the
    library never does). Imports torch."""
    from geoseg.allocator import configure_cpu_allocator
    from geoseg.models.device import resolve_device

    if resolve_device(device).type == "cpu":
        configure_cpu_allocator()


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))
