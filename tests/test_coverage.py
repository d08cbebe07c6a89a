"""Truncation counted in the reports: how many steps and solutions a scorer scored, cut or dropped, and the
warning past `evaluate.max_unscored_step_fraction` that names the model's context."""

import json

import pytest

from conftest import REPO
from prmflow.evaluation.metrics import coverage_warning, step_coverage
from tiny_models import build_tiny_prm

STRICTPRM = REPO.parent / "shared" / "data" / "strictprm"
needs_strictprm = pytest.mark.skipif(not STRICTPRM.is_dir(), reason="../shared/data/strictprm is not beside this "
                                                                    "checkout")


def test_counts_of_scored_dropped_and_unscored_solutions():
    coverage = step_coverage([3, 4, 2, 5], [[0.9, 0.8, 0.1], [0.5], [], [0.2, 0.3, 0.4, 0.5, 0.6]], cut=[0, 1, 0, 0])
    assert coverage == {"steps": 14, "scored_steps": 9, "dropped_steps": 5, "unscored_step_fraction": 5 / 14,
                        "solutions_with_dropped_steps": 1, "unscored_solutions": 1, "cut_steps": 1}
    warning = coverage_warning("evaluate.external qwq", coverage, 0.05, "512 tokens (model.max_length)")
    assert warning.startswith("WARNING evaluate.external qwq: 36% of 14 steps not scored")
    assert "context of 512 tokens (model.max_length)" in warning and "max_unscored_step_fraction 0.05" in warning
    assert coverage_warning("x", coverage, 0.5, "512 tokens") is None
    assert step_coverage([], [])["unscored_step_fraction"] == 0.0


@needs_strictprm
def test_real_qwq_candidates_at_a_short_context_are_counted_as_the_scorer_encodes_them(tmp_path):
    from prmflow.scoring.modeling import StepTagScorer

    rows = [json.loads(line) for line in (STRICTPRM / "gsm8k_bon16_dev.jsonl").read_text().splitlines()[:24]]
    prm = StepTagScorer(build_tiny_prm(tmp_path / "prm", seed=0, max_length=192))
    solutions = [(r["problem"], r["steps"]) for r in rows]
    encoded = prm.encode(solutions)
    coverage = step_coverage([len(r["steps"]) for r in rows], prm.score_batch(solutions, 8),
                             [len(e.truncated_steps) for e in encoded])
    assert coverage["dropped_steps"] == sum(e.dropped_steps for e in encoded) > 0  # QwQ writes long steps
    assert coverage["scored_steps"] + coverage["dropped_steps"] == sum(len(r["steps"]) for r in rows)
    assert coverage["cut_steps"] == sum(len(e.truncated_steps) for e in encoded)
    assert coverage["solutions_with_dropped_steps"] + coverage["unscored_solutions"] == \
        sum(e.dropped_steps > 0 for e in encoded)
    assert coverage_warning("held-out rollouts", coverage, 0.05, "192 tokens") is not None


def score_file(path, model, capsys) -> tuple[list[dict], str]:
    from prmflow.cli import main as cli

    cli(["score", str(path), "--model", str(model), "--threshold", "0.5", "--params", str(path.parent / "none")])
    out, err = capsys.readouterr()
    return [json.loads(line) for line in out.splitlines()], err


def test_prmflow_score_ends_with_what_it_scored_cut_and_dropped(tmp_path, capsys):
    prm = build_tiny_prm(tmp_path / "prm", seed=0, max_length=64)
    rows = [{"id": "short", "problem": "Ava has 3 apples.", "steps": ["3 + 2 = 5"]},
            {"id": "long", "problem": "Ava has 3 apples.", "steps": [f"Ava has {i} + 2 = {i + 2} apples." for i in range(12)]}]
    path = tmp_path / "solutions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    predictions, err = score_file(path, prm, capsys)
    scored = sum(len(p["step_scores"]) for p in predictions)
    dropped = predictions[1]["dropped_steps"]
    assert 0 < scored < 13 and dropped == 13 - scored and predictions[0]["dropped_steps"] == 0
    assert (f"prmflow score: 2 solutions, {scored} of 13 steps scored (0 cut inside, {dropped} dropped beyond the "
            f"context of 64 tokens); 1 solutions lost steps, 0 not scored") in err
    assert f"WARNING {dropped / 13:.0%} of the steps were not scored" in err


@needs_strictprm
def test_prmflow_score_counts_real_qwq_candidates(tmp_path, capsys):
    lines = (STRICTPRM / "math500_bon16_dev.jsonl").read_text().splitlines()[:16]
    path = tmp_path / "qwq.jsonl"
    path.write_text("".join(json.dumps({k: json.loads(line)[k] for k in ("id", "problem", "steps")}) + "\n"
                            for line in lines))
    predictions, err = score_file(path, build_tiny_prm(tmp_path / "prm", seed=0, max_length=192), capsys)
    steps = sum(len(json.loads(line)["steps"]) for line in lines)
    scored = sum(len(p["step_scores"]) for p in predictions)
    cut = sum(len(p["truncated_steps"]) for p in predictions)
    dropped = sum(p["dropped_steps"] for p in predictions)
    assert dropped > 0 and scored + dropped == steps
    assert f"16 solutions, {scored} of {steps} steps scored ({cut} cut inside, {dropped} dropped" in err


@needs_strictprm
def test_the_real_candidates_profile_s_validation_limits_fit_every_qwq_candidate():
    import yaml

    spec = yaml.safe_load((REPO / "profiles" / "real-candidates.yaml").read_text())["params"]
    for pool in ("gsm8k_bon16_dev", "math500_bon16_dev"):
        rows = [json.loads(line) for line in (STRICTPRM / f"{pool}.jsonl").read_text().splitlines()]
        assert max(len(r["steps"]) for r in rows) <= spec["validate"]["max_steps"], pool
        assert max(len(s) for r in rows for s in r["steps"]) <= spec["validate"]["max_step_chars"], pool
    assert spec["model"]["max_length"] > 512
