"""Training configuration files (YAML or TOML) whose keys are train_model's arguments."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from geoseg.errors import InputNotFoundError, InvalidParameterError, MissingDependencyError


def train_options() -> list[str]:
    """The keys a configuration file may hold (train_model's parameters)."""
    from geoseg.train.loop import train_model

    return [p for p in inspect.signature(train_model).parameters if p != "progress"]


def load_train_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``.yaml``/``.yml`` or ``.toml`` file into train_model keyword arguments (validated names).

    Raises:
        InputNotFoundError: the file does not exist.
        InvalidParameterError: an unsupported extension, malformed content, or unknown option names.
        MissingDependencyError: PyYAML is not installed (the ``config`` extra) for a YAML file.
    """
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"training config not found: {p}")
    text = p.read_text()
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as exc:  # pragma: no cover
                raise MissingDependencyError("YAML configs need PyYAML: pip install 'geoseg[config]'") from exc
            data = yaml.safe_load(text)
        else:
            raise InvalidParameterError(f"config {p.name}: use a .yaml, .yml or .toml file")
    except (ValueError, ImportError) as exc:
        if isinstance(exc, (InvalidParameterError, MissingDependencyError)):
            raise
        raise InvalidParameterError(f"config {p} is malformed: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError has no common builtin base
        raise InvalidParameterError(f"config {p} is malformed: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidParameterError(f"config {p} must be a mapping of option: value, got {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    valid = train_options()
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise InvalidParameterError(f"config {p} has unknown option(s) {unknown}; valid options: {', '.join(valid)}")
    return data
