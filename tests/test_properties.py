"""Property-based invariants of stitching, and a fuzz pass over raster headers."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.windows import Window
from rasters import write_raster

from geoseg.errors import GeoSegError
from geoseg.inference.stitch import STITCH_METHODS, TileResult, make_stitcher
from geoseg.io import RasterSource
from geoseg.tiling import TileGrid


def _field(shape, classes, seed):
    """Per-pixel class probabilities that depend only on the pixel's raster position."""
    rng = np.random.default_rng(seed)
    p = rng.random((classes, *shape)).astype(np.float32) + 1e-3
    return p / p.sum(0)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 90),
    w=st.integers(1, 90),
    tile_k=st.integers(2, 6),
    align=st.sampled_from([1, 2, 4]),
    overlap=st.integers(0, 12),
    method=st.sampled_from(sorted(STITCH_METHODS)),
    seed=st.integers(0, 5),
)
def test_consistent_tiles_stitch_back_to_the_same_map(h, w, tile_k, align, overlap, method, seed):
    """When every tile predicts the same value for a pixel, every strategy returns exactly that value, the emitted
    pieces cover every output pixel exactly once, and nodata pixels stay nodata."""
    tile = 8 * tile_k
    if 2 * (-(-overlap // 2 // align) * align) >= tile:
        return
    grid = TileGrid((h, w), tile, overlap, align=align)
    probs = _field((h, w), 3, seed)
    valid = np.ones((h, w), bool)
    valid[: h // 3, : w // 4] = False
    stitcher = make_stitcher(method, grid, 3, keep_probs=True)
    out_cls = np.full((h, w), -1)
    out_p = np.zeros((3, h, w), np.float32)
    out_valid = np.zeros((h, w), bool)
    hits = np.zeros((h, w), int)
    th, tw = grid.tile_shape
    for t in grid:
        r0, c0 = int(t.read_window.row_off), int(t.read_window.col_off)
        rh, rw = int(t.read_window.height), int(t.read_window.width)
        p = np.zeros((3, th, tw), np.float32)
        v = np.zeros((th, tw), bool)
        p[:, :rh, :rw] = probs[:, r0 : r0 + rh, c0 : c0 + rw]
        v[:rh, :rw] = valid[r0 : r0 + rh, c0 : c0 + rw]
        for piece in stitcher.add(TileResult(t, v, p.argmax(0), p)):
            ph, pw = piece.classes.shape
            region = np.s_[piece.row : piece.row + ph, piece.col : piece.col + pw]
            hits[region] += 1
            out_cls[region] = piece.classes
            out_p[(slice(None), *region)] = piece.probs
            out_valid[region] = piece.valid
    np.testing.assert_array_equal(hits, 1)
    np.testing.assert_array_equal(out_valid, valid)
    np.testing.assert_allclose(out_p[:, valid], probs[:, valid], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out_cls[valid], probs.argmax(0)[valid])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    block=st.sampled_from([16, 32]),
    cuts=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    seed=st.integers(0, 5),
)
def test_block_writer_assembles_rectangles_in_any_order(tmp_path, h, w, block, cuts, seed):
    """Rectangles of any size, in any order, give the same GeoTIFF as one whole write; nothing is held at the end."""
    import rasterio

    from geoseg.io import BlockWriter, geotiff_profile

    data = np.random.default_rng(seed).integers(0, 250, (2, h, w)).astype(np.uint8)
    rects = [(r, c) for r in range(0, h, cuts[0]) for c in range(0, w, cuts[1])]
    np.random.default_rng(seed).shuffle(rects)
    prof = geotiff_profile(width=w, height=h, count=2, dtype="uint8", crs="EPSG:32633",
                           transform=rasterio.Affine(1, 0, 0, 0, -1, h), nodata=None, block=block)  # fmt: skip
    path = tmp_path / f"bw_{h}_{w}_{block}_{cuts}_{seed}.tif"
    writer = BlockWriter(path, prof)
    for r, c in rects:
        writer.write(r, c, data[:, r : r + cuts[0], c : c + cuts[1]])
    assert writer.pending_bytes == 0
    writer.close()
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(ds.read(), data)


@pytest.fixture(scope="module")
def header_sample(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    data = np.random.default_rng(0).integers(0, 1000, (2, 40, 40)).astype(np.uint16)
    path = write_raster(d / "ok.tif", data, tiled=True, blockxsize=16, blockysize=16, compress="deflate", nodata=0)
    return path.read_bytes()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flips=st.lists(st.tuples(st.integers(0, 511), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 4000)),
)
def test_fuzzed_headers_end_in_a_clean_error(tmp_path, header_sample, flips, cut):
    raw = bytearray(header_sample)
    for pos, val in flips:
        raw[pos] = val
    if cut is not None:
        raw = raw[:cut]
    path = tmp_path / "fuzz.tif"
    path.write_bytes(bytes(raw))
    try:
        with RasterSource(path) as src:
            if src.width * src.height > 10_000_000:  # a header claiming a huge raster: reading one window suffices
                src.read(Window(0, 0, min(src.width, 64), min(src.height, 64)))
            else:
                src.read(Window(0, 0, src.width, src.height))
    except GeoSegError:
        pass
