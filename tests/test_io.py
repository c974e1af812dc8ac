import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from rasters import write_raster

from geoseg.errors import (
    BandSelectionError,
    InputNotFoundError,
    NotARasterError,
    UnsupportedRasterError,
)
from geoseg.io import Normalization, RasterSource, compute_normalization, open_dataarray, parse_band_spec


@pytest.fixture
def five_band(tmp_path):
    data = np.arange(5 * 20 * 30, dtype=np.uint16).reshape(5, 20, 30)
    return write_raster(tmp_path / "five.tif", data, descriptions=["B1", "B2", "B3", "B4", "NIR"]), data


def test_parse_band_spec():
    assert parse_band_spec("1,3,5-7") == [1, 3, 5, 6, 7]
    assert parse_band_spec("B04,B03, 2") == ["B04", "B03", 2]
    assert parse_band_spec([4, "nir"]) == [4, "nir"]
    assert parse_band_spec(None) is None
    with pytest.raises(BandSelectionError, match="descending"):
        parse_band_spec("5-2")


def test_band_selection_by_index_range_and_name_in_any_order(five_band):
    path, data = five_band
    with RasterSource(path, bands="NIR,1-2,b3") as src:
        assert src.band_indexes == [5, 1, 2, 3]
        assert src.band_names == ["NIR", "B1", "B2", "B3"]
        x, valid = src.read(Window(0, 0, 30, 20))
    np.testing.assert_array_equal(x, data[[4, 0, 1, 2]].astype(np.float32))
    assert valid.all()


def test_band_errors_name_the_fix(five_band):
    path, _ = five_band
    with pytest.raises(BandSelectionError, match=r"band index 6 is out of range: .* valid indexes are 1..5"):
        RasterSource(path, bands=[6])
    with pytest.raises(BandSelectionError, match="no band named 'red'.*named B1, B2, B3, B4, NIR"):
        RasterSource(path, bands="red")


def test_missing_file_and_not_a_raster(tmp_path):
    with pytest.raises(InputNotFoundError, match="not found"):
        RasterSource(tmp_path / "nope.tif")
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(NotARasterError, match="0-byte"):
        RasterSource(empty)
    text = tmp_path / "text.tif"
    text.write_text("hello, not a raster\n" * 10)
    with pytest.raises(NotARasterError, match="not a raster GDAL can read"):
        RasterSource(text)
    with pytest.raises(NotARasterError, match="directory"):
        RasterSource(tmp_path)


def test_complex_rasters_are_refused(tmp_path):
    p = write_raster(tmp_path / "c.tif", np.ones((1, 4, 4), np.complex64))
    with pytest.raises(UnsupportedRasterError, match="complex"):
        RasterSource(p)


def test_nodata_value_any_and_all_policies(tmp_path):
    data = np.ones((2, 4, 4), np.int16)
    data[0, 0, 0] = -9999
    data[:, 1, 1] = -9999
    p = write_raster(tmp_path / "nd.tif", data, nodata=-9999)
    with RasterSource(p) as src:
        x, valid = src.read(Window(0, 0, 4, 4))
        assert not valid[0, 0] and not valid[1, 1] and valid.sum() == 14
        assert x[0, 0, 0] == 0  # invalid pixels are zeroed, never -9999
    with RasterSource(p, nodata_policy="all") as src:
        _, valid = src.read(Window(0, 0, 4, 4))
        assert valid[0, 0] and not valid[1, 1]


def test_nan_is_nodata_for_float_rasters(tmp_path):
    data = np.ones((1, 3, 3), np.float32)
    data[0, 2, 2] = np.nan
    data[0, 0, 1] = np.inf
    with RasterSource(write_raster(tmp_path / "nan.tif", data)) as src:
        x, valid = src.read(Window(0, 0, 3, 3))
    assert valid.sum() == 7 and not valid[2, 2] and not valid[0, 1]
    assert np.isfinite(x).all()


def test_internal_mask_and_alpha_band(tmp_path):
    data = np.full((3, 8, 8), 100, np.uint8)
    p = tmp_path / "masked.tif"
    with (
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        rasterio.open(p, "w", driver="GTiff", width=8, height=8, count=3, dtype="uint8") as ds,
    ):
        ds.write(data)
        m = np.full((8, 8), 255, np.uint8)
        m[:4] = 0
        ds.write_mask(m)
    with RasterSource(p) as src:
        _, valid = src.read(Window(0, 0, 8, 8))
    assert valid[4:].all() and not valid[:4].any()

    rgba = np.concatenate([data, np.zeros((1, 8, 8), np.uint8)])
    rgba[3, :, 6:] = 255
    pa = write_raster(tmp_path / "alpha.tif", rgba, photometric="RGB", alpha="YES")
    with RasterSource(pa, bands="1-3") as src:
        _, valid = src.read(Window(0, 0, 8, 8))
    assert valid[:, 6:].all() and not valid[:, :6].any()


def test_scale_offset_applied(tmp_path):
    p = write_raster(tmp_path / "so.tif", np.full((1, 2, 2), 10, np.int16))
    with rasterio.open(p, "r+") as ds:
        ds.scales = (0.5,)
        ds.offsets = (1.0,)
    with RasterSource(p) as src:
        x, _ = src.read(Window(0, 0, 2, 2))
    assert np.allclose(x, 6.0)
    with RasterSource(p, apply_scale_offset=False) as src:
        x, _ = src.read(Window(0, 0, 2, 2))
    assert np.allclose(x, 10.0)


def test_reflect_padding_and_edge_for_single_pixel(tmp_path):
    data = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    with RasterSource(write_raster(tmp_path / "p.tif", data)) as src:
        x, valid = src.read(Window(0, 0, 3, 2), pad=(2, 1))
    assert x.shape == (1, 4, 4)
    np.testing.assert_array_equal(x[0, 2], x[0, 0])  # reflect about row 1
    assert valid.sum() == 6
    with RasterSource(write_raster(tmp_path / "one.tif", np.ones((1, 1, 1), np.float32))) as src:
        x, valid = src.read(Window(0, 0, 1, 1), pad=(3, 3))
    assert x.shape == (1, 4, 4) and valid.sum() == 1


@pytest.mark.parametrize("method", ["meanstd", "percentile", "minmax"])
def test_normalization_from_sampled_statistics(tmp_path, method):
    rng = np.random.default_rng(0)
    data = np.stack([rng.normal(100, 10, (200, 200)), rng.normal(-5, 2, (200, 200))]).astype(np.float32)
    data[:, :50, :50] = -1
    p = write_raster(tmp_path / "n.tif", data, nodata=-1)
    with RasterSource(p) as src:
        norm = compute_normalization(src, method, max_pixels=20_000)
        x, valid = src.read(Window(0, 0, 200, 200))
    y = norm.apply(x.copy())[:, valid]
    if method == "meanstd":
        assert np.allclose(y.mean(1), 0, atol=0.05) and np.allclose(y.std(1), 1, atol=0.05)
    else:
        assert (np.abs(np.median(y, 1) - 0.5) < 0.1).all()
    again = Normalization.from_dict(norm.to_dict())
    assert again == norm


def test_xarray_view_is_lazy_and_masked(tmp_path):
    data = np.arange(2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16)
    data[:, 0, 0] = -1
    p = write_raster(tmp_path / "x.tif", data, nodata=-1, descriptions=["red", "nir"])
    da = open_dataarray(p, bands="nir", chunks=8)
    assert list(da.band.values) == ["nir"]
    assert da.attrs["long_name"] == ("nir",)  # the selected band's description, not the file's two
    assert da.chunks is not None
    arr = da.compute().values
    assert np.isnan(arr[0, 0, 0]) and arr[0, 1, 1] == data[1, 1, 1]


def test_reads_from_many_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    data = np.random.default_rng(1).integers(0, 1000, (3, 256, 256)).astype(np.uint16)
    p = write_raster(tmp_path / "t.tif", data, tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    with RasterSource(p) as src:
        wins = [Window(c, r, 64, 64) for r in range(0, 256, 64) for c in range(0, 256, 64)] * 4

        def read(w):
            return w, src.read(w)[0]

        with ThreadPoolExecutor(8) as pool:
            for w, x in pool.map(read, wins):
                r, c = int(w.row_off), int(w.col_off)
                np.testing.assert_array_equal(x, data[:, r : r + 64, c : c + 64])


def _block_writer(path, h=40, w=40):
    from geoseg.io import BlockWriter, geotiff_profile

    prof = geotiff_profile(width=w, height=h, count=1, dtype="uint8", crs="EPSG:32633",
                           transform=rasterio.Affine(10, 0, 0, 0, -10, 0), nodata=255, block=16)  # fmt: skip
    return BlockWriter(path, prof)


def test_block_writer_refuses_overlaps_and_gaps(tmp_path):
    """Overlapping rectangles and never-written pixels are errors; an incomplete raster is refused at close."""
    from geoseg.errors import InvalidParameterError, OutputError

    writer = _block_writer(tmp_path / "o.tif")
    writer.write(0, 0, np.zeros((1, 20, 20), np.uint8))
    with pytest.raises(InvalidParameterError, match="written twice"):
        writer.write(10, 10, np.zeros((1, 5, 5), np.uint8))
    with pytest.raises(InvalidParameterError, match="outside"):
        writer.write(30, 30, np.zeros((1, 20, 20), np.uint8))
    with pytest.raises(InvalidParameterError, match="expected"):
        writer.write(0, 20, np.zeros((2, 5, 5), np.uint8))
    writer.write(0, 20, np.ones((1, 20, 20), np.uint8))
    assert writer.pending_bytes > 0  # block row 1 (rows 16-31) is only partly filled
    with pytest.raises(OutputError, match="6 of 9 blocks were never completely written"):
        writer.close()


def test_block_writer_holds_only_partial_blocks(tmp_path):
    """Tiles arriving row by row leave at most one block row of the width pending."""
    h, w = 96, 200
    writer = _block_writer(tmp_path / "o.tif", h, w)
    data = (np.arange(h * w) % 251).astype(np.uint8).reshape(1, h, w)
    peak = 0
    for r in range(0, h, 24):  # 24-px tile cores against 16-px blocks: every other block row straddles tiles
        for c in range(0, w, 24):
            writer.write(r, c, data[:, r : r + 24, c : c + 24])
            peak = max(peak, writer.pending_bytes)
    assert 0 < peak <= 16 * (w + 16)
    writer.close()
    with rasterio.open(tmp_path / "o.tif") as ds:
        np.testing.assert_array_equal(ds.read(), data)
        assert ds.block_shapes == [(16, 16)]


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "float32", "int32", "uint32", "float64"])
def test_read_into_a_batch_buffer_equals_read(tmp_path, dtype):
    """Decoding straight into a larger float32 buffer gives what ``read`` gives, for every dtype (GDAL converts the
    exact ones while decoding, wider ones are converted after), with nodata, scale/offset and band reordering."""
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    hi = min(int(info.max), 2**31 - 1) if info else 1e6
    data = rng.integers(0, hi, (3, 30, 40), dtype=np.int64).astype(dtype)
    if info is None:
        data[1, 4:7, 2:9] = np.nan
    nd = int(info.max) if info else -9999.0
    data[2, 10:12, :] = nd
    path = write_raster(tmp_path / f"{dtype}.tif", data, nodata=nd)
    with rasterio.open(path, "r+") as ds:
        ds.scales, ds.offsets = (0.5, 1.0, 2.0), (1.0, 0.0, -3.0)
    window = Window(3, 5, 25, 21)
    with RasterSource(path, bands="3,1") as src:
        ref, ref_valid = src.read(window)
        buf = np.full((2, 32, 32), 7.0, np.float32)
        valid = src.read_into(window, buf)
    np.testing.assert_array_equal(valid, ref_valid)
    np.testing.assert_array_equal(buf[:, :21, :25], ref)
    assert (buf[:, 21:] == 7).all() and (buf[:, :, 25:] == 7).all()  # nothing outside the window's part is touched
    assert not valid.all()
    expected = (
        data[[2, 0], 5:26, 3:28].astype(np.float64) * np.array([2.0, 0.5])[:, None, None]
        + np.array([-3.0, 1.0])[:, None, None]
    )
    np.testing.assert_allclose(ref[:, valid], expected[:, valid].astype(np.float32), rtol=1e-6)


def test_block_cache_decodes_each_block_once_and_frees_it(tmp_path):
    """Overlapping tile windows filled from the cache equal direct reads; each block is decoded once per group and
    dropped after its last window."""
    from geoseg.io.blocks import BlockCache
    from geoseg.tiling import TileGrid

    data = np.random.default_rng(1).integers(1, 4000, (2, 70, 90)).astype(np.uint16)
    data[:, 5:9, 7:30] = 9
    path = write_raster(tmp_path / "b.tif", data, nodata=9, tiled=True, blockxsize=16, blockysize=16)
    grid = TileGrid((70, 90), 32, 16, align=2)
    with RasterSource(path) as src:
        assert BlockCache.supports(src)
        for by_row, decoded in ((False, 5 * 6), (True, None)):
            cache = BlockCache.for_grid(src, grid, per_row=by_row)
            for t in grid:
                buf = np.zeros((2, 32, 32), np.float32)
                ref = np.zeros((2, 32, 32), np.float32)
                valid = cache.read_into(t.index[0], t.read_window, buf)
                np.testing.assert_array_equal(valid, src.read_into(t.read_window, ref))
                np.testing.assert_array_equal(buf, ref)
            if decoded:
                assert cache.decoded == decoded  # 5 x 6 blocks of 16 px, each once
            else:
                assert cache.decoded > 5 * 6  # per tile row: the blocks two rows share are decoded again
            assert cache.live_bytes == 0 and not cache._live
