"""Small real PRMs, a tiny policy LM and a throwaway MLflow store, for the registry, serving and policy tests.

The models are untrained (random weights from a seed): what these tests check is packaging,
the registry, the servers and the policies' mechanics, and two seeds give two PRM versions
whose scores differ.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from conftest import BIN


POLICY_PROBLEM = {"id": "p1", "problem": "Ava has 12 apples and buys 5 more. How many apples does she have?",
                  "answer": "17", "reference_steps": ["Ava has 12 + 5 = <<12+5=17>>17 apples.", "#### 17"]}
POLICY_CORPUS = [f"Question: Ava has {a} apples and buys {b} more.\nAnswer:\nShe has {a} + {b} = {a + b} apples.\n"
                 f"#### {a + b}\nThe answer is {a + b}." for a in range(1, 12) for b in range(1, 12)]


def build_tiny_policy_lm(directory: Path) -> Path:
    """A random GPT-2 (one layer) with a byte-level tokenizer trained on POLICY_CORPUS, saved as a model dir."""
    from tiny_tokenizers import build_family

    return build_family("gpt2", POLICY_CORPUS, directory, with_weights=True)


def sample_by_default(directory: Path) -> Path:
    """Make the model dir's generation config sample: `transformers serve` samples only where it says so
    (vLLM samples whenever temperature > 0), so without it every request would decode greedily."""
    from transformers import GenerationConfig

    config = GenerationConfig.from_pretrained(directory)
    config.do_sample = True
    config.save_pretrained(directory)
    return directory


def fit_policy_lm(directory: Path, corpus: list[str], family: str, shape: dict, steps: int, seed: int,
                  batch: int = 8, block: int = 128, lr: float = 3e-3) -> dict:
    """A `family` causal LM of `shape` (config fields) with a tokenizer trained on `corpus`, fitted for `steps`
    AdamW steps on `corpus` as one stream of `block`-token windows, saved to `directory` (sampling by default).

    Fitted briefly so that samples follow the prompt format (steps, then a `#### answer` line) rather than
    being noise. Returns the shape, parameter count, first and last losses and build seconds."""
    import time

    import torch
    from tiny_tokenizers import build_family
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    build_family(family, corpus, directory)  # the tokenizer (and a tiny config, reshaped below)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    config = AutoConfig.from_pretrained(directory)
    for key, value in shape.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    ids = torch.tensor(tokenizer("".join(corpus))["input_ids"])
    blocks = ids[: len(ids) // block * block].view(-1, block)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        rows = blocks[torch.randint(len(blocks), (batch,))]
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.save_pretrained(directory)
    sample_by_default(directory)
    return {**shape, "family": family, "vocab_size": config.vocab_size,
            "parameters": sum(p.numel() for p in model.parameters()), "train_steps": steps,
            "train_tokens_per_step": batch * block, "train_loss_first": losses[0],
            "train_loss_last": sum(losses[-10:]) / min(10, len(losses)), "build_s": time.perf_counter() - start}


def serve_policy_lm(model_dir: Path, port: int, log_path: Path, extra_args: tuple[str, ...] = ()):
    """`transformers serve` pinned to the local model dir, on 127.0.0.1:port, stopped by process group on exit."""
    from model_server import loopback_process

    cmd = [str(BIN / "transformers"), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
           "--device", "cpu", *extra_args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return loopback_process(cmd, f"http://127.0.0.1:{port}/health", env, None, log_path, ready_timeout=90)


def build_tiny_prm(directory: Path, seed: int, max_length: int = 192, hidden_size: int = 16,
                   num_layers: int = 1) -> Path:
    """A random tiny PRM saved as the train stage saves one; `hidden_size` 64 gives heads of 32, which vLLM's CPU
    attention accepts (it refuses 16 and below)."""
    import torch

    from prmflow.config import ModelParams
    from prmflow.scoring.modeling import build_model
    from prmflow.scoring.tokenization import prepare_tokenizer, prompt_format, save_prompt_format

    # A fixed corpus keeps the tokenizer (and so these tests) independent of the data generator.
    corpus = [f"Step {a}: {name} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples, then gives away {b} - {a}."
              for a in range(1, 10) for b in range(1, 10) for name in ("Ava", "Tom")]
    params = ModelParams(vocab_size=300, hidden_size=hidden_size, num_layers=num_layers, num_heads=2,
                         intermediate_size=2 * hidden_size, max_length=max_length)
    tokenizer = prepare_tokenizer(params, corpus)
    torch.manual_seed(seed)
    model = build_model(params, tokenizer)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    save_prompt_format(prompt_format(tokenizer, params), directory)
    return directory


def sharpen_label_rows(directory: Path, factor: float = 100.0) -> Path:
    """Scale the output-embedding rows of the two label tokens, so the saved PRM's step scores spread over (0, 1)
    instead of sitting near 0.5 (where any precision would pass a tolerance on them)."""
    import torch
    from transformers import AutoModelForCausalLM

    from prmflow.scoring.tokenization import load_prompt_format

    fmt = load_prompt_format(directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    with torch.no_grad():
        model.get_output_embeddings().weight[[fmt.positive_id, fmt.negative_id]] *= factor
    model.save_pretrained(directory)
    return directory


def build_tiny_orm(directory: Path, seed: int, max_length: int = 192) -> Path:
    """A tiny PRM-architecture model saved as a trained (tag-mode) outcome reward model, as train_orm saves one."""
    from prmflow.scoring.reward_config import write_outcome_config

    write_outcome_config(build_tiny_prm(directory, seed, max_length))
    return directory


def train_tiny_model(labeled_rows: list[dict], directory: Path, target: str | None = None, epochs: float = 3,
                     learning_rate: float = 3e-3) -> dict:
    """A real tiny training run on `labeled_rows`, saved to `directory` as the train stage saves.

    `target` is a train.TARGETS name (default: train.label_type, so the PRM); `epochs` and `learning_rate` as
    train.* (the gate tests train one model briefly and one longer); returns the parameters
    before training, the model, the trainer (its loss history), the tokenized rows and the directory.
    """
    import datasets
    import torch

    from prmflow.config import ModelParams, Params, TrainParams
    from prmflow.scoring.modeling import build_model
    from prmflow.scoring.tokenization import prepare_tokenizer, prompt_format, save_prompt_format
    from prmflow.scoring.tokenization import corpus_texts, tokenize_rows
    from prmflow.training.train import make_trainer

    torch.manual_seed(0)
    model_params = ModelParams(vocab_size=300, max_length=2048, hidden_size=32, num_layers=1, num_heads=2,
                               intermediate_size=64)
    params = Params(model=model_params, train=TrainParams(epochs=epochs, batch_size=8, learning_rate=learning_rate))
    tokenizer = prepare_tokenizer(model_params, corpus_texts(labeled_rows, model_params))
    fmt = prompt_format(tokenizer, model_params)
    rows, _ = tokenize_rows(tokenizer, fmt, labeled_rows)
    model = build_model(model_params, tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = make_trainer(model, tokenizer, fmt, train_dataset=datasets.Dataset.from_list(rows), params=params,
                           output_dir=str(directory / "ckpt"), target=target)
    trainer.train()
    trainer.save_model(str(directory))
    tokenizer.save_pretrained(directory)
    save_prompt_format(fmt, directory)
    return {"before": before, "model": model, "trainer": trainer, "rows": rows, "dir": directory}


def assert_trained(run: dict) -> None:
    """Every parameter changed and the loss fell."""
    import torch

    after = run["model"].state_dict()
    changed = [k for k in run["before"] if not torch.equal(run["before"][k], after[k])]
    assert len(changed) == len(after)
    losses = [e["loss"] for e in run["trainer"].state.log_history if "loss" in e]
    assert losses[-1] < losses[0]


@contextlib.contextmanager
def tracking_store(root: Path) -> Iterator[str]:
    """A sqlite tracking store under `root`, made current (in process and for child processes)."""
    import mlflow

    uri = f"sqlite:///{root}/mlflow.db"
    previous_uri, previous_env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    # An explicit artifact root: the default would write under the current directory.
    experiment_id = mlflow.create_experiment("prmflow-test", artifact_location=(root / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(previous_uri)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def log_version(model_dir: Path, name: str = "prm", outcome_dir: Path | None = None, **serving) -> str:
    """Log `model_dir` (with `outcome_dir`: a combined model) exactly as the register stage does and
    register it; return the version."""
    import dataclasses

    import mlflow

    from prmflow.serving.register import log_prm
    from prmflow.serving.scorer import ServingConfig

    with mlflow.start_run():
        info = log_prm(model_dir, dataclasses.asdict(ServingConfig.from_model_config(serving)),
                       registered_model_name=name, outcome_dir=outcome_dir)
    return str(info.registered_model_version)


def server_env(tracking_uri: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MLFLOW_TRACKING_URI": tracking_uri}


# Public PRM formats (scoring/public_prms.py): tiny checkpoints in each, random weights from a seed.
PUBLIC_CORPUS = [f"Ava has {a} apples and buys {b} more. Step 1: {a} + {b} = {a + b} ки\n"
                 f"Step 2: {a + b} - {b} = {a} ки {'+' if a % 2 else '-'}"
                 for a in range(1, 12) for b in range(1, 12)]
PLAIN_CORPUS = [line.replace(" ки", "") for line in PUBLIC_CORPUS]  # no tag: a chat PRM's or a judge's
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start|>{{ m['role'] }}\n{{ m['content'] }}<|end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|start|>assistant\n{% endif %}")
# Marks the last message: turn t's prompt is then not a prefix of the whole conversation.
LAST_TURN_TEMPLATE = CHAT_TEMPLATE.replace("{{ m['role'] }}\n", "{{ m['role'] }}{% if loop.last %} (last){% endif %}\n")


def build_public_prm(directory: Path, family: str, head: str = "causal", chat_template: str | None = None,
                     seed: int = 0, corpus: list[str] = PUBLIC_CORPUS) -> Path:
    """A tiny Llama (causal LM or `token_classification` with 2 labels) with a `family` tokenizer trained on
    `corpus` (PUBLIC_CORPUS: `ки`, `+` and `-` are in its vocabulary), and with a chat template if given."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForTokenClassification

    from tiny_tokenizers import TINY, build_family

    build_family(family, corpus, directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if chat_template:
        tokenizer.add_tokens(["<|start|>", "<|end|>"], special_tokens=True)
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, num_labels=2, **TINY)
    torch.manual_seed(seed)
    model = LlamaForTokenClassification(config) if head == "token_classification" else LlamaForCausalLM(config)
    model.save_pretrained(directory)
    return directory
