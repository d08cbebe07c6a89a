"""The simulated policy's labeling time in one process and on 1 and 2 local Ray workers.

    .venv/bin/python bench/labeling_ray.py                  # 2000 generator problems, mc 4 x 8 (~3 minutes)
    .venv/bin/python bench/labeling_ray.py --problems 500

The same problems (the default generator, params.yaml's ingest settings but `--problems` train
problems) are labeled by `label_split` with params.yaml's `label` section, `workers` 1 (in process,
no Ray), then 1 and 2 Ray workers (`ray.init(num_cpus=2)` once, outside the timing; workers are
started inside it). The outputs are checked equal. On 2 cores shared with other developers' work:
a second worker can give at most 2x. Writes bench/results/labeling_ray.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray

    from prmflow.config import load_params
    from prmflow.data.ingest import build_splits
    from prmflow.labeling.label import label_split

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=64)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    problems = build_splits(dataclasses.replace(params.ingest, num_train=args.problems, num_test=1),
                            seed=params.base.seed).splits["train"]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs, outputs = [], {}
    for name, workers in (("in process", 1), ("ray, 1 worker", 1), ("ray, 2 workers", 2)):
        label = dataclasses.replace(params.label, workers=workers, chunk_problems=args.chunk)
        if name.startswith("ray") and workers == 1:
            # workers 1 labels in process; a Ray run with one worker is the Ray path itself, called directly.
            from prmflow.labeling.distributed import label_on_ray

            start = time.perf_counter()
            done = {r.problem_id: r for r in label_on_ray(problems, label, params.base.seed)}
            results = [done[p["id"]] for p in problems]
        else:
            start = time.perf_counter()
            results = label_split(problems, label, params.base.seed)
        wall = time.perf_counter() - start
        calls = sum(r.policy_calls for r in results)
        outputs[name] = [r.rows for r in results]
        runs.append({"run": name, "workers": workers, "wall_s": wall, "problems_per_s": len(problems) / wall,
                     "completions": calls, "completions_per_s": calls / wall, "loadavg_after": os.getloadavg()})
        print(json.dumps(runs[-1]), flush=True)
    ray.shutdown()
    assert all(rows == outputs["in process"] for rows in outputs.values()), "outputs differ"
    result = {"problems": len(problems), "label": {k: v for k, v in dataclasses.asdict(params.label).items()
                                                   if k in ("method", "trajectories_per_problem",
                                                            "completions_per_step")},
              "chunk_problems": args.chunk, "runs": runs, "outputs_equal": True,
              "speedup_2_workers_vs_in_process": runs[0]["wall_s"] / runs[2]["wall_s"],
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                          "ray": ray.__version__, "note": "2 cores shared with other developers' work"}}
    out = ROOT / "bench" / "results" / "labeling_ray.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
