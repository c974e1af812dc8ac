"""The CLI's progress bar in a log: redrawn every few seconds, not on every update, when stderr is not a terminal."""

from __future__ import annotations

import pytest

from geoseg.progress import LOG_INTERVAL_S, TqdmProgress


def _draws(text: str) -> int:
    return text.count("\r")  # tqdm starts every redraw of its line with a carriage return


def test_bar_in_a_log_draws_at_start_and_end_only(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TqdmProgress(desc="predict")  # capsys makes stderr a pipe, as nohup or CI do
    for i in range(1, 2001):
        bar(i, 2000, f"tile {i}")
    bar.close()
    err = capsys.readouterr().err
    assert LOG_INTERVAL_S >= 10
    assert 2 <= _draws(err) <= 4, err[:500]
    assert "2000/2000" in err


def test_bar_redraws_when_the_total_changes(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TqdmProgress(desc="train", unit="epoch")
    bar(1, 10)
    bar(2, 14)  # a refit or a further round adds epochs
    bar.close()
    assert "2/14" in capsys.readouterr().err


def test_bar_with_no_interval_draws_every_update(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TqdmProgress(desc="predict", interval=0.0)
    for i in range(1, 51):
        bar(i, 50)
    bar.close()
    assert _draws(capsys.readouterr().err) >= 50
