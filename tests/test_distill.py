"""`make distill` (bench/distill.py) end to end on real QwQ-32B candidates and the teacher's cached step scores
(../shared/data/strictprm), with a tiny 2-layer base in place of SmolLM2: split by problem, teacher soft labels,
frozen-prefix training with the ranking term, held-out figures, registration as prm-distill@champion. The
figures it reports are recomputed here from the scores it wrote, and the registered model scores as they say."""

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest
import yaml

from conftest import REPO
from tiny_models import build_tiny_prm

STRICTPRM = REPO.parent / "shared" / "data" / "strictprm"
pytestmark = pytest.mark.skipif(not STRICTPRM.is_dir(), reason="../shared/data/strictprm is not beside this checkout")


def within_problem_auroc(lines: list[dict]) -> float:
    """Mean over problems with right and wrong candidates of P(a right one's min step score > a wrong one's)."""
    by_problem = defaultdict(list)
    for line in lines:
        by_problem[line["problem_id"]].append((line["correct"], min(line["student"])))
    per_problem = []
    for candidates in by_problem.values():
        right = [s for c, s in candidates if c]
        wrong = [s for c, s in candidates if not c]
        per_problem.append(sum((r > w) + 0.5 * (r == w) for r in right for w in wrong) / (len(right) * len(wrong)))
    return sum(per_problem) / len(per_problem)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    base = build_tiny_prm(root / "base", seed=3, max_length=16384, hidden_size=32, num_layers=2)
    spec = yaml.safe_load((REPO / "profiles" / "distill.yaml").read_text())
    spec["student"] |= {"base_model": str(base), "gguf_file": None, "keep_layers": 2, "frozen_layers": 1,
                        "max_length": 16384}
    spec["train"] |= {"candidates_per_problem": 2, "batch_size": 4}
    spec["evaluate"] |= {"bootstrap_samples": 50, "held_out_problems": 12}
    spec["register"]["tracking_uri"] = f"sqlite:///{root}/mlflow.db"
    profile = root / "distill.yaml"
    profile.write_text(yaml.safe_dump(spec))
    out = root / "distill.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "distill.py"), "--profile", str(profile),
                           "--train-problems", "3", "--model-dir", str(root / "student"), "--out", str(out)],
                          cwd=root, capture_output=True, text=True, timeout=1200,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    scores = [json.loads(line) for line in out.with_suffix(".scores.jsonl").read_text().splitlines()]
    return {"root": root, "report": json.loads(out.read_text()), "scores": scores}


def test_the_reported_figures_are_those_of_the_scores_written(distilled):
    report, scores = distilled["report"], distilled["scores"]
    assert report["train_candidates"] == 2 * 3 * 2  # 2 candidates of 3 mixed train problems, in each of 2 pools
    assert report["train"]["pair_loss"] is not None and report["train"]["layers"] == 2
    for pool in ("gsm8k", "math500"):
        lines = [line for line in scores if line["pool"] == pool]
        held_out = report["held_out"][pool]
        assert held_out["scored_candidates"] == len(lines) > 0
        assert held_out["student"]["mixed_problems"] == len({line["problem_id"] for line in lines})
        assert held_out["student"]["within_problem_auroc_min"]["value"] == pytest.approx(within_problem_auroc(lines))
        assert held_out["teacher"]["mixed_problems"] == held_out["student"]["mixed_problems"]
        figure = held_out["student"]["within_problem_auroc_min"]
        assert figure["ci_low"] <= figure["value"] <= figure["ci_high"]


def test_the_champion_it_registers_scores_what_it_measured(distilled, monkeypatch):
    import prmflow
    from prmflow.data.sources import parse_candidates

    registered = distilled["report"]["registered"]
    assert registered["model_uri"] == "models:/prm-distill@champion" and registered["promoted"]
    import mlflow

    uri, previous = f"sqlite:///{distilled['root']}/mlflow.db", mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # an earlier test in this process may have set another one
    try:
        champion = prmflow.load(registered["model_uri"])
    finally:
        mlflow.set_tracking_uri(previous)
    wanted = {line["id"]: line for line in distilled["scores"][:3]}
    candidates = {}
    for pool in ("gsm8k", "math500"):
        for raw in map(json.loads, (STRICTPRM / f"{pool}_bon16_dev.jsonl").open()):
            if raw["id"] in wanted:
                candidates[raw["id"]] = parse_candidates(raw, {})
    predictions = champion.score([(candidates[i]["problem"], candidates[i]["steps"]) for i in wanted])
    for (row_id, line), prediction in zip(wanted.items(), predictions):
        assert prediction.step_scores == pytest.approx(line["student"], abs=1e-5)
