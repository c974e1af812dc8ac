"""Public functions and classes document the errors they raise (DESIGN conventions 2 and 10)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import textwrap

import pytest

import geoseg


def _public() -> list[tuple[str, object]]:
    names = ["geoseg"] + [
        m.name
        for m in pkgutil.walk_packages(geoseg.__path__, "geoseg.")
        if ".cli" not in m.name and "__main__" not in m.name
    ]
    found: dict[int, tuple[str, object]] = {}
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:  # an optional extra (e.g. onnxruntime) that this environment lacks
            continue
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr, None)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__.startswith("geoseg"):
                found.setdefault(id(obj), (f"{obj.__module__}.{obj.__qualname__}", obj))
    return sorted(found.values(), key=lambda t: t[0])


def _raises_itself(obj: object) -> bool:
    """Whether the function (or the class's __init__/__post_init__) has a raise statement of its own."""
    if inspect.isclass(obj):
        bodies = [obj.__dict__[m] for m in ("__init__", "__post_init__") if m in obj.__dict__]
    else:
        bodies = [obj]
    for body in bodies:
        try:
            source = inspect.getsource(body)
        except (OSError, TypeError):  # generated (dataclass __init__): no raise of its own
            continue
        tree = ast.parse(textwrap.dedent(source))
        if any(isinstance(n, ast.Raise) and n.exc is not None for n in ast.walk(tree)):
            return True
    return False


@pytest.mark.parametrize(("name", "obj"), _public(), ids=lambda v: v if isinstance(v, str) else "")
def test_public_docstring_lists_the_errors_raised(name: str, obj: object) -> None:
    if not _raises_itself(obj):
        return
    doc = inspect.getdoc(obj) or ""
    assert "Raises:" in doc, f"{name} raises errors but its docstring has no 'Raises:' section"
