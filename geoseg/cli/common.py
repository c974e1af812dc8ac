"""Shared CLI plumbing: error reporting, progress bars, option types."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from geoseg.errors import GeoSegError
from geoseg.hints import cli_spelling

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """The boundary of every command: each failure becomes one line on stderr, never a traceback.

    * a :class:`~geoseg.errors.GeoSegError` (a bad input or option; the library names the fix): ``Error: <message>``,
      exit status 2; a missing optional dependency: the ``pip install`` that fixes it, exit 2;
    * an operating-system error (permission denied, a vanished file): ``Error: <what>: <path>``, exit 2;
    * anything else (a bug, or an input no check foresaw): one line naming the command, its input paths and the
      exception, exit status 1;
    * Ctrl-C, SIGTERM and SIGHUP: exit status 130 after the outputs' temporary files are removed;
    * stdout closed by its reader (``| head``): exit status 141 without a message, as a shell's SIGPIPE.

    ``geoseg --debug`` (or ``GEOSEG_DEBUG=1``) shows the traceback as well, and third-party warnings. Messages spell
    options as flags (``--overwrite``, not ``overwrite=True``; see :mod:`geoseg.hints`).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _terminate_as_interrupt()
        debug = debug_enabled()
        try:
            with warnings.catch_warnings(), cli_spelling():
                warnings.simplefilter("default")
                warnings.showwarning = functools.partial(_show_warning, debug=debug)
                return func(*args, **kwargs)
        except click.exceptions.ClickException:
            raise
        except GeoSegError as exc:
            _fail(f"Error: {exc}", 2, debug, exc)
        except ModuleNotFoundError as exc:
            from geoseg.deps import IMPORT_TO_DIST, missing_dependency_message

            if not exc.name or exc.name.split(".")[0] not in IMPORT_TO_DIST:
                _fail(_unexpected(exc), 1, debug, exc)
            _fail(f"Error: {missing_dependency_message(exc.name)}", 2, debug, exc)
        except KeyboardInterrupt:
            name = _command_name()
            echo_status(INTERRUPTED.get(name, INTERRUPTED[""]), kind="error")
            sys.exit(130)
        except MemoryError as exc:
            _fail(_out_of_memory(), 1, debug, exc)
        except BrokenPipeError:  # the reader of stdout went away (`geoseg info x.tif | head -3`): nothing to report
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
            sys.exit(141)  # 128 + SIGPIPE, as a shell reports a command a closed pipe stopped
        except OSError as exc:
            what = exc.strerror or str(exc)
            where = f": {exc.filename}" if exc.filename else ""
            _fail(f"Error: {what}{where}", 2, debug, exc)
        except Exception as exc:
            if _is_out_of_memory(exc):
                _fail(_out_of_memory(), 1, debug, exc)
            _fail(_unexpected(exc), 1, debug, exc)

    return wrapper  # type: ignore[return-value]


def _is_out_of_memory(exc: BaseException) -> bool:
    """torch's allocation failures (``torch.OutOfMemoryError``, the CPU allocator's RuntimeError), which are not
    MemoryError."""
    return type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(exc)


def _out_of_memory() -> str:
    sizes = "--chip, --batch-size" if _command_name() == "train" else "--tile, --batch-size"
    return f"Error: geoseg {_command_name()} ran out of memory; use smaller tiles or batches ({sizes}) or free memory"


def _given(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` was set on the command line or in the environment (not left at its default)."""
    source = ctx.get_parameter_source(name)
    if source in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
        return False
    return ctx.params.get(name) not in (None, False, (), "")


def _flag(ctx: click.Context, name: str) -> str:
    for param in ctx.command.params:
        if param.name == name:
            return max(param.opts, key=len) if isinstance(param, click.Option) else param.human_readable_name
    return "--" + name.replace("_", "-")


def check_option_pairs(
    *, requires: Mapping[str, tuple[str, str]] | None = None, conflicts: Mapping[str, tuple[str, str]] | None = None
) -> None:
    """Refuse options that only make sense with another one, or that another one makes meaningless, before any work.

    ``requires``/``conflicts`` map an option (parameter name) to ``(other option, why)``. Options left at their
    default never count, so a default value is not mistaken for a choice.

    Raises:
        InvalidParameterError: e.g. "--report needs --truth (the report scores the class map against ground truth)".
    """
    from geoseg.errors import InvalidParameterError

    ctx = click.get_current_context()
    for name, (other, why) in (requires or {}).items():
        if _given(ctx, name) and not _given(ctx, other):
            raise InvalidParameterError(
                f"{_flag(ctx, name)} needs {_flag(ctx, other)} ({why}); add {_flag(ctx, other)} or drop "
                f"{_flag(ctx, name)}"
            )
    for name, (other, why) in (conflicts or {}).items():
        if _given(ctx, name) and _given(ctx, other):
            raise InvalidParameterError(f"{_flag(ctx, name)} cannot be used with {_flag(ctx, other)} ({why})")


#: what Ctrl-C / SIGTERM leaves, by command
INTERRUPTED = {
    "": "Interrupted: no partial output was left behind.",
    "train": "Interrupted: the best checkpoint so far and the training state were kept; --resume continues.",
    "batch": "Interrupted: finished regions were kept; run the same command again to resume.",
}


def debug_enabled() -> bool:
    """True with ``geoseg --debug`` or a non-empty ``GEOSEG_DEBUG`` other than 0/false/no."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    if root is not None and isinstance(root.obj, dict) and root.obj.get("debug"):
        return True
    return os.environ.get("GEOSEG_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _command_name() -> str:
    ctx = click.get_current_context(silent=True)
    return (ctx.info_name or "") if ctx is not None else ""


def _input_paths() -> list[str]:
    """The paths the running command was given (its click.Path arguments and options), for messages."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return []
    paths: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if not isinstance(param.type, click.Path) or value in (None, "", ()):
            continue
        paths += [str(v) for v in value] if isinstance(value, tuple | list) else [str(value)]
    return paths


def _unexpected(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    if len(text) > 300:
        text = text[:297] + "..."
    name = _command_name()
    inputs = _input_paths()
    on = f" on {', '.join(inputs)}" if inputs else ""
    return (
        f"Error: geoseg {name} failed{on}: {type(exc).__name__}: {text} (not a known input problem; "
        f"`geoseg --debug {name} ...` shows where, for a bug report)"
    )


def _fail(message: str, status: int, debug: bool, exc: BaseException | None = None) -> NoReturn:
    """Print ``message`` as the one error line (and as JSON on stdout with ``--json``), then exit with ``status``."""
    if exc is not None:
        _json_error(exc, message.removeprefix("Error: "))
    if debug:
        import traceback

        traceback.print_exc(file=sys.stderr)
    echo_status(message)
    sys.exit(status)


def _terminate_as_interrupt() -> None:
    """Make SIGTERM and SIGHUP unwind like Ctrl-C, so temporary outputs are removed instead of left behind."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _raise)


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def is_own_warning(category: type[Warning], filename: str) -> bool:
    """A warning geoseg issues (its own categories, or a plain UserWarning from geoseg's code), as opposed to one
    from a library it uses (deprecations, numpy's floating-point warnings, ...)."""
    if category.__module__.split(".")[0] == "geoseg":
        return True
    return category is UserWarning and os.path.abspath(filename).startswith(_PACKAGE + os.sep)


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: Any, debug: bool = False, **__: Any
) -> None:
    if is_own_warning(category, filename):
        echo_status(f"Warning: {message}")
    elif debug:
        echo_status(f"Warning ({category.__name__} from {filename}:{lineno}): {message}", kind="warning")


#: the kinds of status line on stderr, and the prefix each has as plain text
STATUS_PREFIXES = {"error": "Error: ", "warning": "Warning: ", "message": ""}


def json_status_lines(argv: list[str] | None = None) -> bool:
    """Whether this command's stderr is JSON lines (``--progress json``): from the running command's options, or,
    before click has parsed them (a usage error), from ``argv``."""
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if "progress_kind" in ctx.params:
            return ctx.params["progress_kind"] == "json"
        ctx = ctx.parent
    args = list(sys.argv[1:] if argv is None else argv)
    return "--progress=json" in args or any(a == "--progress" and b == "json" for a, b in zip(args, args[1:]))


def echo_status(line: str, *, kind: str | None = None, argv: list[str] | None = None) -> None:
    """Write one status line (an error, a warning, a note) on stderr: as text, or with ``--progress json`` as a JSON
    object ``{"error"|"warning"|"message": text}`` so that every stderr line a program reads is JSON.

    ``kind`` defaults to what the line's prefix says (``Error: ``, ``Warning: ``, else a message); the prefix is
    left out of the JSON text."""
    if kind is None:
        kind = next((k for k, p in STATUS_PREFIXES.items() if p and line.startswith(p)), "message")
    if not json_status_lines(argv):
        click.echo(line, err=True)
        return
    click.echo(json.dumps({kind: line.removeprefix(STATUS_PREFIXES.get(kind, ""))}), err=True)


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


#: ``--cache-mb`` of the commands that predict (predict, batch): the block-reuse budget of ``predict_raster``
cache_mb_option = click.option(
    "--cache-mb",
    type=float,
    default=None,
    help="Block-reuse budget in MiB: input blocks shared by two tile rows are held across the width only within it "
    "(peak memory <= a small raster's + this). Default: 64 on CPU, 1/8 of free host memory with a GPU.",
)

json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the result as one JSON object on stdout (for other programs) instead of text; an error is printed "
    'as {"error": MESSAGE, "type": ERROR CLASS} too.',
)


def _plain(obj: Any) -> Any:
    """``obj`` with paths as strings and NaN/inf as None, so that any JSON parser reads it."""
    import math
    import os

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    return str(obj)


def emit_result(as_json: bool, result: dict[str, Any], text: Callable[[], None]) -> None:
    """The one way a command reports what it did: ``result`` as one line of JSON on stdout with ``--json``, else the
    human text that ``text()`` prints. ``result`` holds plain data (paths, numbers, names; NaN becomes null)."""
    if as_json:
        click.echo(json.dumps(_plain(result), allow_nan=False))
    else:
        text()


def json_error(exc: BaseException, message: str | None = None) -> str:
    """The JSON object ``--json`` prints on stdout for an error: ``{"error": MESSAGE, "type": ERROR CLASS}``."""
    return json.dumps({"error": message or str(exc), "type": type(exc).__name__})


def _json_error(exc: BaseException, message: str | None = None) -> None:
    """With ``--json``, also print the error as JSON on stdout (the ``Error:`` line on stderr stays)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.params.get("as_json"):
        click.echo(json_error(exc, message))


def describe_refit(refit: Mapping[str, Any]) -> str:
    """The line ``train`` and ``info`` give a model trained again on every label (a contract's
    ``extra["training"]["refit"]``, :attr:`geoseg.train.TrainResult.refit`)."""
    return (
        f"trained again on every label ({refit.get('pixels')} px, validation blocks included) for "
        f"{refit.get('epochs')} epoch(s)"
    )
