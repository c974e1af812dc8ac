"""Names a package exports lazily (PEP 562): the package maps each name to the module that defines it, and that module
is imported on first access, so importing the package imports neither torch nor optional extras."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


def lazy_attribute(namespace: dict[str, Any], lazy: Mapping[str, str], name: str) -> Any:
    """The value of ``name`` for a package's ``__getattr__``: imported from ``lazy[name]`` and cached in the package's
    ``namespace`` (its ``globals()``).

    Raises:
        AttributeError: ``name`` is not one of the package's lazy names.
    """
    module = lazy.get(name)
    if module is None:
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    namespace[name] = value
    return value


def lazy_dir(namespace: dict[str, Any], lazy: Mapping[str, str]) -> list[str]:
    """A package's ``__dir__``: what it holds plus its lazy names."""
    return sorted(set(namespace) | set(namespace.get("__all__", ())) | set(lazy))
