"""Best-of-N: pick one of a problem's N samples by the scorer (against majority vote, a random pick and the
oracle), and the same as functions of bootstrap weights; and the `evaluate.external` sets scored with it.

    table = best_of_n_table(pairs)   # (row, step scores) pairs -> {N: {prm_min, ..., majority, pass_at_1, oracle}}
    metrics = evaluate_external("outcome", rows, scores, threshold, "min", samples=1000, seed=1234)

A row needs `problem` (or `problem_id`), `predicted_answer` and `correct`; the samples of a problem are its rows
in file order, and best-of-N at N uses the first N (metrics.best_of_n_curve).
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial

from prmflow.config import EvaluateParams
from prmflow.data.answers import states_final_answer
from prmflow.evaluation.bootstrap import Resampled, intervals, paired_difference, weighted_mean
from prmflow.evaluation.inputs import problem_key
from prmflow.evaluation.metrics import auroc, best_of_n_curve, first_error_f1, powers_of_two_up_to
from prmflow.labeling.policy import NO_ANSWER
from prmflow.scoring.aggregation import AGGREGATIONS, aggregate, predicted_first_error


def has_final_answer(row: dict) -> bool:
    """Whether the rollout stated a final answer: `has_final_answer` where evaluate_external read it from the
    steps (as serving does), else the policy's extracted answer (labeling: label.answer_reading) is neither
    empty nor NO_ANSWER."""
    if "has_final_answer" in row:
        return bool(row["has_final_answer"])
    return str(row["predicted_answer"]).strip() not in ("", NO_ANSWER)


def solution_groups(pairs: list[tuple[dict, float]]) -> list[list[tuple[float, str, bool, bool]]]:
    """Per problem, in file order: (solution score, answer, correct, has_final_answer) of each sample."""
    groups: dict[str, list] = defaultdict(list)
    for row, score in pairs:
        groups[problem_key(row)].append(
            (score, str(row["predicted_answer"]), bool(row["correct"]), has_final_answer(row)))
    return list(groups.values())


def best_of_n_groups(pairs: list[tuple[dict, list[float]]], how: str) -> list[list[tuple[float, str, bool, bool]]]:
    """`solution_groups` with each solution scored by aggregating its step scores."""
    return solution_groups([(row, aggregate(scores, how)) for row, scores in pairs])


def best_of_n_table(pairs: list[tuple[dict, list[float]]]) -> dict[int, dict[str, float]]:
    """{N: {prm_<aggregation>, majority, pass_at_1, oracle}} for N = 1, 2, 4, ... up to the largest group."""
    per_how = {how: best_of_n_groups(pairs, how) for how in AGGREGATIONS}
    largest = max((len(g) for g in per_how["min"]), default=0)
    table: dict[int, dict[str, float]] = defaultdict(dict)
    for how, groups in per_how.items():
        for n, result in best_of_n_curve(groups, powers_of_two_up_to(largest)).items():
            table[n][f"prm_{how}"] = result["prm"]
            table[n] |= {k: v for k, v in result.items() if k != "prm"}
    return dict(table)


def best_of_n_metrics(table: dict[int, dict[str, float]]) -> dict[str, float]:
    """Each method at every N (`..._at_N`) and, under the plain names, at the largest N."""
    if not table:
        return {"best_of_n_n": 0}
    largest = max(table)
    metrics = {f"best_of_n_{k}_at_{n}": v for n, row in table.items() for k, v in row.items() if k != "pass_at_1"}
    metrics |= {f"best_of_n_{k}": v for k, v in table[largest].items()}
    return metrics | {"best_of_n_n": largest}


def best_of_n_resampled(pairs: list[tuple[dict, list[float]]], keys: list[str]) -> dict[str, Resampled]:
    """Best-of-N of each method in `keys` (a best_of_n_table column: prm_<aggregation>, majority, pass_at_1) as a
    function of resampling weights over problems (one unit per problem): `best_of_n_<key>_at_<N>` for N = 1, 2,
    4, ... and, at the largest N, `best_of_n_<key>`. With weights of 1 each is best_of_n_table's number."""
    by_problem: dict[str, list] = defaultdict(list)
    for row, s in pairs:
        by_problem[problem_key(row)].append((row, s))
    tables = [best_of_n_table(group) for group in by_problem.values()]  # a problem's table stops at its samples
    sizes = sorted(best_of_n_table(pairs))
    found = {}
    for n in sizes:
        at_n = [table[max(m for m in table if m <= n)] for table in tables]
        for key in keys:
            found[f"best_of_n_{key}_at_{n}"] = Resampled(list(by_problem),
                                                         partial(weighted_mean, [v[key] for v in at_n]))
            if n == sizes[-1]:
                found[f"best_of_n_{key}"] = found[f"best_of_n_{key}_at_{n}"]
    return found


def evaluate_external(fmt: str, rows: list[dict], scores: list[list[float]], threshold: float,
                      aggregation: str, samples: int = 0, seed: int = 0,
                      answer_reading: str = EvaluateParams.answer_reading) -> dict[str, float]:
    """`outcome`: best-of-N and ORM-style AUROC of the aggregated score over the scored solutions;
    `processbench`: first-error F1 over every solution, those the model gave no verdict on counted wrong
    (`unjudged_solutions` says how many: processbench_verdict).

    With `samples` > 0, an `outcome` set also gets 95% intervals (bootstrap over its problems, seeded) of
    best-of-N by N for `aggregation`, majority vote and a random pick (`pass_at_1`: the mean accuracy of the
    first N candidates), and the paired differences `best_of_n_prm_<aggregation>_minus_<pass_at_1|majority>`
    at the largest N with theirs: whether the PRM picks better than chance or the vote, beyond resampling noise.

    An `outcome` candidate's `has_final_answer` is read from its steps with `answer_reading`
    (data.answers.states_final_answer), as the served model reads it: not from the file's `predicted_answer`,
    which another extractor wrote. `solutions_without_final_answer` counts those that state none.
    """
    if fmt == "outcome":
        rows = [row | {"has_final_answer": states_final_answer(row["steps"], answer_reading)} for row in rows]
    pairs = [(row, s) for row, s in zip(rows, scores) if s]
    metrics: dict[str, float] = {"solutions": len(pairs), "unscored_solutions": len(rows) - len(pairs)}
    if fmt == "outcome":
        metrics["solutions_without_final_answer"] = sum(not has_final_answer(row) for row, _ in pairs)
        metrics["solution_auroc"] = auroc([aggregate(s, aggregation) for _, s in pairs],
                                          [bool(r["correct"]) for r, _ in pairs])
        metrics |= best_of_n_metrics(best_of_n_table(pairs))
        if not samples or not pairs:
            return metrics
        resampled = best_of_n_resampled(pairs, [f"prm_{aggregation}", "majority", "pass_at_1"])
        metrics |= intervals(resampled, samples, seed)
        picked = resampled[f"best_of_n_prm_{aggregation}"]
        for baseline in ("pass_at_1", "majority"):
            name = f"best_of_n_prm_{aggregation}_minus_{baseline}"
            metrics[name], metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = paired_difference(
                picked, resampled[f"best_of_n_{baseline}"], samples, seed)
        return metrics
    verdicts = [processbench_verdict(row["label"], len(row["steps"]), s, threshold) for row, s in zip(rows, scores)]
    metrics |= {"solutions": len(rows), "unjudged_solutions": verdicts.count(None)}
    return metrics | first_error_f1(verdicts, [row["label"] for row in rows])


def processbench_verdict(label: int, steps: int, scores: list[float], threshold: float) -> int | None:
    """The model's first-error verdict on a ProcessBench solution of `steps` steps labeled `label` (first error
    or -1), or None where it gave none: it found no error in the steps it scored, but did not score the steps
    that verdict is about (the labeled error step, or for a correct solution every step). None counts as wrong:
    a context that ends before the error must not be credited with a right "no error"."""
    verdict = predicted_first_error(scores, threshold)
    needed = label + 1 if label >= 0 else steps
    return None if verdict == -1 and len(scores) < needed else verdict
