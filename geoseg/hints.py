"""How a message names an option: ``overwrite=True`` to a Python caller, ``--overwrite`` on the command line.

Library functions raise errors whose fix names an option ("pass overwrite=True to replace it"). The same error
reaches users of the ``geoseg`` command, who set options as flags. Messages build that part with :func:`option`,
which the CLI switches to flag spelling for the duration of a command (:func:`cli_spelling`), so one message serves
both, and neither audience is told to type the other's syntax.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_CLI: ContextVar[bool] = ContextVar("geoseg_cli_spelling", default=False)
_UNSET = object()

# library parameter -> CLI flag, where the flag is not simply ``--`` + the name with ``-`` for ``_``
FLAGS = {
    "truth_class_field": "--class-field",
    "truth_layer": "--truth-layer",
    "class_field": "--class-field",
    "checkpoint": "--model",
    "model": "--model",
    "probabilities": "--probabilities",
    "cluster_kwargs": "--cluster-option",
    "amp": "--no-amp",
}


def flag(name: str) -> str:
    """The CLI flag of library parameter ``name`` (``batch_size`` -> ``--batch-size``)."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


class Placeholder(str):
    """A value that stands for what the user gives (``VALUE``, ``[...]``): written as is, never quoted, with its own
    command-line form when that differs (``classes=[...]`` but ``--classes NAMES``)."""

    cli: str

    def __new__(cls, text: str, cli: str | None = None) -> Placeholder:
        self = super().__new__(cls, text)
        self.cli = cli if cli is not None else text
        return self


def placeholder(text: str, cli: str | None = None) -> Placeholder:
    """A :class:`Placeholder` for :func:`option`: ``option("nodata", placeholder("VALUE"))`` -> ``nodata=VALUE`` or
    ``--nodata VALUE``."""
    return Placeholder(text, cli)


#: a list of class names, as messages ask for one: ``classes=[...]``, ``--classes NAMES``
CLASS_LIST = Placeholder("[...]", "NAMES")


def option(name: str, value: object = _UNSET, *, cli_flag: str | None = None) -> str:
    """How the reader sets ``name`` (to ``value``): ``name=value`` from Python, ``--flag value`` on the CLI.

    A boolean True becomes the bare flag (``--overwrite``), as does False with a ``--no-`` ``cli_flag``
    (``--no-refit``); without ``value`` only the name or flag is returned.
    ``cli_flag`` overrides the flag (e.g. ``--out`` for ``out_dir`` of the demo). Text is quoted for Python
    (``bands='1,2'``) unless it is a :func:`placeholder`.
    """
    if _CLI.get():
        f = cli_flag or flag(name)
        if value is _UNSET or value is True or (value is False and f.startswith("--no-")):
            return f
        return f"{f} {value.cli if isinstance(value, Placeholder) else value}"
    if value is _UNSET:
        return name
    if isinstance(value, Placeholder):
        return f"{name}={value}"
    return f"{name}={value!r}" if isinstance(value, str) else f"{name}={value}"


def on_cli() -> bool:
    """True while a ``geoseg`` command runs (messages use flag spelling)."""
    return _CLI.get()


@contextlib.contextmanager
def cli_spelling() -> Iterator[None]:
    """Within the block, :func:`option` spells options as command-line flags."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


__all__ = ["CLASS_LIST", "FLAGS", "Placeholder", "cli_spelling", "flag", "on_cli", "option", "placeholder"]
