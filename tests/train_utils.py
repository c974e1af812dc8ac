"""Shared checks of training runs for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from geoseg.errors import CancelledError
from geoseg.train import TrainResult, train_model


def assert_resume_matches_uninterrupted(
    img: Path, lab: Path, folder: Path, opts: dict[str, Any], *, stop: int, total: int | None = None
) -> TrainResult:
    """Train once uninterrupted and once cancelled after epoch ``stop`` then resumed: the resumed run's losses and
    final weights must equal the uninterrupted run's (``total``: the epoch count progress must report). Returns the
    resumed run's result."""
    full = train_model(img, lab, folder / "full.safetensors", **opts)

    def stop_after(done: int, shown_total: int, message: str = "") -> bool:
        assert total is None or shown_total == total
        return done == stop

    with pytest.raises(CancelledError):
        train_model(img, lab, folder / "cut.safetensors", progress=stop_after, **opts)
    resumed = train_model(img, lab, folder / "cut.safetensors", resume=True, **opts)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert full.state is not None and resumed.state is not None
    a = torch.load(full.state, weights_only=True)["model"]
    b = torch.load(resumed.state, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    return resumed
