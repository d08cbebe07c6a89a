"""bench/gpu_check.py at its tiny size on the CPU, where mlflow, dvc, prefect, datasets and great_expectations
cannot be imported: what the GPU machine it is written for lacks."""

import json
import subprocess
import sys

from conftest import REPO

# Run before the script: every import finder (and importlib.metadata) is made blind to the blocked packages, as
# on a machine where they are not installed; transformers and accelerate then see them as absent, too.
HIDE_PACKAGES = '''
import sys
BLOCKED = ("mlflow", "dvc", "prefect", "datasets", "great_expectations")

def blocked(name):
    return name is not None and name.partition(".")[0].replace("-", "_").lower() in BLOCKED

class Hide:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        return None if blocked(name) else self.finder.find_spec(name, path, target)
    def find_distributions(self, context=None, **kwargs):
        from importlib.metadata import DistributionFinder
        context = context or DistributionFinder.Context(**kwargs)
        find = getattr(self.finder, "find_distributions", None)
        if blocked(context.name) or find is None:
            return iter(())
        return (d for d in find(context) if not blocked(d.metadata["Name"]))
    def __getattr__(self, name):
        return getattr(self.finder, name)

sys.meta_path[:] = [Hide(finder) for finder in sys.meta_path]
'''
RUN_SCRIPT = "import runpy\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"


def run_hidden(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIDE_PACKAGES + code, *args], capture_output=True, text=True,
                          cwd=REPO, timeout=600)


def test_the_hidden_packages_are_absent_to_imports_and_to_transformers():
    for package in ("mlflow", "dvc", "prefect", "datasets", "great_expectations"):
        result = run_hidden(f"import {package}")
        assert result.returncode != 0 and f"No module named '{package}'" in result.stderr, package
    assert run_hidden("import transformers\nassert not transformers.utils.is_datasets_available()").returncode == 0


def test_gpu_check_runs_tiny_on_the_cpu_without_the_pipeline_packages():
    result = run_hidden(RUN_SCRIPT, str(REPO / "bench" / "gpu_check.py"), "--device", "cpu", "--tiny")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout[result.stdout.index("{"):])
    for path in ("train_tag_only", "train_full_logits"):
        assert report[path]["tokens_per_second"] > 0 and report[path]["timed_steps"] == 2
        assert report[path]["mfu"] is None
    assert report["device"] == "cpu" and report["peak_tflops"] is None  # not an H200's figure on a CPU
    # Same initial weights and batches: the two heads give the same first loss.
    assert abs(report["train_tag_only"]["first_loss"] - report["train_full_logits"]["first_loss"]) < 1e-3
    score = report["score"]
    assert score["solutions"] == 64 and score["steps"] >= 64 and score["solutions_per_second"] > 0
    assert 0 <= score["max_abs_bf16_minus_float32"] <= 0.05
