import pickle

import pytest
import torch
from model_utils import random_tiny

from geoseg.errors import CheckpointError, InputNotFoundError, InvalidParameterError, UnknownModelError
from geoseg.models import ModelConfig, create_model, load_checkpoint, read_config, save_checkpoint


def _cfg(**kw):
    base = {"arch": "tiny", "bands": ["B2", "B3"], "classes": ["water", "land"], "arch_kwargs": {"width": 8}}
    base.update(kw)
    return ModelConfig(**base)


def test_round_trip_keeps_weights_and_contract(tmp_path):
    net = random_tiny(2, 2)
    cfg = _cfg(normalization={"method": "meanstd", "shift": [1.0, 2.0], "scale": [3.0, 4.0]}, tile=128)
    path = save_checkpoint(tmp_path / "m.safetensors", net, cfg)
    loaded, cfg2 = load_checkpoint(path)
    assert cfg2.bands == ["B2", "B3"] and cfg2.classes == ["water", "land"] and cfg2.tile == 128
    assert cfg2.output_stride == 2 and cfg2.colors == cfg.colors
    assert cfg2.normalization["shift"] == [1.0, 2.0]
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    assert read_config(path).arch == "tiny"
    assert not any(p.name.endswith(".partial.safetensors") for p in tmp_path.iterdir())


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as fh:
        pickle.dump({"state_dict": Exploit(), "geoseg_config": "{}"}, fh)
    with pytest.raises(CheckpointError, match="refused to load .* not a safe checkpoint"):
        load_checkpoint(bad)
    assert not marker.exists()

    bad_zip = tmp_path / "evil2.pt"
    torch.save({"state_dict": {}, "geoseg_config": "{}", "x": Exploit()}, bad_zip)
    marker.unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(bad_zip)
    assert not marker.exists()


def test_torch_checkpoint_with_plain_data_loads(tmp_path):
    net = random_tiny(2, 2)
    p = tmp_path / "m.pt"
    torch.save({"state_dict": net.state_dict(), "geoseg_config": _cfg().to_json()}, p)
    loaded, cfg = load_checkpoint(p)
    assert cfg.arch == "tiny"


def test_checkpoint_from_another_architecture(tmp_path):
    net = random_tiny(2, 2)
    path = save_checkpoint(tmp_path / "m.safetensors", net, _cfg(arch="unet", arch_kwargs={"width": 4}))
    with pytest.raises(CheckpointError, match="do not match architecture 'unet'"):
        load_checkpoint(path)


def test_broken_checkpoints(tmp_path):
    with pytest.raises(InputNotFoundError):
        load_checkpoint(tmp_path / "nope.safetensors")
    trunc = tmp_path / "t.safetensors"
    save_checkpoint(trunc, random_tiny(2, 2), _cfg())
    trunc.write_bytes(trunc.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(trunc)
    from safetensors.torch import save_file

    foreign = tmp_path / "f.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="no geoseg model config"):
        load_checkpoint(foreign)
    empty = tmp_path / "e.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(empty)


def test_config_validation():
    with pytest.raises(InvalidParameterError, match="at least 2 classes"):
        _cfg(classes=["only"])
    with pytest.raises(InvalidParameterError, match="one RGB color per class"):
        _cfg(colors=[[1, 2, 3]])
    with pytest.raises(CheckpointError, match="newer"):
        ModelConfig.from_dict({"arch": "tiny", "bands": ["1"], "classes": ["a", "b"], "format_version": 99})


def test_registry_errors():
    with pytest.raises(UnknownModelError, match="Did you mean unet"):
        create_model("unte", in_channels=3, num_classes=2)
    with pytest.raises(InvalidParameterError, match="num_classes must be >= 2"):
        create_model("tiny", in_channels=3, num_classes=1)
    with pytest.raises(InvalidParameterError, match="cannot build model 'tiny' with options"):
        create_model("tiny", in_channels=3, num_classes=2, bogus=1)
