"""Wall time of each stage of the default `dvc repro`, and of a no-op `dvc repro`.

    .venv/bin/python bench/pipeline_stages.py        # writes bench/results/pipeline_stages.json

Copies dvc.yaml, params.yaml (the defaults, unchanged) and src/ into a temporary project,
`git init` + `dvc init` there (never in this checkout), then runs `dvc repro --single-item STAGE`
for each stage in dvc.yaml order and times it, then a plain `dvc repro` that finds nothing to do.
Each time includes dvc's own work for that stage (hashing deps, caching outs, writing dvc.lock).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tool_env(project: Path) -> dict[str, str]:
    quiet = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1"}
    return {**os.environ, **quiet, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PREFECT_HOME": str(project / ".prefect"), "MLFLOW_TRACKING_URI": "sqlite:///mlflow/mlflow.db"}


def timed(cmd: list[str], project: Path) -> float:
    """Seconds `cmd` took in `project`. Its stderr (the stages' progress bars, errors) reaches this terminal as
    it runs, so a long stage is not silent; its stdout is kept for the failure message."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=project, env=tool_env(project), stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {project} (exit {proc.returncode}; stderr above):\n{proc.stdout}")
    return seconds


def make_project(root: Path) -> None:
    """The default project: this checkout's dvc.yaml, params.yaml and sources, a fresh git + dvc repo."""
    shutil.copy(ROOT / "dvc.yaml", root)
    shutil.copy(ROOT / "params.yaml", root)
    shutil.copytree(ROOT / "src" / "prmflow", root / "src" / "prmflow", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data" / "incoming").mkdir(parents=True)  # the ingest stage's drop folder, a dvc.yaml dep
    (root / "data" / "incoming" / ".gitkeep").touch()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        timed(cmd, root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pipeline_stages.json")
    args = parser.parse_args()
    stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    with tempfile.TemporaryDirectory(prefix="prmflow-bench-") as tmp:
        project = Path(tmp)
        make_project(project)
        times = {}
        for stage in stages:
            times[stage] = timed(["dvc", "repro", "--single-item", stage], project)
            print(f"{stage:>10}: {times[stage]:7.1f} s", flush=True)
        noop = timed(["dvc", "repro"], project)
    total = sum(times.values())
    print(f"{'total':>10}: {total:7.1f} s\n{'no-op':>10}: {noop:7.1f} s")
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "stages_seconds": times,
        "stages_share": {stage: seconds / total for stage, seconds in times.items()},
        "total_seconds": total,
        "noop_repro_seconds": noop,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
