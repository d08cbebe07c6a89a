"""The scoring forward with and without an attention mask, on right-padded batches of held-out solutions.

    OMP_NUM_THREADS=1 .venv/bin/python bench/scoring_forward.py                     # models/prm, 1 thread
    OMP_NUM_THREADS=1 .venv/bin/python bench/scoring_forward.py --model-dir DIR --batch 16

StepTagScorer.read runs the forward without a mask (a causal LM's positions never attend to the right
padding after them); this measures what that saves over the masked forward, per batch of `--batch` solutions
of similar length (the scoring loop's batches, batcher.py), and the largest difference in P(+) between the two.
Writes bench/results/scoring_forward.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from prmflow.devices import Placement  # noqa: E402
from prmflow.jsonl import read_jsonl  # noqa: E402
from prmflow.scoring.load import load  # noqa: E402
from prmflow.scoring.modeling import label_logits, p_positive, pad_batch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(ROOT / "models" / "prm"))
    parser.add_argument("--rollouts", default=str(ROOT / "data" / "rollouts" / "test.jsonl"))
    parser.add_argument("--solutions", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scoring_forward.json"))
    args = parser.parse_args()
    prm = load(args.model_dir, placement=Placement("cpu", "float32")).scorer  # its StepTagScorer: the kernel timed
    rows = read_jsonl(args.rollouts, required=("problem", "steps"))[: args.solutions]
    jobs = sorted(prm.jobs(prm.encode([(r["problem"], r["steps"]) for r in rows])), key=lambda j: len(j.input_ids))
    labels = [prm.format.positive_id, prm.format.negative_id]
    seconds = {"masked": [], "mask_free": []}
    largest_difference = 0.0
    with torch.no_grad():
        for start in range(0, len(jobs), args.batch):
            batch = jobs[start: start + args.batch]
            ids, attention = pad_batch([job.input_ids for job in batch], prm.pad_id)
            at = (torch.tensor([r for r, job in enumerate(batch) for _ in job.positions]),
                  torch.tensor([p for job in batch for p in job.positions]))
            scores = {}
            for name, mask in (("masked", attention), ("mask_free", None)):
                scores[name] = p_positive(label_logits(prm.model, ids, mask, at, labels)[0])  # warm-up
                times = []
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    label_logits(prm.model, ids, mask, at, labels)
                    times.append(time.perf_counter() - started)
                seconds[name].append(statistics.median(times))
            largest_difference = max(largest_difference, (scores["masked"] - scores["mask_free"]).abs().max().item())
    masked, free = sum(seconds["masked"]), sum(seconds["mask_free"])
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "date": time.strftime("%Y-%m-%d"),
              "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads(),
                          "torch": torch.__version__},
              "model_dir": args.model_dir, "solutions": len(jobs), "batch": args.batch,
              "masked_ms_per_solution": 1000 * masked / len(jobs), "mask_free_ms_per_solution": 1000 * free / len(jobs),
              "saved_share": 1 - free / masked, "max_abs_difference_p_plus": largest_difference}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
