"""Segmentation architectures, their registry, and safe checkpoints.

Importing this package does not import torch: the contract reader (:mod:`geoseg.models.config`, incl.
:func:`read_config` for ``.safetensors`` files) works without it, and the torch-backed names below are loaded on first
use. The native architectures register themselves when the registry is first consulted.
"""

from __future__ import annotations

from typing import Any

from geoseg._lazy import lazy_attribute, lazy_dir
from geoseg.models.config import ModelConfig, read_config

# name -> module holding it (these modules import torch)
_LAZY = {
    "ModelSpec": "geoseg.models.registry",
    "create_model": "geoseg.models.registry",
    "get_model_spec": "geoseg.models.registry",
    "list_models": "geoseg.models.registry",
    "model_stride": "geoseg.models.registry",
    "register_model": "geoseg.models.registry",
    "load_checkpoint": "geoseg.models.checkpoint",
    "save_checkpoint": "geoseg.models.checkpoint",
}

__all__ = ["ModelConfig", "read_config", *_LAZY]


def __getattr__(name: str) -> Any:
    return lazy_attribute(globals(), _LAZY, name)


def __dir__() -> list[str]:
    return lazy_dir(globals(), _LAZY)
