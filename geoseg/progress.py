"""One progress/cancel protocol for every long-running function.

A callback receives ``(done, total, message)`` and returns ``True`` to ask the work to stop. The same function
drives a tqdm bar in the CLI, ``QgsProcessingFeedback`` in QGIS, JSON lines for subprocess backends, or logs.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any, Protocol

from geoseg.errors import CancelledError


class ProgressCallback(Protocol):
    def __call__(self, done: int, total: int, message: str = "", /) -> bool | None: ...


def report_progress(callback: ProgressCallback | None, done: int, total: int, message: str = "") -> None:
    """Call ``callback`` (when given) with ``done`` of ``total`` steps.

    Raises:
        CancelledError: the callback returned True (asked to stop).
    """
    if callback is not None and callback(done, total, message):
        raise CancelledError(f"cancelled at {done}/{total} {message}".strip())


#: seconds between two progress lines when stderr is not a terminal (a log file, CI, nohup): each line of a bar
#: written there stays, so it is redrawn only this often, plus once when the work ends
LOG_INTERVAL_S = 30.0
#: seconds between two redraws on a terminal
TERMINAL_INTERVAL_S = 0.1


class TqdmProgress:
    """A tqdm progress bar as a callback (CLI). The bar appears at the first update, so a command that fails its
    checks before any work prints its one-line error alone. It is redrawn at most every ``interval`` seconds
    (default :data:`TERMINAL_INTERVAL_S` on a terminal, :data:`LOG_INTERVAL_S` when stderr is a file or a pipe, where
    every redraw would stay as a line of the log) and when the work ends."""

    def __init__(
        self, desc: str = "", unit: str = "tile", disable: bool = False, interval: float | None = None
    ) -> None:
        self._options = {"desc": desc, "unit": unit, "disable": disable, "dynamic_ncols": True}
        self._bar: Any = None
        self._interval = interval
        self._last = 0.0

    def __call__(self, done: int, total: int, message: str = "", /) -> bool:
        now = time.monotonic()
        if self._bar is None:
            from tqdm import tqdm

            if self._interval is None:
                self._interval = TERMINAL_INTERVAL_S if _is_terminal(sys.stderr) else LOG_INTERVAL_S
            self._bar = tqdm(total=total, mininterval=self._interval, **self._options)
            self._last = now
        changed = self._bar.total != total
        if changed:
            self._bar.total = total
        self._bar.n = done
        if message:
            self._bar.set_postfix_str(message, refresh=False)
        if changed or done >= total or now - self._last >= (self._interval or 0.0):
            self._bar.refresh()
            self._last = now
        return False

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class JsonLinesProgress:
    """Writes one JSON object per update (``{"progress": 0.42, "done": .., "total": .., "message": ..}``)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self._last = -1.0

    def __call__(self, done: int, total: int, message: str = "", /) -> bool:
        frac = done / total if total else 1.0
        if frac - self._last >= 0.005 or done == total:
            self._last = frac
            line = {"progress": round(frac, 4), "done": done, "total": total, "message": message}
            self.stream.write(json.dumps(line) + "\n")
            self.stream.flush()
        return False

    def close(self) -> None:
        """Nothing to release (same interface as :class:`TqdmProgress`)."""
