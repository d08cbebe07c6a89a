"""Scheduled retraining: serve the prm-pipeline flow as a deployment with a cron schedule.

    prefect server start --host 127.0.0.1 --port 4200          # once, long-lived
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python flows/schedule.py                                   # nightly at 02:00 UTC; keep it running
    prefect deployment run 'prm-pipeline/nightly-retrain'      # a run now, by hand

`flow.serve` registers the deployment and executes its runs in this process's children, so no
work pool or worker is needed (prefect.yaml describes the same deployment for a work pool).
Each scheduled run first asks DVC whether the ingest stage has anything new and, when it has
not, ends early and successfully.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect.schedules import Cron

from pipeline import pipeline

DEPLOYMENT_NAME = "nightly-retrain"
DEFAULT_CRON = "0 2 * * *"  # nightly, 02:00
DEFAULT_TIMEZONE = "UTC"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the scheduled prm-pipeline retraining deployment.")
    parser.add_argument("--project-dir", default=str(Path(__file__).resolve().parent.parent),
                        help="project root holding dvc.yaml and params.yaml (default: this repository)")
    parser.add_argument("--name", default=DEPLOYMENT_NAME, help=f"deployment name (default: {DEPLOYMENT_NAME})")
    parser.add_argument("--cron", default=DEFAULT_CRON, help=f"cron schedule (default: '{DEFAULT_CRON}')")
    parser.add_argument("--timezone", default=DEFAULT_TIMEZONE,
                        help=f"of the cron schedule (default: {DEFAULT_TIMEZONE})")
    parser.add_argument("--push", action="store_true", help="`dvc push` the outputs at the end of each run")
    parser.add_argument("--remote", default=None, help="DVC remote for --push (default: the project's default)")
    parser.add_argument("--retry-backoff-seconds", type=float, default=10.0,
                        help="first retry delay of a stage with retries (label); doubles each retry")
    args = parser.parse_args(argv)
    pipeline.serve(
        name=args.name,
        schedule=Cron(args.cron, timezone=args.timezone),
        parameters={"project_dir": str(Path(args.project_dir).resolve()), "only_if_new_problems": True,
                    "push": args.push, "remote": args.remote, "retry_backoff_seconds": args.retry_backoff_seconds},
        description="Retrain the PRM when DVC reports new problems for the ingest stage.",
        tags=["prmflow", "retraining"],
    )


if __name__ == "__main__":
    main()
