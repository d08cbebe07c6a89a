"""The evaluate stage's pictures and summary table, from its `Evaluation`s (one per scorer).

PNG plots (matplotlib, Agg: no display needed): ROC and reliability diagram with one curve per
scorer, best-of-N accuracy against N per aggregation beside majority vote, pass@1 and oracle.
`summary_markdown` is the short table a reviewer reads first (`reports/summary.md`).
"""

from __future__ import annotations

import re

from pathlib import Path

from prmflow.scoring.aggregation import AGGREGATIONS

LABELS = {"prm": "trained PRM", "zero_shot": "zero-shot prompt (base model)", "champion": "registry champion",
          "orm": "trained ORM", "combined": "combined PRM + ORM",
          "combined_validated": "combined, weights chosen on validation"}
# Rows of the comparison table, in order, then the scorer-free reference rows (best-of-N columns only).
COMPARED = ("zero_shot", "prm", "orm", "combined", "combined_validated")
REFERENCES = {"majority": "majority vote", "pass_at_1": "pass@1 (random sample)", "oracle": "oracle pass@N"}


def scorer_label(key: str) -> str:
    """A scorer's name in plots and tables; an `evaluate.scorers` PRM keeps the name it was given."""
    return LABELS.get(key, f"{key} (evaluate.scorers)")


def write_plots(evaluations: dict, directory: Path) -> list[Path]:
    """roc.png, reliability.png, best_of_n.png under `directory`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="chance")
    for key, ev in evaluations.items():
        ax.plot([p["fpr"] for p in ev.roc], [p["tpr"] for p in ev.roc],
                label=f"{scorer_label(key)} (AUROC {ev.metrics['step_auroc']:.3f})")
    ax.set(xlabel='false positive rate ("-" steps scored "+")', ylabel='true positive rate ("+" steps)',
           title="Step-level ROC", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    paths.append(_save(fig, directory / "roc.png"))

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    for key, ev in evaluations.items():
        ax.plot([b["confidence"] for b in ev.reliability], [b["accuracy"] for b in ev.reliability], marker="o",
                label=f"{scorer_label(key)} (ECE {ev.metrics['step_ece']:.3f})")
    ax.set(xlabel="mean predicted P(+) in bin", ylabel='observed share of "+" steps',
           title="Reliability diagram", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    paths.append(_save(fig, directory / "reliability.png"))

    fig, ax = plt.subplots(figsize=(8, 4.5))
    table = evaluations["prm"].best_of_n
    sizes = sorted(table)
    bands = interval_bands(evaluations["prm"].metrics, sizes)
    for how in AGGREGATIONS:
        line, = ax.plot(sizes, [table[n][f"prm_{how}"] for n in sizes], marker="o", label=f"PRM best-of-N ({how})")
        if f"prm_{how}" in bands:
            ax.fill_between(sizes, *bands[f"prm_{how}"], color=line.get_color(), alpha=0.15, lw=0)
    if "zero_shot" in evaluations and evaluations["zero_shot"].best_of_n:
        zs = evaluations["zero_shot"].best_of_n
        ax.plot(sorted(zs), [zs[n]["prm_min"] for n in sorted(zs)], marker="x", ls="-.",
                label="zero-shot best-of-N (min)")
    for key, style in (("majority", "--"), ("oracle", ":"), ("pass_at_1", (0, (1, 3)))):
        ax.plot(sizes, [table[n][key] for n in sizes], ls=style, color="black" if key != "oracle" else "grey",
                label={"majority": "majority vote", "oracle": "oracle pass@N", "pass_at_1": "pass@1"}[key])
        if key in bands:
            ax.fill_between(sizes, *bands[key], color="black", alpha=0.08, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set(xlabel="N (samples per problem)", ylabel="accuracy of the picked answer",
           title="Best-of-N (bands: 95% bootstrap intervals)", ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: no point hidden
    paths.append(_save(fig, directory / "best_of_n.png"))
    return paths


def interval_bands(metrics: dict, sizes: list[int]) -> dict[str, tuple[list[float], list[float]]]:
    """The 95% intervals evaluate computed for the best-of-N curve, as (lows, highs) over `sizes` per curve
    key (`prm_<aggregation>`, `majority`), for the curves that have one at every N
    (`best_of_n_<key>_at_<N>_ci_low/_ci_high` in metrics.json)."""
    bands = {}
    for key in [f"prm_{how}" for how in AGGREGATIONS] + ["majority"]:
        names = [(f"best_of_n_{key}_at_{n}_ci_low", f"best_of_n_{key}_at_{n}_ci_high") for n in sizes]
        if sizes and all(low in metrics and high in metrics for low, high in names):
            bands[key] = ([metrics[low] for low, _ in names], [metrics[high] for _, high in names])
    return bands


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell(value: float) -> str:
    return "n/a" if value != value else f"{value:.3f}"


def _estimate(metrics: dict[str, float], key: str) -> str:
    """The metric, with its 95% interval when evaluate computed one: `0.791 [0.752, 0.829]`."""
    cell = _cell(metrics.get(key, float("nan")))
    if f"{key}_ci_low" in metrics:
        cell += f" [{_cell(metrics[f'{key}_ci_low'])}, {_cell(metrics[f'{key}_ci_high'])}]"
    return cell


def comparison_markdown(metrics: dict[str, float]) -> list[str]:
    """The `compare_*` metrics as a table: one row per scorer, then the best-of-N references."""
    sizes = sorted(int(k.rsplit("_", 1)[1]) for k in metrics if k.startswith("compare_prm_best_of_n_at_"))
    lines = ["", f"Comparison on the same {metrics['compare_solutions']} reported-part solutions (best-of-N: first "
                 f"N samples of each problem; the ORM's step AUROC is of its value estimates):", "",
             "| scorer | solution AUROC | " + " | ".join(f"best-of-{n}" for n in sizes)
             + " | step AUROC | first-error F1 |", "|---" * (len(sizes) + 4) + "|"]
    nan = float("nan")
    named = [k.removeprefix("compare_").removesuffix("_solution_auroc") for k in metrics
             if k.startswith("compare_") and k.endswith("_solution_auroc")]
    for name in [n for n in COMPARED if n in named] + [n for n in named if n not in COMPARED]:
        if f"compare_{name}_step_value_auroc" in metrics:  # the ORM: value estimates, labelled as such
            step = f"{_cell(metrics[f'compare_{name}_step_value_auroc'])} (values)"
        else:
            step = _cell(metrics.get(f"compare_{name}_step_auroc", nan))
        lines.append(f"| {scorer_label(name)} | {_estimate(metrics, f'compare_{name}_solution_auroc')} | "
                     + " | ".join(_cell(metrics[f"compare_{name}_best_of_n_at_{n}"]) for n in sizes)
                     + f" | {step} | {_cell(metrics.get(f'compare_{name}_first_error_f1', nan))} |")
    for key, label in REFERENCES.items():
        lines.append(f"| {label} | | " + " | ".join(_cell(metrics[f"compare_{key}_best_of_n_at_{n}"]) for n in sizes)
                     + " | | |")
    return lines


def evaluation_notes(metrics: dict[str, float], params, champion: tuple[bool, str] | None) -> list[str]:
    """The prose notes under the summary: what the ORM and combined scores are, why majority vote wins when it
    does, where the champion came from (`champion`: (scored, where) when `evaluate.champion_baseline`), and the
    validated combine weight when one was chosen."""
    e, combine = params.evaluate, params.combine
    notes = [f"ORM: its solution score is P(+) at the last step tag; its earlier tags are value estimates "
             f"(P(the solution ends correct | prefix)), so its step AUROC is against step labels it was not "
             f"trained on. Combined = {combine.process_weight} x PRM {e.aggregation} + "
             f"{combine.outcome_weight} x ORM (both probabilities)."]
    if metrics.get(f"best_of_n_prm_{e.aggregation}", 1.0) < metrics.get("best_of_n_majority", 0.0):
        notes.append(
            f"majority vote ({metrics['best_of_n_majority']:.3f}) beats PRM best-of-{metrics['best_of_n_n']} "
            f"({e.aggregation}: {metrics[f'best_of_n_prm_{e.aggregation}']:.3f}): in "
            f"{metrics['answers_repeated_right_share']:.0%} of problems two samples share the right answer, "
            f"in only {metrics['answers_repeated_wrong_share']:.0%} two share a wrong one, so the vote is "
            f"right almost whenever two samples are; the PRM must separate right from wrong solutions better than "
            f"its step AUROC of {metrics['step_auroc']:.3f} to pick as well.")
    if champion is not None:
        scored, where = champion
        notes.append(f"champion: {where}." if scored else f"champion: skipped, {where}.")
    if "combined_validated_process_weight" in metrics:
        weight = metrics["combined_validated_process_weight"]
        notes.append(f"combined, validated: process weight {weight:.1f} (outcome {1 - weight:.1f}), the best "
                     f"solution AUROC on the validation part of the grid 0, 0.1, ..., 1.")
    return notes


def summary_markdown(evaluations: dict, externals: dict[str, dict], notes: list[str],
                     metrics: dict[str, float] | None = None) -> str:
    """Scorers side by side on the reported split, the PRM/ORM/combined comparison when `metrics` holds it,
    then best-of-N by N, then each external set."""
    prm = evaluations["prm"].metrics
    n = prm["best_of_n_n"]
    lines = [
        "# Evaluation summary",
        "",
        f"Held-out test part: {prm['test_solutions']} solutions ({prm['test_steps']} steps); the first-error threshold "
        f"was chosen on {prm['validation_solutions']} other held-out solutions (validation part).",
        "",
        f"| scorer | step AUROC | step ECE | `-` F1 | first-error F1 (threshold) | best-of-{n} (min) |",
        "|---|---|---|---|---|---|",
    ]
    for key, ev in evaluations.items():
        m = ev.metrics
        lines.append(f"| {scorer_label(key)} | {_estimate(m, 'step_auroc')} | {_cell(m['step_ece'])} | "
                     f"{_cell(m['negative_f1'])} | {_estimate(m, 'first_error_f1')} ({m['first_error_threshold']:.3f}) "
                     f"| {_estimate(m, 'best_of_n_prm_min')} |")
    if metrics and "compare_solutions" in metrics:
        lines += comparison_markdown(metrics)
    table = evaluations["prm"].best_of_n
    if "step_auroc_ci_low" in prm:
        lines += ["", "[low, high]: 95% interval of a bootstrap over the reported problems (drawn with replacement, "
                      "every solution of a drawn problem rescored; `evaluate.bootstrap_samples` draws)."]
    lines += ["", "Best-of-N accuracy (first N samples of each problem):", "",
              "| N | " + " | ".join(f"PRM {how}" for how in AGGREGATIONS) + " | majority | pass@1 | oracle |",
              "|---" * (len(AGGREGATIONS) + 4) + "|"]
    for size in sorted(table):
        row = table[size]
        lines.append(f"| {size} | " + " | ".join(_estimate(prm, f"best_of_n_prm_{how}_at_{size}")
                                                 for how in AGGREGATIONS)
                     + f" | {_estimate(prm, f'best_of_n_majority_at_{size}')} | {_cell(row['pass_at_1'])} "
                       f"| {_cell(row['oracle'])} |")
    for name, metrics in externals.items():
        lines += ["", f"External set `{name}`:", ""]
        lines += [f"- {k}: {_estimate(metrics, k) if isinstance(v, float) else v}" for k, v in sorted(metrics.items())
                  if not re.search(r"(?<!pass)_at_\d+$", k)  # by-N rows: the largest N only
                  and not k.endswith(("_ci_low", "_ci_high"))]
    lines += ["", *[f"- {note}" for note in notes], ""]
    return "\n".join(lines)
