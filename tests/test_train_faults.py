"""Training killed with SIGKILL inside a checkpoint save resumes, and its report covers every step.

The train stage runs in a child process with a pause placed inside the Trainer's checkpoint save (the
real save code runs; only its timing is held): while the second checkpoint is half written the child is
killed with SIGKILL. The rerun must delete the partial folder, resume from the first checkpoint and end
with the model bytes and `reports/train.json` train_loss of a run never interrupted.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN
from prmflow.config import BaseParams, ModelParams, Params, TrainParams
from prmflow.jsonl import write_jsonl

NUM_TRAIN = 48  # 6 batches of 8, 2 epochs: 12 steps, checkpoints at 4, 8 and 12
TINY_MODEL = {"vocab_size": 300, "hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}

# The child: the train stage, with the `hook` function of the save paused (a flag file says so) on its
# second call, i.e. inside the save of checkpoint-8, until the parent kills it.
CHILD = """
import sys, time
from pathlib import Path

import transformers.modeling_utils
from transformers import Trainer
from transformers.trainer_callback import TrainerState

from prmflow.config import load_params
from prmflow.training import train

hook, flag = sys.argv[1], Path(sys.argv[2])
owner, name = {"weights": (transformers.modeling_utils, "safe_save_file"),
               "optimizer": (Trainer, "_save_optimizer_and_scheduler"),
               "trainer_state": (TrainerState, "save_to_json")}[hook]
original, calls = getattr(owner, name), []

def paused(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        flag.write_text("in the save")
        time.sleep(600)
    return original(*args, **kwargs)

setattr(owner, name, paused)
train.main(load_params("params.yaml"))
"""


def model_digest(folder: Path) -> str:
    return hashlib.md5((folder / "model.safetensors").read_bytes()).hexdigest()


def run_prmflow(stage: str, project: Path) -> None:
    proc = subprocess.run([str(BIN / "prmflow"), stage], cwd=project, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, labeled_rows):
    """A tokenized tiny project trained once without interruption: (folder, its train report, model digest)."""
    root = tmp_path_factory.mktemp("reference")
    write_jsonl(root / "data/rollouts/train.jsonl", labeled_rows[:NUM_TRAIN])
    write_jsonl(root / "data/rollouts/test.jsonl", labeled_rows[NUM_TRAIN:NUM_TRAIN + 6])
    params = Params(base=BaseParams(mlflow_tracking_uri="sqlite:///mlflow/mlflow.db"), model=ModelParams(**TINY_MODEL),
                    train=TrainParams(epochs=2.0, batch_size=8, save_steps=4))
    (root / "params.yaml").write_text(yaml.safe_dump(dataclasses.asdict(params)))
    run_prmflow("tokenize", root)
    run_prmflow("train", root)
    return root, json.loads((root / "reports/train.json").read_text()), model_digest(root / "models/prm")


@pytest.fixture
def project(tmp_path, reference):
    """The reference's tokenized data and params, nothing trained."""
    shutil.copytree(reference[0] / "data", tmp_path / "data")
    shutil.copy(reference[0] / "params.yaml", tmp_path)
    return tmp_path


def train_child(project: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(BIN / "python"), "-c", CHILD, *args], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("hook, written, missing", [
    ("weights", {"config.json", "generation_config.json"}, {"model.safetensors"}),  # the folder
    pytest.param("optimizer", {"model.safetensors", "training_args.bin"}, {"optimizer.pt"}, marks=pytest.mark.slow),
    ("trainer_state", {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"}, {"trainer_state.json"}),
])
def test_a_kill_inside_a_checkpoint_save_resumes_from_the_last_whole_one(project, reference, hook, written, missing):
    _, expected_report, expected_digest = reference
    flag = project / "in-save.flag"
    child = train_child(project, hook, str(flag))
    deadline = time.monotonic() + 240
    while not flag.exists():
        assert child.poll() is None, child.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the child never reached the second checkpoint save"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    checkpoints = project / "models/prm-checkpoints"
    partial = checkpoints / "checkpoint-8"
    names = {p.name for p in partial.iterdir()}  # killed inside the save: a partial folder
    assert written <= names and not missing & names, names
    assert (checkpoints / "checkpoint-4" / "trainer_state.json").is_file()

    run_prmflow("train", project)
    report = json.loads((project / "reports/train.json").read_text())
    assert report["resumed_from"].endswith("checkpoint-4")
    assert report["steps"] == 12
    assert model_digest(project / "models/prm") == expected_digest
    # The loss of all 12 steps, as the uninterrupted run reports it (not only the 8 after the resume).
    assert report["train_loss"] == pytest.approx(expected_report["train_loss"], rel=1e-9)
    assert report["final_loss"] == pytest.approx(expected_report["final_loss"], rel=1e-9)
    assert not checkpoints.exists()
