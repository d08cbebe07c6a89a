import math

import pytest

from prmflow.metrics import (
    aggregate, auroc, best_of_n, binary_f1, first_error_f1, majority_vote, predicted_first_error, roc_points,
    step_metrics,
)


def test_aggregations():
    scores = [0.9, 0.5, 0.8]
    assert aggregate(scores, "min") == 0.5
    assert aggregate(scores, "prod") == pytest.approx(0.36)
    assert aggregate(scores, "last") == 0.8
    assert aggregate(scores, "mean") == pytest.approx(2.2 / 3)
    with pytest.raises(ValueError, match="aggregation: 'max'"):
        aggregate(scores, "max")


def test_auroc_with_ties_and_degenerate_cases():
    assert auroc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    # one tie between a positive and a negative counts half: (1 + 0.5 + 1 + 1) / 4
    assert auroc([0.9, 0.5, 0.5, 0.1], [True, True, False, False]) == 0.875
    assert math.isnan(auroc([0.3, 0.4], [True, True]))


def test_binary_f1_and_step_metrics():
    assert binary_f1([True, True, False, False], [True, False, True, False]) == {
        "precision": 0.5, "recall": 0.5, "f1": 0.5}
    m = step_metrics([0.9, 0.2, 0.6, 0.4], ["+", "-", "-", "+"], threshold=0.5)
    assert m["step_accuracy"] == 0.5 and m["negative_f1"] == 0.5 and m["step_auroc"] == 0.75


def test_first_error_f1_processbench():
    assert predicted_first_error([0.9, 0.4, 0.2], 0.5) == 1
    assert predicted_first_error([0.9, 0.6], 0.5) == -1
    result = first_error_f1(predicted=[1, 0, -1, -1, 2], actual=[1, 2, -1, -1, -1])
    assert result["first_error_accuracy_erroneous"] == 0.5
    assert result["first_error_accuracy_correct"] == pytest.approx(2 / 3)
    assert result["first_error_f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_best_of_n_with_ties_and_all_right_or_all_wrong_groups():
    groups = [
        [(0.9, "5", True), (0.2, "6", False), (0.3, "6", False)],   # PRM right, vote wrong
        [(0.5, "1", False), (0.5, "2", True)],                       # score tie: first sample wins
        [(0.1, "7", True), (0.2, "7", True)],                        # all correct
        [(0.4, "8", False), (0.9, "9", False)],                      # all wrong
    ]
    result = best_of_n(groups)
    assert result == {"prm": 0.5, "majority": 0.25, "pass_at_1": pytest.approx((1 / 3 + 0.5 + 1 + 0) / 4),
                      "oracle": 0.75}
    assert majority_vote(["a", "b", "b", "a"]) == "a"


def test_roc_points_end_at_one_one():
    points = roc_points([0.9, 0.5, 0.5, 0.1], [True, True, False, False])
    assert points[0] == {"fpr": 0.0, "tpr": 0.0} and points[-1] == {"fpr": 1.0, "tpr": 1.0}
    assert {"fpr": 0.5, "tpr": 1.0} in points
