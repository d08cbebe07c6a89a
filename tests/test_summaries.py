"""What a stage and `make run` print: one readable line each, not a dict repr or a JSON dump."""

from conftest import REPO
from prmflow.cli import run_summary
from prmflow.tracking import summary_line


def test_a_stage_summary_is_one_line_of_key_value_pairs():
    line = summary_line("train", {"examples": 8000, "final_loss": 0.6365405559, "precision": "float32",
                                  "tokenize": {"train": {"examples": 8000}}, "sizes": [1, 4]})
    assert line == "train: examples 8000, final loss 0.6365, precision float32"


def test_make_run_ends_with_one_line_naming_the_served_version_and_the_headline_metrics():
    registry = {"model_name": "prm", "alias": "champion", "version": 4, "registered": True,
                "registered_because": "changed since version 3: weights", "champion_version": 3,
                "reason": "first_error_f1 challenger - champion +0.0100 (95% interval [-0.02, +0.04]): ..."}
    metrics = {"step_auroc": 0.81234, "first_error_f1": 0.4, "best_of_n_prm_min": 0.78, "other": 1.0}
    line = run_summary(registry, metrics)
    assert "\n" not in line
    assert line.startswith("prmflow: prm@champion is version 3 (this run registered version 4 (changed since "
                           "version 3: weights); gate: first_error_f1 challenger")
    assert "step_auroc 0.812, first_error_f1 0.400, best_of_n_prm_min 0.780;" in line
    kept = run_summary(registry | {"registered": False, "reason": "nothing registered: version 3 holds the same "
                                                                  "weights, served config and gate inputs"}, metrics)
    assert "is version 3 (nothing registered: version 3 holds the same" in kept
    makefile = (REPO / "Makefile").read_text()
    assert "prmflow summary" in makefile and "cat reports/registry.json" not in makefile


def test_the_flow_summary_says_when_register_registered_nothing():
    import sys

    sys.path.insert(0, str(REPO / "flows"))
    from pipeline import registry_decision

    kept = {"model_name": "prm", "version": 3, "registered": False, "promoted": False,
            "reason": "nothing registered: version 3 holds the same weights, served config and gate inputs"}
    assert registry_decision(kept) == ("Registered nothing: version 3 holds the same weights, served config and "
                                       "gate inputs.")
