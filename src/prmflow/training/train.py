"""Stage `train`: fit the PRM on the step tags with a transformers Trainer.

    prmflow train             # reads params.yaml: base, model, train

    accelerate launch --cpu --num_processes 2 -m prmflow.cli train   # DDP (gloo on CPU, NCCL on GPUs)

Loss: cross-entropy over the logits of `+` and `-` at the tag positions (hard labels; the tag-only
head of modeling.step_tag_logits, never the full-vocabulary logits), or
soft cross-entropy on the MC values (`train.label_type: soft`), `-` weighted by
`train.negative_class_weight`. Full fine-tuning, or LoRA (`train.lora_r > 0`, merged before
saving so the saved model is a plain causal LM). Checkpoints go to `<models_dir>/prm-checkpoints`
(outside the DVC out) every `train.save_steps`; a rerun with the same params and data resumes
from the last complete one (a kill during a save leaves a partial folder, which is deleted), and
they are deleted once training finishes. `train_loss` is the mean loss over every step of the
run, the steps before a resume included (the Trainer's own covers only the steps after it). Writes `models/prm/`
(save_pretrained + tokenizer + prm_config.json) and `reports/train.json` (loss, tokens/s, peak
memory, precision, and the kept/dropped counts of the tokenize stage).

Precision: `model.dtype` through devices.Placement.for_training; `auto` is bfloat16 autocast on CUDA, and on a
CPU with bfloat16 matrix units (AMX / AVX-512 BF16) for a model at least 512 wide (SmolLM2-135M; not the
builtin model, which autocast slows down); float32 weights and optimizer state either way.

    prmflow train_orm         # reads params.yaml: base, model, train, train_orm

The outcome reward model (ORM, Cobbe et al. 2021 verifier style) goes through the same code: same
model, same tags, same loss, but every step tag's target is the rollout's final-answer correctness
(`outcome_targets`) and `train_orm.epochs` replaces `train.epochs`. Its per-tag predictions are value
estimates (P(the solution ends correct | prefix)); its solution score is P(+) at the last tag.
Writes `models/orm/` (as models/prm, plus a reward_config.json: kind outcome, mode tag) and
`reports/train_orm.json`; checkpoints in `<models_dir>/orm-checkpoints`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import shutil
import time
from pathlib import Path

import torch

from prmflow.config import Params, TrainParams
from prmflow.devices import Placement
from prmflow.scoring.modeling import pad_batch, step_loss, step_tag_logits
from prmflow.scoring.tokenization import COUNTS_FILE, PromptFormat
from prmflow.training.frozen_prefix import keep_layers, train_top

CHECKPOINT_STAMP = "params.json"  # what the checkpoints were trained with: resume only on a match
TRAINER_STATE = "trainer_state.json"  # the last file of a Trainer checkpoint


def hard_targets(example: dict) -> list[float]:
    return example["hard_targets"]


def soft_targets(example: dict) -> list[float]:
    return example["soft_targets"]


def outcome_targets(example: dict) -> list[float]:
    """The ORM's target at every step tag: the rollout's final-answer correctness (1.0 or 0.0)."""
    return [1.0 if example["correct"] else 0.0] * len(example["hard_targets"])


# What each tag is trained to predict, by name: `train.label_type` for the PRM, "outcome" for the ORM.
TARGETS = {"hard": hard_targets, "soft": soft_targets, "outcome": outcome_targets}
# The two models the stages train: directory under base.models_dir, and the stage (its MLflow run, report
# reports/<stage>.json and params section).
MODELS = {"process": ("prm", "train"), "outcome": ("orm", "train_orm")}


def complete_checkpoint(folder: Path) -> bool:
    """Whether a `checkpoint-N` folder was saved whole: the Trainer writes `trainer_state.json` last (after the
    weights, optimizer, scheduler and RNG states), so a kill during the save leaves it missing or cut short."""
    try:
        return "global_step" in json.loads((folder / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return False


def logged_steps_loss(log_history: list[dict]) -> float:
    """The mean training loss over every step in `log_history` (the Trainer's logs, restored on resume): each
    logged `loss` is the mean over the steps since the previous log, so it is weighted by their number."""
    total, previous = 0.0, 0
    for entry in log_history:
        if "loss" in entry:
            total += entry["loss"] * (entry["step"] - previous)
            previous = entry["step"]
    return total / previous if previous else math.nan


class StepTagCollator:
    """Dynamic padding; targets flattened in (solution, step) order to match `step_tag_logits`."""

    def __init__(self, pad_id: int, targets):
        self.pad_id = pad_id
        self.targets = targets  # example -> one target P(+) per step tag

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        input_ids, attention = pad_batch([f["input_ids"] for f in features], self.pad_id)
        targets = torch.tensor([t for f in features for t in self.targets(f)], dtype=torch.float)
        return {"input_ids": input_ids, "attention_mask": attention, "step_targets": targets}


def apply_lora(model, t: TrainParams, step_tag_id: int):
    """Wrap `model` in LoRA adapters on every linear layer (peft); `merge_lora` undoes the wrapping.

    The step tag is a new token: its input embedding is trained too, or every tag would stay
    at the resize's initial vector.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=t.lora_r, lora_alpha=t.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM",
                        trainable_token_indices=[step_tag_id])
    return get_peft_model(model, config)


def merge_lora(model):
    """A plain causal LM with the adapters folded in, so StepTagScorer loads it like any other."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def make_trainer(model, tokenizer, fmt: PromptFormat, *, train_dataset, params: Params, output_dir: str,
                 callbacks: tuple = (), target: str | None = None):
    """The Trainer; `target` names what the tags learn (a TARGETS key), by default `train.label_type`."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from prmflow.training.progress import with_progress

    t = params.train
    device, dtype = Placement.of(params.model).for_training(getattr(model.config, "hidden_size", 0))
    if device.startswith("cuda:"):  # the Trainer trains on the current CUDA device
        torch.cuda.set_device(device)

    class PRMTrainer(Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # Our loss is a per-batch mean that ignores num_items_in_batch: the Trainer must divide it
            # by the accumulation steps itself (and not rescale it for the number of processes).
            self.model_accepts_loss_kwargs = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            targets = inputs.pop("step_targets")
            pair_logits = step_tag_logits(model, inputs["input_ids"], inputs["attention_mask"], fmt)
            loss = step_loss(pair_logits, targets, t.negative_class_weight)
            return (loss, {"step_tag_logits": pair_logits}) if return_outputs else loss

    class MlflowMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            import mlflow

            numeric = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            # Only inside a stage run: other DDP ranks, and trainers built outside a stage, have none.
            if numeric and mlflow.active_run() is not None:
                mlflow.log_metrics(numeric, step=state.global_step)

    class LogBeforeEverySave(TrainerCallback):
        """Log at every checkpoint and at the last step, so the logs a checkpoint keeps cover every step up
        to it (`logged_steps_loss` of a resumed run then covers the steps before the resume too)."""

        def on_step_end(self, args, state, control, **kwargs):
            if control.should_save or control.should_training_stop:  # set by DefaultFlowCallback, which runs first
                control.should_log = True
            return control

    args = TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # transformers 5 reads a float < 1 here as a ratio of the total steps
        lr_scheduler_type="cosine",
        logging_steps=10,
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps or 500,  # unused when save_strategy is "no"
        save_total_limit=2,
        include_num_input_tokens_seen="non_padding",
        report_to=[],
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length",  # uses the `length` column written by tokenize
        seed=params.base.seed,
        use_cpu=device == "cpu",
        bf16=dtype == torch.bfloat16,  # mixed precision (autocast): the weights stay float32
        fp16=dtype == torch.float16,
        dataloader_num_workers=0,
        disable_tqdm=True,
        ddp_find_unused_parameters=False,  # every parameter takes part in the loss
    )
    return with_progress(PRMTrainer(  # one progress bar (loss, tokens/s, ETA) instead of a dict per log
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=StepTagCollator(tokenizer.pad_token_id, TARGETS[target or t.label_type]),
        processing_class=tokenizer,
        callbacks=[MlflowMetrics(), LogBeforeEverySave(), *callbacks],
    ))


def resume_checkpoint(checkpoints: Path, stamp: dict) -> str | None:
    """The last complete checkpoint of an interrupted run with these params and data; stale checkpoints, and a
    partial one (a kill during its save), are deleted."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

    stamp_file = checkpoints / CHECKPOINT_STAMP
    if stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        saved = [Path(folder) for folder in sort_checkpoints(str(checkpoints), PREFIX_CHECKPOINT_DIR)]
        for partial in [folder for folder in saved if not complete_checkpoint(folder)]:
            shutil.rmtree(partial)
            saved.remove(partial)
        return str(saved[-1]) if saved else None
    shutil.rmtree(checkpoints, ignore_errors=True)
    checkpoints.mkdir(parents=True)
    stamp_file.write_text(json.dumps(stamp, sort_keys=True))
    return None


def precision_name(args) -> str:
    """How the Trainer computes: "bfloat16 autocast" / "float16 autocast" (float32 weights), or "float32"."""
    return "bfloat16 autocast" if args.bf16 else "float16 autocast" if args.fp16 else "float32"


def peak_memory_mb() -> float:
    """Peak GPU memory allocated, or on CPU the process's peak resident set size (Linux: KiB)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def orm_params(params: Params) -> Params:
    """The PRM's params with what the ORM changes (`train_orm`)."""
    return dataclasses.replace(params, train=dataclasses.replace(params.train, epochs=params.train_orm.epochs))


def save_model(model, tokenizer, fmt: PromptFormat, out: Path, kind: str) -> None:
    """The trained model as a plain causal LM with its tokenizer and prm_config.json (and, for the ORM, its
    reward_config.json)."""
    from prmflow.scoring.tokenization import save_prompt_format

    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    save_prompt_format(fmt, out)
    if kind == "outcome":
        from prmflow.scoring.reward_config import write_outcome_config

        write_outcome_config(out)  # load_reward_model / OutcomeRewardModel.load read it as a trained ORM


def train_frozen_prefix(model, fmt: PromptFormat, train_set, params: Params, target: str) -> dict:
    """`train.frozen_layers`: the top layers trained over cached states of the frozen ones (frozen_prefix.py), one
    process, no checkpoints (an epoch over cached states is cheap to rerun); the report has train_stage's keys."""
    t = params.train
    _, dtype = Placement.of(params.model).for_training(getattr(model.config, "hidden_size", 0))
    examples = [{"input_ids": row["input_ids"], "targets": TARGETS[target](row)} for row in train_set]
    report = train_top(model, examples, fmt, frozen_layers=t.frozen_layers, epochs=t.epochs,
                       batch_size=t.batch_size * t.gradient_accumulation_steps, learning_rate=t.learning_rate,
                       weight_decay=t.weight_decay, warmup_ratio=t.warmup_ratio,
                       negative_class_weight=t.negative_class_weight, seed=params.base.seed,
                       dtype=dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32)
    seconds = report["prefix_seconds"] + report["train_seconds"]
    return report | {"steps": report["optimizer_steps"], "resumed_from": None, "seconds": seconds,
                     "tokens_per_second": (report["prefix_tokens"] + report["train_tokens"]) / seconds,
                     "peak_memory_mb": peak_memory_mb(), "processes": 1,
                     "precision": {torch.bfloat16: "bfloat16 autocast", torch.float16: "float16 autocast"}.get(dtype, "float32"),
                     "parameters": sum(p.numel() for p in model.parameters())}


def train_stage(params: Params, callbacks: tuple = (), kind: str = "process") -> dict | None:
    """Train and save models/prm (kind "process") or models/orm ("outcome"); returns the report (None on
    DDP ranks other than 0, which save nothing)."""
    import datasets
    from transformers import AutoTokenizer, set_seed

    from prmflow.scoring.modeling import build_model
    from prmflow.scoring.tokenization import prompt_format

    name = MODELS[kind][0]
    target = "outcome" if kind == "outcome" else params.train.label_type
    if kind == "outcome":
        params = orm_params(params)
    torch.set_num_threads(params.base.num_threads)
    set_seed(params.base.seed)
    tokenized = Path(params.base.data_dir) / "tokenized"
    out = Path(params.base.models_dir) / name
    checkpoints = Path(params.base.models_dir) / f"{name}-checkpoints"  # beside the DVC out, not inside it
    tokenizer = AutoTokenizer.from_pretrained(tokenized / "tokenizer")
    fmt = prompt_format(tokenizer, params.model)
    train_set = datasets.load_from_disk(str(tokenized / "train"))
    model = build_model(params.model, tokenizer)
    if params.train.keep_layers:
        keep_layers(model, params.train.keep_layers)
    if params.train.frozen_layers:
        report = train_frozen_prefix(model, fmt, train_set, params, target)
        save_model(model, tokenizer, fmt, out, kind)
        return report | {"examples": len(train_set), "target": target,
                         "tokenize": json.loads((tokenized / COUNTS_FILE).read_text())}
    if params.train.lora_r:
        model = apply_lora(model, params.train, fmt.step_tag_id)
    trainer = make_trainer(model, tokenizer, fmt, train_dataset=train_set, params=params, output_dir=str(checkpoints),
                           callbacks=callbacks, target=target)
    processes = trainer.args.world_size  # > 1 under `accelerate launch`
    stamp = {"seed": params.base.seed, "model": dataclasses.asdict(params.model), "target": target,
             "train": dataclasses.asdict(params.train), "data": train_set._fingerprint, "processes": processes}
    with trainer.args.main_process_first(local=False):  # rank 0 wipes stale checkpoints before the others look
        resume = resume_checkpoint(checkpoints, stamp)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    if not trainer.is_world_process_zero():
        return None
    model = merge_lora(trainer.model)
    save_model(model, tokenizer, fmt, out, kind)
    shutil.rmtree(checkpoints, ignore_errors=True)  # finished: a later run must start fresh
    tokens = trainer.state.num_input_tokens_seen - trainer._initial_num_input_tokens_seen
    return {
        "train_loss": logged_steps_loss(trainer.state.log_history),  # every step, a resumed run's too
        "final_loss": _last_logged_loss(trainer),
        "steps": result.global_step,
        "resumed_from": resume,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
        "peak_memory_mb": peak_memory_mb(),
        "processes": processes,
        "precision": precision_name(trainer.args),
        "parameters": sum(p.numel() for p in model.parameters()),
        "examples": len(train_set),
        "target": target,
        "tokenize": json.loads((tokenized / COUNTS_FILE).read_text()),
    }


def main(params: Params, kind: str = "process") -> None:
    """The `train` stage (kind "process"), or with kind "outcome" the `train_orm` stage (train_orm.py)."""
    import mlflow
    from prmflow.jsonl import write_json
    from prmflow.tracking import stage_run, summary_line, tracked_report

    if os.environ.get("RANK", "0") != "0":  # set by `accelerate launch`: only rank 0 talks to MLflow
        train_stage(params, kind=kind)
        return
    stage = MODELS[kind][1]
    with stage_run(params.base, stage, getattr(params, stage)) as run:
        logged = {"model": params.model} | ({"train": params.train} if kind == "outcome" else {})
        mlflow.log_params({f"{name}.{k}": v for name, values in logged.items() for k, v in vars(values).items()})
        report = {**train_stage(params, kind=kind), "mlflow_run_id": run.info.run_id}
        dropped = {f"{split}_{k}": v for split, counts in report["tokenize"].items() for k, v in counts.items()}
        mlflow.log_metrics({k: v for k, v in report.items() if isinstance(v, (int, float))} | dropped)
        write_json(Path(params.base.reports_dir) / f"{stage}.json", tracked_report(report))
        print(summary_line(stage, report))


def _last_logged_loss(trainer) -> float:
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses[-1] if losses else math.nan
