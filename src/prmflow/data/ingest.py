"""Stage `ingest`: read every problem source, clean it, and write the train and test splits.

    prmflow ingest            # reads params.yaml: base, ingest; and files in data/incoming/<format>/

Writes `data/problems/{train,test}.jsonl` (`id, problem_id, problem, answer, reference_steps,
source`, plus `steps, labels, values` for pre-labeled sources and `steps, predicted_answer, correct`
for candidate solutions to label), `data/problems/rejects.jsonl`
(every record that was not kept: file, line, source, kind, reason, text) and
`reports/ingest.json` (per-source counts, steps per problem, rejects by reason).

Hygiene: ids are hashes of normalized text, so exact and near-exact duplicates share one and
only the first is kept; a problem lands in test if any copy of it asks for test, so no
problem is in both splits; `split: auto` sources are split by a hash of the problem id, so
adding files moves no earlier problem. The stage fails when a source's reject rate passes
`ingest.max_reject_fraction`, after writing the rejects so they can be read.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from prmflow.config import IngestParams, Params
from prmflow.data.calc import ANNOTATION, format_number, parse_step, to_number
from prmflow.data.sources import Record, content_id, incoming_sources, read_source, reject, source_name

def is_solution(row: dict) -> bool:
    """A row that holds a solution's steps (pre-labeled, or a candidate to label), not only a problem."""
    return "steps" in row


def with_ids(row: dict, source: str) -> dict:
    """`problem_id` from the problem; `id` also from the steps of a solution (one problem, many solutions),
    or the id a candidate source gives (its teacher scores and outcome files are keyed by it)."""
    problem_id = content_id(row["problem"])
    row_id = row.get("id") or (content_id(row["problem"], *row["steps"]) if is_solution(row) else problem_id)
    rest = {key: value for key, value in row.items() if key != "id"}
    return {"id": row_id, "problem_id": problem_id, **rest, "source": source}


def check_problem(row: dict) -> str | None:
    """Why a problem is unusable for rollouts, or None when it is fine.

    Calculator annotations are what the simulated policy re-derives, so when a solution has
    them they must compute and end on the answer.
    """
    if not str(row.get("problem", "")).strip():
        return "problem: empty"
    if is_solution(row):  # pre-labeled or a candidate: its parser checked steps (and labels)
        return None
    steps = row.get("reference_steps")
    if not isinstance(steps, list) or not steps:
        return "reference_steps: empty"
    if not str(row.get("answer", "")).strip():
        return "answer: empty"
    if not any(ANNOTATION.search(text) for text in steps):
        return None
    try:
        answer = to_number(str(row["answer"]))
    except (ValueError, ZeroDivisionError):
        return f"answer: not a number: {row.get('answer')!r}"
    results = []
    for i, text in enumerate(steps):
        if not ANNOTATION.search(text):
            continue
        step = parse_step(text, results)
        if step is None:
            return f"reference_steps[{i}]: unreadable calculator annotation"
        try:
            value = step.compute(results)
        except (ValueError, IndexError, ZeroDivisionError):
            return f"reference_steps[{i}]: unreadable calculator annotation"
        if value != step.result:
            return f"reference_steps[{i}]: annotation arithmetic is wrong"
        results.append(step.result)
    if results[-1] != answer:
        last = format_number(results[-1])
        return f"reference_steps: the last calculator result {last} is not the answer {row['answer']}"
    return None


def hashed_split(problem_id: str, test_fraction: float) -> str:
    """A split that depends on the problem id only: stable when other problems come and go."""
    position = int(hashlib.sha256(problem_id.encode()).hexdigest()[:8], 16) / 16**8
    return "test" if position < test_fraction else "train"


@dataclass
class Candidate:
    source: str
    record: Record
    row: dict


def problem_splits(candidates: list[Candidate], test_fraction: float) -> dict[str, str]:
    """One split per problem, so no problem (or its duplicate) lands in both.

    A split a source names wins over `auto` (test over train, to keep test sets whole); a
    problem that only `auto` sources hold is split by its id.
    """
    named: dict[str, set[str]] = {}
    for c in candidates:
        named.setdefault(c.row["problem_id"], set())
        if c.record.split != "auto":
            named[c.row["problem_id"]].add(c.record.split)
    return {problem_id: ("test" if "test" in splits else "train") if splits else hashed_split(problem_id, test_fraction)
            for problem_id, splits in named.items()}


@dataclass
class Ingested:
    splits: dict[str, list[dict]]
    rejects: list[dict]
    report: dict


def _reason_key(reason: str) -> str:
    """Rejects grouped by reason without their particulars (indices, columns, values)."""
    return re.sub(r"\d+(\.\d+)?", "N", reason.split(" (")[0]).split(": '")[0].split(": \"")[0]


def ingest_report(sources: list[str], splits: dict[str, list[dict]], rejects: list[dict]) -> dict:
    per_source = {}
    for name in sources:
        kept = {split: [r for r in rows if r["source"] == name] for split, rows in splits.items()}
        rows = kept["train"] + kept["test"]
        steps = [len(r.get("steps") or r["reference_steps"]) for r in rows]
        bad = [r for r in rejects if r["source"] == name]
        malformed = [r for r in bad if r["kind"] != "duplicate"]
        read = len(rows) + len(bad)
        per_source[name] = {
            "records": read, "kept": len(rows), "train": len(kept["train"]), "test": len(kept["test"]),
            "labeled": sum("labels" in r for r in rows),
            "steps_per_problem": {"min": min(steps, default=0), "mean": round(mean(steps), 3) if steps else 0.0,
                                  "max": max(steps, default=0)},
            "duplicates": len(bad) - len(malformed),
            "rejects": len(malformed),
            "reject_fraction": round(len(malformed) / read, 4) if read else 0.0,
            "rejects_by_reason": dict(Counter(_reason_key(r["reason"]) for r in malformed).most_common()),
        }
    return {"sources": per_source, "train_problems": len(splits["train"]), "test_problems": len(splits["test"]),
            "rejects": sum(r["kind"] != "duplicate" for r in rejects),
            "duplicates": sum(r["kind"] == "duplicate" for r in rejects)}


def build_splits(params: IngestParams, seed: int, incoming: Path | None = None) -> Ingested:
    """Read every source (and `incoming/<format>/` files), check, deduplicate and split."""
    extra, rejects = incoming_sources(incoming) if incoming is not None else ([], [])
    specs = [*params.sources, *extra]
    candidates: list[Candidate] = []
    for spec in specs:
        name = source_name(spec)
        records, bad = read_source(spec, seed, {"train": params.num_train, "test": params.num_test}, params)
        rejects += bad
        for record in records:
            row = with_ids(record.row, name)
            reason = check_problem(row)
            if reason:
                rejects.append(reject(record.file, record.line, name, reason,
                                      json.dumps(record.row, ensure_ascii=False), kind="unusable"))
            else:
                candidates.append(Candidate(name, record, row))

    split_of = problem_splits(candidates, params.test_fraction)
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    first_seen: dict[str, Candidate] = {}
    for c in candidates:
        earlier = first_seen.setdefault(c.row["id"], c)
        if earlier is not c:
            rejects.append(reject(c.record.file, c.record.line, c.source,
                                  f"duplicate of {c.row['id']} ({earlier.record.file}:{earlier.record.line})",
                                  json.dumps(c.record.row, ensure_ascii=False), kind="duplicate"))
            continue
        splits[split_of[c.row["problem_id"]]].append(c.row)
    names = list(dict.fromkeys([source_name(s) for s in specs] + [r["source"] for r in rejects]))
    return Ingested(splits, rejects, ingest_report(names, splits, rejects))


def reject_rate_problems(report: dict, rejects: list[dict], max_fraction: float) -> list[str]:
    """One line per source whose reject rate passes the threshold, with its first bad record."""
    problems = []
    for name, s in report["sources"].items():
        if s["reject_fraction"] > max_fraction:
            first = next(r for r in rejects if r["source"] == name and r["kind"] != "duplicate")
            problems.append(f"source {name!r}: {s['rejects']} of {s['records']} records rejected "
                            f"({s['reject_fraction']:.1%}), above ingest.max_reject_fraction {max_fraction}; "
                            f"first: {first['file']}:{first['line']}: {first['reason']}")
    return problems


def main(params: Params) -> None:
    from prmflow.jsonl import RecordError, write_json, write_jsonl
    from prmflow.tracking import stage_run

    data = Path(params.base.data_dir)
    out = data / "problems"
    result = build_splits(params.ingest, params.base.seed, data / "incoming")
    with stage_run(params.base, "ingest", params.ingest):
        import mlflow

        for split, rows in result.splits.items():
            write_jsonl(out / f"{split}.jsonl", rows)
        write_jsonl(out / "rejects.jsonl", result.rejects)
        write_json(Path(params.base.reports_dir) / "ingest.json", result.report)
        report = result.report
        mlflow.log_metrics({"train_problems": report["train_problems"], "test_problems": report["test_problems"],
                            "rejected_problems": report["rejects"], "duplicate_problems": report["duplicates"]})
        print(f"ingest: {report['train_problems']} train, {report['test_problems']} test, "
              f"{report['rejects']} rejected, {report['duplicates']} duplicates -> {out}")
        failures = reject_rate_problems(report, result.rejects, params.ingest.max_reject_fraction)
        if failures:
            raise RecordError(f"{out / 'rejects.jsonl'} holds every reject:\n  " + "\n  ".join(failures))
