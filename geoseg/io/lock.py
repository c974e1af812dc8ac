"""A lock file that gives one process at a time an output folder, with its owner and stale-lock detection.

The lock is a small JSON file created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and NFSv3+) that names
its owner: host, pid, process start time, boot id, start time and command line. While it is held, a thread refreshes
its modification time every ``heartbeat`` seconds. Another process finding the lock decides whether its owner still
runs:

* same host (and same boot): the owner's pid must exist with the recorded start time (a reused pid does not count);
* another host: the lock must have been refreshed within ``stale_after`` seconds (hosts cannot see each other's
  processes; the heartbeat stands in for them).

A stale lock (owner gone, e.g. killed with SIGKILL or its node lost) is taken over, with a message; a live one is
refused with :class:`geoseg.errors.OutputLockedError` naming the owner.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from geoseg.errors import OutputLockedError

HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0
_STARTING_S = 10.0  # an empty or half-written lock younger than this is a run that is creating it right now


def _boot_id() -> str | None:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return None


def process_start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux ``/proc/<pid>/stat`` field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat[stat.rindex(")") + 2 :].split()[19])  # fields after "(comm)" start at field 3
    except (ValueError, IndexError):
        return None


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """True when process ``pid`` runs on this host (and started at ``start_ticks``, when given and known)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except OSError:
        return False
    if start_ticks is not None:
        now = process_start_ticks(pid)
        if now is not None and now != start_ticks:
            return False  # the pid was reused by another process
    return True


# ------------------------------------------------------------------ owners of temporary files


def _host_tag() -> str:
    """8 hex digits naming this host and PID namespace (containers on one host with one hostname differ here)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return hashlib.sha1(f"{socket.gethostname()}|{namespace}".encode()).hexdigest()[:8]


def owner_token() -> str:
    """``PID-START-HOST``: names the calling process in temporary file names (see :func:`owner_alive`).

    ``START`` is the process's start time in clock ticks (0 where unknown), so that a reused pid is not mistaken for
    the owner; ``HOST`` is :func:`_host_tag`.
    """
    pid = os.getpid()
    return f"{pid}-{process_start_ticks(pid) or 0}-{_host_tag()}"


OWNER_PATTERN = r"\d+-\d+-[0-9a-f]{8}"


def owner_alive(token: str) -> bool | None:
    """Whether the process named by an :func:`owner_token` still runs: True or False for a process of this host (and
    PID namespace), None for another host's, whose processes cannot be seen from here."""
    try:
        pid_s, start_s, tag = token.split("-")
        pid, start = int(pid_s), int(start_s)
    except ValueError:
        return None
    if tag != _host_tag():
        return None
    return pid_alive(pid, start or None)


class FolderLock:
    """Exclusive use of a folder by one process, through the lock file ``path`` (see the module docstring).

    Use as a context manager, or call :meth:`acquire` and :meth:`release`. ``on_message`` receives one line when a
    stale lock is taken over. Not re-entrant.

    Raises:
        OutputLockedError: (from :meth:`acquire`) another live process holds the lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        what: str = "geoseg",
        heartbeat: float = HEARTBEAT_S,
        stale_after: float = STALE_AFTER_S,
        on_message: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.what = what
        self.heartbeat = heartbeat
        self.stale_after = max(stale_after, 3 * heartbeat)
        self.on_message = on_message
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False

    # ------------------------------------------------------------------ owner records
    def _record(self) -> dict[str, Any]:
        pid = os.getpid()
        return {
            "what": self.what,
            "host": socket.gethostname(),
            "pid": pid,
            "pid_start": process_start_ticks(pid),
            "boot_id": _boot_id(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)[:1000],
            "token": self.token,
        }

    def _read(self, path: Path | None = None) -> tuple[dict[str, Any] | None, bytes, float | None]:
        path = path or self.path
        try:
            raw = path.read_bytes()
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return None, b"", None
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            rec = None
        return (rec if isinstance(rec, dict) else None), raw, mtime

    @staticmethod
    def describe(rec: dict[str, Any] | None) -> str:
        if not rec:
            return "an unknown process"
        parts = [f"host {rec.get('host')}, pid {rec.get('pid')}"]
        if rec.get("started"):
            parts.append(f"started {rec['started']}")
        if rec.get("command"):
            parts.append(f"command: {rec['command']}")
        return "; ".join(parts)

    def owner_alive(self, rec: dict[str, Any] | None, mtime: float | None) -> tuple[bool, str]:
        """Whether the owner of a lock with record ``rec`` and modification time ``mtime`` still runs, and why."""
        age = time.time() - mtime if mtime is not None else float("inf")
        if rec is None:
            if age < _STARTING_S:
                return True, "another run is creating the lock right now"
            return False, "the lock file is empty or unreadable"
        same_host = rec.get("host") == socket.gethostname()
        same_boot = rec.get("boot_id") is None or rec.get("boot_id") == _boot_id()
        if same_host and same_boot:
            try:
                pid = int(rec.get("pid", -1))
            except (TypeError, ValueError):
                pid = -1
            start = rec.get("pid_start")
            if pid_alive(pid, int(start) if isinstance(start, int) else None):
                return True, f"process {pid} is running on this host"
            return False, f"process {pid} no longer runs on this host"
        if same_host:
            return False, "this host rebooted since the lock was taken"
        if age <= self.stale_after:
            return True, (
                f"it runs on another host; its lock was refreshed {age:.0f} s ago (it counts as stale after "
                f"{self.stale_after:.0f} s without refresh)"
            )
        return False, f"it ran on host {rec.get('host')} and its lock was last refreshed {age:.0f} s ago"

    # ------------------------------------------------------------------ acquire / release
    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, (json.dumps(self._record(), indent=1) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _break(self, raw: bytes) -> bool:
        """Remove the stale lock whose bytes are ``raw``; False if the file changed meanwhile (someone else won)."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # already gone
        try:
            if aside.read_bytes() == raw:
                return True
            # a fresh lock replaced the stale one between our read and our rename: put it back
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
            return False
        finally:
            with contextlib.suppress(OSError):
                aside.unlink()

    def acquire(self) -> FolderLock:
        """Take the lock (taking over a stale one); raise OutputLockedError when a live owner holds it."""
        if self.held:
            return self
        for _ in range(5):
            if self._create():
                self.held = True
                self._start_heartbeat()
                return self
            rec, raw, mtime = self._read()
            if mtime is None:
                continue  # removed between our attempt and our read: try again
            alive, why = self.owner_alive(rec, mtime)
            if alive:
                raise OutputLockedError(
                    f"{self.path.parent} is in use by another {self.what} run ({self.describe(rec)}): {why}. Wait for "
                    f"it to finish or use another output folder; if that run is gone, delete {self.path}"
                )
            if self._break(raw) and self.on_message is not None:
                self.on_message(f"took over the stale lock {self.path} of {self.describe(rec)}: {why}")
        raise OutputLockedError(f"could not take the lock {self.path}: other runs keep creating it; try again")

    def _start_heartbeat(self) -> None:
        if self.heartbeat <= 0:
            return

        def beat() -> None:
            while not self._stop.wait(self.heartbeat):
                with contextlib.suppress(OSError):
                    os.utime(self.path)

        self._stop.clear()
        self._thread = threading.Thread(target=beat, name="geoseg-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Remove the lock file if it is still ours (never another run's lock)."""
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        rec, _, _ = self._read()
        if rec is not None and rec.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.held = False

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["FolderLock", "owner_alive", "owner_token", "pid_alive", "process_start_ticks"]
