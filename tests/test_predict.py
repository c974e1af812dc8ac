import warnings

import numpy as np
import pytest
import rasterio
import torch
from model_utils import predict_array, random_tiny, tiny_checkpoint
from rasters import TRANSFORM, UTM, class_scene, write_raster

from geoseg.errors import (
    CancelledError,
    InvalidParameterError,
    ModelContractError,
    NotGeoreferencedWarning,
    OutputError,
    OutputExistsError,
)
from geoseg.inference import predict_raster
from geoseg.models import ModelConfig


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.profile, ds


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if ".partial" in p.name)


def test_tiled_center_crop_equals_whole_image_prediction(tmp_path):
    """Seam test: tiles of 32 px with a 16-px halo (>= the tiny model's receptive-field radius of 7)."""
    data, _ = class_scene(200, 136, bands=4, classes=3)
    src = write_raster(tmp_path / "in.tif", data)
    net = random_tiny(4, 3)
    cfg = ModelConfig(arch="tiny", bands=["1", "2", "3", "4"], classes=["a", "b", "c"], arch_kwargs={"width": 8})
    whole = predict_array(net, data, stride=2)
    assert len(np.unique(whole)) >= 2, "the test model must not be constant"
    disagreement = {}
    for stitch in ("center", "mean", "gaussian"):
        out = predict_raster(
            src, tmp_path / f"{stitch}.tif", model=(net, cfg), tile=48, overlap=32, stitch=stitch, device="cpu"
        )
        assert out.tiles > 20
        tiled, _, _ = _read(out.output)
        disagreement[stitch] = float((tiled != whole).mean())
    print("disagreement with whole-image prediction:", disagreement)
    assert disagreement["center"] == 0.0
    # blending also averages predictions made near tile borders: close to, but not exactly, the whole-image map
    assert disagreement["mean"] < 0.15 and disagreement["gaussian"] < 0.15


def test_a_unet_tiled_with_its_receptive_field_as_overlap_equals_whole_image_prediction(tmp_path):
    """The default network for single-band images: an overlap of its receptive field (halo = half per side, as a
    checkpoint trained by geoseg records it) makes tiles of a depth-4 U-Net reproduce the whole-image map."""
    from geoseg.models.registry import create_model

    data, _ = class_scene(400, 300, bands=1, classes=3, seed=2)
    data = data + np.random.default_rng(0).normal(0, 1, data.shape).astype(data.dtype)  # texture at every scale
    src = write_raster(tmp_path / "in.tif", data)
    torch.manual_seed(0)
    net = create_model("unet", in_channels=1, num_classes=3, width=4).eval()
    with torch.no_grad():  # weights large enough that the argmax varies across the image
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                m.weight.normal_(0, 2.0 / m.weight[0].numel() ** 0.5)
    assert net.receptive_field == 200
    cfg = ModelConfig(arch="unet", bands=["1"], classes=["a", "b", "c"], arch_kwargs={"width": 4}, output_stride=16)
    whole = predict_array(net, data, stride=16)
    assert len(np.unique(whole)) >= 2, "the test model must not be constant"
    out = predict_raster(src, tmp_path / "o.tif", model=(net, cfg), tile=256, overlap=208, device="cpu")
    assert out.tiles > 1
    np.testing.assert_array_equal(_read(out.output)[0], whole)


@pytest.mark.parametrize(
    "layout",
    [
        {"tiled": True, "blockxsize": 16, "blockysize": 16, "compress": "deflate"},  # blocks shared by tiles
        {"tiled": True, "blockxsize": 64, "blockysize": 32},  # blocks larger than a tile's step
        {"tiled": False},  # strips
    ],
)
@pytest.mark.parametrize("dtype", ["uint16", "int32"])  # int32: read per window, no block reuse
def test_block_reuse_and_reader_threads_do_not_change_the_map(tmp_path, layout, dtype):
    """Tiles assembled from once-decoded blocks, on 0 or 3 reader threads, equal the whole-image prediction."""
    data, _ = class_scene(150, 110, bands=3, classes=3, seed=5)
    ints = np.clip(np.round(data * 1000) + 100, 1, None).astype(dtype)
    ints[:, :20, :30] = 0  # a nodata corner
    src = write_raster(tmp_path / "in.tif", ints, nodata=0, **layout)
    net = random_tiny(3, 3, seed=5)
    norm = {"method": "meanstd", "shift": [500.0] * 3, "scale": [300.0] * 3}
    cfg = ModelConfig(arch="tiny", bands=["1", "2", "3"], classes=["a", "b", "c"], arch_kwargs={"width": 8},
                      normalization=norm)  # fmt: skip
    x = (ints.astype(np.float32) - 500.0) / 300.0
    x[:, :20, :30] = 0.0
    whole = predict_array(net, x, stride=2)
    whole[:20, :30] = 255
    for workers in (0, 3):
        out = predict_raster(src, tmp_path / f"o{workers}.tif", model=(net, cfg), tile=48, overlap=32,
                             workers=workers, device="cpu")  # fmt: skip
        np.testing.assert_array_equal(_read(out.output)[0], whole)
    with pytest.raises(
        InvalidParameterError, match=r"workers must be an integer in \[0, \d+\] \(reader threads\), got -1"
    ):
        predict_raster(src, tmp_path / "bad.tif", model=(net, cfg), workers=-1, device="cpu")


def test_no_overlap_shows_seams_that_overlap_removes(tmp_path):
    data, _ = class_scene(96, 96, bands=3, classes=3, seed=3)
    src = write_raster(tmp_path / "in.tif", data)
    net = random_tiny(3, 3, seed=3)
    cfg = ModelConfig(arch="tiny", bands=["1", "2", "3"], classes=["a", "b", "c"], arch_kwargs={"width": 8})
    whole = predict_array(net, data, stride=2)
    seams = predict_raster(src, tmp_path / "o0.tif", model=(net, cfg), tile=16, overlap=0, device="cpu")
    assert (_read(seams.output)[0] != whole).sum() > 0


@pytest.mark.parametrize(("h", "w"), [(1, 1), (5, 3), (33, 17), (130, 7), (7, 130), (64, 64)])
def test_odd_small_and_non_square_rasters_are_predicted(tmp_path, h, w):
    data = np.random.default_rng(h * w).normal(size=(2, h, w)).astype(np.float32)
    src = write_raster(tmp_path / "in.tif", data)
    net = random_tiny(2, 3)
    cfg = ModelConfig(arch="tiny", bands=["1", "2"], classes=["a", "b", "c"], arch_kwargs={"width": 8})
    out = predict_raster(src, tmp_path / "out.tif", model=(net, cfg), tile=32, overlap=16, device="cpu")
    arr, prof, _ = _read(out.output)
    assert arr.shape == (h, w)
    assert (arr < 3).all()
    np.testing.assert_array_equal(arr, predict_array(net, data, stride=2))


def test_outputs_georeferenced_with_nodata_colormap_and_probabilities(tmp_path):
    data, _ = class_scene(100, 120, bands=4, classes=3)
    data = (np.clip(data, 0, None) * 1000).astype(np.int16)
    data[:, :40, :60] = -1  # an all-nodata corner bigger than a tile
    data[:, 50, 50] = -1
    src = write_raster(tmp_path / "in.tif", data, nodata=-1)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2", "3", "4"], tile=32, overlap=8)
    res = predict_raster(src, tmp_path / "c.tif", model=ck, probabilities=tmp_path / "p.tif", device="cpu")
    assert res.tiles_skipped >= 2
    with rasterio.open(res.output) as ds:
        arr = ds.read(1)
        assert ds.crs == UTM and ds.transform == TRANSFORM
        assert ds.nodata == 255 and ds.dtypes[0] == "uint8"
        assert ds.profile["tiled"] and ds.profile["compress"] == "deflate"
        assert ds.colormap(1)[0][:3] == (31, 119, 180)
        assert "geoseg_classes" in ds.tags()
    assert (arr[:40, :60] == 255).all() and arr[50, 50] == 255
    assert (arr[40:, 60:] < 3).all()
    assert sum(res.class_counts.values()) == int((arr != 255).sum())
    with rasterio.open(res.probabilities) as ds:
        p = ds.read()
        assert ds.count == 3 and ds.descriptions == ("p(a)", "p(b)", "p(c)")
        assert ds.scales[0] == pytest.approx(1 / 254)
    valid = arr != 255
    assert (p[:, ~valid] == 255).all()
    assert np.allclose(p[:, valid].sum(0) / 254, 1, atol=0.02)
    np.testing.assert_array_equal(p[:, valid].argmax(0), arr[valid])


def test_bands_matched_by_name_in_model_order(tmp_path):
    data, _ = class_scene(40, 40, bands=3, classes=3)
    src = write_raster(tmp_path / "in.tif", data, descriptions=["red", "green", "nir"])
    reordered = write_raster(tmp_path / "re.tif", data[[2, 0, 1]], descriptions=["nir", "red", "green"])
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["nir", "red", "green"])
    a = predict_raster(src, tmp_path / "a.tif", model=ck, device="cpu")
    b = predict_raster(reordered, tmp_path / "b.tif", model=ck, device="cpu")
    c = predict_raster(src, tmp_path / "c.tif", model=ck, bands="3,1,2", device="cpu")
    np.testing.assert_array_equal(_read(a.output)[0], _read(b.output)[0])
    np.testing.assert_array_equal(_read(a.output)[0], _read(c.output)[0])


def test_band_contract_errors(tmp_path):
    data, _ = class_scene(40, 40, bands=4, classes=3)
    src = write_raster(tmp_path / "in.tif", data, descriptions=["B2", "B3", "B4", "B8"])
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["B2", "B3", "B4", "B8", "B11"])
    # fewer raster bands than the model has: no band selection is suggested (it could not help)
    with pytest.raises(
        ModelContractError, match=r"model expects 5 band\(s\) B2,B3,B4,B8,B11; the raster has only 4 "
    ) as e:
        predict_raster(src, tmp_path / "o.tif", model=ck, device="cpu")
    assert "no band selection can feed it" in str(e.value) and "--bands" not in str(e.value)
    with pytest.raises(ModelContractError, match="gives 2"):
        predict_raster(src, tmp_path / "o.tif", model=ck, bands="1,2", device="cpu")
    # enough bands, but not named as the model's: a selection of exactly the model's band count is suggested
    six = write_raster(tmp_path / "six.tif", np.concatenate([data, data[:2]]))
    with pytest.raises(ModelContractError, match=r"lacks B2,B3,B4,B8,B11.*e\.g\. bands='1-5'$"):
        predict_raster(six, tmp_path / "o.tif", model=ck, device="cpu")
    assert not (tmp_path / "o.tif").exists()


def test_output_path_rules(tmp_path):
    data, _ = class_scene(40, 40, bands=2, classes=3)
    src = write_raster(tmp_path / "in.tif", data)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"])
    predict_raster(src, tmp_path / "o.tif", model=ck, device="cpu")
    before = (tmp_path / "o.tif").read_bytes()
    with pytest.raises(OutputExistsError, match=r"pass overwrite=True to replace it"):  # the CLI says --overwrite
        predict_raster(src, tmp_path / "o.tif", model=ck, device="cpu")
    assert (tmp_path / "o.tif").read_bytes() == before
    predict_raster(src, tmp_path / "o.tif", model=ck, device="cpu", overwrite=True)
    with pytest.raises(OutputError, match="is the input raster"):
        predict_raster(src, src, model=ck, device="cpu", overwrite=True)
    with pytest.raises(OutputError, match="does not exist"):
        predict_raster(src, tmp_path / "missing" / "o.tif", model=ck, device="cpu")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        import os

        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that ignores directory permissions")
        with pytest.raises(OutputError, match="not writable"):
            predict_raster(src, ro / "o.tif", model=ck, device="cpu")
    finally:
        ro.chmod(0o755)


def test_read_only_directory_refused_even_for_root(tmp_path):
    """Root ignores permission bits; the check must still not leave partial files in a read-only mount."""
    import os

    if os.geteuid() != 0:
        pytest.skip("root-specific")
    data, _ = class_scene(20, 20, bands=2, classes=3)
    src = write_raster(tmp_path / "in.tif", data)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"])
    out = predict_raster(src, tmp_path / "x.tif", model=ck, device="cpu")
    assert out.output.exists() and _leftovers(tmp_path) == []


def test_tile_smaller_than_stride(tmp_path):
    data, _ = class_scene(40, 40, bands=2, classes=3)
    src = write_raster(tmp_path / "in.tif", data)
    from geoseg.models import create_model

    net = create_model("unet", in_channels=2, num_classes=3, width=4)
    cfg = ModelConfig(arch="unet", bands=["1", "2"], classes=["a", "b", "c"], arch_kwargs={"width": 4})
    with pytest.raises(InvalidParameterError, match="smaller than the model stride 16"):
        predict_raster(src, tmp_path / "o.tif", model=(net, cfg), tile=8, device="cpu")
    assert not (tmp_path / "o.tif").exists()


def test_non_georeferenced_input_warns_and_predicts(tmp_path):
    data, _ = class_scene(30, 30, bands=2, classes=3)
    src = write_raster(tmp_path / "in.tif", data, crs=None, transform=None)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"])
    with pytest.warns(NotGeoreferencedWarning, match="no CRS"):
        out = predict_raster(src, tmp_path / "o.tif", model=ck, device="cpu")
    assert _read(out.output)[0].shape == (30, 30)


def test_cancel_leaves_no_output(tmp_path):
    data, _ = class_scene(128, 128, bands=2, classes=3)
    src = write_raster(tmp_path / "in.tif", data)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=8)
    calls = []

    def progress(done, total, message=""):
        calls.append((done, total))
        return done >= total // 2

    with pytest.raises(CancelledError):
        predict_raster(
            src,
            tmp_path / "o.tif",
            model=ck,
            probabilities=tmp_path / "p.tif",
            device="cpu",
            batch_size=2,
            progress=progress,
        )
    assert not (tmp_path / "o.tif").exists() and not (tmp_path / "p.tif").exists()
    assert _leftovers(tmp_path) == []
    assert calls[0] == (0, calls[0][1])


def test_failure_in_writer_leaves_no_output(tmp_path, monkeypatch):
    """A write error (e.g. disk full) surfaces as an error and removes temporary files."""
    from geoseg.io import write as write_mod

    data, _ = class_scene(64, 64, bands=2, classes=3)
    src = write_raster(tmp_path / "in.tif", data)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=8)

    def failing(self, data, window):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(write_mod.BlockWriter, "_put", failing)
    with pytest.raises(OSError, match="No space left"):
        predict_raster(src, tmp_path / "o.tif", model=ck, device="cpu", batch_size=1)
    assert not (tmp_path / "o.tif").exists() and _leftovers(tmp_path) == []


def test_two_predictions_in_threads_match_sequential(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    data, _ = class_scene(96, 80, bands=2, classes=3)
    src = write_raster(tmp_path / "in.tif", data)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=8)
    ref = _read(predict_raster(src, tmp_path / "ref.tif", model=ck, device="cpu").output)[0]
    with warnings.catch_warnings(), ThreadPoolExecutor(2) as pool:
        futs = [pool.submit(predict_raster, src, tmp_path / f"t{i}.tif", model=ck, device="cpu") for i in range(2)]
        outs = [f.result() for f in futs]
    for o in outs:
        np.testing.assert_array_equal(_read(o.output)[0], ref)


def test_cuda_requested_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    data, _ = class_scene(16, 16, bands=2, classes=3)
    src = write_raster(tmp_path / "in.tif", data)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"])
    with pytest.raises(InvalidParameterError, match="CUDA is not available"):
        predict_raster(src, tmp_path / "o.tif", model=ck, device="cuda")


def test_regions_of_the_tile_grid_reassemble_the_full_prediction(tmp_path):
    """Regions (as run_batch uses them) give exactly the full prediction, even with a small overlap."""
    from geoseg.inference.predict import plan_grid

    data, _ = class_scene(150, 110, bands=2, classes=3, seed=5)
    src = write_raster(tmp_path / "in.tif", data)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=4)
    full = _read(predict_raster(src, tmp_path / "full.tif", model=ck, device="cpu").output)[0]
    grid = plan_grid(src, model=ck)
    nr, nc = grid.grid_shape
    mosaic = np.full_like(full, 99)
    for rows in (range(0, 2), range(2, nr)):
        for cols in (range(0, 3), range(3, nc)):
            out = tmp_path / f"r{rows.start}_{cols.start}.tif"
            predict_raster(src, out, model=ck, device="cpu", tiles=(rows, cols))
            sub = grid.restrict(rows, cols)
            with rasterio.open(out) as ds:
                assert ds.transform == sub.transform and (ds.height, ds.width) == sub.shape
                r0, c0 = sub.origin
                mosaic[r0 : r0 + ds.height, c0 : c0 + ds.width] = ds.read(1)
    np.testing.assert_array_equal(mosaic, full)
    with pytest.raises(InvalidParameterError, match="center"):
        predict_raster(src, tmp_path / "x.tif", model=ck, device="cpu", tiles=(range(0, 1), range(0, 1)), stitch="mean")


def test_crf_refinement_option(tmp_path):
    """crf=True runs the CRF on each tile's probabilities; it smooths but keeps the map's classes and nodata."""
    data, _ = class_scene(64, 64, bands=2, classes=3)
    data[:, :8, :8] = np.nan
    src = write_raster(tmp_path / "in.tif", data)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=16)
    plain = _read(predict_raster(src, tmp_path / "a.tif", model=ck, device="cpu").output)[0]
    refined = _read(predict_raster(src, tmp_path / "b.tif", model=ck, device="cpu", crf={"iterations": 3}).output)[0]
    assert (refined[:8, :8] == 255).all() and (refined[8:] < 3).all()
    assert 0.5 < (plain == refined).mean() < 1.0  # it changes some pixels, not the whole map

    def edges(a):
        return int((a[1:] != a[:-1]).sum() + (a[:, 1:] != a[:, :-1]).sum())

    assert edges(refined) < edges(plain)  # smoother: fewer class boundaries
    with pytest.warns(UserWarning, match=r"the CRF refines each tile over a 7-px window but tiles overlap by only 0 "
                      r"px: .* give overlap 7 or more"):  # fmt: skip
        predict_raster(src, tmp_path / "c.tif", model=ck, device="cpu", crf=True, overlap=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the model's 16-px overlap covers the window: no warning
        predict_raster(src, tmp_path / "d.tif", model=ck, device="cpu", crf=True)


def test_an_overlap_that_leaves_tiles_a_small_core_is_warned_about(tmp_path):
    """A 256-px tile with a 208-px overlap (a deep model's default) computes every pixel ~28 times: said, with the
    tile to give; a tile holding the whole raster, or a modest overlap, is not warned about."""
    src = write_raster(tmp_path / "in.tif", class_scene(320, 320, bands=2)[0])
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=256, overlap=208)
    with pytest.warns(UserWarning, match=r"tiles of 256x256 px with a 208-px overlap keep a core of only 48x48 px: the "
                      r"model computes every pixel about 28 times; a larger tile \(e\.g\. 832\)"):  # fmt: skip
        predict_raster(src, tmp_path / "a.tif", model=ck, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        predict_raster(src, tmp_path / "b.tif", model=ck, device="cpu", tile=1024)
        predict_raster(src, tmp_path / "c.tif", model=ck, device="cpu", overlap=32)


def test_overlap_block_rows_are_kept_only_within_budget(tmp_path):
    """The blocks two tile rows share are held across the width only while they fit the budget (``cache_mb``):
    64 MiB by default on the CPU. A 4-band uint16 file with 512-px blocks needs 2 block rows x width x 8 B: 32 MiB
    at 4096 px, 128 MiB at 16384 px (the width where the former 128 MiB budget held them)."""
    from geoseg.inference.reader import CPU_CACHE_MB, default_cache_mb, keep_overlap_rows, overlap_rows_bytes
    from geoseg.io import RasterSource
    from geoseg.tiling import TileGrid

    assert default_cache_mb(cuda=False) == CPU_CACHE_MB == 64
    assert 64 <= default_cache_mb(cuda=True) <= 16384  # from the host memory available, not a fixed figure
    for width, held_mib, kept in ((4096, 32, True), (16384, 128, False)):
        path = write_raster(tmp_path / f"w{width}.tif", np.zeros((4, 8, width), np.uint16), tiled=True,
                            blockxsize=512, blockysize=512, compress="deflate")  # fmt: skip
        with RasterSource(path) as src:
            grid = TileGrid(src.shape, 512, 64, align=2)
            assert overlap_rows_bytes(src, grid) == held_mib * 2**20
            assert keep_overlap_rows(src, grid, cache_mb=default_cache_mb(cuda=False)) is kept
            assert keep_overlap_rows(src, grid, cache_mb=held_mib) and not keep_overlap_rows(src, grid, cache_mb=0)


def test_host_available_memory_is_read():
    import os

    from geoseg.inference.reader import host_available_bytes

    avail = host_available_bytes()
    assert avail is not None and 0 < avail <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_cache_budget_decides_block_reuse_not_the_map(tmp_path):
    """Holding the shared blocks (budget) or decoding them again (0) gives the same map; a bad budget is refused."""
    src = write_raster(tmp_path / "in.tif", np.random.default_rng(3).integers(0, 1000, (2, 300, 700)).astype(np.uint16),
                       tiled=True, blockxsize=128, blockysize=128)  # fmt: skip
    cfg = ModelConfig(
        arch="tiny", bands=["1", "2"], classes=["a", "b", "c"], arch_kwargs={"width": 4}, tile=128, overlap=32,
        normalization={"method": "meanstd", "shift": [500.0] * 2, "scale": [300.0] * 2},
    )  # fmt: skip
    net = random_tiny(2, 3)
    held = predict_raster(src, tmp_path / "held.tif", model=(net, cfg), device="cpu", cache_mb=1024).output
    again = predict_raster(src, tmp_path / "again.tif", model=(net, cfg), device="cpu", cache_mb=0).output
    assert np.array_equal(_read(held)[0], _read(again)[0])
    with pytest.raises(InvalidParameterError, match=r"cache_mb must be a number >= 0 \(MiB"):
        predict_raster(src, tmp_path / "bad.tif", model=(net, cfg), device="cpu", cache_mb=-1)


def test_tta_averages_the_d4_orientations_and_keeps_seams_exact(tmp_path):
    """tta=True: the map is the argmax of the probabilities averaged over the tile's 8 flips and rotations (4 flips
    for non-square inputs), each undone before averaging; tiled with a halo it equals the whole-image D4 average."""
    from geoseg.inference.tta import D4Average, d4_transforms

    data, _ = class_scene(96, 96, bands=4, classes=3, seed=3)
    src = write_raster(tmp_path / "in.tif", data)
    net = random_tiny(4, 3, seed=3)
    cfg = ModelConfig(arch="tiny", bands=["1", "2", "3", "4"], classes=["a", "b", "c"], arch_kwargs={"width": 8})
    x = torch.from_numpy(data)[None]
    with torch.no_grad():
        assert len({tuple(f(x).flatten()[:64].tolist()) for f, _ in d4_transforms(True)}) == 8  # distinct
        assert all(torch.equal(b(f(x)), x) for f, b in d4_transforms(True) + d4_transforms(False))  # undone
        expected = torch.stack([b(net(f(x)).softmax(1)) for f, b in d4_transforms(True)]).mean(0)
        torch.testing.assert_close(D4Average(net)(x).exp(), expected)
        wide = x[..., :80]
        flips = torch.stack([b(net(f(wide)).softmax(1)) for f, b in d4_transforms(False)]).mean(0)
        torch.testing.assert_close(D4Average(net)(wide).exp(), flips)
    whole = expected.argmax(1)[0].numpy()
    plain = _read(predict_raster(src, tmp_path / "plain.tif", model=(net, cfg), tile=48, overlap=32, device="cpu")
                  .output)[0]  # fmt: skip
    out = predict_raster(src, tmp_path / "tta.tif", model=(net, cfg), tile=48, overlap=32, tta=True, device="cpu")
    tiled = _read(out.output)[0]
    assert out.tiles > 4
    np.testing.assert_array_equal(tiled, whole)
    assert 0 < (tiled != plain).mean() < 0.5  # it changes some pixels, not the map
