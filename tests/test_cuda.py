"""The CUDA paths of the prediction pipeline, each checked against the CPU pipeline on the same raster.

Pinned batch slots refilled by reader threads while the copy stream still reads them, partial and subset batches,
bf16 autocast + channels_last, the automatic batch size from free GPU memory, the GPU block-reuse budget, the CRF,
int32 class ids, ONNX models, cancellation and ``torch.compile``. Every test is marked ``cuda`` and skipped without
a CUDA device (``benchmarks/gpu_check.sh`` runs them on one). ``GEOSEG_TEST_DEVICE=cpu`` runs them on the CPU
instead, to rehearse them where no GPU is available (the comparisons then hold trivially).

fp32 on the GPU is compared with TF32 off (``strict_fp32``): convolutions then differ from the CPU's only in the
order of their sums, so a class may flip only where the two best CPU probabilities are within :data:`TIE` of each
other. bf16 changes the map where classes are close: its disagreement is printed and bounded loosely.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
import torch
from model_utils import random_tiny, tiny_checkpoint
from rasters import class_scene, write_raster

from geoseg.errors import CancelledError
from geoseg.inference import predict_raster
from geoseg.models import ModelConfig

DEVICE = os.environ.get("GEOSEG_TEST_DEVICE", "cuda")
TIE = 1e-4  # CPU top-2 probability margin under which fp32 GPU and CPU may pick different classes

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _read(path, band=None):
    with rasterio.open(path) as ds:
        return ds.read(band) if band else ds.read()


def _scene(tmp_path, rows=300, cols=260, *, bands=4, classes=3, seed=0, block=32):
    """A float32 scene in 32-px blocks (tiles are assembled from shared blocks) with a nodata corner that leaves
    whole tiles empty (skipped: subset batches) and others partly empty."""
    data, labels = class_scene(rows, cols, bands=bands, classes=classes, seed=seed)
    data[:, :100, :90] = np.nan
    path = write_raster(
        tmp_path / f"scene{seed}.tif", data, tiled=True, blockxsize=block, blockysize=block, compress="deflate"
    )
    return path, labels


def _compare(cpu_classes, cpu_probs, dev_classes):
    """Class ids that differ on valid pixels, and how many of them are not near-ties of the CPU probabilities."""
    valid = cpu_classes != 255
    np.testing.assert_array_equal(dev_classes == 255, ~valid, err_msg="nodata differs from the CPU map")
    top2 = np.sort(cpu_probs, axis=0)[-2:]
    margin = top2[1] - top2[0]
    differ = (cpu_classes != dev_classes) & valid
    return int(differ.sum()), int((differ & (margin >= TIE)).sum())


@pytest.mark.parametrize(("stitch", "batch"), [("center", 1), ("center", 5), ("gaussian", 3)])
def test_fp32_class_map_and_probabilities_equal_cpu(tmp_path, strict_fp32, stitch, batch):
    """Many batches through 3 pinned slots, partial last batches and subset batches (empty tiles skipped)."""
    src, _ = _scene(tmp_path)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2", "3", "4"], tile=64, overlap=32)
    common = {"model": ck, "stitch": stitch, "batch_size": batch, "prob_dtype": "float32"}
    cpu = predict_raster(src, tmp_path / "cpu.tif", probabilities=tmp_path / "cpu_p.tif", device="cpu", **common)
    dev = predict_raster(
        src, tmp_path / "dev.tif", probabilities=tmp_path / "dev_p.tif", device=DEVICE, amp=False, **common
    )
    assert dev.device.startswith(DEVICE.split(":")[0]) and dev.tiles_skipped == cpu.tiles_skipped > 0
    cpu_p, dev_p = _read(tmp_path / "cpu_p.tif"), _read(tmp_path / "dev_p.tif")
    differ, not_ties = _compare(_read(cpu.output, 1), cpu_p, _read(dev.output, 1))
    print(f"fp32 {stitch} batch {batch}: {differ} pixels differ from the CPU map, {not_ties} of them not near-ties")
    assert not_ties == 0
    np.testing.assert_allclose(dev_p, cpu_p, atol=1e-4, equal_nan=True)
    assert dev.class_counts.keys() == cpu.class_counts.keys()


def test_bf16_autocast_changes_few_pixels(tmp_path):
    """The default on CUDA (bf16 autocast + channels_last): its disagreement with the fp32 CPU map is reported."""
    src, _ = _scene(tmp_path)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2", "3", "4"], tile=64, overlap=32)
    cpu = _read(predict_raster(src, tmp_path / "cpu.tif", model=ck, device="cpu").output, 1)
    dev = _read(predict_raster(src, tmp_path / "dev.tif", model=ck, device=DEVICE, amp=True).output, 1)
    valid = cpu != 255
    np.testing.assert_array_equal(dev == 255, ~valid)
    fraction = float((cpu != dev)[valid].mean())
    print(f"bf16 autocast: {fraction:.5f} of valid pixels differ from the fp32 CPU map ({valid.sum()} pixels)")
    assert fraction < 0.02


def test_automatic_batch_size_from_free_memory(tmp_path, strict_fp32):
    """batch_size=None sizes batches from free GPU memory (host buffers capped); the map is the same as with a
    fixed batch size."""
    from geoseg.inference.engine import HOST_BATCH_BUDGET, auto_batch_size

    dev = torch.device(DEVICE)
    net = random_tiny(4, 3).to(dev)
    small = auto_batch_size(net, 4, (64, 64), dev, amp=True)
    assert 1 <= small <= 64
    hyper = auto_batch_size(random_tiny(200, 3).to(dev), 200, (512, 512), dev, amp=True)
    assert 1 <= hyper <= HOST_BATCH_BUDGET // (3 * 200 * 512 * 512 * 4)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        print(f"auto batch: {small} tiles of 4x64x64, {hyper} of 200x512x512; {free / 2**30:.1f} GiB free")
    src, _ = _scene(tmp_path)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2", "3", "4"], tile=64, overlap=32)
    auto = predict_raster(src, tmp_path / "auto.tif", model=ck, device=DEVICE, amp=False)
    fixed = predict_raster(src, tmp_path / "fixed.tif", model=ck, device=DEVICE, amp=False, batch_size=2)
    a, b = _read(auto.output, 1), _read(fixed.output, 1)
    assert (a != b).mean() < 1e-3  # convolution algorithms may differ with the batch size: near-ties only


def test_batch_size_leaves_room_for_the_crf(tmp_path):
    """The automatic batch size counts what the CRF holds per pixel (48 pairwise weights for a 7x7 window, several
    probability maps), not only the model's memory."""
    from geoseg.inference.engine import auto_batch_size, device_bytes_per_tile

    dev = torch.device(DEVICE)
    net = random_tiny(4, 8).to(dev)
    plain = auto_batch_size(net, 4, (512, 512), dev, amp=True, num_classes=8)
    assert 1 <= auto_batch_size(net, 4, (512, 512), dev, amp=True, num_classes=8, crf={}) <= plain
    if dev.type == "cuda":
        model_only = device_bytes_per_tile(net, 4, (512, 512), dev, amp=True, num_classes=8)
        with_crf = device_bytes_per_tile(net, 4, (512, 512), dev, amp=True, num_classes=8, crf={})
        print(f"device memory per 512-px tile: {model_only / 2**20:.0f} MiB, with the CRF {with_crf / 2**20:.0f} MiB")
        assert with_crf - model_only >= 48 * 512 * 512 * 4


def test_crf_on_gpu_equals_cpu(tmp_path, strict_fp32):
    src, _ = _scene(tmp_path, 200, 180)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2", "3", "4"], tile=64, overlap=32)
    common = {"model": ck, "crf": {"iterations": 3}, "prob_dtype": "float32", "batch_size": 4}
    cpu = predict_raster(src, tmp_path / "cpu.tif", probabilities=tmp_path / "cpu_p.tif", device="cpu", **common)
    dev = predict_raster(
        src, tmp_path / "dev.tif", probabilities=tmp_path / "dev_p.tif", device=DEVICE, amp=False, **common
    )
    cpu_p = _read(tmp_path / "cpu_p.tif")
    differ, not_ties = _compare(_read(cpu.output, 1), cpu_p, _read(dev.output, 1))
    print(f"CRF fp32: {differ} pixels differ from the CPU map, {not_ties} not near-ties")
    assert not_ties == 0
    np.testing.assert_allclose(_read(tmp_path / "dev_p.tif"), cpu_p, atol=1e-4, equal_nan=True)


def test_wide_raster_uses_the_gpu_block_budget(tmp_path, strict_fp32):
    """Beside a GPU the blocks two tile rows share are held across a width the CPU budget would not hold; the map
    still equals the CPU's (which decodes them twice)."""
    from geoseg.inference.reader import default_cache_mb, keep_overlap_rows
    from geoseg.io import RasterSource
    from geoseg.tiling import TileGrid

    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(0, 3, size=(20, 576)), np.ones((8, 8), np.int64))  # 160 x 4608
    spectra = rng.integers(300, 3000, size=(16, 3))  # band x class
    data = spectra[:, labels] + rng.integers(0, 200, (16, *labels.shape))
    src = write_raster(
        tmp_path / "wide.tif", data.astype(np.uint16), nodata=0, tiled=True, blockxsize=512, blockysize=512,
        compress="deflate",
    )  # fmt: skip
    bands = [str(b) for b in range(1, 17)]
    cfg = ModelConfig(
        arch="tiny", bands=bands, classes=["a", "b", "c"], arch_kwargs={"width": 8}, tile=128, overlap=32,
        normalization={"method": "meanstd", "shift": [1600.0] * 16, "scale": [800.0] * 16},
    )  # fmt: skip
    with RasterSource(src) as s:
        grid = TileGrid(s.shape, 128, 32, align=2)
        # 2 block rows x 4608 px x 16 bands x 2 bytes = 144 MiB: over the CPU budget (64 MiB), within the GPU's
        assert keep_overlap_rows(s, grid, cache_mb=default_cache_mb(cuda=True))
        assert not keep_overlap_rows(s, grid, cache_mb=default_cache_mb(cuda=False))
    net = random_tiny(16, 3)
    cpu = _read(predict_raster(src, tmp_path / "cpu.tif", model=(net, cfg), device="cpu", batch_size=16).output, 1)
    dev = _read(predict_raster(src, tmp_path / "dev.tif", model=(net, cfg), device=DEVICE, amp=False).output, 1)
    assert (cpu != dev).mean() < 1e-4  # only near-ties may flip


def test_many_classes_use_int32_ids(tmp_path, strict_fp32):
    """More than 256 classes: int32 class ids on the device and a uint16 map."""
    src, _ = _scene(tmp_path, 120, 100, classes=3)
    names = [f"c{i}" for i in range(300)]
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2", "3", "4"], names, tile=48, overlap=32)
    cpu = predict_raster(src, tmp_path / "cpu.tif", model=ck, device="cpu")
    dev = predict_raster(src, tmp_path / "dev.tif", model=ck, device=DEVICE, amp=False)
    a, b = _read(cpu.output, 1), _read(dev.output, 1)
    assert a.dtype == b.dtype == np.uint16 and (a[a != 65535] > 255).any()
    assert (a != b).mean() < 1e-3


def test_onnx_model_on_gpu_device(tmp_path):
    """An ONNX model runs through the CUDA pipeline (onnxruntime on the host side); same map as on CPU."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from geoseg.models.onnx import export_onnx

    src, _ = _scene(tmp_path, 160, 140)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2", "3", "4"], tile=64, overlap=32)
    onnx_path = export_onnx(ck, tmp_path / "m.onnx", exporter="torchscript")
    cpu = _read(predict_raster(src, tmp_path / "cpu.tif", model=onnx_path, device="cpu", batch_size=4).output, 1)
    dev = _read(predict_raster(src, tmp_path / "dev.tif", model=onnx_path, device=DEVICE, batch_size=4).output, 1)
    assert (cpu != dev).mean() < 1e-3  # the same onnxruntime session options; near-ties only if it uses the GPU


def test_cancel_mid_run_leaves_nothing(tmp_path):
    """Cancelling while copies and forwards are in flight frees the pinned slots cleanly and writes nothing."""
    src, _ = _scene(tmp_path)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2", "3", "4"], tile=64, overlap=32)
    with pytest.raises(CancelledError):
        predict_raster(src, tmp_path / "o.tif", model=ck, device=DEVICE, batch_size=2, progress=lambda d, t, m: d >= 6)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(("o.tif", ".o.tif"))]
    ok = predict_raster(src, tmp_path / "again.tif", model=ck, device=DEVICE, batch_size=2)  # the device still works
    assert ok.tiles > 6


def test_torch_compile_matches_eager(tmp_path, strict_fp32):
    """compile=True (torch.compile, CUDA only) gives the eager map; on CPU it is ignored."""
    src, _ = _scene(tmp_path, 200, 180)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2", "3", "4"], tile=64, overlap=32)
    eager = _read(predict_raster(src, tmp_path / "e.tif", model=ck, device=DEVICE, amp=False, batch_size=8).output, 1)
    compiled = _read(
        predict_raster(src, tmp_path / "c.tif", model=ck, device=DEVICE, amp=False, compile=True, batch_size=8).output,
        1,
    )
    assert (eager != compiled).mean() < 1e-3
