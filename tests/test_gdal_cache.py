"""GDAL block cache sizing (geoseg.io.gdal_cache): one rule for prediction, vectorization and evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import rasterio.env
from rasters import write_raster

from geoseg.io import RasterSource
from geoseg.io.gdal_cache import MIN_CACHE_MB, WindowedReads, bounded_gdal_cache


def _reads(**kw) -> WindowedReads:
    base = {"shape": (4096, 8192), "block": (256, 256), "pixel_bytes": 9, "window": (512, 512)}
    return WindowedReads(**(base | kw))


def test_the_blocks_a_pass_revisits() -> None:
    # block-aligned windows without overlap never revisit a block
    assert _reads().cache_bytes() == 0
    # window rows that straddle block rows: one block row across the width
    assert _reads(window=(500, 512)).cache_bytes() == max(256 * 8192 * 9, (500 + 512) * (512 + 512) * 9)
    # tiles with a 64-px overlap (prediction): the block rows under the overlap, at least the blocks of two tiles
    assert _reads(overlap=(64, 64)).cache_bytes() == 2 * 256 * 8192 * 9
    assert _reads(overlap=(300, 300), window=(1024, 1024)).cache_bytes() == 3 * 256 * 8192 * 9
    # without keeping rows (CPU, wide raster): only the blocks of two neighbouring tiles
    assert _reads(overlap=(64, 64), keep_rows=False).cache_bytes() == (512 + 512) * (512 + 512) * 9
    # strips: a window row of strips plus one
    assert _reads(block=(16, 8192)).cache_bytes() == (512 + 16) * 8192 * 9
    # blocks kept decoded by the caller: the few being decoded
    assert _reads(overlap=(64, 64), blocks_held=True).cache_bytes() == 4 * 256 * 256 * 9


def test_of_counts_every_band_of_the_file_and_a_mask_byte(tmp_path) -> None:
    path = write_raster(tmp_path / "a.tif", np.zeros((5, 64, 96), np.uint16), tiled=True, blockxsize=32, blockysize=16)
    with rasterio.open(path) as ds:
        reads = WindowedReads.of(ds, (20, 20))
    assert reads.block == (16, 32) and reads.pixel_bytes == 5 * 2 + 1 and reads.shape == (64, 96)
    with RasterSource(path, bands=[2]) as src:  # one band selected, but a block decodes all five
        assert WindowedReads.of(src, (20, 20)).pixel_bytes == 11


def test_the_cache_is_set_unless_the_user_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from rasterio.env import get_gdal_config

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    before = get_gdal_config("GDAL_CACHEMAX")  # what GDAL's block cache may hold, in bytes
    big = _reads(window=(500, 512))
    with bounded_gdal_cache(big, None):
        assert get_gdal_config("GDAL_CACHEMAX") == int(big.cache_bytes() * 1.25)
    assert get_gdal_config("GDAL_CACHEMAX") == before
    with bounded_gdal_cache(_reads()):
        assert get_gdal_config("GDAL_CACHEMAX") == MIN_CACHE_MB * 2**20
    with rasterio.Env(GDAL_CACHEMAX=123 * 2**20), bounded_gdal_cache(big):
        assert get_gdal_config("GDAL_CACHEMAX") == 123 * 2**20
    with rasterio.Env():  # inside another Env (which rasterio does not restore it for): the size before comes back
        with bounded_gdal_cache(big):
            assert get_gdal_config("GDAL_CACHEMAX") == int(big.cache_bytes() * 1.25)
        assert get_gdal_config("GDAL_CACHEMAX") == before
    with bounded_gdal_cache(_reads()), bounded_gdal_cache(big):  # a pass inside another keeps the outer size
        assert get_gdal_config("GDAL_CACHEMAX") == MIN_CACHE_MB * 2**20
    monkeypatch.setenv("GDAL_CACHEMAX", "64")
    with bounded_gdal_cache(big):
        assert not rasterio.env.hasenv() or "GDAL_CACHEMAX" not in rasterio.env.getenv()


@pytest.mark.parametrize("layout", [{"tiled": True, "blockxsize": 128, "blockysize": 128}, {"tiled": False}])
def test_class_sample_reads_a_regular_grid_window_by_window(tmp_path, layout) -> None:
    """The class-raster check samples the pixel nearest each point of a regular grid, reading block-aligned windows
    (or single rows of a striped file) under a bounded GDAL cache instead of one decimated read of the whole band."""
    from geoseg.io.classes import sample_values

    data = np.arange(700 * 900, dtype=np.int32).reshape(700, 900) % 251
    data[::7, ::5] = 255  # nodata, left out
    path = write_raster(tmp_path / "c.tif", data[None].astype(np.uint8), nodata=255, **layout)
    with rasterio.open(path) as ds:
        got = sample_values(ds, pixels=10_000)
    step = np.sqrt(700 * 900 / 10_000)
    n_rows, n_cols = int(700 / step), int(900 / step)
    rows = np.minimum(((np.arange(n_rows) + 0.5) * 700 / n_rows).astype(int), 699)
    cols = np.minimum(((np.arange(n_cols) + 0.5) * 900 / n_cols).astype(int), 899)
    grid = data[np.ix_(rows, cols)]
    assert np.array_equal(np.sort(got), np.sort(grid[grid != 255].astype(np.uint8)))
