"""Label sources on the image grid for training: an integer label raster, or polygons rasterized window by window
(:mod:`geoseg.io.labels`, shared with evaluation)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.errors import InvalidParameterError, ModelContractError
from geoseg.io.labels import PolygonLabels, is_vector
from geoseg.io.read import RasterSource, open_dataset
from geoseg.io.tags import CLASSES_TAG, read_class_names

IGNORE_INDEX = 255


class LabelSource(Protocol):
    """Class ids for a window of the image grid (IGNORE_INDEX where unknown)."""

    classes: list[str]

    def read(self, window: Window) -> np.ndarray: ...

    def close(self) -> None: ...


class LabelRaster:
    """Windowed reads of an integer label raster on the image grid; nodata / unknown ids -> IGNORE_INDEX.

    Class names are ``classes``, else those stored on the raster by geoseg (:func:`geoseg.io.tags.read_class_names`),
    else ``class_0..class_K-1``.

    Raises:
        ModelContractError: the raster is not on the image grid, or its values are not integers.
        InvalidParameterError: ids beyond the class names, or fewer than 2 classes.
    """

    def __init__(self, path: str | os.PathLike[str], image: RasterSource, classes: Sequence[str] | None) -> None:
        self.path = str(path)
        ds = open_dataset(path)
        self._ds = ds
        if (ds.height, ds.width) != image.shape:
            ds.close()
            raise ModelContractError(
                f"label raster {path} is {ds.height}x{ds.width} but the image is {image.height}x{image.width}; "
                f"labels must be on the image grid (rasterize or resample them onto it)"
            )
        if image.crs and ds.crs and ds.crs != image.crs:
            ds.close()
            raise ModelContractError(f"label raster CRS {ds.crs} differs from image CRS {image.crs}; reproject it")
        if np.dtype(ds.dtypes[0]).kind not in "iu":
            ds.close()
            raise ModelContractError(f"label raster {path} has {ds.dtypes[0]} values; class ids must be integers")
        self.nodata = ds.nodata
        ids = self._class_ids()
        names = list(classes) if classes else read_class_names(ds)
        if names:
            unknown = sorted(int(i) for i in ids if i >= len(names) or i < 0)
            if unknown:
                ds.close()
                source = "given" if classes else f"stored on the raster (tag {CLASSES_TAG})"
                raise InvalidParameterError(
                    f"label ids {unknown} in {path} exceed the {len(names)} class names {source}; give one name per "
                    f"class id 0..{int(ids.max())} or set those pixels to the label nodata value"
                )
            self.classes = names
        else:
            n = int(ids.max()) + 1 if ids.size else 0
            self.classes = [f"class_{i}" for i in range(n)]
        if len(self.classes) < 2:
            ds.close()
            raise InvalidParameterError(
                f"labels in {path} hold {ids.tolist()}: need at least 2 classes (ids 0..K-1; nodata ignored)"
            )

    def _class_ids(self, max_pixels: int = 4_000_000) -> np.ndarray:
        ds = self._ds
        step = max(1, int(np.sqrt(ds.width * ds.height / max_pixels)))
        shape = (max(1, ds.height // step), max(1, ds.width // step))
        arr = ds.read(1, out_shape=shape, resampling=rasterio.enums.Resampling.nearest)
        vals = np.unique(arr)
        if self.nodata is not None:
            vals = vals[vals != self.nodata]
        return vals[vals != IGNORE_INDEX] if self.nodata is None else vals

    def read(self, window: Window) -> np.ndarray:
        lab = self._ds.read(1, window=window).astype(np.int64)
        bad = (lab < 0) | (lab >= len(self.classes))
        if self.nodata is not None:
            bad |= lab == self.nodata
        lab[bad] = IGNORE_INDEX
        return lab

    def close(self) -> None:
        self._ds.close()


class LabelVector:
    """Label polygons rasterized per window onto the image grid (:class:`geoseg.io.labels.PolygonLabels`).

    The class attribute is ``class_field``, or found like everywhere else (:data:`CLASS_FIELD_CANDIDATES`). Class
    values may be integer ids or names (mapped through ``classes``; without ``classes`` the sorted distinct names
    become the classes), or names whose ids are in ``id_field``. Pixels covered by no polygon get ``background`` (a
    class id) or are ignored (None).

    Raises:
        InputNotFoundError, MissingDependencyError: the file is missing, or geopandas is not installed.
        InvalidParameterError: the file is unreadable, ids are outside the classes, or fewer than 2 classes.
        UnknownClassError: no class attribute, or names not among ``classes`` (also an InvalidParameterError).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        image: RasterSource,
        *,
        class_field: str | None = None,
        classes: Sequence[str] | None = None,
        background: int | None = None,
        id_field: str | None = None,
    ) -> None:
        self.path = str(path)
        self._polygons = PolygonLabels(
            path,
            crs=image.crs,
            transform=image.transform,
            class_field=class_field,
            classes=classes,
            names_define_classes=True,
            id_field=id_field,
            what="vector labels",
        )
        ids, field = self._polygons.ids, self._polygons.field
        if self._polygons.classes is not None:
            self.classes = list(self._polygons.classes)
        else:  # integer ids without names
            n = int(ids.max()) + 1 if ids.size else 0
            self.classes = [f"class_{i}" for i in range(max(n, (background or 0) + 1))]
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.classes)):
            raise InvalidParameterError(
                f"class ids {sorted(set(ids.tolist()) - set(range(len(self.classes))))} in {field!r} "
                f"are outside 0..{len(self.classes) - 1}; give one class name per id"
            )
        if len(self.classes) < 2:
            raise InvalidParameterError(f"vector labels give {self.classes}: need at least 2 classes")
        self.background = background

    def read(self, window: Window) -> np.ndarray:
        ids, covered = self._polygons.rasterize(window)
        fill = IGNORE_INDEX if self.background is None else self.background
        return np.where(covered, ids, fill)

    def close(self) -> None:
        pass


def open_labels(
    path: str | os.PathLike[str],
    image: RasterSource,
    *,
    classes: Sequence[str] | None = None,
    class_field: str | None = None,
    background: int | None = None,
    id_field: str | None = None,
) -> LabelRaster | LabelVector:
    """A label raster, or vector labels (by file extension, see :data:`geoseg.io.labels.VECTOR_SUFFIXES`) rasterized
    on the image grid."""
    if is_vector(path):
        return LabelVector(
            path, image, class_field=class_field, classes=classes, background=background, id_field=id_field
        )
    return LabelRaster(path, image, classes)
