"""Runs geoseg commands for the plugin's subprocess backend: one process per algorithm run, so torch is imported once.

Started by :class:`geoseg_qgis.backend.SubprocessBackend` with the Python of the geoseg environment (it imports
nothing from QGIS or the plugin)::

    python runner.py PARENT_PID '[["predict", ..., "--json"], ["vectorize", ..., "--json"]]' '["out.tif", ...]'

Each command runs through geoseg's own CLI (``geoseg.cli.main``) in this process, in order, until one fails. Before
each command a line ``{"command": INDEX}`` goes to stderr, where the command's JSON lines follow (progress, and its
errors, warnings and notes as ``{"error"|"warning"|"message": text}``; a warning from another thread may come as a
plain ``Warning:`` line). At the end stdout holds one JSON list: the ``--json`` result of each command that ran. The
exit status is the first failing command's (2: a geoseg error, 130: interrupted).

The process stops with the plugin: SIGTERM or SIGINT unwind geoseg (its temporary outputs are removed), and on Linux
the kernel sends SIGTERM when the QGIS process that started it dies (even by SIGKILL). An interrupted run removes the
outputs listed in the third argument (and a training state beside them) itself, so that none looks finished even when
no plugin is left to do it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _stop_with_parent(parent: int) -> None:
    """SIGTERM when the parent dies; exit now if it already has (it may die before prctl takes effect)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if parent and os.getppid() != parent:
        sys.exit(143)


def _run(cli: object, args: list[str]) -> tuple[int, object]:
    """Run one geoseg command; return its exit status and its --json result (None when it printed none)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            cli.main(args=args, prog_name="geoseg", standalone_mode=True)  # type: ignore[attr-defined]
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    text = out.getvalue().strip()
    try:  # the whole output (geoseg info indents its JSON) ...
        return code, json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):  # ... or its last line, after any other text
        if line.startswith("{"):
            try:
                return code, json.loads(line)
            except ValueError:
                break
    return code, None


def _remove(outputs: list[str]) -> None:
    for path in outputs:
        for p in (path, f"{path}.aux.xml", f"{path}.train-state.pt"):
            with contextlib.suppress(OSError):
                os.remove(p)


def main(argv: list[str]) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]  # the plugin's modules are not geoseg's
    signal.signal(signal.SIGINT, signal.default_int_handler)  # QGIS may have started us with SIGINT ignored
    _stop_with_parent(int(argv[1]))
    commands = json.loads(argv[2])
    outputs = json.loads(argv[3]) if len(argv) > 3 else []
    from geoseg.cli.main import cli

    results: list[object] = []
    code = 0
    try:
        for index, args in enumerate(commands):
            sys.stderr.write(json.dumps({"command": index}) + "\n")
            sys.stderr.flush()
            code, result = _run(cli, [str(a) for a in args])
            results.append(result)
            if code:
                break
    except KeyboardInterrupt:  # a signal between two commands
        code = 130
    if code == 130:  # interrupted: what completed before must not look like a finished run
        _remove(outputs)
    sys.stdout.write(json.dumps(results) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
