"""ConfusionMatrix / SegmentationReport against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

from geoseg.errors import InvalidParameterError
from geoseg.metrics import ConfusionMatrix, SegmentationReport


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.integers(1, 300), st.integers(0, 2**31 - 1))
def test_streaming_matches_sklearn(n: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = rng.integers(0, n, size)
    p = rng.integers(0, n, size)
    valid = rng.random(size) < 0.9
    cm = ConfusionMatrix(n)
    for chunk in np.array_split(np.arange(size), 3):
        cm.update(p[chunk], t[chunk], valid[chunk])
    tv, pv = t[valid], p[valid]
    if tv.size == 0:
        assert cm.matrix.sum() == 0
        return
    np.testing.assert_array_equal(cm.matrix, confusion_matrix(tv, pv, labels=range(n)))
    rep = cm.report()
    _, rec, f1, sup = precision_recall_fscore_support(tv, pv, labels=range(n), zero_division=np.nan)
    np.testing.assert_allclose([c.recall for c in rep.classes], rec, equal_nan=True)
    assert [c.support for c in rep.classes] == sup.tolist()
    assert [c.predicted for c in rep.classes] == np.bincount(pv, minlength=n).tolist()
    assert rep.overall_accuracy == pytest.approx(accuracy_score(tv, pv))
    kappa = cohen_kappa_score(tv, pv, labels=range(n))
    if not np.isnan(kappa):
        assert rep.kappa == pytest.approx(kappa)


def test_support_area_in_dict() -> None:
    rep = SegmentationReport.from_matrix(np.array([[3, 1], [0, 2]]), ["a", "b"])
    rep.set_support_area([40.0, 20.0])
    d = rep.to_dict()
    assert d["classes"][0]["support_area"] == 40.0 and d["classes"][0]["support_m2"] is None
    assert d["classes"][1]["predicted"] == 3


def test_bad_names() -> None:
    with pytest.raises(InvalidParameterError, match="2 class names for a 3-class"):
        SegmentationReport.from_matrix(np.zeros((3, 3)), ["a", "b"])
