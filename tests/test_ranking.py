"""Within-problem solution AUROC: per problem, over the problems with right and wrong candidates, resampled by
problem."""

import pytest

from prmflow.evaluation.bootstrap import bootstrap_interval
from prmflow.evaluation.ranking import mixed_problems, within_problem_auroc


def rows(problem, outcomes):
    return [{"problem_id": problem, "problem": problem, "correct": c} for c in outcomes]


def test_mean_of_per_problem_aurocs_over_mixed_problems_only():
    data = rows("a", [True, False, False]) + rows("b", [True, True, False]) + rows("c", [True, True])
    # a: the right one above both wrong ones (1.0); b: one right above the wrong one, one below it (0.5);
    # c has no wrong candidate and is left out, though its scores would rank below everything else.
    scores = [0.9, 0.1, 0.2] + [0.8, 0.1, 0.5] + [0.0, 0.0]
    assert mixed_problems(data) == {"a", "b"}
    resampled = within_problem_auroc(data, scores)
    assert sorted(resampled.problems) == ["a", "b"]
    assert resampled.point() == pytest.approx(0.75)
    low, high = bootstrap_interval(resampled, 200, seed=1)
    assert low == pytest.approx(0.5) and high == pytest.approx(1.0)  # resamples of {a, b}: 0.5 .. 1.0


def test_scores_across_problems_do_not_matter():
    # Every wrong candidate of the easy problem outscores every right one of the hard problem: still 1.0.
    data = rows("easy", [True, False]) + rows("hard", [True, False])
    assert within_problem_auroc(data, [0.99, 0.98, 0.02, 0.01]).point() == 1.0


def test_length_mismatch_is_refused():
    with pytest.raises(ValueError, match="2 rows but 1 scores"):
        within_problem_auroc(rows("a", [True, False]), [0.5])
