"""Stage `train`: fit the PRM on the step tags with a transformers Trainer.

    prmflow train             # reads params.yaml: base, model, train

Loss: cross-entropy over the logits of `+` and `-` at the tag positions (hard labels), or
soft cross-entropy on the MC values (`train.label_type: soft`). Writes `models/prm/`
(save_pretrained + tokenizer + prm_config.json) and `reports/train.json`.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import torch

from prmflow.config import Params
from prmflow.modeling import pad_batch, step_loss, step_tag_logits
from prmflow.tokenization import PromptFormat


class StepTagCollator:
    """Dynamic padding; targets flattened in (solution, step) order to match `step_tag_logits`."""

    def __init__(self, pad_id: int, target_column: str):
        self.pad_id = pad_id
        self.target_column = target_column

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        input_ids, attention = pad_batch([f["input_ids"] for f in features], self.pad_id)
        targets = torch.tensor([t for f in features for t in f[self.target_column]], dtype=torch.float)
        return {"input_ids": input_ids, "attention_mask": attention, "step_targets": targets}


def make_trainer(model, tokenizer, fmt: PromptFormat, train_dataset, params: Params, output_dir: str):
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class PRMTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            targets = inputs.pop("step_targets")
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            loss = step_loss(step_tag_logits(outputs.logits, inputs["input_ids"], fmt), targets)
            return (loss, outputs) if return_outputs else loss

    class MlflowMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            import mlflow

            numeric = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            if numeric:
                mlflow.log_metrics(numeric, step=state.global_step)

    t = params.train
    args = TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # transformers 5 reads a float < 1 here as a ratio of the total steps
        lr_scheduler_type="cosine",
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length",  # uses the `length` column written by tokenize
        seed=params.base.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    column = "hard_targets" if t.label_type == "hard" else "soft_targets"
    return PRMTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=StepTagCollator(tokenizer.pad_token_id, column),
        processing_class=tokenizer,
        callbacks=[MlflowMetrics()],
    )


def main(params: Params) -> None:
    import datasets
    import mlflow
    from transformers import AutoTokenizer, set_seed

    from prmflow.jsonl import write_json
    from prmflow.modeling import build_model, prompt_format, save_prompt_format
    from prmflow.tracking import stage_run

    torch.set_num_threads(params.base.num_threads)
    set_seed(params.base.seed)
    tokenized = Path(params.base.data_dir) / "tokenized"
    out = Path(params.base.models_dir) / "prm"
    tokenizer = AutoTokenizer.from_pretrained(tokenized / "tokenizer")
    fmt = prompt_format(tokenizer, params.model)
    train_set = datasets.load_from_disk(str(tokenized / "train"))
    with stage_run(params.base, "train", params.train) as run:
        mlflow.log_params({f"model.{k}": v for k, v in vars(params.model).items()})
        model = build_model(params.model, tokenizer)
        trainer = make_trainer(model, tokenizer, fmt, train_set, params, output_dir=tempfile.mkdtemp())
        started = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - started
        tokens = sum(len(ids) for ids in train_set["input_ids"]) * params.train.epochs
        trainer.save_model(str(out))
        tokenizer.save_pretrained(out)
        save_prompt_format(fmt, out)
        report = {
            "train_loss": result.training_loss,
            "final_loss": _last_logged_loss(trainer),
            "steps": result.global_step,
            "seconds": seconds,
            "tokens_per_second": tokens / seconds,
            "parameters": sum(p.numel() for p in model.parameters()),
            "examples": len(train_set),
            "mlflow_run_id": run.info.run_id,
        }
        mlflow.log_metrics({k: v for k, v in report.items() if isinstance(v, (int, float))})
        write_json(Path(params.base.reports_dir) / "train.json", report)
        print(f"train: {report}")


def _last_logged_loss(trainer) -> float:
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses[-1] if losses else math.nan
