"""RasterSource: windowed, thread-safe reading of any GDAL raster with band selection, scale/offset and nodata."""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning as _RioNotGeoreferenced
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from geoseg.errors import (
    GeoSegError,
    InputNotFoundError,
    InvalidParameterError,
    NodataWarning,
    NotARasterError,
    RasterReadError,
    UnsupportedRasterError,
)
from geoseg.hints import option, placeholder
from geoseg.io.bands import BandSpec, default_band_name, resolve_bands
from geoseg.io.georef import Georeference

NODATA_POLICIES = ("any", "all")


def _is_vector_file(path: str) -> bool:
    """Whether ``path`` is named as a vector dataset (a GeoPackage, GeoJSON, shapefile, ... of features), for a file
    GDAL would not open as a raster."""
    from geoseg.io.formats import VECTOR_INPUT_SUFFIXES

    return Path(path).suffix.lower() in VECTOR_INPUT_SUFFIXES


def open_dataset(path: str | os.PathLike[str]) -> rasterio.DatasetReader:
    """Open ``path`` with rasterio, turning GDAL failures into errors that say what to do.

    Raises:
        InputNotFoundError: ``path`` does not exist, or it is a VRT whose source files are missing (named).
        NotARasterError: it is a directory, an empty file, not readable by GDAL, or has no raster band.
        UnsupportedRasterError: it holds complex numbers.
    """
    p = str(path)
    is_gdal_vsi = p.startswith("/vsi") or "://" in p
    if not is_gdal_vsi:
        if not os.path.exists(p):
            raise InputNotFoundError(f"input raster not found: {p}; check the path (relative to {os.getcwd()})")
        if os.path.isdir(p) and not p.lower().endswith((".zarr", ".gdb")):
            raise NotARasterError(f"{p} is a directory, not a raster file; pass the path of a GeoTIFF/VRT/ENVI file")
        if os.path.getsize(p) == 0:
            raise NotARasterError(f"{p} is an empty (0-byte) file, not a raster; re-export or re-download it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", _RioNotGeoreferenced)
            ds = rasterio.open(p)
    except RasterioIOError as exc:
        if not is_gdal_vsi and _is_vector_file(p):
            raise NotARasterError(
                f"{p} is a vector file (features, no raster bands), not a raster; give a raster here (polygons are "
                f"read where labels, truth or an area of interest are asked for)"
            ) from exc
        raise NotARasterError(
            f"{p} is not a raster GDAL can read ({exc}); geoseg reads GeoTIFF/COG, ENVI, VRT and any other GDAL "
            f"raster format: check the file is complete and not corrupt"
        ) from exc
    if ds.count < 1:
        ds.close()
        raise NotARasterError(f"{p} has no raster bands (is it a vector file or a multi-subdataset container?)")
    kinds = {np.dtype(dt).kind for dt in ds.dtypes}
    if "c" in kinds:
        ds.close()
        raise UnsupportedRasterError(
            f"{p} holds complex numbers ({ds.dtypes[0]}); convert to amplitude/intensity first, e.g. "
            f"gdal_translate with a VRT pixel function"
        )
    missing = missing_sources(ds)
    if missing:
        ds.close()
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputNotFoundError(
            f"{p} is a VRT whose source file(s) {shown} do not exist; restore them or rebuild the VRT (gdalbuildvrt)"
        )
    return ds


def missing_sources(ds: rasterio.DatasetReader) -> list[str]:
    """Local files a VRT refers to that do not exist (GDAL opens such a VRT and fails only when reading them)."""
    if ds.driver != "VRT":
        return []
    files = list(ds.files or [])[1:]
    return [f for f in files if not f.startswith("/vsi") and "://" not in f and not os.path.exists(f)]


def nodata_fits(value: float, dtype: str | np.dtype) -> bool:
    """Whether a band of ``dtype`` can hold the value ``value`` (so that pixels can equal it).

    NaN and infinities fit floating-point bands only; integer bands hold integral values in their range; float32
    holds values up to about 3.4e38.
    """
    dt = np.dtype(dtype)
    v = float(value)
    if dt.kind == "f":
        return bool(np.isnan(v) or np.isinf(v) or abs(v) <= float(np.finfo(dt).max))
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return bool(np.isfinite(v) and v == np.floor(v) and info.min <= v <= info.max)
    return True


def _dtype_range(dtype: str) -> str:
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return f"integers {info.min}..{info.max}"
    return f"values up to ±{float(np.finfo(dt).max):.3g}, NaN, inf"


def check_nodata_override(
    value: float, dtypes: Sequence[str], indexes: Sequence[int], *, path: str, name: str = "nodata"
) -> None:
    """Refuse a nodata value (an override given by the user as option ``name``) that the bands' data types cannot
    hold: it would mask no pixel.

    Raises:
        InvalidParameterError: naming the bands, their dtype and the values it holds.
    """
    bad = [(i, d) for i, d in zip(indexes, dtypes) if not nodata_fits(value, d)]
    if bad:
        kinds = sorted({d for _, d in bad})
        which = ",".join(str(i) for i, _ in bad)
        raise InvalidParameterError(
            f"{name} {value:g} cannot occur in {path}: band(s) {which} are {'/'.join(kinds)} "
            f"({'; '.join(_dtype_range(k) for k in kinds)}); give a value of the bands' data type "
            f"({option(name)})"
        )


def declared_nodata(ds: rasterio.DatasetReader) -> list[float | None]:
    """The nodata value each band *declares*, including values its dtype cannot hold.

    rasterio reports such a value (-9999 on a uint16 band) as no nodata at all; GDAL still keeps it. It is read back
    from GDAL's own description of the dataset (a VRT copy, which holds only XML, no pixels).
    """
    values: list[float | None] = list(ds.nodatavals)
    if all(v is not None for v in values):
        return values
    import xml.etree.ElementTree as ET

    import rasterio.shutil
    from rasterio.io import MemoryFile

    try:
        with MemoryFile(ext=".vrt") as mem:
            rasterio.shutil.copy(ds, mem.name, driver="VRT")
            root = ET.fromstring(mem.read())
    except Exception:  # a dataset GDAL cannot describe as a VRT: keep what rasterio says
        return values
    for band in root.iter("VRTRasterBand"):
        text = band.findtext("NoDataValue")
        i = int(band.get("band", "0"))
        if text is not None and 1 <= i <= len(values) and values[i - 1] is None:
            with contextlib.suppress(ValueError):
                values[i - 1] = float(text)
    return values


def warn_impossible_nodata(ds: rasterio.DatasetReader, indexes: Sequence[int], *, path: str) -> None:
    """Warn (:class:`~geoseg.errors.NodataWarning`) when a band's *declared* nodata cannot occur in its dtype (e.g.
    -9999 on uint16): no pixel equals it, so nothing is masked, which the user almost certainly did not intend."""
    declared = declared_nodata(ds)
    bad = [
        (i, ds.dtypes[i - 1], declared[i - 1])
        for i in indexes
        if declared[i - 1] is not None and not nodata_fits(declared[i - 1], ds.dtypes[i - 1])  # type: ignore[arg-type]
    ]
    if bad:
        i, dtype, value = bad[0]
        bands = ",".join(str(b[0]) for b in bad)
        warnings.warn(
            f"{path}: the declared nodata {value:g} of band(s) {bands} cannot occur in {dtype} data, so no pixel is "
            f"masked as nodata; fix the file's nodata (gdal_edit -a_nodata VALUE) or pass the right value "
            f"({option('nodata', placeholder('VALUE'))})",
            NodataWarning,
            stacklevel=3,
        )


class RasterSource:
    """A raster opened for windowed reads of selected bands, as float32, with a validity mask.

    * ``bands``: 1-based indexes, ranges or band names in any order (see :func:`geoseg.io.bands.parse_band_spec`).
    * ``nodata``: override the nodata value stored in the file.
    * ``apply_scale_offset``: return physical values ``raw * scale + offset`` when the file declares them.
    * ``nodata_policy``: a pixel is nodata when ``"any"`` (default) or ``"all"`` selected bands are nodata.

    Each thread gets its own GDAL handle, so one RasterSource can be read from a pool of threads.
    The raster is never read whole.

    Raises:
        InvalidParameterError: an unknown ``nodata_policy``.
        InputNotFoundError, NotARasterError, UnsupportedRasterError: see :func:`open_dataset`.
        BandSelectionError: ``bands`` names or indexes bands the raster lacks.
        RasterReadError: (when reading) pixels of a truncated or corrupt file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        bands: BandSpec = None,
        nodata: float | None = None,
        apply_scale_offset: bool = True,
        nodata_policy: str = "any",
    ) -> None:
        if nodata_policy not in NODATA_POLICIES:
            raise InvalidParameterError(f"nodata_policy must be one of {NODATA_POLICIES}, got {nodata_policy!r}")
        self.path = str(path)
        self._local = threading.local()
        self._handles: list[rasterio.DatasetReader] = []
        self._lock = threading.Lock()
        ds = self._dataset()
        self.width: int = ds.width
        self.height: int = ds.height
        self.crs = ds.crs
        self.transform: Affine = ds.transform
        self.descriptions: list[str | None] = list(ds.descriptions)
        self.band_indexes: list[int] = resolve_bands(bands, self.descriptions, path=self.path)
        self.band_names: list[str] = [default_band_name(i, self.descriptions[i - 1]) for i in self.band_indexes]
        self.dtypes = [ds.dtypes[i - 1] for i in self.band_indexes]
        if nodata is not None:
            check_nodata_override(nodata, self.dtypes, self.band_indexes, path=self.path)
        else:
            warn_impossible_nodata(ds, self.band_indexes, path=self.path)
        self.georef = Georeference.of(ds)
        self.exact_float32 = all(d in ("uint8", "int8", "uint16", "int16", "float32") for d in self.dtypes)
        self.block_shapes = [ds.block_shapes[i - 1] for i in self.band_indexes]
        file_nodata = [ds.nodatavals[i - 1] for i in self.band_indexes]
        self.nodata: list[float | None] = [nodata] * len(self.band_indexes) if nodata is not None else file_nodata
        flags = [set(ds.mask_flag_enums[i - 1]) for i in self.band_indexes]
        self._gdal_mask = nodata is None and any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags)
        scales = [ds.scales[i - 1] for i in self.band_indexes]
        offsets = [ds.offsets[i - 1] for i in self.band_indexes]
        self._scale_offset = apply_scale_offset and any(s != 1 or o != 0 for s, o in zip(scales, offsets))
        self._scales = np.asarray(scales, dtype=np.float32)[:, None, None]
        self._offsets = np.asarray(offsets, dtype=np.float32)[:, None, None]
        self.nodata_policy = nodata_policy
        self.profile: dict[str, Any] = dict(ds.profile)

    # --- handles -------------------------------------------------------------------------------------------------
    def _dataset(self) -> rasterio.DatasetReader:
        ds = getattr(self._local, "ds", None)
        if ds is None or ds.closed:
            ds = open_dataset(self.path)
            self._local.ds = ds
            with self._lock:
                self._handles.append(ds)
        return ds

    def close(self) -> None:
        """Close every handle opened by any thread."""
        with self._lock:
            for ds in self._handles:
                ds.close()
            self._handles.clear()
        self._local = threading.local()

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- metadata ------------------------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Number of selected bands."""
        return len(self.band_indexes)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def is_georeferenced(self) -> bool:
        """Whether pixels have a place on the Earth: a CRS or geotransform, GCPs or RPCs (see :attr:`georef`)."""
        return self.georef.is_georeferenced

    @property
    def _floating(self) -> bool:
        return any(np.dtype(d).kind == "f" for d in self.dtypes)

    def describe(self) -> dict[str, Any]:
        """Plain-data summary used by ``geoseg info``; ``legend`` is :func:`geoseg.io.tags.class_legend`."""
        from geoseg.io.tags import class_legend

        return {
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "bands": [
                {"index": i, "name": n, "dtype": d, "nodata": nd}
                for i, n, d, nd in zip(self.band_indexes, self.band_names, self.dtypes, self.nodata)
            ],
            "crs": self.crs.to_string() if self.crs else None,
            "transform": list(self.transform)[:6],
            "georeferenced": self.is_georeferenced,
            "georeference": self.georef.describe(),
            "mask": "internal mask/alpha"
            if self._gdal_mask
            else ("nodata value" if any(v is not None for v in self.nodata) else ("NaN" if self._floating else "none")),
            "legend": class_legend(self._dataset()),
        }

    # --- reading -------------------------------------------------------------------------------------------------
    def read(self, window: Window, *, pad: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
        """Read selected bands in ``window`` as float32 ``(bands, rows, cols)`` plus a boolean validity mask.

        ``pad`` = (bottom, right) extra rows/cols filled by reflection (numpy, never a boundless GDAL read).
        Invalid pixels (nodata, masked, NaN/inf) are set to 0 in the returned data.
        """
        h, w = int(window.height), int(window.width)
        data = np.empty((self.count, h + pad[0], w + pad[1]), np.float32)
        valid = self.read_into(window, data)
        if pad[0] or pad[1]:
            reflect_fill(data, h, w)
            valid = np.pad(valid, ((0, pad[0]), (0, pad[1])), mode="constant", constant_values=False)
        return data, valid

    def read_into(self, window: Window, out: np.ndarray) -> np.ndarray:
        """Read ``window`` into ``out[:, :rows, :cols]`` (float32, no temporary copy); return the validity mask.

        Bands whose values float32 holds exactly (8/16-bit integers, float32) are converted by GDAL while decoding,
        straight into ``out``; wider types are read, then converted. Invalid pixels are set to 0.
        """
        h, w = int(window.height), int(window.width)
        dst = out[:, :h, :w]
        ds = self._dataset()
        try:
            if self.exact_float32:
                raw = ds.read(self.band_indexes, window=window, out=dst)
            else:
                raw = ds.read(self.band_indexes, window=window)
            invalid = self._invalid(ds, raw, window)
        except RasterioIOError as exc:
            raise self._read_error(window, exc) from exc
        if raw is not dst and not np.shares_memory(raw, dst):
            dst[...] = raw
        return self.finish_read(dst, invalid)

    def read_raw(self, window: Window) -> np.ndarray:
        """Selected bands in ``window`` in the file's dtype, nothing applied (for callers that cache blocks)."""
        try:
            return self._dataset().read(self.band_indexes, window=window)
        except RasterioIOError as exc:
            raise self._read_error(window, exc) from exc

    def finish_read(self, dst: np.ndarray, invalid: np.ndarray | None = None) -> np.ndarray:
        """Apply nodata, scale/offset and NaN rules in place to float32 ``dst`` holding the raw values of exact
        (see :attr:`exact_float32`) bands; return the validity mask. Invalid pixels are set to 0."""
        if invalid is None:
            invalid = self._invalid(None, dst, None)
        if self._scale_offset:
            dst *= self._scales
            dst += self._offsets
        if self._floating:
            bad = ~np.isfinite(dst)
            if bad.any():
                invalid |= bad.any(axis=0) if self.nodata_policy == "any" else bad.all(axis=0)
        if invalid.any():
            dst[:, invalid] = 0.0
        return ~invalid

    def _read_error(self, window: Window, exc: Exception) -> GeoSegError:
        missing = missing_sources(self._dataset())
        if missing:
            return InputNotFoundError(
                f"{self.path}: reading failed because the VRT's source file(s) {', '.join(missing[:5])} no longer "
                f"exist; restore them or rebuild the VRT (gdalbuildvrt)"
            )
        return RasterReadError(
            f"{self.path}: reading rows {int(window.row_off)}..{int(window.row_off + window.height)}, columns "
            f"{int(window.col_off)}..{int(window.col_off + window.width)} failed ({exc}); the file is truncated or "
            f"corrupt: re-export or re-download it (gdalinfo -checksum finds the damaged part)"
        )

    @property
    def uses_gdal_mask(self) -> bool:
        """Whether validity comes from GDAL's mask band (internal mask or alpha), not from the values."""
        return self._gdal_mask

    def _invalid(self, ds: rasterio.DatasetReader | None, raw: np.ndarray, window: Window | None) -> np.ndarray:
        shape = raw.shape[1:]
        if self._gdal_mask:
            assert ds is not None and window is not None
            m = ds.read_masks(self.band_indexes[0], window=window)
            return m == 0
        per_band = []
        for b, nd in enumerate(self.nodata):
            if nd is None:
                continue
            per_band.append(np.isnan(raw[b]) if np.isnan(nd) else raw[b] == nd)
        if not per_band:
            return np.zeros(shape, dtype=bool)
        stack = np.stack(per_band)
        return np.asarray(stack.any(axis=0) if self.nodata_policy == "any" else stack.all(axis=0))


def _reflect_index(n: int, pad: int) -> np.ndarray:
    """Source index of each of ``n + pad`` positions after reflection padding (edge when ``n == 1``)."""
    return np.pad(np.arange(n), (0, pad), mode="reflect" if n > 1 else "edge")


def reflect_pad(data: np.ndarray, pad: tuple[int, int]) -> np.ndarray:
    """Pad a (bands, rows, cols) array at the bottom/right by reflection (symmetric when too small to reflect)."""
    rows, cols = data.shape[-2:]
    out = np.empty((*data.shape[:-2], rows + pad[0], cols + pad[1]), data.dtype)
    out[..., :rows, :cols] = data
    reflect_fill(out, rows, cols)
    return out


def reflect_fill(buf: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """In place: fill ``buf`` beyond its top-left ``rows x cols`` by reflecting that part (rows first, then columns)."""
    h, w = buf.shape[-2:]
    if h > rows:
        buf[..., rows:, :cols] = buf[..., _reflect_index(rows, h - rows)[rows:], :cols]
    if w > cols:
        buf[..., :, cols:] = buf[..., :, _reflect_index(cols, w - cols)[cols:]]
    return buf


def read_masked(ds: rasterio.DatasetReader, window: Window, band: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Values ``(rows, cols)`` of ``band`` in ``window``, in the file's dtype, and where they are valid (bool).

    The nodata rule of class rasters and ground truth: invalid is what GDAL's mask says (the nodata value, an
    internal mask, an alpha band) and, in float data, NaN and inf.
    """
    data = ds.read(band, window=window)
    valid = ds.read_masks(band, window=window) > 0
    if data.dtype.kind == "f":
        valid &= np.isfinite(data)
    return data, valid


def iter_windows(height: int, width: int, size: int) -> Iterator[Window]:
    """``size x size`` windows (smaller at the right and bottom edges) covering a raster in row-major order."""
    for r0 in range(0, height, size):
        for c0 in range(0, width, size):
            yield Window(c0, r0, min(size, width - c0), min(size, height - r0))


def open_raster(path: str | os.PathLike[str] | Path, **kwargs: Any) -> RasterSource:
    """Open a raster for windowed reading; keyword options as in :class:`RasterSource`."""
    return RasterSource(path, **kwargs)
