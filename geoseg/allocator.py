"""The glibc allocator: the one process-wide setting geoseg recommends for CPU inference, and the one call that hands
freed memory back to the OS. Linux/glibc only; a no-op elsewhere. No torch.

:func:`configure_cpu_allocator` changes how the whole process allocates, so no library function calls it: the
``geoseg`` CLI calls it before predicting on the CPU, Dask workers running geoseg's batch tasks on the CPU call it when
they start, and a Python program that predicts on the CPU calls it once at startup if it wants the speed-up::

    from geoseg.allocator import configure_cpu_allocator
    configure_cpu_allocator()

:func:`release_freed_memory` changes no setting; the streaming vectorizer calls it after every window so that its
resident memory stays bounded.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters
_allocator_tuned: bool | None = None
_libc: Any = None


def _glibc() -> Any:
    """The C library when it is glibc on Linux, else None (loaded once)."""
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL("libc.so.6")
                _libc = lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else False
            except OSError:  # not glibc (musl, ...)
                pass
    return _libc or None


def configure_cpu_allocator() -> bool:
    """Make glibc keep large freed blocks for reuse instead of unmapping them (once per process; Linux/glibc only).

    CPU inference allocates activations of tens to hundreds of MB per layer; by default glibc serves each with a fresh
    ``mmap`` and returns it with ``munmap``, so every forward pass page-faults all of its memory again (measured: half
    the CPU time of a U-Net forward on 1024-px tiles). Serving them from the heap and not trimming it removes that;
    the process keeps its peak working set instead of returning it between passes. Set ``GEOSEG_MALLOC_TUNING=0`` to
    leave the allocator alone. Returns whether the tuning is active.
    """
    global _allocator_tuned
    if _allocator_tuned is not None:
        return _allocator_tuned
    _allocator_tuned = False
    libc = _glibc()
    if os.environ.get("GEOSEG_MALLOC_TUNING", "1") != "0" and libc is not None:
        _allocator_tuned = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _allocator_tuned


def release_freed_memory() -> None:
    """Hand memory freed so far back to the OS (glibc ``malloc_trim``, and Arrow's pool when pyarrow is loaded).

    Large per-window temporaries otherwise leave the heap fragmented, and resident memory creeps up with the number of
    windows processed.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        pa.default_memory_pool().release_unused()


__all__ = ["configure_cpu_allocator", "release_freed_memory"]
