"""The trained outcome reward model (ORM): its targets, a tiny real training run, the train_orm stage, loading."""

import json
from pathlib import Path

import pytest

from prmflow.config import BaseParams, ModelParams, Params, TrainOrmParams, TrainParams
from tiny_models import assert_trained, train_tiny_model


def test_outcome_targets_put_the_final_correctness_at_every_tag():
    from prmflow.training.train import TARGETS, StepTagCollator, outcome_targets

    right = {"input_ids": [5, 9, 1, 7, 1], "hard_targets": [1.0, 0.0], "soft_targets": [1.0, 0.25], "correct": True}
    wrong = {"input_ids": [5, 8, 1, 6, 1, 4, 1], "hard_targets": [1.0, 1.0, 0.0], "soft_targets": [1.0, 0.5, 0.0],
             "correct": False}
    assert outcome_targets(right) == [1.0, 1.0]  # a `-` step in a solution that still ends right: target 1
    assert outcome_targets(wrong) == [0.0, 0.0, 0.0]  # `+` steps of a wrong solution: target 0
    batch = StepTagCollator(pad_id=0, targets=TARGETS["outcome"])([right, wrong])
    assert batch["step_targets"].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]  # (solution, step) order, as the tags
    assert batch["input_ids"].tolist() == [[5, 9, 1, 7, 1, 0, 0], [5, 8, 1, 6, 1, 4, 1]]
    assert StepTagCollator(0, TARGETS["soft"])([right])["step_targets"].tolist() == [1.0, 0.25]


@pytest.fixture(scope="module")
def trained_orm(labeled_rows, tmp_path_factory):
    from prmflow.scoring.reward_config import write_outcome_config

    run = train_tiny_model(labeled_rows, tmp_path_factory.mktemp("orm"), target="outcome")
    write_outcome_config(run["dir"])
    return run


def test_orm_training_changes_parameters_and_lowers_the_loss(trained_orm):
    assert {r["correct"] for r in trained_orm["rows"]} == {True, False}  # tokenize carries every outcome
    assert_trained(trained_orm)


def test_trained_orm_loads_by_mode_and_scores_the_last_tag(trained_orm, labeled_rows, tmp_path):
    from prmflow.scoring.rewards import (
        CombinedRewardModel, OutcomeRewardModel, ProcessRewardModel, TrainedOutcomeRewardModel, load_reward_model,
    )

    orm = OutcomeRewardModel.load(trained_orm["dir"])
    assert isinstance(orm, TrainedOutcomeRewardModel)
    assert isinstance(load_reward_model(trained_orm["dir"]), TrainedOutcomeRewardModel)
    row = max(labeled_rows, key=lambda r: len(r["steps"]))
    values = orm.get_rewards_for_steps(row["problem"], row["steps"])
    reward = orm.get_reward_for_problem_solution(row["problem"], "\n".join(row["steps"]))
    assert len(values) == len(row["steps"]) and reward == pytest.approx(values[-1])
    assert orm.get_reward(row["problem"], "\n".join(row["steps"])) == reward
    assert orm.outcome_batch([(row["problem"], row["steps"]), (row["problem"], row["steps"][:1])]) == pytest.approx(
        [values[-1], values[0]], abs=1e-5)

    orm.save(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "reward_config.json").read_text())["mode"] == "tag"
    assert OutcomeRewardModel.load(tmp_path / "saved").get_reward_for_problem_solution(
        row["problem"], row["steps"]) == pytest.approx(reward, abs=1e-6)

    # Both trained models give probabilities: the combined reward is their weighted sum.
    prm = ProcessRewardModel(trained_orm["dir"], aggregation="mean")  # any tag-mode model serves as the PRM here
    combined = CombinedRewardModel(prm, orm, process_weight=0.6, outcome_weight=0.4, aggregation="mean")
    text = "\n".join(row["steps"])
    assert combined.get_reward(row["problem"], text) == pytest.approx(0.6 * sum(values) / len(values) + 0.4 * reward)
    combined.save(tmp_path / "combined")
    loaded = load_reward_model(tmp_path / "combined")
    assert isinstance(loaded.outcome, TrainedOutcomeRewardModel)
    assert loaded.get_reward(row["problem"], text) == pytest.approx(combined.get_reward(row["problem"], text), abs=1e-6)


def test_train_orm_stage_writes_the_model_its_report_and_an_mlflow_run(tmp_path, labeled_rows, monkeypatch):
    from mlflow import MlflowClient

    from prmflow.training import tokenize_stage, train_orm
    from prmflow.jsonl import write_jsonl
    from prmflow.scoring.rewards import OutcomeRewardModel, TrainedOutcomeRewardModel

    write_jsonl(tmp_path / "data/rollouts/train.jsonl", labeled_rows[:32])
    write_jsonl(tmp_path / "data/rollouts/test.jsonl", labeled_rows[32:36])
    monkeypatch.chdir(tmp_path)
    small = {"vocab_size": 300, "hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}
    params = Params(base=BaseParams(mlflow_tracking_uri="sqlite:///mlflow/mlflow.db"), model=ModelParams(**small),
                    train=TrainParams(epochs=4.0, batch_size=8, save_steps=0), train_orm=TrainOrmParams(epochs=1.0))
    tokenize_stage.main(params)
    train_orm.main(params)
    report = json.loads(Path("reports/train_orm.json").read_text())
    assert report["steps"] == 32 // 8  # train_orm.epochs (1), not train.epochs (4)
    assert report["target"] == "outcome" and report["examples"] == 32
    assert not Path("models/prm").exists() and not Path("models/orm-checkpoints").exists()
    assert json.loads(Path("models/orm/reward_config.json").read_text()) == {"kind": "outcome", "mode": "tag",
                                                                            "delimiter": "\n"}
    assert isinstance(OutcomeRewardModel.load("models/orm"), TrainedOutcomeRewardModel)
    client = MlflowClient(tracking_uri="sqlite:///mlflow/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("prmflow").experiment_id],
                                "tags.`prmflow.stage` = 'train_orm'")
    assert run.data.metrics["seconds"] > 0 and not {"seconds", "mlflow_run_id"} & set(report)  # MLflow only
    assert run.data.params["train_orm.epochs"] == "1.0" and run.data.params["train.epochs"] == "4.0"
    assert run.data.metrics["steps"] == 4
