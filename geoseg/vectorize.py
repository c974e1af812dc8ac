"""Class raster -> polygons, window by window, merged across window seams. No torch.

The raster is read in ``window x window`` blocks in row-major order. Each block is labelled into connected
components (4- or 8-connected, per class, nodata excluded) and polygonized in integer pixel coordinates. Components
that touch an open seam stay *pending*; a union-find over component ids joins components of the same class that are
adjacent across a seam (by edge, or also by corner with ``connectivity=8``, exactly like GDAL's polygonize). A group
of components is finalized as soon as none of its pixels lie on a seam still to be processed, so memory holds only
the frontier (one row of windows) and never the whole raster. Pieces are unioned exactly (integer coordinates) and
then mapped to world coordinates, so the result equals polygonizing the whole raster at once.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window
from scipy import ndimage

from geoseg.allocator import release_freed_memory
from geoseg.errors import GeoSegError, InvalidParameterError, OutputError, UnsupportedRasterError
from geoseg.io.gdal_cache import WindowedReads, bounded_gdal_cache
from geoseg.io.read import iter_windows, open_dataset, read_masked
from geoseg.io.tags import read_class_names
from geoseg.io.write import atomic_path, check_output_path
from geoseg.progress import ProgressCallback, report

#: output extension -> driver ("GeoParquet" is written with pyarrow, the others with pyogrio/GDAL)
VECTOR_FORMATS: dict[str, str] = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
    ".parquet": "GeoParquet",
    ".geoparquet": "GeoParquet",
}
_BATCH = 4096  # features per written batch at most
_BATCH_COORDS = 200_000  # ... and coordinates: staircase outlines are heavy, so memory is bounded by vertices


@dataclass
class VectorizeResult:
    """What :func:`vectorize` wrote when given a ``dst`` path."""

    path: Path
    driver: str
    features: int
    crs: str | None
    per_class: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.features


def vector_driver(path: str | os.PathLike[str]) -> str:
    """The output driver for ``path`` chosen by its extension (raises with the list of supported formats)."""
    suffix = Path(path).suffix.lower()
    try:
        return VECTOR_FORMATS[suffix]
    except KeyError:
        known = ", ".join(f"{k} ({v})" for k, v in VECTOR_FORMATS.items())
        raise InvalidParameterError(
            f"unsupported vector output format {suffix or '(no extension)'!r} for {path}; use one of: {known}"
        ) from None


# --- union-find over component ids --------------------------------------------------------------------------------
@dataclass
class _Group:
    class_id: int
    pieces: list[Any]
    members: list[int]
    pixels: int
    prob_sum: float


class _Merger:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.groups: dict[int, _Group] = {}

    def add(self, gid: int, group: _Group) -> None:
        self.parent[gid] = gid
        self.groups[gid] = group

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        ga, gb = self.groups[ra], self.groups[rb]
        if len(ga.members) < len(gb.members):
            ra, rb, ga, gb = rb, ra, gb, ga
        self.parent[rb] = ra
        ga.pieces.extend(gb.pieces)
        ga.members.extend(gb.members)
        ga.pixels += gb.pixels
        ga.prob_sum += gb.prob_sum
        del self.groups[rb]

    def pop(self, root: int) -> _Group:
        group = self.groups.pop(root)
        for m in group.members:
            del self.parent[m]
        return group


def _label(data: np.ndarray, valid: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-value connected components: labels (int32, 0 = invalid) and each label's class id (index 0 unused)."""
    structure = np.ones((3, 3), dtype=bool) if connectivity == 8 else None
    labels = np.zeros(data.shape, dtype=np.int32)
    classes: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
    offset = 0
    lab = np.empty(data.shape, dtype=np.int32)
    for value in np.unique(data[valid]):
        n = ndimage.label(valid & (data == value), structure=structure, output=lab)
        if n:  # components of different classes never overlap: shift this class's labels and add them in place
            np.add(lab, offset, out=lab, where=lab > 0)
            labels += lab
            classes.append(np.full(n, int(value), dtype=np.int64))
            offset += n
    return labels, np.concatenate(classes)


def _seam_pairs(
    cur_ids: np.ndarray, cur_cls: np.ndarray, other_ids: np.ndarray, other_cls: np.ndarray, shifts: Sequence[int]
) -> Iterator[tuple[int, int]]:
    """Pairs (current id, neighbour id) of same-class valid pixels facing each other across a seam.

    ``other_*`` is padded by one element on each side; shift 0 pairs pixel i with i, shifts -1/+1 the diagonals.
    """
    n = cur_ids.size
    found = []
    for s in shifts:
        o_ids = other_ids[1 + s: 1 + s + n]
        o_cls = other_cls[1 + s: 1 + s + n]
        m = (cur_ids >= 0) & (o_ids >= 0) & (cur_cls == o_cls)
        if m.any():
            found.append(np.stack([cur_ids[m], o_ids[m]], axis=1))
    if found:
        for a, b in np.unique(np.concatenate(found), axis=0):
            yield int(a), int(b)


def _edge_ids(labels: np.ndarray, base: int) -> np.ndarray:
    """Global ids of a row/column of window labels, -1 where invalid."""
    return np.where(labels > 0, labels.astype(np.int64) + base, -1)


def _pad1(a: np.ndarray, fill: int) -> np.ndarray:
    return np.concatenate([np.array([fill], dtype=a.dtype), a, np.array([fill], dtype=a.dtype)])


def polygonize_stream(
    ds: rasterio.DatasetReader,
    *,
    connectivity: int = 4,
    window: int = 2048,
    prob_ds: rasterio.DatasetReader | None = None,
    progress: ProgressCallback | None = None,
) -> Iterator[list[tuple[int, int, float, Any]]]:
    """Yield batches of finished polygons ``(class_id, pixels, probability_sum, geometry_in_pixel_coords)``.

    Pixel coordinates: x = column, y = row of the whole raster (integers), so seam unions are exact.
    """
    H, W = ds.height, ds.width
    merger = _Merger()
    next_id = 0
    above_ids = np.full(W, -1, dtype=np.int64)
    above_cls = np.zeros(W, dtype=np.int64)
    next_above_ids = np.full(W, -1, dtype=np.int64)
    next_above_cls = np.zeros(W, dtype=np.int64)
    left_ids = left_cls = None
    shifts = (-1, 0, 1) if connectivity == 8 else (0,)
    float_data = np.dtype(ds.dtypes[0]).kind == "f"
    n_windows = math.ceil(H / window) * math.ceil(W / window)
    finished: list[tuple[int, int, float, Any]] = []
    finished_coords = 0
    report(progress, 0, n_windows, "vectorize")
    for done, win in enumerate(iter_windows(H, W, window), start=1):
        r0, c0, h, w = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
        c1, r1 = c0 + w, r0 + h
        if c0 == 0 and r0 > 0:  # a new row of windows: the bottom seam of the last row becomes the top seam
            above_ids, next_above_ids = next_above_ids, above_ids
            above_cls, next_above_cls = next_above_cls, above_cls
            next_above_ids[:] = -1
        raw, valid = read_masked(ds, win)
        if float_data and valid.any() and not np.all(raw[valid] == np.round(raw[valid])):
            raise UnsupportedRasterError(
                f"{ds.name} holds non-integer values; vectorize expects a class raster (integer class ids)"
            )
        data = np.where(valid, raw, 0)
        del raw
        labels, label_cls = _label(data, valid, connectivity)
        n = label_cls.size - 1
        base = next_id - 1  # global id = base + label

        next_id += n
        top, bottom, left, right = (_edge_ids(labels[0], base), _edge_ids(labels[-1], base),
                                    _edge_ids(labels[:, 0], base), _edge_ids(labels[:, -1], base))
        if n:
            counts = np.bincount(labels.ravel(), minlength=n + 1)
            psum = np.zeros(n + 1)
            if prob_ds is not None:
                psum = _probability_sums(prob_ds, win, data, valid, labels, n)
            shapes = rasterio.features.shapes(
                labels, mask=labels > 0, connectivity=connectivity, transform=Affine(1, 0, c0, 0, 1, r0)
            )
            geoms, vals = [], []
            for geom, val in shapes:
                geoms.append(shapely.geometry.shape(geom))
                vals.append(int(val))
            garr = np.asarray(geoms, dtype=object)
            bad = ~shapely.is_valid(garr)
            if bad.any():  # 8-connected pieces touching at a corner: GDAL writes a self-touching ring
                garr[bad] = shapely.make_valid(garr[bad])
            for geom, lab in zip(garr, vals):
                gid = base + lab
                merger.add(gid, _Group(int(label_cls[lab]), [geom], [gid], int(counts[lab]), float(psum[lab])))
        # joins across the top seam (previous row of windows) and the left seam (previous window in this row)
        if r0 > 0:
            lo, hi = c0 - 1, c1 + 1
            o_ids = np.full(w + 2, -1, dtype=np.int64)
            o_cls = np.zeros(w + 2, dtype=np.int64)
            o_ids[max(lo, 0) - lo: w + 2 - (hi - min(hi, W))] = above_ids[max(lo, 0): min(hi, W)]
            o_cls[max(lo, 0) - lo: w + 2 - (hi - min(hi, W))] = above_cls[max(lo, 0): min(hi, W)]
            for a, b in _seam_pairs(top, data[0].astype(np.int64), o_ids, o_cls, shifts):
                merger.union(a, b)
        if c0 > 0 and left_ids is not None:
            for a, b in _seam_pairs(left, data[:, 0].astype(np.int64), _pad1(left_ids, -1), _pad1(left_cls, 0),
                                    shifts):
                merger.union(a, b)
        next_above_ids[c0:c1] = bottom
        next_above_cls[c0:c1] = data[-1]
        left_ids, left_cls = right, data[:, -1].astype(np.int64)
        # finalize every group with no pixel on a seam still to be processed
        frontier_parts = []
        if r1 < H:
            frontier_parts.append(next_above_ids[:c1])
        if r0 > 0 and c1 < W:
            frontier_parts.append(above_ids[c1 - 1 if connectivity == 8 else c1:])
        if c1 < W:
            frontier_parts.append(left_ids)
        open_roots: set[int] = set()
        if frontier_parts:
            for g in np.unique(np.concatenate(frontier_parts)):
                if g >= 0:
                    open_roots.add(merger.find(int(g)))
        for root in list(merger.groups):
            if root not in open_roots:
                g = merger.pop(root)
                geom = g.pieces[0] if len(g.pieces) == 1 else shapely.union_all(g.pieces)
                finished.append((g.class_id, g.pixels, g.prob_sum, geom))
                finished_coords += int(shapely.get_num_coordinates(geom))
        report(progress, done, n_windows, "vectorize")
        release_freed_memory()
        if len(finished) >= _BATCH or finished_coords >= _BATCH_COORDS:
            yield finished
            finished = []
            finished_coords = 0
    if merger.groups:  # cannot happen: the last window closes every seam
        raise RuntimeError("internal error: polygons left pending after the last window")
    if finished:
        yield finished


def _probability_sums(
    prob_ds: rasterio.DatasetReader, win: Window, data: np.ndarray, valid: np.ndarray, labels: np.ndarray, n: int
) -> np.ndarray:
    """Per-label sums of the probability of the pixel's own class (band ``class_id + 1``)."""
    own = np.zeros(data.shape, dtype=np.float64)
    for value in np.unique(data[valid]):
        band = int(value) + 1
        if band > prob_ds.count:
            raise InvalidParameterError(
                f"probability raster {prob_ds.name} has {prob_ds.count} bands but the class raster holds class id "
                f"{int(value)}; it needs one band per class (band k+1 = class k)"
            )
        sel = valid & (data == value)
        p = prob_ds.read(band, window=win).astype(np.float64)
        scale, offset = prob_ds.scales[band - 1], prob_ds.offsets[band - 1]
        own[sel] = p[sel] * scale + offset
    return np.bincount(labels.ravel(), weights=own.ravel(), minlength=n + 1)


# --- attributes and output ----------------------------------------------------------------------------------------
def _area_m2_function(crs: Any) -> Any:
    """A function geometries(map units) -> area in m², or None when unknown."""
    if crs is None:
        return None
    from pyproj import CRS

    pcrs = CRS.from_user_input(crs)
    if pcrs.is_geographic:
        geod = pcrs.get_geod()

        def geodesic(geoms: np.ndarray, areas: np.ndarray) -> np.ndarray:
            return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in geoms], dtype=np.float64)

        return geodesic
    factor = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0

    def planar(geoms: np.ndarray, areas: np.ndarray) -> np.ndarray:
        return areas * factor**2

    return planar


class _FeatureBuilder:
    """Turns pixel-space polygons into attribute columns + world geometries (filter, simplify, reproject)."""

    def __init__(
        self, ds: rasterio.DatasetReader, *, names: Sequence[str] | None, min_area: float, simplify: float,
        connectivity: int, out_crs: Any, with_prob: bool,
    ) -> None:
        self.transform = ds.transform
        self.pixel_area = abs(self.transform.a * self.transform.e - self.transform.b * self.transform.d)
        self.names = list(names) if names else None
        self.min_area = min_area
        self.simplify = simplify
        self.multi = connectivity == 8
        self.src_crs = ds.crs
        self.out_crs = out_crs
        self.with_prob = with_prob
        self.area_m2 = _area_m2_function(ds.crs)

    def name(self, cid: int) -> str:
        return self.names[cid] if self.names and 0 <= cid < len(self.names) else str(cid)

    def build(self, batch: list[tuple[int, int, float, Any]]) -> dict[str, np.ndarray] | None:
        cls = np.array([b[0] for b in batch], dtype=np.int64)
        pixels = np.array([b[1] for b in batch], dtype=np.int64)
        psum = np.array([b[2] for b in batch], dtype=np.float64)
        geoms = np.empty(len(batch), dtype=object)
        geoms[:] = [b[3] for b in batch]
        area = pixels * self.pixel_area
        keep = area >= self.min_area if self.min_area > 0 else np.ones(len(batch), dtype=bool)
        if not keep.any():
            return None
        cls, pixels, psum, geoms, area = cls[keep], pixels[keep], psum[keep], geoms[keep], area[keep]
        t = self.transform
        geoms = shapely.transform(
            geoms,
            lambda xy: np.column_stack([t.a * xy[:, 0] + t.b * xy[:, 1] + t.c, t.d * xy[:, 0] + t.e * xy[:, 1] + t.f]),
        )
        if t.a * t.e - t.b * t.d > 0:  # a south-up grid mirrors rings: restore the orientation GDAL writes
            geoms = shapely.orient_polygons(geoms) if hasattr(shapely, "orient_polygons") else geoms
        area_m2 = self.area_m2(geoms, area) if self.area_m2 is not None else np.full(area.shape, np.nan)
        if self.simplify > 0:
            geoms = shapely.simplify(geoms, self.simplify, preserve_topology=True)
        if self.multi:
            single = shapely.get_type_id(geoms) == 3
            if single.any():
                multi = np.empty(int(single.sum()), dtype=object)
                multi[:] = [shapely.MultiPolygon([g]) for g in geoms[single]]
                geoms[single] = multi
        if self.out_crs is not None and self.src_crs is not None and self.out_crs != self.src_crs:
            import geopandas as gpd

            geoms = gpd.GeoSeries(geoms, crs=self.src_crs).to_crs(self.out_crs).values.to_numpy()
        cols: dict[str, np.ndarray] = {
            "class_id": cls.astype(np.int32),
            "class_name": np.array([self.name(int(c)) for c in cls], dtype=object),
            "pixels": pixels,
            "area": area,
            "area_m2": area_m2,
        }
        if self.with_prob:
            cols["mean_prob"] = psum / pixels
        cols["geometry"] = geoms
        return cols


def _arrow_schema(with_prob: bool) -> Any:
    import pyarrow as pa

    fields = [
        pa.field("class_id", pa.int32()),
        pa.field("class_name", pa.string()),
        pa.field("pixels", pa.int64()),
        pa.field("area", pa.float64()),
        pa.field("area_m2", pa.float64()),
    ]
    if with_prob:
        fields.append(pa.field("mean_prob", pa.float64()))
    fields.append(pa.field("geometry", pa.binary()))
    return pa.schema(fields)


def _record_batch(cols: dict[str, np.ndarray], schema: Any) -> Any:
    import pyarrow as pa

    pool = pa.system_memory_pool()  # plain malloc: freed batches go back to the OS (see release_freed_memory)
    arrays = []
    for f in schema:
        v = cols[f.name]
        if f.name == "geometry":
            arrays.append(pa.array(shapely.to_wkb(v), type=pa.binary(), memory_pool=pool))
        else:
            arrays.append(pa.array(v.tolist() if v.dtype == object else v, type=f.type, memory_pool=pool))
    return pa.record_batch(arrays, schema=schema)


def vectorize(
    class_raster: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    *,
    classes: Sequence[str] | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    connectivity: int = 4,
    crs: Any = None,
    probabilities: str | os.PathLike[str] | None = None,
    window: int = 2048,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    layer: str | None = None,
) -> Any:
    """Polygonize a class raster window by window; identical to polygonizing it whole.

    * ``classes``: class names (index = class id); default: names stored on the raster by geoseg, else the ids.
    * ``min_area``: drop polygons smaller than this, in square map units of the raster CRS (the ``area`` column).
    * ``simplify``: Douglas-Peucker tolerance in map units of the raster CRS (topology-preserving, per polygon).
    * ``connectivity``: 4 (edges) or 8 (edges and corners), as in GDAL/rasterio polygonize.
    * ``crs``: write polygons in this CRS (default: the raster's).
    * ``probabilities``: a raster with one band per class on the same grid; adds ``mean_prob``, the mean of the
      polygon's class probability over its pixels.
    * ``dst``: GeoPackage, GeoJSON, FlatGeobuf or GeoParquet path (by extension), written incrementally and
      atomically; without it a GeoDataFrame is returned.

    Columns: ``class_id``, ``class_name``, ``pixels``, ``area`` (map units of the raster CRS, before simplification),
    ``area_m2`` (geodesic for geographic CRSs, NaN without a CRS), optional ``mean_prob``, ``geometry``.
    Nodata (nodata value, mask or NaN) never becomes a polygon. Returns a :class:`VectorizeResult` when ``dst`` is
    given.
    """
    if connectivity not in (4, 8):
        raise InvalidParameterError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if window < 2:
        raise InvalidParameterError(f"window must be at least 2 pixels, got {window}")
    if min_area < 0 or simplify < 0:
        raise InvalidParameterError(f"min_area and simplify must be >= 0, got {min_area} and {simplify}")
    driver = None
    out_path = None
    if dst is not None:
        driver = vector_driver(dst)
        inputs = [class_raster] + ([probabilities] if probabilities is not None else [])
        out_path = check_output_path(dst, overwrite=overwrite, inputs=inputs)
    return _vectorize(class_raster, out_path, driver, classes, min_area, simplify, connectivity, crs, probabilities,
                      window, overwrite, progress, layer)


def _vectorize(
    class_raster: Any, out_path: Path | None, driver: str | None, classes: Sequence[str] | None, min_area: float,
    simplify: float, connectivity: int, crs: Any, probabilities: Any, window: int, overwrite: bool,
    progress: ProgressCallback | None, layer: str | None,
) -> Any:
    ds = open_dataset(class_raster)
    prob_ds = None
    try:
        if np.dtype(ds.dtypes[0]).kind not in "uif":
            raise UnsupportedRasterError(f"{class_raster} has dtype {ds.dtypes[0]}; a class raster holds integers")
        if probabilities is not None:
            prob_ds = open_dataset(probabilities)
            if (prob_ds.height, prob_ds.width) != (ds.height, ds.width) or prob_ds.transform != ds.transform:
                raise InvalidParameterError(
                    f"probability raster {probabilities} ({prob_ds.width}x{prob_ds.height}) is not on the grid of "
                    f"{class_raster} ({ds.width}x{ds.height}); pass the probability raster written with the classes"
                )
        names = list(classes) if classes is not None else read_class_names(ds)
        out_crs = None
        if crs is not None:
            if ds.crs is None:
                raise InvalidParameterError(
                    f"cannot reproject to {crs}: {class_raster} has no CRS; omit crs to write pixel/map coordinates"
                )
            from pyproj import CRS

            out_crs = CRS.from_user_input(crs)
        builder = _FeatureBuilder(
            ds, names=names, min_area=min_area, simplify=simplify, connectivity=connectivity,
            out_crs=out_crs, with_prob=prob_ds is not None,
        )
        stream = polygonize_stream(ds, connectivity=connectivity, window=window, prob_ds=prob_ds, progress=progress)
        batches = (cols for cols in (builder.build(b) for b in stream) if cols is not None)
        final_crs = out_crs if out_crs is not None else (ds.crs if ds.crs else None)
        with bounded_gdal_cache(*(WindowedReads.of(d, (window, window)) for d in (ds, prob_ds) if d is not None)):
            if out_path is None or driver is None:
                return _to_geodataframe(batches, final_crs, prob_ds is not None)
            return _write(out_path, driver, batches, final_crs, prob_ds is not None, connectivity, overwrite, layer)
    finally:
        ds.close()
        if prob_ds is not None:
            prob_ds.close()


def _to_geodataframe(batches: Iterator[dict[str, np.ndarray]], crs: Any, with_prob: bool) -> Any:
    import geopandas as gpd
    import pandas as pd

    frames = [pd.DataFrame({k: v for k, v in cols.items() if k != "geometry"}).assign(geometry=cols["geometry"])
              for cols in batches]
    columns = [f.name for f in _arrow_schema(with_prob)]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({c: [] for c in columns})
    df["class_id"] = df["class_id"].astype(np.int32)
    df["pixels"] = df["pixels"].astype(np.int64)
    return gpd.GeoDataFrame(df[columns], geometry="geometry", crs=crs)


def _crs_string(crs: Any) -> str | None:
    if crs is None:
        return None
    from pyproj import CRS

    return CRS.from_user_input(crs).to_wkt()


def _write(
    path: Path, driver: str, batches: Iterator[dict[str, np.ndarray]], crs: Any, with_prob: bool,
    connectivity: int, overwrite: bool, layer: str | None,
) -> VectorizeResult:
    schema = _arrow_schema(with_prob)
    counts: dict[str, int] = {}
    total = 0
    failure: list[BaseException] = []

    def record_batches() -> Iterator[Any]:
        nonlocal total
        try:
            for cols in batches:
                for name in cols["class_name"]:
                    counts[name] = counts.get(name, 0) + 1
                total += len(cols["class_id"])
                yield _record_batch(cols, schema)
        except BaseException as exc:  # surfaced after GDAL/pyarrow gives up on the stream
            failure.append(exc)
            raise

    geometry_type = "MultiPolygon" if connectivity == 8 else "Polygon"
    with atomic_path(path, overwrite=overwrite) as tmp:
        try:
            if driver == "GeoParquet":
                _write_geoparquet(tmp, schema, record_batches(), crs, geometry_type)
            else:
                import pyarrow as pa
                import pyogrio

                reader = pa.RecordBatchReader.from_batches(schema, record_batches())
                kwargs: dict[str, Any] = {"layer": layer or path.stem} if driver != "GeoJSON" else {}
                pyogrio.write_arrow(
                    reader, tmp, driver=driver, geometry_name="geometry", geometry_type=geometry_type,
                    crs=_crs_string(crs), **kwargs,
                )
        except BaseException as exc:
            if failure:  # the polygon stream failed (e.g. cancelled): raise that, not GDAL's report of it
                raise failure[0] from None
            if isinstance(exc, GeoSegError) or not isinstance(exc, Exception):
                raise
            raise OutputError(f"could not write {path} ({driver}): {exc}") from exc
    return VectorizeResult(path, driver, total, _crs_string(crs), counts)


def _write_geoparquet(tmp: Path, schema: Any, batches: Iterator[Any], crs: Any, geometry_type: str) -> None:
    """GeoParquet 1.0 written row group by row group with pyarrow (WKB geometry)."""
    import pyarrow.parquet as pq

    column: dict[str, Any] = {"encoding": "WKB", "geometry_types": [geometry_type]}
    if crs is not None:
        from pyproj import CRS

        column["crs"] = CRS.from_user_input(crs).to_json_dict()
    else:
        column["crs"] = None
    geo = {"version": "1.0.0", "primary_column": "geometry", "columns": {"geometry": column}}
    schema = schema.with_metadata({b"geo": json.dumps(geo).encode()})
    with pq.ParquetWriter(str(tmp), schema) as writer:
        for batch in batches:
            writer.write_batch(batch.replace_schema_metadata(schema.metadata))
