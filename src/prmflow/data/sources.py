"""Problem sources: read the formats the field uses into one row shape, keeping every bad record.

A source is one `ingest.sources` entry (a mapping: `format`, and `path` or `hub`, optional
`split`, `limit`, `name`, `neutral`). Problem-only formats (`generator`, `gsm8k`, `math`) give
rows for rollouts: `problem, answer, reference_steps`. Pre-labeled formats (`prm800k`,
`math_shepherd`, `trl_stepwise`, `input_value_label`) also give `steps, labels, values`,
which the label stage passes through unchanged. Candidate solutions (`candidates`: a generator's own
samples, StrictPRMBench's pool layout) give `steps, predicted_answer, correct` without labels:
rows that the label stage labels (`label.method`).

Every record is read on its own: a bad one (bad JSON, not UTF-8, a missing field, empty
steps, labels of another length than steps) becomes a reject with its file, line and
reason; it never stops the source and is never dropped silently.

    records, rejects = read_source({"format": "gsm8k", "path": "train.jsonl", "split": "train"}, seed=0)
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prmflow.config import NEUTRAL_LABELS, IngestParams
from prmflow.data.answers import extract_boxed, normalize_answer
from prmflow.data.generator import generate_problems
from prmflow.data.step_text import MATH_SHEPHERD_TAG

FILE_SUFFIXES = (".jsonl", ".json")
_ANSWER_SENTENCE = re.compile(r"The answer is:?\s*(.+?)\s*$", re.IGNORECASE | re.DOTALL)
_ANSWER_HEADING = re.compile(r"^# Answer\s*\n(.+?)\s*$", re.MULTILINE | re.DOTALL)
# A chat template rendered without its special tokens ("system\n...\nuser\n<problem>\nassistant\n"), as some
# pools carry it at the head of a candidate's first step(s).
_ASSISTANT_TURN = re.compile(r"(?:^|\n)assistant(?:\n|$)")


class RecordProblem(ValueError):
    """Why one record is unusable; the message is `field: problem`."""


@dataclass(frozen=True)
class Record:
    """One accepted row with where it came from and the split its source asks for."""

    file: str
    line: int
    split: str
    row: dict


def normalize_text(text: str) -> str:
    """Text with case, whitespace, and punctuation folded away: near-exact duplicates become equal."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.findall(r"[^\W_]+", folded))


def content_id(*parts: str) -> str:
    """A stable id from normalized content: the same problem has the same id in every run and file."""
    return hashlib.sha1("\x1f".join(normalize_text(p) for p in parts).encode()).hexdigest()[:12]


def source_name(spec: dict) -> str:
    return spec.get("name") or spec["format"]


# -- fields ---------------------------------------------------------------------------------

def _field(raw: dict, key: str, kind: type, where: str = "") -> object:
    name = f"{where}{key}"
    if key not in raw or raw[key] is None:
        raise RecordProblem(f"{name}: missing required field")
    value = raw[key]
    if not isinstance(value, kind):
        raise RecordProblem(f"{name}: expected {kind.__name__}, got {type(value).__name__}")
    if kind is str and not value.strip():
        raise RecordProblem(f"{name}: empty")
    return value


def _steps(values: object, key: str) -> list[str]:
    if not isinstance(values, list) or not values:
        raise RecordProblem(f"{key}: empty steps")
    for i, step in enumerate(values):
        if not isinstance(step, str) or not step.strip():
            raise RecordProblem(f"{key}[{i}]: empty step")
    return [step.strip() for step in values]


def _plus_minus(value: object, where: str) -> str:
    if value in ("+", "-"):
        return value
    if isinstance(value, bool) or value in (0, 1):
        return "+" if value else "-"
    raise RecordProblem(f"{where}: {value!r} is not '+', '-', true, false, 1 or 0")


def _labeled(problem: str, steps: list[str], labels: list[str], labels_field: str, answer: str = "",
             predicted: str = "") -> dict:
    if len(labels) != len(steps):
        raise RecordProblem(f"{labels_field}: {len(labels)} labels for {len(steps)} steps")
    return {"problem": problem.strip(), "answer": answer, "reference_steps": [], "steps": steps, "labels": labels,
            "values": [1.0 if label == "+" else 0.0 for label in labels], "predicted_answer": predicted}


def _stated_answer(last_step: str) -> str:
    """The answer a solution states in its last step (`The answer is: 5`, PRM800K's `# Answer`), or ""."""
    match = _ANSWER_SENTENCE.search(last_step) or _ANSWER_HEADING.search(last_step)
    return normalize_answer(match.group(1)) if match else ""


# -- formats: one raw record -> one row -------------------------------------------------------

def parse_gsm8k(raw: dict, spec: dict) -> dict:
    """`question`; `answer` = reference steps on lines (calculator annotations), then `#### N`."""
    question, solution = _field(raw, "question", str), _field(raw, "answer", str)
    reasoning, marker, final = solution.rpartition("####")
    if not marker:
        raise RecordProblem("answer: no '#### N' final answer")
    steps = [line.strip() for line in reasoning.splitlines() if line.strip()]
    if not steps:
        raise RecordProblem("answer: empty steps before '####'")
    answer = normalize_answer(final)
    if not answer:
        raise RecordProblem("answer: empty final answer after '####'")
    return {"problem": question.strip(), "answer": answer, "reference_steps": steps}


def parse_math(raw: dict, spec: dict) -> dict:
    """`problem`; `solution` in LaTeX with the answer in its last `\\boxed{}`; `level`, `type` kept."""
    problem, solution = _field(raw, "problem", str), _field(raw, "solution", str)
    boxed = extract_boxed(solution)
    if boxed is None or not normalize_answer(boxed):
        raise RecordProblem("solution: no \\boxed{} answer")
    steps = [line.strip() for line in solution.splitlines() if line.strip()]
    metadata = {key: raw[key] for key in ("level", "type") if key in raw}
    return {"problem": problem.strip(), "answer": normalize_answer(boxed), "reference_steps": steps,
            "metadata": metadata}


def parse_prm800k(raw: dict, spec: dict) -> dict:
    """PRM800K phase 1/2: `question.problem`; per step the chosen completion's rating -1/0/+1.

    A step with no chosen completion ends the solution there (the labeler found an error or
    gave up): its first completion is the last step. A human-written completion is `+`.
    """
    question = _field(raw, "question", dict)
    problem = _field(question, "problem", str, "question.")
    raw_steps = _field(_field(raw, "label", dict), "steps", list, "label.")
    neutral = NEUTRAL_LABELS[spec.get("neutral", "positive")]
    steps, labels = [], []
    for i, step in enumerate(raw_steps):
        where = f"label.steps[{i}]"
        if not isinstance(step, dict):
            raise RecordProblem(f"{where}: expected an object")
        completions, chosen, human = step.get("completions") or [], step.get("chosen_completion"), \
            step.get("human_completion")
        if chosen is None and human:
            text, rating = human.get("text") if isinstance(human, dict) else human, 1
        else:
            index = 0 if chosen is None else chosen
            if not isinstance(index, int) or not 0 <= index < len(completions):
                raise RecordProblem(f"{where}.chosen_completion: {chosen!r} is not a completion index")
            text, rating = completions[index].get("text"), completions[index].get("rating")
            if rating not in (-1, 0, 1):
                raise RecordProblem(f"{where}.completions[{index}].rating: {rating!r} is not -1, 0 or 1")
        steps.append(text)
        labels.append({1: "+", -1: "-", 0: neutral}[rating])
        if chosen is None and not human:
            break
    answer = question.get("ground_truth_answer") or ""
    steps = _steps(steps, "label.steps")
    return _labeled(problem, steps, labels, "label.steps", normalize_answer(str(answer)), _stated_answer(steps[-1]))


def parse_math_shepherd(raw: dict, spec: dict) -> dict:
    """`input` = problem, then `Step k: ...` steps each ending in the tag `ки`; `label` = the same with `+`/`-`."""
    text, tagged = _field(raw, "input", str), _field(raw, "label", str)
    pieces = text.split(MATH_SHEPHERD_TAG)
    if len(pieces) < 2 or pieces[-1].strip():
        raise RecordProblem(f"input: steps must each end with the tag {MATH_SHEPHERD_TAG!r}")
    problem, marker, first = pieces[0].partition("Step 1:")
    if not marker:
        raise RecordProblem("input: no 'Step 1:' before the first step")
    labels, pos = [], 0
    for piece in pieces[:-1]:
        end = pos + len(piece)
        if tagged[pos:end] != piece or end >= len(tagged):
            raise RecordProblem("label: does not repeat input with +/- in place of the step tags")
        labels.append(_plus_minus(tagged[end], f"label: step {len(labels) + 1} tag"))
        pos = end + 1
    steps = _steps([re.sub(r"^\s*Step \d+:\s*", "", p) for p in [first, *pieces[1:-1]]], "input.steps")
    stated = _stated_answer(steps[-1])
    return _labeled(problem, steps, labels, "label", stated, stated)


def parse_trl_stepwise(raw: dict, spec: dict) -> dict:
    """TRL stepwise supervision: `prompt`, `completions` (steps), `labels` (booleans)."""
    prompt, completions, flags = _field(raw, "prompt", str), _field(raw, "completions", list), \
        _field(raw, "labels", list)
    steps = _steps(completions, "completions")
    labels = [_plus_minus(flag, f"labels[{i}]") for i, flag in enumerate(flags)]
    return _labeled(prompt, steps, labels, "labels", predicted=_stated_answer(steps[-1]))


def parse_input_value_label(raw: dict, spec: dict) -> dict:
    """`input` = problem, `value` = steps, `label` = one `+`/`-` per step."""
    problem, values, flags = _field(raw, "input", str), _field(raw, "value", list), _field(raw, "label", list)
    steps = _steps(values, "value")
    labels = [_plus_minus(flag, f"label[{i}]") for i, flag in enumerate(flags)]
    return _labeled(problem, steps, labels, "label", predicted=_stated_answer(steps[-1]))


def _without_chat_transcript(steps: list[str]) -> tuple[list[str], int, bool]:
    """The steps without a leading chat transcript (system and user turns up to `assistant\n`), how many whole
    steps it filled, and whether there was one. Per-step scores of the candidate drop as many leading entries."""
    if not steps[0].startswith("system\n"):
        return steps, 0, False
    for k, step in enumerate(steps):
        parts = _ASSISTANT_TURN.split(step, maxsplit=1)
        if len(parts) == 2:
            rest = [parts[1].strip()] if parts[1].strip() else []  # the assistant's text may start a new step
            if not rest and k + 1 == len(steps):
                raise RecordProblem("steps: a chat transcript and no solution steps after its assistant turn")
            return [*rest, *steps[k + 1:]], k + 1 - len(rest), True
    return steps, 0, False


def parse_candidates(raw: dict, spec: dict) -> dict:
    """A generator's sampled solution to label (StrictPRMBench's best-of-N pool layout).

    `problem`, `answer`, `steps` (the candidate's steps, in order), `predicted_answer` and `correct`
    (the source's answer extraction and grading); optional `id` (kept as the row id, which teacher
    step-score files are keyed by), `problem_id` (kept as `source_problem_id`), `candidate_index`
    and `generator`. Splits go by the problem text's id, so a problem's candidates share a split.
    A chat transcript rendered into the head of the steps ("system\n...user\n<problem>\nassistant\n", in
    44% of StrictPRMBench's QwQ-32B candidates) is cut off: `chat_transcript_removed`, and
    `leading_steps_dropped` whole steps it filled (their step scores are dropped too).
    """
    problem, steps = _field(raw, "problem", str), _steps(_field(raw, "steps", list), "steps")
    answer = raw.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
        raise RecordProblem(f"answer: expected a non-empty string or number, got {answer!r}")
    predicted, correct = raw.get("predicted_answer"), raw.get("correct")
    if not isinstance(predicted, str):
        raise RecordProblem(f"predicted_answer: expected a string (\"\" when none was found), got {predicted!r}")
    if not isinstance(correct, bool):
        raise RecordProblem(f"correct: expected true or false, got {correct!r}")
    steps, dropped, removed = _without_chat_transcript(steps)
    row = {"problem": problem.strip(), "answer": str(answer).strip(), "reference_steps": [], "steps": steps,
           "predicted_answer": predicted.strip(), "correct": correct, "chat_transcript_removed": removed,
           "leading_steps_dropped": dropped}
    if "id" in raw:
        row["id"] = str(_field(raw, "id", str)).strip()
    optional = {"problem_id": ("source_problem_id", str), "candidate_index": ("candidate_index", int),
                "generator": ("generator", str)}
    for key, (name, kind) in optional.items():
        if raw.get(key) is not None:
            row[name] = _field(raw, key, kind)
    return row


PARSERS: dict[str, Callable[[dict, dict], dict]] = {
    "gsm8k": parse_gsm8k, "math": parse_math, "prm800k": parse_prm800k, "math_shepherd": parse_math_shepherd,
    "trl_stepwise": parse_trl_stepwise, "input_value_label": parse_input_value_label, "candidates": parse_candidates,
}


# -- raw records: files, folders, hub datasets --------------------------------------------------

@dataclass(frozen=True)
class RawRecord:
    file: str
    line: int
    value: object  # the parsed JSON value; None when `error` says why there is none
    text: str  # the line as read (undecodable bytes replaced), kept in rejects
    error: str | None = None


def _records_of_file(path: Path) -> Iterator[RawRecord]:
    if path.suffix.lower() == ".json":  # one object per file (MATH) or a list of objects
        data = path.read_bytes()
        try:
            value = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            yield RawRecord(str(path), 1, None, data.decode("utf-8", "replace"), f"not valid JSON: {err}")
            return
        for index, item in enumerate(value if isinstance(value, list) else [value], start=1):
            yield RawRecord(str(path), index, item, json.dumps(item, ensure_ascii=False))
        return
    with path.open("rb") as handle:
        for lineno, data in enumerate(handle, start=1):
            text = data.decode("utf-8", "replace").rstrip("\r\n")
            if not text.strip():
                continue
            try:
                yield RawRecord(str(path), lineno, json.loads(data.decode("utf-8")), text)
            except UnicodeDecodeError as err:
                yield RawRecord(str(path), lineno, None, text, f"not UTF-8: byte {err.start}")
            except json.JSONDecodeError as err:
                yield RawRecord(str(path), lineno, None, text, f"not valid JSON: {err.msg} (char {err.pos + 1})")


def local_files(path: Path) -> list[Path]:
    """A file, or every file under a folder but hidden ones (.gitkeep, .dvc), in a stable order."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file()
                      and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not path.exists():
        raise FileNotFoundError(f"ingest source {path}: no such file or folder")
    return [path]


def _hub_records(name: str, split: str) -> Iterator[RawRecord]:
    from datasets import (
        load_dataset,  # only for `hub:` sources; needs the network or a warm cache
    )

    for index, row in enumerate(load_dataset(name, split="train" if split == "auto" else split), start=1):
        yield RawRecord(f"hub:{name}", index, row, json.dumps(row, ensure_ascii=False, default=str))


def raw_records(spec: dict) -> Iterator[RawRecord]:
    if "hub" in spec:
        yield from _hub_records(spec["hub"], spec.get("split", "auto"))
        return
    for path in local_files(Path(spec["path"])):
        if path != Path(spec["path"]) and path.suffix.lower() not in FILE_SUFFIXES:  # a named file is read as given
            yield RawRecord(str(path), 0, None, "", f"not a {' or '.join(FILE_SUFFIXES)} file (any case): a "
                            f"source folder holds JSON lines or JSON files only")
            continue
        yield from _records_of_file(path)


# -- one source ----------------------------------------------------------------------------------

def reject(file: str, line: int, source: str, reason: str, text: str, kind: str = "malformed") -> dict:
    return {"file": file, "line": line, "source": source, "kind": kind, "reason": reason, "text": text}


def _generated(seed: int, counts: dict[str, int], settings: IngestParams | None) -> list[Record]:
    """The bundled generator: the first `train` problems of one seeded stream are train, the rest test."""
    total = counts["train"] + counts["test"]
    rows = generate_problems(total, seed, settings)
    return [Record("generator", index + 1, "train" if index < counts["train"] else "test", row)
            for index, row in enumerate(rows)]


def read_source(spec: dict, seed: int, counts: dict[str, int] | None = None,
                settings: IngestParams | None = None) -> tuple[list[Record], list[dict]]:
    """Accepted records and rejects of one source; `limit` caps the records read (bad ones included). The
    generator reads its difficulty knobs from `settings` (default: the `ingest` section's defaults)."""
    name = source_name(spec)
    if spec["format"] == "generator":
        return _generated(seed, counts or {"train": 0, "test": 0}, settings), []
    parse, split, limit = PARSERS[spec["format"]], spec.get("split", "auto"), spec.get("limit")
    records, rejects = [], []
    for count, raw in enumerate(raw_records(spec), start=1):
        if limit is not None and count > limit:
            break
        if raw.error:
            rejects.append(reject(raw.file, raw.line, name, raw.error, raw.text))
            continue
        try:
            if not isinstance(raw.value, dict):
                raise RecordProblem(f"expected a JSON object, got {type(raw.value).__name__}")
            records.append(Record(raw.file, raw.line, split, parse(raw.value, spec)))
        except RecordProblem as err:
            rejects.append(reject(raw.file, raw.line, name, str(err), raw.text))
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as err:  # a shape no check foresaw
            rejects.append(reject(raw.file, raw.line, name, f"unexpected structure: {type(err).__name__}: {err}",
                                  raw.text))
    return records, rejects


def incoming_sources(folder: Path) -> tuple[list[dict], list[dict]]:
    """Files dropped into `incoming/<format>/` are sources of that format, split by problem id.

    A file anywhere else under the folder cannot be read (its format is unknown): it is a reject.
    """
    if not folder.is_dir():
        return [], []
    sources, rejects = [], []
    for sub in sorted(folder.iterdir()):
        if sub.is_dir() and sub.name in PARSERS:
            sources.append({"format": sub.name, "path": str(sub), "name": f"incoming/{sub.name}"})
            continue
        for path in sorted(f for f in sub.rglob("*") if f.is_file()) if sub.is_dir() else [sub]:
            if path.name.startswith("."):  # .gitkeep and the like
                continue
            rejects.append(reject(str(path), 0, "incoming", f"not under a format folder ({', '.join(PARSERS)})",
                                  ""))
    return sources, rejects
