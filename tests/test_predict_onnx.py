import pytest
import rasterio
from model_utils import tiny_checkpoint
from rasters import class_scene, write_raster

from geoseg.inference import predict_raster

pytest.importorskip("onnxruntime")


def test_prediction_from_onnx_equals_torch(tmp_path):
    from geoseg.models.onnx import export_onnx

    data, _ = class_scene(96, 80, bands=2, classes=3)
    src = write_raster(tmp_path / "in.tif", data)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=16)
    onnx_path = tmp_path / "m.onnx"
    export_onnx(ck, onnx_path, exporter="torchscript")
    a = predict_raster(src, tmp_path / "torch.tif", model=ck, device="cpu")
    b = predict_raster(src, tmp_path / "onnx.tif", model=onnx_path, device="cpu")
    with rasterio.open(a.output) as x, rasterio.open(b.output) as y:
        ta, tb = x.read(1), y.read(1)
        assert y.crs == x.crs and y.colormap(1) == x.colormap(1)
    assert (ta == tb).mean() >= 0.999  # argmax may flip only where two logits tie within float error
    print("ONNX/torch class-map agreement:", float((ta == tb).mean()))
