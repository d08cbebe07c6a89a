"""The documentation site: it builds in strict mode, its generated pages say what the code and the
benchmark files say, and every duration the docs state cites the benchmark result file it comes from."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

sys.path.insert(0, str(REPO / "docs" / "hooks"))
import benchmark_results  # noqa: E402  (the MkDocs hooks, imported from their folder)
import config_reference  # noqa: E402
import front_page  # noqa: E402

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A stated duration: "12 s", "~90 s", "4.5 minutes", "2 hours" (not "Step 2", not a table cell's bare number).
DURATION = re.compile(r"(?<![\w.])~?\d[\d,.]*\s?(?:ms|s|sec|seconds?|min|minutes?|h|hours?)\b(?!\w)")
# A paragraph may state a duration that is a knob's value (`retry_backoff_seconds`), not a measurement.
KNOB = re.compile(r"`[\w.]*(?:_s|seconds)`", re.IGNORECASE)  # a params knob or a code constant (`MAX_BACKOFF_S`)


def test_the_site_builds_in_strict_mode_with_every_knob(tmp_path):
    proc = subprocess.run(["make", "-s", "docs"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from prmflow.config import Params

    reference = (REPO / "site" / "configuration.html").read_text()
    for section in dataclasses.fields(Params):
        for knob in dataclasses.fields(section.default_factory):
            assert f"{section.name}.{knob.name}" in reference, f"{section.name}.{knob.name}"
    assert "bench/results/pipeline_stages.json" in (REPO / "site" / "benchmarks.html").read_text()
    assert 'href="getting-started.html"' in (REPO / "site" / "index.html").read_text()  # README links, rewritten


def test_the_committed_configuration_reference_is_the_code_s():
    page = config_reference.PAGE.read_text()
    assert config_reference.BEGIN in page and config_reference.END in page
    assert page == config_reference.with_reference(page), \
        "docs/configuration.md is stale: PYTHONPATH=src python docs/hooks/config_reference.py"


def test_the_readme_is_a_front_page():
    assert len((REPO / "README.md").read_text().splitlines()) <= 150


def test_the_readme_commands_are_the_ones_tests_run():
    """`make run`: tests/test_fresh_clone.py, as written, in a fresh clone; `make test`: this suite; `make docs`:
    the strict build above. A command added to the README needs a test that runs it."""
    readme = (REPO / "README.md").read_text()
    assert re.findall(r"^make \w+", readme, flags=re.M) == ["make run", "make test"]
    assert set(re.findall(r"`(make \w+)", readme)) <= {"make run", "make test", "make docs"}


def test_every_stated_duration_cites_its_benchmark_file():
    uncited = []
    for page in PAGES:
        for paragraph in re.split(r"\n\s*\n", page.read_text()):
            cited = re.findall(r"bench/results/[\w.]+\.json", paragraph)
            if DURATION.search(paragraph) and not KNOB.search(paragraph):
                if not cited:
                    uncited.append(f"{page.name}: {DURATION.findall(paragraph)} in {paragraph[:120]!r}")
            uncited += [f"{page.name}: {path} does not exist" for path in cited if not (REPO / path).is_file()]
    assert not uncited, "\n".join(uncited)


def test_the_duration_rule_catches_a_stated_time():
    assert DURATION.findall("ready in 6-10 s; about 1.5 minutes; ~90 s; Step 2 of 3; 10 m 26 s") == [
        "10 s", "1.5 minutes", "~90 s", "26 s"]


@dataclasses.dataclass
class Knobs:
    rate: float = dataclasses.field(default=0.5, metadata={"rule": "in [0, 1]", "help": "A | share."})
    kind: str = dataclasses.field(default="a", metadata={"choices": ("a", "b"), "help": "Which\none."})
    names: list = dataclasses.field(default_factory=lambda: ["x"], metadata={"help": "Names."})


def test_a_section_table_lists_each_field_with_default_rule_and_help():
    assert config_reference.section_table("knobs", Knobs) == "\n".join([
        "## `knobs`", "", "| key | default | allowed | help |", "|---|---|---|---|",
        "| `knobs.rate` | `0.5` | in [0, 1] | A \\| share. |",
        '| `knobs.kind` | `"a"` | a, b | Which one. |',
        '| `knobs.names` | `["x"]` |  | Names. |'])


def test_the_results_table_gives_each_files_date_and_machine(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"date": "2026-12-06", "machine": {"cpus": 2, "note": "x|y"}}))
    (tmp_path / "b.json").write_text(json.dumps([1, 2]))
    assert benchmark_results.results_table(tmp_path) == "\n".join([
        "| result file | date | machine |", "|---|---|---|",
        "| `bench/results/a.json` | 2026-12-06 | cpus: 2; note: x\\|y |",
        "| `bench/results/b.json` | not committed | not recorded |"])


def test_the_home_page_is_the_readme_with_site_links():
    assert front_page.site_markdown("[Search](docs/search.md), `docs/` and [x](https://e.org/docs/a)") == (
        "[Search](search.md), `docs/` and [x](https://e.org/docs/a)")


def test_the_mkdocs_hooks_are_registered():
    config = (REPO / "mkdocs.yml").read_text()
    for hook in Path(REPO / "docs" / "hooks").glob("*.py"):
        assert f"docs/hooks/{hook.name}" in config, hook.name


def _bash_blocks(text: str) -> list[tuple[int, str]]:
    return [(m.start(), m.group(1)) for m in re.finditer(r"```bash\n(.*?)```", text, re.S)]


def test_getting_started_activates_the_venv_before_its_first_tool_command():
    """A new shell has no `dvc` or `prmflow` on PATH: the page says to activate .venv before it uses them."""
    text = (REPO / "docs" / "getting-started.md").read_text()
    tool = re.compile(r"^\s*(?:[A-Z_]+=\S+\s+)*(?:dvc|prmflow|mlflow|pytest|mkdocs)\b", re.M)
    first_tool = min(start for start, block in _bash_blocks(text) if tool.search(block))
    assert 0 <= text.find("source .venv/bin/activate") < first_tool


def test_every_documented_mlflow_serve_command_is_quiet():
    """`mlflow models serve` as written in the docs sets MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false (as `make
    serve` does): otherwise it draws a download bar per artifact."""
    loud = [f"{page.name}: {block.strip()[:80]}" for page in PAGES for _, block in _bash_blocks(page.read_text())
            if re.search(r"^[^#]*\bmlflow models serve\b", block, re.M)
            and "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false" not in block]
    assert loud == []
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR ?= false" in (REPO / "Makefile").read_text()


def test_every_results_file_the_docs_cite_has_its_date():
    text = "".join(page.read_text() for page in [*PAGES, REPO / "BENCHMARKS.md"])
    cited = sorted(set(re.findall(r"bench/results/[\w]+\.json", text)))
    undated = [name for name in cited if '"date"' not in (REPO / name).read_text()]
    assert cited and undated == []
