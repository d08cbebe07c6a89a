"""Labeling problems with one policy in one process: a problem's labels, and many problems at once.

`sample_and_label` labels one problem: its trajectories and their step labels, from per-problem
random streams, so a problem's labels do not depend on which process labels it, when, or
beside which other problems. `label_many` labels a list of problems with one policy, as many
at once as the policy takes (`parallel_problems`: the openai policy's `label.concurrency`, so
that every slot of its shared request pool has a request waiting; 1 for in-process policies),
and yields each problem's labels as it finishes. The label stage (label.py) and the Ray workers
(distributed.py) both label through `label_many`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from prmflow.config import LabelParams
from prmflow.labeling.policy import Continuation, Policy
from prmflow.labeling.step_labels import AnswerChecker, make_labeler


def first_error(labels: list[str]) -> int:
    return next((i for i, label in enumerate(labels) if label == "-"), -1)


@dataclass
class ProblemLabels:
    """The labeled solutions of one problem and what labeling them cost."""

    problem_id: str
    rows: list[dict]
    policy_calls: int = 0
    answer_checks: int = 0
    unparseable_answers: int = 0
    generated_tokens: int = 0  # model policies only; the simulated policy writes text, not tokens


class _Tally:
    """A policy seen by one problem: counts the tokens of the continuations it returns to that problem.

    A counter on the policy itself would mix problems labeled at the same time through it."""

    def __init__(self, policy: Policy):
        self.policy, self.name, self.tokens = policy, policy.name, 0

    def _count(self, continuations: list[Continuation]) -> list[Continuation]:
        self.tokens += sum(c.tokens for c in continuations)
        return continuations

    def sample_trajectory(self, problem: dict, rng: random.Random) -> Continuation:
        return self._count([self.policy.sample_trajectory(problem, rng)])[0]

    def complete(self, problem: dict, prefixes: list[list[str]], rng: random.Random) -> list[Continuation]:
        return self._count(self.policy.complete(problem, prefixes, rng))

    def next_steps(self, problem: dict, prefixes: list[list[str]], rng: random.Random) -> list[Continuation]:
        return self._count(self.policy.next_steps(problem, prefixes, rng))


def sample_and_label(policy: Policy, problem: dict, params: LabelParams, seed: int) -> ProblemLabels:
    # Per-problem streams (order-independent, resumable); trajectories get their own, so that every
    # method labels the same trajectories and methods compare pair by pair.
    rng = random.Random(f"{seed}:{problem['id']}")
    completion_rng = random.Random(f"{seed}:{problem['id']}:completions")
    check = AnswerChecker()
    labeler = make_labeler(params)
    tally = _Tally(policy)
    rows, calls = [], 0
    for k in range(params.trajectories_per_problem):
        trajectory = tally.sample_trajectory(problem, rng)
        step_labels = labeler(tally, problem, trajectory, rng=completion_rng, check=check)
        calls += 1 + step_labels.policy_calls
        rows.append({
            "id": f"{problem['id']}-{k}",
            "problem_id": problem["id"],
            "problem": problem["problem"],
            "steps": trajectory.steps,
            "labels": step_labels.labels,
            "values": step_labels.values,
            "answer": problem["answer"],
            "predicted_answer": trajectory.final_answer,
            "correct": check(trajectory.final_answer, problem["answer"]),
            "first_error": first_error(step_labels.labels),
            "true_first_error": trajectory.first_slip,
            "policy": policy.name,
            "label_source": rollout_source(params),
        })
    return ProblemLabels(problem["id"], rows, calls, check.checks, check.unparseable, tally.tokens)


def rollout_source(params: LabelParams) -> dict:
    """The lineage of a row labeled by policy completions: the method, its draws per prefix, and the value at or
    above which a step is `+` where that is not "above 0" (relative progress)."""
    source = {"method": params.method, "policy": params.policy, "completions_per_step": params.completions_per_step}
    return source | ({"threshold": params.progress_threshold} if params.method == "relative_progress" else {})


def label_candidate(policy: Policy, problem: dict, params: LabelParams, seed: int) -> ProblemLabels:
    """A given candidate solution's steps labeled by the policy's completions of its prefixes (no sampling).

    Raises ValueError for the simulated policy: it re-derives a reference solution, which candidates lack.
    """
    if policy.name == "simulated":
        raise ValueError(f"{problem['id']}: label.policy simulated cannot complete a candidate's own steps (it "
                         f"re-derives reference solutions): use label.method teacher, or a transformers or openai "
                         f"policy")
    rng = random.Random(f"{seed}:{problem['id']}:completions")
    check, tally = AnswerChecker(), _Tally(policy)
    trajectory = Continuation(problem["steps"], problem.get("predicted_answer", ""), None)
    step_labels = make_labeler(params)(tally, problem, trajectory, rng=rng, check=check)
    row = {
        "id": problem["id"], "problem_id": problem["problem_id"], "problem": problem["problem"],
        "steps": problem["steps"], "labels": step_labels.labels, "values": step_labels.values,
        "answer": problem["answer"], "predicted_answer": trajectory.final_answer, "correct": problem["correct"],
        "first_error": first_error(step_labels.labels), "true_first_error": None,
        "policy": problem.get("generator") or problem["source"], "label_source": rollout_source(params),
    }
    return ProblemLabels(problem["id"], [row], step_labels.policy_calls, check.checks, check.unparseable,
                         tally.tokens)


def prelabeled_row(problem: dict) -> dict:
    """A solution that came with its labels (PRM800K, Math-Shepherd, ...): passed through unchanged."""
    labels = problem["labels"]
    return {
        "id": problem["id"], "problem_id": problem["problem_id"], "problem": problem["problem"],
        "steps": problem["steps"], "labels": labels, "values": problem["values"], "answer": problem["answer"],
        "predicted_answer": problem.get("predicted_answer", ""), "correct": "-" not in labels,
        "first_error": first_error(labels), "true_first_error": first_error(labels), "policy": problem["source"],
        "label_source": {"method": "given", "source": problem["source"]},
    }


def label_or_pass_through(policy: Policy, problem: dict, params: LabelParams, seed: int) -> ProblemLabels:
    if "labels" in problem:
        return ProblemLabels(problem["id"], [prelabeled_row(problem)])
    if "steps" in problem:
        return label_candidate(policy, problem, params, seed)
    return sample_and_label(policy, problem, params, seed)


def label_many(policy: Policy, problems: list[dict], params: LabelParams, seed: int) -> Iterator[ProblemLabels]:
    """Each problem's labels, in the order they finish, `policy.parallel_problems` problems at a time.

    Problems run in threads that share the policy (the openai policy's requests then share its one pool of
    `label.concurrency` connections); one problem's calls stay in order, so its labels are those of a run
    that labels it alone. The first failure cancels the problems not yet started and is raised.
    """
    parallel = getattr(policy, "parallel_problems", 1)
    if parallel <= 1:
        for problem in problems:
            yield label_or_pass_through(policy, problem, params, seed)
        return
    todo = iter(problems)
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="label-problem") as pool:
        running: set[Future] = set()
        try:
            while True:
                for problem in todo:  # top up to `parallel` problems in flight
                    running.add(pool.submit(label_or_pass_through, policy, problem, params, seed))
                    if len(running) >= parallel:
                        break
                if not running:
                    return
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        finally:  # a failure (or a consumer that stops early): start nothing more
            for future in running:
                future.cancel()
