"""Training from rasters: chip sampling, spatial split, augmentations, losses, loop. Imports torch."""

from geoseg.train.loop import TrainResult, train_model

__all__ = ["TrainResult", "train_model"]
