"""Validation of option values, shared by every entry point (Python, CLI, QGIS, Dask workers). No torch.

One place decides what a valid number, class list or option combination is, so the library refuses the same values
whatever calls it, before any work starts, with a message that names the option the way the caller spells it
(:mod:`geoseg.hints`):

* numbers (:class:`Bound`): integers and floats with their allowed range; NaN and infinities are refused unless a
  bound says otherwise; ``None`` means "use the default" and is always allowed where the parameter is optional, so
  0 never silently stands for the default;
* class names (:func:`check_class_names`): non-empty, distinct strings;
* values against a function's annotations (:func:`check_types`), e.g. a configuration file read as text;
* options that only make sense with another (:func:`check_requires`).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import numbers
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import numpy as np

from geoseg.errors import InvalidParameterError
from geoseg.hints import option

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Bound:
    """The valid values of a numeric option: ``integer`` or float, within ``[low, high]`` (``low_open`` /
    ``high_open`` exclude the ends), with a unit for messages. NaN is valid only with ``allow_nan``; infinities only
    when they fall within the bounds and ``allow_inf`` is set."""

    integer: bool
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    unit: str = ""
    allow_nan: bool = False
    allow_inf: bool = False

    def _num(self, v: float) -> str:
        return str(int(v)) if self.integer and float(v).is_integer() else f"{v:g}"

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low == 0 and self.low_open and self.high is None:
            kind = "a positive integer" if self.integer else "a positive number"
        elif self.low == 1 and not self.low_open and self.high is None and self.integer:
            kind = "a positive integer"
        elif self.low == 0 and not self.low_open and self.high is None:
            kind = "an integer >= 0" if self.integer else "a number >= 0"
        elif self.low is not None and self.high is not None:
            lo, hi = ("(" if self.low_open else "["), (")" if self.high_open else "]")
            kind += f" in {lo}{self._num(self.low)}, {self._num(self.high)}{hi}"
        elif self.low is not None:
            kind += f" {'>' if self.low_open else '>='} {self._num(self.low)}"
        elif self.high is not None:
            kind += f" {'<' if self.high_open else '<='} {self._num(self.high)}"
        return f"{kind} ({self.unit})" if self.unit else kind

    def valid(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        v = float(value)
        if math.isnan(v):
            return self.allow_nan
        if math.isinf(v) and not self.allow_inf:
            return False
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        return not (self.high is not None and (v > self.high or (self.high_open and v == self.high)))


POSITIVE_INT = Bound(integer=True, low=1)
NON_NEGATIVE_INT = Bound(integer=True, low=0)
ANY_INT = Bound(integer=True)
POSITIVE = Bound(integer=False, low=0, low_open=True)
NON_NEGATIVE = Bound(integer=False, low=0)
FRACTION = Bound(integer=False, low=0, high=1, high_open=True)

#: the most threads an option may ask for: 256, or the machine's cores when it has more
_MAX_THREADS = max(256, os.cpu_count() or 1)

#: the numeric options of the library, by parameter name: one definition for every function that takes them
BOUNDS: dict[str, Bound] = {
    "tile": Bound(integer=True, low=1, unit="pixels"),
    "overlap": Bound(integer=True, low=0, unit="pixels"),
    # beyond any accelerator's memory for the smallest tiles: larger values only fail allocating their buffers
    "batch_size": Bound(integer=True, low=1, high=65536, unit="tiles or chips per batch"),
    # reader threads: each holds tile buffers and a GDAL handle; far more than the cores only multiplies them
    "workers": Bound(integer=True, low=0, high=_MAX_THREADS, unit="reader threads"),
    "cache_mb": Bound(integer=False, low=0, unit="MiB; 0 never holds input blocks across tile rows", allow_inf=True),
    "window": Bound(integer=True, low=1, unit="pixels"),
    "region_size": Bound(integer=True, low=1, unit="pixels"),
    # attempts per failed task: a scene that fails 100 times fails for a reason a retry does not fix
    "retries": Bound(integer=True, low=0, high=100, unit="attempts per failed task"),
    "worker_timeout": Bound(integer=False, low=0, low_open=True, unit="seconds", allow_inf=True),
    "epochs": POSITIVE_INT,
    "chip": Bound(integer=True, low=8, high=16384, unit="pixels"),
    "chips_per_epoch": Bound(integer=True, low=1, high=10_000_000, unit="chips"),
    # AdamW's step is about lr per weight: at 1 and above every weight jumps by its own scale and training diverges
    "lr": Bound(integer=False, low=0, low_open=True, high=1, high_open=True, unit="AdamW learning rate"),
    "val_fraction": FRACTION,
    "block": Bound(integer=True, low=8, unit="pixels"),
    "patience": POSITIVE_INT,
    "seed": Bound(integer=True, low=0, high=2**32 - 1, unit="numpy and torch take seeds below 2**32"),
    "max_seconds": Bound(integer=False, low=0, low_open=True, unit="seconds", allow_inf=True),
    "min_area": Bound(integer=False, low=0, unit="square map units"),
    "simplify": Bound(integer=False, low=0, unit="map units"),
    "background": Bound(integer=True, low=0, unit="class id"),
    "ignore_index": ANY_INT,
    "nodata": Bound(integer=False, allow_nan=True, allow_inf=True),
    "label_nodata": Bound(integer=False, allow_nan=True, allow_inf=True),
    # torch's intra-op threads: more than the machine has only adds contention, and ~1e5 crashes the process
    "threads": Bound(integer=True, low=1, high=_MAX_THREADS, unit="CPU threads for torch"),
    "weight_decay": NON_NEGATIVE,
    "label_smoothing": FRACTION,
    "balance": Bound(integer=False, low=0, high=1, unit="0: classes as labelled, 1: equal"),
    # labelled pixels per per-pixel step: 2**20 of 200 bands is already 800 MB of float32 per batch
    "pixel_batch": Bound(integer=True, low=0, high=2**20, unit="pixels per batch; 0 trains no per-pixel classifier"),
    "pixel_steps": Bound(integer=True, low=0, high=10_000_000, unit="steps; 0 skips the per-pixel pre-training"),
    # each round is one more training run: beyond a few, pseudo-labels only repeat the previous model
    "self_training": Bound(integer=True, low=0, high=5, unit="rounds; 0 trains on the real labels only"),
    # a class probability: 0 would pseudo-label every pixel, whatever the model's doubt
    "pseudo_threshold": Bound(integer=False, low=0, low_open=True, high=1, unit="class probability"),
}


def check_number(
    name: str, value: Any, bound: Bound | None = None, *, default: str = "", source: str = "", shown: str | None = None
) -> None:
    """Refuse ``value`` for option ``name`` unless it is None or within ``bound`` (default: :data:`BOUNDS`).

    ``default`` says what omitting the option does (e.g. "the model's tile"), for the message; ``source`` prefixes
    the message and ``shown`` is the option's name as the user wrote it (as in :func:`check_types`; default: the
    CLI or Python spelling of ``name``).

    Raises:
        InvalidParameterError: naming the option, the value, what is valid, and that it may be omitted.
    """
    if value is None:
        return
    bound = bound or BOUNDS[name]
    if bound.valid(value):
        return
    omit = f"; omit it for {default}" if default else ""
    raise InvalidParameterError(f"{source}{shown or option(name)} must be {bound.describe()}, got {value!r}{omit}")


def check_numbers(
    values: Mapping[str, Any],
    bounds: Mapping[str, Bound] | None = None,
    *,
    source: str = "",
    names: Mapping[str, str] | None = None,
) -> None:
    """:func:`check_number` for every ``name: value`` (bounds from ``bounds``, else :data:`BOUNDS`; ``source`` and
    ``names`` as in :func:`check_types`)."""
    for name, value in values.items():
        bound = (bounds or {}).get(name) or BOUNDS[name]
        check_number(name, value, bound, source=source, shown=(names or {}).get(name))


def check_class_names(names: Any, *, what: str = "classes") -> list[str] | None:
    """Validate a class list (index = class id): non-empty, distinct strings. Returns it as a list (None stays None).

    Names that differ only in case or surrounding spaces (``Water``, `` water``) count as the same name: in a legend,
    a report or a QGIS style the two classes could not be told apart.

    Raises:
        InvalidParameterError: not a list of strings, an empty or blank name, or a name given twice.
    """
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise InvalidParameterError(f"{option(what)} must be a list of class names (index = class id), got {names!r}")
    out = list(names)
    if not out:
        raise InvalidParameterError(f"{option(what)} is empty; give at least one class name")
    shown = ",".join(str(n) for n in out)
    bad = [n for n in out if not isinstance(n, str)]
    if bad:
        raise InvalidParameterError(f"{option(what)} must be names (text); got {bad[0]!r} in [{shown}]")
    blank = [i for i, n in enumerate(out) if not n.strip()]
    if blank:
        raise InvalidParameterError(
            f"{option(what)} {shown!r} has an empty name at position {blank[0] + 1} (class id {blank[0]}); every "
            f"class needs a name"
        )
    seen: dict[str, int] = {}
    for i, n in enumerate(out):
        key = n.strip().casefold()
        if key in seen:
            raise InvalidParameterError(
                f"{option(what)} {shown!r} names {n!r} twice (class ids {seen[key]} and {i}); class names must be "
                f"distinct, one per class id"
            )
        seen[key] = i
    return out


def check_requires(given: Mapping[str, Any], requires: Mapping[str, tuple[str, str]]) -> None:
    """Refuse an option that only makes sense with another: ``requires`` maps an option to ``(other, why)``; an
    option counts as given when its value is not None/False.

    Raises:
        InvalidParameterError: "``option`` needs ``other`` (why)".
    """
    for name, (other, why) in requires.items():
        if given.get(name) not in (None, False) and given.get(other) in (None, False):
            raise InvalidParameterError(f"{option(name)} needs {option(other)} ({why}); add it or drop {option(name)}")


# ------------------------------------------------------------------------------------------------ types


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(tp) if a is not type(None)]
        optional = type(None) in typing.get_args(tp)
        return " or ".join(dict.fromkeys(names)) + (" (or null to use the default)" if optional else "")
    if origin is tuple and len(typing.get_args(tp)) > 1 and typing.get_args(tp)[1] is not Ellipsis:
        return f"a tuple ({', '.join(getattr(a, '__name__', str(a)) for a in typing.get_args(tp))})"
    if origin in (list, Sequence, tuple):
        args = typing.get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is os.PathLike:
        return "a path"
    if origin in (dict, Mapping):
        return "a mapping"
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "text",
        os.PathLike: "a path",
        type(None): "null",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def matches(value: Any, tp: Any) -> bool:
    """Whether ``value`` fits annotation ``tp`` (the JSON-like types of option signatures: int, float, bool, str,
    paths, lists, mappings, unions, Literal). Types it does not know (callables, classes) accept anything."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if origin in (list, Sequence, tuple):
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            return False
        args = typing.get_args(tp)
        return not args or all(matches(v, args[0]) for v in value)
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            return False
        args = typing.get_args(tp)
        return not args or all(matches(k, args[0]) and matches(v, args[1]) for k, v in value.items())
    if origin is os.PathLike or tp is os.PathLike:
        return isinstance(value, os.PathLike)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True


def check_types(
    func: Callable[..., Any],
    values: Mapping[str, Any],
    *,
    source: str = "",
    names: Mapping[str, str] | None = None,
    types: Mapping[str, Any] | None = None,
) -> None:
    """Refuse values that do not fit ``func``'s parameter annotations (e.g. ``epochs: ten`` in a YAML file).

    ``source`` prefixes the message (e.g. "config train.yaml: "); ``names`` maps parameters to the names the user
    wrote, when they differ; ``types`` gives the resolved annotations (default: ``typing.get_type_hints(func)``).

    Raises:
        InvalidParameterError: naming the option, the value, its type and the expected type.
    """
    hints = types if types is not None else typing.get_type_hints(func)
    for key, value in values.items():
        tp = hints.get(key)
        if tp is None or matches(value, tp):
            continue
        shown = (names or {}).get(key) or option(key)
        raise InvalidParameterError(
            f"{source}{shown} must be {_type_name(tp)}, got {_shown_value(value)} ({type(value).__name__})"
        )


def _shown_value(value: Any) -> str:
    """A value for a one-line message: arrays by shape and dtype, anything else by a repr cut to one short line."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} {value.dtype}"
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def _parameter_types(func: Callable[..., Any]) -> dict[str, Any]:
    """The annotations of ``func``'s parameters, resolved; one that cannot be resolved at run time (a name imported
    for type checkers only) is left out, i.e. not checked."""
    try:
        return typing.get_type_hints(func)
    except Exception:  # NameError of one annotation: resolve them one by one
        out: dict[str, Any] = {}
        for name, p in inspect.signature(func).parameters.items():
            ann = p.annotation
            if isinstance(ann, str):
                try:
                    ann = eval(ann, getattr(func, "__globals__", {}))  # noqa: S307 - the function's own annotation
                except Exception:
                    continue
            if ann is not inspect.Parameter.empty:
                out[name] = ann
        return out


def plain_value(value: Any) -> Any:
    """``value`` with numpy scalars (``np.int64(3)``, ``np.float32(0.5)``, ``np.bool_(True)``) replaced by the Python
    ``int``/``float``/``bool``/``str`` they hold, also inside lists, tuples and dicts; anything else (arrays, paths,
    data frames) is returned unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple) and type(value) in (list, tuple):
        return type(value)(plain_value(v) for v in value)
    if type(value) is dict:
        return {plain_value(k): plain_value(v) for k, v in value.items()}
    return value


def _list_like(value: Any) -> bool:
    """A one-dimensional numpy array or a pandas Index/Series: what a list option is often given as."""
    if isinstance(value, np.ndarray):
        return value.ndim == 1
    return type(value).__module__.startswith("pandas") and getattr(value, "ndim", 0) == 1


def plain_arguments(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a public function so that numpy scalars among its arguments count as the Python numbers they hold
    (:func:`plain_value`): ``tile=np.int64(256)`` or a value taken from an array then passes the same checks, and
    reaches the same code, as ``tile=256``; and so that an argument of a type its annotation does not allow (a
    number as a path, text as a number, an array as a file name) is refused before any work with
    :class:`~geoseg.errors.InvalidParameterError` naming it (:func:`check_types`), instead of failing later inside
    a library with a TypeError. A one-dimensional array or pandas Index/Series given where a list is expected
    (``classes=np.array([...])``) counts as that list. Annotations it cannot resolve or judge (classes, callables)
    accept anything. The wrapper is one more frame: a warning issued in the decorated function's body takes
    ``stacklevel=3`` to name its caller's line."""
    signature = inspect.signature(func)
    variadic = {n for n, p in signature.parameters.items() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    types_of: dict[str, Any] = {}

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        args = tuple(plain_value(a) for a in args)  # type: ignore[assignment]
        kwargs = {k: plain_value(v) for k, v in kwargs.items()}  # type: ignore[assignment]
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:  # a call of the wrong shape: Python's own message says which argument
            return func(*args, **kwargs)
        if not types_of:
            types_of.update(_parameter_types(func))
        for name, value in bound.arguments.items():  # a list option given as a 1-D array or a pandas Index/Series
            tp = types_of.get(name, Any)
            if name not in variadic and tp is not Any and _list_like(value) and matches([], tp):
                bound.arguments[name] = plain_value(list(value))
        check_types(func, {k: v for k, v in bound.arguments.items() if k not in variadic}, types=types_of)
        return func(*bound.args, **bound.kwargs)

    return wrapper


def loads_json(text: str) -> Any:
    """``json.loads`` for a user's option value, refusing an object that gives one key twice (RFC 8259 asks for unique
    names; Python's parser silently keeps the last value, so ``{"width": 8, "width": 16}`` would lose the first).

    Raises:
        json.JSONDecodeError: malformed JSON, or a key given twice in one object (its second place).
    """

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                quoted = json.dumps(key)
                second = text.find(quoted, text.find(quoted) + 1)
                raise json.JSONDecodeError(f"key {quoted} is given twice", text, max(second, 0))
            out[key] = value
        return out

    return json.loads(text, object_pairs_hook=unique)


__all__ = [
    "ANY_INT",
    "BOUNDS",
    "FRACTION",
    "NON_NEGATIVE",
    "NON_NEGATIVE_INT",
    "POSITIVE",
    "POSITIVE_INT",
    "Bound",
    "check_class_names",
    "check_number",
    "check_numbers",
    "check_requires",
    "check_types",
    "loads_json",
    "matches",
    "plain_arguments",
    "plain_value",
]
