"""What counts as a class raster, and what counts as class ids: the checks ``vectorize``, ``evaluate`` (prediction and
raster truth) and training labels share, so a reflectance image, a probability raster or a 0/255 mask is refused with
the reason instead of being turned into polygons, scores or a one-class model.

A **class raster** has
* one band of class ids (an alpha band beside it is allowed: it is the mask);
* an integer data type, or a floating-point one whose valid values are all whole numbers (checked on a sample when
  opened and on every pixel while streaming);
* when nothing names its classes (no ``classes`` given, no geoseg class tag, no color table, no raster attribute
  table), at most :data:`MAX_UNNAMED_IDS` distinct values in the sample: continuous data (a DEM, one band of
  reflectance) has thousands, a class map without a legend has a few.

**Class ids** (labels for training) are 0..K-1: with class names, K is their number and any other value must be
declared nodata; without names, the values found must be exactly 0..K-1 (a value set such as {0, 255} or {1, 2}
is refused with a hint: remap the values, declare the stray one nodata, or name the classes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from rasterio.enums import ColorInterp

from geoseg.errors import UnknownClassError, UnsupportedRasterError
from geoseg.hints import CLASS_LIST, option
from geoseg.io.read import warn_impossible_nodata

#: distinct values a class raster may hold when nothing names its classes
MAX_UNNAMED_IDS = 256
#: pixels sampled (a regular grid, nearest pixel) to check a raster before streaming it
SAMPLE_PIXELS = 1_000_000


def _data_bands(ds: Any) -> list[int]:
    """1-based indexes of the bands that are not alpha (mask) bands."""
    interp = list(ds.colorinterp or [])
    return [i for i in range(1, ds.count + 1) if i > len(interp) or interp[i - 1] != ColorInterp.alpha]


def sample_values(ds: Any, band: int = 1, *, pixels: int = SAMPLE_PIXELS) -> np.ndarray:
    """Valid values of ``band`` on a regular grid of about ``pixels`` pixels (the pixel nearest each grid point), as
    a 1-D array in the band's dtype (nodata, masked, NaN and inf left out).

    Read window by window (512-px block-aligned windows, or the sampled rows of a striped file) inside a GDAL block
    cache bounded for that pass (:func:`geoseg.io.gdal_cache.bounded_gdal_cache`): one decimated read of the whole
    band would pass every block through GDAL's default cache (5% of RAM), so the check alone would make peak memory
    grow with the raster up to that size."""
    from rasterio.windows import Window

    from geoseg.io.gdal_cache import WindowedReads, bounded_gdal_cache

    height, width = int(ds.height), int(ds.width)
    step = max(1.0, float(np.sqrt(width * height / pixels)))
    n_rows, n_cols = max(1, int(height / step)), max(1, int(width / step))
    rows = np.minimum(((np.arange(n_rows) + 0.5) * height / n_rows).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(n_cols) + 0.5) * width / n_cols).astype(np.int64), width - 1)
    bh, bw = (int(v) for v in ds.block_shapes[band - 1])
    striped = bw >= width
    unit_h = 1 if striped else -(-512 // bh) * bh  # striped: each sampled row alone; tiled: whole blocks
    unit_w = width if striped else -(-512 // bw) * bw
    found: list[np.ndarray] = []
    with bounded_gdal_cache(WindowedReads.of(ds, (unit_h, unit_w))):
        for r0 in np.unique(rows // unit_h) * unit_h:
            r_sel = rows[(rows >= r0) & (rows < r0 + unit_h)] - r0
            for c0 in np.unique(cols // unit_w) * unit_w:
                c_sel = cols[(cols >= c0) & (cols < c0 + unit_w)] - c0
                win = Window(int(c0), int(r0), min(unit_w, width - int(c0)), min(unit_h, height - int(r0)))
                data = ds.read(band, window=win)[np.ix_(r_sel, c_sel)]
                valid = ds.read_masks(band, window=win)[np.ix_(r_sel, c_sel)] > 0
                if data.dtype.kind == "f":
                    valid &= np.isfinite(data)
                found.append(data[valid])
    return np.concatenate(found) if found else np.empty(0, np.dtype(ds.dtypes[band - 1]))


def _has_legend(ds: Any) -> bool:
    from geoseg.io.tags import read_class_names

    if read_class_names(ds):
        return True
    try:
        if ds.colormap(1):
            return True
    except ValueError:  # no color table
        pass
    return any("RAT" in str(k).upper() for k in (ds.tag_namespaces(1) or []))


def check_class_raster(
    ds: Any, *, path: str | os.PathLike[str], what: str = "class raster", names: Sequence[str] | None = None
) -> np.ndarray:
    """Refuse a raster that is not a class raster (see the module docstring); warn about a declared nodata its
    dtype cannot hold (:class:`~geoseg.errors.NodataWarning`). Returns the value sample it checked
    (:func:`sample_values`, 1-D, the band's dtype), for the checks that follow (:func:`check_class_ids`).

    ``ds`` is an open rasterio dataset; ``names`` the class names the caller was given (their presence lifts the
    distinct-value limit).

    Raises:
        UnsupportedRasterError: several bands, a dtype that is not numeric, floating-point values that are not whole
            numbers, or (without class names) more than :data:`MAX_UNNAMED_IDS` distinct values.
    """
    bands = _data_bands(ds)
    if len(bands) != 1:
        raise UnsupportedRasterError(
            f"{what} {path} has {len(bands)} bands; a class raster has one band of class ids (is this the image "
            f"rather than a class map? extract the class band with gdal_translate -b N)"
        )
    band = bands[0]
    dtype = np.dtype(ds.dtypes[band - 1])
    if dtype.kind not in "uif":
        raise UnsupportedRasterError(f"{what} {path} has dtype {dtype}; a class raster holds integer class ids")
    warn_impossible_nodata(ds, [band], path=str(path))
    values = sample_values(ds, band)
    if dtype.kind == "f":
        check_integral(values, None, path=path, what=what)
    if names is None and not _has_legend(ds):
        distinct = np.unique(values)
        if distinct.size > MAX_UNNAMED_IDS:
            raise UnsupportedRasterError(
                f"{what} {path} holds {distinct.size}+ distinct values ({dtype}, {distinct.min()}..{distinct.max()}) "
                f"and no class names: it looks like continuous data (an image band, a DEM), not class ids; pass "
                f"the class map, or name its classes ({option('classes', CLASS_LIST)}) if it really has that many"
            )
    return values


def check_class_ids(
    values: np.ndarray, *, path: str | os.PathLike[str], what: str = "class raster", names: Sequence[str] | None
) -> None:
    """Refuse class ids that cannot name a class, in ``values`` (a sample, :func:`check_class_raster`): negative
    values always (class ids are 0..K-1), ids >= K when the K class ``names`` are known. What ``vectorize`` and
    ``evaluate`` (for the prediction) accept as class ids, one rule for both.

    Raises:
        UnknownClassError: listing the values and the fix (declare them nodata, name every id).
    """
    ids = np.unique(values)
    if ids.size and ids[0] < 0:
        bad = [int(v) for v in ids if v < 0]
        raise UnknownClassError(
            f"{what} {path} holds negative values {_shown(bad)}, which are not class ids (0, 1, 2, ...): declare "
            f"the value that means 'no class' nodata (gdal_edit -a_nodata {bad[0]} {path}), or remap the classes to "
            f"0..K-1"
        )
    if names is None:
        return
    k = len(names)
    bad = [int(v) for v in ids if v >= k]
    if bad:
        raise UnknownClassError(
            f"{what} {path} holds class ids {_shown(bad)} that are not among the {k} class names given "
            f"({', '.join(map(str, names[:8]))}{', ...' if k > 8 else ''}): name every id 0..K-1 "
            f"({option('classes', CLASS_LIST)}), or declare the other values nodata"
        )


def check_nodata_is_no_class(
    ds: Any,
    values: np.ndarray,
    *,
    path: str | os.PathLike[str],
    what: str = "class raster",
    names: Sequence[str] | None,
) -> None:
    """Refuse a class raster whose declared nodata value is one of its class ids: every pixel of that class would be
    taken for nodata and silently left out (of the scores, of the polygons).

    With the K class ``names`` known, a nodata in 0..K-1 is a class id. Without them, a nodata between the smallest
    and largest value of ``values`` (the raster's valid sample) is taken as one: ids 0, 2, 3 around a nodata of 1.
    A nodata outside the ids (255 or -1 beside 0..K-1, 0 beside ids 1..K) is what nodata should be.

    Raises:
        UnsupportedRasterError: naming the class and the fix (another nodata value, or none).
    """
    nodata = ds.nodata
    if nodata is None or not np.isfinite(nodata) or nodata != round(nodata):
        return
    nd = int(nodata)
    if names is not None:
        clash = 0 <= nd < len(names)
        label = f"class id {nd} ({names[nd]})" if clash else ""
    else:
        clash = bool(values.size) and int(values.min()) < nd < int(values.max())
        label = f"within its class ids {int(values.min())}..{int(values.max())}" if clash else ""
    if not clash:
        return
    dtype = np.dtype(ds.dtypes[0])
    top = int(np.iinfo(dtype).max) if dtype.kind in "iu" else 255
    suggest = 255 if top >= 255 and (names is None or len(names) < 255) else top
    raise UnsupportedRasterError(
        f"{what} {path} declares nodata {nd}, which is {label}: pixels of that class would be taken for nodata and "
        f"left out without a word; declare a nodata that is no class id (gdal_edit -a_nodata {suggest} {path}) or "
        f"none (gdal_edit -unsetnodata {path})"
    )


def check_integral(
    values: np.ndarray, valid: np.ndarray | None, *, path: str | os.PathLike[str], what: str = "class raster"
) -> None:
    """Refuse floating-point class ids that are not whole numbers (probabilities, reflectance), where ``valid``.

    Raises:
        UnsupportedRasterError: naming an offending value.
    """
    if values.dtype.kind != "f":
        return
    v = values[valid] if valid is not None else values
    v = v[np.isfinite(v)]
    frac = v != np.round(v)
    if frac.any():
        example = float(v[frac][0])
        raise UnsupportedRasterError(
            f"{what} {path} holds non-integer values (e.g. {example:g}); class ids are whole numbers: is this a "
            f"probability or image raster? pass the class map (for a float class map, round it first)"
        )


def check_class_values(
    values: Sequence[int] | np.ndarray,
    *,
    classes: Sequence[str] | None,
    what: str,
    nodata_hint: str,
    names_source: str = "given",
) -> int:
    """Validate the class ids found in training labels; return the number of classes K.

    ``values``: the distinct valid values (nodata left out). ``names_source`` says where ``classes`` come from (for
    the message: "given", "stored on the raster"). With ``classes`` (names, index = id), every value must be
    in 0..K-1 with K = their number (absent classes are fine). Without names, the values must be exactly 0..K-1
    (every id present): the values themselves define the classes, so a gap means they are not class ids (a 0/255
    mask, ids 1..K, or codes such as 11, 21, ...).

    Raises:
        UnknownClassError: listing the values found and the fix (remap, declare nodata, name the classes).
    """
    found = sorted(int(v) for v in np.unique(np.asarray(values, dtype=np.int64)))
    shown = _shown(found)
    if classes is not None:
        k = len(classes)
        outside = [v for v in found if not 0 <= v < k]
        if outside:
            raise UnknownClassError(
                f"{what} hold values {_shown(outside)} outside the class ids 0..{k - 1} of the {k} class names "
                f"{names_source} ({', '.join(map(str, classes[:10]))}{', ...' if k > 10 else ''}); values found: "
                f"{shown}. Give one "
                f"class name per id, remap the labels to 0..{k - 1}, or declare the other values nodata "
                f"({nodata_hint})"
            )
        return k
    if not found:
        return 0
    k = found[-1] + 1
    if found[0] < 0 or len(found) != k:
        missing = sorted(set(range(max(k, 0))) - set(found))
        why = (
            "negative values are not class ids"
            if found[0] < 0
            else f"ids {_shown(missing)} are missing, so these are not class ids 0..K-1"
        )
        raise UnknownClassError(
            f"{what} hold values {shown}: {why}. Remap them to 0..K-1 (e.g. a 0/255 mask to 0/1), declare the "
            f"values that mean 'no label' nodata ({nodata_hint}), or name the classes "
            f"({option('classes', CLASS_LIST)}) so ids without pixels are allowed"
        )
    return k


def _shown(values: Sequence[int], limit: int = 12) -> str:
    vals = list(values)
    text = ", ".join(map(str, vals[:limit]))
    return "{" + text + (f", ... ({len(vals)} values)" if len(vals) > limit else "") + "}"


__all__ = [
    "MAX_UNNAMED_IDS",
    "check_class_ids",
    "check_class_raster",
    "check_class_values",
    "check_nodata_is_no_class",
    "check_integral",
    "sample_values",
]
