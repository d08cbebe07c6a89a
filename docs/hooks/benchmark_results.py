"""MkDocs hook: the table of benchmark result files (`bench/results/*.json`) with the date and machine of each.

Every duration the docs state cites one of these files; this table says when and where each was measured.
The date is the file's own `date` field where the benchmark wrote one, else the date of the commit that
last changed it (`git log`); the machine is its `machine` field (platform, cores, threads, notes).
A page that holds the marker line `<!-- benchmark-results -->` gets the table in its place.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

MARKER = "<!-- benchmark-results -->"
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def result_date(path: Path) -> str:
    """The file's `date`, else `YYYY-MM-DD (commit)` of its last commit, else `not committed`."""
    data = json.loads(path.read_text())
    if isinstance(data, dict) and data.get("date"):
        return str(data["date"])
    committed = subprocess.run(["git", "log", "-1", "--format=%cs", "--", path.name], cwd=path.parent,
                               capture_output=True, text=True).stdout.strip()
    return f"{committed} (commit)" if committed else "not committed"


def machine_text(data: object) -> str:
    """`key: value` pairs of the file's `machine` field, or `not recorded`."""
    machine = data.get("machine") if isinstance(data, dict) else None
    if not isinstance(machine, dict):
        return "not recorded"
    return "; ".join(f"{key}: {value}" for key, value in machine.items()).replace("|", "\\|")


def results_table(results: Path = RESULTS) -> str:
    rows = ["| result file | date | machine |", "|---|---|---|"]
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text())
        rows.append(f"| `bench/results/{path.name}` | {result_date(path)} | {machine_text(data)} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (the MkDocs hook signature)
    return markdown.replace(MARKER, results_table()) if MARKER in markdown else markdown
