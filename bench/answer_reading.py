"""How final answers read by prmflow (strict: markers; flexible: also a concluding sentence) agree with a source's
own grading of real generator candidates (QwQ-32B's GSM8K and MATH-500 best-of-16 pools).

    OMP_NUM_THREADS=1 .venv/bin/python bench/answer_reading.py [DATA_DIR] [--out bench/results/answer_reading.json]

DATA_DIR (default ../shared/data/strictprm beside the repository) holds gsm8k_bon16_dev.jsonl and
math500_bon16_dev.jsonl ({steps, answer, predicted_answer, correct}). For each file, reading and half
(`development`: problem numbers 1, 5, 9, ... on which the rules were written; `held_out`: 3, 7, 11, ...,
not looked at while writing them; `all`) it reports data.answers.reading_agreement: GSM8K's share of the
candidates graded right that are read and judged right (target >= 0.97), the share of those graded wrong
judged right (target <= 0.005; raw and net of the source's own extraction slips), and MATH-500's share whose
answer read equals the source's `predicted_answer` (target >= 0.95). Writes a new file only: an existing
--out is refused unless --overwrite is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from prmflow.data.answers import reading_agreement  # noqa: E402
from prmflow.jsonl import read_jsonl  # noqa: E402
from prmflow.param_rules import ANSWER_READINGS  # noqa: E402

FILES = {"gsm8k": "gsm8k_bon16_dev.jsonl", "math500": "math500_bon16_dev.jsonl"}


def half(problem_id: str) -> str:
    """`development` or `held_out`: the pools hold odd problem numbers; every other one is held out."""
    number = int(re.findall(r"\d+", problem_id)[-1])
    return "development" if number // 2 % 2 == 0 else "held_out"


def measure(data_dir: Path) -> dict:
    results = {}
    for name, file in FILES.items():
        rows = read_jsonl(data_dir / file)
        halves = {"development": [r for r in rows if half(r["problem_id"]) == "development"],
                  "held_out": [r for r in rows if half(r["problem_id"]) == "held_out"], "all": rows}
        results[name] = {reading: {part: reading_agreement(subset, reading) for part, subset in halves.items()}
                         for reading in ANSWER_READINGS}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", type=Path, default=ROOT.parent / "shared" / "data" / "strictprm")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "answer_reading.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args()
    missing = [str(args.data_dir / f) for f in FILES.values() if not (args.data_dir / f).exists()]
    if missing:
        sys.exit(f"answer_reading: no candidates at {', '.join(missing)} (pass the directory holding them)")
    if args.out.exists() and not args.overwrite:
        sys.exit(f"answer_reading: {args.out} exists; pass --overwrite to replace it, or another --out")
    start = time.perf_counter()
    results = measure(args.data_dir)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "python": platform.python_version()},
              "command": " ".join(["python", *sys.argv]), "data_dir": str(args.data_dir),
              "seconds": round(time.perf_counter() - start, 1), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, by_reading in results.items():
        for reading, parts in by_reading.items():
            for part, m in parts.items():
                print(f"{name:8} {reading:8} {part:11} right_read_right {m['right_read_right']:.4f}  wrong_read_right "
                      f"{m['wrong_read_right']:.4f} (net {m['wrong_read_right_net']:.4f})  agrees_with_source "
                      f"{m['agrees_with_source']:.4f}  rows {m['rows']}")


if __name__ == "__main__":
    main()
