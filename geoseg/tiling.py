"""Pure window math for tiled prediction. No I/O.

A raster of ``height x width`` pixels is cut into *core* windows that cover every pixel exactly once. Each core is
predicted from a larger *read* window (core plus a halo of context on every side). Read windows are placed so that

* they start on multiples of the model's ``align`` (its total downsampling factor), so the pooling grid of every tile
  lines up with the grid of a whole-image pass;
* they lie inside the raster padded (by reflection, at the bottom/right only) up to the next multiple of ``align``,
  exactly the padding a whole-image pass would use;
* every tile has the same shape, so tiles batch together.

Consequence: with center-crop stitching and a halo at least the model's receptive-field radius, tiled prediction
equals whole-image prediction pixel for pixel (see
``tests/test_predict.py::test_tiled_center_crop_equals_whole_image_prediction``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from affine import Affine
from rasterio.windows import Window

from geoseg.errors import InvalidParameterError


@dataclass(frozen=True)
class Tile:
    """One unit of prediction.

    ``read_window`` is the in-bounds window to read from the raster; ``pad`` is (bottom, right) reflection padding
    that brings it to the tile shape; ``core`` is the window of output pixels this tile decides; ``core_in_tile``
    gives the core's offset (row, col) inside the padded tile array.
    """

    index: tuple[int, int]
    core: Window
    read_window: Window
    pad: tuple[int, int]
    core_in_tile: tuple[int, int]
    transform: Affine

    @property
    def core_slices(self) -> tuple[slice, slice]:
        """Slices of the core inside the padded tile array."""
        r, c = self.core_in_tile
        return slice(r, r + int(self.core.height)), slice(c, c + int(self.core.width))


def window_transform(window: Window, transform: Affine) -> Affine:
    """The geotransform of ``window`` of a raster with ``transform`` (its top-left pixel's corner as origin).

    Same result as ``rasterio.windows.transform``, composed with ``@`` (affine deprecates ``*`` between matrices,
    and rasterio still uses it, so every call there warns).
    """
    return transform @ Affine.translation(window.col_off or 0.0, window.row_off or 0.0)


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


class _Span(NamedTuple):
    """Where tile ``i`` lies along one axis, in pixels."""

    core_start: int
    core_len: int
    read_start: int
    read_len: int
    pad_after: int  # reflection padding after the read part, up to the tile length


@dataclass(frozen=True)
class _Axis:
    """Tiling along one axis."""

    size: int
    tile: int  # effective tile length (<= requested, never beyond the padded size)
    halo: int
    core: int
    padded: int  # size rounded up to the alignment

    @classmethod
    def build(cls, size: int, tile: int, overlap: int, align: int) -> _Axis:
        padded = _round_up(size, align)
        halo = _round_up(int(math.ceil(overlap / 2)), align) if overlap > 0 else 0
        if tile >= padded:  # one tile covers the whole axis: no seams along it
            return cls(size=size, tile=padded, halo=halo, core=size, padded=padded)
        core = tile - 2 * halo
        if core <= 0:
            raise InvalidParameterError(
                f"overlap {overlap} leaves no core in a {tile}-px tile (halo {halo} px per side after aligning to "
                f"{align}); use an overlap below {tile - align} or a larger tile"
            )
        return cls(size=size, tile=tile, halo=halo, core=core, padded=padded)

    def count(self) -> int:
        return max(1, int(math.ceil(self.size / self.core)))

    def span(self, i: int) -> _Span:
        """Where tile ``i`` lies along this axis."""
        core_start = i * self.core
        core_len = min(self.core, self.size - core_start)
        start = min(max(core_start - self.halo, 0), self.padded - self.tile)
        read_len = min(self.tile, self.size - start)
        return _Span(core_start, core_len, start, read_len, self.tile - read_len)


class TileGrid:
    """Cut a ``(height, width)`` raster into overlapping, stride-aligned tiles.

    Args:
        shape: raster (height, width) in pixels.
        tile: tile edge in pixels (int or (rows, cols)); must be a multiple of ``align``.
        overlap: pixels shared by neighbouring read windows (halo = overlap/2 per side, rounded up to ``align``).
        align: model's total downsampling factor (output stride); tiles start on multiples of it.
        transform: raster geotransform, used to give each tile its own transform.

    Raises:
        InvalidParameterError: an empty shape, ``align`` below 1, a negative overlap, a tile that is not a
            multiple of ``align``, or an overlap that leaves no core.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        tile: int | tuple[int, int] = 512,
        overlap: int = 64,
        *,
        align: int = 1,
        transform: Affine | None = None,
    ) -> None:
        height, width = (int(v) for v in shape)
        th, tw = (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))
        if height < 1 or width < 1:
            raise InvalidParameterError(f"raster shape must be at least 1x1 pixels, got {height}x{width}")
        if align < 1:
            raise InvalidParameterError(f"align must be >= 1, got {align}")
        if overlap < 0:
            raise InvalidParameterError(f"overlap must be >= 0 pixels, got {overlap}")
        for t in (th, tw):
            if t < align:
                raise InvalidParameterError(
                    f"tile {t} px is smaller than the model stride {align}; use a tile of at least {align} px "
                    f"(a multiple of {align}, e.g. {max(align, 256 // align * align)})"
                )
            if t % align:
                raise InvalidParameterError(
                    f"tile {t} px is not a multiple of the model stride {align}; use {t // align * align} or "
                    f"{_round_up(t, align)}"
                )
        self.shape = (height, width)
        self.align = align
        self.overlap = overlap
        self.transform = transform or Affine.identity()
        self._rows = _Axis.build(height, th, overlap, align)
        self._cols = _Axis.build(width, tw, overlap, align)
        self._sub: tuple[range, range] | None = None  # set by restrict()

    @property
    def tile_shape(self) -> tuple[int, int]:
        """Shape (rows, cols) of every padded tile array fed to the model."""
        return self._rows.tile, self._cols.tile

    @property
    def halo(self) -> tuple[int, int]:
        return self._rows.halo, self._cols.halo

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Number of tiles along (rows, cols)."""
        if self._sub is not None:
            return len(self._sub[0]), len(self._sub[1])
        return self._rows.count(), self._cols.count()

    @property
    def full_grid_shape(self) -> tuple[int, int]:
        """Number of tiles of the whole raster (ignores :meth:`restrict`)."""
        return self._rows.count(), self._cols.count()

    def restrict(self, rows: range, cols: range) -> TileGrid:
        """The same tiles, limited to tile rows ``rows`` and tile columns ``cols`` of the full grid.

        The restricted grid describes a *region*: its ``shape`` is the union of those cores, tile cores and indexes
        are relative to the region origin (``origin``), read windows stay in raster coordinates. Predicting a region
        this way gives exactly the pixels a full-raster prediction gives there (same tiles, same reads).
        """
        nr, nc = self.full_grid_shape
        if (
            not (0 <= rows.start < rows.stop <= nr and 0 <= cols.start < cols.stop <= nc)
            or rows.step != 1
            or cols.step != 1
        ):
            raise InvalidParameterError(f"tile ranges {rows}, {cols} are outside the {nr}x{nc} tile grid")
        sub = object.__new__(TileGrid)
        sub.__dict__.update(self.__dict__)
        sub._sub = (rows, cols)
        r0, r1 = self._rows.span(rows.start).core_start, self._row_end(rows.stop - 1)
        c0, c1 = self._cols.span(cols.start).core_start, self._col_end(cols.stop - 1)
        sub.shape = (r1 - r0, c1 - c0)
        sub.origin = (r0, c0)
        sub.transform = self.transform @ Affine.translation(c0, r0)
        return sub

    def _row_end(self, i: int) -> int:
        s = self._rows.span(i)
        return s.core_start + s.core_len

    def _col_end(self, j: int) -> int:
        s = self._cols.span(j)
        return s.core_start + s.core_len

    def __len__(self) -> int:
        r, c = self.grid_shape
        return r * c

    origin: tuple[int, int] = (0, 0)

    def tile(self, i: int, j: int) -> Tile:
        """Tile ``(i, j)``; in a restricted grid, indexes and core are relative to the region."""
        gi, gj = (i, j) if self._sub is None else (i + self._sub[0].start, j + self._sub[1].start)
        r, c = self._rows.span(gi), self._cols.span(gj)
        o_r, o_c = self.origin
        return Tile(
            index=(i, j),
            core=Window(c.core_start - o_c, r.core_start - o_r, c.core_len, r.core_len),
            read_window=Window(c.read_start, r.read_start, c.read_len, r.read_len),
            pad=(r.pad_after, c.pad_after),
            core_in_tile=(r.core_start - r.read_start, c.core_start - c.read_start),
            transform=self.transform @ Affine.translation(c.read_start - o_c, r.read_start - o_r),
        )

    def row_span(self, i: int) -> tuple[int, int]:
        """Output rows [start, stop) decided by tile-row ``i`` (relative to ``origin``)."""
        gi = i if self._sub is None else i + self._sub[0].start
        s = self._rows.span(gi)
        return s.core_start - self.origin[0], s.core_start - self.origin[0] + s.core_len

    def read_row_span(self, i: int) -> tuple[int, int]:
        """Raster rows [start, stop) read by tile-row ``i`` (before padding; whole grids only)."""
        s = self._rows.span(i)
        return s.read_start, s.read_start + s.read_len

    @property
    def is_region(self) -> bool:
        return self._sub is not None

    def __iter__(self) -> Iterator[Tile]:
        nr, nc = self.grid_shape
        for i in range(nr):
            for j in range(nc):
                yield self.tile(i, j)

    def __repr__(self) -> str:
        return (
            f"TileGrid(shape={self.shape}, tile={self.tile_shape}, overlap={self.overlap}, align={self.align}, "
            f"grid={self.grid_shape})"
        )
