"""Numpy scalars as option values: ``tile=np.int64(128)`` (a value taken from an array or a shape computed with numpy)
behaves as ``tile=128`` in every public function, and the files written hold plain JSON numbers."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from model_utils import tiny_checkpoint
from rasters import class_scene, write_raster

import geoseg
from geoseg.options import plain_value

# public functions that take options (geoseg's lazy API); each must count numpy scalars as Python numbers
OPTION_FUNCTIONS = ["predict_raster", "train_model", "run_batch", "vectorize", "evaluate", "create_model"]


def test_plain_value_converts_scalars_and_keeps_the_rest() -> None:
    assert type(plain_value(np.int64(3))) is int
    assert type(plain_value(np.float32(0.5))) is float
    assert type(plain_value(np.bool_(True))) is bool
    assert type(plain_value(np.str_("water"))) is str
    assert plain_value([np.int8(1), (np.float64(2.5),)]) == [1, (2.5,)]
    assert plain_value({"width": np.int64(8)}) == {"width": 8}
    arr = np.zeros(3)
    assert plain_value(arr) is arr  # arrays are data, not option values
    path = Path("x.tif")
    assert plain_value(path) is path


@pytest.mark.parametrize("name", OPTION_FUNCTIONS)
def test_public_functions_take_numpy_scalars(name: str) -> None:
    func = getattr(geoseg, name)
    assert getattr(func, "__wrapped__", None) is not None, f"{name} is not decorated with plain_arguments"
    # the signature and type hints tools read (CLI, QGIS, config files) are the function's own
    assert inspect.signature(func) == inspect.signature(func.__wrapped__)


def test_numpy_scalars_reach_the_same_result(tmp_path: Path) -> None:
    img, lab = class_scene(64, 64, bands=2)
    image = write_raster(tmp_path / "img.tif", img)
    labels = write_raster(tmp_path / "lab.tif", lab[None])
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", bands=["1", "2"])
    plain = geoseg.predict_raster(image, tmp_path / "plain.tif", model=ckpt, tile=32, overlap=8, device="cpu")
    scalars = geoseg.predict_raster(
        image, tmp_path / "np.tif", model=ckpt, tile=np.int64(32), overlap=np.int32(8), device="cpu"
    )
    with rasterio.open(plain.output) as a, rasterio.open(scalars.output) as b:
        assert np.array_equal(a.read(), b.read())
    report = geoseg.evaluate(scalars.output, labels, ignore_index=np.int64(255))
    assert report.miou == geoseg.evaluate(plain.output, labels, ignore_index=255).miou


def test_training_options_as_numpy_scalars_are_stored_as_json_numbers(tmp_path: Path) -> None:
    img, lab = class_scene(48, 48, bands=2)
    image = write_raster(tmp_path / "img.tif", img)
    labels = write_raster(tmp_path / "lab.tif", lab[None])
    result = geoseg.train_model(
        image,
        labels,
        tmp_path / "m.safetensors",
        arch="tiny",
        arch_kwargs={"width": np.int64(4)},
        epochs=np.int64(1),
        chip=np.int32(32),
        lr=np.float32(1e-3),
        seed=np.uint8(3),
        device="cpu",
        progress=None,
    )
    config = geoseg.read_config(result.checkpoint)
    assert config.arch_kwargs["width"] == 4
    stored = json.loads(config.to_json())  # plain JSON numbers all the way down
    assert stored["arch_kwargs"]["width"] == 4
    model = geoseg.create_model("tiny", in_channels=np.int64(2), num_classes=np.int64(3), width=np.int64(4))
    assert sum(p.numel() for p in model.parameters()) > 0


def test_list_options_given_as_arrays_or_pandas_count_as_lists(tmp_path: Path) -> None:
    import pandas as pd

    from geoseg.errors import InvalidParameterError

    _, labels = class_scene(32, 32, bands=1, classes=3)
    lab = write_raster(tmp_path / "lab.tif", labels[None])
    names = ["a", "b", "c"]
    for classes in (np.array(names), pd.Index(names), pd.Series(names)):
        assert [c.name for c in geoseg.evaluate(lab, lab, classes=classes).classes] == names
    with pytest.raises(InvalidParameterError, match=r"^prediction must be text or a path, got an array of shape"):
        geoseg.evaluate(np.array(["lab.tif"]), lab)  # a path is not a list: the array is refused, not unpacked


def test_warnings_of_the_public_functions_name_the_caller_s_line(tmp_path: Path) -> None:
    """The argument-checking wrapper is one more frame: warnings still point at the line that called geoseg."""
    from geoseg.errors import ClassNotTrainedWarning, NotGeoreferencedWarning

    img, lab = class_scene(48, 48, bands=2)
    image = write_raster(tmp_path / "img.tif", img)
    labels = write_raster(tmp_path / "lab.tif", lab[None])
    with pytest.warns(ClassNotTrainedWarning) as caught:
        geoseg.train_model(image, labels, tmp_path / "m.safetensors", arch="tiny", epochs=1, chip=32,
                           classes=["a", "b", "c", "never"], device="cpu", progress=None)  # fmt: skip
    assert {Path(w.filename).name for w in caught if w.category is ClassNotTrainedWarning} == {Path(__file__).name}
    plain = write_raster(tmp_path / "plain.tif", img, crs=None, transform=None)
    with pytest.warns(NotGeoreferencedWarning) as caught:
        geoseg.predict_raster(plain, tmp_path / "o.tif", model=tmp_path / "m.safetensors", device="cpu")
    assert {Path(w.filename).name for w in caught if w.category is NotGeoreferencedWarning} == {Path(__file__).name}
