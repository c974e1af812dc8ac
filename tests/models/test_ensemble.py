"""The ``members`` option: K independently initialised models whose probabilities are averaged."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from geoseg.errors import InvalidParameterError
from geoseg.models import ModelConfig, create_model, load_checkpoint, save_checkpoint
from geoseg.models.ensemble import ProbabilityEnsemble
from geoseg.models.layers import auxiliary_outputs
from geoseg.models.registry import check_model_options
from geoseg.train.loop import _pixel_loss

SMALL = {"spectral": 8, "width": 4, "depth": 2}


def members_of(net: torch.nn.Module) -> list[torch.nn.Module]:
    assert isinstance(net, ProbabilityEnsemble)
    return list(net.members)


def test_prediction_is_the_log_of_the_members_mean_probability() -> None:
    torch.manual_seed(0)
    net = create_model("ssnet", in_channels=5, num_classes=3, members=3, **SMALL).eval()
    first, second, third = members_of(net)
    assert not torch.equal(first.spectral[0][0].weight, second.spectral[0][0].weight)  # independent inits
    assert net.output_stride == first.output_stride and net.receptive_field == first.receptive_field
    x = torch.randn(2, 5, 16, 16)
    with torch.no_grad():
        expected = torch.stack([m(x).softmax(1) for m in (first, second, third)]).mean(0).log()
        torch.testing.assert_close(net(x), expected)
        px = x[:, :, 2, 3]
        stacked = net.forward_pixels(px)
    assert stacked.shape == (3 * 2, 3)
    torch.testing.assert_close(stacked[2:4], second.forward_pixels(px))
    assert auxiliary_outputs(net) == []


def test_one_member_is_the_plain_model_and_bad_counts_are_refused() -> None:
    torch.manual_seed(0)
    plain = create_model("ssnet", in_channels=4, num_classes=2, **SMALL)
    torch.manual_seed(0)
    one = create_model("ssnet", in_channels=4, num_classes=2, members=1, **SMALL)
    assert type(one) is type(plain)
    assert list(one.state_dict()) == list(plain.state_dict())  # checkpoints of former models keep their keys
    for bad in (0, -1, 17, 2.5, True, "3"):
        with pytest.raises(InvalidParameterError, match="members must be an integer 1..16"):
            create_model("ssnet", in_channels=4, num_classes=2, members=bad, **SMALL)
    with pytest.raises(InvalidParameterError, match="members"):
        check_model_options("unet", {"members": 0})
    check_model_options("unet", {"members": 2, "width": 4})  # a generic option: every architecture takes it
    assert isinstance(
        create_model("unet", in_channels=3, num_classes=2, members=2, width=4, depth=2), ProbabilityEnsemble
    )


def test_joint_training_is_independent_training_of_each_member() -> None:
    """One AdamW step on the ensemble's summed loss (chip logits, auxiliary outputs, stacked per-pixel logits, as
    the training loop computes it) moves each member exactly as a step on that member's own loss would."""
    torch.manual_seed(0)
    kw = dict(SMALL, dropout=0.0, context_dropout=0.0)
    net = create_model("ssnet", in_channels=4, num_classes=3, members=2, **kw).train()
    alone = [copy.deepcopy(m).train() for m in members_of(net)]
    x, y = torch.randn(2, 4, 16, 16), torch.randint(0, 3, (2, 16, 16))
    px, py = torch.randn(32, 4), torch.randint(0, 3, (32,))
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.05)

    def step(model: torch.nn.Module) -> None:
        opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01)
        loss = criterion(model(x), y) + sum(w * criterion(a, y) for w, a in auxiliary_outputs(model))
        loss = loss + _pixel_loss(criterion, model.forward_pixels(px), py)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(net)
    for member in alone:
        step(member)
    for joint, single in zip(members_of(net), alone):
        for (name, a), b in zip(joint.named_parameters(), single.parameters()):
            torch.testing.assert_close(a, b, msg=f"{name} differs from the member trained alone")


def test_checkpoint_round_trip_rebuilds_the_ensemble(tmp_path) -> None:
    torch.manual_seed(0)
    net = create_model("ssnet", in_channels=3, num_classes=2, members=2, **SMALL).eval()
    config = ModelConfig(arch="ssnet", bands=["r", "g", "b"], classes=["a", "b"], arch_kwargs={**SMALL, "members": 2})
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "e.safetensors", net, config))
    x = torch.randn(1, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def test_pixel_loss_of_one_model_is_the_plain_loss() -> None:
    logits, targets = torch.randn(10, 3), torch.randint(0, 3, (10,))
    criterion = torch.nn.CrossEntropyLoss()
    torch.testing.assert_close(_pixel_loss(criterion, logits, targets), F.cross_entropy(logits, targets))
