import math
import random

import pytest

from prmflow.evaluation.metrics import (
    auroc, best_of_n, best_of_n_curve, binary_f1, choose_threshold, expected_calibration_error, first_error_f1,
    majority_vote, powers_of_two_up_to, reliability_bins, roc_points, step_metrics,
)
from prmflow.scoring.aggregation import aggregate, predicted_first_error


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
        [(0.9, "5", True, True), (0.2, "6", False, True), (0.3, "6", False, True)],   # PRM right, vote wrong
        [(0.5, "1", False, True), (0.5, "2", True, True)],                             # score tie: first wins
        [(0.1, "7", True, True), (0.2, "7", True, True)],                              # all correct
        [(0.4, "8", False, True), (0.9, "9", False, True)],                            # all wrong
    ]
    result = best_of_n(groups)
    assert result == {"prm": 0.5, "majority": 0.25, "pass_at_1": pytest.approx((1 / 3 + 0.5 + 1 + 0) / 4),
                      "oracle": 0.75}
    assert majority_vote(["a", "b", "b", "a"]) == "a"


def test_best_of_n_never_picks_a_sample_without_a_final_answer_while_one_has_one():
    unfinished_wins_on_score = [(0.99, "", False, False), (0.6, "5", True, True)]
    assert best_of_n([unfinished_wins_on_score])["prm"] == 1.0
    assert best_of_n([[(0.99, "", False, False), (0.6, "", True, False)]])["prm"] == 0.0  # none has one: by score


def test_roc_points_end_at_one_one():
    points = roc_points([0.9, 0.5, 0.5, 0.1], [True, True, False, False])
    assert points[0] == {"fpr": 0.0, "tpr": 0.0} and points[-1] == {"fpr": 1.0, "tpr": 1.0}
    assert {"fpr": 0.5, "tpr": 1.0} in points


def test_expected_calibration_error_by_hand():
    # bins of width 0.5: {0.1, 0.3} says 0.2 but 1 of 2 is `+` (gap 0.3); {0.8, 0.9} says 0.85, both `+` (gap 0.15)
    assert expected_calibration_error([0.1, 0.3, 0.8, 0.9], [False, True, True, True], bins=2) == pytest.approx(
        (2 * 0.3 + 2 * 0.15) / 4)
    # perfectly calibrated within each bin
    assert expected_calibration_error([0.5, 0.5, 1.0], [True, False, True], bins=2) == 0.0
    # always confident and always wrong
    assert expected_calibration_error([1.0, 0.0], [False, True], bins=10) == 1.0
    assert math.isnan(expected_calibration_error([], [], bins=10))


def test_reliability_bins_edges_and_empty_bins():
    bins = reliability_bins([0.0, 0.5, 1.0, 0.25], [False, True, True, False], bins=4)
    # 0.5 opens bin 2, 1.0 closes the last bin, bin 3 holds only 1.0, empty bins are left out
    assert [(b["bin"], b["count"]) for b in bins] == [(0, 1), (1, 1), (2, 1), (3, 1)]
    assert bins[2] == {"bin": 2, "lower": 0.5, "upper": 0.75, "confidence": 0.5, "accuracy": 1.0, "count": 1}
    assert [b["bin"] for b in reliability_bins([0.05, 0.07, 0.95], [True, False, True], bins=10)] == [0, 9]
    with pytest.raises(ValueError, match="bins: must be >= 1"):
        reliability_bins([0.5], [True], bins=0)


def test_choose_threshold_maximizes_first_error_f1_ties_to_the_lowest():
    scores, first_errors = [[0.9, 0.2], [0.8, 0.7], [0.3, 0.9]], [1, -1, 0]
    # below 0.2 finds no error (F1 0); up to 0.3 misses solution 2 (2/3); (0.3, 0.7] gets all three right;
    # above 0.7 flags solution 1: the threshold is that range's midpoint, no score seen
    assert choose_threshold(scores, first_errors) == (pytest.approx(0.5), 1.0)
    # (0.5, 0.6] and (0.8, 0.85] both get all three right: the lower one wins
    assert choose_threshold([[0.9, 0.2], [0.8, 0.85], [0.5, 0.6]], [1, -1, 0]) == (pytest.approx(0.55), 1.0)
    # no erroneous solution: F1 is 0 at every threshold (one accuracy is undefined), the lowest wins
    assert choose_threshold([[0.4, 0.9], [0.6]], [-1, -1]) == (pytest.approx(-0.1), 0.0)


def test_the_chosen_threshold_is_never_a_score_seen_so_float_noise_cannot_flip_a_first_error():
    rng = random.Random(0)
    for _ in range(200):
        scores = [[rng.choice([0.1, 0.25, 0.5, 0.75, 0.9]) for _ in range(rng.randint(1, 5))] for _ in range(8)]
        first_errors = [rng.randint(-1, len(s) - 1) for s in scores]
        threshold, _ = choose_threshold(scores, first_errors)
        for steps in scores:  # a served step off its held-out score by float noise keeps its verdict
            for noise in (-1e-6, 1e-6):
                assert [s < threshold for s in steps] == [s + noise < threshold for s in steps]
    with pytest.raises(ValueError, match="no step scores"):
        choose_threshold([[]], [-1])


def test_best_of_n_curve_takes_the_first_n_samples():
    groups = [
        [(0.9, "5", True, True), (0.2, "6", False, True), (0.3, "6", False, True)],
        [(0.5, "1", False, True), (0.5, "2", True, True)],
        [(0.1, "7", True, True), (0.2, "7", True, True)],
        [(0.4, "8", False, True), (0.9, "9", False, True)],
    ]
    curve = best_of_n_curve(groups, [1, 2, 3])
    # N=1 is the first sample everywhere: every method scores the same
    assert curve[1] == {"prm": 0.5, "majority": 0.5, "pass_at_1": 0.5, "oracle": 0.5}
    # N=2: vote ties ("5" vs "6", "1" vs "2") go to the first answer; the score tie to the first sample
    assert curve[2] == {"prm": 0.5, "majority": 0.5, "pass_at_1": 0.5, "oracle": 0.75}
    # N=3: only the first group has a third sample; the others give all they have
    assert curve[3] == best_of_n(groups)


def test_powers_of_two_up_to():
    assert powers_of_two_up_to(1) == [1]
    assert powers_of_two_up_to(4) == [1, 2, 4]
    assert powers_of_two_up_to(6) == [1, 2, 4, 6]
    assert powers_of_two_up_to(0) == []
