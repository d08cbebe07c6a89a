"""Stage `register`: log the PRM as an MLflow pyfunc, tag its lineage, and gate its promotion.

    prmflow register          # reads params.yaml: base, register, evaluate, combine, and dvc.yaml

`register.model_kind: combined` logs the trained ORM (models/orm) beside the PRM, with the `combine`
weights: the served response then adds `outcome_score` and `score` is the weighted combination
(scorer.py). The gate is the same for both kinds: metrics of the PRM's step scores. `register.scorer`
names an `evaluate.scorers` checkpoint (a public PRM) to register instead of models/prm: its
`scorer_<name>_*` metrics stand in for the PRM's in the tags and the served threshold; the gate scores
the registered version itself, whatever it holds.

Every new version of `register.model_name` gets the alias `register.challenger_alias` and
tags that trace it (git commit, DVC hashes of its data, params, stage run ids, metrics, the
md5 of the held-out set). It becomes `register.alias` (the champion, what serving follows)
only if it beats the champion by more than noise: both registered versions score the current
held-out set, `register.gate_metric` is computed for each as evaluate computes it, and a paired
bootstrap over the held-out problems (`register.gate_bootstrap_samples` draws, seeded by base.seed;
both metrics on the same draws) gives the 95% interval of challenger - champion. Promoted only when
its lower bound exceeds `register.promotion_margin`. The difference, its interval and the decision
are tagged on the version (`gate.*`) and written to `reports/registry.json`.

A version is made only when what it would hold differs from the latest version's: its weights, its served
config, or what the gate compares (`registration_inputs`, tagged `inputs.*`). An evaluation-only change
(`dvc exp run -S evaluate.external=...`) reruns this stage and registers nothing; the tag `registered_because`
says why each version exists. `prmflow register --force` registers the same inputs again.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

from prmflow.config import Params
from prmflow.serving.registry import alias_version, gate, move_alias
from prmflow.serving.vllm_server import vllm_metadata

# Gives the served model a signature that declares `params`, so MLflow passes them to predict.
INPUT_EXAMPLE_ROWS = [{"problem": "Ava has 3 apples. She buys 2 more. How many apples does she have?",
                       "steps": ["Ava has 3 + 2 = <<3+2=5>>5 apples."]}]
INPUT_EXAMPLE_PARAMS = {"aggregation": "min"}
# Served-model dependencies; prmflow itself travels with the model as code (code_paths).
# httptools and uvloop: uvicorn (under `mlflow models serve`) takes them when installed; a model env without
# them serves through pure-Python h11 and asyncio (bench/serve_load.py).
SERVING_PACKAGES = ("torch", "transformers", "tokenizers", "mlflow", "pydantic", "httptools", "uvloop")
# Stages whose MLflow run ids are tagged on the version (register's own run is the version's run).
LINEAGE_STAGES = ("ingest", "label", "validate", "tokenize", "train", "train_orm", "evaluate")

# The register stage's DVC output, beside the registry it describes (git-ignored): written when this machine's
# MLflow store got a version from the current inputs. Its text is the same on every machine (so dvc.lock is),
# and a fresh clone lacks it, so `dvc repro` registers there even though every upstream output reproduces
# byte for byte; reports/registry.json (this registry's versions, run ids, the gate's decision) is no output.
REGISTERED_RECEIPT = Path("mlflow") / "registered.json"


def requirements() -> list[str]:
    """What the served model needs, pinned to what trained it, so a fresh environment reinstalls it."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in SERVING_PACKAGES]


def serving_model_config(params: Params, metrics: dict, prm_format: str = "") -> dict:
    """The served model's config; its first-error threshold is the one evaluate chose on the validation half."""
    from prmflow.serving.scorer import ServingConfig

    return dataclasses.asdict(ServingConfig.from_params(params, threshold=metrics.get("first_error_threshold"),
                                                        prm_format=prm_format))


def log_prm(model_dir: str | Path, model_config: dict, *, registered_model_name: str | None = None,
            outcome_dir: str | Path | None = None):
    """Log the PRM from code (no pickle): the model directory (weights, tokenizer, prm_config.json) as an
    artifact, prmflow's source as code, a signature with the `aggregation` param, pinned requirements, and
    the step-tag and label ids (`vllm_server.vllm_metadata`) in the MLmodel metadata.

    With `outcome_dir` (a trained ORM) the logged model is the combined one: both directories travel as
    artifacts and `model_config` holds the weights."""
    import mlflow
    import prmflow
    from prmflow.serving.scorer import OUTCOME_ARTIFACT

    package = Path(prmflow.__file__).parent
    artifacts = {"model_dir": str(model_dir)} | ({OUTCOME_ARTIFACT: str(outcome_dir)} if outcome_dir else {})
    return mlflow.pyfunc.log_model(
        name="prm",
        python_model=str(Path(__file__).with_name("pyfunc_entry.py")),  # models-from-code: never pickled
        code_paths=[str(package)],
        artifacts=artifacts,
        model_config=model_config,
        input_example=(INPUT_EXAMPLE_ROWS, INPUT_EXAMPLE_PARAMS),
        pip_requirements=requirements(),
        registered_model_name=registered_model_name,
        metadata=vllm_metadata(model_dir),
    )


def registered_checkpoint(params: Params, metrics: dict) -> tuple[Path, str, dict]:
    """(model directory, its public_prms format or "" to detect, its metrics without prefix): models/prm and
    metrics.json as written, or the `evaluate.scorers` entry named by `register.scorer` and its scorer_<name>_*."""
    name = params.register.scorer
    if not name:
        return Path(params.base.models_dir) / "prm", "", metrics
    spec = next((s for s in params.evaluate.scorers if s["name"] == name), None)
    prefix = f"scorer_{name}_"
    if spec is None or not any(k.startswith(prefix) for k in metrics):
        raise KeyError(f"register.scorer: {name!r} is not an evaluate.scorers entry with {prefix}* metrics in "
                       f"reports/metrics.json (add it there and run `prmflow evaluate` first)")
    return Path(spec["path"]), spec.get("format", ""), {k[len(prefix):]: v for k, v in metrics.items()
                                                        if k.startswith(prefix)}


def gate_comparison(rows: list[dict], challenger: list[list[float]], champion: list[list[float]],
                    params: Params) -> dict:
    """The gate metric of challenger and champion on the held-out solutions both scored (step scores per
    row), and the paired bootstrap of their difference: {challenger, champion, difference, ci_low, ci_high}."""
    from prmflow.evaluation.bootstrap import paired_difference
    from prmflow.evaluation.heldout_metrics import resampled_metrics

    both = [i for i in range(len(rows)) if challenger[i] and champion[i]]
    metric = params.register.gate_metric
    first, second = (resampled_metrics([rows[i] for i in both], [scores[i] for i in both], params.evaluate)[metric]
                     for scores in (challenger, champion))
    difference, low, high = paired_difference(first, second, params.register.gate_bootstrap_samples,
                                              params.base.seed)
    return {"challenger": first.point(), "champion": second.point(), "difference": difference, "ci_low": low,
            "ci_high": high}


def gate_new_version(client, params: Params, version: str, *, step_scores: Callable[[str], list[list[float]]],
                     rows: list[dict], heldout_md5: str, who: str) -> dict:
    """Make `version` the challenger; promote it to champion if it passes the paired gate against the current
    champion on `rows` (`step_scores(version)` scores them with a registered version); tag and return the decision.
    """
    r = params.register
    move_alias(client, r.model_name, r.challenger_alias, version, who, "new version")
    champion = alias_version(client, r.model_name, r.alias)
    compared = None if champion is None else gate_comparison(rows, step_scores(version),
                                                             step_scores(str(champion.version)), params)
    decision = gate(None if compared is None else (compared["difference"], compared["ci_low"], compared["ci_high"]),
                    r.promotion_margin, r.gate_metric)
    record = {"metric": r.gate_metric, "margin": r.promotion_margin, "bootstrap_samples": r.gate_bootstrap_samples,
              "seed": params.base.seed, "heldout_md5": heldout_md5,
              "champion_version": None if champion is None else int(champion.version), **(compared or {})}
    # gate.promoted last: a version without it was never gated (registry.orphan_versions)
    gate_tags = {f"gate.{key}": str(value) for key, value in
                 {**record, "reason": decision.reason, "promoted": decision.promote}.items()}
    if decision.promote:  # the decision and the alias in one recoverable move
        move_alias(client, r.model_name, r.alias, version, who, decision.reason, version_tags=gate_tags)
    else:
        for key, value in gate_tags.items():
            client.set_model_version_tag(r.model_name, version, key, value)
    return {
        "version": int(version),
        "promoted": decision.promote,
        "reason": decision.reason,
        "champion_version": int(version) if decision.promote else int(champion.version),
        "previous_champion_version": int(champion.version) if champion else None,
        "gate": record,
    }


def registration_inputs(params: Params, model_dir: Path, outcome_dir: Path | None, model_config: dict,
                        heldout_md5: str) -> dict[str, str]:
    """{weights, served_config, gate}: a hash of each part of what a version would be. The weights are the DVC
    md5 of the model directory (and of the ORM's, combined); the served config is the pyfunc's model_config;
    the gate inputs are the held-out set's md5 and the knobs of the comparison. An evaluation-only change
    (external sets, baselines, report intervals) changes none of them."""
    import hashlib

    from prmflow.serving.registry import dvc_md5

    r, e = params.register, params.evaluate
    parts = {"weights": [dvc_md5(model_dir), dvc_md5(outcome_dir) if outcome_dir else None, r.model_kind],
             "served_config": model_config,
             "gate": [heldout_md5, r.gate_metric, r.promotion_margin, r.gate_bootstrap_samples, params.base.seed,
                      e.threshold, e.validation_fraction]}
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:16] for k, v in parts.items()}


def why_register(client, name: str, inputs: dict[str, str]) -> tuple[str | None, str]:
    """(the latest version of `name` when it holds exactly `inputs`, else None; the reason to register or not)."""
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        return None, f"first version of {name}"
    latest = max(versions, key=lambda v: int(v.version))
    changed = [k.replace("_", " ") for k, v in inputs.items() if latest.tags.get(f"inputs.{k}") != v]
    if not changed:
        return str(latest.version), f"version {latest.version} holds the same weights, served config and gate inputs"
    return None, f"changed since version {latest.version}: {', '.join(changed)}"


def refresh_registry_report(path: Path, state: dict) -> None:
    """Make reports/registry.json say what the registry holds after a hand move of the alias (`state`:
    registry.registry_state): `champion_version` and `registry` are replaced, the last register run's decision
    is kept as it was made."""
    from prmflow.jsonl import write_json

    record = json.loads(path.read_text()) if path.is_file() else {}
    write_json(path, record | {"champion_version": state["champion_version"], "registry": state})


def step_scores_of(rows: list[dict], params: Params) -> Callable[[str], list[list[float]]]:
    """The PRM step scores of a registered version on `rows`, loaded as the server loads it (prmflow.load)."""
    def step_scores(version: str) -> list[list[float]]:
        from prmflow.devices import Placement
        from prmflow.scoring.load import load

        prm = load(f"models:/{params.register.model_name}/{version}", placement=Placement.of(params.model))
        return prm.scorer.score_batch([(r["problem"], r["steps"]) for r in rows], params.evaluate.batch_size)
    return step_scores


def main(params: Params, force: bool = False) -> None:
    """Register models/prm (or `register.scorer`) unless the latest version holds the same inputs; `force`
    registers it anyway."""
    import torch

    import mlflow
    from mlflow import MlflowClient
    from prmflow.jsonl import read_jsonl, write_json
    from prmflow.serving.registry import (
        dvc_hashes, file_md5, finish_moves, git_commit, lineage_paths, lineage_tags, registry_lock, registry_state,
        stage_run_ids,
    )
    from prmflow.tracking import PARENT_RUN_ENV, configure, stage_run

    torch.set_num_threads(params.base.num_threads)
    reports = Path(params.base.reports_dir)
    metrics = json.loads((reports / "metrics.json").read_text())
    heldout = Path(params.base.data_dir) / "rollouts" / "test.jsonl"
    name = params.register.model_name
    models = Path(params.base.models_dir)
    outcome_dir = models / "orm" if params.register.model_kind == "combined" else None
    model_dir, prm_format, metrics = registered_checkpoint(params, metrics)
    model_config = serving_model_config(params, metrics, prm_format)
    heldout_md5 = file_md5(heldout)
    inputs = registration_inputs(params, model_dir, outcome_dir, model_config, heldout_md5)
    configure(params.base)
    same, because = why_register(MlflowClient(), name, inputs)
    if same and not force:
        keep_version(params, same, because)
        return
    with stage_run(params.base, "register", params.register) as run:
        info = log_prm(model_dir, model_config, registered_model_name=name, outcome_dir=outcome_dir)
        version = str(info.registered_model_version)
        client = MlflowClient()
        run_ids = stage_run_ids(client, run.info.experiment_id, LINEAGE_STAGES, os.environ.get(PARENT_RUN_ENV))
        sections = {s: dataclasses.asdict(getattr(params, s)) for s in ("ingest", "label", "model", "train",
                                                                       "train_orm", "combine", "evaluate")}
        commit = git_commit(generated=("dvc.lock", params.base.reports_dir))  # the run's own outputs
        lineage = lineage_paths("dvc.yaml", (params.base.data_dir, params.base.models_dir))
        tags = lineage_tags(commit, dvc_hashes(lineage), sections, run_ids, metrics, heldout_md5)
        tags["model_kind"] = params.register.model_kind
        tags["checkpoint"] = str(model_dir)  # models/prm, or the evaluate.scorers path of register.scorer
        tags |= vllm_metadata(model_dir)  # what `prmflow serve-vllm` reads
        tags |= {f"inputs.{k}": v for k, v in inputs.items()}
        tags["registered_because"] = "forced (prmflow register --force): " + because if force and same else because
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        rows = read_jsonl(heldout, required=("problem_id", "problem", "steps", "labels", "first_error", "correct"))
        # One gate at a time: the champion read here holds the alias until this decision is recorded.
        with registry_lock(params.base.mlflow_tracking_uri, name):
            for line in finish_moves(client, name, (params.register.alias, params.register.challenger_alias)):
                print(f"register: {line}")
            decision = gate_new_version(client, params, version, step_scores=step_scores_of(rows, params), rows=rows,
                                        heldout_md5=heldout_md5, who=f"prmflow register (run {run.info.run_id})")
            record = {"model_name": name, "model_kind": params.register.model_kind, "alias": params.register.alias,
                      "challenger_alias": params.register.challenger_alias,
                      "model_uri": f"models:/{name}@{params.register.alias}", "run_id": run.info.run_id,
                      "source": info.model_uri, "registered": True,
                      "registered_because": tags["registered_because"], **decision, "lineage": tags,
                      "registry": registry_state(client, name, params.register.alias, params.register.challenger_alias)}
            write_json(reports / "registry.json", record)
        mlflow.log_metrics({"promoted": int(decision["promoted"])} | {
            f"gate_{k}": v for k, v in decision["gate"].items() if k in ("difference", "ci_low", "ci_high")})
        write_receipt(params)
        verdict = "promoted to" if decision["promoted"] else f"kept version {decision['champion_version']} as"
        print(f"register: {name} version {version} ({tags['registered_because']}) -> "
              f"@{params.register.challenger_alias}; {verdict} @{params.register.alias}: {decision['reason']}")


def write_receipt(params: Params) -> None:
    from prmflow.jsonl import write_json

    write_json(REGISTERED_RECEIPT, {"model_name": params.register.model_name, "alias": params.register.alias,
                                    "registry": params.base.mlflow_tracking_uri})


def keep_version(params: Params, version: str, because: str) -> None:
    """No new version: reports/registry.json says which version already holds these inputs and why none was made."""
    from mlflow import MlflowClient
    from prmflow.jsonl import write_json
    from prmflow.serving.registry import registry_state

    r = params.register
    state = registry_state(MlflowClient(), r.model_name, r.alias, r.challenger_alias)
    write_json(Path(params.base.reports_dir) / "registry.json", {
        "model_name": r.model_name, "model_kind": r.model_kind, "alias": r.alias, "challenger_alias": r.challenger_alias,
        "model_uri": f"models:/{r.model_name}@{r.alias}", "version": int(version), "registered": False,
        "promoted": False, "reason": f"nothing registered: {because}",
        "champion_version": state["champion_version"], "registry": state})
    write_receipt(params)
    print(f"register: nothing registered: {because} (--force registers it again)")
