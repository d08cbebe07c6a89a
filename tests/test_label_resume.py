"""Killing the labeling (SIGKILL) and rerunning it gives exactly the rows of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

from prmflow.config import IngestParams, LabelParams
from prmflow.data.ingest import build_splits
from prmflow.labeling.label import label_split

PARAMS = LabelParams(trajectories_per_problem=2, completions_per_step=4)
SEED = 3

# The real labeling loop, with a policy slowed down so the kill lands mid-run.
SLOW_LABELING = """
import json, sys, time
from pathlib import Path
import prmflow.labeling.label as label
from prmflow.config import LabelParams
from prmflow.labeling.simulated import SimulatedPolicy

class SlowPolicy(SimulatedPolicy):
    def sample_trajectory(self, problem, rng):
        time.sleep(0.02)
        return super().sample_trajectory(problem, rng)

label.make_policy = lambda params, seed, placement: SlowPolicy(params, seed)
problems = [json.loads(line) for line in open(sys.argv[1])]
label.label_split(problems, LabelParams(trajectories_per_problem=2, completions_per_step=4), 3, Path(sys.argv[2]))
"""


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_killed_labeling_resumes_without_lost_or_duplicated_rows(tmp_path):
    problems = build_splits(IngestParams(num_train=120, num_test=1), seed=5).splits["train"]
    source, partial = tmp_path / "problems.jsonl", tmp_path / ".label_partial" / "train.jsonl"
    source.write_text("".join(json.dumps(p) + "\n" for p in problems))
    worker = subprocess.Popen([sys.executable, "-c", SLOW_LABELING, str(source), str(partial)],
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while len(_lines(partial)) < 10 and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    assert worker.wait() == -signal.SIGKILL  # killed while still labeling, not after it finished
    done_before = len(_lines(partial))
    assert 10 <= done_before < len(problems)
    with partial.open("a") as handle:  # what a kill in the middle of a write leaves behind
        handle.write('{"problem_id": "torn", "rows": [')

    resumed = label_split(problems, PARAMS, SEED, partial)
    uninterrupted = label_split(problems, PARAMS, SEED)

    assert [r.rows for r in resumed] == [r.rows for r in uninterrupted]
    assert [r.policy_calls for r in resumed] == [r.policy_calls for r in uninterrupted]
    ids = [json.loads(line)["problem_id"] for line in _lines(partial)]
    assert ids == [p["id"] for p in problems]  # each problem once: the torn line was cut, none redone twice
    rows = [row["id"] for r in resumed for row in r.rows]
    assert len(rows) == len(set(rows)) == 2 * len(problems)


def test_label_stage_leaves_no_partial_file_and_reruns_as_a_no_op(tmp_path):
    from tiny_project import make_project, run

    project = make_project(tmp_path, {"ingest": {"num_train": 20, "num_test": 6},
                                      "label": {"method": "binary_search", "trajectories_per_problem": 2}})
    first = run(["dvc", "repro", "label"], project)
    assert first.returncode == 0, first.stderr
    report = json.loads((project / "reports" / "labeling.json").read_text())
    assert (report["method"], report["train"]["solutions"], report["test"]["solutions"]) == ("binary_search", 40, 12)
    assert 0 < report["train"]["policy_calls_per_labeled_step"] < 4
    assert not (project / "data" / ".label_partial").exists()
    second = run(["dvc", "repro", "label"], project)
    assert second.returncode == 0 and "Stage 'label' didn't change, skipping" in second.stdout


def test_the_labeling_code_of_the_resume_key_is_the_label_stage_code_dvc_tracks():
    import yaml

    from conftest import REPO
    from prmflow.labeling.label import LABELING_CODE

    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["label"]["deps"]
    assert sorted(LABELING_CODE) == sorted(d.removeprefix("src/prmflow/") for d in deps if d.startswith("src/"))


def test_the_code_key_changes_with_any_labeling_module(tmp_path):
    import shutil

    from conftest import REPO
    from prmflow.labeling.label import LABELING_CODE, code_key

    for name in LABELING_CODE:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "src" / "prmflow" / name, tmp_path / name)
    assert code_key(tmp_path) == code_key()
    for name in ("labeling/simulated.py", "data/answers.py"):
        with (tmp_path / name).open("a") as handle:
            handle.write("\n# changed\n")
        changed = code_key(tmp_path)
        assert changed != code_key()
        (tmp_path / name).write_bytes((REPO / "src" / "prmflow" / name).read_bytes())


def test_a_partial_file_made_by_other_labeling_code_is_not_resumed_and_the_stage_says_why(tmp_path):
    """The incident this guards against: a partial file from older code was resumed beside new rows."""
    from tiny_project import make_project, run

    from prmflow.config import load_params
    from prmflow.labeling.label import partial_path

    project = make_project(tmp_path, {"ingest": {"num_train": 12, "num_test": 4},
                                      "label": {"trajectories_per_problem": 2, "compare_methods_on": 0}})
    assert run(["dvc", "repro", "ingest"], project).returncode == 0
    params = load_params(project / "params.yaml")
    source = project / "data" / "problems" / "train.jsonl"
    partial = partial_path(project / "data", "train", params.label, params.base.seed, source)
    first = json.loads(source.read_text().splitlines()[0])
    stale = partial.with_name(partial.stem.rsplit("-", 1)[0] + "-000000000000.jsonl")  # same inputs, other code
    stale.parent.mkdir(parents=True)
    row = {"id": f"{first['id']}-0", "problem_id": first["id"], "problem": first["problem"], "steps": ["old"],
           "labels": ["+"], "values": [1.0], "answer": first["answer"], "predicted_answer": "", "correct": True,
           "first_error": -1, "true_first_error": -1, "policy": "simulated_v1"}
    stale.write_text(json.dumps({"problem_id": first["id"], "rows": [row]}) + "\n")
    other_inputs = stale.with_name("train-0123456789abcdef-000000000000.jsonl")
    other_inputs.write_text(stale.read_text())

    proc = run(["dvc", "repro", "label"], project)
    assert proc.returncode == 0, proc.stderr
    stale_name, other_name = (path.relative_to(project) for path in (stale, other_inputs))
    assert f"{stale_name}: 1 problems labeled by other labeling code (LABELING_CODE changed): deleted" in proc.stdout
    assert f"{other_name}: 1 problems labeled for other params, seed, problems or code: not resumed" in proc.stdout
    rows = [json.loads(line) for line in (project / "data" / "rollouts" / "train.jsonl").read_text().splitlines()]
    assert {r["policy"] for r in rows} == {"simulated"} and len(rows) == 24
    assert not stale.exists() and other_inputs.exists()


def test_without_a_terminal_the_labeling_logs_problems_done_and_the_cost_so_far(capsys):
    problems = build_splits(IngestParams(num_train=5, num_test=1), seed=5).splits["train"]
    results = label_split(problems, PARAMS, SEED)
    calls = sum(r.policy_calls for r in results)
    out = capsys.readouterr().out  # captured: no terminal, so no bar; the log line at the end
    assert f"label (mc, simulated): 5/5 problems, completions {calls}, completions/s " in out


def test_the_resume_key_ignores_how_the_work_runs_but_not_what_the_labels_rest_on(tmp_path):
    import dataclasses

    from prmflow.labeling.label import partial_path

    source = tmp_path / "train.jsonl"
    source.write_text('{"id": "p1"}\n')
    key = partial_path(tmp_path, "train", PARAMS, SEED, source)
    for change in ({"workers": 8, "chunk_problems": 4}, {"concurrency": 64, "max_retries": 9}):
        assert partial_path(tmp_path, "train", dataclasses.replace(PARAMS, **change), SEED, source) == key
    for change in ({"completions_per_step": 5}, {"method": "binary_search"}, {"endpoint": "http://other/v1"}):
        assert partial_path(tmp_path, "train", dataclasses.replace(PARAMS, **change), SEED, source) != key
    assert partial_path(tmp_path, "train", PARAMS, SEED + 1, source) != key
