"""Output setup of the prediction pipeline: the class raster and the optional probability raster, checked before any
work starts (:class:`geoseg.io.outputs.OutputSet`) and written under temporary names that are renamed into place
together, only when both are complete."""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg.errors import InvalidParameterError
from geoseg.inference.writer import PROB_DTYPES, PROB_SCALE, PieceWriter
from geoseg.io.formats import raster_driver
from geoseg.io.georef import Georeference
from geoseg.io.outputs import OutputSet
from geoseg.io.write import BlockWriter, geotiff_profile, write_class_metadata
from geoseg.models.config import ModelConfig
from geoseg.tiling import TileGrid


@dataclass(frozen=True)
class OutputPlan:
    """Where a prediction writes: the class raster, the probability raster (or None) and its dtype."""

    classes: Path
    probabilities: Path | None
    prob_dtype: str
    overwrite: bool
    outputs: OutputSet

    @classmethod
    def check(
        cls,
        dst: str | os.PathLike[str],
        probabilities: str | os.PathLike[str] | None,
        *,
        src: str | os.PathLike[str],
        model: Any = None,
        prob_dtype: str,
        overwrite: bool,
    ) -> OutputPlan:
        """Validate the output paths (see :class:`geoseg.io.outputs.OutputSet`: neither may be the input raster or
        the model file, even with ``overwrite``), their format (GeoTIFF, by extension:
        :func:`geoseg.io.formats.raster_driver`) and ``prob_dtype``.

        Raises:
            InvalidParameterError: ``prob_dtype`` is not one of :data:`PROB_DTYPES`, or an output is not named as a
                GeoTIFF (``.tif``/``.tiff``).
            OutputExistsError: an output exists and ``overwrite`` is False.
            OutputError: an output is an input, a directory, in a missing or unwritable directory, or both outputs
                are the same file.
        """
        if prob_dtype not in PROB_DTYPES:
            raise InvalidParameterError(f"prob_dtype must be one of {PROB_DTYPES}, got {prob_dtype!r}")
        inputs = {src: "input raster"}
        if isinstance(model, str | os.PathLike):  # not a (module, config) pair
            inputs[model] = "model"
        outputs = OutputSet(inputs, overwrite=overwrite)
        dst_path = outputs.add(dst, "class raster")
        prob_path = outputs.add(probabilities, "probability raster") if probabilities is not None else None
        raster_driver(dst, what="class raster")  # after the checks above: an input named as output is told so
        if probabilities is not None:
            raster_driver(probabilities, what="probability raster")
        return cls(dst_path, prob_path, prob_dtype, overwrite, outputs)


def class_nodata(n_classes: int) -> tuple[str, int]:
    """Dtype and nodata value of a class raster: uint8 with 255 below 255 classes, else uint16 with 65535."""
    return ("uint8", 255) if n_classes < 255 else ("uint16", 65535)


def open_outputs(
    stack: ExitStack, plan: OutputPlan, *, grid: TileGrid, georef: Georeference, config: ModelConfig, queued: int
) -> PieceWriter:
    """Open the planned rasters under temporary names on ``stack`` (renamed into place together when the stack closes
    without an error, removed otherwise) and return the :class:`PieceWriter` that fills them.

    The class raster is a tiled DEFLATE GeoTIFF on ``grid`` (its shape; ``georef``, the input raster's
    georeference, shifted to the grid's origin: CRS and transform, or GCPs/RPCs) with the model's class names, color
    table, architecture and band names; the probability raster has one band ``p(name)`` per class.
    """
    n_classes = config.num_classes
    out_dtype, out_nodata = class_nodata(n_classes)
    h, w = grid.shape
    common: dict[str, Any] = {"width": w, "height": h, "georef": georef.shifted(*grid.origin)}
    threads = {"num_threads": str(min(8, os.cpu_count() or 1))}  # GDAL compresses the written blocks on threads
    stack.enter_context(plan.outputs)  # entered before the writers: it publishes after they have closed
    class_tmp = plan.outputs.stage(plan.classes)
    class_writer = BlockWriter(
        class_tmp, geotiff_profile(count=1, dtype=out_dtype, nodata=out_nodata, **common) | threads
    )
    stack.callback(class_writer.abort)
    write_class_metadata(class_writer.dataset, classes=config.classes, colors=config.colors, nodata=out_nodata)
    class_writer.dataset.update_tags(geoseg_model=config.arch, geoseg_bands=",".join(config.bands))
    prob_writer = None
    if plan.probabilities is not None:
        prob_tmp = plan.outputs.stage(plan.probabilities)
        pnd = 255 if plan.prob_dtype == "uint8" else float("nan")
        prob_writer = BlockWriter(
            prob_tmp, geotiff_profile(count=n_classes, dtype=plan.prob_dtype, nodata=pnd, **common) | threads
        )
        stack.callback(prob_writer.abort)
        for k, name in enumerate(config.classes, start=1):
            prob_writer.dataset.set_band_description(k, f"p({name})")
        if plan.prob_dtype == "uint8":
            prob_writer.dataset.scales = [1 / PROB_SCALE] * n_classes
    writer = PieceWriter(class_writer, prob_writer, nodata=out_nodata, prob_dtype=plan.prob_dtype, queued=queued)
    stack.push(lambda exc_type, exc, tb: writer.abort() if exc_type is not None else None)
    return writer


__all__ = ["OutputPlan", "class_nodata", "open_outputs"]
