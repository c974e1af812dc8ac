"""Raster input/output: the only package that opens paths."""

from geoseg.io.bands import parse_band_spec, resolve_bands
from geoseg.io.lock import FolderLock
from geoseg.io.normalize import NORMALIZATION_METHODS, Normalization, compute_normalization
from geoseg.io.read import RasterSource, open_dataset, open_raster, reflect_pad
from geoseg.io.write import (
    BlockWriter,
    atomic_path,
    check_output_path,
    check_outputs_not_inputs,
    find_input_clash,
    geotiff_profile,
)
from geoseg.io.xarray_view import open_dataarray

__all__ = [
    "NORMALIZATION_METHODS",
    "Normalization",
    "RasterSource",
    "BlockWriter",
    "FolderLock",
    "atomic_path",
    "check_output_path",
    "check_outputs_not_inputs",
    "find_input_clash",
    "compute_normalization",
    "geotiff_profile",
    "open_dataarray",
    "open_dataset",
    "open_raster",
    "parse_band_spec",
    "reflect_pad",
    "resolve_bands",
]
