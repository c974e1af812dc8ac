"""smp-* architectures are registered without importing smp or timm, and say how to install them when missing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from rasters import class_scene, write_raster

from geoseg.cli.main import cli
from geoseg.errors import MissingDependencyError
from geoseg.models import create_model, get_model_spec, list_models

SMP = [s for s in list_models() if s.family == "smp"]


def test_smp_architectures_registered_with_their_extra() -> None:
    names = {s.name for s in SMP}
    assert {"smp-unet", "smp-unetplusplus", "smp-fpn", "smp-segformer", "smp-upernet", "smp-deeplabv3plus"} <= names
    assert all(s.extra == "smp" and "segmentation_models_pytorch" in s.requires for s in SMP)
    native = {"fcn8s", "segnet", "deeplabv2", "fcdensenet", "icnet", "unet", "pspnet"}
    assert native <= {s.name for s in list_models()}  # the native seed architectures stay


def test_registration_imports_neither_smp_nor_timm() -> None:
    code = (
        "import sys, geoseg.models as m; m.list_models(); m.get_model_spec('smp-unet').available; "
        "print(sorted(k for k in ('segmentation_models_pytorch', 'timm', 'torchvision') if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_models_cli_marks_the_extra_only_when_missing() -> None:
    res = CliRunner().invoke(cli, ["models"])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("smp-segformer "))
    available = get_model_spec("smp-segformer").available
    assert ("needs pip install 'geoseg[smp]'" in line) is (not available)
    data = json.loads(CliRunner().invoke(cli, ["models", "--json"]).output)
    rows = {d["name"]: d for d in data}
    assert rows["smp-upernet"]["extra"] == "smp" and rows["smp-upernet"]["available"] is available
    assert rows["unet"]["available"] is True and rows["unet"]["extra"] is None


def test_missing_extra_is_one_clear_error(tmp_path) -> None:
    if get_model_spec("smp-unet").available:
        pytest.skip("segmentation-models-pytorch is installed here")
    with pytest.raises(MissingDependencyError, match=r"model 'smp-unet' needs .*pip install 'geoseg\[smp\]'"):
        create_model("smp-unet", in_channels=4, num_classes=3)
    data, labels = class_scene(32, 32)
    img, lab = write_raster(tmp_path / "i.tif", data), write_raster(tmp_path / "l.tif", labels)
    res = CliRunner().invoke(cli, ["train", str(img), str(lab), str(tmp_path / "m.safetensors"), "--arch", "smp-fpn"])
    assert res.exit_code == 2 and "pip install 'geoseg[smp]'" in res.output
    assert not (tmp_path / "m.safetensors").exists()
