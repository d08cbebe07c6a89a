"""Stage `register`: log the PRM as an MLflow pyfunc, tag its lineage, and gate its promotion.

    prmflow register          # reads params.yaml: base, register, evaluate, combine, and dvc.lock

`register.model_kind: combined` logs the trained ORM (models/orm) beside the PRM, with the `combine`
weights: the served response then adds `outcome_score` and `score` is the weighted combination
(serving.py). The gate is the same for both kinds: metrics of the PRM's step scores.

Every new version of `register.model_name` gets the alias `register.challenger_alias` and
tags that trace it (git commit, DVC hashes of its data, params, stage run ids, metrics, the
md5 of the held-out set). It becomes `register.alias` (the champion, what serving follows)
only if its `register.gate_metric` beats the champion's by more than `register.promotion_margin`
on the same held-out set. When the champion was measured on a different held-out set, it is
re-scored on the current one first, so the two numbers are always comparable.
`reports/registry.json` says what was decided and why.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

from prmflow.config import Params, RegisterParams
from prmflow.serving.registry import (
    HELDOUT_TAG,
    METRIC_TAG,
    alias_version,
    gate,
    move_alias,
)

# Gives the served model a signature that declares `params`, so MLflow passes them to predict.
INPUT_EXAMPLE_ROWS = [{"problem": "Ava has 3 apples. She buys 2 more. How many apples does she have?",
                       "steps": ["Ava has 3 + 2 = <<3+2=5>>5 apples."]}]
INPUT_EXAMPLE_PARAMS = {"aggregation": "min"}
# Served-model dependencies; prmflow itself travels with the model as code (code_paths).
SERVING_PACKAGES = ("torch", "transformers", "tokenizers", "mlflow", "pydantic")
# Stages whose MLflow run ids are tagged on the version (register's own run is the version's run).
LINEAGE_STAGES = ("ingest", "label", "validate", "tokenize", "train", "train_orm", "evaluate")


def requirements() -> list[str]:
    """What the served model needs, pinned to what trained it, so a fresh environment reinstalls it."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in SERVING_PACKAGES]


def serving_model_config(params: Params, metrics: dict) -> dict:
    """The served model's config; its first-error threshold is the one evaluate chose on the validation half."""
    from prmflow.serving.scorer import ServingConfig

    return dataclasses.asdict(ServingConfig(
        threshold=metrics.get("first_error_threshold", params.evaluate.threshold),
        max_solutions_per_request=params.register.max_solutions_per_request,
        max_steps_per_solution=params.register.max_steps_per_solution,
        batch_size=params.evaluate.batch_size,
        process_weight=params.combine.process_weight,
        outcome_weight=params.combine.outcome_weight,
        device=params.model.device,
        dtype=params.model.dtype,
    ))


def step_pooling_ids(model_dir: str | Path) -> dict[str, str]:
    """The token ids another server needs to score with the PRM's weights alone: the step tag and the two
    labels, and the vLLM pooler config built from them (STEP pooling: softmax over `returned_token_ids`
    at every step tag, so its first value is P(+), the PRM's step score). Strings: MLflow tags are."""
    from prmflow.model.tokenization import load_prompt_format

    fmt = load_prompt_format(model_dir)
    pooler = {"pooling_type": "STEP", "step_tag_id": fmt.step_tag_id,
              "returned_token_ids": [fmt.positive_id, fmt.negative_id]}
    return {"step_tag_id": str(fmt.step_tag_id), "positive_token_id": str(fmt.positive_id),
            "negative_token_id": str(fmt.negative_id), "vllm_pooler_config": json.dumps(pooler)}


def log_prm(model_dir: str | Path, model_config: dict, registered_model_name: str | None = None,
            outcome_dir: str | Path | None = None):
    """Log the PRM from code (no pickle): the model directory (weights, tokenizer, prm_config.json) as an
    artifact, prmflow's source as code, a signature with the `aggregation` param, pinned requirements, and
    the step-tag and label ids (`step_pooling_ids`) in the MLmodel metadata.

    With `outcome_dir` (a trained ORM) the logged model is the combined one: both directories travel as
    artifacts and `model_config` holds the weights."""
    import mlflow
    import prmflow
    from prmflow.serving.scorer import OUTCOME_ARTIFACT

    package = Path(prmflow.__file__).parent
    artifacts = {"model_dir": str(model_dir)} | ({OUTCOME_ARTIFACT: str(outcome_dir)} if outcome_dir else {})
    return mlflow.pyfunc.log_model(
        name="prm",
        python_model=str(package / "serving" / "pyfunc_entry.py"),
        code_paths=[str(package)],
        artifacts=artifacts,
        model_config=model_config,
        input_example=(INPUT_EXAMPLE_ROWS, INPUT_EXAMPLE_PARAMS),
        pip_requirements=requirements(),
        registered_model_name=registered_model_name,
        metadata=step_pooling_ids(model_dir),
    )


def champion_value(champion, gate_metric: str, heldout_md5: str, rescore: Callable[[str], dict]) -> tuple[float, bool]:
    """The champion's gate metric on the current held-out set: its tag when it was measured on the same
    set, else a fresh score (`rescore(version)`). Returns (value, rescored)."""
    tag = champion.tags.get(METRIC_TAG.format(gate_metric))
    if champion.tags.get(HELDOUT_TAG) == heldout_md5 and tag is not None:
        return float(tag), False
    return float(rescore(champion.version)[gate_metric]), True


def gate_new_version(client, params: RegisterParams, version: str, metrics: dict, heldout_md5: str,
                     rescore: Callable[[str], dict], who: str) -> dict:
    """Make `version` the challenger, promote it to champion if it passes the gate; return the decision."""
    name, metric = params.model_name, params.gate_metric
    if metric not in metrics:
        raise KeyError(f"register.gate_metric: {metric!r} is not in reports/metrics.json")
    move_alias(client, name, params.challenger_alias, version, who, "new version")
    champion = alias_version(client, name, params.alias)
    current, rescored = (None, False) if champion is None else champion_value(champion, metric, heldout_md5, rescore)
    decision = gate(float(metrics[metric]), current, params.promotion_margin, metric)
    if decision.promote:
        move_alias(client, name, params.alias, version, who, decision.reason)
    return {
        "version": int(version),
        "promoted": decision.promote,
        "reason": decision.reason,
        "champion_version": int(version) if decision.promote else int(champion.version),
        "previous_champion_version": int(champion.version) if champion else None,
        "gate": {"metric": metric, "challenger": float(metrics[metric]), "champion": current,
                 "margin": params.promotion_margin, "champion_rescored": rescored, "heldout_md5": heldout_md5},
    }


def rescore_on(rows: list[dict], params: Params) -> Callable[[str], dict]:
    """Metrics of a registered version on `rows`, computed as the evaluate stage computes them."""
    def rescore(version: str) -> dict:
        from prmflow.evaluation.evaluate import evaluate_scores
        from prmflow.serving.scorer import load_scorer

        placement = (params.model.device, params.model.dtype)
        prm = load_scorer(f"models:/{params.register.model_name}/{version}", placement=placement).prm
        scores = prm.score_batch([(r["problem"], r["steps"]) for r in rows], params.evaluate.batch_size)
        return evaluate_scores(rows, scores, params.evaluate)
    return rescore


def main(params: Params) -> None:
    import torch

    import mlflow
    from mlflow import MlflowClient
    from prmflow.jsonl import read_jsonl, write_json
    from prmflow.serving.registry import (
        dvc_hashes,
        file_md5,
        git_commit,
        lineage_tags,
        stage_run_ids,
    )
    from prmflow.tracking import PARENT_RUN_ENV, stage_run

    torch.set_num_threads(params.base.num_threads)
    reports = Path(params.base.reports_dir)
    metrics = json.loads((reports / "metrics.json").read_text())
    heldout = Path(params.base.data_dir) / "rollouts" / "test.jsonl"
    name = params.register.model_name
    models = Path(params.base.models_dir)
    outcome_dir = models / "orm" if params.register.model_kind == "combined" else None
    with stage_run(params.base, "register", params.register) as run:
        info = log_prm(models / "prm", serving_model_config(params, metrics), name, outcome_dir)
        version = str(info.registered_model_version)
        client = MlflowClient()
        heldout_md5 = file_md5(heldout)
        run_ids = stage_run_ids(client, run.info.experiment_id, LINEAGE_STAGES, os.environ.get(PARENT_RUN_ENV))
        sections = {s: dataclasses.asdict(getattr(params, s)) for s in ("ingest", "label", "model", "train",
                                                                       "train_orm", "combine", "evaluate")}
        commit = git_commit(generated=("dvc.lock", params.base.reports_dir))  # the run's own outputs
        tags = lineage_tags(commit, dvc_hashes("dvc.lock", (params.base.data_dir, params.base.models_dir)),
                            sections, run_ids, metrics, heldout_md5)
        tags["model_kind"] = params.register.model_kind
        tags |= step_pooling_ids(models / "prm")  # what `vllm serve` needs (README, "Serving with vLLM")
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        rows = read_jsonl(heldout, required=("problem_id", "problem", "steps", "labels", "first_error", "correct"))
        decision = gate_new_version(client, params.register, version, metrics, heldout_md5,
                                    rescore_on(rows, params), who=f"prmflow register (run {run.info.run_id})")
        mlflow.log_metric("promoted", int(decision["promoted"]))
        record = {"model_name": name, "model_kind": params.register.model_kind, "alias": params.register.alias,
                  "challenger_alias": params.register.challenger_alias,
                  "model_uri": f"models:/{name}@{params.register.alias}", "run_id": run.info.run_id,
                  "source": info.model_uri, **decision, "lineage": tags}
        write_json(reports / "registry.json", record)
        verdict = "promoted to" if decision["promoted"] else f"kept version {decision['champion_version']} as"
        print(f"register: {name} version {version} -> @{params.register.challenger_alias}; "
              f"{verdict} @{params.register.alias}: {decision['reason']}")
