"""Stage `validate`: Great Expectations suites that stop bad data before it trains a model.

    prmflow validate          # reads params.yaml: base, validate

Three suites, each built in code from the `validate` params:
  problems  one row per problem: fields present, ids unique per split, reference steps in
            bounds and non-empty, answers parseable by math-verify, no problem in both splits;
  rollouts  one row per labeled solution: fields present, ids unique per split, one `+`/`-`
            label per step, values in [0, 1] and consistent with the labels and `first_error`,
            steps per solution in bounds, no empty step, answers parseable, no leakage, and
            identical solutions of a problem labeled alike (beyond Monte-Carlo noise);
  steps     one row per step: text length, label balance.
The suites themselves (derived columns and checks) are in suites.py.

Checks with severity `warning` are reported but do not fail. Writes `reports/validation.json`
and HTML data docs under `reports/validation_docs/` (self-contained, byte-identical for the same data:
validation_docs.py); on failure exits non-zero with a summary
naming each failing check and example rows. Great Expectations and math-verify are imported
inside this stage's functions only: GX takes seconds to import.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from prmflow.config import Params, ValidateParams
from prmflow.labeling.suites import Check, Suite, build_suites
from prmflow.labeling.validation_docs import make_offline

SPLITS = ("train", "test")
DOCS_DIR = "validation_docs"
REPORT_EXAMPLES = 5   # example rows per check in validation.json
MESSAGE_EXAMPLES = 3  # example rows per check in the failure message (it must fit a flow log tail)
EXAMPLE_CHARS = 160


class ValidationFailed(RuntimeError):
    pass


# ---------------------------------------------------------------- running them with Great Expectations

def _plain(value: object) -> object:
    """JSON-safe and short: numpy scalars become Python ones, long values are cut."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:  # NaN from a missing cell
        return None
    text = json.dumps(value, ensure_ascii=False, default=str)
    return value if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "..."


def _examples(suite: Suite, check: Check, details: dict) -> list[dict]:
    if check.flagged_by is not None:
        index = list(suite.frame.index[suite.frame[check.flagged_by] == True])  # noqa: E712 (object column)
    else:
        index = details.get("partial_unexpected_index_list") or []
    columns = [*suite.key, *check.shows]
    return [{c: _plain(suite.frame.at[i, c]) for c in columns} for i in index[:REPORT_EXAMPLES]]


def _context(docs_dir: Path | None):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # keeps stage logs readable
    if docs_dir is not None:
        context.add_data_docs_site(site_name="prmflow", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    return context


def run_suites(suites: list[Suite], docs_dir: Path | None = None) -> list[dict]:
    """Run each suite through a GX Checkpoint; with `docs_dir`, its action writes HTML data docs there,
    made self-contained and stable by validation_docs.make_offline."""
    import great_expectations as gx

    context = _context(docs_dir)
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["prmflow"])] if docs_dir else []
    results = []
    for suite in suites:
        batch = (context.data_sources.add_pandas(suite.name).add_dataframe_asset(suite.name)
                 .add_batch_definition_whole_dataframe(suite.name))
        gx_suite = context.suites.add(gx.ExpectationSuite(name=suite.name))
        by_name = {check.name: check for check in suite.checks}
        for check in suite.checks:
            gx_suite.add_expectation(getattr(gx.expectations, check.expectation)(
                **check.kwargs, meta={"check": check.name}, severity="warning" if check.warning else "critical"))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite.name, data=batch, suite=gx_suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=suite.name, validation_definitions=[definition], actions=actions,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": REPORT_EXAMPLES}))
        outcome = checkpoint.run(batch_parameters={"dataframe": suite.frame})
        for item in next(iter(outcome.run_results.values())).results:
            check, details = by_name[item.expectation_config.meta["check"]], item.result or {}
            results.append({
                "suite": suite.name, "check": check.name, "severity": "warning" if check.warning else "critical",
                "expectation": item.expectation_config.type,
                "kwargs": check.kwargs,
                "success": bool(item.success),
                "element_count": details.get("element_count", len(suite.frame)),
                "unexpected_count": details.get("unexpected_count"),
                "observed_value": _plain(details.get("observed_value")),
                "examples": [] if item.success else _examples(suite, check, details),
            })
    if docs_dir is not None:
        make_offline(docs_dir, results)
    return results


def validate_datasets(problems: dict[str, list[dict]], rollouts: dict[str, list[dict]], params: ValidateParams,
                      docs_dir: Path | None = None) -> list[dict]:
    """Every check over problems and labeled rollouts (each a mapping split -> rows); one dict per check."""
    return run_suites(build_suites(problems, rollouts, params), docs_dir)


def failed_checks(results: list[dict]) -> list[dict]:
    return [r for r in results if not r["success"] and r["severity"] == "critical"]


def warned_checks(results: list[dict]) -> list[dict]:
    return [r for r in results if not r["success"] and r["severity"] == "warning"]


def _describe(result: dict) -> str:
    if result["unexpected_count"] is not None:
        what = f"{result['unexpected_count']} of {result['element_count']} rows unexpected"
    else:
        bounds = {k: v for k, v in result["kwargs"].items() if k in ("min_value", "max_value")}
        observed = result["observed_value"]
        what = f"observed {observed:.4g}" if isinstance(observed, float) else f"observed {observed}"
        what += f", expected {bounds}"
    return f"{result['suite']}.{result['check']} ({result['expectation']}): {what}"


def summary(results: list[dict]) -> str:
    """Short enough for a flow log: each failing check, a few example rows, then the warnings."""
    failed, warned = failed_checks(results), warned_checks(results)
    lines = [f"validation failed: {len(failed)} of {len(results)} checks" if failed
             else f"validation passed: {len(results)} checks"]
    for result in failed:
        lines.append(f"  FAILED {_describe(result)}")
        lines += [f"      e.g. {json.dumps(e, ensure_ascii=False)}" for e in result["examples"][:MESSAGE_EXAMPLES]]
    lines += [f"  warning {_describe(result)}" for result in warned]
    return "\n".join(lines)


def report(results: list[dict], counts: dict[str, int]) -> dict:
    return {"success": not failed_checks(results), "failed": [f"{r['suite']}.{r['check']}" for r in failed_checks(results)],
            "warnings": [f"{r['suite']}.{r['check']}" for r in warned_checks(results)], "rows": counts,
            "expectations": results}


def main(params: Params) -> None:
    import mlflow
    from prmflow.jsonl import read_jsonl, write_json
    from prmflow.tracking import stage_run

    data, reports = Path(params.base.data_dir), Path(params.base.reports_dir)
    problems = {split: read_jsonl(data / "problems" / f"{split}.jsonl") for split in SPLITS}
    rollouts = {split: read_jsonl(data / "rollouts" / f"{split}.jsonl") for split in SPLITS}
    docs = reports / DOCS_DIR
    shutil.rmtree(docs, ignore_errors=True)  # the site indexes every run it holds: keep only this one
    with stage_run(params.base, "validate", params.validate):
        results = validate_datasets(problems, rollouts, params.validate, docs)
        counts = {f"{name}_{split}": len(rows[split]) for name, rows in (("problems", problems), ("rollouts", rollouts))
                  for split in SPLITS}
        path = reports / "validation.json"
        write_json(path, report(results, counts))
        mlflow.log_artifact(str(path))
        mlflow.log_metrics({"validation_success": float(not failed_checks(results)),
                            "failed_expectations": float(len(failed_checks(results))),
                            "warned_expectations": float(len(warned_checks(results)))})
        mlflow.set_tag("prmflow.validation_docs", str((docs / "index.html").resolve()))
        if failed_checks(results):
            raise ValidationFailed(f"{summary(results)}\n  data docs: {docs / 'index.html'}")
        print(f"{summary(results)}\n  on {counts}\n  data docs: {docs / 'index.html'}")
