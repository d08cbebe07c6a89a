"""Confidence intervals by bootstrap over problems, and the paired bootstrap the promotion gate uses.

    interval = bootstrap_interval(Resampled(step_problems, partial(weighted_auroc, scores, positives)),
                                  samples=1000, seed=1234)                       # (low, high)
    difference, low, high = paired_difference(challenger, champion, samples=1000, seed=1234)

The unit of resampling is the problem, not the solution or the step: the solutions of one problem (and
the steps of one solution) are not independent draws, so resampling them one by one would give
intervals that are too narrow (the cluster bootstrap; Efron & Tibshirani, "An Introduction to the
Bootstrap", 1993, ch. 6 and 13; Field & Welsh, "Bootstrapping clustered data", JRSS-B 2007). A sample
draws as many problem ids as there are, with replacement, and recomputes the metric on every solution
of the drawn problems; the interval is the percentile interval of the recomputed values.

A resampled set holds each problem as many times as it was drawn, so a metric on it equals the same
metric with every unit (step, solution, problem) weighted by its problem's multiplicity. The `weighted_*`
functions compute metrics that way for all samples at once (numpy, a (samples, units) weight matrix), and
with weights of 1 they give exactly the numbers of `metrics.py` (the same integer counts, the same
divisions: tested bit for bit), so the point estimate sits where the reported metric does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
CHUNK_ELEMENTS = 1 << 21  # weights per block of samples (16 MB): memory stays flat on a large held-out set


@dataclass(frozen=True)
class Resampled:
    """A metric as a function of resampling weights: `metric(weights)` with weights of shape (samples, units)
    returns (samples,) values; `problems[i]` is the problem of unit i (a step, a solution or a problem)."""

    problems: list[str]
    metric: Callable[[np.ndarray], np.ndarray]

    def point(self) -> float:
        """The metric on the set as it is (every weight 1)."""
        return float(self.metric(np.ones((1, len(self.problems))))[0])


def draw_problems(count: int, samples: int, seed: int) -> np.ndarray:
    """(samples, count) multiplicities: each row draws `count` of the `count` problems with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(count, np.full(count, 1 / count), size=samples) if count else np.zeros((samples, 0))


def unit_weights(draws: np.ndarray, problems: list[str], order: list[str]) -> np.ndarray:
    """The multiplicity of each unit's problem in each sample: (samples, units). `order` names draws' columns."""
    column = {problem: j for j, problem in enumerate(order)}
    return draws[:, [column[p] for p in problems]].astype(float)


def resampled_values(resampled: Resampled, draws: np.ndarray, order: list[str]) -> np.ndarray:
    """The metric on each row of `draws` (columns named by `order`), computed a block of rows at a time."""
    block = max(1, CHUNK_ELEMENTS // max(len(resampled.problems), 1))
    return np.concatenate([np.zeros(0)] + [resampled.metric(unit_weights(draws[i:i + block], resampled.problems, order))
                                           for i in range(0, len(draws), block)])


def percentile_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central `confidence` percentile interval of the finite values; (nan, nan) when there are none.

    Samples where a metric is undefined (an AUROC without a negative) are left out, not counted as 0.
    """
    finite = values[np.isfinite(values)]
    if not finite.size:
        return math.nan, math.nan
    half = 50 * confidence  # 47.5 exactly for 0.95 ((1 - 0.95) / 2 * 100 is not 2.5 in floating point)
    low, high = np.percentile(finite, [50 - half, 50 + half])
    return float(low), float(high)


def bootstrap_interval(resampled: Resampled, samples: int, seed: int,
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile interval of the metric over `samples` resamples of its problems (seeded)."""
    order = sorted(set(resampled.problems))
    return percentile_interval(resampled_values(resampled, draw_problems(len(order), samples, seed), order),
                               confidence)


def paired_difference(first: Resampled, second: Resampled, samples: int, seed: int,
                      confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(difference, low, high) of `first - second` on the same problems: both metrics are recomputed on the
    same draws, so what the two share (which problems are hard) cancels. `samples` 0: the interval is the
    point difference itself.
    """
    difference = first.point() - second.point()
    if samples == 0:
        return difference, difference, difference
    order = sorted(set(first.problems) | set(second.problems))
    draws = draw_problems(len(order), samples, seed)
    values = resampled_values(first, draws, order) - resampled_values(second, draws, order)
    return (difference, *percentile_interval(values, confidence))


def intervals(resampled: dict[str, Resampled], samples: int, seed: int) -> dict[str, float]:
    """`<name>_ci_low` and `<name>_ci_high` for each metric, all from the same seed; {} when samples is 0."""
    found: dict[str, float] = {}
    if not samples:
        return found
    for name, r in resampled.items():
        found[f"{name}_ci_low"], found[f"{name}_ci_high"] = bootstrap_interval(r, samples, seed)
    return found


def _ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float) -> np.ndarray:
    """numerator / denominator, `empty` where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), empty)


def weighted_mean(values: list[float], weights: np.ndarray) -> np.ndarray:
    """Per sample, the weighted mean of per-unit values (best-of-N: one 0/1 value per problem)."""
    return _ratio(weights @ np.asarray(values, float), weights.sum(axis=1), math.nan)


def weighted_auroc(scores: list[float], positives: list[bool], weights: np.ndarray) -> np.ndarray:
    """`metrics.auroc` of each weighted sample: the weighted share of (positive, negative) pairs that the
    score orders right, ties counting half (Mann-Whitney U / (n+ n-)); nan without both classes.

    Sorted once; per sample, the negative weight below each score and tied with it come from one cumulative
    sum, so a sample costs O(units).
    """
    values, positive = np.asarray(scores, float), np.asarray(positives, bool)
    order = np.argsort(values, kind="stable")
    values, positive, weights = values[order], positive[order], weights[:, order]
    negative_weight = weights * ~positive
    below_or_at = np.concatenate([np.zeros((len(weights), 1)), np.cumsum(negative_weight, axis=1)], axis=1)
    below = below_or_at[:, np.searchsorted(values, values, side="left")]
    tied = below_or_at[:, np.searchsorted(values, values, side="right")] - below
    positive_weight = weights * positive
    pairs = (positive_weight * (below + 0.5 * tied)).sum(axis=1)
    return _ratio(pairs, positive_weight.sum(axis=1) * negative_weight.sum(axis=1), math.nan)


def weighted_binary_f1(predicted: list[bool], actual: list[bool], weights: np.ndarray) -> np.ndarray:
    """`metrics.binary_f1(...)["f1"]` of each weighted sample (here: the `-` steps)."""
    predicted_arr, actual_arr = np.asarray(predicted, bool), np.asarray(actual, bool)
    tp, fp, fn = (weights @ (predicted_arr & actual_arr), weights @ (predicted_arr & ~actual_arr),
                  weights @ (actual_arr & ~predicted_arr))
    precision, recall = _ratio(tp, tp + fp, 0.0), _ratio(tp, tp + fn, 0.0)
    return _ratio(2 * precision * recall, precision + recall, 0.0)


def weighted_first_error_f1(predicted: list[int], actual: list[int], weights: np.ndarray) -> np.ndarray:
    """`metrics.first_error_f1(...)["first_error_f1"]` of each weighted sample (ProcessBench's F1: harmonic
    mean of the accuracy on erroneous and on correct solutions; 0 when either part is empty)."""
    predicted_arr, actual_arr = np.asarray(predicted), np.asarray(actual)
    erroneous = actual_arr >= 0
    err_acc = _ratio(weights @ (erroneous & (predicted_arr == actual_arr)), weights @ erroneous, math.nan)
    cor_acc = _ratio(weights @ (~erroneous & (predicted_arr < 0)), weights @ ~erroneous, math.nan)
    return _ratio(2 * err_acc * cor_acc, err_acc + cor_acc, 0.0)  # a nan accuracy: 0, as metrics.py
