"""Stage `search`: steer the label policy with the trained PRM on the held-out problems, at equal compute.

    prmflow search            # reads params.yaml: base, label (the policy), model (device, dtype), search

For every held-out problem and every N in `search.sizes`, each method of search_methods.py picks
an answer: best-of-N (PRM `min`/`prod`/`last`), the PRM-weighted majority vote, step-level beam
search and DVTS, beside majority vote and pass@1 on the same samples (the PRM-free baselines).
The policy is `label.policy` (the calibrated simulated one by default: its per-problem
misconceptions make samples share wrong answers as real generators do, so majority vote is not
nearly the oracle). The PRM is models/prm in process, or a served one at `search.scorer`
(`mlflow models serve`, /invocations: the serving contract of serving/scorer.py). The in-process PRM
and a model-backed policy load on `model.device` in `model.dtype`, as everywhere else; search.md says
where the PRM ran.

Each problem and method has its own random stream (`{seed}:{problem id}:search:...`); best-of-N
and the votes at N use the first N of one set of samples, as evaluate's best-of-N does.

Writes `reports/search.json` ({method: {N: {accuracy, generated_tokens, policy_calls, prm_calls,
prm_tokens}}}, compute as means per problem), `reports/plots/search.json` (DVC plot: accuracy
against N) and `reports/plots/search.png` (accuracy against generated tokens), `reports/search.md`,
and logs them to MLflow.
"""

from __future__ import annotations

import random
from collections import defaultdict
from functools import partial
from pathlib import Path

from prmflow.config import Params, SearchParams
from prmflow.devices import Placement
from prmflow.evaluation.search_methods import (
    BASELINES, BEST_OF_N, BEST_OF_N_AGGREGATIONS, METHODS, Compute, Picked, StepScorer, beam_search, best_of_n, dvts, majority,
    sample_solutions, weighted_vote,
)
from prmflow.labeling.policy import Policy
from prmflow.labeling.step_labels import AnswerChecker
from prmflow.scoring.load import PRM, load


class SearchScorer:
    """A PRM (scoring.load) as the search methods call it, counting the tokens it reads.

    Solutions that extend one non-empty prefix by one step each (a step of beam search or DVTS) share one
    pass over that prefix where the PRM can (LocalPRM.score_extensions: KV-cache prefix scoring); the rest
    (and whatever does not fit the context) is scored in padded batches as evaluate scores. A served PRM
    does not say how many tokens it read: `forward_tokens` stays 0.
    """

    def __init__(self, prm: PRM):
        self.prm, self.description = prm, prm.description

    @property
    def forward_tokens(self) -> int:
        return self.prm.forward_tokens

    def score(self, problem: str, solutions: list[list[str]]) -> list[list[float]]:
        groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for i, steps in enumerate(solutions):
            if len(steps) > 1:
                groups[tuple(steps[:-1])].append(i)
        scores: list[list[float] | None] = [None] * len(solutions)
        extend = getattr(self.prm, "score_extensions", None)
        for prefix, members in groups.items():
            extended = extend(problem, list(prefix), [solutions[i][-1] for i in members]) if extend and len(
                members) > 1 else None
            for i, step_scores in zip(members, extended or []):
                scores[i] = step_scores
        rest = [i for i, s in enumerate(scores) if s is None]
        for i, prediction in zip(rest, self.prm.score([(problem, solutions[i]) for i in rest])):
            scores[i] = prediction.step_scores
        return scores


def make_scorer(params: SearchParams, models_dir: str | Path, placement: Placement) -> SearchScorer:
    """The served PRM at `search.scorer`, else <models_dir>/prm in process on `placement`."""
    source = params.scorer or Path(models_dir) / "prm"
    return SearchScorer(load(source, placement=placement, batch_size=params.batch_size,
                             request_timeout_s=params.request_timeout_s))


def search_problem(policy: Policy, scorer: StepScorer, problem: dict, *, params: SearchParams, seed: int,
                   check: AnswerChecker) -> dict[str, dict[int, tuple[float, Compute]]]:
    """{method: {N: (share right, compute)}} for one problem: every method and baseline at every N.

    pass@1 is the share of the N samples that are right, at the mean cost of one sample.
    """
    picks: dict[str, dict[int, Picked]] = defaultdict(dict)
    stream = f"{seed}:{problem['id']}:search"
    samples = sample_solutions(policy, problem, max(params.sizes), random.Random(f"{stream}:samples"))
    out: dict[str, dict[int, tuple[float, Compute]]] = defaultdict(dict)
    for n in sorted(params.sizes):
        first, before = samples[:n], scorer.forward_tokens
        scores = scorer.score(problem["problem"], [s.steps for s in first])
        prm_tokens = scorer.forward_tokens - before
        for method, how in zip(BEST_OF_N, BEST_OF_N_AGGREGATIONS):
            picks[method][n] = best_of_n(first, scores, how, prm_tokens)
        picks["weighted_vote"][n] = weighted_vote(first, scores, params.aggregation, prm_tokens)
        picks["majority"][n] = majority(first)
        for method, run in (("beam_search", beam_search), ("dvts", dvts)):
            picks[method][n] = run(policy, scorer, problem, n=n, beam_width=params.beam_width,
                                   max_steps=params.max_steps, how=params.aggregation,
                                   rng=random.Random(f"{stream}:{method}:{n}"))
        one = Compute(policy_calls=1, generated_tokens=picks["majority"][n].compute.generated_tokens / n)
        out["pass_at_1"][n] = (sum(check(s.final_answer, problem["answer"]) for s in first) / n, one)
    for method, by_n in picks.items():
        for n, picked in by_n.items():
            out[method][n] = (float(check(picked.answer, problem["answer"])), picked.compute)
    return out


def search_report(outcomes: list[dict[str, dict[int, tuple[float, Compute]]]], bootstrap_samples: int = 0,
                  seed: int = 0) -> dict[str, dict[int, dict]]:
    """{method: {N: accuracy and compute, both means over the problems}}, methods then baselines.

    With `bootstrap_samples`, each accuracy gets its 95% interval (`accuracy_ci_low`/`_high`) and each
    method its difference from majority vote at the same N with the paired interval (`vs_majority`,
    `vs_majority_ci_low`/`_high`), by bootstrap over problems (evaluation/bootstrap.py).
    """
    from prmflow.evaluation.bootstrap import Resampled, bootstrap_interval, paired_difference, weighted_mean

    problems = [str(i) for i in range(len(outcomes))]  # one outcome per problem: the unit of resampling
    report: dict[str, dict[int, dict]] = {}
    for method in (*METHODS, *BASELINES):
        report[method] = {}
        for n in sorted(outcomes[0][method]):
            rows = [o[method][n] for o in outcomes]
            mean = {key: sum(getattr(c, key) for _, c in rows) / len(rows)
                    for key in ("generated_tokens", "policy_calls", "prm_calls", "prm_tokens")}
            report[method][n] = {"accuracy": sum(a for a, _ in rows) / len(rows), **mean}
            if not bootstrap_samples:
                continue
            accuracy = Resampled(problems, partial(weighted_mean, [a for a, _ in rows]))
            row = report[method][n]
            row["accuracy_ci_low"], row["accuracy_ci_high"] = bootstrap_interval(accuracy, bootstrap_samples, seed)
            if method != "majority":
                majority_accuracy = Resampled(problems, partial(weighted_mean, [o["majority"][n][0] for o in outcomes]))
                row["vs_majority"], row["vs_majority_ci_low"], row["vs_majority_ci_high"] = paired_difference(
                    accuracy, majority_accuracy, bootstrap_samples, seed)
    return report


def run_search(policy: Policy, scorer: StepScorer, problems: list[dict], *, params: SearchParams,
               seed: int) -> dict[str, dict[int, dict]]:
    from tqdm.auto import tqdm

    check = AnswerChecker()
    outcomes = [search_problem(policy, scorer, problem, params=params, seed=seed, check=check)
                for problem in tqdm(problems, desc="search", unit="problem", disable=None, mininterval=1.0)]
    return search_report(outcomes, params.bootstrap_samples, seed)


def plot_rows(report: dict[str, dict[int, dict]]) -> list[dict]:
    """The DVC plot's rows: one per N, each method's accuracy a column."""
    sizes = sorted(next(iter(report.values())))
    return [{"n": n, **{method: report[method][n]["accuracy"] for method in report}} for n in sizes]


def write_png(report: dict[str, dict[int, dict]], path: Path) -> Path:
    """Accuracy against mean generated tokens per problem (log scale), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    for method, by_n in report.items():
        sizes = sorted(by_n)
        tokens, accuracy = [by_n[n]["generated_tokens"] for n in sizes], [by_n[n]["accuracy"] for n in sizes]
        # the 95% interval as error bars (search.bootstrap_samples > 0): eight overlapping bands would hide the lines
        spread = ([a - by_n[n]["accuracy_ci_low"] for a, n in zip(accuracy, sizes)],
                  [by_n[n]["accuracy_ci_high"] - a for a, n in zip(accuracy, sizes)]) if all(
            "accuracy_ci_low" in by_n[n] for n in sizes) else None
        ax.errorbar(tokens, accuracy, yerr=spread, marker="o", capsize=2, elinewidth=0.7,
                    ls="--" if method in BASELINES else "-", label=method)
    ax.set(xscale="log", xlabel="generated tokens per problem (words)", ylabel="accuracy",
           title="PRM-guided search at equal compute (bars: 95% bootstrap intervals)")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 20, 50, 100, 200, ...: a few plain labels,
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())                 # none crowded between them
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _interval(row: dict, key: str) -> str:
    return f" [{row[key + '_ci_low']:.2f}, {row[key + '_ci_high']:.2f}]" if key + "_ci_low" in row else ""


def summary_markdown(report: dict[str, dict[int, dict]], params: SearchParams, *, problems: int, policy: str,
                     prm: str) -> str:
    """reports/search.md: the table of `report` over `problems` held-out problems; `prm` says where the PRM ran."""
    sizes = sorted(next(iter(report.values())))
    lines = [f"# Search: {problems} held-out problems, policy {policy}, beam width {params.beam_width}, "
             f"aggregation {params.aggregation}", "", f"PRM: {prm}.", "",
             "Accuracy, then generated tokens (words) and policy calls per problem.", "",
             "| method | " + " | ".join(f"N={n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for method, by_n in report.items():
        cells = [f"{by_n[n]['accuracy']:.3f}{_interval(by_n[n], 'accuracy')} ({by_n[n]['generated_tokens']:.0f} tok, "
                 f"{by_n[n]['policy_calls']:.1f} calls)" for n in sizes]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    versus = [f"{m} at N={n}: {by_n[n]['vs_majority']:+.3f}{_interval(by_n[n], 'vs_majority')}"
              for m, by_n in report.items() for n in sizes if "vs_majority_ci_low" in by_n[n] and m not in BASELINES]
    if versus:
        lines += ["", "Accuracy minus majority vote's on the same problems, 95% paired bootstrap interval: "
                  + "; ".join(versus) + "."]
    ratio = {m: by_n[max(sizes)]["prm_tokens"] / max(by_n[max(sizes)]["generated_tokens"], 1)
             for m, by_n in report.items() if m not in BASELINES}
    lines += ["", f"PRM forward tokens per generated token at N={max(sizes)}: "
              + ", ".join(f"{m} {r:.1f}" for m, r in ratio.items()) + "."]
    return "\n".join(lines) + "\n"


def main(params: Params) -> None:
    import mlflow
    import torch

    from prmflow.data.contract import PROBLEM_FIELDS
    from prmflow.jsonl import read_jsonl, write_json
    from prmflow.labeling.policies import make_policy
    from prmflow.tracking import stage_run, summary_line

    torch.set_num_threads(params.base.num_threads)
    s, reports = params.search, Path(params.base.reports_dir)
    problems = read_jsonl(Path(params.base.data_dir) / "problems" / "test.jsonl", required=PROBLEM_FIELDS)
    problems = problems[:s.num_problems] if s.num_problems else problems
    if not problems:
        raise ValueError(f"{params.base.data_dir}/problems/test.jsonl: no held-out problems to search")
    placement = Placement.of(params.model)
    with stage_run(params.base, "search", s):
        scorer = make_scorer(s, params.base.models_dir, placement)
        report = run_search(make_policy(params.label, params.base.seed, placement), scorer, problems, params=s,
                            seed=params.base.seed)
        write_json(reports / "search.json", report)
        write_json(reports / "plots" / "search.json", plot_rows(report))
        png = write_png(report, reports / "plots" / "search.png")
        (reports / "search.md").write_text(summary_markdown(report, s, problems=len(problems),
                                                            policy=params.label.policy, prm=scorer.description))
        mlflow.log_metrics({f"search_{method}_at_{n}_{key}": value for method, by_n in report.items()
                            for n, row in by_n.items() for key, value in row.items()})
        for path in (reports / "search.json", reports / "search.md", png):
            mlflow.log_artifact(str(path))
    largest = max(params.search.sizes)
    print(summary_line(f"search ({len(problems)} problems, accuracy at N={largest}; table: {reports / 'search.md'})",
                       {method: by_n[largest]["accuracy"] for method, by_n in report.items() if largest in by_n}))
