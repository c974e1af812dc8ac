import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.errors import InvalidParameterError
from geoseg.tiling import TileGrid


@st.composite
def grids(draw):
    align = draw(st.sampled_from([1, 2, 4, 8, 16, 32]))
    tile = align * draw(st.integers(max(1, 8 // align), 12))
    overlap = draw(st.integers(0, max(0, tile - 2 * align)))
    h = draw(st.integers(1, 300))
    w = draw(st.integers(1, 300))
    return (h, w), tile, overlap, align


def _grid_or_skip(shape, tile, overlap, align):
    try:
        return TileGrid(shape, tile, overlap, align=align)
    except InvalidParameterError as exc:
        assert "leaves no core" in str(exc)
        return None


@settings(max_examples=200, deadline=None)
@given(grids())
def test_cores_cover_every_pixel_exactly_once(params):
    shape, tile, overlap, align = params
    grid = _grid_or_skip(shape, tile, overlap, align)
    if grid is None:
        return
    cover = np.zeros(shape, np.int32)
    th, tw = grid.tile_shape
    for t in grid:
        r0, c0 = int(t.core.row_off), int(t.core.col_off)
        cover[r0 : r0 + int(t.core.height), c0 : c0 + int(t.core.width)] += 1
        # read windows in bounds, padding only below the stride, one tile shape for all
        assert t.read_window.row_off >= 0 and t.read_window.row_off + t.read_window.height <= shape[0]
        assert t.read_window.col_off >= 0 and t.read_window.col_off + t.read_window.width <= shape[1]
        assert (t.read_window.height + t.pad[0], t.read_window.width + t.pad[1]) == (th, tw)
        assert 0 <= t.pad[0] < align and 0 <= t.pad[1] < align
        # reads start on the model's stride grid
        assert t.read_window.row_off % align == 0 and t.read_window.col_off % align == 0
        # the core lies inside the padded tile
        rs, cs = t.core_slices
        assert rs.start >= 0 and rs.stop <= th and cs.start >= 0 and cs.stop <= tw
    assert cover.min() == 1 and cover.max() == 1


@settings(max_examples=150, deadline=None)
@given(grids())
def test_halo_context_available_around_every_core(params):
    """Each core has the requested halo inside its read window, except at the raster (padded) border."""
    shape, tile, overlap, align = params
    grid = _grid_or_skip(shape, tile, overlap, align)
    if grid is None:
        return
    hr, hc = grid.halo
    padded = (-(-shape[0] // align) * align, -(-shape[1] // align) * align)
    for t in grid:
        read_end_r = t.read_window.row_off + t.read_window.height + t.pad[0]
        read_end_c = t.read_window.col_off + t.read_window.width + t.pad[1]
        assert t.core.row_off - t.read_window.row_off >= min(hr, t.core.row_off)
        assert read_end_r - (t.core.row_off + t.core.height) >= min(hr, padded[0] - (t.core.row_off + t.core.height))
        assert t.core.col_off - t.read_window.col_off >= min(hc, t.core.col_off)
        assert read_end_c - (t.core.col_off + t.core.width) >= min(hc, padded[1] - (t.core.col_off + t.core.width))


def test_small_raster_is_one_shrunken_tile():
    grid = TileGrid((5, 3), 512, 64, align=4)
    assert len(grid) == 1
    assert grid.tile_shape == (8, 4)
    (t,) = list(grid)
    assert (t.read_window.height, t.read_window.width, t.pad) == (5, 3, (3, 1))


def test_row_spans_partition_rows():
    grid = TileGrid((1000, 70), 128, 32, align=16)
    spans = [grid.row_span(i) for i in range(grid.grid_shape[0])]
    assert spans[0][0] == 0 and spans[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_tile_transform_is_read_window_origin():
    from affine import Affine

    tr = Affine(10, 0, 1000, 0, -10, 5000)
    grid = TileGrid((300, 300), 128, 32, align=16, transform=tr)
    t = grid.tile(1, 2)
    assert t.transform == tr @ Affine.translation(t.read_window.col_off, t.read_window.row_off)


@pytest.mark.parametrize(
    ("tile", "overlap", "align", "match"),
    [
        (8, 0, 16, "smaller than the model stride 16"),
        (100, 0, 16, "not a multiple of the model stride 16; use 96 or 112"),
        (64, 64, 16, "leaves no core"),
        (64, -1, 1, "overlap must be >= 0"),
    ],
)
def test_bad_parameters_explain_the_fix(tile, overlap, align, match):
    with pytest.raises(InvalidParameterError, match=match):
        TileGrid((1000, 1000), tile, overlap, align=align)
