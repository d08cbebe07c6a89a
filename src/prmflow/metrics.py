"""Metric functions on plain lists: exact, dependency-free, unit-tested on hand-computed cases."""

from __future__ import annotations

import math
from collections import Counter

AGGREGATIONS = ("min", "prod", "last", "mean")


def aggregate(step_scores: list[float], how: str) -> float:
    """One solution score from its step scores."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation: {how!r} is not one of {list(AGGREGATIONS)}")
    if not step_scores:
        raise ValueError("aggregation: no step scores to aggregate")
    if how == "min":
        return min(step_scores)
    if how == "prod":
        return math.prod(step_scores)
    if how == "last":
        return step_scores[-1]
    return sum(step_scores) / len(step_scores)


def predicted_first_error(step_scores: list[float], threshold: float) -> int:
    """Index of the first step scored below `threshold`, or -1."""
    return next((i for i, s in enumerate(step_scores) if s < threshold), -1)


def auroc(scores: list[float], positives: list[bool]) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    pos = [s for s, p in zip(scores, positives) if p]
    neg = [s for s, p in zip(scores, positives) if not p]
    if not pos or not neg:
        return math.nan
    # Rank-sum with average ranks for ties: O(n log n).
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, p in zip(ranks, positives) if p)
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def binary_f1(predicted: list[bool], actual: list[bool]) -> dict[str, float]:
    """Precision, recall and F1 of the positive class of `actual` (here: the `-` steps)."""
    tp = sum(p and a for p, a in zip(predicted, actual))
    fp = sum(p and not a for p, a in zip(predicted, actual))
    fn = sum(a and not p for p, a in zip(predicted, actual))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def step_metrics(scores: list[float], labels: list[str], threshold: float) -> dict[str, float]:
    """Step-level accuracy, `-`-class precision/recall/F1, and AUROC of P(+) against `+` labels."""
    predicted_negative = [s < threshold for s in scores]
    actual_negative = [label == "-" for label in labels]
    accuracy = sum(p == a for p, a in zip(predicted_negative, actual_negative)) / max(len(labels), 1)
    f1 = binary_f1(predicted_negative, actual_negative)
    return {
        "step_accuracy": accuracy,
        "negative_precision": f1["precision"],
        "negative_recall": f1["recall"],
        "negative_f1": f1["f1"],
        "step_auroc": auroc(scores, [not a for a in actual_negative]),
    }


def first_error_f1(predicted: list[int], actual: list[int]) -> dict[str, float]:
    """ProcessBench: accuracy on erroneous and on correct solutions, and their harmonic mean."""
    erroneous = [(p, a) for p, a in zip(predicted, actual) if a >= 0]
    correct = [(p, a) for p, a in zip(predicted, actual) if a < 0]
    err_acc = sum(p == a for p, a in erroneous) / len(erroneous) if erroneous else math.nan
    cor_acc = sum(p < 0 for p, _ in correct) / len(correct) if correct else math.nan
    f1 = 2 * err_acc * cor_acc / (err_acc + cor_acc) if err_acc + cor_acc > 0 else 0.0
    return {"first_error_accuracy_erroneous": err_acc, "first_error_accuracy_correct": cor_acc,
            "first_error_f1": f1}


def majority_vote(answers: list[str]) -> str:
    """The most common answer; ties go to the answer seen first."""
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)


def best_of_n(groups: list[list[tuple[float, str, bool]]]) -> dict[str, float]:
    """Each group: one problem's (score, answer, correct) samples. Ties in score go to the first sample."""
    n = len(groups)
    picked = sum(max(g, key=lambda s: s[0])[2] for g in groups)
    voted = 0
    for g in groups:
        answer = majority_vote([s[1] for s in g])
        voted += next(s[2] for s in g if s[1] == answer)
    return {
        "prm": picked / n,
        "majority": voted / n,
        "pass_at_1": sum(sum(s[2] for s in g) / len(g) for g in groups) / n,
        "oracle": sum(any(s[2] for s in g) for g in groups) / n,
    }


def roc_points(scores: list[float], positives: list[bool]) -> list[dict[str, float]]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1)."""
    pos, neg = sum(positives), len(positives) - sum(positives)
    if not pos or not neg:
        return []
    pairs = sorted(zip(scores, positives), key=lambda sp: -sp[0])
    points, tp, fp = [{"fpr": 0.0, "tpr": 0.0}], 0, 0
    for index, (score, positive) in enumerate(pairs):
        tp += positive
        fp += not positive
        if index + 1 == len(pairs) or pairs[index + 1][0] != score:
            points.append({"fpr": fp / neg, "tpr": tp / pos})
    return points
