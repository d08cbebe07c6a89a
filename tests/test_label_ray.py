"""Labeling on a local Ray cluster: the same bytes as one process, and nothing lost or doubled when a worker and
then the driver are killed mid-run (SIGKILL)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from prmflow.config import IngestParams, LabelParams
from prmflow.data.ingest import build_splits
from prmflow.jsonl import write_jsonl
from prmflow.labeling.distributed import label_on_ray
from prmflow.labeling.label import label_split

pytest.importorskip("ray")  # installed by the dev extra; a user's install without `prmflow[ray]` has no Ray

SEED = 3
PARAMS = LabelParams(trajectories_per_problem=2, completions_per_step=4, method="binary_search")

# Heavier labeling (~50 ms a problem here), so that the kills land mid-run.
KILL_PARAMS = {"trajectories_per_problem": 4, "completions_per_step": 16, "method": "mc"}
# The label stage's labeling of one split on 2 Ray workers, resumable through argv[2]; prints its progress.
DRIVER = f"""
import json, sys
from pathlib import Path
from prmflow.config import LabelParams
from prmflow.labeling.distributed import label_on_ray
from prmflow.labeling.label import label_split
problems = [json.loads(line) for line in open(sys.argv[1])]
label_split(problems, LabelParams(**{KILL_PARAMS}, workers=2, chunk_problems=5), 3, Path(sys.argv[2]))
"""


def _problems(count: int, seed: int = 5) -> list[dict]:
    return build_splits(IngestParams(num_train=count, num_test=1), seed=seed).splits["train"]


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def _written(results, path) -> bytes:
    write_jsonl(path, [row for result in results for row in result.rows])
    return path.read_bytes()


def test_ray_labels_equal_one_process_byte_for_byte(tmp_path):
    problems = _problems(30)
    prelabeled = {"id": "pre-0", "problem_id": "pre", "problem": "1 + 1?", "steps": ["1 + 1 = 2"], "labels": ["+"],
                  "values": [1.0], "answer": "2", "source": "prm800k"}
    problems.insert(7, prelabeled)
    one = label_split(problems, PARAMS, SEED)
    on_ray = label_split(problems, LabelParams(**{**vars(PARAMS), "workers": 2, "chunk_problems": 4}), SEED,
                         tmp_path / ".label_partial" / "train.jsonl")
    assert _written(on_ray, tmp_path / "ray.jsonl") == _written(one, tmp_path / "one.jsonl")
    assert [r.policy_calls for r in on_ray] == [r.policy_calls for r in one]
    assert sum(r.policy_calls for r in one) > 0
    # Chunks came back from both workers in their own order; the partial file holds each problem once.
    ids = [json.loads(line)["problem_id"] for line in _lines(tmp_path / ".label_partial" / "train.jsonl")]
    assert sorted(ids) == sorted(p["id"] for p in problems)


def _worker_pids(log) -> list[int]:
    return [int(pid) for pid in re.findall(r"pid (\d+)", log.read_text())]


def test_killing_a_ray_worker_then_the_driver_loses_and_doubles_nothing(tmp_path):
    problems = _problems(400)
    source, partial, log = tmp_path / "problems.jsonl", tmp_path / ".label_partial" / "train.jsonl", tmp_path / "log"
    source.write_text("".join(json.dumps(p) + "\n" for p in problems))
    with log.open("w") as out:  # its own session: Ray's processes go with it when the group is killed
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(source), str(partial)], stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while len(_lines(partial)) < 30 and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.05)
        workers = _worker_pids(log)
        assert len(workers) == 2 and driver.poll() is None, log.read_text()[-3000:]
        os.kill(workers[0], signal.SIGKILL)
        killed_at = len(_lines(partial))
        # The driver notices, names the worker, hands its chunks to a new one, and goes on.
        while "died" not in log.read_text() and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.05)
        assert "Ray worker 0 (" in log.read_text() and f"pid {workers[0]}) died" in log.read_text()
        while len(_lines(partial)) < killed_at + 40 and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.05)
        assert driver.poll() is None, "the run ended before the driver could be killed: " + log.read_text()[-2000:]
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    done_before = len(_lines(partial))
    assert killed_at + 40 <= done_before < len(problems)

    params = LabelParams(**KILL_PARAMS)
    resumed = label_split(problems, params, SEED, partial)  # resumed in one process: the same labels
    uninterrupted = label_split(problems, params, SEED)
    assert _written(resumed, tmp_path / "resumed.jsonl") == _written(uninterrupted, tmp_path / "one.jsonl")
    ids = [json.loads(line)["problem_id"] for line in _lines(partial)]
    assert sorted(ids) == sorted(p["id"] for p in problems) and len(ids) == len(set(ids))  # once each


def test_a_failure_on_a_worker_names_the_worker_and_the_problem():
    from model_server import free_port

    problems = _problems(6)
    params = LabelParams(policy="openai", endpoint=f"http://127.0.0.1:{free_port()}/v1", max_retries=0,
                         workers=2, chunk_problems=3)  # nothing listens at the endpoint
    with pytest.raises(RuntimeError, match=r"Ray worker [01] \(\S+ pid \d+\) failed on the chunk from problem "
                                           r"\S+: EndpointError\('label.endpoint http://127.0.0.1:\d+/v1/completions: "
                                           r"no completion after 1 attempts"):
        label_split(problems, params, SEED)


def test_a_worker_whose_policy_cannot_start_is_named(monkeypatch):
    monkeypatch.delenv("PRMFLOW_NO_SUCH_KEY", raising=False)
    params = LabelParams(policy="openai", endpoint="http://127.0.0.1:9/v1", api_key_env="PRMFLOW_NO_SUCH_KEY",
                         workers=2, chunk_problems=2)
    with pytest.raises(RuntimeError, match=r"^label: Ray worker 0 could not start: ValueError: label.api_key_env: "
                                           r"environment variable PRMFLOW_NO_SUCH_KEY is not set$"):
        label_split(_problems(4), params, SEED)


def _cluster_listeners() -> dict[str, list[str]]:
    """{process: [address:port, ...]} of every listening socket of this process and the local cluster's: the
    processes it started (GCS, raylet and under it the workers, titled `ray::...`) and any whose command line
    names the cluster's session folder (agents)."""
    import psutil
    import ray

    session = ray._private.worker._global_node.get_session_dir_path()
    driver = psutil.Process()
    cluster = {driver, *driver.children(recursive=True)}
    cluster |= {p for p in psutil.process_iter() if any(session in part for part in _cmdline(p))}
    found = {}
    for process in cluster:
        try:
            listening = [c.laddr for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
            title = next((part for part in _cmdline(process)[:1] if part.startswith("ray::")), process.name())
            found[f"{title} {process.pid}"] = [f"{a.ip}:{a.port}" for a in listening]
        except psutil.NoSuchProcess:
            continue
    return found


def _cmdline(process) -> list[str]:
    import psutil

    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def test_the_local_cluster_listens_on_loopback_only_and_its_token_is_private(tmp_path):
    """While 2 workers label, no process of the local cluster (nor the driver) listens on another address than
    127.0.0.1: Ray 2.60 left to itself listens on 0.0.0.0 and :: (GCS, raylet, workers)."""
    from pathlib import Path

    labels = label_on_ray(_problems(12), LabelParams(**{**vars(PARAMS), "workers": 2, "chunk_problems": 2}), SEED)
    try:
        next(labels)  # the cluster and both workers are up
        listeners = _cluster_listeners()
        token = Path.home() / ".ray" / "auth_token"
        token_mode = token.stat().st_mode & 0o777 if token.is_file() else None
    finally:
        labels.close()  # shuts the cluster down
    addresses = [a for sockets in listeners.values() for a in sockets]
    assert sum("raylet" in p or "gcs_server" in p for p in listeners) == 2 and len(addresses) >= 5, listeners
    assert sum(p.startswith("ray::LabelWorker") and bool(sockets) for p, sockets in listeners.items()) == 2, listeners
    outside = {p: [a for a in sockets if a.rsplit(":", 1)[0] not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
               for p, sockets in listeners.items()}
    assert not any(outside.values()), outside
    assert token_mode in (None, 0o600)
