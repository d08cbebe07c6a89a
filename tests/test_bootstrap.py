"""Bootstrap over problems: the weighted metrics equal metrics.py's on the resampled sets, bit for bit, and the
intervals are the percentile intervals of those resamples, seeded."""

import math
import random
from functools import partial

import numpy as np
import pytest

from prmflow.evaluation.bootstrap import (
    Resampled, bootstrap_interval, draw_problems, intervals, paired_difference, percentile_interval,
    weighted_auroc, weighted_binary_f1, weighted_first_error_f1, weighted_mean,
)
from prmflow.evaluation.metrics import auroc, binary_f1, first_error_f1


def units(count: int, seed: int) -> dict[str, list]:
    """Steps of `count` made-up solutions: a problem each (3 solutions a problem), tied scores, both labels."""
    rng = random.Random(seed)
    return {"problems": [f"p{i // 3}" for i in range(count)],
            "scores": [rng.choice([0.1, 0.25, 0.5, 0.5, 0.75, 0.9]) for _ in range(count)],
            "positives": [rng.random() < 0.6 for _ in range(count)],
            "predicted": [rng.choice([-1, 0, 1, 2]) for _ in range(count)],
            "actual": [rng.choice([-1, -1, 0, 1, 2]) for _ in range(count)]}


def metric_pairs(u: dict) -> list[tuple]:
    """(weighted form, metrics.py form taking the unit indices of a resampled set)."""
    return [
        (partial(weighted_auroc, u["scores"], u["positives"]),
         lambda idx: auroc([u["scores"][i] for i in idx], [u["positives"][i] for i in idx])),
        (partial(weighted_binary_f1, [s < 0.5 for s in u["scores"]], [not p for p in u["positives"]]),
         lambda idx: binary_f1([u["scores"][i] < 0.5 for i in idx], [not u["positives"][i] for i in idx])["f1"]),
        (partial(weighted_first_error_f1, u["predicted"], u["actual"]),
         lambda idx: first_error_f1([u["predicted"][i] for i in idx], [u["actual"][i] for i in idx])["first_error_f1"]),
        (partial(weighted_mean, [float(p) for p in u["positives"]]),
         lambda idx: sum(u["positives"][i] for i in idx) / len(idx)),
    ]


def resampled_indices(problems: list[str], multiplicity: dict[str, int]) -> list[int]:
    """The units of a resampled set: each problem's units as many times as the problem was drawn."""
    return [i for p in sorted(multiplicity) for _ in range(multiplicity[p]) for i, q in enumerate(problems) if q == p]


def test_weighted_metrics_equal_metrics_py_on_the_set_and_on_each_resample_exactly():
    u = units(60, seed=3)
    order = sorted(set(u["problems"]))
    draws = draw_problems(len(order), 50, seed=11)
    weights = draws[:, [order.index(p) for p in u["problems"]]].astype(float)
    for weighted, plain in metric_pairs(u):
        assert weighted(np.ones((1, 60)))[0] == plain(range(60))
        values = weighted(weights)
        for row, value in zip(draws, values):
            expected = plain(resampled_indices(u["problems"], dict(zip(order, row))))
            assert value == expected or (math.isnan(value) and math.isnan(expected))


def test_weighted_auroc_by_hand_and_without_both_classes():
    # pairs (positive, negative): 0.9 > 0.5, 0.9 > 0.1, 0.5 = 0.5 (half), 0.5 > 0.1; weights 2 on the tied negative
    scores, positives = [0.9, 0.5, 0.5, 0.1], [True, True, False, False]
    assert weighted_auroc(scores, positives, np.array([[1.0, 1, 1, 1], [1, 1, 2, 1]])).tolist() == [
        (1 + 1 + 0.5 + 1) / 4, (2 + 1 + 1 + 1) / 6]
    assert math.isnan(weighted_auroc(scores, positives, np.array([[1.0, 1, 0, 0]]))[0])


def test_interval_is_the_percentile_interval_of_the_resampled_metric():
    u = units(45, seed=5)
    resampled = Resampled(u["problems"], partial(weighted_auroc, u["scores"], u["positives"]))
    order = sorted(set(u["problems"]))
    values = [auroc([u["scores"][i] for i in idx], [u["positives"][i] for i in idx])
              for idx in (resampled_indices(u["problems"], dict(zip(order, row)))
                          for row in draw_problems(len(order), 200, seed=9))]
    low, high = bootstrap_interval(resampled, 200, seed=9)
    assert (low, high) == tuple(np.percentile([v for v in values if v == v], [2.5, 97.5]))
    assert low < resampled.point() < high


def test_a_constant_metric_has_a_zero_width_interval_and_one_problem_resamples_to_itself():
    u = units(30, seed=1)
    assert bootstrap_interval(Resampled(u["problems"], lambda w: np.full(len(w), 0.7)), 100, seed=0) == (0.7, 0.7)
    one = Resampled(["p"] * 30, partial(weighted_auroc, u["scores"], u["positives"]))
    assert bootstrap_interval(one, 100, seed=0) == (one.point(), one.point())


def test_two_problems_right_and_wrong_give_the_whole_range():
    # a draw holds both (mean 1/2, probability 1/2), or one twice (0 or 1, 1/4 each): the tails are 0 and 1
    picked = Resampled(["a", "b"], partial(weighted_mean, [0.0, 1.0]))
    assert bootstrap_interval(picked, 1000, seed=4) == (0.0, 1.0)
    assert picked.point() == 0.5


def test_the_seed_decides_the_interval():
    u = units(90, seed=2)
    resampled = Resampled(u["problems"], partial(weighted_first_error_f1, u["predicted"], u["actual"]))
    first = bootstrap_interval(resampled, 300, seed=1)
    assert bootstrap_interval(resampled, 300, seed=1) == first
    assert bootstrap_interval(resampled, 300, seed=2) != first


def test_percentile_interval_leaves_out_undefined_samples():
    assert percentile_interval(np.array([math.nan, 0.2, 0.4])) == pytest.approx((0.205, 0.395))
    assert all(math.isnan(x) for x in percentile_interval(np.array([math.nan])))


def test_intervals_names_each_metric_and_samples_zero_turns_them_off():
    picked = Resampled(["a", "b"], partial(weighted_mean, [0.0, 1.0]))
    assert intervals({"best_of_n_majority": picked}, 1000, seed=4) == {
        "best_of_n_majority_ci_low": 0.0, "best_of_n_majority_ci_high": 1.0}
    assert intervals({"best_of_n_majority": picked}, 0, seed=4) == {}


def test_paired_difference_cancels_what_both_share():
    u = units(60, seed=7)
    model = Resampled(u["problems"], partial(weighted_auroc, u["scores"], u["positives"]))
    assert paired_difference(model, model, 500, seed=3) == (0.0, 0.0, 0.0)  # an identical retrain
    shifted = Resampled(u["problems"], lambda w: model.metric(w) + 0.125)  # better by exactly 0.125 on every draw
    assert paired_difference(shifted, model, 500, seed=3) == pytest.approx((0.125, 0.125, 0.125), abs=1e-12)
    # unpaired, the same two would overlap: each alone varies far more than their difference
    low, high = bootstrap_interval(model, 500, seed=3)
    assert high - low > 0.125
    other = Resampled(u["problems"], partial(weighted_auroc, list(reversed(u["scores"])), u["positives"]))
    difference, low, high = paired_difference(model, other, 0, seed=3)
    assert low == high == difference == model.point() - other.point()


def test_blocks_of_samples_give_the_same_interval(monkeypatch):
    import prmflow.evaluation.bootstrap as bootstrap

    u = units(60, seed=8)
    resampled = Resampled(u["problems"], partial(weighted_auroc, u["scores"], u["positives"]))
    whole = bootstrap_interval(resampled, 300, seed=5)
    monkeypatch.setattr(bootstrap, "CHUNK_ELEMENTS", 7 * 60)  # 7 samples a block, the last one short
    assert bootstrap_interval(resampled, 300, seed=5) == whole
