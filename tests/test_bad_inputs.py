"""Catalogue of bad inputs: each gives a specific GeoSegError with an actionable message and leaves no output."""

import os
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from model_utils import tiny_checkpoint
from rasters import class_scene, write_raster

from geoseg.errors import (
    CheckpointError,
    GeoSegError,
    InputNotFoundError,
    InvalidParameterError,
    ModelContractError,
    NoOverlapError,
    NotARasterError,
    NotGeoreferencedWarning,
    NoValidDataError,
    OutputError,
    RasterReadError,
    UnsupportedRasterError,
)
from geoseg.inference import predict_raster
from geoseg.train import train_model


@pytest.fixture
def ck(tmp_path):
    return tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=8)


@pytest.fixture
def good(tmp_path):
    data, _ = class_scene(64, 64, bands=2)
    return write_raster(tmp_path / "good.tif", data, tiled=True, blockxsize=16, blockysize=16, compress="deflate")


def _no_output(d, name="out.tif"):
    return not (d / name).exists() and not [p for p in d.iterdir() if ".partial" in p.name]


def _predict(tmp_path, src, ck, **kw):
    return predict_raster(src, tmp_path / "out.tif", model=ck, device="cpu", **kw)


def test_truncated_geotiff(tmp_path, good, ck):
    raw = good.read_bytes()
    bad = tmp_path / "trunc.tif"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RasterReadError, match="truncated or corrupt"):
        _predict(tmp_path, bad, ck)
    assert _no_output(tmp_path)


def test_header_only_garbage_and_zero_byte(tmp_path, ck):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00" + os.urandom(200))
    with pytest.raises(NotARasterError, match="not a raster GDAL can read"):
        _predict(tmp_path, junk, ck)
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(NotARasterError, match="0-byte"):
        _predict(tmp_path, empty, ck)
    with pytest.raises(InputNotFoundError):
        _predict(tmp_path, tmp_path / "missing.tif", ck)
    assert _no_output(tmp_path)


def test_png_renamed_tif_is_read_by_content(tmp_path, ck):
    png = tmp_path / "x.png"
    with rasterio.open(png, "w", driver="PNG", width=20, height=10, count=2, dtype="uint8") as ds:
        ds.write(np.random.default_rng(0).integers(0, 255, (2, 10, 20), dtype=np.uint8))
    renamed = tmp_path / "renamed.tif"
    shutil.copy(png, renamed)
    with pytest.warns(NotGeoreferencedWarning):
        out = _predict(tmp_path, renamed, ck)
    with rasterio.open(out.output) as ds:
        assert ds.shape == (10, 20)


def test_rotated_transform_is_kept(tmp_path, ck):
    data, _ = class_scene(40, 40, bands=2)
    rot = Affine.translation(500000, 4600000) @ Affine.rotation(30) @ Affine.scale(10, -10)
    src = write_raster(tmp_path / "rot.tif", data, transform=rot)
    out = _predict(tmp_path, src, ck)
    with rasterio.open(out.output) as ds:
        assert ds.transform.almost_equals(rot)


def test_nan_inf_are_nodata_and_all_nodata_is_an_error(tmp_path, ck):
    data, _ = class_scene(40, 40, bands=2)
    data[0, :5] = np.nan
    data[1, 10:12] = np.inf
    src = write_raster(tmp_path / "nan.tif", data)
    out = _predict(tmp_path, src, ck)
    with rasterio.open(out.output) as ds:
        arr = ds.read(1)
    assert (arr[:5] == 255).all() and (arr[10:12] == 255).all() and (arr[20:] < 3).all()
    empty = write_raster(tmp_path / "allnd.tif", np.full((2, 40, 40), -1, np.int16), nodata=-1)
    with pytest.raises(NoValidDataError, match="no valid pixel"):
        predict_raster(empty, tmp_path / "o2.tif", model=ck, device="cpu")
    assert _no_output(tmp_path, "o2.tif")


@pytest.mark.parametrize("shape", [(1, 1), (1, 20_000), (20_000, 1)])
def test_degenerate_shapes_are_predicted(tmp_path, ck, shape):
    data = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    src = write_raster(tmp_path / "deg.tif", data)
    out = predict_raster(src, tmp_path / "out.tif", model=ck, device="cpu", tile=512 if 1 in shape else 32)
    with rasterio.open(out.output) as ds:
        assert ds.shape == shape and (ds.read(1) < 3).all()


def test_complex_dtype(tmp_path, ck):
    src = write_raster(tmp_path / "c.tif", np.ones((2, 8, 8), np.complex64))
    with pytest.raises(UnsupportedRasterError, match="complex"):
        _predict(tmp_path, src, ck)


def test_band_mismatch_and_class_ids_beyond_classes(tmp_path, ck):
    data, labels = class_scene(64, 64, bands=3, classes=3)
    src = write_raster(tmp_path / "three.tif", data, descriptions=["r", "g", "b"])
    ck3 = tiny_checkpoint(tmp_path / "m3.safetensors", ["r", "g", "nir"])
    with pytest.raises(ModelContractError, match="lacks nir"):
        predict_raster(src, tmp_path / "out.tif", model=ck3, device="cpu")
    lab = write_raster(tmp_path / "lab.tif", labels)
    with pytest.raises(InvalidParameterError, match=r"values \{2\} outside the class ids 0\.\.1 of the 2 class names"):
        train_model(src, lab, tmp_path / "t.safetensors", arch="tiny", classes=["a", "b"], device="cpu")
    assert _no_output(tmp_path)


def test_labels_not_overlapping_or_other_crs(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    data, labels = class_scene(64, 64, bands=2, classes=3)
    src = write_raster(tmp_path / "img.tif", data)
    far = gpd.GeoDataFrame({"c": [0, 1]}, geometry=[box(0, 0, 10, 10), box(20, 20, 30, 30)], crs="EPSG:32633")
    far.to_file(tmp_path / "far.gpkg")
    with pytest.raises(InvalidParameterError, match="cover no pixel of the image"):
        train_model(src, tmp_path / "far.gpkg", tmp_path / "t.safetensors", arch="tiny", class_field="c", device="cpu")
    other = write_raster(tmp_path / "lab4326.tif", labels, crs="EPSG:4326")
    with pytest.raises(NoOverlapError, match="cannot be placed in EPSG:32633"):
        train_model(src, other, tmp_path / "t.safetensors", arch="tiny", device="cpu")
    assert _no_output(tmp_path, "t.safetensors")


def test_checkpoint_of_another_architecture_and_malicious_pickle(tmp_path, good):
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": Boom(), "geoseg_config": "{}"}))
    with pytest.raises(CheckpointError, match="refused"):
        _predict(tmp_path, good, evil)
    assert not (tmp_path / "ran").exists() and _no_output(tmp_path)


def test_bad_encoder_weights_leave_no_checkpoint(tmp_path, good):
    import pickle

    import torch
    from safetensors.torch import save_file

    labels = write_raster(tmp_path / "lab.tif", class_scene(64, 64, bands=2)[1])

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"conv1.weight": Boom()}))
    odd = tmp_path / "odd.safetensors"
    save_file({"foo.weight": torch.zeros(1)}, str(odd))
    r50 = tmp_path / "r50.safetensors"
    save_file({"conv1.weight": torch.zeros(4, 3, 7, 7), "bn1.weight": torch.zeros(4),
               **{f"layer1.{i}.conv3.weight": torch.zeros(1) for i in range(3)},
               **{f"layer{j}.{i}.conv1.weight": torch.zeros(1) for j, n in ((1, 3), (2, 4), (3, 6), (4, 3))
                  for i in range(n)}}, str(r50))  # fmt: skip
    cases = [
        (tmp_path / "missing.pth", InputNotFoundError, "encoder weights not found"),
        (evil, CheckpointError, "refused to load"),
        (odd, CheckpointError, "fit no known encoder layout; expected one of"),
        (r50, CheckpointError, "holds a resnet50 .*--encoder resnet50"),
        ("torchvision:resnet50", GeoSegError, "torchvision"),
    ]
    for weights, error, message in cases:
        with pytest.raises(error, match=message):
            train_model(
                good, labels, tmp_path / "m.safetensors", arch="fcn8s", arch_kwargs={"width": 4},
                encoder="resnet18", encoder_weights=weights, epochs=1, chip=32, block=32, device="cpu",
            )  # fmt: skip
        assert not (tmp_path / "ran").exists() and _no_output(tmp_path, "m.safetensors")


def test_output_equal_to_input(tmp_path, good, ck):
    before = good.read_bytes()
    with pytest.raises(OutputError, match="is the input raster"):
        predict_raster(good, good, model=ck, device="cpu", overwrite=True)
    assert good.read_bytes() == before


def test_batch_output_folder_holding_the_inputs(tmp_path, good, ck):
    pytest.importorskip("distributed")
    from geoseg.distributed import run_batch

    before = good.read_bytes()
    # the COG is named after the scene: the scene's own folder as output folder would replace it
    with pytest.raises(OutputError, match=r"COG of good .*good\.tif is the input raster; inputs are never overwritten"):
        run_batch([good], model=ck, out_dir=tmp_path, cog=True, overwrite=True, scheduler="tcp://127.0.0.1:9")
    assert good.read_bytes() == before and not (tmp_path / "good").exists()


def _mount_tmpfs(path, opts):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()}); the failing-writer test covers this")


def test_disk_full_on_a_small_tmpfs(tmp_path, ck):
    data = np.random.default_rng(0).normal(size=(2, 512, 512)).astype(np.float32)
    src = write_raster(tmp_path / "in.tif", data)
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "size=48k")
    try:
        with pytest.raises(OutputError, match="disk full|No space left"):
            predict_raster(
                src, mnt / "out.tif", model=ck, device="cpu", probabilities=mnt / "p.tif", prob_dtype="float32"
            )
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)])


def test_read_only_output_directory(tmp_path, good, ck):
    mnt = tmp_path / "ro"
    _mount_tmpfs(mnt, "size=1m,ro")
    try:
        with pytest.raises(OutputError, match="not writable"):
            predict_raster(good, mnt / "out.tif", model=ck, device="cpu")
    finally:
        subprocess.run(["umount", str(mnt)])


def test_every_error_is_a_geoseg_error_and_a_builtin():
    import inspect

    import geoseg.errors as E

    for name, cls in inspect.getmembers(E, inspect.isclass):
        if issubclass(cls, E.GeoSegError) and cls is not E.GeoSegError:
            assert any(issubclass(cls, b) for b in (ValueError, OSError, LookupError, ImportError, RuntimeError)), name
    with warnings.catch_warnings():
        assert issubclass(E.NotARasterError, GeoSegError)


# ====================================================================================================================
# Data semantics: nothing silently wrong. One row per input: the call, the error class and message, and a check that
# nothing was left behind or replaced. Kinds: output formats, georeference (GCPs/RPCs), band names, the model contract
# (schema and weights), class rasters, polygon layers, rotated grids, label values, label grids, nodata values, VRT
# sources, full disks, unsafe pickles.
# ====================================================================================================================

import hashlib  # noqa: E402
import json  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from rasters import TRANSFORM  # noqa: E402

from geoseg.errors import (  # noqa: E402
    BandSelectionError,
    GridMismatchWarning,
    NodataWarning,
    UnknownClassError,
)
from geoseg.models import load_checkpoint, read_config  # noqa: E402


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a digest of its bytes (what exists and what it holds)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _scene(tmp_path: Path, name: str = "img.tif", **kw: Any) -> Path:
    data, _ = class_scene(64, 64, bands=2)
    return write_raster(tmp_path / name, data, **kw)


def _ck(tmp_path: Path, bands=("1", "2"), classes=None, name="m.safetensors") -> Path:
    return tiny_checkpoint(tmp_path / name, list(bands), classes, tile=32, overlap=8)


def _labels(tmp_path: Path, values: np.ndarray, name: str = "lab.tif", **kw: Any) -> Path:
    return write_raster(tmp_path / name, values, **kw)


def _train(img: Path, labels: Path, out: Path, **kw: Any) -> Any:
    opts = {"arch": "tiny", "epochs": 1, "chip": 16, "block": 32, "chips_per_epoch": 4, "device": "cpu"} | kw
    return train_model(img, labels, out, **opts)


def _two_layers(tmp_path: Path, name: str = "two.gpkg") -> Path:
    import geopandas as gpd
    from shapely.geometry import box

    x0, y0 = TRANSFORM.c, TRANSFORM.f
    path = tmp_path / name
    top, bottom = box(x0, y0 - 320, x0 + 640, y0), box(x0, y0 - 640, x0 + 640, y0 - 320)
    gpd.GeoDataFrame({"class_id": [0, 1]}, geometry=[top, bottom], crs="EPSG:32633").to_file(path, layer="fields")
    gpd.GeoDataFrame({"class_id": [1]}, geometry=[top], crs="EPSG:32633").to_file(path, layer="roads")
    return path


def _contract_file(
    tmp_path: Path, change: dict[str, Any] | None = None, *, drop: str | None = None, name: str = "bad.safetensors"
) -> Path:
    """A tiny checkpoint whose contract JSON is edited (the weights stay those of a 2-band, 3-class model)."""
    from safetensors.torch import load_file, save_file

    from geoseg.models.config import CONFIG_KEY, safetensors_metadata

    good = _ck(tmp_path, name="good_" + name)
    meta = json.loads(safetensors_metadata(good)[CONFIG_KEY])
    meta.update(change or {})
    if drop:
        meta.pop(drop)
    path = tmp_path / name
    save_file(load_file(str(good)), str(path), metadata={CONFIG_KEY: json.dumps(meta), "format": "pt"})
    good.unlink()
    return path


@dataclass
class Row:
    """One bad input: ``build(tmp_path)`` makes the inputs and returns the call that must fail."""

    build: Any
    error: type[BaseException]
    match: str


def _predict_to(out: str, **kw: Any) -> Any:
    def build(tmp_path: Path) -> Any:
        img, ck = _scene(tmp_path), _ck(tmp_path)
        return lambda: predict_raster(img, tmp_path / out, model=ck, device="cpu", **kw)

    return build


def _vectorize(make: Any, out: str = "polys.gpkg", **kw: Any) -> Any:
    def build(tmp_path: Path) -> Any:
        from geoseg.vectorization import vectorize

        src = make(tmp_path)
        return lambda: vectorize(src, tmp_path / out, **kw)

    return build


def _evaluate(make_pred: Any, make_truth: Any, **kw: Any) -> Any:
    def build(tmp_path: Path) -> Any:
        from geoseg.evaluation import evaluate

        pred, truth = make_pred(tmp_path), make_truth(tmp_path)
        return lambda: evaluate(pred, truth, **kw)

    return build


def _train_on(make_labels: Any, **kw: Any) -> Any:
    def build(tmp_path: Path) -> Any:
        img = _scene(tmp_path)
        labels = make_labels(tmp_path)
        return lambda: _train(img, labels, tmp_path / "out.safetensors", **kw)

    return build


def _classmap(tmp_path: Path, name: str = "classes.tif", **kw: Any) -> Path:
    _, labels = class_scene(64, 64, bands=1)
    return write_raster(tmp_path / name, labels, **kw)


def _float_probabilities(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return write_raster(tmp_path / "probs.tif", rng.random((64, 64)).astype(np.float32))


def _reflectance(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "s2.tif", class_scene(64, 64, bands=6)[0])


def _dem(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    return write_raster(tmp_path / "dem.tif", rng.integers(0, 3000, (64, 64)).astype(np.int16))


def _uint16_band(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    return write_raster(tmp_path / "b8.tif", rng.integers(0, 10000, (64, 64)).astype(np.uint16))


def _duplicate_band_names(tmp_path: Path) -> Path:
    data = class_scene(64, 64, bands=4)[0]
    return write_raster(tmp_path / "dup.tif", data, descriptions=["B2", "B3", "B4", "B2"])


def _vrt_without_source(tmp_path: Path) -> Path:
    src = _classmap(tmp_path, "tile_a.tif")
    vrt = tmp_path / "mosaic.vrt"
    subprocess.run(["gdalbuildvrt", "-q", str(vrt), str(src)], check=True)
    src.unlink()
    return vrt


def _labels_values(values: list[int], dtype: str = "int16", **kw: Any) -> Any:
    def make(tmp_path: Path) -> Path:
        _, lab = class_scene(64, 64, bands=1, classes=len(values))
        return _labels(tmp_path, np.asarray(values, dtype)[lab], **kw)

    return make


def _polygon_labels(ids: list[int]) -> Any:
    def make(tmp_path: Path) -> Path:
        import geopandas as gpd
        from shapely.geometry import box

        x0, y0 = TRANSFORM.c, TRANSFORM.f
        geoms = [
            box(x0, y0 - 640 + 640 * i / len(ids), x0 + 640, y0 - 640 + 640 * (i + 1) / len(ids))
            for i in range(len(ids))
        ]
        path = tmp_path / "labels.gpkg"
        gpd.GeoDataFrame({"class_id": ids}, geometry=geoms, crs="EPSG:32633").to_file(path)
        return path

    return make


class Payload:
    """Any pickled Python object: torch refuses to unpickle it with weights_only=True."""


def _pt_with_pickled_object(tmp_path: Path, name: str) -> Path:
    import torch

    path = tmp_path / name
    torch.save({"state_dict": {"w": torch.zeros(1)}, "geoseg_config": "{}", "extra": Payload()}, path)
    return path


# fmt: off
SILENTLY_WRONG = {
    # -- output formats: chosen by extension, never a GeoTIFF under another name ---------------------------------
    "predict-png": Row(_predict_to("classes.png"), InvalidParameterError,
                       r"unsupported class raster format '\.png'.*geoseg writes GeoTIFF.*classes\.tif"),
    "predict-jp2": Row(_predict_to("classes.jp2"), InvalidParameterError, r"format '\.jp2'"),
    "predict-gpkg": Row(_predict_to("classes.gpkg"), InvalidParameterError, r"format '\.gpkg'"),
    "predict-no-extension": Row(_predict_to("classes"), InvalidParameterError, r"'\(no extension\)'"),
    # -- the block-reuse budget: NaN would compare false and quietly hold nothing --------------------------------
    "predict-cache-mb-negative": Row(_predict_to("ok.tif", cache_mb=-1), InvalidParameterError,
                                     r"cache_mb must be >= 0 MiB \(0 = never hold"),
    "predict-cache-mb-nan": Row(_predict_to("ok.tif", cache_mb=float("nan")), InvalidParameterError,
                                r"cache_mb must be >= 0 MiB, got nan|cache_mb must be >= 0 MiB \(0"),
    "predict-probabilities-png": Row(_predict_to("ok.tif", probabilities="p.png"), InvalidParameterError,
                                     r"unsupported probability raster format '\.png'"),
    "vectorize-png": Row(_vectorize(_classmap, "polys.png"), InvalidParameterError,
                         r"unsupported vector output format '\.png'.*\.gpkg.*\.shp"),
    "vectorize-kml": Row(_vectorize(_classmap, "polys.kml"), InvalidParameterError, r"format '\.kml'"),
    "vectorize-no-extension": Row(_vectorize(_classmap, "polys"), InvalidParameterError, r"'\(no extension\)'"),
    # -- band names that several bands share ---------------------------------------------------------------------
    "bands-duplicate-name": Row(
        lambda t: (lambda img=_duplicate_band_names(t), ck=_ck(t): predict_raster(
            img, t / "out.tif", model=ck, device="cpu", bands="B2,B3")),
        BandSelectionError, r"band name 'B2' is ambiguous.*bands 1, 4 are all named 'B2'.*--bands 1,B3"),
    "bands-duplicate-name-any-case": Row(
        lambda t: (lambda img=_duplicate_band_names(t), ck=_ck(t): predict_raster(
            img, t / "out.tif", model=ck, device="cpu", bands="b2,3")),
        BandSelectionError, r"'b2' is ambiguous.*bands 1, 4"),
    "contract-band-duplicated-in-raster": Row(
        lambda t: (lambda img=_duplicate_band_names(t), ck=_ck(t, bands=("B2", "B3")): predict_raster(
            img, t / "out.tif", model=ck, device="cpu")),
        BandSelectionError, r"'B2' is ambiguous"),
    # -- class rasters: vectorize and evaluate refuse images, probabilities and continuous data -------------------
    "vectorize-6-band-reflectance": Row(_vectorize(_reflectance), UnsupportedRasterError,
                                        r"has 6 bands; a class raster has one band"),
    "vectorize-float-probabilities": Row(_vectorize(_float_probabilities), UnsupportedRasterError,
                                         r"non-integer values \(e\.g\. 0\.\d+\)"),
    "vectorize-dem-int16": Row(_vectorize(_dem), UnsupportedRasterError,
                               r"distinct values.*no class names: it looks like continuous data"),
    "vectorize-uint16-band": Row(_vectorize(_uint16_band), UnsupportedRasterError, r"looks like continuous data"),
    "evaluate-float-prediction": Row(_evaluate(_float_probabilities, _classmap), UnsupportedRasterError,
                                     r"prediction .*probs\.tif holds non-integer values"),
    "evaluate-float-truth": Row(_evaluate(_classmap, _float_probabilities), UnsupportedRasterError,
                                r"truth .*probs\.tif holds non-integer values"),
    "evaluate-multiband-prediction": Row(_evaluate(_reflectance, _classmap), UnsupportedRasterError,
                                         r"prediction .*s2\.tif has 6 bands"),
    # -- polygon files with several layers -----------------------------------------------------------------------
    "train-labels-two-layers": Row(_train_on(_two_layers), InvalidParameterError,
                                   r"holds 2 layers \('fields', 'roads'\); choose one with layer= \(CLI: --layer\)"),
    "evaluate-truth-two-layers": Row(_evaluate(_classmap, _two_layers), InvalidParameterError,
                                     r"holds 2 layers .*truth_layer= \(CLI: --layer\)"),
    "evaluate-aoi-two-layers": Row(
        lambda t: (lambda p=_classmap(t), a=_two_layers(t, "aoi.gpkg"): __import__("geoseg.evaluation").evaluation
                   .evaluate(p, p, aoi=a)),
        InvalidParameterError, r"area of interest .*holds 2 layers .*aoi_layer= \(CLI: --aoi-layer\)"),
    "evaluate-truth-unknown-layer": Row(_evaluate(_classmap, _two_layers, truth_layer="nope"), InvalidParameterError,
                                        r"has no layer 'nope'; its layers are 'fields', 'roads'"),
    # -- label values: ids 0..K-1, the rest declared nodata or refused ------------------------------------------
    "labels-0-1-255-300": Row(_train_on(_labels_values([0, 1, 255, 300])), UnknownClassError,
                              r"hold values \{0, 1, 255, 300\}: ids \{2, 3, .*\} are missing.*--label-nodata"),
    "labels-0-1-255-300-named": Row(_train_on(_labels_values([0, 1, 255, 300]), classes=["a", "b", "c"]),
                                    UnknownClassError, r"values \{255, 300\} outside the class ids 0\.\.2"),
    "labels-0-255-mask": Row(_train_on(_labels_values([0, 255], "uint8")), UnknownClassError,
                             r"hold values \{0, 255\}.*a 0/255 mask to 0/1.*gdal_edit -a_nodata"),
    "labels-1-2-no-zero": Row(_train_on(_labels_values([1, 2], "uint8")), UnknownClassError,
                              r"hold values \{1, 2\}: ids \{0\} are missing"),
    "labels-minus-one-undeclared": Row(_train_on(_labels_values([-1, 0, 1])), UnknownClassError,
                                       r"\{-1, 0, 1\}: negative values are not class ids"),
    "labels-mask-255-declared-nodata": Row(_train_on(_labels_values([0, 255], "uint8", nodata=255)),
                                           InvalidParameterError, r"need at least 2 classes"),
    "labels-one-class-present": Row(_train_on(_labels_values([0], "uint8"), classes=["water", "land"]),
                                    InvalidParameterError, r"hold only class \['water'\].*at least 2 classes present"),
    "polygon-labels-0-255": Row(_train_on(_polygon_labels([0, 255])), UnknownClassError,
                                r"vector labels .*hold values \{0, 255\}"),
    "polygon-labels-background-outside": Row(_train_on(_polygon_labels([0, 1]), classes=["a", "b", "c"],
                                                       background=7),
                                             UnknownClassError, r"values \{7\} outside the class ids 0\.\.2"),
    # -- label rasters on another grid ---------------------------------------------------------------------------
    "labels-2km-away": Row(_train_on(lambda t: _labels(t, class_scene(64, 64, bands=1)[1],
                                                       transform=Affine.translation(2000, 0) @ TRANSFORM)),
                           NoOverlapError, r"label raster .* does not overlap the image"),
    "truth-2km-away": Row(_evaluate(_classmap, lambda t: _classmap(
        t, "truth.tif", transform=Affine.translation(0, -2000) @ TRANSFORM)), NoOverlapError,
        r"truth .*truth\.tif .* does not overlap the prediction"),
    "truth-gcps-vs-affine-prediction": Row(_evaluate(_classmap, lambda t: _classmap(
        t, "truth.tif", transform=None, gcps=_gcps(64, 64))), NoOverlapError,
        r"placed only by GCPs or RPCs is aligned only with the same grid.*gdalwarp"),
}
# fmt: on


def _gcps(rows: int, cols: int) -> list:
    from rasterio.control import GroundControlPoint as G

    x0, y0 = TRANSFORM.c, TRANSFORM.f
    return [
        G(0, 0, x0, y0),
        G(0, cols, x0 + 10 * cols, y0),
        G(rows, 0, x0, y0 - 10 * rows),
        G(rows, cols, x0 + 10 * cols, y0 - 10 * rows),
    ]


# fmt: off
MODEL_CONTRACT = {
    # -- a malformed contract: one CheckpointError naming the field ----------------------------------------------
    "tile-big": Row(lambda t: (lambda p=_contract_file(t, {"tile": "big"}): load_checkpoint(p)), CheckpointError,
                    r"field 'tile': expected a positive integer \(pixels\), got 'big'"),
    "tile-bool": Row(lambda t: (lambda p=_contract_file(t, {"tile": True}): load_checkpoint(p)), CheckpointError,
                     r"field 'tile'"),
    "format-version-string": Row(lambda t: (lambda p=_contract_file(t, {"format_version": "1"}): read_config(p)),
                                 CheckpointError, r"field 'format_version': expected a positive integer, got '1'"),
    "classes-integers": Row(lambda t: (lambda p=_contract_file(t, {"classes": [1, 2, 3]}): read_config(p)),
                            CheckpointError, r"field 'classes': expected a list of class names \(strings\)"),
    "classes-repeat": Row(lambda t: (lambda p=_contract_file(t, {"classes": ["a", "a", "b"]}): read_config(p)),
                          CheckpointError, r"field 'classes': names \['a'\] repeat"),
    "colors-names": Row(lambda t: (lambda p=_contract_file(t, {"colors": [["red"]] * 3}): read_config(p)),
                        CheckpointError, r"field 'colors': expected a list of \[r, g, b\] integers 0\.\.255"),
    "colors-out-of-range": Row(lambda t: (lambda p=_contract_file(t, {"colors": [[0, 0, 300]] * 3}): read_config(p)),
                               CheckpointError, r"field 'colors'"),
    "colors-count": Row(lambda t: (lambda p=_contract_file(t, {"colors": [[0, 0, 0]]}): read_config(p)),
                        CheckpointError, r"field 'colors': 1 colors given for 3 classes"),
    "overlap-negative": Row(lambda t: (lambda p=_contract_file(t, {"overlap": -8}): read_config(p)),
                            CheckpointError, r"field 'overlap': expected an integer >= 0"),
    "bands-empty": Row(lambda t: (lambda p=_contract_file(t, {"bands": []}): read_config(p)),
                       CheckpointError, r"field 'bands'"),
    "bands-repeat": Row(lambda t: (lambda p=_contract_file(t, {"bands": ["1", "1"]}): read_config(p)),
                        CheckpointError, r"field 'bands': names \['1'\] repeat"),
    "arch-number": Row(lambda t: (lambda p=_contract_file(t, {"arch": 5}): read_config(p)),
                       CheckpointError, r"field 'arch'"),
    "stride-zero": Row(lambda t: (lambda p=_contract_file(t, {"output_stride": 0}): read_config(p)),
                       CheckpointError, r"field 'output_stride'"),
    "scale-offset-text": Row(lambda t: (lambda p=_contract_file(t, {"scale_offset": "yes"}): read_config(p)),
                             CheckpointError, r"field 'scale_offset': expected true or false"),
    "normalization-per-band": Row(
        lambda t: (lambda p=_contract_file(t, {"normalization": {"method": "meanstd", "shift": [0.0],
                                                                 "scale": [1.0]}}): read_config(p)),
        CheckpointError, r"field 'normalization': 1 shift value\(s\) for 2 band\(s\)"),
    "normalization-text": Row(
        lambda t: (lambda p=_contract_file(t, {"normalization": {"method": "meanstd", "shift": ["a", "b"],
                                                                 "scale": [1, 1]}}): read_config(p)),
        CheckpointError, r"field 'normalization'.*'shift' as a list of finite numbers"),
    "extra-list": Row(lambda t: (lambda p=_contract_file(t, {"extra": []}): read_config(p)),
                      CheckpointError, r"field 'extra'"),
    "classes-missing": Row(lambda t: (lambda p=_contract_file(t, drop="classes"): read_config(p)),
                           CheckpointError, r"lacks classes"),
    "predict-with-malformed-contract": Row(
        lambda t: (lambda img=_scene(t), p=_contract_file(t, {"tile": "big"}): predict_raster(
            img, t / "out.tif", model=p, device="cpu")),
        CheckpointError, r"field 'tile'"),
    # -- a contract the weights contradict ----------------------------------------------------------------------
    "more-classes-than-the-weights-output": Row(
        lambda t: (lambda p=_contract_file(t, {"classes": list("abcde"), "colors": []}): load_checkpoint(p)),
        CheckpointError, r"field 'classes' lists 5 classes \(a, b, c, d, e\) but the weights output 3"),
    "fewer-classes-than-the-weights-output": Row(
        lambda t: (lambda p=_contract_file(t, {"classes": ["a", "b"], "colors": []}): load_checkpoint(p)),
        CheckpointError, r"field 'classes' lists 2 classes .* but the weights output 3"),
    "more-bands-than-the-weights-take": Row(
        lambda t: (lambda p=_contract_file(t, {"bands": ["1", "2", "3"], "normalization": {}}): load_checkpoint(p)),
        CheckpointError, r"field 'bands' lists 3 bands but the weights take 2"),
}
# fmt: on


@pytest.mark.parametrize("name", list(SILENTLY_WRONG))
def test_silently_wrong_inputs_are_refused(tmp_path, name):
    row = SILENTLY_WRONG[name]
    call = row.build(tmp_path)
    before = _snapshot(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GridMismatchWarning)
        with pytest.raises(row.error, match=row.match):
            call()
    assert _snapshot(tmp_path) == before  # nothing left behind, nothing replaced


@pytest.mark.parametrize("name", list(MODEL_CONTRACT))
def test_model_contract_is_validated_when_loading(tmp_path, name):
    row = MODEL_CONTRACT[name]
    call = row.build(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(row.error, match=row.match):
        call()
    assert _snapshot(tmp_path) == before


def _onnx_with_contract(tmp_path: Path, change: dict[str, Any]) -> Path:
    """An exported tiny model (2 bands, 3 classes) whose embedded contract is edited afterwards."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from geoseg.models.config import CONFIG_KEY
    from geoseg.models.onnx import export_onnx

    path = export_onnx(_ck(tmp_path, name="src.safetensors"), tmp_path / "m.onnx", exporter="torchscript")
    proto = onnx.load(str(path))
    for entry in proto.metadata_props:
        if entry.key == CONFIG_KEY:
            entry.value = json.dumps(json.loads(entry.value) | change)
    onnx.save(proto, str(path))
    (tmp_path / "src.safetensors").unlink()
    return path


def _onnx_row(change: dict[str, Any]) -> Any:
    def build(tmp_path: Path) -> Any:
        from geoseg.models.onnx import load_onnx

        path = _onnx_with_contract(tmp_path, change)
        return lambda: load_onnx(path)

    return build


def _pair_row(tmp_path: Path) -> Any:
    from model_utils import random_tiny

    from geoseg.models import ModelConfig

    img = _scene(tmp_path)
    cfg = ModelConfig(arch="tiny", bands=["1", "2"], classes=list("abcde"), arch_kwargs={"width": 8})
    return lambda: predict_raster(img, tmp_path / "out.tif", model=(random_tiny(2, 3), cfg), device="cpu")


def _arch_ignoring_classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A third-party architecture whose factory ignores ``num_classes`` (always 3 outputs), with a checkpoint whose
    contract lists 5 classes: its weights load, so only the output check can tell."""
    import torch
    from safetensors.torch import save_file

    from geoseg.models import ModelConfig, registry
    from geoseg.models.config import CONFIG_KEY

    def factory(in_channels: int, num_classes: int, **kw: Any) -> torch.nn.Module:
        return torch.nn.Conv2d(in_channels, 3, 1)

    monkeypatch.setitem(registry._REGISTRY, "fixed3", registry.ModelSpec(name="fixed3", factory=factory,
                                                                          output_stride=1))  # fmt: skip
    cfg = ModelConfig(arch="fixed3", bands=["1", "2"], classes=list("abcde"))
    path = tmp_path / "fixed3.safetensors"
    state = {k: v.contiguous() for k, v in factory(2, 5).state_dict().items()}
    save_file(state, str(path), metadata={CONFIG_KEY: cfg.to_json(), "format": "pt"})
    return path


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"classes": list("abcde"), "colors": []}, r"field 'classes' lists 5 classes .* but the model outputs 3"),
        ({"classes": ["a", "b"], "colors": []}, r"field 'classes' lists 2 classes .* but the model outputs 3"),
        ({"bands": ["1", "2", "3"], "normalization": {}}, r"field 'bands' lists 3 bands but the graph takes 2"),
        ({"tile": "big"}, r"field 'tile': expected a positive integer"),
        ({"format_version": "1"}, r"field 'format_version'"),
        ({"classes": [1, 2, 3]}, r"field 'classes'"),
    ],
    ids=["more-classes", "fewer-classes", "more-bands", "tile-big", "format-version-string", "classes-integers"],
)
def test_onnx_contract_is_validated_against_the_graph(tmp_path, change, match):
    call = _onnx_row(change)(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=match):
        call()
    assert _snapshot(tmp_path) == before


def test_contract_checked_against_a_module_pair_and_a_foreign_architecture(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match=r"the \(module, ModelConfig\) pair: .*'classes' lists 5 .*outputs 3"):
        _pair_row(tmp_path)()
    assert _no_output(tmp_path)
    path = _arch_ignoring_classes(tmp_path, monkeypatch)
    with pytest.raises(CheckpointError, match=r"field 'classes' lists 5 classes .* but the model outputs 3 channel"):
        load_checkpoint(path)
    from model_utils import random_tiny

    from geoseg.models import ModelConfig, save_checkpoint

    cfg = ModelConfig(arch="tiny", bands=["1", "2"], classes=list("abcde"), arch_kwargs={"width": 8})
    with pytest.raises(CheckpointError, match=r"'classes' lists 5 classes .* outputs 3"):
        save_checkpoint(tmp_path / "never.safetensors", random_tiny(2, 3), cfg)
    assert not (tmp_path / "never.safetensors").exists()


# --- georeference by GCPs or RPCs: carried to every output, used where pixels are placed on a map ---------------


def _rpcs(rows: int, cols: int) -> Any:
    """RPCs of a north-up grid near 15°E 41.5°N: line from latitude, sample from longitude (linear terms only)."""
    from rasterio.rpc import RPC

    zeros = [0.0] * 20
    line_num, samp_num, den = list(zeros), list(zeros), list(zeros)
    line_num[2], samp_num[1], den[0] = -1.0, 1.0, 1.0  # coefficient order 1, L, P, H, ...
    return RPC(height_off=100.0, height_scale=500.0, lat_off=41.5, lat_scale=0.01, line_den_coeff=den,
               line_num_coeff=line_num, line_off=rows / 2, line_scale=rows / 2, long_off=15.0, long_scale=0.01,
               samp_den_coeff=den, samp_num_coeff=samp_num, samp_off=cols / 2, samp_scale=cols / 2)  # fmt: skip


def test_gcps_and_rpcs_are_carried_to_class_map_probabilities_and_mosaic(tmp_path):
    from geoseg.distributed.mosaic import build_vrt
    from geoseg.inference.predict import plan_grid

    data, _ = class_scene(64, 64, bands=2)
    ck = _ck(tmp_path)
    gcp_src = write_raster(tmp_path / "gcp.tif", data, transform=None, gcps=_gcps(64, 64))
    rpc_src = write_raster(tmp_path / "rpc.tif", data, crs=None, transform=None, rpcs=_rpcs(64, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotGeoreferencedWarning)  # GCPs and RPCs are a georeference: no warning
        predict_raster(gcp_src, tmp_path / "g.tif", model=ck, device="cpu", probabilities=tmp_path / "gp.tif")
        predict_raster(rpc_src, tmp_path / "r.tif", model=ck, device="cpu")
    with rasterio.open(gcp_src) as src:
        want = [(g.row, g.col, g.x, g.y) for g in src.gcps[0]], src.gcps[1]
    for name in ("g.tif", "gp.tif"):
        with rasterio.open(tmp_path / name) as ds:
            assert ([(g.row, g.col, g.x, g.y) for g in ds.gcps[0]], ds.gcps[1]) == want
    with rasterio.open(tmp_path / "r.tif") as ds:
        kept = {k: v for k, v in ds.rpcs.to_dict().items() if not k.startswith("err_")}
        assert kept == {k: v for k, v in _rpcs(64, 64).to_dict().items() if not k.startswith("err_")}
    # regions of a batch: each file holds its own shifted GCPs, the VRT the scene's, and the mosaic equals the whole
    grid = plan_grid(gcp_src, model=ck)
    nr, nc = grid.full_grid_shape
    assert nr > 1
    regions = []
    for k, rows in enumerate((range(0, 1), range(1, nr))):
        out = tmp_path / f"region{k}.tif"
        predict_raster(gcp_src, out, model=ck, device="cpu", tiles=(rows, range(0, nc)))
        regions.append((out, grid.restrict(rows, range(0, nc)).origin))
    r0 = regions[1][1][0]
    with rasterio.open(regions[1][0]) as ds:
        assert [(g.row + r0, g.col) for g in ds.gcps[0]] == [(r, c) for r, c, _, _ in want[0]]
    vrt = build_vrt(tmp_path / "mosaic.vrt", regions, shape=grid.shape, transform=grid.transform)
    with rasterio.open(vrt) as ds, rasterio.open(tmp_path / "g.tif") as whole:
        assert ([(g.row, g.col, g.x, g.y) for g in ds.gcps[0]], ds.gcps[1]) == want
        np.testing.assert_array_equal(ds.read(1), whole.read(1))


def test_no_georeference_warning_names_what_is_missing(tmp_path):
    data, _ = class_scene(32, 32, bands=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = write_raster(tmp_path / "plain.tif", data, crs=None, transform=None)
    with pytest.warns(NotGeoreferencedWarning, match=r"no georeference \(no CRS, geotransform, GCPs or RPCs\)"):
        predict_raster(src, tmp_path / "o.tif", model=_ck(tmp_path), device="cpu")


def test_gcp_class_maps_are_vectorized_and_evaluated_through_their_gcps(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    from geoseg.evaluation import evaluate
    from geoseg.vectorization import vectorize

    a = np.zeros((40, 50), np.uint8)
    a[10:20, 5:25] = 1
    x0, y0 = TRANSFORM.c, TRANSFORM.f
    gcp = write_raster(tmp_path / "gcp.tif", a, transform=None, gcps=_gcps(40, 50))
    polys = vectorize(gcp)
    assert polys.crs.to_epsg() == 32633
    one = polys[polys.class_id == 1].geometry.iloc[0]
    assert (
        one.equals_exact(box(x0 + 50, y0 - 200, x0 + 250, y0 - 100).normalize(), 1e-6)
        or abs(one.symmetric_difference(box(x0 + 50, y0 - 200, x0 + 250, y0 - 100)).area) < 1e-6
    )
    assert polys[polys.class_id == 1]["area"].iloc[0] == pytest.approx(200 * 100)
    truth = tmp_path / "truth.gpkg"
    gpd.GeoDataFrame({"class_id": [1]}, geometry=[box(x0 + 50, y0 - 200, x0 + 250, y0 - 100)],
                     crs="EPSG:32633").to_file(truth)  # fmt: skip
    rep = evaluate(gcp, truth, classes=["bg", "one"], background=0)
    assert rep.miou == 1.0 and rep.pixels == 40 * 50
    with pytest.raises(NoOverlapError, match="GCPs"):
        evaluate(gcp, write_raster(tmp_path / "affine_truth.tif", a))


# --- rotated, flipped and sheared grids: windows from all four corners ------------------------------------------

GRIDS = {
    "rotated-30": Affine.translation(500000, 4600000) @ Affine.rotation(30) @ Affine.scale(10, -10),
    "rotated-45": Affine.translation(500000, 4600000) @ Affine.rotation(45) @ Affine.scale(10, -10),
    "rotated-90": Affine.translation(500000, 4600000) @ Affine.rotation(90) @ Affine.scale(10, -10),
    "south-up": Affine(10, 0, 500000, 0, 10, 4600000),
    "east-west-flip": Affine(-10, 0, 500000, 0, -10, 4600000),
    "sheared": Affine(10, 4, 500000, 3, -10, 4600000),
}


@pytest.mark.parametrize("grid", list(GRIDS))
def test_polygons_on_rotated_flipped_sheared_grids_cover_what_gdal_rasterizes(tmp_path, grid):
    import geopandas as gpd
    from rasterio.features import rasterize
    from rasterio.windows import Window
    from shapely.geometry import Polygon

    from geoseg.evaluation import evaluate
    from geoseg.io import RasterSource
    from geoseg.train.labels import LabelVector

    t = GRIDS[grid]
    h = w = 6
    # two polygons splitting the grid's footprint along its own diagonal: every pixel is covered by one of them
    corners = [t @ (0, 0), t @ (w, 0), t @ (w, h), t @ (0, h)]
    polys = [Polygon([corners[0], corners[1], corners[2]]), Polygon([corners[0], corners[2], corners[3]])]
    gdf = gpd.GeoDataFrame({"class_id": [0, 1]}, geometry=polys, crs="EPSG:32633")
    truth = tmp_path / "truth.gpkg"
    gdf.to_file(truth)
    ref = rasterize(zip(polys, [1, 2]), out_shape=(h, w), transform=t, fill=0, dtype="int32")
    assert (ref > 0).sum() >= 30  # GDAL covers (nearly) every pixel
    pred = write_raster(tmp_path / "pred.tif", np.zeros((h, w), np.uint8), transform=t)
    rep = evaluate(pred, truth, classes=["a", "b"])
    assert rep.pixels == int((ref > 0).sum())  # was 18 of 36 with a two-corner window lookup
    img = write_raster(tmp_path / "img.tif", np.zeros((2, h, w), np.float32), transform=t)
    with RasterSource(img) as src:
        lv = LabelVector(truth, src)
        whole = lv.read(Window(0, 0, w, h))
        np.testing.assert_array_equal(whole, np.where(ref > 0, ref - 1, -1))
        for r0, c0 in ((0, 0), (2, 3), (4, 1)):  # every window agrees with the whole
            win = Window(c0, r0, min(3, w - c0), min(3, h - r0))
            np.testing.assert_array_equal(lv.read(win), whole[r0 : r0 + int(win.height), c0 : c0 + int(win.width)])


# --- label rasters and polygon layers that are fine once declared ---------------------------------------------


def test_declared_label_values_train_and_real_ids_above_254_are_classes(tmp_path):
    from geoseg.io import RasterSource
    from geoseg.train.labels import IGNORE_INDEX, LabelRaster

    img = _scene(tmp_path)
    minus_one = _labels_values([-1, 0, 1])(tmp_path)
    res = _train(img, minus_one, tmp_path / "m.safetensors", label_nodata=-1)
    assert len(read_config(res.checkpoint).classes) == 2
    values = np.arange(300, dtype=np.int16).repeat(14)[: 64 * 64].reshape(64, 64)
    many = _labels(tmp_path, values, name="many.tif")
    names = [f"c{i}" for i in range(300)]
    with RasterSource(img) as src:
        lab = LabelRaster(many, src, names)
        read = lab.read(rasterio.windows.Window(0, 0, 64, 64))
    np.testing.assert_array_equal(read, values)  # 255 is class c255, never the ignore label
    assert IGNORE_INDEX < 0


def test_label_raster_on_a_shifted_grid_is_warped_onto_the_image(tmp_path):
    from geoseg.io import RasterSource
    from geoseg.train.labels import IGNORE_INDEX, LabelRaster

    img = _scene(tmp_path)
    _, labels = class_scene(64, 64, bands=1)
    shifted = _labels(tmp_path, labels, transform=Affine.translation(80, 0) @ TRANSFORM)  # 8 px east
    with RasterSource(img) as src, pytest.warns(GridMismatchWarning, match="resampling it with nearest"):
        lab = LabelRaster(shifted, src, None)
    got = lab.read(rasterio.windows.Window(0, 0, 64, 64))
    lab.close()
    assert (got[:, :8] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(got[:, 8:], labels[:, :56])


def test_chosen_layers_are_used(tmp_path):
    from click.testing import CliRunner

    from geoseg.cli.main import cli
    from geoseg.evaluation import evaluate

    pred = _classmap(tmp_path)
    two = _two_layers(tmp_path)
    rep = evaluate(pred, two, truth_layer="fields", aoi=two, aoi_layer="roads")
    assert rep.pixels == 32 * 64
    res = CliRunner().invoke(cli, ["evaluate", str(pred), str(two), "--progress", "none"])
    assert res.exit_code == 2 and "choose one with truth_layer= (CLI: --layer)" in res.output
    res = CliRunner().invoke(cli, ["evaluate", str(pred), str(two), "--layer", "fields", "--progress", "none"])
    assert res.exit_code == 0, res.output


# --- nodata values a band cannot hold, VRT sources, full disks, unsafe pickles ------------------------------------

# fmt: off
NODATA = {
    "1e40-on-uint16": (np.uint16, 1e40, r"nodata 1e\+40 cannot occur .*band\(s\) 1,2 are uint16 \(integers 0\.\.65535"),
    "minus-1-on-uint8": (np.uint8, -1, r"nodata -1 cannot occur .*uint8 \(integers 0\.\.255\)"),
    "fraction-on-uint8": (np.uint8, 0.5, r"nodata 0\.5 cannot occur"),
    "nan-on-int16": (np.int16, float("nan"), r"nodata nan cannot occur .*int16"),
    "1e39-on-float32": (np.float32, 1e39, r"nodata 1e\+39 cannot occur .*float32"),
}
# fmt: on


@pytest.mark.parametrize("name", list(NODATA))
def test_nodata_override_the_bands_cannot_hold(tmp_path, name):
    dtype, value, match = NODATA[name]
    src = write_raster(tmp_path / "in.tif", (class_scene(32, 32, bands=2)[0] * 100).astype(dtype))
    ck = _ck(tmp_path)
    before = _snapshot(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy overflow warning instead of the message
        with pytest.raises(InvalidParameterError, match=match):
            predict_raster(src, tmp_path / "out.tif", model=ck, device="cpu", nodata=value)
    assert _snapshot(tmp_path) == before


def _declare_nodata(tif: Path, value: float) -> Path:
    """A VRT over ``tif`` whose bands declare nodata ``value``, as written, whatever the dtype."""
    import xml.etree.ElementTree as ET

    import rasterio.shutil

    vrt = tif.with_suffix(".vrt")
    rasterio.shutil.copy(str(tif), str(vrt), driver="VRT")
    root = ET.parse(vrt).getroot()
    for band in root.iter("VRTRasterBand"):
        ET.SubElement(band, "NoDataValue").text = f"{value:g}"
    ET.ElementTree(root).write(vrt)
    return vrt


def test_declared_nodata_the_dtype_cannot_hold_is_reported(tmp_path):
    from geoseg.evaluation import evaluate
    from geoseg.vectorization import vectorize

    data = (class_scene(32, 32, bands=2)[0] * 100).astype(np.uint16)
    # GDAL keeps a declared nodata the dtype cannot hold (other software writes such files); rasterio hides it
    src = _declare_nodata(write_raster(tmp_path / "in.tif", data), -9999)
    classes = _declare_nodata(
        write_raster(tmp_path / "c.tif", class_scene(32, 32, bands=1)[1].astype(np.uint16)), -9999
    )
    with rasterio.open(src) as ds:
        assert ds.nodata is None
    match = r"declared nodata -9999 of band\(s\) 1.* cannot occur in uint16 data, so no pixel is masked"
    with pytest.warns(NodataWarning, match=match):
        predict_raster(src, tmp_path / "out.tif", model=_ck(tmp_path), device="cpu")
    with pytest.warns(NodataWarning, match=match):
        vectorize(classes)
    with pytest.warns(NodataWarning, match=match):
        evaluate(classes, classes)


def test_vrt_with_a_deleted_source_names_it(tmp_path):
    from geoseg.evaluation import evaluate
    from geoseg.vectorization import vectorize

    vrt = _vrt_without_source(tmp_path)
    missing = str(tmp_path / "tile_a.tif")
    img = _scene(tmp_path)
    before = _snapshot(tmp_path)
    calls = {
        "predict": lambda: predict_raster(
            vrt, tmp_path / "o.tif", model=_ck(tmp_path, name="k.safetensors"), device="cpu"
        ),  # fmt: skip
        "vectorize": lambda: vectorize(vrt, tmp_path / "o.gpkg"),
        "evaluate": lambda: evaluate(vrt, vrt),
        "train": lambda: _train(img, vrt, tmp_path / "o.safetensors"),
    }
    for name, call in calls.items():
        with pytest.raises(InputNotFoundError, match=rf"mosaic\.vrt is a VRT whose source file\(s\) {missing} do not"):
            call()
        assert set(_snapshot(tmp_path)) - {"k.safetensors"} == set(before), name


@pytest.mark.parametrize("ext", [".gpkg", ".fgb", ".geojson", ".shp", ".parquet"])
def test_vectorize_on_a_full_disk_says_so(tmp_path, ext):
    from geoseg.vectorization import vectorize

    a = np.random.default_rng(0).integers(0, 4, (300, 300)).astype(np.uint8)
    src = write_raster(tmp_path / "c.tif", a)
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "size=64k")
    try:
        with pytest.raises(OutputError, match=r"disk full \(no space left\) while writing") as info:
            vectorize(src, mnt / f"polys{ext}", window=64)
        assert "sqlite3_exec" not in str(info.value) and "Cannot write feature" not in str(info.value)
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)])


def test_unsafe_pickles_are_refused_without_unsafe_advice(tmp_path):
    from geoseg.models.adapt import load_encoder_weights

    img, lab = _scene(tmp_path), _labels(tmp_path, class_scene(64, 64, bands=1)[1])
    ck_pt = _pt_with_pickled_object(tmp_path, "model.pt")
    enc = _pt_with_pickled_object(tmp_path, "encoder.pth")
    out = tmp_path / "resumed.safetensors"
    out.write_bytes(b"")
    state = _pt_with_pickled_object(tmp_path, "resumed.safetensors.train-state.pt")
    before = _snapshot(tmp_path)
    calls = [
        lambda: predict_raster(img, tmp_path / "o.tif", model=ck_pt, device="cpu"),
        lambda: load_encoder_weights(
            __import__("geoseg.models", fromlist=["create_model"]).create_model(
                "fcn8s", in_channels=2, num_classes=2, width=4
            ),
            enc,
        ),
        lambda: _train(img, lab, out, resume=True),
    ]
    for call in calls:
        with pytest.raises(
            CheckpointError, match=r"refused to load .*Payload.*re-save its weights as safetensors"
        ) as e:
            call()
        assert "weights_only=False" not in str(e.value) and "add_safe_globals" not in str(e.value)
    assert _snapshot(tmp_path) == before and state.exists()
