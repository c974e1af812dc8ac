"""Label sources on the image grid for training: an integer label raster (warped onto the image grid when it lies on
another one, :class:`geoseg.io.align.RasterOnGrid`, as ground truth is for evaluation), or polygons rasterized window
by window (:mod:`geoseg.io.labels`, shared with evaluation). Label values are validated against the classes
(:func:`geoseg.io.classes.check_class_values`): ids are 0..K-1, anything else is declared nodata or refused."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from rasterio.windows import Window

from geoseg.errors import InvalidParameterError, ModelContractError
from geoseg.hints import option, placeholder
from geoseg.io.align import RasterOnGrid
from geoseg.io.classes import check_class_raster, check_class_values, check_integral
from geoseg.io.labels import PolygonLabels, is_vector
from geoseg.io.read import RasterSource, check_nodata_override, iter_windows, read_masked
from geoseg.io.tags import CLASSES_TAG, read_class_names

#: the label of pixels that are not trained on (nodata, outside the labels, invalid image pixels): negative, so it can
#: never be a class id (ids are 0..K-1 whatever K)
IGNORE_INDEX = -1


class LabelSource(Protocol):
    """Class ids for a window of the image grid (IGNORE_INDEX where unknown)."""

    classes: list[str]

    def read(self, window: Window) -> np.ndarray: ...

    def close(self) -> None: ...


def _nodata_hint(path: str) -> str:
    return f"in the file: gdal_edit -a_nodata VALUE {path}; or {option('label_nodata', placeholder('VALUE'))}"


class LabelRaster:
    """Windowed reads of a label raster on the image grid; nodata and pixels outside it -> IGNORE_INDEX.

    The raster is read pixel by pixel when it is on the image grid and warped onto it (nearest) otherwise
    (:class:`geoseg.io.align.RasterOnGrid`). Class names are ``classes``, else those stored on the raster by geoseg
    (:func:`geoseg.io.tags.read_class_names`), else ``class_0..class_K-1``. Every valid value of the file is checked
    before training (:func:`geoseg.io.classes.check_class_values`): with names, values must be ids 0..K-1; without
    names, exactly 0..K-1. ``nodata`` declares the value of unlabelled pixels when the file does not.

    Raises:
        ModelContractError: the values are not whole numbers.
        UnknownClassError: (an InvalidParameterError) values that are not class ids (listed, with the fix).
        InvalidParameterError: fewer than 2 classes.
        NoOverlapError: the raster does not overlap the image or cannot be placed on its grid.
        UnsupportedRasterError: the raster is not a class raster (several bands, continuous data).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        image: RasterSource,
        classes: Sequence[str] | None,
        *,
        nodata: float | None = None,
    ) -> None:
        self.path = str(path)
        self._grid = RasterOnGrid(
            path, georef=image.georef, shape=image.shape, what="label raster", target=f"the image {image.path}",
            nodata=nodata,
        )  # fmt: skip
        try:
            self._init(image, classes, nodata)
        except BaseException:
            self._grid.close()
            raise

    def _init(self, image: RasterSource, classes: Sequence[str] | None, nodata: float | None) -> None:
        ds = self._grid.ds
        dtype = np.dtype(ds.dtypes[0])
        if dtype.kind not in "iuf":
            raise ModelContractError(f"label raster {self.path} has {dtype} values; class ids must be integers")
        names = list(classes) if classes else read_class_names(ds)
        check_class_raster(ds, path=self.path, what="label raster", names=names or [])
        if nodata is not None:
            check_nodata_override(nodata, [ds.dtypes[0]], [1], path=str(self.path), name="label_nodata")
        self.nodata = nodata if nodata is not None else ds.nodata
        values = self._values()
        k = check_class_values(
            values,
            classes=names,
            what=f"labels {self.path}",
            nodata_hint=_nodata_hint(self.path),
            names_source="given" if classes else f"stored on the raster (tag {CLASSES_TAG})",
        )
        self.classes = names if names else [f"class_{i}" for i in range(k)]
        if len(self.classes) < 2:
            raise InvalidParameterError(
                f"labels in {self.path} hold {[int(v) for v in values]}: need at least 2 classes (ids 0..K-1; nodata "
                f"ignored)"
            )

    def _values(self, rows: int = 1024) -> np.ndarray:
        """The distinct valid values of the whole file (on its own grid), read in strips of ``rows`` rows."""
        ds = self._grid.ds
        dtype = np.dtype(ds.dtypes[0])
        small = dtype.kind in "iu" and dtype.itemsize <= 2
        counts = np.zeros(1 << (8 * dtype.itemsize), np.int64) if small else None
        found: set[float] = set()
        for win in iter_windows(ds.height, ds.width, max(rows, 1)):
            data, valid = read_masked(ds, win)
            if self.nodata is not None:
                valid &= data != self.nodata
            if dtype.kind == "f":
                check_integral(data, valid, path=self.path, what="label raster")
            v = data[valid]
            if counts is not None:
                shift = -int(np.iinfo(dtype).min)
                counts += np.bincount(v.astype(np.int64) + shift, minlength=counts.size)
            else:
                found.update(np.unique(v).tolist())
        if counts is not None:
            return np.flatnonzero(counts) - int(-np.iinfo(dtype).min)
        return np.asarray(sorted(found), dtype=np.int64)

    def read(self, window: Window) -> np.ndarray:
        data, valid = self._grid.read(window)
        lab = data.astype(np.int64)
        valid &= (lab >= 0) & (lab < len(self.classes))
        lab[~valid] = IGNORE_INDEX
        return lab

    def close(self) -> None:
        self._grid.close()


class LabelVector:
    """Label polygons rasterized per window onto the image grid (:class:`geoseg.io.labels.PolygonLabels`).

    The class attribute is ``class_field``, or found like everywhere else (:data:`CLASS_FIELD_CANDIDATES`). Class
    values may be integer ids or names (mapped through ``classes``; without ``classes`` the sorted distinct names
    become the classes), or names whose ids are in ``id_field``. Pixels covered by no polygon get ``background`` (a
    class id) or are ignored (None).

    The class ids of the polygons (and ``background``) are validated like raster labels
    (:func:`geoseg.io.classes.check_class_values`). ``layer`` chooses the layer of a multi-layer file.

    Raises:
        InputNotFoundError, MissingDependencyError: the file is missing, or geopandas is not installed.
        InvalidParameterError: the file is unreadable or holds several layers and none is chosen, or fewer than 2
            classes.
        UnknownClassError: no class attribute, names not among ``classes``, or ids that are not class ids 0..K-1
            (also an InvalidParameterError).
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
        layer: str | None = None,
    ) -> None:
        self.path = str(path)
        self._polygons = PolygonLabels(
            path,
            georef=image.georef,
            class_field=class_field,
            classes=classes,
            names_define_classes=True,
            id_field=id_field,
            what="vector labels",
            layer=layer,
            layer_option=option("layer", placeholder("NAME")),
        )
        ids, field = self._polygons.ids, self._polygons.field
        names = list(self._polygons.classes) if self._polygons.classes is not None else None
        values = np.unique(np.concatenate([ids, [background] if background is not None else []]).astype(np.int64))
        what = (
            f"vector labels {path} (attribute {field!r}"
            + (", with the background id" if background is not None else "")
            + ")"
        )
        k = check_class_values(values, classes=names, what=what, nodata_hint="leave those polygons out")
        self.classes = names if names is not None else [f"class_{i}" for i in range(k)]
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
    nodata: float | None = None,
    layer: str | None = None,
) -> LabelRaster | LabelVector:
    """A label raster (``nodata``: the value of unlabelled pixels when the file does not declare it), or vector labels
    (by file extension, see :data:`geoseg.io.labels.VECTOR_SUFFIXES`; ``layer`` of a multi-layer file) rasterized
    on the image grid.

    Raises:
        InvalidParameterError: ``nodata`` for polygon labels, or ``layer`` for a label raster (see the classes for the
            rest).
    """
    if is_vector(path):
        if nodata is not None:
            raise InvalidParameterError(
                f"{option('label_nodata')} applies to label rasters; {path} holds polygons, whose uncovered pixels are "
                f"not trained on unless {option('background')} gives them a class"
            )
        return LabelVector(
            path,
            image,
            class_field=class_field,
            classes=classes,
            background=background,
            layer=layer,
            id_field=id_field,
        )
    if layer is not None:
        raise InvalidParameterError(f"{option('layer')} chooses a layer of polygon labels; {path} is a raster")
    return LabelRaster(path, image, classes, nodata=nodata)
