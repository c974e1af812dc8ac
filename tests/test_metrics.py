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


def test_one_nodata_rule_unknown_ids_growth_and_area() -> None:
    """NaN/inf are nodata like a masked pixel; ids outside the classes are counted apart; a matrix without a class
    count grows to the largest id; truth_area weights are summed per truth class."""
    pred = np.array([[0.0, 1.0, np.nan], [2.0, 1.0, 0.0]])
    truth = np.array([[0.0, np.inf, 1.0], [2.0, 5.0, -1.0]])
    cm = ConfusionMatrix(3, track_unknown=True)
    cm.update(pred, truth, np.array([[True, True, True], [True, True, False]]), truth_area=np.array([[1.0], [2.0]]))
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    assert cm.unknown_truth == {5: 1} and cm.unknown_pred == {}
    assert cm.truth_area.tolist() == [1.0, 0.0, 2.0]
    grown = ConfusionMatrix(None)
    grown.update(np.array([0, 4]), np.array([1, 4]))
    assert grown.num_classes == 5 and grown.matrix[4, 4] == 1 and grown.matrix[1, 0] == 1
    with pytest.raises(InvalidParameterError, match="cannot merge a 5-class matrix into a 3-class one"):
        cm.merge(grown)


def test_evaluate_and_batch_reports_use_the_same_rule(tmp_path) -> None:
    """evaluate (and the batch report built on it) on float rasters with NaN and a nodata value equals the matrix
    accumulated directly."""
    from rasters import write_raster

    from geoseg.distributed.report import scene_report
    from geoseg.evaluation import evaluate

    rng = np.random.default_rng(3)
    pred = rng.integers(0, 3, (20, 30)).astype(np.float32)
    truth = rng.integers(0, 3, (20, 30)).astype(np.float32)
    pred[:3] = np.nan
    truth[:, :4] = 9  # the truth's nodata value
    truth[10, 10] = np.nan
    p = write_raster(tmp_path / "p.tif", pred)
    t = write_raster(tmp_path / "t.tif", truth, nodata=9)
    cm = ConfusionMatrix(3)
    cm.update(pred, truth, truth != 9)
    np.testing.assert_array_equal(evaluate(p, t, classes=3).matrix, cm.matrix)
    np.testing.assert_array_equal(scene_report(p, t, ["a", "b", "c"]).matrix, cm.matrix)
