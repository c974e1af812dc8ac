"""CPU threads for torch: train and predict take ``threads=`` / ``--threads``, use it while they run and restore
torch's setting after; the default leaves cores that other processes keep busy."""

import os

import pytest
import torch
from click.testing import CliRunner
from rasters import class_scene, write_raster

from geoseg.cli.main import cli
from geoseg.errors import InvalidParameterError
from geoseg.inference import predict_raster
from geoseg.threads import available_cores, default_threads, torch_threads
from geoseg.train import train_model

FAST = {"arch": "tiny", "arch_kwargs": {"width": 8}, "chip": 32, "batch_size": 4, "epochs": 1,
        "chips_per_epoch": 8, "device": "cpu", "val_fraction": 0.0}  # fmt: skip


@pytest.fixture
def scene(tmp_path):
    data, labels = class_scene(64, 64, bands=3, classes=2, seed=1)
    return write_raster(tmp_path / "img.tif", data), write_raster(tmp_path / "lab.tif", labels)


def test_default_threads_leave_busy_cores_alone(monkeypatch):
    cores = available_cores()
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert default_threads() == cores
    monkeypatch.setattr(os, "getloadavg", lambda: (10.0 * cores, 0.0, 0.0))
    assert default_threads() == 1


def test_torch_threads_restores_the_setting():
    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(InvalidParameterError, match="threads must be an integer in \\[1, "), torch_threads(0):
        pass


def test_train_and_predict_run_on_the_threads_asked_for(tmp_path, scene):
    img, lab = scene
    before = torch.get_num_threads()
    seen: list[int] = []

    def spy(done, total, message=""):
        seen.append(torch.get_num_threads())
        return False

    res = train_model(img, lab, tmp_path / "m.safetensors", threads=1, progress=spy, **FAST)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before
    seen.clear()
    predict_raster(img, tmp_path / "p.tif", model=res.checkpoint, device="cpu", threads=1, progress=spy)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before
    with pytest.raises(InvalidParameterError, match="threads must be an integer in \\[1, "):
        predict_raster(img, tmp_path / "q.tif", model=res.checkpoint, device="cpu", threads=0)


def test_cli_threads_option(tmp_path, scene):
    img, lab = scene
    out = tmp_path / "m.safetensors"
    args = ["--arch", "tiny", "--epochs", "1", "--chips-per-epoch", "8", "--chip", "32", "--val-fraction", "0",
            "--device", "cpu", "--progress", "none"]  # fmt: skip
    r = CliRunner().invoke(cli, ["train", str(img), str(lab), str(out), "--threads", "1", *args])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["predict", str(img), str(tmp_path / "p.tif"), "--model", str(out), "--threads", "1",
                                 "--device", "cpu", "--progress", "none"])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["predict", str(img), str(tmp_path / "q.tif"), "--model", str(out), "--threads", "0"])
    assert r.exit_code == 2 and "--threads" in r.output
