"""Segmentation architectures, their registry, and safe checkpoints. Importing this package imports torch."""

from geoseg.models import deeplab, densenet, fcn, icnet, pspnet, resunet, segnet, ssnet, tiny, unet  # noqa: F401  (register the native architectures)
from geoseg.models.checkpoint import load_checkpoint, read_config, save_checkpoint
from geoseg.models.config import ModelConfig
from geoseg.models.registry import ModelSpec, create_model, get_model_spec, list_models, model_stride, register_model

__all__ = [
    "ModelConfig",
    "ModelSpec",
    "create_model",
    "get_model_spec",
    "list_models",
    "load_checkpoint",
    "model_stride",
    "read_config",
    "register_model",
    "save_checkpoint",
]
