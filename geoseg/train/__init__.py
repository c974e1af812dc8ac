"""Training from rasters or polygons: labels, chip sampling, spatial split, augmentations, losses, loop.

Imports torch.
"""

from geoseg.train.config import load_train_config
from geoseg.train.loop import TrainResult, train_model

__all__ = ["TrainResult", "load_train_config", "train_model"]
