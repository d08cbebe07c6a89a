"""A generator that gets better with the PRM: Step-DPO on PRM pairs, GRPO with the PRM's reward against GRPO with
the outcome reward alone, at equal compute, on a tiny policy on CPU.

    OMP_NUM_THREADS=1 .venv/bin/python bench/rl_policy.py      # the defaults: over an hour on the shared 2-core machine
    OMP_NUM_THREADS=1 .venv/bin/python bench/rl_policy.py --train 120 --test 80 --fit-steps 150 --steps 16 --samples 2
                                                               # BENCHMARKS.md's run 1: 30 minutes with the cores shared

1. Problems from the bundled generator (2-3 steps): `--train` for training, `--test` held out (other seed).
2. The policy: a small GPT-2 (4 layers, hidden 128) with a byte-level tokenizer trained on the corpus, fitted on
   the train problems' reference solutions, one document per solution: the problem, one step per line, `#### x`,
   end of text. Its prompt is the problem and a line break, the prompt format of `prmflow pairs`.
3. The PRM: the simulated policy's rollouts of the train problems labeled by Monte-Carlo completions (the label
   stage's code), a tiny PRM trained on them with the train stage's trainer (tests/tiny_models.train_tiny_model).
4. From the fitted policy, three arms with the same number of optimizer steps (`--steps`) and learning rate:
   - Step-DPO: TRL's DPOTrainer on `prmflow pairs` of those labeled rollouts (batch `--batch` pairs);
   - GRPO, PRM reward: TRL's GRPOTrainer with `prmflow.integrations.trl.prm_reward(model=PRM)` (min aggregation,
     0 for a completion with no final answer);
   - GRPO, outcome reward: the same trainer, seed and samples per step, rewarded 1 when the final answer equals
     the reference and 0 otherwise.
   Both GRPO arms generate the same number of completions per step (`--batch` = prompts x generations):
   equal policy compute; the PRM's scoring is extra and reported (`reward_s`).
5. Held-out accuracy of each policy: greedy decoding (one answer per problem) and `--samples` samples per problem
   at temperature 1, each with a 95% bootstrap interval over problems (evaluation/bootstrap.py), and the paired
   difference of each arm against the fitted policy and of PRM-GRPO against outcome-GRPO on the same draws.

Writes bench/results/rl_policy.json; BENCHMARKS.md has the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = 1234
POLICY = {"n_embd": 128, "n_layer": 4, "n_head": 4, "n_positions": 256}
MAX_NEW_TOKENS = 96
BOOTSTRAP_SAMPLES = 2000


def document(problem: dict) -> str:
    """A solution in the policy's format: the problem, one step per line, the final-answer line."""
    from prmflow.labeling.pairs import render_prompt

    return render_prompt(problem["problem"], [*problem["reference_steps"], f"#### {problem['answer']}"])


def fit_policy(directory: Path, problems: list[dict], steps: int, batch: int) -> dict:
    """Train the small GPT-2 on the problems' reference solutions (each ended by end-of-text) and save it."""
    import torch
    from tiny_tokenizers import build_family
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    corpus = [document(p) for p in problems]
    build_family("gpt2", corpus, directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    config = AutoConfig.from_pretrained(directory)
    for key, value in POLICY.items():
        setattr(config, key, value)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config)
    encoded = tokenizer([text + tokenizer.eos_token for text in corpus])["input_ids"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(SEED)
    losses = []
    for _ in range(steps):
        rows = [encoded[i] for i in torch.randint(len(encoded), (batch,), generator=generator).tolist()]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [tokenizer.eos_token_id] * (width - len(r)) for r in rows])
        labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.save_pretrained(directory)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(directory)
    return {**POLICY, "parameters": sum(p.numel() for p in model.parameters()), "fit_steps": steps,
            "fit_batch": batch, "fit_loss_first": losses[0], "fit_loss_last": sum(losses[-20:]) / 20,
            "fit_s": time.perf_counter() - start}


def with_answer_line(row: dict) -> dict:
    """A labeled rollout with its final-answer line `#### x` as one more step, labeled by the outcome: the
    simulated policy's steps state no such line and the policy's completions end with one, so the PRM sees it."""
    return {**row, "steps": [*row["steps"], f"#### {row['predicted_answer']}"],
            "labels": [*row["labels"], "+" if row["correct"] else "-"],
            "values": [*row["values"], float(row["correct"])],
            "first_error": len(row["steps"]) if row["first_error"] < 0 and not row["correct"] else row["first_error"]}


def train_prm(directory: Path, problems: list[dict]) -> tuple[list[dict], dict]:
    """Monte-Carlo labels of the simulated policy's rollouts, and a tiny PRM trained on them."""
    from tiny_models import train_tiny_model

    from prmflow.config import LabelParams
    from prmflow.labeling.label import rollout_rows

    start = time.perf_counter()
    rows = [with_answer_line(row) for row in
            rollout_rows(problems, LabelParams(trajectories_per_problem=4, completions_per_step=4), seed=SEED)]
    train_tiny_model(rows, directory, epochs=3)
    return rows, {"labeled_rollouts": len(rows), "labeled_steps": sum(len(r["steps"]) for r in rows),
                  "negative_steps": sum(r["labels"].count("-") for r in rows), "prm_s": time.perf_counter() - start}


def generate(model, tokenizer, prompts: list[str], sample: bool, seed: int) -> list[str]:
    """The policy's completions of `prompts` (left-padded batches of 32), greedy or sampled at temperature 1."""
    import torch

    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    texts = []
    for i in range(0, len(prompts), 32):
        batch = tokenizer(prompts[i:i + 32], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=sample, temperature=1.0 if sample
                                 else None, top_k=0 if sample else None, pad_token_id=tokenizer.eos_token_id)
        texts += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts


def correct(completion: str, answer: str, check) -> bool:
    from prmflow.data.answers import extract_final_answer

    return check(extract_final_answer(completion), answer)


def accuracy(model_dir: Path, problems: list[dict], samples: int) -> dict:
    """Per problem: greedy correct (0/1) and the share of `samples` sampled completions that are correct."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prmflow.labeling.step_labels import AnswerChecker
    from prmflow.labeling.pairs import render_prompt

    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    prompts = [render_prompt(p["problem"], []) for p in problems]
    check = AnswerChecker()
    greedy = [float(correct(c, p["answer"], check)) for c, p in zip(generate(model, tokenizer, prompts, False, SEED),
                                                                    problems)]
    sampled = generate(model, tokenizer, [q for q in prompts for _ in range(samples)], True, SEED)
    shares = [sum(correct(c, p["answer"], check) for c in sampled[i * samples:(i + 1) * samples]) / samples
              for i, p in enumerate(problems)]
    return {"greedy": greedy, "sampled": shares,
            "no_answer_share": sum(not any(m in c for m in ("####",)) for c in sampled) / len(sampled)}


def grpo(policy_dir: Path, out: Path, problems: list[dict], reward, steps: int, batch: int, generations: int,
         learning_rate: float) -> dict:
    import datasets
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prmflow.labeling.pairs import render_prompt

    dataset = datasets.Dataset.from_list([{"prompt": render_prompt(p["problem"], []), "answer": p["answer"]}
                                          for p in problems])
    args = trl.GRPOConfig(output_dir=str(out / "ckpt"), max_steps=steps, per_device_train_batch_size=batch,
                          num_generations=generations, max_completion_length=MAX_NEW_TOKENS,
                          learning_rate=learning_rate, logging_steps=max(1, steps // 10), report_to=[], use_cpu=True,
                          save_strategy="no", seed=SEED, temperature=1.0, top_k=0)
    start = time.perf_counter()
    trainer = trl.GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy_dir), reward_funcs=reward, args=args,
                              train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(policy_dir))
    trainer.train()
    trainer.save_model(str(out))
    return {"train_s": time.perf_counter() - start,
            "log": [{k: v for k, v in e.items() if k.startswith(("reward", "prm/", "loss", "step"))}
                    for e in trainer.state.log_history]}


def step_dpo(policy_dir: Path, out: Path, pairs: list[dict], steps: int, batch: int, learning_rate: float) -> dict:
    import datasets
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = trl.DPOConfig(output_dir=str(out / "ckpt"), max_steps=steps, per_device_train_batch_size=batch,
                         learning_rate=learning_rate, logging_steps=max(1, steps // 10), report_to=[], use_cpu=True,
                         save_strategy="no", seed=SEED, max_length=256)
    start = time.perf_counter()
    trainer = trl.DPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy_dir), args=args,
                             train_dataset=datasets.Dataset.from_list(
                                 [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs]),
                             processing_class=AutoTokenizer.from_pretrained(policy_dir))
    trainer.train()
    trainer.save_model(str(out))
    return {"train_s": time.perf_counter() - start,
            "log": [{k: v for k, v in e.items() if k.startswith(("loss", "rewards/", "step"))}
                    for e in trainer.state.log_history]}


def outcome_reward(prompts, completions, answer, **kwargs) -> list[float]:
    """1.0 when the completion's final answer equals the reference (the dataset's `answer` column), else 0.0."""
    from prmflow.labeling.step_labels import AnswerChecker

    check = AnswerChecker()
    return [float(correct(c, a, check)) for c, a in zip(completions, answer)]


def summary(results: dict[str, dict], problems: list[dict]) -> dict:
    """Each arm's accuracies with 95% intervals, and paired differences (same bootstrap draws)."""
    from prmflow.evaluation.bootstrap import Resampled, bootstrap_interval, paired_difference, weighted_mean

    ids = [p["id"] for p in problems]
    table = {}
    for name, result in results.items():
        row = {}
        for kind in ("greedy", "sampled"):
            resampled = Resampled(ids, partial(weighted_mean, result[kind]))
            low, high = bootstrap_interval(resampled, BOOTSTRAP_SAMPLES, SEED)
            row[kind] = {"accuracy": resampled.point(), "ci_low": low, "ci_high": high}
            against = {"fitted policy": "before"} if name != "before" else {}
            if name == "grpo_prm":
                against["GRPO outcome reward"] = "grpo_outcome"
            for label, other in against.items():
                diff = paired_difference(resampled, Resampled(ids, partial(weighted_mean, results[other][kind])),
                                         BOOTSTRAP_SAMPLES, SEED)
                row[kind][f"minus {label}"] = dict(zip(("difference", "ci_low", "ci_high"), diff))
        table[name] = row
    return table


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "tests"))  # tiny_tokenizers, tiny_models: the tests' model builders
    for key, value in {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(key, value)
    import torch

    from prmflow.config import IngestParams
    from prmflow.data.ingest import build_splits
    from prmflow.integrations.trl import prm_reward
    from prmflow.labeling.pairs import step_pairs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=300, help="train problems (policy fit, PRM labels, RL prompts)")
    parser.add_argument("--test", type=int, default=150, help="held-out problems")
    parser.add_argument("--fit-steps", type=int, default=400, help="supervised steps of the policy on references")
    parser.add_argument("--fit-batch", type=int, default=32, help="solutions per supervised step")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps of each arm (DPO, both GRPOs)")
    parser.add_argument("--batch", type=int, default=16, help="completions per GRPO step (= pairs per DPO step)")
    parser.add_argument("--generations", type=int, default=8, help="GRPO completions per prompt")
    parser.add_argument("--lr", type=float, default=2e-4, help="learning rate of every arm")
    parser.add_argument("--samples", type=int, default=4, help="sampled completions per held-out problem")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "rl_policy.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start, load_before = time.perf_counter(), os.getloadavg()

    ingest = dict(min_steps=2, max_steps=3)
    train = build_splits(IngestParams(num_train=args.train, num_test=1, **ingest), seed=SEED).splits["train"]
    test = build_splits(IngestParams(num_train=args.test, num_test=1, **ingest), seed=SEED + 1).splits["train"]
    train_texts = {p["problem"] for p in train}
    test = [p for p in test if p["problem"] not in train_texts]
    work = Path(tempfile.mkdtemp(prefix="rl_policy_"))
    info = {"policy": fit_policy(work / "policy", train, args.fit_steps, args.fit_batch)}
    print(json.dumps(info["policy"]), flush=True)
    rows, info["prm"] = train_prm(work / "prm", train)
    pairs = step_pairs(rows)
    info["prm"]["pairs"] = len(pairs)
    print(json.dumps(info["prm"]), flush=True)

    results, runs = {"before": accuracy(work / "policy", test, args.samples)}, {}
    lr, steps, batch = args.lr, args.steps, args.batch
    arms = {"step_dpo": lambda out: step_dpo(work / "policy", out, pairs, steps, batch, lr),
            "grpo_prm": lambda out: grpo(work / "policy", out, train, prm_reward(model=str(work / "prm")), steps,
                                         batch, args.generations, lr),
            "grpo_outcome": lambda out: grpo(work / "policy", out, train, outcome_reward, steps, batch,
                                             args.generations, lr)}
    for name, run in arms.items():
        runs[name] = run(work / name)
        results[name] = accuracy(work / name, test, args.samples)
        print(name, json.dumps({k: runs[name][k] for k in ("train_s",)}),
              sum(results[name]["greedy"]) / len(test), sum(results[name]["sampled"]) / len(test), flush=True)
    table = summary(results, test)
    out = {"command": " ".join(["bench/rl_policy.py", *sys.argv[1:]]), "settings": vars(args),
           "train_problems": len(train), "test_problems": len(test), **info, "table": table,
           "no_answer_share": {k: v["no_answer_share"] for k, v in results.items()}, "runs": runs,
           "wall_s": time.perf_counter() - start, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    Path(args.output).write_text(json.dumps(out, indent=1))
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
