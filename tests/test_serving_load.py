"""Scoring under load: many clients at once against a real `mlflow models serve`, hostile requests mixed in, every
answer compared with the candidate's solo score; and in process, randomised batch-mates from many threads.

The served PRM keeps one model for all requests; these tests fail on a scoring path that keeps per-request state
on it (a forward hook caught other threads' hidden states: requests got each other's scores) and on a step tag in
a problem shifting its batch-mates' tags.
"""

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from prmflow.serving.batcher import default_threads, pick_batch
from load_check import candidate_pool, mismatch, mlflow_door, run_mix, solo_answers
from model_server import model_server
from tiny_models import build_tiny_prm, log_version, server_env, sharpen_label_rows, tracking_store

LIMITS = {"max_solutions_per_request": 64, "max_steps_per_request": 310, "max_request_bytes": 150_000}


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory):
    # Sharpened label rows spread the scores over (0, 1): another candidate's scores never pass for these.
    return sharpen_label_rows(build_tiny_prm(tmp_path_factory.mktemp("load") / "prm", seed=0), factor=20.0)


@pytest.fixture(scope="module")
def pool(labeled_rows):
    # Candidates with nothing to score: answered with a `reason`, their batch-mates scored as usual.
    unscorable = [{"problem": labeled_rows[0]["problem"], "text": "Step 1:\nStep 2:"},
                  {"problem": " ", "steps": labeled_rows[0]["steps"]}]
    return unscorable + candidate_pool(labeled_rows, LIMITS["max_request_bytes"])


def test_pick_batch_takes_the_oldest_and_its_nearest_lengths_within_the_token_budget():
    assert pick_batch([5, 100, 6, 7], oldest=0, budget=24) == [0, 2, 3]
    assert pick_batch([5, 100, 6, 7], oldest=1, budget=24) == [1]  # longer than the budget: alone
    assert pick_batch([5, 100, 6, 7], oldest=1, budget=400) == [0, 2, 3, 1]  # 4 rows x 100 tokens
    assert pick_batch([10, 10, 10, 10], oldest=2, budget=30) == [0, 1, 2]  # 3 rows x 10 tokens
    assert pick_batch([50, 8, 9, 10, 60], oldest=3, budget=40) == [1, 2, 3]  # 3 x 10: with 50, 4 x 50 = 200


def test_the_scoring_loop_runs_one_forward_per_cpu_core_by_default_and_one_on_an_accelerator():
    import os

    assert default_threads("cpu") == len(os.sched_getaffinity(0))
    assert default_threads("cuda:0") == 1 and default_threads("mps") == 1


def test_concurrent_clients_with_hostile_requests_get_their_solo_answers(prm_dir, pool, tmp_path):
    with tracking_store(tmp_path) as uri:
        version = log_version(prm_dir, **LIMITS)
        with model_server(f"models:/prm/{version}", server_env(uri), tmp_path, tmp_path / "serve.log") as url:
            door = mlflow_door(url, LIMITS["max_request_bytes"])
            solo = solo_answers(door, pool)
            report = run_mix(door, pool, solo, clients=16, requests=480, hostile_share=0.25, seed=0)
    tagged_problem, tagged_step, surrogate, huge, loop = solo[-5:]
    assert tagged_problem["neutralised"] == ["problem"] and tagged_step["neutralised"] == ["steps[0]"]
    assert tagged_problem["step_scores"] and tagged_step["step_scores"]
    assert surrogate["reason"].startswith("steps[1]: not valid Unicode text") and surrogate["score"] is None
    assert huge["truncated_steps"] == [1] and loop["dropped_steps"] > 0
    assert [p["reason"] for p in solo[:2]] == ["text: holds no step once its `Step k:` markers are taken out",
                                               "problem: must be a non-empty string"]
    assert (report["wrong"], report["server_errors"], report["bad_4xx"], report["hostile_accepted"]) == (0, 0, 0, 0), \
        report["examples"]
    assert report["valid"] > 300 and report["hostile"] > 80 and report["skipped_past_time_limit"] == 0


def test_a_candidates_scores_do_not_depend_on_its_batch_mates_or_other_threads(prm_dir, pool):
    """Randomised batches of the pool from 8 threads at once through one Scorer (one scoring loop, two forwards
    at once)."""
    from prmflow.devices import Placement
    from prmflow.scoring.modeling import StepTagScorer
    from prmflow.serving.scorer import Scorer, ServingConfig, Solution

    scorer = Scorer(StepTagScorer(prm_dir, Placement("cpu", "float32")),
                    ServingConfig.from_model_config({"batch_tokens": 2048, "scoring_threads": 2}))
    solo = [scorer.score([Solution(**candidate)])[0].model_dump() for candidate in pool]
    forwards_alone = scorer.loop.forwards
    rng = random.Random(0)
    batches = [rng.sample(range(len(pool)), rng.randint(1, 12)) for _ in range(60)]
    with ThreadPoolExecutor(8) as executor:
        answers = list(executor.map(lambda b: scorer.score([Solution(**pool[i]) for i in b]), batches))
    for batch, predictions in zip(batches, answers):
        for index, prediction in zip(batch, predictions):
            assert mismatch(prediction.model_dump(), solo[index], 1e-5) is None, (batch, index)
    # Requests in flight together share forwards: fewer forwards than requests, though each has its own candidates.
    assert scorer.loop.forwards - forwards_alone < len(batches)
