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
    """Train once uninterrupted and once cancelled after epoch ``stop`` then resumed: the resumed run's losses, last
    epoch's weights and saved model (the refit's, when one ran) must equal the uninterrupted run's (``total``: the
    epoch count progress must report before the refit, whose own count is its epochs). Returns the resumed run's
    result."""
    from safetensors.torch import load_file

    full = train_model(img, lab, folder / "full.safetensors", **opts)

    def stop_after(done: int, shown_total: int, message: str = "") -> bool:
        assert total is None or shown_total == total or "again on every label" in message
        return done == stop

    with pytest.raises(CancelledError):
        train_model(img, lab, folder / "cut.safetensors", progress=stop_after, **opts)
    resumed = train_model(img, lab, folder / "cut.safetensors", resume=True, **opts)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert full.state is not None and resumed.state is not None
    a = torch.load(full.state, weights_only=True)["model"]
    b = torch.load(resumed.state, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved_full, saved_resumed = load_file(full.checkpoint), load_file(resumed.checkpoint)
    assert saved_full.keys() == saved_resumed.keys()
    assert all(torch.equal(saved_full[k], saved_resumed[k]) for k in saved_full)
    timeless = [{k: v for k, v in (r.refit or {}).items() if k != "seconds"} for r in (full, resumed)]
    assert timeless[0] == timeless[1]
    return resumed
