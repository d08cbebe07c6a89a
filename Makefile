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
export MLFLOW_TRACKING_URI ?= sqlite:///mlflow/mlflow.db

.PHONY: install run test serve flow schedule clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]" "$(TORCH)"
	touch $@

install: $(VENV)/.installed

run: install
	dvc repro
	@echo "registered: $$(cat reports/registry.json)"

test: install
	$(BIN)/pytest

serve:
	mlflow models serve -m models:/prm@champion --env-manager local -h 127.0.0.1 -p 5001

flow: install
	$(BIN)/python flows/pipeline.py

# The nightly retraining deployment (flow.serve); needs PREFECT_API_URL of a `prefect server start`.
schedule: install
	$(BIN)/python flows/schedule.py

clean:
	rm -rf data models reports mlflow/mlflow.db mlflow/artifacts
