"""CPU threads for torch: a sensible default and a context manager that restores the previous setting.

torch imports lazily here, so this module works without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover  (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Threads torch uses when the caller does not say: the cores this process may use that other processes are not
    already busy with (cores minus the 1-minute load average, rounded), at least 1.

    torch's own default (one thread per core) assumes an idle machine. Its worker threads synchronise after every
    operation, so on a busy machine each step waits for the slowest, descheduled thread: measured on a 2-core machine
    with a load average near 10, one training step took 12.6 s with 2 threads and 2.2 s with 1 (one epoch of
    ``benchmarks/accuracy.py``'s Samson scene: 54 s vs 13 s). On an idle machine this is every core, as in torch.
    """
    cores = available_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover  (Windows)
        return cores
    return max(1, min(cores, int(cores - load + 0.5)))


def check_threads(threads: int | None) -> None:
    """Refuse a ``threads`` that is not a whole number in :data:`geoseg.options.BOUNDS` (1 .. max(256, cores)).

    Raises:
        InvalidParameterError: naming the value and the valid range.
    """
    from geoseg.options import check_number

    check_number("threads", threads, default="the idle cores")


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` intra-op threads (``None``: :func:`default_threads`); restore on exit."""
    import torch

    check_threads(threads)
    n = default_threads() if threads is None else threads
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)
