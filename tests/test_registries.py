"""Registries drive every interface: the CLI's choices and the QGIS plugin's enums are geoseg's own name tuples, and
every name works in its registry."""

from __future__ import annotations

import runpy
from pathlib import Path

import click
import numpy as np
import pytest
import torch

from geoseg.cli.main import cli
from geoseg.distributed.cluster import CLUSTERS
from geoseg.errors import InvalidParameterError
from geoseg.inference.stitch import STITCH_METHODS, make_stitcher
from geoseg.inference.writer import PROB_DTYPES
from geoseg.io.normalize import NORMALIZATION_METHODS
from geoseg.models.device import DEVICES
from geoseg.models.names import ADAPT_STRATEGIES, ARCHITECTURES
from geoseg.options import BOUNDS
from geoseg.tiling import TileGrid
from geoseg.train.chips import SAMPLING_MODES
from geoseg.train.loop import SELF_TRAINING
from geoseg.train.names import BASELINES, LOSSES
from geoseg.vectorization import CONNECTIVITIES

PLUGIN_CHOICES = Path(__file__).resolve().parents[1] / "plugins" / "qgis" / "geoseg_qgis" / "choices.py"

CLI_CHOICES = {
    ("predict", "stitch"): tuple(STITCH_METHODS),
    ("predict", "prob_dtype"): PROB_DTYPES,
    ("train", "sampling"): SAMPLING_MODES,
    ("train", "loss"): LOSSES,
    ("train", "baseline"): BASELINES,
    ("train", "normalization"): NORMALIZATION_METHODS,
    ("train", "adapt"): ADAPT_STRATEGIES,
    ("batch", "cluster"): CLUSTERS,
    ("vectorize", "connectivity"): tuple(str(c) for c in CONNECTIVITIES),
}


def _choices() -> dict[tuple[str, str], tuple[str, ...]]:
    found = {}
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param.type, click.Choice) and param.name != "progress_kind":
                found[name, param.name] = tuple(param.type.choices)
    return found


def test_cli_choices_are_the_registries() -> None:
    assert _choices() == CLI_CHOICES


def test_qgis_enums_are_the_registries() -> None:
    plugin = runpy.run_path(str(PLUGIN_CHOICES))  # imports nothing, so no QGIS is needed
    assert tuple(plugin["DEVICES"]) == DEVICES
    assert tuple(plugin["STITCH_METHODS"]) == tuple(STITCH_METHODS)
    assert tuple(plugin["CONNECTIVITIES"]) == CONNECTIVITIES
    assert tuple(plugin["ARCHITECTURES"]) == ARCHITECTURES
    assert plugin["SELF_TRAINING"] == SELF_TRAINING and plugin["MAX_SELF_TRAINING"] == BOUNDS["self_training"].high


def test_architecture_names_are_the_registry_s() -> None:
    from geoseg.models import list_models

    builtin = tuple(s.name for s in list_models() if s.factory.__module__.startswith("geoseg."))
    assert builtin == ARCHITECTURES


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_name_makes_a_loss(name: str) -> None:
    from geoseg.train.losses import make_loss

    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    loss = make_loss(name, weights=torch.ones(3))(logits, target)
    assert loss.ndim == 0 and torch.isfinite(loss)
    with pytest.raises(InvalidParameterError, match=", ".join(LOSSES)):
        make_loss("nope")


@pytest.mark.parametrize("strategy", ADAPT_STRATEGIES)
def test_every_adapt_strategy_adapts(strategy: str) -> None:
    from geoseg.models.adapt import adapt_first_conv

    assert adapt_first_conv(torch.randn(4, 3, 3, 3), 5, strategy).shape == (4, 5, 3, 3)


@pytest.mark.parametrize("method", list(STITCH_METHODS))
def test_every_stitch_method_stitches(method: str) -> None:
    assert make_stitcher(method, TileGrid((20, 20), 16, 4), 3) is not None


@pytest.mark.parametrize("device", DEVICES)
def test_every_device_name_resolves(device: str) -> None:
    from geoseg.models.device import resolve_device

    if device == "cuda" and not torch.cuda.is_available():
        with pytest.raises(InvalidParameterError, match="CUDA is not available"):
            resolve_device(device)
    else:
        assert resolve_device(device).type in ("cpu", "cuda")


@pytest.mark.parametrize("method", NORMALIZATION_METHODS)
def test_every_normalization_normalizes(method: str, tmp_path: Path) -> None:
    from rasters import write_raster

    from geoseg.io import RasterSource, compute_normalization

    path = write_raster(tmp_path / "a.tif", np.random.default_rng(0).normal(size=(2, 16, 16)).astype(np.float32))
    with RasterSource(path) as src:
        norm = compute_normalization(src, method)
    assert np.isfinite(norm.apply(np.ones((2, 4, 4), np.float32))).all()
