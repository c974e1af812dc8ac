"""The polygon algorithm: a class raster -> polygons in pixel coordinates, window by window, merged across window
seams. No torch.

The raster is read in ``window x window`` blocks in row-major order. Each block is labelled into connected
components (4- or 8-connected, per class, nodata excluded) and polygonized in integer pixel coordinates. Components
that touch an open seam stay *pending*; a union-find over component ids joins components of the same class that are
adjacent across a seam (by edge, or also by corner with ``connectivity=8``, exactly like GDAL's polygonize). A group
of components is finalized as soon as none of its pixels lie on a seam still to be processed, so memory holds only
the frontier (one row of windows) and never the whole raster. Pieces are unioned exactly (integer coordinates), so
the result equals polygonizing the whole raster at once; :mod:`geoseg.vectorization.attributes` maps them to world
coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window
from scipy import ndimage

from geoseg.allocator import release_freed_memory
from geoseg.errors import InvalidParameterError
from geoseg.io.classes import check_integral
from geoseg.io.read import iter_windows, read_masked
from geoseg.progress import ProgressCallback, report_progress

_BATCH = 4096  # features per yielded batch at most
#: ... and vertices (plus one polygon): a batch is held while its world geometries, WKB and Arrow columns are built
#: and written, several copies of its coordinates at once, so the batch, not the raster, sets this part of the
#: memory. At 200,000 a 4096-px raster (192,000 vertices) never filled one and larger ones did: peak RSS grew with
#: the raster until that cap (+28 MiB at 8192 px, window 2048; benchmarks/results/vectorize_memory_cpu.txt).
_BATCH_COORDS = 25_000


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
        o_ids = other_ids[1 + s : 1 + s + n]
        o_cls = other_cls[1 + s : 1 + s + n]
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

    Raises:
        UnsupportedRasterError: the raster holds non-integer values.
        InvalidParameterError: ``prob_ds`` has fewer bands than the class ids need.
        CancelledError: ``progress`` asked to stop.
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
    report_progress(progress, 0, n_windows, "vectorize")
    for done, win in enumerate(iter_windows(H, W, window), start=1):
        r0, c0, h, w = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
        c1, r1 = c0 + w, r0 + h
        if c0 == 0 and r0 > 0:  # a new row of windows: the bottom seam of the last row becomes the top seam
            above_ids, next_above_ids = next_above_ids, above_ids
            above_cls, next_above_cls = next_above_cls, above_cls
            next_above_ids[:] = -1
        raw, valid = read_masked(ds, win)
        if float_data:
            check_integral(raw, valid, path=ds.name)
        data = np.where(valid, raw, 0)
        del raw
        labels, label_cls = _label(data, valid, connectivity)
        n = label_cls.size - 1
        base = next_id - 1  # global id = base + label

        next_id += n
        top, bottom, left, right = (
            _edge_ids(labels[0], base),
            _edge_ids(labels[-1], base),
            _edge_ids(labels[:, 0], base),
            _edge_ids(labels[:, -1], base),
        )
        if n:
            _add_pieces(merger, labels, label_cls, base, win, data, valid, connectivity, prob_ds)
        # joins across the top seam (previous row of windows) and the left seam (previous window in this row)
        if r0 > 0:
            lo, hi = c0 - 1, c1 + 1
            o_ids = np.full(w + 2, -1, dtype=np.int64)
            o_cls = np.zeros(w + 2, dtype=np.int64)
            o_ids[max(lo, 0) - lo : w + 2 - (hi - min(hi, W))] = above_ids[max(lo, 0) : min(hi, W)]
            o_cls[max(lo, 0) - lo : w + 2 - (hi - min(hi, W))] = above_cls[max(lo, 0) : min(hi, W)]
            for a, b in _seam_pairs(top, data[0].astype(np.int64), o_ids, o_cls, shifts):
                merger.union(a, b)
        if c0 > 0 and left_ids is not None and left_cls is not None:
            for a, b in _seam_pairs(left, data[:, 0].astype(np.int64), _pad1(left_ids, -1), _pad1(left_cls, 0), shifts):
                merger.union(a, b)
        next_above_ids[c0:c1] = bottom
        next_above_cls[c0:c1] = data[-1]
        left_ids, left_cls = right, data[:, -1].astype(np.int64)
        # the window's arrays (tens of MB) must not stay alive while a batch is built and written below
        del data, valid, labels, label_cls, top, bottom, left, right
        # finalize every group with no pixel on a seam still to be processed
        frontier_parts = []
        if r1 < H:
            frontier_parts.append(next_above_ids[:c1])
        if r0 > 0 and c1 < W:
            frontier_parts.append(above_ids[c1 - 1 if connectivity == 8 else c1 :])
        if c1 < W:
            frontier_parts.append(left_ids)
        open_roots: set[int] = set()
        if frontier_parts:
            for g in np.unique(np.concatenate(frontier_parts)):
                if g >= 0:
                    open_roots.add(merger.find(int(g)))
        for root in [r for r in merger.groups if r not in open_roots]:
            g = merger.pop(root)
            geom = g.pieces[0] if len(g.pieces) == 1 else shapely.union_all(g.pieces)
            finished.append((g.class_id, g.pixels, g.prob_sum, geom))
            finished_coords += int(shapely.get_num_coordinates(geom))
            if len(finished) >= _BATCH or finished_coords >= _BATCH_COORDS:  # a full batch: out before the next
                yield finished
                finished = []
                finished_coords = 0
        report_progress(progress, done, n_windows, "vectorize")
        release_freed_memory()
    if merger.groups:  # cannot happen: the last window closes every seam
        raise RuntimeError("internal error: polygons left pending after the last window")
    if finished:
        yield finished


def _add_pieces(
    merger: _Merger,
    labels: np.ndarray,
    label_cls: np.ndarray,
    base: int,
    win: Window,
    data: np.ndarray,
    valid: np.ndarray,
    connectivity: int,
    prob_ds: rasterio.DatasetReader | None,
) -> None:
    """Polygonize the components of one window (``labels``, global id = ``base`` + label) into ``merger``, one
    pending group each; the window's temporaries die on return."""
    n = label_cls.size - 1
    r0, c0 = int(win.row_off), int(win.col_off)
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
