"""Stage `label`: step labels from policy rollouts, as in Math-Shepherd (or OmegaPRM's binary search), or
from a teacher PRM's step scores (teacher.py: a file of them; teacher_model.py: a PRM asked now).

    prmflow label             # reads params.yaml: base, label

Every row carries its lineage, `label_source`: the method and what it rested on (policy and completions
per prefix; the teacher file or model, models, combination rule and threshold; `given` for pre-labeled rows).
Candidate solutions (ingest format `candidates`) are labeled as they are: by the teacher's scores, or by
completions of their own prefixes (mc, binary_search with a model policy). With `label.consensus_file`, a
train solution is kept only where that second source puts its first error on the same step (consensus.py).
Rows the teacher cannot label and solutions consensus drops are written to data/rollouts/rejects.jsonl with
file, line, field and reason, and counted in the report.

For each problem, sample trajectories with the policy and label their steps with `label.method`
(step_labels.py, through engine.py): in this process, several problems at once where the policy
takes it (the openai policy: `label.concurrency` requests in flight over all of them), or on a Ray
cluster with `label.workers` > 1 (distributed.py); the output is the same byte for byte. The
simulated policy also gives the true first error, kept beside the labeled one so label quality can
be measured (reports/labeling.json); with it, every method also labels the first
`label.compare_methods_on` train problems, side by side in the report.

Resumable: each labeled problem is appended, as one line, to a partial file outside
data/rollouts (data/.label_partial/<split>-<hash of params, seed and input>-<hash of the labeling
code>.jsonl) and flushed. A killed run restarts from the problems already there; per-problem
random streams make the result the same as an uninterrupted run. A partial file for the same
inputs made by other labeling code is deleted, and the stage says so. The final data/rollouts/<split>.jsonl is written
atomically at the end and the partial file removed, so DVC never sees it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from prmflow.codebase import code_closure
from prmflow.config import LabelParams, Params
from prmflow.data.answers import answer_agreement
from prmflow.devices import Placement
from prmflow.labeling.consensus import agreeing, read_first_errors
from prmflow.labeling.engine import ProblemLabels, label_many
from prmflow.labeling.policies import make_policy
from prmflow.labeling.step_labels import METHODS
from prmflow.labeling.teacher import read_teacher_scores, teacher_rows
from prmflow.labeling.teacher_model import model_teacher_scores, teacher_prm

SPLITS = ("train", "test")
# The code the labels rest on (the label stage's import closure, as dvc.yaml's deps): a partial file made by
# other code is not resumed.
LABELING_CODE = tuple(sorted(code_closure("prmflow.labeling.label")))

# `label` params that change how the work runs, not the labels: a run resumes across them.
EXECUTION_FIELDS = ("workers", "ray_address", "worker_gpus", "chunk_problems", "concurrency", "request_timeout_s",
                    "max_retries", "retry_backoff_s", "compare_methods_on")


def rollout_rows(problems: list[dict], params: LabelParams, seed: int) -> list[dict]:
    """The labeled rollout rows of `problems`, in input order: `label_split` without a resume file (tests, bench)."""
    return [row for result in label_split(problems, params, seed) for row in result.rows]


def _read_partial(path: Path) -> dict[str, ProblemLabels]:
    """Problems already labeled by an earlier, interrupted run; a torn last line is cut off."""
    done: dict[str, ProblemLabels] = {}
    if not path.exists():
        return done
    good_bytes = 0
    with path.open("rb") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break  # killed mid-write: this line and anything after it is redone
            if not line.endswith(b"\n"):
                break
            done[record["problem_id"]] = ProblemLabels(**record)
            good_bytes += len(line)
    with path.open("r+b") as handle:
        handle.truncate(good_bytes)
    return done


def _label_todo(problems: list[dict], params: LabelParams, seed: int,
                placement: Placement) -> Iterator[ProblemLabels]:
    """Each problem's labels as it finishes: on Ray with `label.workers` > 1, else in this process."""
    if not problems:
        return iter(())
    if params.workers > 1:
        from prmflow.labeling.distributed import label_on_ray  # Ray only when asked for

        return label_on_ray(problems, params, seed, placement)
    return label_many(make_policy(params, seed, placement), problems, params, seed)


class _Progress:
    """Problems done, completions and tokens so far and their rates: a bar on a terminal, else a log line every
    `LOG_EVERY_S` (dvc and Prefect capture the output)."""

    LOG_EVERY_S = 30.0

    def __init__(self, total: int, done: int, desc: str):
        self.bar = tqdm(total=total, initial=done, desc=desc, unit="problem", disable=None, mininterval=1.0)
        self.total, self.done, self.desc = total, done, desc
        self.calls = self.tokens = 0
        self.start = self.logged = time.monotonic()

    def add(self, result: ProblemLabels) -> None:
        self.done += 1
        self.calls += result.policy_calls
        self.tokens += result.generated_tokens
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rates = {"completions": self.calls, "completions/s": f"{self.calls / elapsed:.1f}", "tokens": self.tokens,
                 "tokens/s": f"{self.tokens / elapsed:.0f}"}
        self.bar.set_postfix(rates, refresh=False)
        self.bar.update()
        if self.bar.disable and (time.monotonic() - self.logged >= self.LOG_EVERY_S or self.done == self.total):
            self.logged = time.monotonic()
            print(f"{self.desc}: {self.done}/{self.total} problems, "
                  + ", ".join(f"{k} {v}" for k, v in rates.items()) + " (this run)", flush=True)

    def close(self) -> None:
        self.bar.close()


def label_split(problems: list[dict], params: LabelParams, seed: int, partial: Path | None = None, *,
                placement: Placement = Placement()) -> list[ProblemLabels]:
    """Every problem's labels, in input order; with `partial`, resume from and append to that file.

    Problems are labeled as `_label_todo` hands them back (several at once, or on Ray workers) and each is
    appended to `partial` as it comes, once: only this process writes it. `placement` is where a
    model-backed policy loads its model (`model.device`, `model.dtype`).
    """
    done = _read_partial(partial) if partial else {}
    todo = [problem for problem in problems if problem["id"] not in done]
    handle = None
    if partial:
        partial.parent.mkdir(parents=True, exist_ok=True)
        handle = partial.open("a")
    workers = f", {params.workers} Ray workers" if params.workers > 1 else ""
    progress = _Progress(len(problems), len(problems) - len(todo), f"label ({params.method}, {params.policy}{workers})")
    try:
        for result in _label_todo(todo, params, seed, placement):
            if handle:
                handle.write(json.dumps(dataclasses.asdict(result), ensure_ascii=False) + "\n")
                handle.flush()
            done[result.problem_id] = result
            progress.add(result)
        return [done[problem["id"]] for problem in problems]
    finally:
        progress.close()
        if handle:
            handle.close()


def code_key(package: Path = Path(__file__).resolve().parents[1]) -> str:
    """A digest of LABELING_CODE's files (names and bytes) in `package` (this prmflow's source folder)."""
    digest = hashlib.sha256()
    for name in LABELING_CODE:
        digest.update(name.encode() + b"\0" + (package / name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def partial_path(data_dir: Path, split: str, params: LabelParams, seed: int, problems_file: Path) -> Path:
    """data/.label_partial/<split>-<inputs>-<code>.jsonl: keyed by everything the labels depend on (params but
    EXECUTION_FIELDS, seed, input file, labeling code), so a partial file is never reused for other inputs or by
    other code, and a run killed on 8 Ray workers resumes on 2, or in one process."""
    key = hashlib.sha256()
    labels_rest_on = {k: v for k, v in dataclasses.asdict(params).items() if k not in EXECUTION_FIELDS}
    key.update(json.dumps({"label": labels_rest_on, "seed": seed}, sort_keys=True).encode())
    key.update(problems_file.read_bytes())
    return data_dir / ".label_partial" / f"{split}-{key.hexdigest()[:16]}-{code_key()}.jsonl"


def set_aside_stale_partials(partial: Path) -> list[str]:
    """Why the other partial files of `partial`'s split are not resumed; those for the same inputs made by other
    labeling code are deleted (no code can resume them), the rest left in place."""
    split, inputs, _ = partial.stem.split("-")
    reasons = []
    for other in sorted(partial.parent.glob(f"{split}-*.jsonl")):
        if other == partial:
            continue
        problems = sum(1 for _ in other.open("rb"))
        if other.stem.split("-")[1:2] == [inputs]:
            other.unlink()
            reasons.append(f"{other}: {problems} problems labeled by other labeling code (LABELING_CODE changed): "
                           f"deleted, labeling starts over")
        else:
            reasons.append(f"{other}: {problems} problems labeled for other params, seed, problems or code: "
                           f"not resumed (left in place)")
    return reasons


def true_labels(row: dict) -> list[str]:
    """`+` before the policy's first slip, `-` from it on (a slip carries forward to the answer)."""
    slip = row["true_first_error"]
    return ["+" if slip < 0 or i < slip else "-" for i in range(len(row["steps"]))]


def label_summary(rows: list[dict], results: list[ProblemLabels] = ()) -> dict[str, float]:
    steps = [label for row in rows for label in row["labels"]]
    judged = [row for row in rows if row.get("true_first_error") is not None]
    pairs = [(a, b) for row in judged for a, b in zip(row["labels"], true_labels(row))]
    calls = sum(r.policy_calls for r in results)
    # Agreement only where the true first error is known (simulated policy, pre-labeled data).
    agreement = {
        "first_error_agreement": sum(row["first_error"] == row["true_first_error"] for row in judged) / len(judged),
        "hard_label_agreement": sum(a == b for a, b in pairs) / max(len(pairs), 1),
    } if judged else {}
    return {
        "solutions": len(rows),
        "steps": len(steps),
        "negative_step_fraction": steps.count("-") / max(len(steps), 1),
        "solution_accuracy": sum(row["correct"] for row in rows) / max(len(rows), 1),
        **answer_agreement(rows),  # how often samples of a problem repeat an answer: what majority vote rests on
        **agreement,
        "policy_calls": calls,
        "policy_calls_per_labeled_step": calls / max(len(steps), 1),
        "answer_checks": sum(r.answer_checks for r in results),
        "generated_tokens": sum(r.generated_tokens for r in results),
        "unparseable_answers": sum(r.unparseable_answers for r in results),
    }


def compare_methods(problems: list[dict], params: LabelParams, seed: int) -> dict[str, dict[str, float]]:
    """Every method's label summary on the same problems and trajectories (simulated policy: cheap enough for
    this process; a Ray cluster would cost more to start than it saves)."""
    comparison = {}
    for method in METHODS:
        results = label_split(problems, dataclasses.replace(params, method=method, workers=1), seed)
        comparison[method] = label_summary([row for r in results for row in r.rows], results)
    return comparison


def _label_resumably(problems: list[dict], params: Params, data: Path, split: str,
                     source: Path) -> list[ProblemLabels]:
    """`label_split` through the split's partial file, removed once every problem is labeled."""
    partial = partial_path(data, split, params.label, params.base.seed, source)
    if partial.parent.exists():
        for reason in set_aside_stale_partials(partial):
            print(f"label {split}: {reason}", flush=True)
    results = label_split(problems, params.label, params.base.seed, partial, placement=Placement.of(params.model))
    partial.unlink()
    with contextlib.suppress(OSError):  # the folder goes too once no split has a partial file
        partial.parent.rmdir()
    return results


def main(params: Params) -> None:
    import mlflow

    from prmflow.data.contract import PROBLEM_FIELDS, PROBLEM_TYPES
    from prmflow.jsonl import RecordError, read_jsonl, write_json, write_jsonl
    from prmflow.tracking import stage_run, summary_line

    data = Path(params.base.data_dir)
    report = {"policy": params.label.policy, "method": params.label.method}
    teacher = params.label.method == "teacher"
    rejects: list[dict] = []
    if teacher and params.label.teacher_file:
        scores, rejects = read_teacher_scores(Path(params.label.teacher_file), params.label.teacher_models)
        report["teacher"] = {"file": params.label.teacher_file, "scored_solutions": len(scores),
                             "rejected_lines": len(rejects)}
    elif teacher:  # asked split by split below
        prm, scores = teacher_prm(params.label), {}
        report["teacher"] = {"model": params.label.teacher_model, "on": prm.description}
    with stage_run(params.base, "label", params.label):
        for split in SPLITS:
            source = data / "problems" / f"{split}.jsonl"
            problems = read_jsonl(source, required=PROBLEM_FIELDS, types=PROBLEM_TYPES)
            if not problems:
                raise RecordError(f"{source}: no problems (the file is empty: rerun `prmflow ingest`)")
            if teacher:
                unscored = []
                if params.label.teacher_model:
                    scores, unscored = model_teacher_scores(problems, prm, params.label, source)
                    report["teacher"][f"{split}_scored_solutions"] = len(scores)
                    report["teacher"][f"{split}_unscorable"] = len(unscored)
                rows, bad = teacher_rows(problems, scores, params.label, source,
                                         frozenset(r["id"] for r in unscored))
                bad = unscored + bad
                rejects += bad
                results = []
            else:
                results = _label_resumably(problems, params, data, split, source)
                rows = [row for result in results for row in result.rows]
            if params.label.consensus_file and split == "train":  # test stays whole: evaluation on all solutions
                second, bad = read_first_errors(Path(params.label.consensus_file))
                rows, dropped, counts = agreeing(rows, second, params.label.consensus_file)
                rejects += bad + dropped
                report["consensus"] = {"file": params.label.consensus_file, "rejected_lines": len(bad), **counts}
                print(f"label {split}: consensus with {params.label.consensus_file}: {counts}", flush=True)
            write_jsonl(data / "rollouts" / f"{split}.jsonl", rows)
            report[split] = summary = label_summary(rows, results)
            mlflow.log_metrics({f"{split}_{k}": v for k, v in summary.items()})
            print(summary_line(f"label {split}", summary))
        write_jsonl(data / "rollouts" / "rejects.jsonl", rejects)
        report["rejects"] = len(rejects)
        report["rejects_by_field"] = dict(Counter(r["field"] for r in rejects).most_common())
        if rejects:
            print(f"label: {len(rejects)} rejected (lines of the teacher or consensus file, solutions they do not "
                  f"label or disagree on), by field "
                  f"{report['rejects_by_field']}: {data / 'rollouts' / 'rejects.jsonl'}", flush=True)
        if params.label.policy == "simulated" and params.label.compare_methods_on > 0 and not teacher:
            sample = read_jsonl(data / "problems" / "train.jsonl")[:params.label.compare_methods_on]
            report["method_comparison"] = comparison = compare_methods(sample, params.label, params.base.seed)
            mlflow.log_metrics({f"{method}_{key}": comparison[method][key] for method in METHODS
                                for key in ("first_error_agreement", "policy_calls_per_labeled_step")})
        write_json(Path(params.base.reports_dir) / "labeling.json", report)
