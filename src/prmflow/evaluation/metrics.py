"""Metric functions on plain lists: exact, dependency-free, unit-tested on hand-computed cases."""

from __future__ import annotations

import math
from collections import Counter


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


def first_error_f1(predicted: list[int | None], actual: list[int]) -> dict[str, float]:
    """ProcessBench: accuracy on erroneous and on correct solutions, and their harmonic mean.

    A None prediction is no verdict (the model did not score the steps a verdict needs): wrong either way."""
    erroneous = [(p, a) for p, a in zip(predicted, actual) if a >= 0]
    correct = [(p, a) for p, a in zip(predicted, actual) if a < 0]
    err_acc = sum(p == a for p, a in erroneous) / len(erroneous) if erroneous else math.nan
    cor_acc = sum(p is not None and p < 0 for p, _ in correct) / len(correct) if correct else math.nan
    f1 = 2 * err_acc * cor_acc / (err_acc + cor_acc) if err_acc + cor_acc > 0 else 0.0
    return {"first_error_accuracy_erroneous": err_acc, "first_error_accuracy_correct": cor_acc,
            "first_error_f1": f1}


def majority_vote(answers: list[str]) -> str:
    """The most common answer; ties go to the answer seen first."""
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)


def best_of_n(groups: list[list[tuple[float, str, bool, bool]]]) -> dict[str, float]:
    """Each group: one problem's (score, answer, correct, has_final_answer) samples.

    The PRM picks by (has_final_answer, score): a sample that stops before stating an answer is never
    picked while one that states one exists (with `min` or `prod` an unfinished solution would win for
    stopping before any step could look wrong, the trap Lightman et al. 2023 report). Ties in score go
    to the first sample.
    """
    n = len(groups)
    picked = sum(max(g, key=lambda s: (s[3], s[0]))[2] for g in groups)
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


def reliability_bins(probs: list[float], positives: list[bool], bins: int) -> list[dict[str, float]]:
    """Equal-width bins of predicted P(+) over [0, 1]: mean confidence, observed positive rate, count.

    A score of exactly 1.0 falls in the last bin; empty bins are left out.
    """
    if bins < 1:
        raise ValueError(f"bins: must be >= 1, got {bins}")
    members: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for p, positive in zip(probs, positives):
        members[min(int(p * bins), bins - 1)].append((p, positive))
    return [{"bin": index, "lower": index / bins, "upper": (index + 1) / bins,
             "confidence": sum(p for p, _ in m) / len(m), "accuracy": sum(pos for _, pos in m) / len(m),
             "count": len(m)} for index, m in enumerate(members) if m]


def expected_calibration_error(probs: list[float], positives: list[bool], bins: int = 10) -> float:
    """ECE: the count-weighted mean gap between confidence and observed positive rate per bin."""
    if not probs:
        return math.nan
    return sum(b["count"] * abs(b["accuracy"] - b["confidence"])
               for b in reliability_bins(probs, positives, bins)) / len(probs)


def choose_threshold(step_scores: list[list[float]], first_errors: list[int]) -> tuple[float, float]:
    """The threshold with the best first-error F1 on these (validation) solutions: (threshold, F1).

    A step is `-` when its score is below the threshold. Candidates lie between the distinct scores: the midpoint
    of each pair of neighbours, and 0.5 below the lowest and above the highest (no step `-`, every step `-`);
    ties go to the lowest. A threshold is never a score seen here: a served step that scores what a
    held-out step scored, give or take float noise of another batch shape (~1e-7), cannot land on either side
    of it at random.
    """
    scores_seen = sorted({s for scores in step_scores for s in scores})
    if not scores_seen:
        raise ValueError("choose_threshold: no step scores")
    candidates = [scores_seen[0] - 0.5, *((a + b) / 2 for a, b in zip(scores_seen, scores_seen[1:])),
                  scores_seen[-1] + 0.5]
    # Only the running minimum matters: the first step below t is the first whose prefix-minimum is.
    running = [[min(scores[: i + 1]) for i in range(len(scores))] for scores in step_scores]
    best = (candidates[0], -1.0)
    for threshold in candidates:
        predicted = [next((i for i, m in enumerate(mins) if m < threshold), -1) for mins in running]
        f1 = first_error_f1(predicted, first_errors)["first_error_f1"]
        if f1 > best[1]:
            best = (threshold, f1)
    return best


def best_of_n_curve(groups: list[list[tuple[float, str, bool, bool]]], sizes: list[int]) -> dict[int, dict[str, float]]:
    """`best_of_n` on the first N samples of every group, for each N (a smaller group gives all it has)."""
    return {n: best_of_n([g[:n] for g in groups]) for n in sizes}


def powers_of_two_up_to(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself when it is not a power of two."""
    sizes = [1 << k for k in range(max(n, 1).bit_length()) if 1 << k <= n]
    return sizes + ([n] if sizes and sizes[-1] != n else [])


def step_coverage(step_counts: list[int], scores: list[list[float]], cut: list[int] | None = None) -> dict[str, float]:
    """How much of each solution a scorer scored: solutions of `step_counts` steps got `scores` (a prefix of
    their steps: the trailing ones beyond the model's context are dropped, a step crossing the end is cut inside
    but scored on its start; `cut`: how many were cut, per solution, where the scorer says). Counts:
    {steps, scored_steps, cut_steps (with `cut`), dropped_steps, unscored_step_fraction (dropped / steps),
    solutions_with_dropped_steps (some scored, some not), unscored_solutions (none scored)}."""
    steps, scored = sum(step_counts), sum(len(s) for s in scores)
    found = {"steps": steps, "scored_steps": scored, "dropped_steps": steps - scored,
             "unscored_step_fraction": (steps - scored) / steps if steps else 0.0,
             "solutions_with_dropped_steps": sum(0 < len(s) < n for n, s in zip(step_counts, scores)),
             "unscored_solutions": sum(not s for s in scores)}
    return found | ({"cut_steps": sum(cut)} if cut is not None else {})


def coverage_warning(where: str, coverage: dict[str, float], limit: float, context: str) -> str | None:
    """A warning when more than `limit` of the steps were not scored, naming the model's `context`; else None."""
    share = coverage["unscored_step_fraction"]
    if share <= limit:
        return None
    return (f"WARNING {where}: {share:.0%} of {coverage['steps']} steps not scored ({coverage['dropped_steps']} "
            f"beyond the model's context of {context}; {coverage['solutions_with_dropped_steps']} solutions lost "
            f"steps, {coverage['unscored_solutions']} were not scored at all), more than "
            f"evaluate.max_unscored_step_fraction {limit:g}: its metrics judge only the scored steps. A longer "
            f"context (model.max_length, profiles/real-candidates.yaml) scores more.")
