"""Error hierarchy: every geoseg error is a GeoSegError *and* the builtin a caller would expect.

Messages say what was received, what is valid, and how to fix it.
"""

from __future__ import annotations


class GeoSegError(Exception):
    """Root of all geoseg errors."""


class InputNotFoundError(GeoSegError, FileNotFoundError):
    """An input path does not exist."""


class NotARasterError(GeoSegError, ValueError):
    """A path exists but GDAL cannot read it as a raster."""


class BandSelectionError(GeoSegError, LookupError):
    """Requested bands do not exist in the raster or do not match the model contract."""


class InvalidParameterError(GeoSegError, ValueError):
    """An option has an invalid value (tile size, overlap, stitch method, ...)."""


class UnsupportedRasterError(GeoSegError, ValueError):
    """A raster is readable but cannot be processed (dtype, shape, ...)."""


class ModelContractError(GeoSegError, ValueError):
    """A raster or option contradicts the contract stored with a model."""


class UnknownModelError(GeoSegError, LookupError):
    """No architecture is registered under the requested name."""


class CheckpointError(GeoSegError, ValueError):
    """A checkpoint file is missing, malformed, unsafe or for another architecture."""


class OutputExistsError(GeoSegError, FileExistsError):
    """An output already exists and overwrite was not requested."""


class OutputError(GeoSegError, OSError):
    """An output cannot be written (directory missing, read-only, disk full, same as input)."""


class MissingDependencyError(GeoSegError, ImportError):
    """An optional dependency needed for this feature is not installed."""


class CancelledError(GeoSegError, RuntimeError):
    """The progress callback asked to stop; no partial output was left behind."""


class NotGeoreferencedWarning(UserWarning):
    """The input has no georeference (no CRS, geotransform, GCPs or RPCs); outputs use pixel coordinates."""


__all__ = [
    "BandSelectionError",
    "CancelledError",
    "CheckpointError",
    "GeoSegError",
    "InputNotFoundError",
    "InvalidParameterError",
    "MissingDependencyError",
    "ModelContractError",
    "NotARasterError",
    "NotGeoreferencedWarning",
    "OutputError",
    "OutputExistsError",
    "UnknownModelError",
    "UnsupportedRasterError",
]


class NoOverlapError(GeoSegError, ValueError):
    """Two inputs (prediction, truth, area of interest) do not overlap, or share no valid pixel."""


class UnknownClassError(InvalidParameterError, LookupError):
    """Labels hold class ids or names the class list does not know, or lack the class attribute.

    Also an :class:`InvalidParameterError`: training reported these label problems as such before label polygons had
    one reader for training and evaluation."""


class GridMismatchWarning(UserWarning):
    """An input was resampled onto another grid (e.g. ground truth onto the prediction grid)."""


__all__ += ["GridMismatchWarning", "NoOverlapError", "UnknownClassError"]


class RasterReadError(GeoSegError, OSError):
    """Reading pixels failed part-way (a truncated or corrupt file, a vanished network share)."""


class NoValidDataError(GeoSegError, ValueError):
    """An input holds no valid pixel (all nodata, masked, NaN or inf)."""


__all__ += ["NoValidDataError", "RasterReadError"]


class OutputLockedError(OutputError):
    """An output folder is in use by another run (its lock file names the owner: host, pid, command)."""


__all__ += ["OutputLockedError"]


class InputUnreadableError(GeoSegError, PermissionError):
    """An input exists but this process may not read it (permissions)."""


__all__ += ["InputUnreadableError"]


class NodataWarning(UserWarning):
    """A declared nodata value cannot occur in the band's data type (e.g. -9999 in uint16), so it masks no pixel."""


__all__ += ["NodataWarning"]


class ClassNotTrainedWarning(UserWarning):
    """A named class has no training pixel: the model cannot learn it and will not predict it."""


__all__ += ["ClassNotTrainedWarning"]


class SelfTrainingWarning(UserWarning):
    """Self-training was asked for but cannot change the model: no rounds to apply the threshold to, no unlabelled
    pixel confident enough to pseudo-label, or the time limit reached before the rounds."""


__all__ += ["SelfTrainingWarning"]


class TrainingDivergedError(GeoSegError, RuntimeError):
    """The training loss became NaN or infinite (a learning rate too high for the data, or extreme input values);
    the checkpoint of the best epoch before it, if any, is kept."""


__all__ += ["TrainingDivergedError"]
